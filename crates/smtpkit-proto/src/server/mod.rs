//! The server side of a session: [`Server`], driven by input bytes and time, answering with
//! reply bytes and [`Event`]s.

mod commands;
mod config;
mod decision;
mod event;
mod input;
mod lifecycle;
mod output;
mod refusal;
mod timer;

use std::sync::Arc;
use std::time::Instant;

pub use config::{
    COMMAND_VERBS, ConfigError, EXTENSION_KEYWORDS, Extensions, Limits, Protocol, ServerConfig,
    ServerOptions, Timeouts,
};
pub use event::{Event, Progress};

use self::timer::{Timer, TimerTable};
use crate::command::HelloVerb;
use crate::data::{BdatReader, DotDecoder};
use crate::error::{CloseReason, Refusal};
use crate::extension::BodyType;

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
    /// A transaction ended and [`Event::TransactionEnded`] is still to be reported, with
    /// whether its message was aborted.
    ended: Option<bool>,
    /// May send XCLIENT, XFORWARD: a trusted front end.
    front_end: (bool, bool),
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
    /// Recipients refused for being over the limit.
    overshoot: u32,
    /// Content has started: 354 was sent, or a BDAT chunk was accepted.
    content: bool,
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
            ended: None,
            front_end: (false, false),
        }
    }

    /// Lets this client send XCLIENT and XFORWARD (Postfix's
    /// `smtpd_authorized_xclient_hosts` / `smtpd_authorized_xforward_hosts`): they are offered
    /// in its EHLO reply and accepted; any other client gets `550 5.7.0`. The caller, which
    /// knows the client's address, decides before the first command.
    pub fn allow_front_end(&mut self, xclient: bool, xforward: bool) {
        self.front_end = (xclient, xforward);
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
    pub fn awaiting_decision(&self) -> bool {
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

    /// Recipients accepted in the open transaction; 0 without one.
    pub fn recipients(&self) -> u32 {
        self.txn.map_or(0, |t| t.accepted)
    }

    /// Replies the application owes for the end of the message now pending: 1 for SMTP, one
    /// per recipient not yet answered for LMTP (RFC 2033 4.2); 0 when no end of message is
    /// pending.
    pub fn replies_owed(&self) -> u32 {
        match self.pending {
            Some(Pending::DataEnd { replies }) => replies,
            Some(Pending::BdatEnd { last: true, .. }) => {
                self.end_replies(&self.txn.unwrap_or_default())
            }
            _ => 0,
        }
    }

    /// Whether message content has been handed out that the application has neither answered
    /// (the end of the message) nor seen aborted ([`Event::TransactionEnded`] with
    /// `aborted`). When the session ends with this true, the message is lost.
    pub fn in_message(&self) -> bool {
        self.txn.is_some_and(|t| t.content) || self.ended == Some(true)
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
}
