//! The client driver, written once for every async runtime: a [`Connection`] runs the core's
//! [`Client`] over a [`Transport`] and a [`Runtime`] timer. Connect-time greeting, EHLO (LHLO),
//! STARTTLS or implicit TLS, AUTH, then one message after another ([`Connection::send`]),
//! each streamed from memory or an `AsyncRead`, and QUIT.
//!
//! The module is the mirror of [`driver`](crate::driver), named after the core's
//! [`smtpkit_proto::client`] and the adapters' `client` modules, so one name means the
//! sending side at every layer. An adapter supplies a [`Socket`] (its TCP and Unix streams,
//! and a TLS client handshake on them), which [`Stream`] turns into the [`Transport`], and its
//! `Runtime`; `smtpkit-tokio`, `smtpkit-smol` and `smtpkit-mio` add `connect` (TCP) and
//! `connect_unix`.
//!
//! Every deadline is the core's ([`Client::poll_timeout`], RFC 5321 4.5.3.2): the driver adds
//! none of its own except for the TLS handshake, which is bounded by the command timeout.
//! Reading, writing and reading the body are waited on together, so a server that answers
//! while the client is still writing (a refused BDAT chunk, a 421) is heard at once.

mod delivery;
mod error;
mod stream;
mod tls;

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use smtpkit_proto::client::{Capabilities, Client, ClientConfig, Envelope, Event, Sasl};
use smtpkit_proto::{CloseReason, InBuf, Reply, ReplyCode};

pub use self::delivery::{Body, CHUNK, Delivery};
use self::error::CLOSING;
pub use self::error::{Error, ProtocolError};
pub use self::stream::{Address, AddressError, Socket, Stream};
pub use self::tls::{AnyCertificate, TlsMode, TlsSettings, any_certificate_config, client_config};
pub use crate::driver::Runtime;
use crate::driver::is_disconnect;
use crate::driver::session::{now, until};

/// After QUIT, how long to wait for the 221 and the close when the core sets no deadline.
const QUIT_FLUSH: Duration = Duration::from_secs(5);

/// A client connection's bytes: plain TCP first, TLS after a handshake.
pub trait Transport: Send + Unpin + 'static {
    /// Reads into `buf`; `Ok(0)` is the end of input.
    fn poll_read(&mut self, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Flushes buffered output (TLS records).
    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>>;
    /// Closes the write side (with TLS `close_notify`).
    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>>;
    /// Runs the client side of a TLS handshake for `server_name` and continues encrypted;
    /// after an error the transport is closed (reads see the end, writes fail).
    fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// What ended one wait of the run loop.
enum Wake {
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Read(io::Result<usize>),
    Body(io::Result<usize>),
    Timeout,
}

/// Where the content of the message being sent stands.
struct Content<'a> {
    body: Body<'a>,
    /// Octets of `Body::Bytes` already handed to the core.
    pos: usize,
    /// The end of the content was given to the core.
    finished: bool,
}

/// One SMTP (or LMTP) client connection, ready for commands once [`open`](Self::open)
/// returns: greeted, EHLO answered, encrypted if the [`TlsSettings`] ask for it.
///
/// After an `Err` that is not [`Error::Usage`] or [`Error::Rejected`] the connection is
/// gone; [`is_open`](Self::is_open) tells.
pub struct Connection<R: Runtime, T> {
    client: Client,
    io: T,
    inbuf: InBuf,
    tls: Option<TlsSettings>,
    greeting: Option<Reply<'static>>,
    /// Why the connection broke: every later call reports it.
    failed: Option<Error>,
    /// A 421 or a reply to nothing: what to report if the session then closes.
    last_word: Option<Error>,
    /// Bytes were written since the last flush (TLS may hold records back).
    unflushed: bool,
    timer: Pin<Box<R::Timer>>,
    /// Where `timer` is set; it only moves earlier (see `driver::run_session`).
    timer_at: Option<Instant>,
    /// The buffer a `Body::Reader` is read into, kept for the whole connection.
    chunk: Vec<u8>,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime, T> std::fmt::Debug for Connection<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &self.client)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, T: Transport> Connection<R, T> {
    /// Starts a session on a connected transport: implicit TLS if asked, the greeting, EHLO
    /// (LHLO), and STARTTLS when `tls` requires or offers it.
    ///
    /// A greeting other than 220 or a refused EHLO is [`Error::Rejected`]; TLS required but
    /// not offered is [`Error::TlsUnavailable`].
    pub async fn open(
        mut io: T,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        let handshake_limit = config.options().timeouts.command;
        let implicit = tls.as_ref().is_some_and(|t| t.mode == TlsMode::Implicit);
        let client = if let (true, Some(t)) = (implicit, &tls) {
            let hs = io.start_tls(Arc::clone(&t.config), t.server_name.clone());
            match until::<R, _>(Some(now() + handshake_limit), hs).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Tls(Arc::new(e))),
                Err(()) => return Err(Error::Timeout),
            }
            Client::new_tls(config, now())
        } else {
            Client::new(config, now())
        };
        let far = now() + Duration::from_secs(86400 * 365 * 30);
        let mut conn = Self {
            client,
            io,
            inbuf: InBuf::new(4096, 64 * 1024),
            tls,
            greeting: None,
            failed: None,
            last_word: None,
            unflushed: false,
            timer: Box::pin(R::timer(far)),
            timer_at: None,
            chunk: Vec::new(),
            runtime: PhantomData,
        };
        let starttls = conn
            .tls
            .as_ref()
            .map(|t| t.mode)
            .filter(|m| *m != TlsMode::Implicit);
        let mut greeting = None;
        let result = conn
            .run(None, |client, event| match event {
                Event::Greeting(reply) => {
                    let ok = reply.code() == ReplyCode::READY;
                    greeting = Some(reply.into_owned());
                    match (ok, &greeting) {
                        (false, Some(r)) => Err(Error::Rejected(r.clone())),
                        _ => Ok(None),
                    }
                }
                Event::Ready => {
                    let Some(mode) = starttls.filter(|_| !client.is_tls()) else {
                        return Ok(Some(()));
                    };
                    if client.capabilities().starttls {
                        client.starttls(now())?;
                        Ok(None)
                    } else if mode == TlsMode::Required {
                        Err(Error::TlsUnavailable)
                    } else {
                        Ok(Some(()))
                    }
                }
                Event::StartTlsResult(reply) if reply.code() != ReplyCode::READY => {
                    if starttls == Some(TlsMode::Required) {
                        Err(Error::Rejected(reply.into_owned()))
                    } else {
                        Ok(Some(()))
                    }
                }
                Event::HelloRefused(reply) => Err(Error::Rejected(reply.into_owned())),
                _ => Ok(None),
            })
            .await;
        conn.greeting = greeting;
        match result {
            Ok(()) => Ok(conn),
            Err(e) => {
                conn.abandon().await;
                Err(e)
            }
        }
    }

    /// The server's greeting.
    pub fn greeting(&self) -> Option<&Reply<'static>> {
        self.greeting.as_ref()
    }

    /// What the server offered in its last EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        self.client.capabilities()
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.client.is_tls()
    }

    /// Whether the connection can take another command.
    pub fn is_open(&self) -> bool {
        self.failed.is_none() && !self.client.is_closed()
    }

    /// The core session, for what this API does not show.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Authenticates (RFC 4954). A refusal is [`Error::Rejected`] and leaves the connection
    /// usable.
    pub async fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error> {
        self.check()?;
        self.client.auth(now(), sasl)?;
        self.run(None, |_, event| match event {
            Event::AuthResult(r) if r.code() == ReplyCode::AUTH_OK => Ok(Some(())),
            Event::AuthResult(r) => Err(Error::Rejected(r.into_owned())),
            _ => Ok(None),
        })
        .await
    }

    /// Sends NOOP; its reply.
    pub async fn noop(&mut self) -> Result<Reply<'static>, Error> {
        self.check()?;
        self.client.noop(now())?;
        self.run(None, |_, event| match event {
            Event::NoopResult(r) => Ok(Some(r.into_owned())),
            _ => Ok(None),
        })
        .await
    }

    /// Sends one message: MAIL, RCPT per recipient and DATA (pipelined when offered; BDAT
    /// when the config asks and the server offers CHUNKING), then the content from `body`.
    ///
    /// `Ok` tells each recipient's fate ([`Delivery`]); a refused transaction is reset and
    /// the connection stays usable. `Err` means the same for every recipient: nothing was
    /// sent ([`Error::Usage`]), or the connection failed before the server answered for any
    /// of them.
    pub async fn send(
        &mut self,
        envelope: &Envelope<'_>,
        body: Body<'_>,
    ) -> Result<Delivery, Error> {
        self.check()?;
        self.client.send_mail(now(), envelope)?;
        let n = envelope.recipients.len();
        let mut results: Vec<Option<Result<Reply<'static>, Error>>> = vec![None; n];
        let mut content = Content {
            body,
            pos: 0,
            finished: false,
        };
        let mut refusal: Option<Reply<'static>> = None;
        let outcome = self
            .run(Some(&mut content), |client, event| {
                match event {
                    Event::SenderResult(r) if !r.code().is_positive() => {
                        refusal = Some(r.into_owned());
                    }
                    Event::RecipientResult { index, reply } if !reply.code().is_positive() => {
                        if let Some(slot) = results.get_mut(index) {
                            *slot = Some(Err(Error::Rejected(reply.into_owned())));
                        }
                    }
                    Event::MessageResult { recipient, reply } => {
                        let verdict = |r: &Reply<'_>| {
                            let r = r.clone().into_owned();
                            if r.code().is_positive() {
                                Ok(r)
                            } else {
                                Err(Error::Rejected(r))
                            }
                        };
                        match recipient {
                            Some(i) => {
                                if let Some(slot) = results.get_mut(i) {
                                    *slot = Some(verdict(&reply));
                                }
                            }
                            None => {
                                for slot in results.iter_mut().filter(|s| s.is_none()) {
                                    *slot = Some(verdict(&reply));
                                }
                            }
                        }
                        if !client.in_transaction() {
                            return Ok(Some(()));
                        }
                    }
                    Event::MessageAborted { reply } => {
                        let why = reply.map(Reply::into_owned).or_else(|| refusal.take());
                        for slot in results.iter_mut().filter(|s| s.is_none()) {
                            // Without a reply of its own, a recipient shares MAIL's refusal;
                            // the core reports an abort with neither only after refusing
                            // every recipient, so this stays empty.
                            *slot = why.clone().map(|r| Err(Error::Rejected(r)));
                        }
                        return Ok(Some(()));
                    }
                    _ => {}
                }
                Ok(None)
            })
            .await;
        match outcome {
            Ok(()) => {}
            Err(e) if results.iter().all(Option::is_none) => return Err(e),
            Err(e) => {
                for slot in results.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some(Err(e.clone()));
                }
            }
        }
        let closed = Error::Closed;
        Ok(Delivery {
            recipients: results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(closed.clone())))
                .collect(),
        })
    }

    /// Sends QUIT, waits for the reply and closes the connection.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.check()?;
        self.client.quit(now())?;
        let result = self.run(None, |_, _| Ok(None::<()>)).await;
        let _ = until::<R, _>(
            Some(now() + QUIT_FLUSH),
            std::future::poll_fn(|cx| self.io.poll_close(cx)),
        )
        .await;
        match (result, self.client.close_reason()) {
            (_, Some(CloseReason::Quit)) => Ok(()),
            (Err(e), _) => Err(e),
            (Ok(()), _) => Err(Error::Closed),
        }
    }

    fn check(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.client.is_closed() => Err(self.closed_error()),
            None => Ok(()),
        }
    }

    /// Leaves a session that failed at the start: QUIT if the core queued one, briefly.
    async fn abandon(&mut self) {
        if self.failed.is_none() && !self.client.is_closed() {
            let _ = self.client.quit(now());
        }
        let flush = async {
            while !self.client.poll_transmit().is_empty() {
                let out = self.client.poll_transmit();
                match std::future::poll_fn(|cx| self.io.poll_write(cx, out)).await {
                    Ok(n) if n > 0 => self.client.advance_transmit(n),
                    _ => break,
                }
            }
            let _ = std::future::poll_fn(|cx| self.io.poll_close(cx)).await;
        };
        let _ = until::<R, _>(Some(now() + QUIT_FLUSH), flush).await;
    }

    /// Why the core closed, as the error every pending request gets.
    fn closed_error(&self) -> Error {
        if let Some(e) = &self.last_word {
            return e.clone();
        }
        match self.client.close_reason() {
            Some(CloseReason::Timeout) => Error::Timeout,
            Some(CloseReason::TlsFailed) => {
                Error::Tls(Arc::new(io::Error::other("handshake failed")))
            }
            _ => Error::Closed,
        }
    }

    /// The core's run loop: hands each event to `on_event` until it returns a value or an
    /// error, writing commands and content out and reading replies meanwhile.
    async fn run<O>(
        &mut self,
        mut content: Option<&mut Content<'_>>,
        mut on_event: impl FnMut(&mut Client, Event<'_>) -> Result<Option<O>, Error>,
    ) -> Result<O, Error> {
        // Each round handles a reply, moves bytes, or passes a deadline; the core's deadlines
        // bound the whole.
        loop {
            // One clock read per round: it is a measurable share of a small message's cost.
            let at = now();
            // 2. Every event the buffered input yields.
            loop {
                let progress = self.client.handle_input(at, self.inbuf.data());
                let consumed = progress.consumed;
                let Some(event) = progress.event else {
                    self.inbuf.consume(consumed);
                    break;
                };
                let result = match event {
                    Event::Malformed(e) => Err(Error::Protocol(ProtocolError::Malformed(e))),
                    Event::Unsolicited(r) if r.code() == CLOSING => {
                        Err(Error::Rejected(r.into_owned()))
                    }
                    Event::Unsolicited(r) => {
                        Err(Error::Protocol(ProtocolError::Unsolicited(r.into_owned())))
                    }
                    event => {
                        if let Some(r) = reply_of(&event).filter(|r| r.code() == CLOSING) {
                            self.last_word = Some(Error::Rejected(r.clone().into_owned()));
                        }
                        on_event(&mut self.client, event)
                    }
                };
                self.inbuf.consume(consumed);
                match result {
                    Ok(None) => {}
                    Ok(Some(o)) => return Ok(o),
                    Err(e) => {
                        if self.client.is_closed() && self.last_word.is_none() {
                            self.last_word = Some(e.clone());
                        }
                        return Err(e);
                    }
                }
            }
            // A closed core sends nothing more (a timeout may leave content unwritten).
            if self.client.is_closed() {
                return Err(self.closed_error());
            }
            // Content from memory goes in as far as the core's output cap allows.
            if let Some(c) = content.as_deref_mut() {
                self.feed_bytes(c, at)?;
            }
            // STARTTLS: once the command's bytes are out, the handshake.
            if self.client.wants_tls_handshake()
                && self.client.poll_transmit().is_empty()
                && !self.unflushed
            {
                self.handshake().await?;
                continue;
            }
            let deadline = self.client.poll_timeout();
            if deadline.is_some_and(|d| d <= at) {
                self.client.handle_timeout(at);
                continue;
            }
            if let Some(d) = deadline
                && self.timer_at.is_none_or(|armed| d < armed)
            {
                R::reset(self.timer.as_mut(), d);
                self.timer_at = Some(d);
            }
            // 1. Wait for whichever comes first: a write, a read, body bytes, the deadline.
            let wants_input = self.client.wants_input();
            let reading_body = content
                .as_deref()
                .is_some_and(|c| matches!(c.body, Body::Reader(_)) && !c.finished)
                && self.client.wants_data();
            if reading_body && self.chunk.len() != CHUNK {
                self.chunk.resize(CHUNK, 0);
            }
            let client = &self.client;
            let io = &mut self.io;
            let inbuf = &mut self.inbuf;
            let chunk = &mut self.chunk;
            let timer = self.timer.as_mut();
            let unflushed = self.unflushed;
            let mut body = match content.as_deref_mut() {
                Some(Content {
                    body: Body::Reader(r),
                    ..
                }) if reading_body => Some(Pin::new(&mut **r)),
                _ => None,
            };
            let mut timer = Some(timer).filter(|_| deadline.is_some());
            let wake = std::future::poll_fn(|cx| {
                let out = client.poll_transmit();
                if !out.is_empty() {
                    if let Poll::Ready(r) = io.poll_write(cx, out) {
                        return Poll::Ready(Wake::Wrote(r));
                    }
                } else if unflushed && let Poll::Ready(r) = io.poll_flush(cx) {
                    return Poll::Ready(Wake::Flushed(r));
                }
                if wants_input && let Poll::Ready(r) = io.poll_read(cx, inbuf.spare()) {
                    return Poll::Ready(Wake::Read(r));
                }
                if let Some(b) = body.as_mut()
                    && let Poll::Ready(r) = b.as_mut().poll_read(cx, chunk)
                {
                    return Poll::Ready(Wake::Body(r));
                }
                if let Some(t) = timer.as_mut()
                    && t.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Wake::Timeout);
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Wrote(Ok(0)) => return Err(self.fail(io::ErrorKind::WriteZero.into())),
                Wake::Wrote(Ok(n)) => {
                    self.client.advance_transmit(n);
                    self.unflushed = true;
                }
                Wake::Flushed(Ok(())) => self.unflushed = false,
                Wake::Wrote(Err(e)) | Wake::Flushed(Err(e)) => return Err(self.fail(e)),
                Wake::Read(Ok(0)) => self.client.handle_eof(now()),
                Wake::Read(Ok(n)) => self.inbuf.commit(n),
                Wake::Read(Err(e)) if is_disconnect(&e) => {
                    self.last_word.get_or_insert(Error::io(e));
                    self.client.handle_eof(now());
                }
                Wake::Read(Err(e)) => return Err(self.fail(e)),
                Wake::Body(r) => {
                    // Body reads are polled only while there is content.
                    let Some(c) = content.as_deref_mut() else {
                        continue;
                    };
                    match r {
                        Ok(0) => {
                            c.finished = true;
                            self.client.finish_data(now())?;
                        }
                        Ok(n) => self.client.send_data(now(), &self.chunk[..n])?,
                        // The message cannot be read: the server must not take it. Closing
                        // without the end of data is the one way to make sure of that.
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                Wake::Timeout => {
                    self.timer_at = None;
                    self.client.handle_timeout(now());
                }
            }
        }
    }

    /// Hands content from memory to the core while it wants more, then its end.
    fn feed_bytes(&mut self, c: &mut Content<'_>, at: Instant) -> Result<(), Error> {
        let Body::Bytes(bytes) = c.body else {
            return Ok(());
        };
        // Content in memory goes in as large pieces as the output cap allows: fewer, larger
        // writes (and BDAT chunks) for bulk content.
        let piece = self.client.config().options().output_buffer.max(CHUNK);
        while !c.finished && self.client.wants_data() {
            if c.pos == bytes.len() {
                c.finished = true;
                self.client.finish_data(at)?;
            } else {
                let end = bytes.len().min(c.pos + piece);
                self.client.send_data(at, &bytes[c.pos..end])?;
                c.pos = end;
            }
        }
        Ok(())
    }

    async fn handshake(&mut self) -> Result<(), Error> {
        // The core drops plaintext that came after the 220; so does the buffer.
        let all = self.inbuf.data().len();
        self.inbuf.consume(all);
        let Some(tls) = &self.tls else {
            // Only `open` sends STARTTLS, and only with TLS settings.
            self.client.handle_tls_failed(now());
            return Err(self.fail(io::Error::other("STARTTLS without TLS settings")));
        };
        let limit = self.client.config().options().timeouts.command;
        let hs = self
            .io
            .start_tls(Arc::clone(&tls.config), tls.server_name.clone());
        match until::<R, _>(Some(now() + limit), hs).await {
            Ok(Ok(())) => {
                self.client.handle_tls_established(now());
                Ok(())
            }
            Ok(Err(e)) => {
                self.client.handle_tls_failed(now());
                let e = Error::Tls(Arc::new(e));
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(()) => {
                self.client.handle_tls_failed(now());
                self.failed = Some(Error::Timeout);
                Err(Error::Timeout)
            }
        }
    }

    /// The connection broke: remember why.
    fn fail(&mut self, e: io::Error) -> Error {
        let e = Error::io(e);
        self.failed = Some(e.clone());
        e
    }
}

/// The reply an event carries, if any.
fn reply_of<'a>(event: &'a Event<'_>) -> Option<&'a Reply<'a>> {
    match event {
        Event::Greeting(r)
        | Event::HelloRefused(r)
        | Event::StartTlsResult(r)
        | Event::AuthResult(r)
        | Event::SenderResult(r)
        | Event::NoopResult(r)
        | Event::Unsolicited(r)
        | Event::RecipientResult { reply: r, .. }
        | Event::MessageResult { reply: r, .. }
        | Event::MessageAborted { reply: Some(r) } => Some(r),
        _ => None,
    }
}
