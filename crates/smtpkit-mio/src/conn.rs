//! One connection: PROXY header, limits, TLS, then the core's run loop, driven by readiness
//! events and deadlines instead of blocking calls.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::net::TcpStream;
use rustls::ServerConnection;
use smtpkit_proto::{InBuf, Server, ServerConfig};
use smtpkit_server::proxy::{MAX_V2_HEADER, ProxyError, ProxyHeader, parse_proxy_header};
use smtpkit_server::{ConnectionGuard, Dispatcher, Handler, ListenerKind, SessionInfo};
use tracing::{Span, debug, info, info_span, warn};

use crate::Shared;
use crate::accept::Accepted;
use crate::block::block_on;
use crate::control::State;

/// The input buffer starts at 4 KiB, enough for a pipelined envelope, so idle sessions stay
/// small; it grows to 64 KiB for bulk content (the same sizes as the tokio adapter).
const INBUF_INITIAL: usize = 4 * 1024;
const INBUF_MAX: usize = 64 * 1024;
/// After an abort, the last reply gets this long to leave before the socket is dropped.
const ABORT_FLUSH: Duration = Duration::from_secs(1);
/// Rounds of read-handle-write per wake-up before the loop serves other connections; a
/// client that keeps the socket full is resumed on the next loop iteration.
const MAX_ROUNDS: usize = 16;

fn now() -> Instant {
    Instant::now()
}

/// What the event loop does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drive {
    /// Wait for readiness or the deadline. `again`: there may be work left that no event
    /// will announce (the round limit was hit), so drive it again soon.
    Keep { again: bool },
    /// Remove it and call [`Conn::finish`].
    Close,
}

/// The connection has ended; the caller removes it.
struct Closed;

type Step = Result<bool, Closed>;

/// Why reading TLS records stopped the connection.
enum TlsFail {
    Tls(rustls::Error),
    Io(io::Error),
}

enum Phase<S> {
    /// Reading the PROXY header into the buffer.
    Proxy(Vec<u8>),
    /// Implicit TLS: the handshake before the session starts.
    Handshake,
    /// The SMTP session.
    Session(Box<Live<S>>),
}

struct Live<S> {
    server: Server,
    dispatcher: Dispatcher<S>,
    started: Instant,
}

/// Decrements the open-connection gauge however the connection ends.
struct OpenGauge(Arc<smtpkit_server::Metrics>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

pub(crate) struct Conn<S> {
    tcp: TcpStream,
    /// Tells this connection apart from a later one in the same slab slot.
    pub(crate) generation: u64,
    peer: SocketAddr,
    local: SocketAddr,
    kind: ListenerKind,
    config: Arc<ServerConfig>,
    /// Readiness as last reported by mio and not yet used up by a `WouldBlock`.
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer closed TCP.
    tcp_eof: bool,
    /// No more plaintext will come (TCP EOF, or TLS close_notify).
    eof: bool,
    tls: Option<Box<ServerConnection>>,
    close_notify_sent: bool,
    phase: Phase<S>,
    inbuf: InBuf,
    _guard: Option<ConnectionGuard>,
    /// The earliest entry this connection has in the loop's deadline heap.
    pub(crate) queued: Option<Instant>,
    /// The interest the socket is registered with, if it is.
    pub(crate) interest: Option<Interest>,
    proxy_deadline: Option<Instant>,
    handshake_deadline: Option<Instant>,
    /// Output is pending and the peer has not taken any of it since this deadline was set.
    write_deadline: Option<Instant>,
    aborted: bool,
    error: Option<String>,
    span: Span,
    _gauge: OpenGauge,
}

impl<S: smtpkit_server::Session> Conn<S> {
    pub(crate) fn new<H: Handler<Session = S>>(
        shared: &Shared<H>,
        a: Accepted,
        generation: u64,
    ) -> Self {
        shared.metrics.connection_opened();
        // Replies are small and latency-bound; do not let Nagle hold them back.
        let _ = a.tcp.set_nodelay(true);
        let local = a.tcp.local_addr().unwrap_or(a.peer);
        Self {
            tcp: a.tcp,
            generation,
            peer: a.peer,
            local,
            kind: a.kind,
            config: a.config,
            readable: true,
            writable: true,
            tcp_eof: false,
            eof: false,
            tls: None,
            close_notify_sent: false,
            phase: Phase::Proxy(Vec::new()),
            inbuf: InBuf::new(INBUF_INITIAL, INBUF_MAX),
            _guard: None,
            queued: None,
            interest: None,
            proxy_deadline: None,
            handshake_deadline: None,
            write_deadline: None,
            aborted: false,
            error: None,
            span: Span::none(),
            _gauge: OpenGauge(Arc::clone(&shared.metrics)),
        }
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Checks the source against the PROXY settings, or admits the connection at once.
    pub(crate) fn start<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Drive {
        let result = match &shared.settings.proxy {
            None => self.admit(shared, &[]),
            Some(proxy) if !proxy.trusted.contains(self.peer.ip()) => {
                debug!(peer = %self.peer, "PROXY protocol: untrusted source, closing");
                shared.metrics.connection_refused();
                Err(Closed)
            }
            Some(proxy) => {
                self.proxy_deadline = Some(now() + proxy.timeout);
                Ok(())
            }
        };
        match result {
            Ok(()) => self.drive(shared),
            Err(Closed) => Drive::Close,
        }
    }

    /// Applies a server lifecycle change.
    pub(crate) fn apply_state(&mut self, state: State) -> Drive {
        match (&mut self.phase, state) {
            (_, State::Running) => {}
            (Phase::Session(live), State::Draining) => live.server.handle_shutdown(now()),
            (Phase::Session(live), State::Abort) => {
                self.aborted = true;
                live.server.handle_abort(now());
            }
            // Not a session yet: nothing to say goodbye to. While draining it may still
            // become one, which then starts with the 421.
            (_, State::Draining) => {}
            (_, State::Abort) => return Drive::Close,
        }
        Drive::Keep { again: true }
    }

    /// The earliest of the connection's deadlines.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let core = match &self.phase {
            Phase::Session(live) => live.server.poll_timeout(),
            _ => None,
        };
        [
            core,
            self.proxy_deadline,
            self.handshake_deadline,
            self.write_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What to ask mio for: readable only while input can make progress, writable only while
    /// output is pending.
    pub(crate) fn wanted_interest(&self) -> Interest {
        let read = !self.tcp_eof
            && match &self.phase {
                Phase::Proxy(_) => true,
                Phase::Handshake => self.tls.as_ref().is_some_and(|t| t.wants_read()),
                Phase::Session(live) => {
                    live.server.wants_input()
                        || self.tls.as_ref().is_some_and(|t| t.is_handshaking())
                }
            };
        match (read, self.output_pending()) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // mio needs some interest; a readable edge while no input is wanted only sets the
            // `readable` flag, which the next round honours.
            _ => Interest::READABLE,
        }
    }

    fn output_pending(&self) -> bool {
        let tls = self.tls.as_ref().is_some_and(|t| t.wants_write());
        let core = match &self.phase {
            Phase::Session(live) => !live.server.poll_transmit().is_empty(),
            _ => false,
        };
        tls || core
    }

    /// A deadline passed: handle whichever expired, then drive.
    pub(crate) fn on_timeout<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Drive {
        let span = self.span.clone();
        let _enter = span.enter();
        let now = now();
        let expired = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if expired(self.proxy_deadline) {
            debug!(peer = %self.peer, "PROXY protocol: header timeout, closing");
            shared.metrics.connection_refused();
            return Drive::Close;
        }
        if expired(self.handshake_deadline) {
            debug!(peer = %self.peer, "TLS handshake timed out");
            shared.metrics.tls_handshake_failed();
            if let Phase::Session(live) = &mut self.phase {
                live.server.handle_tls_failed(now);
            }
            return Drive::Close;
        }
        if expired(self.write_deadline) {
            self.error = Some("write timed out".into());
            return Drive::Close;
        }
        if let Phase::Session(live) = &mut self.phase
            && expired(live.server.poll_timeout())
        {
            live.server.handle_timeout(now);
        }
        self.drive(shared)
    }

    /// Does everything that can be done without blocking, in rounds, until nothing moves.
    pub(crate) fn drive<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Drive {
        for _ in 0..MAX_ROUNDS {
            // The span changes when the session starts.
            let span = self.span.clone();
            let _enter = span.enter();
            let step = match self.phase {
                Phase::Proxy(_) => self.step_proxy(shared),
                Phase::Handshake => self.step_handshake(shared),
                Phase::Session(_) => self.step_session(shared),
            };
            match step {
                Ok(true) => {}
                Ok(false) => return Drive::Keep { again: false },
                Err(Closed) => return Drive::Close,
            }
        }
        Drive::Keep { again: true }
    }

    fn step_proxy<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let Phase::Proxy(buf) = &mut self.phase else {
            return Ok(false);
        };
        if !self.readable {
            return Ok(false);
        }
        let len = buf.len();
        buf.resize(MAX_V2_HEADER, 0);
        let read = (&self.tcp).read(&mut buf[len..]);
        let n = match read {
            Ok(0) => {
                debug!(peer = %self.peer, "PROXY protocol: closed before the header");
                shared.metrics.connection_refused();
                return Err(Closed);
            }
            Ok(n) => n,
            Err(e) => {
                buf.truncate(len);
                return match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        Ok(false)
                    }
                    io::ErrorKind::Interrupted => Ok(true),
                    _ => {
                        debug!(peer = %self.peer, error = %e, "PROXY protocol: read failed");
                        shared.metrics.connection_refused();
                        Err(Closed)
                    }
                };
            }
        };
        buf.truncate(len + n);
        let parsed = match parse_proxy_header(buf) {
            Ok(None) if buf.len() >= MAX_V2_HEADER => Err(ProxyError::TooLong),
            other => other,
        };
        match parsed {
            Ok(None) => Ok(true),
            Ok(Some((header, used))) => {
                let rest = buf[used..].to_vec();
                if let ProxyHeader::Proxied {
                    source,
                    destination,
                    ..
                } = header
                {
                    self.peer = source;
                    self.local = destination;
                }
                self.proxy_deadline = None;
                self.admit(shared, &rest)?;
                Ok(true)
            }
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "PROXY protocol: bad header, closing");
                shared.metrics.connection_refused();
                Err(Closed)
            }
        }
    }

    /// Counts the connection against the limits, then starts TLS or the session. `rest` is
    /// what was read past a PROXY header.
    fn admit<H: Handler<Session = S>>(
        &mut self,
        shared: &Shared<H>,
        rest: &[u8],
    ) -> Result<(), Closed> {
        match shared.limiter.try_acquire(self.peer.ip()) {
            Ok(guard) => self._guard = Some(guard),
            Err(e) => {
                info!(peer = %self.peer, reason = %e, "connection refused");
                shared.metrics.connection_refused();
                // An implicit TLS client cannot read a plaintext reply; it just sees the
                // close. The socket's send buffer is empty, so one write takes the line.
                if !self.kind.implicit_tls() {
                    let line = e.reply_bytes(&shared.settings.hostname);
                    let _ = (&self.tcp).write(&line);
                    let _ = self.tcp.shutdown(Shutdown::Write);
                }
                return Err(Closed);
            }
        }
        if self.kind.implicit_tls() {
            self.tls = Some(new_tls(shared).ok_or(Closed)?);
            self.handshake_deadline = Some(now() + shared.settings.tls_handshake_timeout);
            if !rest.is_empty()
                && let Some(tls) = &mut self.tls
            {
                // The start of the ClientHello came with the PROXY header.
                let fed = tls.read_tls(&mut &rest[..]).and_then(|_| {
                    tls.process_new_packets()
                        .map(drop)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                });
                if let Err(e) = fed {
                    debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    shared.metrics.tls_handshake_failed();
                    return Err(Closed);
                }
            }
            self.phase = Phase::Handshake;
        } else {
            self.inbuf.spare()[..rest.len()].copy_from_slice(rest);
            self.inbuf.commit(rest.len());
            self.start_session(shared);
        }
        Ok(())
    }

    fn step_handshake<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Err(Closed);
        };
        let mut progress = match tls_read(&self.tcp, tls, &mut self.readable, &mut self.tcp_eof) {
            Ok(p) => p,
            Err(fail) => {
                let _ = tls_write(&self.tcp, tls, &mut self.writable);
                self.handshake_failed(shared, &fail);
                return Err(Closed);
            }
        };
        progress |= tls_write(&self.tcp, tls, &mut self.writable).map_err(|_| Closed)?;
        if !tls.is_handshaking() {
            self.handshake_deadline = None;
            self.start_session(shared);
            return Ok(true);
        }
        if self.tcp_eof {
            self.handshake_failed(shared, &TlsFail::Io(io::ErrorKind::UnexpectedEof.into()));
            return Err(Closed);
        }
        Ok(progress)
    }

    fn handshake_failed<H: Handler<Session = S>>(&self, shared: &Shared<H>, fail: &TlsFail) {
        match fail {
            TlsFail::Tls(e) => debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            TlsFail::Io(e) => debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
        }
        shared.metrics.tls_handshake_failed();
    }

    fn start_session<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) {
        let info = SessionInfo::new(self.peer, self.local, self.kind).with_tls(self.tls.is_some());
        self.span = info_span!("smtp", id = %info.id, peer = %self.peer, listener = %self.kind);
        let _enter = self.span.enter();
        let mut server = Server::new(Arc::clone(&self.config), now());
        if info.tls {
            server.handle_tls_established(now());
        }
        let dispatcher = block_on(Dispatcher::connect(
            &shared.handler,
            &mut server,
            info,
            Some(Arc::clone(&shared.metrics)),
            now,
        ));
        match shared.control.state() {
            State::Running => {}
            State::Draining => server.handle_shutdown(now()),
            State::Abort => {
                self.aborted = true;
                server.handle_abort(now());
            }
        }
        self.phase = Phase::Session(Box::new(Live {
            server,
            dispatcher,
            started: now(),
        }));
    }

    /// One round of the core's run loop: read, handle events, write, STARTTLS, close.
    fn step_session<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let Phase::Session(live) = &mut self.phase else {
            return Ok(false);
        };
        let Live {
            server, dispatcher, ..
        } = &mut **live;
        let mut progress = false;

        // 1. Input, only while the core wants it (or the STARTTLS handshake needs records).
        match self.tls.as_deref_mut() {
            None => {
                if server.wants_input() && !self.eof {
                    while self.readable {
                        let spare = self.inbuf.spare();
                        if spare.is_empty() {
                            break;
                        }
                        match (&self.tcp).read(spare) {
                            Ok(0) => {
                                self.eof = true;
                                self.tcp_eof = true;
                                progress = true;
                                break;
                            }
                            Ok(n) => {
                                self.inbuf.commit(n);
                                progress = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                self.readable = false;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if is_disconnect(&e) => {
                                self.eof = true;
                                self.tcp_eof = true;
                                progress = true;
                                break;
                            }
                            Err(e) => {
                                self.error = Some(e.to_string());
                                return Err(Closed);
                            }
                        }
                    }
                }
            }
            Some(tls) => {
                let handshaking = tls.is_handshaking();
                if handshaking || server.wants_input() {
                    match tls_read(&self.tcp, tls, &mut self.readable, &mut self.tcp_eof) {
                        Ok(p) => progress |= p,
                        Err(fail) => {
                            let _ = tls_write(&self.tcp, tls, &mut self.writable);
                            if handshaking {
                                debug!("STARTTLS handshake failed");
                                let (metrics, peer) = (&shared.metrics, self.peer);
                                match &fail {
                                    TlsFail::Tls(e) => debug!(%peer, error = %e, "TLS error"),
                                    TlsFail::Io(e) => debug!(%peer, error = %e, "TLS error"),
                                }
                                metrics.tls_handshake_failed();
                                server.handle_tls_failed(now());
                            } else {
                                self.error = Some(match fail {
                                    TlsFail::Tls(e) => e.to_string(),
                                    TlsFail::Io(e) => e.to_string(),
                                });
                            }
                            return Err(Closed);
                        }
                    }
                }
                if handshaking && !tls.is_handshaking() {
                    debug!("STARTTLS handshake done");
                    self.handshake_deadline = None;
                    server.handle_tls_established(now());
                    progress = true;
                } else if tls.is_handshaking() && self.tcp_eof {
                    debug!("STARTTLS handshake failed: connection closed");
                    shared.metrics.tls_handshake_failed();
                    server.handle_tls_failed(now());
                    return Err(Closed);
                }
                if !tls.is_handshaking() && server.wants_input() && !self.eof {
                    loop {
                        let spare = self.inbuf.spare();
                        if spare.is_empty() {
                            break;
                        }
                        match tls.reader().read(spare) {
                            // close_notify: a clean end of the plaintext.
                            Ok(0) => {
                                self.eof = true;
                                progress = true;
                                break;
                            }
                            Ok(n) => {
                                self.inbuf.commit(n);
                                progress = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // TCP closed without close_notify, or some other end: either way
                            // no more plaintext will come.
                            Err(_) => {
                                self.eof = true;
                                progress = true;
                                break;
                            }
                        }
                    }
                }
            }
        }

        // 2. Handle every event the buffered input yields.
        loop {
            let p = server.handle_input(now(), self.inbuf.data());
            let Some(event) = p.event else {
                progress |= p.consumed > 0;
                self.inbuf.consume(p.consumed);
                break;
            };
            block_on(dispatcher.handle(server, event, now));
            self.inbuf.consume(p.consumed);
            progress = true;
        }
        // The core has taken what it can of the input; report the end of it.
        if self.eof && !server.is_closed() && server.wants_input() {
            server.handle_eof(now());
            progress = true;
        }

        // 4. Write out what the core and TLS have queued.
        let limit = if self.aborted {
            ABORT_FLUSH
        } else {
            shared.settings.timeouts.command
        };
        let wrote = flush(
            &self.tcp,
            self.tls.as_deref_mut(),
            server,
            &mut self.writable,
        )
        .map_err(|e| {
            if !is_disconnect(&e) {
                self.error = Some(e.to_string());
            }
            Closed
        })?;
        progress |= wrote;
        let pending = !server.poll_transmit().is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write());
        if !pending {
            self.write_deadline = None;
        } else if wrote || self.write_deadline.is_none() {
            // Each write may take at most `limit`, so a client that never reads cannot hold
            // the session.
            self.write_deadline = Some(now() + limit);
        }

        // 5. STARTTLS, once the 220 is out: the core has dropped plaintext pipelined after
        // the command, and so does the buffer.
        if server.wants_tls_handshake() && self.tls.is_none() && !pending {
            self.inbuf.consume(self.inbuf.data().len());
            match new_tls(shared) {
                Some(tls) => {
                    self.tls = Some(tls);
                    self.handshake_deadline = Some(now() + shared.settings.tls_handshake_timeout);
                }
                None => server.handle_tls_failed(now()),
            }
            return Ok(true);
        }

        if server.is_closed() && !pending {
            match self.tls.as_deref_mut() {
                Some(tls) if !self.close_notify_sent && !tls.is_handshaking() => {
                    tls.send_close_notify();
                    self.close_notify_sent = true;
                    return Ok(true);
                }
                _ => return Err(Closed),
            }
        }
        Ok(progress)
    }

    /// Ends the connection: the application hears of the close, and the socket is shut.
    pub(crate) fn finish(self) {
        let span = self.span.clone();
        let _enter = span.enter();
        let _ = self.tcp.shutdown(Shutdown::Write);
        if let Phase::Session(live) = self.phase {
            let duration_ms = live.started.elapsed().as_millis() as u64;
            match &self.error {
                Some(e) => info!(error = %e, duration_ms, "session ended"),
                None => info!(
                    reason = %live
                        .server
                        .close_reason()
                        .map_or("connection lost".into(), |r| r.to_string()),
                    duration_ms,
                    "session ended"
                ),
            }
            block_on(live.dispatcher.close(&live.server));
        }
    }
}

fn new_tls<H>(shared: &Shared<H>) -> Option<Box<ServerConnection>> {
    let Some(config) = &shared.tls else {
        // STARTTLS is only offered, and implicit TLS listeners only built, with a config.
        warn!("TLS requested without a TLS config");
        return None;
    };
    match ServerConnection::new(Arc::clone(config)) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            warn!(error = %e, "cannot start a TLS session");
            shared.metrics.tls_handshake_failed();
            None
        }
    }
}

/// Reads TLS records while rustls wants them and the socket has them; returns whether
/// anything was read.
fn tls_read(
    mut tcp: &TcpStream,
    tls: &mut ServerConnection,
    readable: &mut bool,
    eof: &mut bool,
) -> Result<bool, TlsFail> {
    let mut progress = false;
    while *readable && !*eof && tls.wants_read() {
        match tls.read_tls(&mut tcp) {
            Ok(0) => {
                *eof = true;
                progress = true;
            }
            Ok(_) => {
                progress = true;
                tls.process_new_packets().map_err(TlsFail::Tls)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_disconnect(&e) => {
                *eof = true;
                progress = true;
            }
            Err(e) => return Err(TlsFail::Io(e)),
        }
    }
    Ok(progress)
}

/// Writes TLS records while rustls has them and the socket takes them.
fn tls_write(
    mut tcp: &TcpStream,
    tls: &mut ServerConnection,
    writable: &mut bool,
) -> io::Result<bool> {
    let mut progress = false;
    while *writable && tls.wants_write() {
        match tls.write_tls(&mut tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => progress = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}

/// Moves the core's output to the socket (through TLS if it is on) until it is empty or the
/// socket is full; returns whether anything moved.
fn flush(
    mut tcp: &TcpStream,
    tls: Option<&mut ServerConnection>,
    server: &mut Server,
    writable: &mut bool,
) -> io::Result<bool> {
    let mut progress = false;
    match tls {
        None => {
            while *writable && !server.poll_transmit().is_empty() {
                match tcp.write(server.poll_transmit()) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        server.advance_transmit(n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Some(tls) => loop {
            let mut moved = false;
            if !server.poll_transmit().is_empty() {
                // rustls takes plaintext up to its buffer limit and encrypts it.
                let n = tls.writer().write(server.poll_transmit())?;
                server.advance_transmit(n);
                moved = n > 0;
            }
            let wrote = tls_write(tcp, tls, writable)?;
            if !moved && !wrote {
                break;
            }
            progress = true;
        },
    }
    Ok(progress)
}

/// A peer that vanishes, with or without TLS close_notify, is an ordinary end of session.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
