//! The client side of a session: [`Client`], driven by reply bytes and time, producing command
//! bytes and [`Event`]s. The mirror image of [`Server`](crate::Server).
//!
//! A client and a server talking in memory, one message with two recipients:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
//! use smtpkit_proto::client::{Client, ClientConfig, ClientOptions, Envelope, Event, Recipient};
//! use smtpkit_proto::{Server, ServerConfig, ServerOptions};
//!
//! let now = Instant::now();
//! let mut server = Server::new(Arc::new(ServerConfig::new(ServerOptions::default()).unwrap()), now);
//! let mut client = Client::new(Arc::new(ClientConfig::new(ClientOptions::default()).unwrap()), now);
//! let to = [
//!     Recipient::new(ForwardPath::Mailbox(Mailbox::parse("b@example.net").unwrap())),
//!     Recipient::new(ForwardPath::Postmaster),
//! ];
//! let from = ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap());
//! let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
//! let (mut results, mut body) = (Vec::new(), Vec::new());
//! // Bounded: a handful of round trips.
//! for _ in 0..20 {
//!     // The server side: accept everything, keep the content.
//!     loop {
//!         let p = server.handle_input(now, &to_server);
//!         if let Some(smtpkit_proto::Event::DataChunk(c)) = p.event { body.extend_from_slice(c) }
//!         let more = p.event.is_some();
//!         to_server.drain(..p.consumed);
//!         if server.awaiting_decision() { server.accept(now).unwrap() }
//!         if !more { break }
//!     }
//!     to_client.extend_from_slice(server.poll_transmit());
//!     server.advance_transmit(server.poll_transmit().len());
//!     // The client side: one message, then QUIT.
//!     loop {
//!         let p = client.handle_input(now, &to_client);
//!         let Some(event) = p.event else { to_client.drain(..p.consumed); break };
//!         match event {
//!             Event::Ready => client.send_mail(now, &Envelope::new(from, &to)).unwrap(),
//!             Event::ReadyForData => {
//!                 client.send_data(now, b"Subject: hi\r\n\r\n.dot\r\n").unwrap();
//!                 client.finish_data(now).unwrap();
//!             }
//!             Event::RecipientResult { index, reply } => results.push((index, reply.code().get())),
//!             Event::MessageResult { reply, .. } => {
//!                 results.push((99, reply.code().get()));
//!                 client.quit(now).unwrap();
//!             }
//!             _ => {}
//!         }
//!         to_client.drain(..p.consumed);
//!     }
//!     to_server.extend_from_slice(client.poll_transmit());
//!     client.advance_transmit(client.poll_transmit().len());
//! }
//! assert_eq!(results, [(0, 250), (1, 250), (99, 250)]);
//! assert_eq!(body, b"Subject: hi\r\n\r\n.dot\r\n");
//! assert!(client.is_closed() && server.is_closed());
//! ```
//!
//! The run loop is the server's (see the crate docs), with one addition: while
//! [`Client::wants_data`] is true after [`Event::ReadyForData`], feed the content with
//! [`Client::send_data`], then call [`Client::finish_data`].

mod capabilities;
mod config;
mod content;
mod envelope;
mod error;
mod event;
mod sasl;
mod timer;

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

pub use capabilities::Capabilities;
pub use config::{ClientConfig, ClientOptions, ClientTimeouts};
pub use envelope::{Envelope, Recipient};
pub use error::ClientError;
pub use event::{Event, Progress};
pub use sasl::Sasl;

use self::content::ContentEncoder;
use self::sasl::AuthStep;
use self::timer::Timers;
use crate::command::HelloVerb;
use crate::error::CloseReason;
use crate::extension::{BodyType, Parameter};
use crate::reply::encode::write_u64;
use crate::reply::{Reply, ReplyCode, ReplyParseError};
use crate::server::Protocol;

/// Unparsed reply bytes beyond which the server is taken to be misbehaving: 16 KiB holds
/// any real EHLO reply many times over, and bounds what an endless multi-line reply costs.
/// Reported as [`ReplyParseError::LineTooLong`].
const MAX_REPLY: usize = 16 * 1024;

/// One SMTP (or LMTP) client session, without IO.
///
/// Methods come in four kinds, as on [`Server`](crate::Server):
/// - **inputs** (`handle_*`): reply bytes from the server, the clock, the TLS layer;
/// - **commands** ([`send_mail`](Self::send_mail), [`send_data`](Self::send_data),
///   [`finish_data`](Self::finish_data), [`starttls`](Self::starttls), [`auth`](Self::auth),
///   [`noop`](Self::noop), [`quit`](Self::quit)): what the application wants sent;
/// - **outputs** (`poll_*`): command bytes to write and the next deadline;
/// - **getters** (`is_*`, `wants_*`).
///
/// The client answers the greeting with EHLO on its own (HELO if EHLO is refused with 5xx,
/// LHLO for LMTP), pipelines when the server offers PIPELINING (MAIL, every RCPT and DATA
/// in one write), resets failed transactions with RSET, and reports every reply as an
/// [`Event`]. After any input or command, write out [`poll_transmit`](Self::poll_transmit)
/// and re-check [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Client {
    config: Arc<ClientConfig>,
    phase: Phase,
    caps: Capabilities,
    hello: Option<HelloVerb>,
    tls: bool,
    authenticated: bool,
    /// A command outside transactions (STARTTLS, AUTH, NOOP, QUIT) is waiting for its reply.
    busy: bool,
    /// QUIT is sent or staged: nothing may follow it.
    quitting: bool,
    auth: Option<AuthStep>,
    txn: Option<Txn>,
    /// Indices of the recipients accepted in the current transaction, in RCPT order.
    accepted: Vec<usize>,
    /// The last transaction's content was refused mid-stream (BDAT): further content calls
    /// are dropped quietly until the next transaction.
    content_dropped: bool,
    /// Commands sent, oldest first, each waiting for one reply.
    queue: VecDeque<Cmd>,
    /// Commands encoded but not yet released: without PIPELINING each waits for the reply to
    /// the one before (RFC 2920 3.1).
    staged: Vec<u8>,
    staged_pos: usize,
    staged_cmds: VecDeque<(Cmd, usize)>,
    deferred: Option<Deferred>,
    out: Vec<u8>,
    sent: usize,
    /// Output moved since the content deadline was last armed.
    progress: bool,
    timers: Timers,
    closed: Option<CloseReason>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Greeting,
    Hello,
    Ready,
    TlsHandshake,
    Closed,
}

/// A command waiting for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Greeting,
    Hello(HelloVerb),
    StartTls,
    Auth,
    Mail,
    Rcpt(usize),
    Data,
    /// A BDAT chunk that is not the last.
    Bdat,
    /// The end of the content (`.` or `BDAT LAST`); for LMTP, one per accepted recipient.
    DataEnd(Option<usize>),
    /// A reply nobody needs: the end of content sent only to close a 354 that came with no
    /// recipient accepted, or BDAT chunks after a refused one.
    Ignore,
    Rset,
    Noop,
    Quit,
}

impl Cmd {
    /// RFC 2920 3.1: only these may be followed by more commands in the same group.
    fn may_be_followed(self) -> bool {
        matches!(self, Self::Mail | Self::Rcpt(_) | Self::Rset | Self::Bdat)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deferred {
    ReadyForData,
    Aborted,
}

#[derive(Clone, Copy, Debug)]
struct Txn {
    recipients: usize,
    answered: usize,
    mail_ok: bool,
    bdat: bool,
    stage: Stage,
    /// Final replies still owed (LMTP: one per accepted recipient).
    end_replies: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Envelope,
    Content(ContentEncoder),
    Ending,
}

impl Client {
    /// A session on a new connection at `now`, waiting for the server's greeting.
    pub fn new(config: Arc<ClientConfig>, now: Instant) -> Self {
        let timers = Timers {
            reply: Some(now + config.options.timeouts.greeting),
            block: None,
        };
        let mut queue = VecDeque::with_capacity(8);
        queue.push_back(Cmd::Greeting);
        Self {
            config,
            phase: Phase::Greeting,
            caps: Capabilities::default(),
            hello: None,
            tls: false,
            authenticated: false,
            busy: false,
            quitting: false,
            auth: None,
            txn: None,
            accepted: Vec::new(),
            content_dropped: false,
            queue,
            staged: Vec::with_capacity(512),
            staged_pos: 0,
            staged_cmds: VecDeque::with_capacity(8),
            deferred: None,
            out: Vec::with_capacity(512),
            sent: 0,
            progress: false,
            timers,
            closed: None,
        }
    }

    /// A session on a connection that is encrypted from its first byte (implicit TLS,
    /// RFC 8314 3), waiting for the server's greeting: AUTH and REQUIRETLS are allowed, and
    /// STARTTLS is not offered again.
    pub fn new_tls(config: Arc<ClientConfig>, now: Instant) -> Self {
        let mut client = Self::new(config, now);
        client.tls = true;
        client
    }

    // ---- Inputs ----------------------------------------------------------------------------

    /// Feeds server bytes. Returns at most one event; drop `consumed` bytes from the front of
    /// the input once it is handled, then call again until the event is `None`.
    pub fn handle_input<'i>(&mut self, now: Instant, input: &'i [u8]) -> Progress<'i> {
        let mut consumed = 0;
        // Every iteration consumes a reply or returns, so this runs once per reply.
        loop {
            if self.closed.is_some() {
                return Progress {
                    consumed,
                    event: None,
                };
            }
            if let Some(d) = self.deferred.take() {
                let event = match d {
                    Deferred::ReadyForData => Event::ReadyForData,
                    Deferred::Aborted => Event::MessageAborted { reply: None },
                };
                return Progress {
                    consumed,
                    event: Some(event),
                };
            }
            let rest = &input[consumed..];
            if self.phase == Phase::TlsHandshake {
                // Plaintext after the 220 to STARTTLS could be an injected reply meant to be
                // read as if it came over TLS (the client side of CVE-2011-0411): drop it.
                return Progress {
                    consumed: input.len(),
                    event: None,
                };
            }
            // Only the first MAX_REPLY + 1 bytes are looked at, and complete replies are
            // checked too, so the outcome does not depend on how the input was split.
            let window = &rest[..rest.len().min(MAX_REPLY + 1)];
            let parsed = match Reply::parse(window) {
                Ok(None) if window.len() > MAX_REPLY => Err(ReplyParseError::LineTooLong),
                Ok(Some((_, n))) if n > MAX_REPLY => Err(ReplyParseError::LineTooLong),
                other => other,
            };
            match parsed {
                Ok(None) => {
                    return Progress {
                        consumed,
                        event: None,
                    };
                }
                Err(e) => {
                    self.close(CloseReason::BadReply);
                    return Progress {
                        consumed: input.len(),
                        event: Some(Event::Malformed(e)),
                    };
                }
                Ok(Some((reply, n))) => {
                    consumed += n;
                    if let Some(event) = self.on_reply(now, reply) {
                        return Progress {
                            consumed,
                            event: Some(event),
                        };
                    }
                }
            }
        }
    }

    /// Tells the session that time has reached `now`; call when
    /// [`poll_timeout`](Self::poll_timeout) has passed. A reply that is overdue, or content
    /// the server has not taken for the data block time, closes the session
    /// ([`CloseReason::Timeout`]) without sending anything more.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.reply.is_some_and(|t| t <= now) {
            self.close(CloseReason::Timeout);
            return;
        }
        if self.timers.block.is_some_and(|t| t <= now) {
            if self.sent == self.out.len() {
                self.timers.block = None;
            } else if std::mem::take(&mut self.progress) {
                self.timers.block = Some(now + self.config.options.timeouts.data_block);
            } else {
                self.close(CloseReason::Timeout);
            }
        }
    }

    /// The server closed its side of the connection. After QUIT that is the normal end.
    pub fn handle_eof(&mut self, _now: Instant) {
        let reason = if self.queue.front() == Some(&Cmd::Quit) {
            CloseReason::Quit
        } else {
            CloseReason::PeerEof
        };
        self.close(reason);
    }

    /// The TLS handshake after STARTTLS finished: everything learned in plaintext is
    /// forgotten (RFC 3207 4.2) and EHLO is sent again; [`Event::Ready`] follows.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if self.phase != Phase::TlsHandshake {
            return;
        }
        self.tls = true;
        self.caps.clear();
        self.hello = None;
        self.authenticated = false;
        self.phase = Phase::Hello;
        let verb = self.first_hello();
        self.send_hello(now, verb);
    }

    /// The TLS handshake failed; the session is over.
    pub fn handle_tls_failed(&mut self, _now: Instant) {
        self.close(CloseReason::TlsFailed);
    }

    // ---- Commands --------------------------------------------------------------------------

    /// Starts a transaction: MAIL FROM, one RCPT TO per recipient, and DATA (unless the
    /// content goes with BDAT). With PIPELINING they leave in one write; otherwise one at a
    /// time as replies come. Results arrive as [`Event::SenderResult`],
    /// [`Event::RecipientResult`], then [`Event::ReadyForData`] or [`Event::MessageAborted`].
    ///
    /// Refused locally, with nothing sent: a declared size over the server's SIZE, a BODY,
    /// SMTPUTF8 or REQUIRETLS the server does not offer, REQUIRETLS without TLS. DSN
    /// parameters are left out when the server does not offer DSN (RFC 3461 4: the relay
    /// then owes the DSNs itself).
    pub fn send_mail(&mut self, now: Instant, envelope: &Envelope<'_>) -> Result<(), ClientError> {
        self.check_ready()?;
        if envelope.recipients.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        let caps = &self.caps;
        if let (Some(size), Some(max)) = (envelope.size, caps.max_size())
            && size > max
        {
            return Err(ClientError::TooBig { max });
        }
        let smtputf8 = envelope.needs_smtputf8();
        if smtputf8 && !caps.smtputf8 {
            return Err(ClientError::NotOffered("SMTPUTF8"));
        }
        match envelope.body {
            BodyType::EightBitMime if !caps.eight_bit_mime => {
                return Err(ClientError::NotOffered("8BITMIME"));
            }
            BodyType::BinaryMime if !(caps.binary_mime && caps.chunking) => {
                return Err(ClientError::NotOffered("BINARYMIME"));
            }
            _ => {}
        }
        if envelope.requiretls {
            if !self.tls {
                return Err(ClientError::TlsRequired);
            }
            if !caps.requiretls {
                return Err(ClientError::NotOffered("REQUIRETLS"));
            }
        }
        let bdat = envelope.body == BodyType::BinaryMime
            || (self.config.options.chunking && caps.chunking);
        let dsn = caps.dsn;
        let size_offered = caps.size.is_some();

        let start = self.staged.len();
        // Writing into a Vec cannot fail.
        let _ = write!(self.staged, "MAIL FROM:{}", envelope.reverse_path);
        let mut params = ParamWriter(&mut self.staged);
        if size_offered && let Some(size) = envelope.size {
            params.push(Parameter::Size(size));
        }
        if envelope.body != BodyType::SevenBit {
            params.push(Parameter::Body(envelope.body));
        }
        if smtputf8 {
            params.push(Parameter::SmtpUtf8);
        }
        if dsn {
            if let Some(ret) = envelope.ret {
                params.push(Parameter::Ret(ret));
            }
            if let Some(envid) = envelope.envid {
                params.push(Parameter::EnvId(envid));
            }
        }
        if envelope.requiretls {
            params.push(Parameter::RequireTls);
        }
        self.stage_line(start, Cmd::Mail);
        for (i, r) in envelope.recipients.iter().enumerate() {
            let start = self.staged.len();
            let _ = write!(self.staged, "RCPT TO:{}", r.forward_path);
            let mut params = ParamWriter(&mut self.staged);
            if dsn {
                if let Some(notify) = r.notify {
                    params.push(Parameter::Notify(notify));
                }
                if let Some((addr_type, addr)) = r.orcpt {
                    params.push(Parameter::Orcpt { addr_type, addr });
                }
            }
            self.stage_line(start, Cmd::Rcpt(i));
        }
        if !bdat {
            let start = self.staged.len();
            self.staged.extend_from_slice(b"DATA");
            self.stage_line(start, Cmd::Data);
        }
        self.txn = Some(Txn {
            recipients: envelope.recipients.len(),
            answered: 0,
            mail_ok: false,
            bdat,
            stage: Stage::Envelope,
            end_replies: 0,
        });
        self.accepted.clear();
        self.content_dropped = false;
        self.release(now);
        Ok(())
    }

    /// Sends a piece of content, after [`Event::ReadyForData`]. With DATA, every bare CR and
    /// bare LF leaves as CRLF (RFC 5321 2.3.8; a bare one could smuggle an end of data past a
    /// lenient server) and lines are dot-stuffed (4.5.2); with BDAT it goes as one chunk, byte
    /// for byte. Check [`wants_data`](Self::wants_data) to keep the output
    /// bounded.
    ///
    /// After a refused BDAT chunk ([`Event::MessageResult`] before `finish_data`), further
    /// content for that message is dropped and `Ok` is returned.
    pub fn send_data(&mut self, now: Instant, chunk: &[u8]) -> Result<(), ClientError> {
        let bdat = self.content_stage()?;
        let Some(bdat) = bdat else {
            return Ok(());
        };
        if bdat {
            if chunk.is_empty() {
                return Ok(());
            }
            let start = self.staged.len();
            self.staged.extend_from_slice(b"BDAT ");
            write_u64(&mut self.staged, chunk.len() as u64);
            self.staged.extend_from_slice(b"\r\n");
            self.staged.extend_from_slice(chunk);
            self.staged_cmds
                .push_back((Cmd::Bdat, self.staged.len() - start));
            self.release(now);
        } else if let Some(Txn {
            stage: Stage::Content(encoder),
            ..
        }) = &mut self.txn
        {
            encoder.encode(chunk, &mut self.out);
            if self.timers.block.is_none() {
                self.timers.block = Some(now + self.config.options.timeouts.data_block);
                self.progress = false;
            }
        }
        Ok(())
    }

    /// Ends the content: `CRLF . CRLF` for DATA (adding the CRLF if the content lacks it),
    /// `BDAT 0 LAST` for BDAT. The result arrives as [`Event::MessageResult`] (LMTP: one per
    /// accepted recipient).
    pub fn finish_data(&mut self, now: Instant) -> Result<(), ClientError> {
        let Some(bdat) = self.content_stage()? else {
            return Ok(());
        };
        let lmtp = self.config.options.protocol == Protocol::Lmtp;
        let Some(txn) = &mut self.txn else {
            return Err(ClientError::NotReady);
        };
        let Stage::Content(mut encoder) = txn.stage else {
            return Err(ClientError::NotReady);
        };
        txn.stage = Stage::Ending;
        txn.end_replies = if lmtp { self.accepted.len() } else { 1 };
        let ends = txn.end_replies;
        let end = |k: usize, accepted: &[usize]| Cmd::DataEnd(lmtp.then(|| accepted[k]));
        if bdat {
            let start = self.staged.len();
            self.staged.extend_from_slice(b"BDAT 0 LAST\r\n");
            let first = end(0, &self.accepted);
            self.staged_cmds
                .push_back((first, self.staged.len() - start));
            // LMTP's further replies to the same command ride along with no bytes of their own.
            for k in 1..ends {
                let cmd = end(k, &self.accepted);
                self.staged_cmds.push_back((cmd, 0));
            }
            self.release(now);
        } else {
            encoder.finish(&mut self.out);
            for k in 0..ends {
                let cmd = end(k, &self.accepted);
                self.expect(now, cmd);
            }
            if self.timers.block.is_none() {
                self.timers.block = Some(now + self.config.options.timeouts.data_block);
                self.progress = false;
            }
        }
        Ok(())
    }

    /// Sends STARTTLS (RFC 3207); the reply comes as [`Event::StartTlsResult`].
    pub fn starttls(&mut self, now: Instant) -> Result<(), ClientError> {
        self.check_ready()?;
        if self.tls || !self.caps.starttls {
            return Err(ClientError::NotOffered("STARTTLS"));
        }
        self.stage_command(now, b"STARTTLS", Cmd::StartTls);
        self.busy = true;
        Ok(())
    }

    /// Authenticates (RFC 4954); the outcome comes as [`Event::AuthResult`]. Refused locally
    /// without TLS unless the config allows it, and when the server does not offer the
    /// mechanism.
    pub fn auth(&mut self, now: Instant, sasl: &Sasl<'_>) -> Result<(), ClientError> {
        self.check_ready()?;
        if !self.tls && !self.config.options.allow_insecure_auth {
            return Err(ClientError::InsecureAuth);
        }
        if !self.caps.offers_auth(sasl.name()) {
            return Err(ClientError::NotOffered(match sasl {
                Sasl::Plain { .. } => "AUTH PLAIN",
                Sasl::Login { .. } => "AUTH LOGIN",
                Sasl::XOAuth2 { .. } => "AUTH XOAUTH2",
            }));
        }
        let start = self.staged.len();
        self.auth = Some(sasl.start(&mut self.staged));
        self.staged_cmds
            .push_back((Cmd::Auth, self.staged.len() - start));
        self.busy = true;
        self.release(now);
        Ok(())
    }

    /// Sends NOOP; the reply comes as [`Event::NoopResult`].
    pub fn noop(&mut self, now: Instant) -> Result<(), ClientError> {
        self.check_ready()?;
        self.stage_command(now, b"NOOP", Cmd::Noop);
        self.busy = true;
        Ok(())
    }

    /// Sends QUIT. The session closes on the 221 (or when the server closes), with
    /// [`CloseReason::Quit`]. Not while content is being sent.
    pub fn quit(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.closed.is_some() {
            return Err(ClientError::Closed);
        }
        let content = self
            .txn
            .is_some_and(|t| matches!(t.stage, Stage::Content(_)) && !t.bdat);
        if self.busy || content || self.phase == Phase::TlsHandshake {
            return Err(ClientError::NotReady);
        }
        self.send_quit(now);
        Ok(())
    }

    // ---- Outputs ---------------------------------------------------------------------------

    /// Command bytes waiting to be written.
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `written` bytes of [`poll_transmit`](Self::poll_transmit) reached the socket.
    pub fn advance_transmit(&mut self, written: usize) {
        self.sent = (self.sent + written).min(self.out.len());
        self.progress |= written > 0;
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

    /// Whether reading may make progress: not closed and not waiting for a TLS handshake.
    /// Reading while idle is how a 421 or a closed connection is noticed.
    pub fn wants_input(&self) -> bool {
        self.closed.is_none() && self.phase != Phase::TlsHandshake
    }

    /// Whether STARTTLS was accepted: flush the output, run the TLS handshake and report its
    /// outcome with [`handle_tls_established`](Self::handle_tls_established) or
    /// [`handle_tls_failed`](Self::handle_tls_failed).
    pub fn wants_tls_handshake(&self) -> bool {
        self.phase == Phase::TlsHandshake
    }

    /// Whether a command ([`send_mail`](Self::send_mail), [`starttls`](Self::starttls),
    /// [`auth`](Self::auth), [`noop`](Self::noop)) may be given now.
    pub fn is_ready(&self) -> bool {
        self.check_ready().is_ok()
    }

    /// Whether content is expected and the output is below its cap.
    pub fn wants_data(&self) -> bool {
        let content = self
            .txn
            .is_some_and(|t| matches!(t.stage, Stage::Content(_)));
        let pending = self.out.len() - self.sent + self.staged.len() - self.staged_pos;
        content && pending < self.config.options.output_buffer
    }

    /// Whether a transaction is in progress (MAIL sent, final result not yet in).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// What the server offered in its EHLO reply (nothing after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The greeting verb the server accepted.
    pub fn hello(&self) -> Option<HelloVerb> {
        self.hello
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the session is over. Write out what is left in `poll_transmit`, then close.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    // ---- Replies ---------------------------------------------------------------------------

    fn on_reply<'i>(&mut self, now: Instant, reply: Reply<'i>) -> Option<Event<'i>> {
        let Some(cmd) = self.queue.pop_front() else {
            let reason = if reply.code() == ReplyCode::UNAVAILABLE {
                CloseReason::Shutdown
            } else {
                CloseReason::BadReply
            };
            self.close(reason);
            return Some(Event::Unsolicited(reply));
        };
        let code = reply.code();
        // RFC 5321 3.8: 421 may answer anything, and the server closes after it.
        let closing = code == ReplyCode::UNAVAILABLE;
        let positive = code.is_positive();
        let event = match cmd {
            Cmd::Greeting => {
                if code == ReplyCode::READY {
                    self.phase = Phase::Hello;
                    let verb = self.first_hello();
                    self.send_hello(now, verb);
                } else if !closing {
                    // RFC 5321 3.1: after a 554 greeting the client sends QUIT.
                    self.send_quit(now);
                }
                Some(Event::Greeting(reply))
            }
            Cmd::Hello(verb) => {
                if positive {
                    if verb == HelloVerb::Helo {
                        self.caps.clear();
                    } else {
                        self.caps.update(reply.text());
                    }
                    self.hello = Some(verb);
                    self.phase = Phase::Ready;
                    Some(Event::Ready)
                } else if verb == HelloVerb::Ehlo && code.class() == 5 {
                    // RFC 5321 3.2: a server that does not know EHLO gets HELO.
                    self.send_hello(now, HelloVerb::Helo);
                    None
                } else {
                    if !closing {
                        self.send_quit(now);
                    }
                    Some(Event::HelloRefused(reply))
                }
            }
            Cmd::StartTls => {
                self.busy = false;
                if code == ReplyCode::READY {
                    self.phase = Phase::TlsHandshake;
                }
                Some(Event::StartTlsResult(reply))
            }
            Cmd::Auth => {
                if code == ReplyCode::AUTH_CONTINUE
                    && let Some(step) = &mut self.auth
                {
                    step.respond(&mut self.out);
                    self.expect(now, Cmd::Auth);
                    None
                } else {
                    self.busy = false;
                    self.auth = None;
                    self.authenticated |= code == ReplyCode::AUTH_OK;
                    Some(Event::AuthResult(reply))
                }
            }
            Cmd::Mail => {
                if let Some(t) = &mut self.txn {
                    t.mail_ok = positive;
                    // Without PIPELINING nothing else went out: drop the rest. No transaction
                    // was opened, so there is nothing to reset.
                    if !positive && !self.staged_cmds.is_empty() {
                        self.drop_staged();
                        self.abort(now, false);
                    }
                }
                Some(Event::SenderResult(reply))
            }
            Cmd::Rcpt(index) => {
                self.on_rcpt(now, index, positive);
                Some(Event::RecipientResult { index, reply })
            }
            Cmd::Data => {
                let accepted = !self.accepted.is_empty();
                if code == ReplyCode::START_DATA && !accepted {
                    // RFC 2920 3.1: a 354 after every RCPT failed still needs the end of data.
                    self.out.extend_from_slice(b".\r\n");
                    self.expect(now, Cmd::Ignore);
                    self.txn = None;
                    Some(Event::MessageAborted { reply: None })
                } else if code == ReplyCode::START_DATA {
                    if let Some(t) = &mut self.txn {
                        t.stage = Stage::Content(ContentEncoder::new());
                    }
                    Some(Event::ReadyForData)
                } else {
                    self.txn = None;
                    if !closing {
                        self.stage_command(now, b"RSET", Cmd::Rset);
                    }
                    Some(Event::MessageAborted { reply: Some(reply) })
                }
            }
            Cmd::Bdat if positive => None,
            Cmd::Bdat => {
                // RFC 3030 2: a refused chunk fails the transaction; send no more chunks and
                // let the replies to those already sent go by.
                for c in &mut self.queue {
                    if matches!(c, Cmd::Bdat | Cmd::DataEnd(_)) {
                        *c = Cmd::Ignore;
                    }
                }
                self.drop_staged();
                self.txn = None;
                self.content_dropped = true;
                if !closing {
                    self.stage_command(now, b"RSET", Cmd::Rset);
                }
                Some(Event::MessageResult {
                    recipient: None,
                    reply,
                })
            }
            Cmd::DataEnd(recipient) => {
                if let Some(t) = &mut self.txn {
                    t.end_replies = t.end_replies.saturating_sub(1);
                    if t.end_replies == 0 {
                        self.txn = None;
                        self.timers.block = None;
                    }
                }
                Some(Event::MessageResult { recipient, reply })
            }
            Cmd::Ignore | Cmd::Rset => None,
            Cmd::Noop => {
                self.busy = false;
                Some(Event::NoopResult(reply))
            }
            Cmd::Quit => {
                self.close(CloseReason::Quit);
                None
            }
        };
        if closing {
            self.close(CloseReason::Shutdown);
        } else if self.closed.is_none() {
            self.release(now);
            self.arm_reply(now);
        }
        event
    }

    fn on_rcpt(&mut self, now: Instant, index: usize, positive: bool) {
        let Some(t) = &mut self.txn else {
            return;
        };
        t.answered += 1;
        if positive {
            self.accepted.push(index);
        }
        if t.answered < t.recipients {
            return;
        }
        let (bdat, mail_ok) = (t.bdat, t.mail_ok);
        if !self.accepted.is_empty() {
            if bdat {
                t.stage = Stage::Content(ContentEncoder::new());
                self.deferred = Some(Deferred::ReadyForData);
            }
            return;
        }
        // Nothing accepted. A DATA already sent (pipelined) will be refused and reported;
        // one still staged is never sent.
        if bdat || self.staged_cmds.front().is_some_and(|c| c.0 == Cmd::Data) {
            self.drop_staged();
            self.abort(now, mail_ok);
        }
    }

    /// Ends the transaction before content: report it next, reset the server if MAIL opened
    /// a transaction there.
    fn abort(&mut self, now: Instant, rset: bool) {
        self.txn = None;
        self.deferred = Some(Deferred::Aborted);
        if rset {
            self.stage_command(now, b"RSET", Cmd::Rset);
        }
    }

    // ---- Bookkeeping -----------------------------------------------------------------------

    fn check_ready(&self) -> Result<(), ClientError> {
        if self.closed.is_some() {
            return Err(ClientError::Closed);
        }
        if self.phase != Phase::Ready || self.busy || self.txn.is_some() {
            return Err(ClientError::NotReady);
        }
        Ok(())
    }

    /// Whether content calls apply: `Some(bdat)` in the content stage, `None` when the last
    /// message's content is being dropped.
    fn content_stage(&self) -> Result<Option<bool>, ClientError> {
        if self.closed.is_some() {
            return Err(ClientError::Closed);
        }
        if self.quitting {
            return Err(ClientError::NotReady);
        }
        match self.txn {
            Some(Txn {
                stage: Stage::Content(_),
                bdat,
                ..
            }) => Ok(Some(bdat)),
            None if self.content_dropped => Ok(None),
            _ => Err(ClientError::NotReady),
        }
    }

    fn first_hello(&self) -> HelloVerb {
        match self.config.options.protocol {
            Protocol::Lmtp => HelloVerb::Lhlo,
            Protocol::Smtp => HelloVerb::Ehlo,
        }
    }

    fn send_hello(&mut self, now: Instant, verb: HelloVerb) {
        let start = self.staged.len();
        self.staged.extend_from_slice(verb.as_str().as_bytes());
        self.staged.push(b' ');
        self.staged
            .extend_from_slice(self.config.options.hostname.as_bytes());
        self.stage_line(start, Cmd::Hello(verb));
        self.release(now);
    }

    fn send_quit(&mut self, now: Instant) {
        self.busy = true;
        self.quitting = true;
        self.stage_command(now, b"QUIT", Cmd::Quit);
    }

    fn stage_command(&mut self, now: Instant, verb: &[u8], cmd: Cmd) {
        let start = self.staged.len();
        self.staged.extend_from_slice(verb);
        self.stage_line(start, cmd);
        self.release(now);
    }

    /// Ends the line begun at `start` of the staging buffer and queues it.
    fn stage_line(&mut self, start: usize, cmd: Cmd) {
        self.staged.extend_from_slice(b"\r\n");
        self.staged_cmds.push_back((cmd, self.staged.len() - start));
    }

    /// Moves staged commands to the output as far as RFC 2920 allows: with PIPELINING, until
    /// a command that must end a group is in flight; without it, one at a time.
    fn release(&mut self, now: Instant) {
        let pipelining = self.config.options.pipelining && self.caps.pipelining;
        while let Some(&(cmd, len)) = self.staged_cmds.front() {
            if len > 0
                && let Some(&last) = self.queue.back()
                && !(pipelining && last.may_be_followed())
            {
                break;
            }
            self.staged_cmds.pop_front();
            let end = self.staged_pos + len;
            self.out
                .extend_from_slice(&self.staged[self.staged_pos..end]);
            self.staged_pos = end;
            self.expect(now, cmd);
        }
        if self.staged_cmds.is_empty() {
            self.staged.clear();
            self.staged_pos = 0;
        }
    }

    /// Drops the staged commands of the failed transaction (RCPT, DATA, BDAT), keeping any
    /// other (a QUIT given meanwhile) in order.
    fn drop_staged(&mut self) {
        let (mut read, mut write) = (self.staged_pos, self.staged_pos);
        for _ in 0..self.staged_cmds.len() {
            let Some((cmd, len)) = self.staged_cmds.pop_front() else {
                break;
            };
            if !matches!(cmd, Cmd::Rcpt(_) | Cmd::Data | Cmd::Bdat | Cmd::DataEnd(_)) {
                self.staged.copy_within(read..read + len, write);
                write += len;
                self.staged_cmds.push_back((cmd, len));
            }
            read += len;
        }
        self.staged.truncate(write);
    }

    /// A command went out: its reply is now awaited.
    fn expect(&mut self, now: Instant, cmd: Cmd) {
        self.queue.push_back(cmd);
        if self.queue.len() == 1 {
            self.arm_reply(now);
        }
    }

    /// Arms the deadline for the reply at the head of the queue (RFC 5321 4.5.3.2).
    fn arm_reply(&mut self, now: Instant) {
        let t = &self.config.options.timeouts;
        self.timers.reply = self.queue.front().map(|cmd| {
            now + match cmd {
                Cmd::Greeting => t.greeting,
                Cmd::Mail => t.mail,
                Cmd::Rcpt(_) => t.rcpt,
                Cmd::Data => t.data_start,
                Cmd::Bdat => t.data_block,
                Cmd::DataEnd(_) | Cmd::Ignore => t.data_end,
                Cmd::Hello(_) | Cmd::StartTls | Cmd::Auth | Cmd::Rset | Cmd::Noop | Cmd::Quit => {
                    t.command
                }
            }
        });
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        self.phase = Phase::Closed;
        self.deferred = None;
        self.auth = None;
        self.timers.clear();
    }
}

/// Appends ` KEYWORD[=value]` parameters to a command line.
struct ParamWriter<'a>(&'a mut Vec<u8>);

impl ParamWriter<'_> {
    fn push(&mut self, p: Parameter<'_>) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.0, " {p}");
    }
}
