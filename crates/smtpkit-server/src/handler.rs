//! The application's API: [`Handler`] makes a [`Session`] per connection; every `Session` method
//! answers one step of the conversation with a [`Decision`].

use std::sync::Arc;

use smtpkit_proto::address::{ForwardPath, ReversePath};
use smtpkit_proto::auth::{self, Credentials, Mechanism};
use smtpkit_proto::extension::Parameters;
use smtpkit_proto::{CloseReason, EnhancedCode, HelloVerb, Reply, ReplyCode};

use crate::endpoint::Endpoint;
use crate::envelope::Envelope;
use crate::forwarded::Forwarded;
use crate::id::SessionId;
use crate::proxy::{ProxyHeader, ProxyTlvs};
use crate::rdns::ReverseName;
use crate::settings::ListenerKind;
use crate::tls_info::TlsInfo;

/// What a session method decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the standard positive reply for the step (250, 354, 235, the EHLO list...).
    Accept,
    /// Send this reply instead: usually a refusal (4xx/5xx). A reply that does not fit the step
    /// (a 354 to RCPT, say) is logged and replaced by `451 4.3.0`.
    Reply(Reply<'static>),
}

impl Decision {
    /// A refusal with an enhanced status code, for the common case.
    ///
    /// Returns `451 4.3.0` if `code` and `text` do not make a valid reply (the text has control
    /// characters or is too long, or the classes of `code` and `enhanced` differ), so a handler
    /// can never send malformed bytes.
    ///
    /// ```
    /// use smtpkit_server::{Decision, EnhancedCode, ReplyCode};
    /// let d = Decision::reply(550, EnhancedCode::new(5, 1, 1).unwrap(), "No such user");
    /// let smtpkit_server::Decision::Reply(r) = d else { unreachable!() };
    /// assert_eq!(r.code(), ReplyCode::MAILBOX_UNAVAILABLE);
    /// ```
    pub fn reply(code: u16, enhanced: EnhancedCode, text: &str) -> Self {
        Self::Reply(make_reply(code, enhanced, text))
    }
}

/// Builds a reply from parts, falling back to `451 4.3.0` when they are invalid.
pub(crate) fn make_reply(code: u16, enhanced: EnhancedCode, text: &str) -> Reply<'static> {
    ReplyCode::new(code)
        .and_then(|code| Reply::new(code, text.to_owned()).ok())
        .and_then(|r| r.try_with_enhanced(enhanced).ok())
        .unwrap_or_else(local_error)
}

/// `451 4.3.0 Local error in processing`: the fallback when an application reply is unusable.
pub(crate) fn local_error() -> Reply<'static> {
    static_reply(
        ReplyCode::LOCAL_ERROR,
        EnhancedCode::SYSTEM_TRANSIENT,
        "Local error in processing",
    )
}

/// A reply from constant parts of this crate.
pub(crate) fn static_reply(
    code: ReplyCode,
    enhanced: EnhancedCode,
    text: &'static str,
) -> Reply<'static> {
    // Callers pass short printable literals; the unit tests exercise every one of them.
    Reply::new(code, text)
        .expect("constant reply text is valid")
        .with_enhanced(enhanced)
}

/// What the application knows about a session, passed to every [`Session`] method.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// A short printable id, unique in this process; put it in every log line.
    pub id: SessionId,
    /// The client: the real one when a trusted proxy sent a PROXY header. On a Unix-socket
    /// listener it is [`Endpoint::Unix`] (usually unnamed) and has no IP address.
    pub peer: Endpoint,
    /// The address the client connected to (the proxy's destination when proxied; the
    /// socket file's path on a Unix-socket listener).
    pub local: Endpoint,
    /// Which kind of listener accepted the connection.
    pub listener: ListenerKind,
    /// Whether the session is encrypted (implicit TLS or after STARTTLS).
    pub tls: bool,
    /// The user name after a successful AUTH.
    pub authenticated: Option<String>,
    /// The name given in the last accepted EHLO, HELO or LHLO.
    pub ehlo: Option<String>,
    /// Which greeting was accepted last (`None` before one, and again after STARTTLS).
    pub greeting: Option<HelloVerb>,
    /// The TLS handshake's facts once the session is encrypted; shared, so cloning the info
    /// stays cheap.
    pub tls_info: Option<Arc<TlsInfo>>,
    /// The transaction in progress: from an accepted MAIL FROM until it ends (after
    /// [`Session::reset`]).
    pub envelope: Option<Envelope>,
    /// How many transactions this session has started (accepted MAIL FROMs), the current one
    /// included.
    pub transactions: u32,
    /// The PROXY header a trusted proxy sent, when the listener expects one. Shared, as the
    /// TLVs are: a header inline would cost every idle connection its 72 octets.
    pub proxy: Option<Arc<ProxyHeader>>,
    /// The TLVs of a v2 PROXY header (ALPN, authority, unique id, the client's TLS with the
    /// proxy); shared, so cloning the info stays cheap.
    pub proxy_tlvs: Option<Arc<ProxyTlvs>>,
    /// The client's reverse-DNS name as the server found it before the greeting: confirmed,
    /// unconfirmed, none, or a temporary failure. `None` when the listener looks no names up
    /// (no resolver given to the builder, or [`ListenerSettings::reverse_dns`] off).
    ///
    /// [`ListenerSettings::reverse_dns`]: crate::ListenerSettings::reverse_dns
    pub reverse_name: Option<ReverseName>,
    /// After XCLIENT from a trusted front end: the address that really connected (the front
    /// end's). `peer`, `local`, `reverse_name` and `authenticated` then hold the facts the front
    /// end gave, as Postfix substitutes them.
    pub front_end: Option<Endpoint>,
    /// What the last XCLIENT said, all of it (PROTO and HELO too).
    pub xclient: Option<Arc<Forwarded>>,
    /// What XFORWARD said about the original client of the current transaction (Postfix:
    /// a content filter or relay in front); cleared when the transaction ends.
    pub xforward: Option<Arc<Forwarded>>,
}

impl SessionInfo {
    /// Info for a new connection, with a fresh [`SessionId`].
    pub fn new(
        peer: impl Into<Endpoint>,
        local: impl Into<Endpoint>,
        listener: ListenerKind,
    ) -> Self {
        Self {
            id: SessionId::next(),
            peer: peer.into(),
            local: local.into(),
            listener,
            tls: false,
            authenticated: None,
            ehlo: None,
            greeting: None,
            tls_info: None,
            envelope: None,
            transactions: 0,
            proxy: None,
            proxy_tlvs: None,
            reverse_name: None,
            front_end: None,
            xclient: None,
            xforward: None,
        }
    }

    /// The same info with the client's reverse-DNS name.
    #[must_use]
    pub fn with_reverse_name(mut self, name: ReverseName) -> Self {
        self.reverse_name = Some(name);
        self
    }

    /// The same info for a session encrypted from the start (implicit TLS), with the
    /// handshake's facts.
    #[must_use]
    pub fn with_tls_info(mut self, tls: TlsInfo) -> Self {
        self.tls = true;
        self.tls_info = Some(Arc::new(tls));
        self
    }

    /// The same info with the PROXY header the connection started with, and its TLVs (v2).
    #[must_use]
    pub fn with_proxy(mut self, header: ProxyHeader, tlvs: Option<ProxyTlvs>) -> Self {
        self.proxy = Some(Arc::new(header));
        self.proxy_tlvs = tlvs.map(Arc::new);
        self
    }

    /// The same info marked as encrypted (implicit TLS).
    #[must_use]
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }
}

/// The application's server-wide object: it decides on new connections.
///
/// ```
/// use smtpkit_server::{Decision, Handler, Reply, Session, SessionInfo};
///
/// struct Accept;
/// struct Conn;
/// impl Session for Conn {}
/// impl Handler for Accept {
///     type Session = Conn;
///     async fn connect(&self, _info: &SessionInfo) -> Result<Conn, Reply<'static>> {
///         Ok(Conn)
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The per-connection state.
    type Session: Session;

    /// A new connection, after the PROXY header and, for implicit TLS, the handshake.
    /// `Err(reply)` refuses it: 554 serves only QUIT afterwards (RFC 5321 3.1), 421 closes.
    /// Other codes are replaced by `421 4.3.0`.
    fn connect(
        &self,
        info: &SessionInfo,
    ) -> impl Future<Output = Result<Self::Session, Reply<'static>>> + Send;
}

/// One connection's conversation. Every method has a default; most accept.
///
/// The methods are called in protocol order, never concurrently. Only the body methods
/// (`data_*`) see message content, as borrowed, already un-stuffed slices: nothing buffers the
/// whole message unless the application does.
pub trait Session: Send + 'static {
    /// EHLO, HELO or LHLO with `domain`. Default: accept.
    fn ehlo(&mut self, info: &SessionInfo, domain: &str) -> impl Future<Output = Decision> + Send {
        let _ = (info, domain);
        async { Decision::Accept }
    }

    /// STARTTLS, before its `220`: accept to start the handshake, or refuse with a reply
    /// (`454 4.7.0`, say) and the session goes on in plaintext. Default: accept.
    fn starttls(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        let _ = info;
        async { Decision::Accept }
    }

    /// The STARTTLS handshake has finished: `info.tls_info` holds its facts (version, cipher,
    /// SNI, client certificates). The client must greet again. Not called for implicit TLS,
    /// whose facts are in the info given to [`Handler::connect`]. Default: nothing.
    fn secured(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        let _ = info;
        async {}
    }

    /// XCLIENT from a trusted front end has replaced the client's facts in `info` (`peer`,
    /// `reverse_name`, `authenticated`...; see [`SessionInfo::xclient`]): the session starts
    /// over, as for a new connection. Accept sends a new `220` greeting; refuse with `554` (only
    /// QUIT is served then) or `421` (closes), as [`Handler::connect`] would. Default: accept.
    fn xclient(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        let _ = info;
        async { Decision::Accept }
    }

    /// The SASL exchange for AUTH `mechanism` (one of the offered ones, upper case), or
    /// `None` to answer `504 5.5.4`. Called once per AUTH command; the exchange it returns is
    /// driven by the dispatcher (challenges, step limit, base64) and ends in
    /// [`auth`](Self::auth). Override it to run a mechanism of your own, named in
    /// [`ServerSettings::custom_mechanisms`](crate::ServerSettings::custom_mechanisms) (go-smtp's
    /// `Session.Auth(mech)`). Default: the built-in PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER
    /// ([`smtpkit_proto::auth::builtin`]).
    fn mechanism(&mut self, info: &SessionInfo, mechanism: &str) -> Option<Box<dyn Mechanism>> {
        let _ = info;
        auth::builtin(mechanism)
    }

    /// AUTH: the client presented `creds` with `mechanism` (upper case: `PLAIN`, `LOGIN`,
    /// `XOAUTH2`, `OAUTHBEARER` or one of your own). Accept authenticates as
    /// [`creds.user()`](Credentials::user), or as the authorization identity when
    /// [`authorize`](Self::authorize) allowed it (it is asked first, and `auth` is not called
    /// when it refuses). A handler may take tokens and refuse passwords, or the reverse, by
    /// matching on the [`Credentials`] variant. A 5xx refusal of a token first sends the
    /// mechanism's error challenge (XOAUTH2, OAUTHBEARER), then the refusal.
    ///
    /// Default: refuse with `535 5.7.8`. Accepting by default would let anyone authenticate,
    /// and an authenticated session is usually allowed to relay: an open relay.
    fn auth(
        &mut self,
        info: &SessionInfo,
        mechanism: &str,
        creds: &Credentials,
    ) -> impl Future<Output = Decision> + Send {
        let _ = (info, mechanism, creds);
        async {
            Decision::Reply(static_reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            ))
        }
    }

    /// AUTH PLAIN (or a custom mechanism's password) with an authorization identity `authzid`
    /// other than the authentication
    /// identity `authcid`: may `authcid` act as `authzid` (RFC 4616 2)? `false` refuses the
    /// attempt with `535 5.7.8` before the password is checked. Default: `false`, so no one
    /// is logged in as someone else by an application that never looked at `authzid`.
    fn authorize(
        &mut self,
        info: &SessionInfo,
        authcid: &str,
        authzid: &str,
    ) -> impl Future<Output = bool> + Send {
        let _ = (info, authcid, authzid);
        async { false }
    }

    /// MAIL FROM. Default: accept.
    fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        params: &Parameters<'_>,
    ) -> impl Future<Output = Decision> + Send {
        let _ = (info, from, params);
        async { Decision::Accept }
    }

    /// RCPT TO. Default: accept.
    fn rcpt_to(
        &mut self,
        info: &SessionInfo,
        to: &ForwardPath<'_>,
        params: &Parameters<'_>,
    ) -> impl Future<Output = Decision> + Send {
        let _ = (info, to, params);
        async { Decision::Accept }
    }

    /// The message content is about to start (DATA, or the first BDAT chunk). Default: accept.
    fn data_start(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        let _ = info;
        async { Decision::Accept }
    }

    /// A piece of message content. `Err(reply)` fails the message: the rest of the body is
    /// still read (so the next command starts cleanly) but not passed on, and `reply` answers
    /// the end of data. Default: ignore the content.
    fn data_chunk(
        &mut self,
        info: &SessionInfo,
        chunk: &[u8],
    ) -> impl Future<Output = Result<(), Reply<'static>>> + Send {
        let _ = (info, chunk);
        async { Ok(()) }
    }

    /// The end of the message: the reply to it. Accept only once the message is safely
    /// stored. Default: accept.
    fn data_end(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        let _ = info;
        async { Decision::Accept }
    }

    /// LMTP's end of message: one decision per accepted recipient, in RCPT order (RFC 2033
    /// 4.2). Missing entries are filled with `451 4.3.0`, extra ones ignored. Default:
    /// [`data_end`](Self::data_end) repeated.
    fn data_end_lmtp(
        &mut self,
        info: &SessionInfo,
        recipients: usize,
    ) -> impl Future<Output = Vec<Decision>> + Send {
        async move {
            let mut out = Vec::with_capacity(recipients);
            for _ in 0..recipients {
                out.push(self.data_end(info).await);
            }
            out
        }
    }

    /// The message was dropped before its end was answered by the application: the core
    /// refused it (too big, bare line endings), a BDAT chunk was refused, or the connection was
    /// lost mid-message. Drop what was received. Default: nothing.
    fn data_aborted(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        let _ = info;
        async {}
    }

    /// The transaction is over or gone: after its message (accepted or not), or dropped by a
    /// new EHLO or a refused BDAT chunk (after `data_aborted` if content had started); and
    /// after every RSET, transaction or not. Called once per transaction. Default: nothing.
    fn reset(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        let _ = info;
        async {}
    }

    /// The connection is closing. Default: nothing.
    fn close(
        &mut self,
        info: &SessionInfo,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (info, reason);
        async {}
    }
}
