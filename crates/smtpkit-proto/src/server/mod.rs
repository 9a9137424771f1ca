//! The server side of a session: [`Server`], driven by input bytes and time, answering with
//! reply bytes and [`Event`]s.

mod config;
mod event;
mod timer;

use std::sync::Arc;
use std::time::Instant;

pub use config::{
    ConfigError, Extensions, Limits, Protocol, ServerConfig, ServerOptions, Timeouts,
};
pub use event::{Event, Progress};

use self::timer::{Timer, TimerTable};
use crate::address::{ForwardPath, ReversePath};
use crate::command::{Command, HelloVerb};
use crate::data::{BareLineEnding, BdatReader, Decoded, DotDecoder};
use crate::error::{CloseReason, ParseError, Refusal, UsageError};
use crate::extension::{BodyType, Parameter, Parameters};
use crate::line::{self, Frame};
use crate::reply::encode::{write_reply, write_u64};
use crate::reply::{EnhancedCode, Reply, ReplyCode};
use crate::secret::Secret;

/// One SMTP (or LMTP) server session, without IO.
///
/// Methods come in four kinds, as in quinn-proto:
/// - **inputs** (`handle_*`): bytes from the client, the clock, the TLS layer;
/// - **decisions** ([`accept`](Self::accept), [`reply`](Self::reply)): the application's answer
///   to the last [`Event`] marked *decision*;
/// - **outputs** (`poll_*`): reply bytes to write and the next deadline;
/// - **getters** (`is_*`, `wants_*`).
///
/// After any input or decision, write out [`poll_transmit`](Self::poll_transmit) and re-check
/// [`poll_timeout`](Self::poll_timeout). See the crate docs for the whole run loop.
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    mode: Mode,
    pending: Option<Pending>,
    hello: Option<HelloVerb>,
    tls: bool,
    authenticated: bool,
    txn: Option<Transaction>,
    out: Vec<u8>,
    sent: usize,
    timers: TimerTable,
    count: Counters,
    closed: Option<CloseReason>,
    /// Skipping the rest of a command line that was too long.
    skip_line: bool,
    /// The greeting was 554: serve only QUIT (RFC 5321 3.1).
    refused: bool,
    /// Close with 421 4.3.2 once no transaction is open.
    draining: bool,
    connect_reported: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Connect,
    GreetingDelay,
    Command,
    AuthResponse,
    Data {
        decoder: DotDecoder,
        poison: Option<Refusal>,
    },
    Bdat {
        reader: BdatReader,
        last: bool,
        discard: bool,
    },
    TlsHandshake,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Connect,
    Hello(HelloVerb),
    Auth,
    Mail {
        body: BodyType,
        smtputf8: bool,
    },
    Rcpt,
    Data,
    /// End of content; `replies` left to send (LMTP: one per accepted recipient).
    DataEnd {
        replies: u32,
    },
    Bdat {
        size: u64,
        last: bool,
    },
    BdatEnd {
        size: u64,
        last: bool,
    },
    StartTls,
    Vrfy,
    Expn,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Transaction {
    body: BodyType,
    smtputf8: bool,
    accepted: u32,
    /// Content octets received so far.
    size: u64,
    bdat: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    errors: u32,
    junk: u32,
    auth_failures: u32,
    messages: u32,
    bytes: u64,
}

/// One step of the input loop.
enum Step<'i> {
    /// Report an event after consuming this many bytes.
    Event(usize, Event<'i>),
    /// Consumed this many bytes or changed state; look again.
    Continue(usize),
    /// Nothing more to do with this input.
    Stop(usize),
}

impl Server {
    /// A session for a new connection at `now`. The first [`handle_input`](Self::handle_input)
    /// reports [`Event::Connect`], whose answer sends the greeting.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        if let Some(d) = config.options.timeouts.session {
            timers.set(Timer::Session, now + d);
        }
        timers.set(Timer::Decision, now + config.options.timeouts.greeting);
        Self {
            config,
            mode: Mode::Connect,
            pending: None,
            hello: None,
            tls: false,
            authenticated: false,
            txn: None,
            out: Vec::with_capacity(512),
            sent: 0,
            timers,
            count: Counters::default(),
            closed: None,
            skip_line: false,
            refused: false,
            draining: false,
            connect_reported: false,
        }
    }

    // ---- Inputs ----------------------------------------------------------------------------

    /// Feeds client bytes. Returns at most one event; drop `consumed` bytes from the front of
    /// the input once it is handled, then call again until the event is `None`.
    ///
    /// While a decision is pending, nothing is consumed: answer it first.
    pub fn handle_input<'i>(&mut self, now: Instant, input: &'i [u8]) -> Progress<'i> {
        let mut consumed = 0;
        // Every iteration consumes input or changes mode towards one that does, so the loop
        // runs at most a few times per input byte.
        loop {
            if self.pending.is_some() || self.closed.is_some() {
                return Progress {
                    consumed,
                    event: None,
                };
            }
            let rest = &input[consumed..];
            let step = match self.mode {
                Mode::Connect => self.step_connect(),
                Mode::GreetingDelay => self.step_greeting_delay(rest),
                Mode::Command | Mode::AuthResponse => {
                    if self.out.len() - self.sent >= self.config.options.limits.output_buffer {
                        Step::Stop(0)
                    } else {
                        self.step_command(now, rest)
                    }
                }
                Mode::Data { .. } => self.step_data(now, rest),
                Mode::Bdat { .. } => self.step_bdat(now, rest),
                // Plaintext after STARTTLS, before the handshake, is dropped (CVE-2011-0411).
                Mode::TlsHandshake => Step::Stop(rest.len()),
                Mode::Closed => Step::Stop(0),
            };
            match step {
                Step::Event(n, event) => {
                    return Progress {
                        consumed: consumed + n,
                        event: Some(event),
                    };
                }
                Step::Continue(n) => consumed += n,
                Step::Stop(n) => {
                    return Progress {
                        consumed: consumed + n,
                        event: None,
                    };
                }
            }
        }
    }

    /// Tells the session that time has reached `now`; call when
    /// [`poll_timeout`](Self::poll_timeout) has passed. A missed deadline queues
    /// `421 4.4.2` and closes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(timer) = self.timers.expired(now) else {
            return;
        };
        if timer == Timer::GreetingDelay {
            self.timers.stop(Timer::GreetingDelay);
            if self.mode == Mode::GreetingDelay {
                self.send_greeting(now);
            }
            return;
        }
        self.send(
            ReplyCode::UNAVAILABLE,
            EnhancedCode::TIMEOUT,
            "Timeout exceeded, closing connection",
        );
        self.close(CloseReason::Timeout);
    }

    /// The client closed its side of the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        self.close(CloseReason::PeerEof);
    }

    /// The TLS handshake finished: after STARTTLS, or at once for implicit TLS (RFC 8314),
    /// which may be reported before the first input. After STARTTLS everything learned in
    /// plaintext is forgotten (RFC 3207 4.2): the client must send EHLO again.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.tls = true;
        if self.mode == Mode::TlsHandshake {
            self.hello = None;
            self.txn = None;
            self.authenticated = false;
            self.mode = Mode::Command;
            self.arm_idle(now);
        }
    }

    /// The TLS handshake failed; the session is over.
    pub fn handle_tls_failed(&mut self, _now: Instant) {
        self.close(CloseReason::TlsFailed);
    }

    /// Graceful shutdown: a session with an open transaction may finish it; otherwise, and
    /// right after it, `421 4.3.2` is queued and the session closes.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.draining = true;
        self.maybe_drain();
    }

    /// Immediate shutdown: queue `421 4.3.2` and close, transaction or not.
    pub fn handle_abort(&mut self, _now: Instant) {
        if self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SYSTEM_SHUTDOWN,
                "Server shutting down",
            );
            self.close(CloseReason::Shutdown);
        }
    }

    // ---- Decisions -------------------------------------------------------------------------

    /// Answers the pending decision with the standard positive reply.
    pub fn accept(&mut self, now: Instant) -> Result<(), UsageError> {
        let pending = self.check_pending()?;
        match pending {
            Pending::Connect => self.resolve_connect(now, None),
            Pending::Hello(verb) => {
                let bytes = match verb {
                    HelloVerb::Helo => &self.config.helo,
                    _ => &self.config.ehlo[usize::from(self.tls)],
                };
                self.out.extend_from_slice(bytes);
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Auth => {
                self.send(
                    ReplyCode::AUTH_OK,
                    EnhancedCode::SECURITY_OK,
                    "Authentication successful",
                );
                self.resolve(now, pending, ReplyCode::AUTH_OK);
            }
            Pending::Mail { .. } => {
                self.send(ReplyCode::OK, EnhancedCode::SENDER_OK, "Sender OK");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Rcpt => {
                self.send(ReplyCode::OK, EnhancedCode::RECIPIENT_OK, "Recipient OK");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Data => {
                self.send(
                    ReplyCode::START_DATA,
                    EnhancedCode::OK,
                    "Start mail input; end with <CRLF>.<CRLF>",
                );
                self.resolve(now, pending, ReplyCode::START_DATA);
            }
            Pending::DataEnd { .. } => {
                self.send(ReplyCode::OK, EnhancedCode::OK, "Message accepted");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Bdat { .. } => self.resolve(now, pending, ReplyCode::OK),
            Pending::BdatEnd { size, last } => {
                if last {
                    self.send(ReplyCode::OK, EnhancedCode::OK, "Message accepted");
                } else {
                    self.send_octets_received(size);
                }
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::StartTls => {
                self.send(ReplyCode::READY, EnhancedCode::OK, "Ready to start TLS");
                self.resolve(now, pending, ReplyCode::READY);
            }
            Pending::Vrfy => {
                self.send(
                    ReplyCode::CANNOT_VERIFY,
                    EnhancedCode::PROTOCOL_OK,
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                self.resolve(now, pending, ReplyCode::CANNOT_VERIFY);
            }
            Pending::Expn => {
                self.send(
                    ReplyCode::NOT_IMPLEMENTED,
                    EnhancedCode::INVALID_COMMAND,
                    "EXPN not available",
                );
                self.resolve(now, pending, ReplyCode::NOT_IMPLEMENTED);
            }
        }
        Ok(())
    }

    /// Answers the pending decision with `reply`. A code that does not answer it (354 to
    /// RCPT, 250 to DATA, 3xx to MAIL) is refused and nothing changes. A 421 closes the session
    /// after it is sent.
    pub fn reply(&mut self, now: Instant, reply: &Reply<'_>) -> Result<(), UsageError> {
        let pending = self.check_pending()?;
        let code = reply.code();
        let n = code.get();
        let ok = match pending {
            Pending::Connect => matches!(n, 220 | 421 | 554),
            Pending::Data => n == 354 || code.is_negative(),
            Pending::Bdat { .. } => code.is_negative(),
            Pending::StartTls => n == 220 || code.is_negative(),
            Pending::Auth => matches!(n, 235 | 334) || code.is_negative(),
            _ => code.is_positive() || code.is_negative(),
        };
        if !ok {
            return Err(UsageError::UnexpectedReply { code });
        }
        if pending == Pending::Connect {
            self.resolve_connect(now, Some(reply));
            return Ok(());
        }
        reply.encode(self.config.enhanced(), &mut self.out);
        if n == 421 {
            self.close(CloseReason::Shutdown);
            return Ok(());
        }
        self.resolve(now, pending, code);
        Ok(())
    }

    // ---- Outputs ---------------------------------------------------------------------------

    /// Reply bytes waiting to be written.
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `written` bytes of [`poll_transmit`](Self::poll_transmit) reached the socket.
    pub fn advance_transmit(&mut self, written: usize) {
        self.sent = (self.sent + written).min(self.out.len());
        if self.sent == self.out.len() {
            // Keep the capacity: the output buffer is reused for the whole session.
            self.out.clear();
            self.sent = 0;
        }
    }

    /// The next deadline; call [`handle_timeout`](Self::handle_timeout) when it passes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- Getters ---------------------------------------------------------------------------

    /// Whether reading more input could make progress: no decision pending, not closed, not
    /// waiting for TLS, and the output is below its cap. Flush before blocking on a read.
    pub fn wants_input(&self) -> bool {
        match self.mode {
            Mode::Connect | Mode::TlsHandshake | Mode::Closed => false,
            Mode::GreetingDelay => self.config.options.pipelining_sync_check,
            _ => {
                self.pending.is_none()
                    && self.out.len() - self.sent < self.config.options.limits.output_buffer
            }
        }
    }

    /// Whether a decision is pending.
    pub fn awaiting_reply(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether STARTTLS was accepted: flush the output, then run the TLS handshake and report
    /// its outcome with [`handle_tls_established`](Self::handle_tls_established) or
    /// [`handle_tls_failed`](Self::handle_tls_failed).
    pub fn wants_tls_handshake(&self) -> bool {
        self.mode == Mode::TlsHandshake
    }

    /// Whether the session is over. Write out what is left in `poll_transmit`, then close.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Whether a mail transaction is open (MAIL accepted, message not yet answered).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Whether message content is being received (DATA after 354, or a BDAT chunk).
    pub fn in_data(&self) -> bool {
        matches!(
            self.mode,
            Mode::Data { .. } | Mode::Bdat { discard: false, .. }
        )
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The greeting verb the client used, once answered positively.
    pub fn hello(&self) -> Option<HelloVerb> {
        self.hello
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    // ---- Input steps -----------------------------------------------------------------------

    fn step_connect<'i>(&mut self) -> Step<'i> {
        if self.connect_reported {
            return Step::Stop(0);
        }
        self.connect_reported = true;
        self.pending = Some(Pending::Connect);
        Step::Event(0, Event::Connect)
    }

    fn step_greeting_delay<'i>(&mut self, rest: &'i [u8]) -> Step<'i> {
        if !rest.is_empty() && self.config.options.pipelining_sync_check {
            self.pipelining_violation();
            return Step::Stop(rest.len());
        }
        Step::Stop(0)
    }

    fn step_command<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        if self.skip_line {
            return match memchr::memchr(b'\n', rest) {
                Some(lf) => {
                    self.skip_line = false;
                    Step::Continue(lf + 1)
                }
                None => Step::Stop(rest.len()),
            };
        }
        let max = if self.mode == Mode::AuthResponse {
            line::MAX_AUTH_LINE
        } else {
            line::limit_for(rest, self.config.options.limits.command_line)
        };
        match line::frame(rest, max) {
            Frame::Incomplete => Step::Stop(0),
            Frame::TooLong => {
                self.skip_line = true;
                // An over-long AUTH response cancels the exchange (RFC 4954 4: 500 5.5.6).
                self.mode = Mode::Command;
                self.arm_idle(now);
                Step::Event(0, self.refuse(Refusal::Parse(ParseError::LineTooLong)))
            }
            Frame::Line {
                line,
                consumed,
                bare_lf,
            } => {
                self.arm_idle(now);
                let more = consumed < rest.len();
                let event = self.dispatch(now, line, bare_lf, more);
                Step::Event(consumed, event)
            }
        }
    }

    fn step_data<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        let Mode::Data {
            mut decoder,
            mut poison,
        } = self.mode
        else {
            return Step::Stop(0);
        };
        let limits = &self.config.options.limits;
        let reject_bare = self.config.options.bare_line_ending == BareLineEnding::Reject;
        let mut consumed = 0;
        let step = loop {
            match decoder.decode(&rest[consumed..]) {
                Decoded::Data { data, consumed: n } => {
                    consumed += n;
                    let txn = self.txn.get_or_insert_with(Transaction::default);
                    txn.size += data.len() as u64;
                    self.count.bytes += data.len() as u64;
                    if poison.is_none() && txn.size > limits.message_size {
                        poison = Some(Refusal::MessageTooBig);
                    }
                    if poison.is_none() && reject_bare && decoder.saw_bare_line_ending() {
                        poison = Some(Refusal::BareLineEnding);
                    }
                    if poison.is_none() {
                        break Step::Event(consumed, Event::DataChunk(data));
                    }
                    // A poisoned message is read to its end without being handed out.
                }
                Decoded::NeedMore { consumed: n } => break Step::Stop(consumed + n),
                Decoded::End { consumed: n } => {
                    consumed += n;
                    self.mode = Mode::Command;
                    self.arm_idle(now);
                    break match poison {
                        Some(reason) => Step::Event(consumed, self.reject_message(reason)),
                        None => {
                            let txn = self.txn.unwrap_or_default();
                            let replies = self.end_replies(&txn);
                            self.set_pending(Pending::DataEnd { replies }, now);
                            Step::Event(consumed, Event::DataEnd)
                        }
                    };
                }
            }
        };
        if let Mode::Data {
            decoder: d,
            poison: p,
        } = &mut self.mode
        {
            *d = decoder;
            *p = poison;
        }
        if consumed > 0 && self.closed.is_none() && matches!(self.mode, Mode::Data { .. }) {
            self.arm_idle(now);
        }
        step
    }

    fn step_bdat<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        let Mode::Bdat {
            mut reader,
            last,
            discard,
        } = self.mode
        else {
            return Step::Stop(0);
        };
        if reader.is_done() {
            self.mode = Mode::Command;
            self.arm_idle(now);
            if discard {
                self.maybe_drain();
                return Step::Continue(0);
            }
            let size = self.txn.map_or(0, |t| t.size);
            self.set_pending(Pending::BdatEnd { size, last }, now);
            return Step::Event(0, Event::BdatEnd { last });
        }
        let chunk = reader.take(rest);
        self.mode = Mode::Bdat {
            reader,
            last,
            discard,
        };
        if chunk.is_empty() {
            return Step::Stop(0);
        }
        self.arm_idle(now);
        if discard {
            return Step::Continue(chunk.len());
        }
        if let Some(txn) = &mut self.txn {
            txn.size += chunk.len() as u64;
        }
        self.count.bytes += chunk.len() as u64;
        Step::Event(chunk.len(), Event::DataChunk(chunk))
    }
}

// ---- Commands ------------------------------------------------------------------------------

impl Server {
    fn dispatch<'i>(
        &mut self,
        now: Instant,
        line: &'i [u8],
        bare_lf: bool,
        more: bool,
    ) -> Event<'i> {
        if self.mode == Mode::AuthResponse {
            return self.auth_response(now, line);
        }
        if bare_lf && self.config.options.bare_line_ending == BareLineEnding::Reject {
            return self.refuse(Refusal::Parse(ParseError::BareLineEnding));
        }
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.refuse(Refusal::Parse(e)),
        };
        if self.refused && cmd != Command::Quit {
            return self.refuse(Refusal::NoService);
        }
        if more && self.config.options.pipelining_sync_check && !self.may_pipeline(&cmd) {
            self.pipelining_violation();
            return Event::Rejected {
                code: ReplyCode::TRANSACTION_FAILED,
                reason: Refusal::BadSequence("improper pipelining"),
            };
        }
        if self.draining && self.txn.is_none() && cmd != Command::Quit {
            self.maybe_drain();
            return Event::Rejected {
                code: ReplyCode::UNAVAILABLE,
                reason: Refusal::NoService,
            };
        }
        match cmd {
            Command::Hello { verb, domain } => self.cmd_hello(now, verb, domain),
            Command::Mail {
                reverse_path,
                params,
            } => self.cmd_mail(now, reverse_path, params),
            Command::Rcpt {
                forward_path,
                params,
            } => self.cmd_rcpt(now, forward_path, params),
            Command::Data => self.cmd_data(now),
            Command::Bdat { size, last } => self.cmd_bdat(now, size, last),
            Command::Rset => {
                self.txn = None;
                self.send(ReplyCode::OK, EnhancedCode::OK, "OK");
                self.junk(Event::Rset)
            }
            Command::Noop(_) => {
                self.send(ReplyCode::OK, EnhancedCode::OK, "OK");
                self.junk(Event::Noop)
            }
            Command::Help(_) => {
                self.send(
                    ReplyCode::HELP,
                    EnhancedCode::OK,
                    "See https://www.rfc-editor.org/rfc/rfc5321",
                );
                self.junk(Event::Help)
            }
            Command::Vrfy(s) => {
                let event = self.junk(Event::Vrfy(s));
                if self.closed.is_none() {
                    self.set_pending(Pending::Vrfy, now);
                }
                event
            }
            Command::Expn(s) => {
                let event = self.junk(Event::Expn(s));
                if self.closed.is_none() {
                    self.set_pending(Pending::Expn, now);
                }
                event
            }
            Command::Quit => {
                self.send(ReplyCode::CLOSING, EnhancedCode::OK, "Bye");
                self.close(CloseReason::Quit);
                Event::Quit
            }
            Command::StartTls => self.cmd_starttls(now),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.cmd_auth(now, mechanism, initial_response),
        }
    }

    /// RFC 2920 3.1: MAIL, RCPT, RSET (and BDAT, whose chunk follows it) may be followed by
    /// more commands in the same group; others must end it. Without PIPELINING in effect,
    /// nothing may be pipelined.
    fn may_pipeline(&self, cmd: &Command<'_>) -> bool {
        if matches!(cmd, Command::Bdat { .. } | Command::Quit) {
            return true;
        }
        let pipelining = self.hello.is_some_and(|v| v != HelloVerb::Helo)
            && self.config.options.extensions.pipelining;
        pipelining
            && matches!(
                cmd,
                Command::Mail { .. } | Command::Rcpt { .. } | Command::Rset
            )
    }

    fn cmd_hello<'i>(&mut self, now: Instant, verb: HelloVerb, domain: &'i str) -> Event<'i> {
        let lmtp = self.config.options.protocol == Protocol::Lmtp;
        // RFC 2033 4.1: LMTP has LHLO instead of HELO and EHLO.
        if lmtp != (verb == HelloVerb::Lhlo) {
            return self.refuse(Refusal::Parse(ParseError::UnknownCommand));
        }
        self.set_pending(Pending::Hello(verb), now);
        Event::Hello { verb, domain }
    }

    fn cmd_mail<'i>(
        &mut self,
        now: Instant,
        reverse_path: ReversePath<'i>,
        params: Parameters<'i>,
    ) -> Event<'i> {
        let o = &self.config.options;
        if self.hello.is_none() {
            return self.refuse(Refusal::BadSequence("Send EHLO first"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence("Nested MAIL command"));
        }
        if o.require_tls && !self.tls {
            return self.refuse(Refusal::TlsRequired);
        }
        if o.require_auth && !self.authenticated {
            return self.refuse(Refusal::AuthRequired);
        }
        let over_bytes = o
            .limits
            .bytes_per_session
            .is_some_and(|max| self.count.bytes >= max);
        if self.count.messages >= o.limits.messages_per_session || over_bytes {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Session limit reached, closing connection",
            );
            self.close(CloseReason::LimitReached);
            return Event::Rejected {
                code: ReplyCode::UNAVAILABLE,
                reason: Refusal::BadSequence("session limit reached"),
            };
        }
        let mut body = BodyType::SevenBit;
        let mut smtputf8 = false;
        for p in params.iter() {
            let e = &o.extensions;
            let supported = match p {
                Parameter::Size(n) => {
                    if n > o.limits.message_size {
                        return self.refuse(Refusal::MessageTooBig);
                    }
                    true
                }
                Parameter::Body(b) => {
                    body = b;
                    match b {
                        BodyType::SevenBit => true,
                        BodyType::EightBitMime => e.eight_bit_mime,
                        BodyType::BinaryMime => e.binary_mime,
                    }
                }
                Parameter::SmtpUtf8 => {
                    smtputf8 = true;
                    e.smtputf8
                }
                Parameter::Auth(_) => self.config.auth_offered(self.tls),
                Parameter::Ret(_) | Parameter::EnvId(_) => e.dsn,
                Parameter::RequireTls => e.requiretls && self.tls,
                Parameter::Notify(_) | Parameter::Orcpt { .. } => false,
                Parameter::Unknown { keyword, .. } => o
                    .extra_mail_params
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(keyword)),
            };
            // Parameters are an EHLO feature: a HELO session has none (RFC 5321 4.1.1.11).
            if !supported || self.hello == Some(HelloVerb::Helo) {
                return self.refuse(Refusal::UnsupportedParameter);
            }
        }
        if !smtputf8 && !reverse_path.is_ascii() {
            return self.refuse(Refusal::Utf8NotAllowed);
        }
        self.set_pending(Pending::Mail { body, smtputf8 }, now);
        Event::MailFrom {
            reverse_path,
            params,
        }
    }

    fn cmd_rcpt<'i>(
        &mut self,
        now: Instant,
        forward_path: ForwardPath<'i>,
        params: Parameters<'i>,
    ) -> Event<'i> {
        let o = &self.config.options;
        let Some(txn) = self.txn else {
            return self.refuse(Refusal::BadSequence("Send MAIL first"));
        };
        if txn.accepted >= o.limits.recipients {
            return self.refuse(Refusal::TooManyRecipients);
        }
        for p in params.iter() {
            let supported = match p {
                Parameter::Notify(_) | Parameter::Orcpt { .. } => o.extensions.dsn,
                Parameter::Unknown { keyword, .. } => o
                    .extra_rcpt_params
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(keyword)),
                _ => false,
            };
            if !supported {
                return self.refuse(Refusal::UnsupportedParameter);
            }
        }
        if !txn.smtputf8 && !forward_path.is_ascii() {
            return self.refuse(Refusal::Utf8NotAllowed);
        }
        self.set_pending(Pending::Rcpt, now);
        Event::RcptTo {
            forward_path,
            params,
        }
    }

    fn cmd_data<'i>(&mut self, now: Instant) -> Event<'i> {
        let Some(txn) = self.txn else {
            return self.refuse(Refusal::BadSequence("Send MAIL first"));
        };
        if txn.accepted == 0 {
            return self.refuse(Refusal::NoValidRecipients);
        }
        if txn.body == BodyType::BinaryMime {
            return self.refuse(Refusal::BinaryWithData);
        }
        if txn.bdat {
            return self.refuse(Refusal::BadSequence("DATA after BDAT"));
        }
        self.set_pending(Pending::Data, now);
        Event::DataStart
    }

    fn cmd_bdat<'i>(&mut self, now: Instant, size: u64, last: bool) -> Event<'i> {
        let o = &self.config.options;
        // Whatever the answer, the chunk's bytes follow the command and are never commands.
        let refusal = if !o.extensions.chunking {
            Some(Refusal::NotImplemented)
        } else if size == 0 && !last {
            Some(Refusal::Parse(ParseError::InvalidParameter(
                "BDAT 0 needs LAST",
            )))
        } else {
            match self.txn {
                None => Some(Refusal::BadSequence("Send MAIL first")),
                Some(t) if t.accepted == 0 => Some(Refusal::NoValidRecipients),
                Some(t) if t.size.saturating_add(size) > o.limits.message_size => {
                    Some(Refusal::MessageTooBig)
                }
                Some(_) => None,
            }
        };
        self.mode = Mode::Bdat {
            reader: BdatReader::new(size),
            last,
            discard: refusal.is_some(),
        };
        if let Some(reason) = refusal {
            // RFC 3030 2: a failed chunk fails the transaction.
            self.txn = None;
            return self.refuse(reason);
        }
        if let Some(t) = &mut self.txn {
            t.bdat = true;
        }
        self.set_pending(Pending::Bdat { size, last }, now);
        Event::Bdat { size, last }
    }

    fn cmd_starttls<'i>(&mut self, now: Instant) -> Event<'i> {
        if !self.config.options.extensions.starttls {
            return self.refuse(Refusal::NotImplemented);
        }
        if self.tls {
            return self.refuse(Refusal::BadSequence("TLS already active"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence("Mail transaction in progress"));
        }
        self.set_pending(Pending::StartTls, now);
        Event::StartTls
    }

    fn cmd_auth<'i>(
        &mut self,
        now: Instant,
        mechanism: &'i str,
        initial_response: Option<&'i str>,
    ) -> Event<'i> {
        let o = &self.config.options;
        if o.extensions.auth_mechanisms.is_empty() {
            return self.refuse(Refusal::NotImplemented);
        }
        if !self.config.auth_offered(self.tls) {
            return self.refuse(Refusal::EncryptionRequired);
        }
        if self.hello.is_none() {
            return self.refuse(Refusal::BadSequence("Send EHLO first"));
        }
        if self.authenticated {
            return self.refuse(Refusal::BadSequence("Already authenticated"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence(
                "AUTH not permitted during a mail transaction",
            ));
        }
        if !o
            .extensions
            .auth_mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
        {
            return self.refuse(Refusal::UnknownMechanism);
        }
        self.set_pending(Pending::Auth, now);
        Event::Auth {
            mechanism,
            initial_response: initial_response.map(Secret::new),
        }
    }

    fn auth_response<'i>(&mut self, now: Instant, line: &'i [u8]) -> Event<'i> {
        self.mode = Mode::Command;
        if line == b"*" {
            return self.refuse(Refusal::AuthCanceled);
        }
        let valid = line
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        match core::str::from_utf8(line) {
            Ok(s) if valid => {
                self.mode = Mode::AuthResponse;
                self.set_pending(Pending::Auth, now);
                Event::AuthResponse(Secret::new(s))
            }
            _ => self.refuse(Refusal::Parse(ParseError::Syntax(
                "invalid base64 in AUTH response",
            ))),
        }
    }
}

// ---- Replies and bookkeeping ---------------------------------------------------------------

impl Server {
    fn check_pending(&self) -> Result<Pending, UsageError> {
        if self.closed.is_some() {
            return Err(UsageError::Closed);
        }
        self.pending.ok_or(UsageError::NothingPending)
    }

    fn set_pending(&mut self, pending: Pending, now: Instant) {
        self.pending = Some(pending);
        self.timers.stop(Timer::Idle);
        self.timers
            .set(Timer::Decision, now + self.config.options.timeouts.decision);
    }

    /// Applies the effect of a decision with reply `code`, already written.
    fn resolve(&mut self, now: Instant, pending: Pending, code: ReplyCode) {
        self.pending = None;
        self.timers.stop(Timer::Decision);
        let positive = code.is_positive();
        match pending {
            Pending::Connect => {}
            Pending::Hello(verb) => {
                if positive {
                    self.hello = Some(verb);
                    self.txn = None;
                }
            }
            Pending::Auth => {
                if code == ReplyCode::AUTH_CONTINUE {
                    self.mode = Mode::AuthResponse;
                } else {
                    self.mode = Mode::Command;
                    if positive {
                        self.authenticated = true;
                    } else if code.is_negative() {
                        self.count.auth_failures += 1;
                        if self.count.auth_failures >= self.config.options.limits.auth_failures {
                            self.too_many_errors();
                        }
                    }
                }
            }
            Pending::Mail { body, smtputf8 } => {
                if positive {
                    self.txn = Some(Transaction {
                        body,
                        smtputf8,
                        ..Transaction::default()
                    });
                }
            }
            Pending::Rcpt => {
                if positive {
                    if let Some(t) = &mut self.txn {
                        t.accepted += 1;
                    }
                } else {
                    self.count_error();
                }
            }
            Pending::Data => {
                if code == ReplyCode::START_DATA {
                    self.mode = Mode::Data {
                        decoder: DotDecoder::new(self.config.options.bare_line_ending),
                        poison: None,
                    };
                }
            }
            Pending::DataEnd { replies } => {
                if replies > 1 {
                    // LMTP: wait for the next recipient's reply.
                    self.pending = Some(Pending::DataEnd {
                        replies: replies - 1,
                    });
                    self.timers
                        .set(Timer::Decision, now + self.config.options.timeouts.decision);
                    return;
                }
                self.end_transaction();
            }
            Pending::Bdat { size, last } => {
                if code.is_negative() {
                    self.mode = Mode::Bdat {
                        reader: BdatReader::new(size),
                        last,
                        discard: true,
                    };
                    self.txn = None;
                }
            }
            Pending::BdatEnd { last: true, .. } => {
                // The last chunk ends the message: from here it is answered like DATA's end.
                let replies = self.end_replies(&self.txn.unwrap_or_default());
                self.pending = Some(Pending::DataEnd { replies });
                return self.resolve(now, Pending::DataEnd { replies }, code);
            }
            Pending::BdatEnd { last: false, .. } => {
                if code.is_negative() {
                    self.txn = None;
                }
            }
            Pending::StartTls => {
                if code == ReplyCode::READY {
                    self.mode = Mode::TlsHandshake;
                    self.timers.stop(Timer::Idle);
                    return;
                }
            }
            Pending::Vrfy | Pending::Expn => {}
        }
        if self.closed.is_none() {
            self.arm_idle(now);
            self.maybe_drain();
        }
    }

    fn resolve_connect(&mut self, now: Instant, reply: Option<&Reply<'_>>) {
        self.pending = None;
        self.timers.stop(Timer::Decision);
        let Some(reply) = reply else {
            match self.config.options.timeouts.greeting_delay {
                Some(d) => {
                    self.mode = Mode::GreetingDelay;
                    self.timers.set(Timer::GreetingDelay, now + d);
                }
                None => self.send_greeting(now),
            }
            return;
        };
        // RFC 2034 3: no enhanced code on the greeting.
        reply.encode(false, &mut self.out);
        match reply.code() {
            ReplyCode::UNAVAILABLE => self.close(CloseReason::Shutdown),
            code => {
                self.refused = code != ReplyCode::READY;
                self.mode = Mode::Command;
                self.arm_idle(now);
            }
        }
    }

    fn send_greeting(&mut self, now: Instant) {
        let config = Arc::clone(&self.config);
        self.out.extend_from_slice(&config.greeting);
        self.mode = Mode::Command;
        self.arm_idle(now);
    }

    fn end_transaction(&mut self) {
        self.txn = None;
        self.count.messages += 1;
    }

    /// Replies owed at the end of a message: LMTP answers per accepted recipient (RFC 2033 4.2).
    fn end_replies(&self, txn: &Transaction) -> u32 {
        match self.config.options.protocol {
            Protocol::Lmtp => txn.accepted.max(1),
            Protocol::Smtp => 1,
        }
    }

    fn arm_idle(&mut self, now: Instant) {
        let t = &self.config.options.timeouts;
        let d = match self.mode {
            Mode::Data { .. } | Mode::Bdat { .. } => t.data_block,
            _ => t.command,
        };
        self.timers.set(Timer::Idle, now + d);
    }

    /// Writes a reply the core makes itself.
    fn send(&mut self, code: ReplyCode, enhanced: EnhancedCode, text: &str) {
        let e = self.config.enhanced() && code.class() != 3;
        write_reply(&mut self.out, code, e.then_some(enhanced), text);
    }

    /// `250 2.0.0 <n> octets received` (RFC 3030 2 example), written without allocating.
    fn send_octets_received(&mut self, size: u64) {
        self.out.extend_from_slice(b"250 ");
        if self.config.enhanced() {
            self.out.extend_from_slice(b"2.0.0 ");
        }
        write_u64(&mut self.out, size);
        self.out.extend_from_slice(b" octets received\r\n");
    }

    /// Sends the core's reply for `reason` and reports it.
    fn refuse<'i>(&mut self, reason: Refusal) -> Event<'i> {
        let (code, enhanced, text) = refusal_reply(reason);
        self.send(code, enhanced, text);
        self.count_error();
        Event::Rejected { code, reason }
    }

    fn reject_message<'i>(&mut self, reason: Refusal) -> Event<'i> {
        let (code, enhanced, text) = refusal_reply(reason);
        let replies = self.end_replies(&self.txn.unwrap_or_default());
        for _ in 0..replies {
            self.send(code, enhanced, text);
        }
        self.txn = None;
        self.maybe_drain();
        Event::MessageRejected { code, reason }
    }

    fn count_error(&mut self) {
        self.count.errors += 1;
        if self.count.errors >= self.config.options.limits.errors {
            self.too_many_errors();
        }
    }

    fn junk<'i>(&mut self, event: Event<'i>) -> Event<'i> {
        self.count.junk += 1;
        if self.count.junk > self.config.options.limits.junk_commands {
            self.too_many_errors();
        }
        event
    }

    fn too_many_errors(&mut self) {
        if self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Too many errors, closing connection",
            );
            self.close(CloseReason::TooManyErrors);
        }
    }

    fn pipelining_violation(&mut self) {
        self.send(
            ReplyCode::TRANSACTION_FAILED,
            EnhancedCode::PROTOCOL_ERROR,
            "Improper use of SMTP command pipelining",
        );
        self.close(CloseReason::PipeliningViolation);
    }

    fn maybe_drain(&mut self) {
        let idle = self.txn.is_none()
            && self.pending.is_none()
            && matches!(
                self.mode,
                Mode::Command | Mode::Connect | Mode::GreetingDelay
            );
        if self.draining && idle && self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SYSTEM_SHUTDOWN,
                "Server shutting down",
            );
            self.close(CloseReason::Shutdown);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        self.mode = Mode::Closed;
        self.pending = None;
        self.timers.clear();
    }
}

/// The reply the core sends for each refusal.
fn refusal_reply(reason: Refusal) -> (ReplyCode, EnhancedCode, &'static str) {
    use Refusal as R;
    match reason {
        R::Parse(e) => {
            let (code, enhanced) = e.reply_hint();
            let text = match e {
                ParseError::UnknownCommand => "Command unrecognized",
                ParseError::Syntax(what) | ParseError::InvalidParameter(what) => what,
                ParseError::LineTooLong => "Line too long",
                ParseError::BareLineEnding => "Bare LF in command line",
            };
            (code, enhanced, text)
        }
        R::BadSequence(what) => (ReplyCode::BAD_SEQUENCE, EnhancedCode::INVALID_COMMAND, what),
        R::NotImplemented => (
            ReplyCode::NOT_IMPLEMENTED,
            EnhancedCode::INVALID_COMMAND,
            "Command not implemented",
        ),
        R::UnsupportedParameter => (
            ReplyCode::PARAM_UNRECOGNIZED,
            EnhancedCode::INVALID_ARGS,
            "Parameter not supported",
        ),
        R::TooManyRecipients => (
            ReplyCode::INSUFFICIENT_STORAGE,
            EnhancedCode::TOO_MANY_RECIPIENTS,
            "Too many recipients",
        ),
        R::MessageTooBig => (
            ReplyCode::EXCEEDED_STORAGE,
            EnhancedCode::MESSAGE_TOO_BIG,
            "Message size exceeds fixed maximum message size",
        ),
        R::BareLineEnding => (
            ReplyCode::MAILBOX_UNAVAILABLE,
            EnhancedCode::MEDIA_ERROR,
            "Message contains bare CR or LF",
        ),
        R::Utf8NotAllowed => (
            ReplyCode::MAILBOX_NAME_INVALID,
            EnhancedCode::UTF8_NOT_PERMITTED,
            "Non-ASCII address needs SMTPUTF8",
        ),
        R::AuthRequired => (
            ReplyCode::AUTH_REQUIRED,
            EnhancedCode::SECURITY_PERMANENT,
            "Authentication required",
        ),
        R::TlsRequired => (
            ReplyCode::AUTH_REQUIRED,
            EnhancedCode::SECURITY_PERMANENT,
            "Must issue a STARTTLS command first",
        ),
        R::EncryptionRequired => (
            ReplyCode::ENCRYPTION_REQUIRED,
            EnhancedCode::ENCRYPTION_REQUIRED,
            "Encryption required for requested authentication mechanism",
        ),
        R::AuthCanceled => (
            ReplyCode::SYNTAX_ERROR_PARAMS,
            EnhancedCode::PERMANENT,
            "Authentication canceled",
        ),
        R::UnknownMechanism => (
            ReplyCode::PARAM_NOT_IMPLEMENTED,
            EnhancedCode::INVALID_ARGS,
            "Unrecognized authentication type",
        ),
        R::NoService => (
            ReplyCode::BAD_SEQUENCE,
            EnhancedCode::INVALID_COMMAND,
            "No service here, send QUIT",
        ),
        R::NoValidRecipients => (
            ReplyCode::TRANSACTION_FAILED,
            EnhancedCode::INVALID_COMMAND,
            "No valid recipients",
        ),
        R::BinaryWithData => (
            ReplyCode::BAD_SEQUENCE,
            EnhancedCode::INVALID_COMMAND,
            "BINARYMIME requires BDAT",
        ),
    }
}
