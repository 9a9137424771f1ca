//! One connection: PROXY header, limits, TLS, then the core's run loop, driven by readiness
//! events and deadlines instead of blocking calls.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::Interest;
use rustls::ServerConnection;
use smtpkit_proto::Server;
use smtpkit_server::driver::{ListenerConfig, SessionCore, is_disconnect, proxied, reverse_name};
use smtpkit_server::proxy::{MAX_V2_HEADER, ProxyError, ProxyTlvs, parse_proxy_header, proxy_tlvs};
use smtpkit_server::{
    ConnectionGuard, Endpoint, Handler, ProxyHeader, SessionInfo, State, TlsInfo,
};
use tracing::{Span, info_span};

use crate::Shared;
use crate::accept::Accepted;
use crate::block::{Mio, block_on};
use crate::socket::Socket;

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

impl std::fmt::Display for TlsFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => e.fmt(f),
            Self::Io(e) => e.fmt(f),
        }
    }
}

enum Phase<S> {
    /// Reading the PROXY header into the buffer.
    Proxy(Vec<u8>),
    /// Implicit TLS: the handshake before the session starts.
    Handshake(Option<ConnectionGuard>),
    /// The SMTP session.
    Session(Box<SessionCore<S>>),
}

pub(crate) struct Conn<S> {
    socket: Socket,
    /// Tells this connection apart from a later one in the same slab slot.
    pub(crate) generation: u64,
    peer: Endpoint,
    local: Endpoint,
    listener: Arc<ListenerConfig>,
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
    /// Bytes read past a PROXY header, for the session's input.
    ahead: Vec<u8>,
    /// The PROXY header and its TLVs, for the session's info.
    proxy: Option<(ProxyHeader, Option<ProxyTlvs>)>,
    /// The earliest entry this connection has in the loop's deadline heap.
    pub(crate) queued: Option<Instant>,
    /// The interest the socket is registered with, if it is.
    pub(crate) interest: Option<Interest>,
    proxy_deadline: Option<Instant>,
    handshake_deadline: Option<Instant>,
    /// Output is pending and the peer has not taken any of it since this deadline was set.
    write_deadline: Option<Instant>,
    error: Option<String>,
    span: Span,
    _gauge: smtpkit_server::driver::OpenGauge,
}

impl<S: smtpkit_server::Session> Conn<S> {
    pub(crate) fn new<H: Handler<Session = S>>(
        shared: &Shared<H>,
        a: Accepted,
        generation: u64,
    ) -> Self {
        a.socket.set_nodelay();
        Self {
            socket: a.socket,
            generation,
            peer: a.peer,
            local: a.local,
            listener: a.listener,
            readable: true,
            writable: true,
            tcp_eof: false,
            eof: false,
            tls: None,
            close_notify_sent: false,
            phase: Phase::Proxy(Vec::new()),
            ahead: Vec::new(),
            proxy: None,
            queued: None,
            interest: None,
            proxy_deadline: None,
            handshake_deadline: None,
            write_deadline: None,
            error: None,
            span: Span::none(),
            _gauge: smtpkit_server::driver::OpenGauge::new(&shared.metrics),
        }
    }

    pub(crate) fn socket_mut(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// Checks the source against the listener's PROXY settings, or admits the connection.
    pub(crate) fn start<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Drive {
        if shared.untrusted_proxy(&self.listener, &self.peer) {
            return Drive::Close;
        }
        let admitted = match &self.listener.settings.proxy {
            None => self.admit(shared),
            Some(proxy) => {
                self.proxy_deadline = Some(now() + proxy.timeout);
                Ok(())
            }
        };
        match admitted {
            Ok(()) => self.drive(shared),
            Err(Closed) => Drive::Close,
        }
    }

    /// Applies a server lifecycle change.
    pub(crate) fn apply_state(&mut self, state: State) -> Drive {
        match (&mut self.phase, state) {
            (_, State::Running | State::Closing) => {}
            (Phase::Session(core), _) => core.apply_state(state),
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
            Phase::Session(core) => core.server.poll_timeout(),
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
                Phase::Handshake(_) => self.tls.as_ref().is_some_and(|t| t.wants_read()),
                Phase::Session(core) => {
                    core.server.wants_input()
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
            Phase::Session(core) => !core.server.poll_transmit().is_empty(),
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
            shared.proxy_failed(&self.peer, &"header timeout");
            return Drive::Close;
        }
        if expired(self.handshake_deadline) {
            shared.tls_failed(&"handshake timed out");
            if let Phase::Session(core) = &mut self.phase {
                core.server.handle_tls_failed(now);
            }
            return Drive::Close;
        }
        if expired(self.write_deadline) {
            self.error = Some("write timed out".into());
            return Drive::Close;
        }
        if let Phase::Session(core) = &mut self.phase
            && expired(core.server.poll_timeout())
        {
            core.handle_timeout();
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
                Phase::Handshake(_) => self.step_handshake(shared),
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
        let read = (&self.socket).read(&mut buf[len..]);
        let n = match read {
            Ok(0) => {
                shared.proxy_failed(&self.peer, &"closed before the header");
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
                        shared.proxy_failed(&self.peer, &e);
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
                self.ahead = buf[used..].to_vec();
                let (peer, local) = (self.peer.clone(), self.local.clone());
                (self.peer, self.local) = proxied(&header, peer, local);
                self.proxy = Some((header, proxy_tlvs(&buf[..used])));
                self.proxy_deadline = None;
                self.admit(shared)?;
                Ok(true)
            }
            Err(e) => {
                shared.proxy_failed(&self.peer, &e);
                Err(Closed)
            }
        }
    }

    /// Counts the connection against the limits, then starts TLS or the session.
    fn admit<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Result<(), Closed> {
        let guard = match shared.admit(&self.listener, &self.peer) {
            Ok(guard) => guard,
            Err(line) => {
                // The socket's send buffer is empty, so one write takes the line.
                if !line.is_empty() {
                    let _ = (&self.socket).write(&line);
                    let _ = self.socket.shutdown_write();
                }
                return Err(Closed);
            }
        };
        if !self.listener.settings.kind.implicit_tls() {
            self.start_session(shared, Some(guard));
            return Ok(());
        }
        let mut tls = new_tls(shared, &self.listener).ok_or(Closed)?;
        self.handshake_deadline = Some(now() + shared.settings.tls_handshake_timeout);
        if !self.ahead.is_empty() {
            // The start of the ClientHello came with the PROXY header.
            let ahead = std::mem::take(&mut self.ahead);
            let fed = tls.read_tls(&mut &ahead[..]).and_then(|_| {
                tls.process_new_packets()
                    .map(drop)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            });
            if let Err(e) = fed {
                shared.tls_failed(&e);
                return Err(Closed);
            }
        }
        self.tls = Some(tls);
        self.phase = Phase::Handshake(Some(guard));
        Ok(())
    }

    fn step_handshake<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Err(Closed);
        };
        let mut progress = match tls_read(&self.socket, tls, &mut self.readable, &mut self.tcp_eof)
        {
            Ok(p) => p,
            Err(fail) => {
                let _ = tls_write(&self.socket, tls, &mut self.writable);
                shared.tls_failed(&fail);
                return Err(Closed);
            }
        };
        progress |= tls_write(&self.socket, tls, &mut self.writable).map_err(|_| Closed)?;
        if !tls.is_handshaking() {
            self.handshake_deadline = None;
            let guard = match &mut self.phase {
                Phase::Handshake(guard) => guard.take(),
                _ => None,
            };
            self.start_session(shared, guard);
            return Ok(true);
        }
        if self.tcp_eof {
            shared.tls_failed(&"connection closed");
            return Err(Closed);
        }
        Ok(progress)
    }

    fn start_session<H: Handler<Session = S>>(
        &mut self,
        shared: &Shared<H>,
        guard: Option<ConnectionGuard>,
    ) {
        let kind = self.listener.settings.kind;
        let mut info = SessionInfo::new(self.peer.clone(), self.local.clone(), kind);
        if let Some((header, tlvs)) = self.proxy.take() {
            info = info.with_proxy(header, tlvs);
        }
        if let Some(tls) = self.tls.as_deref() {
            info = info.with_tls_info(TlsInfo::from_connection(tls));
        }
        // The event loop waits for the lookup as it waits for every handler call: the
        // resolver runs its IO elsewhere and wakes this thread, the `Mio` timer bounds the wait,
        // and the cache makes repeat clients free.
        if let Some((lookup, ip)) = shared.reverse_lookup(&self.listener, &self.peer) {
            info = info.with_reverse_name(block_on(reverse_name::<Mio>(lookup, ip)));
        }
        self.span = info_span!("smtp", id = %info.id, peer = %self.peer, listener = %kind);
        let _enter = self.span.enter();
        let config = Arc::clone(&self.listener.config);
        let state = shared.lifecycle.state();
        let mut core = block_on(SessionCore::start(
            &shared.handler,
            &shared.metrics,
            config,
            info,
            guard,
            state,
        ));
        shared.allow_front_end(&mut core, &self.peer);
        let ahead = std::mem::take(&mut self.ahead);
        core.inbuf.spare()[..ahead.len()].copy_from_slice(&ahead);
        core.inbuf.commit(ahead.len());
        self.phase = Phase::Session(Box::new(core));
    }

    /// Reads what the core wants (through TLS when it is on) into its buffer.
    fn read_session<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let Phase::Session(core) = &mut self.phase else {
            return Ok(false);
        };
        let mut progress = false;
        let Some(tls) = self.tls.as_deref_mut() else {
            if !core.server.wants_input() || self.eof {
                return Ok(false);
            }
            while self.readable {
                let spare = core.read_buffer();
                if spare.is_empty() {
                    break;
                }
                match (&self.socket).read(spare) {
                    Ok(n) if n > 0 => core.inbuf.commit(n),
                    Ok(_) => self.tcp_eof = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if is_disconnect(&e) => self.tcp_eof = true,
                    Err(e) => {
                        self.error = Some(e.to_string());
                        return Err(Closed);
                    }
                }
                progress = true;
                if self.tcp_eof {
                    self.eof = true;
                    break;
                }
            }
            return Ok(progress);
        };
        let handshaking = tls.is_handshaking();
        if handshaking || core.server.wants_input() {
            match tls_read(&self.socket, tls, &mut self.readable, &mut self.tcp_eof) {
                Ok(p) => progress |= p,
                Err(fail) => {
                    let _ = tls_write(&self.socket, tls, &mut self.writable);
                    if handshaking {
                        shared.tls_failed(&fail);
                        core.server.handle_tls_failed(now());
                    } else {
                        self.error = Some(fail.to_string());
                    }
                    return Err(Closed);
                }
            }
        }
        if handshaking && !tls.is_handshaking() {
            self.handshake_deadline = None;
            block_on(core.secured(TlsInfo::from_connection(tls)));
            progress = true;
        } else if tls.is_handshaking() && self.tcp_eof {
            shared.tls_failed(&"connection closed");
            core.server.handle_tls_failed(now());
            return Err(Closed);
        }
        if tls.is_handshaking() || !core.server.wants_input() || self.eof {
            return Ok(progress);
        }
        loop {
            let spare = core.read_buffer();
            if spare.is_empty() {
                break;
            }
            match tls.reader().read(spare) {
                Ok(n) if n > 0 => core.inbuf.commit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // close_notify (`Ok(0)`), TCP closed without it, or some other end: either
                // way no more plaintext will come.
                _ => self.eof = true,
            }
            progress = true;
            if self.eof {
                break;
            }
        }
        Ok(progress)
    }

    /// One round of the shared run loop: read, handle events, write, STARTTLS, close.
    fn step_session<H: Handler<Session = S>>(&mut self, shared: &Shared<H>) -> Step {
        let mut progress = self.read_session(shared)?;
        let Phase::Session(core) = &mut self.phase else {
            return Ok(false);
        };
        let before = (core.inbuf.data().len(), core.server.poll_transmit().len());
        block_on(core.handle_input::<Mio>());
        // Progress is input consumed or replies queued; output merely still waiting for a
        // writable socket is not, or the loop would spin on a client that does not read.
        progress |= (core.inbuf.data().len(), core.server.poll_transmit().len()) != before;
        // Waiting for the client with nothing buffered: the input buffer goes back to the
        // thread's pool until the socket is readable again, so an idle connection holds none.
        if !self.readable {
            core.release_read_buffer();
        }
        // The core has taken what it can of the input; report the end of it.
        if self.eof && !core.server.is_closed() && core.server.wants_input() {
            core.handle_eof();
            progress = true;
        }

        // 4. Write out what the core and TLS have queued.
        let limit = core.write_limit();
        let wrote = flush(
            &self.socket,
            self.tls.as_deref_mut(),
            &mut core.server,
            &mut self.writable,
        )
        .map_err(|e| {
            if !is_disconnect(&e) {
                self.error = Some(e.to_string());
            }
            Closed
        })?;
        progress |= wrote;
        let pending = !core.server.poll_transmit().is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write());
        // Each write may take at most `limit`, so a client that never reads cannot hold the
        // session.
        if !pending {
            self.write_deadline = None;
        } else if wrote || self.write_deadline.is_none() {
            self.write_deadline = Some(now() + limit);
        }

        // 5. STARTTLS, once the 220 is out: the core has dropped plaintext pipelined after
        // the command, and so does the buffer.
        if core.server.wants_tls_handshake() && self.tls.is_none() && !pending {
            let all = core.inbuf.data().len();
            core.inbuf.consume(all);
            match new_tls(shared, &self.listener) {
                Some(tls) => {
                    self.tls = Some(tls);
                    self.handshake_deadline = Some(now() + shared.settings.tls_handshake_timeout);
                }
                None => core.server.handle_tls_failed(now()),
            }
            return Ok(true);
        }

        if core.server.is_closed() && !pending {
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
        let _ = self.socket.shutdown_write();
        if let Phase::Session(core) = self.phase {
            let error = self
                .error
                .as_ref()
                .map(|e| e as &(dyn std::fmt::Display + Sync));
            block_on(core.end(error));
        }
    }
}

fn new_tls<H>(shared: &Shared<H>, listener: &ListenerConfig) -> Option<Box<ServerConnection>> {
    // STARTTLS is only offered, and implicit TLS listeners only built, with a config.
    let config = listener.tls.as_ref()?;
    match ServerConnection::new(Arc::clone(config)) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            shared.tls_failed(&e);
            None
        }
    }
}

/// Reads TLS records while rustls wants them and the socket has them; returns whether
/// anything was read.
fn tls_read(
    mut socket: &Socket,
    tls: &mut ServerConnection,
    readable: &mut bool,
    eof: &mut bool,
) -> Result<bool, TlsFail> {
    let mut progress = false;
    while *readable && !*eof && tls.wants_read() {
        match tls.read_tls(&mut socket) {
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
    mut socket: &Socket,
    tls: &mut ServerConnection,
    writable: &mut bool,
) -> io::Result<bool> {
    let mut progress = false;
    while *writable && tls.wants_write() {
        match tls.write_tls(&mut socket) {
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
    mut socket: &Socket,
    tls: Option<&mut ServerConnection>,
    server: &mut Server,
    writable: &mut bool,
) -> io::Result<bool> {
    let mut progress = false;
    match tls {
        None => {
            while *writable && !server.poll_transmit().is_empty() {
                match socket.write(server.poll_transmit()) {
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
            let wrote = tls_write(socket, tls, writable)?;
            if !moved && !wrote {
                break;
            }
            progress = true;
        },
    }
    Ok(progress)
}
