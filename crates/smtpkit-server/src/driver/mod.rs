//! The connection driver, written once: admission (PROXY header, connection limits, implicit
//! TLS), the core's run loop with its deadlines, STARTTLS, the drain/abort lifecycle and the
//! log line at the end of each session.
//!
//! An async adapter supplies only what its runtime does differently:
//! - a [`Runtime`]: a timer that can be moved;
//! - a [`Transport`]: the connection's bytes (plain, then maybe TLS);
//! - a [`Spawn`]: where tasks run;
//! - an accept function per listener.
//!
//! Then [`run_server`] serves every listener until [`ServerHandle::shutdown`]. The mio adapter
//! has no futures of its own; it uses the runtime-free parts ([`Context::admit`],
//! [`SessionCore`], [`State`]) from its event loop.

pub(crate) mod session;
mod transcript;

use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use smtpkit_proto::{Server, ServerConfig};
use tracing::{Instrument, debug, info, info_span, warn};

use self::session::now;
pub use self::session::{ABORT_FLUSH, SessionCore};
use crate::endpoint::Endpoint;
use crate::handler::{Handler, SessionInfo};
use crate::lifecycle::{Lifecycle, State, TaskGuard};
use crate::limit::{ConnectionGuard, ConnectionLimiter};
use crate::listen::ListenerSettings;
use crate::metrics::Metrics;
use crate::proxy::{
    MAX_V2_HEADER, ProxyError, ProxyHeader, ProxyTlvs, parse_proxy_header, proxy_tlvs,
};
use crate::rdns::{ReverseLookup, ReverseName};
use crate::tls_info::TlsInfo;
use crate::{Error, ServerSettings};

/// After a failed accept (out of file descriptors, say), wait this long instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The timers of an async runtime.
pub trait Runtime: Send + Sync + 'static {
    /// A timer that fires once at its deadline and can be moved.
    type Timer: Future + Send;

    /// A timer firing at `at`.
    fn timer(at: Instant) -> Self::Timer;

    /// Moves `timer` to fire at `at` (also after it has fired).
    fn reset(timer: Pin<&mut Self::Timer>, at: Instant);
}

/// A bound listener of an async runtime.
pub trait Accept: Send + Sync + 'static {
    /// The connections it accepts.
    type Transport: Transport;

    /// The next connection, with the client's and the local address.
    fn accept(
        &self,
    ) -> impl Future<Output = io::Result<(Self::Transport, Endpoint, Endpoint)>> + Send;
}

/// Where an async adapter runs its tasks.
pub trait Spawn: Clone + Send + Sync + 'static {
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
}

/// A connection's bytes: plain TCP first, TLS after a handshake.
pub trait Transport: Send + Unpin + 'static {
    /// Reads into `buf`; `Ok(0)` is the end of input.
    fn poll_read(&mut self, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Flushes buffered output (TLS records).
    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>>;
    /// Closes the write side (with TLS `close_notify`).
    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>>;
    /// Bytes read past a PROXY header: the next reads (of TLS as well) must see them first.
    fn unread(&mut self, bytes: Vec<u8>);
    /// Runs the server side of a TLS handshake and continues encrypted, returning the
    /// handshake's facts ([`TlsInfo::from_connection`]); after an error the transport is
    /// closed (reads see the end, writes fail).
    fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> impl Future<Output = io::Result<TlsInfo>> + Send;
}

async fn read<T: Transport>(io: &mut T, buf: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| io.poll_read(cx, buf)).await
}

async fn write_all<T: Transport>(io: &mut T, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::future::poll_fn(|cx| io.poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Runs `fut` for at most `limit`.
async fn timeout<R: Runtime, T>(limit: Duration, fut: impl Future<Output = T>) -> io::Result<T> {
    session::until::<R, _>(Some(now() + limit), fut)
        .await
        .map_err(|()| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
}

/// A listener as the driver serves it: its settings and the core config built from them.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// What the listener was configured with.
    pub settings: ListenerSettings,
    /// The core config of its sessions.
    pub config: Arc<ServerConfig>,
    /// The TLS config, when TLS is on for this listener and the server has one.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ListenerConfig {
    /// Checks `listener` against the server's `settings` and `tls` config and builds its core
    /// config.
    pub fn new(
        settings: &ServerSettings,
        listener: ListenerSettings,
        tls: Option<&Arc<rustls::ServerConfig>>,
    ) -> Result<Self, Error> {
        let mut tls = tls.filter(|_| listener.tls).cloned();
        let needs_tls = listener.kind.implicit_tls() || listener.client_auth.is_some();
        if needs_tls && tls.is_none() {
            return Err(Error::MissingTls(listener.kind));
        }
        if let (Some(auth), Some(base)) = (&listener.client_auth, &tls) {
            tls = Some(crate::tls::with_client_auth(base, auth)?);
        }
        let config = settings.listener_config(&listener, tls.is_some())?;
        Ok(Self {
            settings: listener,
            config,
            tls,
        })
    }
}

/// What every accept loop and session of one server shares.
#[derive(Debug)]
pub struct Context<H> {
    /// The application.
    pub handler: H,
    /// The server-wide settings.
    pub settings: ServerSettings,
    /// One limiter for every listener.
    pub limiter: ConnectionLimiter,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Running, draining or aborting; and the tasks alive.
    pub lifecycle: Arc<Lifecycle>,
    /// The clients' reverse-DNS lookup, when the application gave one.
    pub reverse_dns: Option<Arc<dyn ReverseLookup>>,
}

impl<H> Context<H> {
    /// A context for a new server.
    pub fn new(handler: H, settings: ServerSettings, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            handler,
            limiter: settings.connection_limiter(),
            settings,
            metrics: metrics.unwrap_or_default(),
            lifecycle: Arc::new(Lifecycle::new()),
            reverse_dns: None,
        }
    }

    /// Lets `core`'s client send XCLIENT and XFORWARD if it is in the server's
    /// `xclient_networks` / `xforward_networks`.
    pub fn allow_front_end<S>(&self, core: &mut SessionCore<S>, peer: &Endpoint) {
        // A Unix-socket client has no address to trust.
        let Some(ip) = peer.ip() else { return };
        let s = &self.settings;
        let xclient = s.xclient_networks.contains(ip);
        let xforward = s.xforward_networks.contains(ip);
        if xclient || xforward {
            core.server.allow_front_end(xclient, xforward);
        }
    }

    /// The reverse-DNS lookup for `peer`, a client of `listener`, and its address: if the
    /// server has a lookup, the listener wants names, and the client has an IP address.
    pub fn reverse_lookup(
        &self,
        listener: &ListenerConfig,
        peer: &Endpoint,
    ) -> Option<(&dyn ReverseLookup, IpAddr)> {
        let lookup = self
            .reverse_dns
            .as_deref()
            .filter(|_| listener.settings.reverse_dns)?;
        Some((lookup, peer.ip()?))
    }

    /// Whether a connection from `peer` must be closed at once because the listener expects
    /// PROXY headers and `peer` is not a trusted proxy.
    pub fn untrusted_proxy(&self, listener: &ListenerConfig, peer: &Endpoint) -> bool {
        let untrusted = listener
            .settings
            .proxy
            .as_ref()
            .is_some_and(|p| peer.ip().is_none_or(|ip| !p.trusted.contains(ip)));
        if untrusted {
            debug!(%peer, "PROXY protocol: untrusted source, closing");
            self.metrics.connection_refused();
        }
        untrusted
    }

    /// A PROXY header could not be read; the connection is closed.
    pub fn proxy_failed(&self, peer: &Endpoint, why: &dyn std::fmt::Display) {
        debug!(%peer, error = %why, "PROXY protocol: no valid header, closing");
        self.metrics.connection_refused();
    }

    /// Counts a connection from `peer` (the real client, after any PROXY header) against
    /// the limits (the total only for a Unix-socket client). A refused connection gets the
    /// bytes to write before closing (none for implicit TLS, whose client cannot read
    /// plaintext).
    pub fn admit(
        &self,
        listener: &ListenerConfig,
        peer: &Endpoint,
    ) -> Result<ConnectionGuard, Vec<u8>> {
        let acquired = match peer.ip() {
            Some(ip) => self.limiter.try_acquire(ip),
            None => self.limiter.try_acquire_local(),
        };
        acquired.map_err(|e| {
            info!(%peer, reason = %e, "connection refused");
            self.metrics.connection_refused();
            if listener.settings.kind.implicit_tls() {
                Vec::new()
            } else {
                e.reply_bytes(&self.settings.hostname)
            }
        })
    }

    /// A TLS handshake failed or timed out.
    pub fn tls_failed(&self, why: &dyn std::fmt::Display) {
        debug!(error = %why, "TLS handshake failed");
        self.metrics.tls_handshake_failed();
    }
}

/// The reverse-DNS name of `peer`, bounded by the lookup's own timeout on `R`'s timer: a
/// lookup that does not finish in time is [`ReverseName::TempError`].
pub async fn reverse_name<R: Runtime>(lookup: &dyn ReverseLookup, peer: IpAddr) -> ReverseName {
    let start = now();
    let timer = R::timer(start + lookup.timeout());
    let name = lookup
        .reverse_name(
            peer,
            start,
            Box::pin(async move {
                timer.await;
            }),
        )
        .await;
    debug!(%peer, ?name, "reverse DNS");
    name
}

/// The client and server addresses a PROXY header reports (the socket's own otherwise).
pub fn proxied(header: &ProxyHeader, peer: Endpoint, local: Endpoint) -> (Endpoint, Endpoint) {
    match header {
        ProxyHeader::Proxied {
            source,
            destination,
            ..
        } => (Endpoint::Tcp(*source), Endpoint::Tcp(*destination)),
        _ => (peer, local),
    }
}

/// A peer that vanishes, with or without TLS close_notify, is an ordinary end of session.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Decrements the open-connection gauge however the connection ends.
#[derive(Debug)]
pub struct OpenGauge(Arc<Metrics>);

impl OpenGauge {
    /// Counts a connection as open.
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connection_opened();
        Self(Arc::clone(metrics))
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Serves one accepted connection to its end: PROXY header, limits, implicit TLS, then the
/// session. `task` keeps the server's shutdown waiting until the connection is closed.
///
/// This future is what an idle connection costs (its size is that of its largest state), so
/// every step that runs once or rarely (admission with its PROXY header and TLS handshake, the
/// session's start and end, a handler call) is boxed: it occupies memory only while it runs,
/// and the task itself holds little more than the session.
pub async fn serve<R: Runtime, H: Handler, T: Transport>(
    ctx: Arc<Context<H>>,
    listener: Arc<ListenerConfig>,
    io: T,
    peer: Endpoint,
    local: Endpoint,
    task: TaskGuard,
) {
    let _task = task;
    let _gauge = OpenGauge::new(&ctx.metrics);
    let Some((io, info, guard)) =
        Box::pin(admit::<R, H, T>(&ctx, &listener, io, peer, local)).await
    else {
        return;
    };
    let span =
        info_span!("smtp", id = %info.id, peer = %info.peer, listener = %listener.settings.kind);
    session::<R, H, T>(&ctx, &listener, io, info, guard)
        .instrument(span)
        .await;
}

/// Admits a connection: PROXY header, connection limits, implicit TLS. The transport, what
/// the session knows so far, and its slot under the limits; `None` if it was turned away.
async fn admit<R: Runtime, H: Handler, T: Transport>(
    ctx: &Context<H>,
    listener: &ListenerConfig,
    mut io: T,
    peer: Endpoint,
    local: Endpoint,
) -> Option<(T, Box<SessionInfo>, ConnectionGuard)> {
    if ctx.untrusted_proxy(listener, &peer) {
        return None;
    }
    let (peer, local, proxy) = match &listener.settings.proxy {
        None => (peer, local, None),
        Some(proxy) => match timeout::<R, _>(proxy.timeout, read_proxy_header(&mut io)).await {
            Ok(Ok((header, tlvs))) => {
                let (peer, local) = proxied(&header, peer, local);
                (peer, local, Some((header, tlvs)))
            }
            Ok(Err(e)) | Err(e) => {
                ctx.proxy_failed(&peer, &e);
                return None;
            }
        },
    };
    let guard = match ctx.admit(listener, &peer) {
        Ok(guard) => guard,
        Err(line) => {
            if !line.is_empty() {
                let _ = timeout::<R, _>(ABORT_FLUSH, async {
                    write_all(&mut io, &line).await?;
                    std::future::poll_fn(|cx| io.poll_close(cx)).await
                })
                .await;
            }
            return None;
        }
    };
    let mut info = SessionInfo::new(peer, local, listener.settings.kind);
    if let Some((header, tlvs)) = proxy {
        info = info.with_proxy(header, tlvs);
    }
    if let (true, Some(tls)) = (listener.settings.kind.implicit_tls(), &listener.tls) {
        let limit = ctx.settings.tls_handshake_timeout;
        match timeout::<R, _>(limit, io.start_tls(Arc::clone(tls))).await {
            Ok(Ok(facts)) => info = info.with_tls_info(facts),
            Ok(Err(e)) | Err(e) => {
                ctx.tls_failed(&e);
                return None;
            }
        }
    }
    // Before the greeting, as Postfix does: the connect handler decides with the name.
    if let Some((lookup, ip)) = ctx.reverse_lookup(listener, &info.peer) {
        info = info.with_reverse_name(reverse_name::<R>(lookup, ip).await);
    }
    Some((io, Box::new(info), guard))
}

/// An admitted connection's session: the handler's connect, the run loop, the end.
/// `info` comes boxed: an argument is stored in the future for its whole life.
async fn session<R: Runtime, H: Handler, T: Transport>(
    ctx: &Context<H>,
    listener: &ListenerConfig,
    io: T,
    info: Box<SessionInfo>,
    guard: ConnectionGuard,
) {
    let state = ctx.lifecycle.state();
    let config = Arc::clone(&listener.config);
    let peer = info.peer.clone();
    let start = SessionCore::start(
        &ctx.handler,
        &ctx.metrics,
        config,
        *info,
        Some(guard),
        state,
    );
    let mut core = Box::pin(start).await;
    ctx.allow_front_end(&mut core, &peer);
    // Borrowed, not moved: a moved-in session would be stored twice in the future.
    let error = run_session::<R, H, T>(ctx, listener, io, &mut core).await;
    Box::pin(core.end(error.as_ref().map(|e| e as &(dyn std::fmt::Display + Sync)))).await;
}

/// Reads a PROXY header and its TLVs; the bytes read past it go back to the transport.
async fn read_proxy_header<T: Transport>(
    io: &mut T,
) -> io::Result<(ProxyHeader, Option<ProxyTlvs>)> {
    let mut buf = [0u8; MAX_V2_HEADER];
    let mut len = 0;
    // Every header is decided within MAX_V2_HEADER octets, so this ends in as many reads.
    while len < buf.len() {
        let n = read(io, &mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        match parse_proxy_header(&buf[..len]) {
            Ok(Some((header, used))) => {
                io.unread(buf[used..len].to_vec());
                return Ok((header, proxy_tlvs(&buf[..used])));
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        ProxyError::TooLong,
    ))
}

/// What ended one wait of the run loop.
enum Wake {
    /// The server's lifecycle state changed.
    State,
    /// A read finished.
    Read(io::Result<usize>),
    /// The timer fired.
    Timeout,
}

/// The core's run loop (see the `smtpkit_proto` crate docs) over `io`, until the session is
/// over and the socket closed; the I/O error that ended it, if one did.
async fn run_session<R: Runtime, H: Handler, T: Transport>(
    ctx: &Context<H>,
    listener: &ListenerConfig,
    mut io: T,
    core: &mut SessionCore<H::Session>,
) -> Option<io::Error> {
    let lifecycle = &ctx.lifecycle;
    // Listen before reading the state, so a change in between still wakes us.
    let mut changes = lifecycle.listen();
    core.apply_state(lifecycle.state());
    // One timer for the whole session. The idle deadline moves forward with every command,
    // and re-arming the runtime's timer each time costs more than the session's own work
    // (15% of throughput on smol). So the timer only moves earlier: if it fires before the
    // core's deadline, `handle_timeout` does nothing and it is armed again.
    let far = now() + Duration::from_secs(86400 * 365 * 30);
    let mut timer = pin!(R::timer(far));
    let mut timer_at: Option<Instant> = None;
    let mut error: Option<io::Error> = None;

    // Each round reads, times out, or changes state; every one of those moves the session
    // towards its end, and the core's deadlines bound the whole.
    loop {
        // 2. Handle every event the buffered input yields.
        core.handle_input::<R>().await;
        // 4. Write everything out before blocking on a read.
        let limit = core.write_limit();
        if let Err(e) = flush::<R, T>(&mut io, &mut core.server, limit).await {
            error = Some(e);
            break;
        }
        // 5. STARTTLS: the core has dropped any plaintext pipelined after the command.
        if core.server.wants_tls_handshake() {
            let all = core.inbuf.data().len();
            core.inbuf.consume(all);
            match start_tls::<R, H, T>(ctx, listener, &mut io).await {
                Some(facts) => core.secured(facts).await,
                None => core.server.handle_tls_failed(now()),
            }
            continue;
        }
        if core.server.is_closed() {
            break;
        }
        // 1. Wait for input (if the core wants it), the next deadline, or a lifecycle change.
        let deadline = core.server.poll_timeout();
        // The wait favours state changes and reads, so a peer that keeps input flowing would
        // never let the timer win: check the deadline here too.
        if deadline.is_some_and(|at| at <= now()) {
            core.handle_timeout();
            continue;
        }
        if let Some(at) = deadline
            && timer_at.is_none_or(|armed| at < armed)
        {
            R::reset(timer.as_mut(), at);
            timer_at = Some(at);
        }
        let watching = core.seen_state() != State::Abort;
        let wants_input = core.server.wants_input();
        let state_changed = async {
            if watching {
                (&mut changes).await;
                Wake::State
            } else {
                future::pending().await
            }
        };
        let read = async {
            if wants_input {
                // A connection waiting for its client holds no input buffer: a read that
                // would block gives it back (the next wake-up takes a fresh one).
                let read = std::future::poll_fn(|cx| {
                    let polled = io.poll_read(cx, core.read_buffer());
                    if polled.is_pending() {
                        core.release_read_buffer();
                    }
                    polled
                });
                Wake::Read(read.await)
            } else {
                future::pending().await
            }
        };
        let timed_out = async {
            timer.as_mut().await;
            Wake::Timeout
        };
        match future::or(state_changed, future::or(read, timed_out)).await {
            Wake::State => {
                changes = lifecycle.listen();
                core.apply_state(lifecycle.state());
            }
            Wake::Read(Ok(0)) => core.handle_eof(),
            Wake::Read(Ok(n)) => core.inbuf.commit(n),
            Wake::Read(Err(e)) if is_disconnect(&e) => core.handle_eof(),
            Wake::Read(Err(e)) => {
                error = Some(e);
                break;
            }
            Wake::Timeout => {
                // A fired timer stays idle until it is set again.
                timer_at = None;
                core.handle_timeout();
            }
        }
    }

    // Last gasp: whatever is queued (a 421, say) goes out, then the socket closes.
    if error.is_none() {
        let _ = flush::<R, T>(&mut io, &mut core.server, ABORT_FLUSH).await;
        let _ = timeout::<R, _>(ABORT_FLUSH, std::future::poll_fn(|cx| io.poll_close(cx))).await;
    }
    drop(io);
    error
}

/// Writes all of `poll_transmit`; each write may take at most `limit`, so a client that
/// never reads cannot hold the session.
async fn flush<R: Runtime, T: Transport>(
    io: &mut T,
    server: &mut Server,
    limit: Duration,
) -> io::Result<()> {
    while !server.poll_transmit().is_empty() {
        let write = std::future::poll_fn(|cx| io.poll_write(cx, server.poll_transmit()));
        let n = timeout::<R, _>(limit, write).await??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        server.advance_transmit(n);
    }
    timeout::<R, _>(limit, std::future::poll_fn(|cx| io.poll_flush(cx))).await?
}

/// Runs the STARTTLS handshake; its facts, or `None` when it failed.
async fn start_tls<R: Runtime, H, T: Transport>(
    ctx: &Context<H>,
    listener: &ListenerConfig,
    io: &mut T,
) -> Option<TlsInfo> {
    let Some(tls) = &listener.tls else {
        // The core offers STARTTLS only on listeners with TLS.
        warn!("STARTTLS accepted on a listener without TLS");
        return None;
    };
    let limit = ctx.settings.tls_handshake_timeout;
    // Boxed: the handshake's state is large and short-lived (see `serve`).
    match timeout::<R, _>(limit, Box::pin(io.start_tls(Arc::clone(tls)))).await {
        Ok(Ok(facts)) => Some(facts),
        Ok(Err(e)) | Err(e) => {
            ctx.tls_failed(&e);
            None
        }
    }
}

/// Accepts connections on one listener until the server stops running; each one is served
/// in a task of its own.
async fn accept_loop<R: Runtime, H: Handler, A: Accept>(
    ctx: Arc<Context<H>>,
    listener: Arc<ListenerConfig>,
    addr: Endpoint,
    acceptor: A,
    spawner: impl Spawn,
) {
    let lifecycle = &ctx.lifecycle;
    info!(%addr, listener = %listener.settings.kind, "listening");
    // `or` favours the accept, so a flood of connections must not hide a shutdown: the
    // state is checked before each accept too.
    while lifecycle.state() == State::Running {
        let stopped = async {
            lifecycle.stopped().await;
            None
        };
        match future::or(async { Some(acceptor.accept().await) }, stopped).await {
            None => break,
            Some(Ok((io, peer, local))) => {
                // Spawned as it is: wrapping it in an `async move` block would store the
                // future twice (once captured, once awaited), doubling each connection's task.
                spawner.spawn(serve::<R, H, A::Transport>(
                    Arc::clone(&ctx),
                    Arc::clone(&listener),
                    io,
                    peer,
                    local,
                    lifecycle.task(),
                ));
            }
            Some(Err(e)) => {
                warn!(error = %e, %addr, "accept failed");
                R::timer(now() + ACCEPT_BACKOFF).await;
            }
        }
    }
    info!(%addr, "listener closed");
}

/// A handle on a running async server: its addresses and counters, and its shutdown;
/// cheap to clone. `R` is the adapter's [`Runtime`].
#[derive(Debug)]
pub struct ServerHandle<R> {
    lifecycle: Arc<Lifecycle>,
    endpoints: Vec<Endpoint>,
    addrs: Vec<SocketAddr>,
    metrics: Arc<Metrics>,
    runtime: PhantomData<fn() -> R>,
}

impl<R> Clone for ServerHandle<R> {
    fn clone(&self) -> Self {
        Self {
            lifecycle: Arc::clone(&self.lifecycle),
            endpoints: self.endpoints.clone(),
            addrs: self.addrs.clone(),
            metrics: Arc::clone(&self.metrics),
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> ServerHandle<R> {
    /// A handle on the server whose tasks `lifecycle` tracks, listening on `endpoints`.
    pub fn new(lifecycle: Arc<Lifecycle>, endpoints: Vec<Endpoint>, metrics: Arc<Metrics>) -> Self {
        Self {
            lifecycle,
            addrs: endpoints.iter().filter_map(Endpoint::tcp).collect(),
            endpoints,
            metrics,
            runtime: PhantomData,
        }
    }

    /// The bound TCP addresses, in the order their listeners were added (Unix-socket
    /// listeners left out: see [`endpoints`](Self::endpoints)).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every listener's address or socket path, in the order the listeners were added.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops every listener at once; once they are closed, lets sessions in a transaction
    /// finish it for up to `grace` (counted from the call), then closes every remaining
    /// session with `421 4.3.2`. Resolves when all sessions are closed.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        let lifecycle = Arc::clone(&self.lifecycle);
        async move {
            lifecycle.close();
            let done = async {
                lifecycle.idle().await;
                true
            };
            let expired = async {
                R::timer(now() + grace).await;
                false
            };
            if !future::or(done, expired).await {
                lifecycle.advance(State::Abort);
                lifecycle.idle().await;
            }
        }
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        self.lifecycle.is_stopped()
    }
}

/// Serves `listeners` (each with its bound address and acceptor) until a shutdown has closed every
/// listener and session.
pub async fn run_server<R: Runtime, H: Handler, A: Accept>(
    ctx: Arc<Context<H>>,
    listeners: Vec<(Arc<ListenerConfig>, Endpoint, A)>,
    spawner: impl Spawn,
) {
    for (listener, addr, acceptor) in listeners {
        let task = ctx.lifecycle.task();
        // Taken before the loop is spawned, so that a shutdown in between waits for it.
        let open = ctx.lifecycle.listener();
        let accept =
            accept_loop::<R, H, A>(Arc::clone(&ctx), listener, addr, acceptor, spawner.clone());
        spawner.spawn(async move {
            // The loop owns the acceptor: the socket is closed when the loop returns.
            accept.await;
            drop(open);
            drop(task);
        });
    }
    ctx.lifecycle.stopped().await;
    ctx.lifecycle.idle().await;
    info!("server stopped");
}

/// Bytes read ahead of a transport (past a PROXY header), handed out before anything else.
#[derive(Debug, Default)]
pub struct ReadAhead {
    bytes: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    /// These bytes, to be read first.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Copies as many of the bytes left as fit into `buf`; `None` once all were taken.
    pub fn take(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let n = buf.len().min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.bytes.len() {
            // Free the read-ahead once replayed.
            *self = Self::default();
        }
        Some(n)
    }
}
