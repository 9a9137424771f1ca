//! [`Dispatcher`]: the one place where core events become [`Session`] calls, so every adapter
//! behaves the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::auth::{self, Credentials, Mechanism, Step};
use smtpkit_proto::server::Protocol;
use smtpkit_proto::{CloseReason, EnhancedCode, Event, Refusal, Reply, ReplyCode, Secret, Server};
use tracing::{debug, warn};

use crate::envelope::Envelope;
use crate::forwarded::Forwarded;
use crate::handler::{Decision, Handler, Session, SessionInfo, local_error, static_reply};
use crate::metrics::Metrics;
use crate::tls_info::TlsInfo;

/// Most challenges one AUTH exchange may send: LOGIN needs two, the built-in token mechanisms
/// one plus their error challenge; the bound keeps a custom mechanism (or a client it talks
/// to) from holding a session in AUTH forever.
pub const MAX_AUTH_STEPS: usize = 8;

/// Where an AUTH exchange stands between a 334 challenge and the client's response.
#[derive(Default)]
enum AuthStep {
    #[default]
    None,
    /// The mechanism waits for the client's response to its challenge number `steps`.
    Exchange {
        mechanism: String,
        exchange: Box<dyn Mechanism>,
        steps: usize,
    },
    /// The application refused a token; the mechanism's error challenge went out, and the
    /// client's answer to it gets this reply.
    Failing(Reply<'static>),
}

impl core::fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Exchange {
                mechanism, steps, ..
            } => write!(f, "Exchange({mechanism}, {steps})"),
            Self::Failing(r) => write!(f, "Failing({})", r.code()),
        }
    }
}

/// Drives one [`Session`] from the core's events and answers the core.
///
/// It implements, once for all adapters:
/// - AUTH: the SASL exchange [`Session::mechanism`] returns (PLAIN, LOGIN, XOAUTH2,
///   OAUTHBEARER or the application's own) is driven here: responses base64-decoded,
///   challenges sent as `334`, at most [`MAX_AUTH_STEPS`] of them; malformed responses get
///   `501 5.5.2`; the credentials go to [`Session::auth`] with the mechanism's name, and a 5xx
///   refusal is preceded by the mechanism's error challenge when it has one (XOAUTH2,
///   OAUTHBEARER);
/// - credentials with an authorization identity: refused with `535 5.7.8` unless
///   [`Session::authorize`] allows it;
/// - DATA and BDAT: `data_start` before the first chunk, `data_chunk` for the content,
///   `data_end` (or `data_end_lmtp`, with the number of replies the core says it owes) for
///   the reply;
/// - the body error latch: the first `data_chunk` error is kept, later chunks are read but not
///   passed on, and the error answers the end of the message;
/// - `reset` and `data_aborted` when the core reports [`Event::TransactionEnded`], and
///   `data_aborted` when the connection ends mid-message;
/// - handler replies that do not fit the step are logged and replaced by `451 4.3.0`.
///
/// It keeps no copy of the transaction: what it needs (recipients, replies owed, whether a
/// message is in progress, when a transaction ends) comes from the [`Server`].
///
/// An adapter calls [`connect`](Self::connect) once, [`handle`](Self::handle) for every
/// event, and [`close`](Self::close) at the end.
#[derive(Debug)]
pub struct Dispatcher<S> {
    /// `None` when the application refused the connection (the core then serves only QUIT).
    session: Option<S>,
    info: SessionInfo,
    metrics: Option<Arc<Metrics>>,
    auth: AuthStep,
    /// The first `data_chunk` error of this message.
    data_error: Option<Reply<'static>>,
}

impl<S: Session> Dispatcher<S> {
    /// Starts a session: reports the connection to `handler` and answers the core's
    /// [`Event::Connect`] (the greeting, or the handler's refusal). Call it before feeding any
    /// input, after `server.handle_tls_established` for implicit TLS.
    pub async fn connect<H>(
        handler: &H,
        server: &mut Server,
        info: SessionInfo,
        metrics: Option<Arc<Metrics>>,
        now: impl Fn() -> Instant,
    ) -> Self
    where
        H: Handler<Session = S>,
    {
        let mut this = Self {
            session: None,
            info,
            metrics,
            auth: AuthStep::None,
            data_error: None,
        };
        this.sync(server);
        // The core reports Connect first, without consuming anything.
        let progress = server.handle_input(now(), &[]);
        if !matches!(progress.event, Some(Event::Connect)) {
            warn!(event = ?progress.event, "session did not start with a connect event");
            return this;
        }
        match handler.connect(&this.info).await {
            Ok(session) => {
                this.session = Some(session);
                if let Err(e) = server.accept(now()) {
                    warn!(error = %e, "cannot send the greeting");
                }
            }
            Err(reply) => {
                debug!(code = %reply.code(), "connection refused by the application");
                if let Err(e) = server.reply(now(), &reply) {
                    warn!(error = %e, code = %reply.code(), "invalid connect refusal, sending 421");
                    let fallback = static_reply(
                        ReplyCode::UNAVAILABLE,
                        EnhancedCode::SYSTEM_TRANSIENT,
                        "Service not available",
                    );
                    // 421 always answers a pending connect.
                    let _ = server.reply(now(), &fallback);
                }
            }
        }
        this
    }

    /// Handles one event from [`Server::handle_input`] and answers it if it is a decision.
    /// `now` is called after each handler call, so slow handlers do not skew the core's timers.
    pub async fn handle(
        &mut self,
        server: &mut Server,
        event: Event<'_>,
        now: impl Fn() -> Instant,
    ) {
        self.sync(server);
        let Some(session) = self.session.as_mut() else {
            // A refused connection: the core answers everything but QUIT itself. Any decision
            // here would be a core change; refuse it rather than leave the session hanging.
            if server.awaiting_decision() {
                answer(server, &now, "refused", Decision::Reply(local_error()));
            }
            return;
        };
        let info = &self.info;
        match event {
            Event::Connect => {
                warn!("unexpected second connect event");
                answer(server, &now, "connect", Decision::Accept);
            }
            Event::Hello { verb, domain } => {
                let decision = session.ehlo(info, domain).await;
                if answer(server, &now, "ehlo", decision) {
                    self.info.ehlo = Some(domain.to_owned());
                    self.info.greeting = Some(verb);
                }
            }
            Event::Auth {
                mechanism,
                initial_response,
            } => {
                self.auth_start(server, &now, mechanism, initial_response)
                    .await
            }
            Event::AuthResponse(response) => self.auth_step(server, &now, response).await,
            Event::MailFrom {
                reverse_path,
                params,
            } => {
                let decision = session.mail_from(info, &reverse_path, &params).await;
                if answer(server, &now, "mail", decision) {
                    self.info.envelope = Some(Envelope::new(&reverse_path, &params));
                    self.info.transactions += 1;
                }
            }
            Event::RcptTo {
                forward_path,
                params,
            } => {
                let decision = session.rcpt_to(info, &forward_path, &params).await;
                if answer(server, &now, "rcpt", decision)
                    && let Some(envelope) = self.info.envelope.as_mut()
                {
                    envelope.add(&forward_path, &params);
                }
            }
            Event::DataStart => {
                let decision = session.data_start(info).await;
                answer(server, &now, "data", decision);
            }
            Event::Bdat { .. } => {
                if server.in_message() {
                    answer(server, &now, "bdat", Decision::Accept);
                } else {
                    let decision = match session.data_start(info).await {
                        // The core answers an accepted BDAT chunk itself (after reading it);
                        // a positive reply from data_start means accept.
                        Decision::Reply(r) if !r.code().is_negative() => Decision::Accept,
                        d => d,
                    };
                    answer(server, &now, "bdat", decision);
                }
            }
            Event::DataChunk(chunk) => {
                if let Some(m) = &self.metrics {
                    m.add_bytes(chunk.len() as u64);
                }
                if self.data_error.is_none()
                    && let Err(reply) = session.data_chunk(info, chunk).await
                {
                    debug!(code = %reply.code(), "message content refused by the application");
                    self.data_error = Some(reply);
                }
            }
            Event::DataEnd | Event::BdatEnd { last: true } => self.end_message(server, &now).await,
            Event::BdatEnd { last: false } => {
                answer(server, &now, "bdat", Decision::Accept);
            }
            Event::StartTls => {
                let decision = session.starttls(info).await;
                answer(server, &now, "starttls", decision);
            }
            Event::Vrfy(_) => {
                answer(server, &now, "vrfy", Decision::Accept);
            }
            Event::Expn(_) => {
                answer(server, &now, "expn", Decision::Accept);
            }
            Event::TransactionEnded { aborted } => {
                if aborted {
                    session.data_aborted(info).await;
                }
                session.reset(info).await;
                self.data_error = None;
                self.info.envelope = None;
                // XFORWARD describes one transaction (Postfix).
                self.info.xforward = None;
            }
            Event::Xclient(attrs) => {
                let mut facts = Forwarded::default();
                facts.merge(&attrs);
                let info = &mut self.info;
                info.front_end.get_or_insert_with(|| info.peer.clone());
                if let Some(ip) = facts.addr {
                    info.peer = SocketAddr::new(ip, facts.port.unwrap_or(0)).into();
                }
                if let Some(ip) = facts.dest_addr {
                    let port = facts.dest_port.or(info.local.tcp().map(|a| a.port()));
                    info.local = SocketAddr::new(ip, port.unwrap_or(0)).into();
                }
                if let Some(name) = &facts.name {
                    info.reverse_name = Some(name.clone());
                }
                info.authenticated.clone_from(&facts.login);
                info.xforward = None;
                info.xclient = Some(Arc::new(facts));
                self.auth = AuthStep::None;
                debug!(peer = %info.peer, "XCLIENT: the session starts over for the client it names");
                let decision = session.xclient(info).await;
                if let Decision::Reply(reply) = decision {
                    if server.reply(now(), &reply).is_err() {
                        warn!(code = %reply.code(), "invalid XCLIENT refusal, sending 421");
                        let fallback = static_reply(
                            ReplyCode::UNAVAILABLE,
                            EnhancedCode::SYSTEM_TRANSIENT,
                            "Service not available",
                        );
                        let _ = server.reply(now(), &fallback);
                    }
                } else if let Err(e) = server.accept(now()) {
                    warn!(error = %e, "cannot send the greeting after XCLIENT");
                }
            }
            Event::Xforward(attrs) => {
                let mut facts = self.info.xforward.as_deref().cloned().unwrap_or_default();
                facts.merge(&attrs);
                self.info.xforward = Some(Arc::new(facts));
            }
            Event::Rset | Event::Noop | Event::Help | Event::Quit => {}
            Event::Rejected { code, reason } => {
                debug!(%code, %reason, "command refused");
                // A refusal during an AUTH exchange (`*`, bad base64) ends the exchange.
                self.auth = AuthStep::None;
            }
            Event::MessageRejected { code, reason } => {
                debug!(%code, %reason, "message refused");
                if let Some(m) = &self.metrics {
                    m.message_rejected();
                }
            }
            // Events added to the core later are reports or decisions this version does not
            // know; refusing a decision keeps the session moving.
            _ => {
                if server.awaiting_decision() {
                    warn!(?event, "unknown event, refusing");
                    answer(server, &now, "unknown", Decision::Reply(local_error()));
                }
            }
        }
    }

    /// Ends the session: a message in progress is aborted, then the session is closed with
    /// the core's close reason (`PeerEof` if the core has none, e.g. after an IO error).
    pub async fn close(mut self, server: &Server) {
        let reason = server.close_reason().unwrap_or(CloseReason::PeerEof);
        if let Some(session) = self.session.as_mut() {
            if server.in_message() {
                session.data_aborted(&self.info).await;
            }
            session.close(&self.info, reason).await;
        }
    }

    /// The STARTTLS handshake finished with `tls`: the info gets its facts and the session
    /// hears of it. Call it after `server.handle_tls_established`.
    pub async fn secured(&mut self, server: &Server, tls: TlsInfo) {
        self.info.tls_info = Some(Arc::new(tls));
        self.sync(server);
        if let Some(session) = self.session.as_mut() {
            session.secured(&self.info).await;
        }
    }

    /// The session's info as the application last saw it.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Whether an AUTH exchange waits for the client's next line (a secret, not to be logged).
    pub fn in_auth_exchange(&self) -> bool {
        !matches!(self.auth, AuthStep::None)
    }

    /// Copies what the core knows into the session info: TLS, and the loss of EHLO and AUTH
    /// state after STARTTLS (RFC 3207 4.2).
    fn sync(&mut self, server: &Server) {
        self.info.tls = server.is_tls();
        if !server.is_authenticated() {
            self.info.authenticated = None;
        }
        if server.hello().is_none() {
            self.info.ehlo = None;
            self.info.greeting = None;
        }
    }

    async fn end_message(&mut self, server: &mut Server, now: &impl Fn() -> Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let lmtp = server.config().options().protocol == Protocol::Lmtp;
        let n = server.replies_owed() as usize;
        let content_ended = now();
        let decisions = match self.data_error.take() {
            Some(err) => vec![Decision::Reply(err); n],
            None if lmtp => {
                let mut d = session.data_end_lmtp(&self.info, n).await;
                if d.len() != n {
                    warn!(
                        got = d.len(),
                        expected = n,
                        "data_end_lmtp gave a wrong count"
                    );
                }
                d.resize(n, Decision::Reply(local_error()));
                d
            }
            None => vec![session.data_end(&self.info).await],
        };
        let mut any_accepted = false;
        // Each answer covers the next recipient still waiting (one for SMTP).
        for decision in decisions {
            if !server.awaiting_decision() {
                break;
            }
            any_accepted |= answer(server, now, "message", decision);
        }
        if let Some(m) = &self.metrics {
            m.message_decided(now().saturating_duration_since(content_ended));
            if any_accepted {
                m.message_accepted();
            } else {
                m.message_rejected();
            }
        }
    }

    async fn auth_start(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        mechanism: &str,
        initial: Option<Secret<&str>>,
    ) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        // The core checked the name against the offered ones, case-insensitively.
        let name = mechanism.to_ascii_uppercase();
        let Some(exchange) = session.mechanism(&self.info, &name) else {
            // Offered but not run by this session: answered as the core answers an unknown
            // mechanism (settings refuse to offer a name nothing implements).
            let reply = Refusal::UnknownMechanism.reply();
            answer(server, now, "auth", Decision::Reply(reply));
            return;
        };
        let response = match initial.map(|r| auth::decode_base64(r.expose())).transpose() {
            Ok(r) => r,
            Err(e) => return self.malformed(server, now, e),
        };
        self.auth = AuthStep::Exchange {
            mechanism: name,
            exchange,
            steps: 0,
        };
        self.advance(server, now, response.as_deref()).await;
    }

    async fn auth_step(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        response: Secret<&str>,
    ) {
        match &self.auth {
            AuthStep::Exchange { .. } => match auth::decode_base64(response.expose()) {
                Ok(r) => self.advance(server, now, Some(&r)).await,
                Err(e) => {
                    self.auth = AuthStep::None;
                    self.malformed(server, now, e);
                }
            },
            AuthStep::Failing(_) => {
                // Whatever the client answered to the error challenge (XOAUTH2: an empty
                // line; OAUTHBEARER: %x01), the exchange has failed.
                let AuthStep::Failing(reply) = std::mem::take(&mut self.auth) else {
                    return;
                };
                self.auth_refused(server, now, reply);
            }
            AuthStep::None => {
                warn!("AUTH response without a challenge");
                answer(server, now, "auth", Decision::Reply(local_error()));
            }
        }
    }

    /// Gives the mechanism the client's (decoded) response and acts on its step.
    async fn advance(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        response: Option<&[u8]>,
    ) {
        let AuthStep::Exchange {
            mechanism,
            mut exchange,
            steps,
        } = std::mem::take(&mut self.auth)
        else {
            return;
        };
        match exchange.step(response) {
            Step::Challenge(_) if steps >= MAX_AUTH_STEPS => {
                debug!(%mechanism, steps, "AUTH exchange too long");
                let reply = static_reply(
                    ReplyCode::AUTH_FAILED,
                    EnhancedCode::AUTH_FAILED,
                    "Authentication exchange too long",
                );
                self.auth_refused(server, now, reply);
            }
            Step::Challenge(challenge) => {
                if self.challenge(server, now, &challenge) {
                    self.auth = AuthStep::Exchange {
                        mechanism,
                        exchange,
                        steps: steps + 1,
                    };
                }
            }
            Step::Done(creds) => {
                self.auth_check(server, now, &mechanism, exchange, creds)
                    .await
            }
            Step::Failed(e) => self.malformed(server, now, e),
            // Steps added later are failures this version cannot act on.
            _ => self.malformed(server, now, auth::SaslError::Unexpected),
        }
    }

    /// Sends `challenge` as a 334 line; whether it went out.
    fn challenge(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        challenge: &[u8],
    ) -> bool {
        let text = auth::encode_base64(challenge);
        match Reply::new(ReplyCode::AUTH_CONTINUE, text) {
            Ok(reply) => answer(server, now, "auth", Decision::Reply(reply)),
            Err(e) => {
                // A challenge longer than a reply line: the mechanism's fault, not the client's.
                warn!(error = %e, "AUTH challenge does not fit a reply line");
                answer(server, now, "auth", Decision::Reply(local_error()));
                false
            }
        }
    }

    async fn auth_check(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        mechanism: &str,
        mut exchange: Box<dyn Mechanism>,
        creds: Credentials,
    ) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let acting_as = creds.acting_as();
        if let Some(authzid) = acting_as
            && !session.authorize(&self.info, creds.user(), authzid).await
        {
            debug!(user = %creds.user(), "may not act as the authorization identity");
            let reply = static_reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            );
            self.auth_refused(server, now, reply);
            return;
        }
        let decision = match session.auth(&self.info, mechanism, &creds).await {
            // A 334 would continue an exchange the mechanism has finished.
            Decision::Reply(r) if r.code() == ReplyCode::AUTH_CONTINUE => {
                warn!("auth handler answered 334; refusing");
                Decision::Reply(local_error())
            }
            d => d,
        };
        if let Decision::Reply(refusal) = &decision
            && refusal.code().get() / 100 == 5
            && let Some(challenge) = exchange.failure_challenge()
        {
            // The failure reply answers the client's reply to the error document.
            debug!(user = %creds.user(), %mechanism, "credentials refused, sending the error challenge");
            if self.challenge(server, now, &challenge) {
                self.auth = AuthStep::Failing(refusal.clone());
            }
            return;
        }
        if answer(server, now, "auth", decision) && server.is_authenticated() {
            let identity = acting_as.unwrap_or(creds.user()).to_owned();
            debug!(user = %creds.user(), as_user = %identity, %mechanism, "authenticated");
            self.info.authenticated = Some(identity);
        } else if let Some(m) = &self.metrics {
            m.auth_failed();
        }
    }

    /// Sends the failure `reply` that ends an exchange, and counts it.
    fn auth_refused(
        &mut self,
        server: &mut Server,
        now: &impl Fn() -> Instant,
        reply: Reply<'static>,
    ) {
        answer(server, now, "auth", Decision::Reply(reply));
        if let Some(m) = &self.metrics {
            m.auth_failed();
        }
    }

    /// `501 5.5.2`: the AUTH response did not decode. Counts as a failed attempt.
    fn malformed(&mut self, server: &mut Server, now: &impl Fn() -> Instant, e: auth::SaslError) {
        debug!(error = %e, "malformed AUTH response");
        let reply = static_reply(
            ReplyCode::SYNTAX_ERROR_PARAMS,
            EnhancedCode::SYNTAX_ERROR,
            "Malformed authentication response",
        );
        answer(server, now, "auth", Decision::Reply(reply));
        if let Some(m) = &self.metrics {
            m.auth_failed();
        }
    }
}

/// Sends `decision` to the core. A reply the core refuses for this step is logged and
/// replaced by `451 4.3.0`. Returns whether the answer sent was positive (2xx or 3xx).
fn answer(
    server: &mut Server,
    now: &impl Fn() -> Instant,
    step: &'static str,
    decision: Decision,
) -> bool {
    let result = match &decision {
        Decision::Accept => server.accept(now()).map(|()| true),
        Decision::Reply(reply) => server
            .reply(now(), reply)
            .map(|()| !reply.code().is_negative()),
    };
    match result {
        Ok(positive) => {
            match &decision {
                Decision::Accept => debug!(step, "accepted"),
                Decision::Reply(r) => debug!(step, code = %r.code(), "replied"),
            }
            positive
        }
        Err(e) => {
            warn!(step, error = %e, ?decision, "reply does not fit the step, sending 451");
            if let Err(e) = server.reply(now(), &local_error()) {
                warn!(step, error = %e, "cannot send the fallback reply");
            }
            false
        }
    }
}

/// Runs a session to its end against a [`Server`] fed from `input`, for tests of this crate.
#[cfg(test)]
pub(crate) mod harness {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls a future that never waits on IO to completion.
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        // Test handlers never return Pending; the bound keeps a broken one from hanging.
        for _ in 0..1000 {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        panic!("future did not complete");
    }
}

#[cfg(test)]
mod tests;
