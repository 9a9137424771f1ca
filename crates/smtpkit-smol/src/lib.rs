//! A smol adapter for the [`smtpkit_proto`] SMTP server core: listeners, timers, TLS.
//!
//! The application implements [`Handler`] and
//! [`Session`] from `smtpkit-server` (re-exported here); this crate does the
//! IO. Each connection is one task running the core's loop: read only when the core wants
//! input, wake up for its deadline, write every reply out before reading again, and upgrade to
//! TLS on STARTTLS.
//!
//! It is the same server as `smtpkit-tokio`, on `async-io`/`async-net` instead of tokio: the
//! builder, the handle and the handler API match, so moving an application between the two
//! changes only the runtime lines.
//!
//! ```no_run
//! use smtpkit_smol::{Decision, Handler, ListenerKind, Reply, Session, SessionInfo, SmtpServer};
//!
//! struct Sink;
//! struct Conn(Vec<u8>);
//!
//! impl Handler for Sink {
//!     type Session = Conn;
//!     async fn connect(&self, _info: &SessionInfo) -> Result<Conn, Reply<'static>> {
//!         Ok(Conn(Vec::new()))
//!     }
//! }
//!
//! impl Session for Conn {
//!     async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
//!         self.0.extend_from_slice(chunk);
//!         Ok(())
//!     }
//!     async fn data_end(&mut self, info: &SessionInfo) -> Decision {
//!         println!("{}: {} octets", info.id, self.0.len());
//!         Decision::Accept
//!     }
//!     async fn reset(&mut self, _: &SessionInfo) {
//!         self.0.clear();
//!     }
//! }
//!
//! # fn main() -> Result<(), smtpkit_smol::Error> {
//! smol::block_on(async {
//!     let server = SmtpServer::builder(Sink)
//!         .listener("127.0.0.1:2525".parse::<std::net::SocketAddr>().unwrap(), ListenerKind::Smtp)
//!         .build()
//!         .await?;
//!     let handle = server.spawn();
//!     smol::Timer::after(std::time::Duration::from_secs(3600)).await;
//!     handle.shutdown(std::time::Duration::from_secs(30)).await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Tasks run on smol's global executor (one thread unless `SMOL_THREADS` says otherwise), or
//! on the application's own [`smol::Executor`] given to [`Builder::executor`].
//!
//! Shutdown is graceful: listeners close, idle sessions get `421 4.3.2`, sessions in a
//! transaction may finish it (then get `421 4.3.2`), and after the grace period every session
//! still open is closed with `421 4.3.2`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod conn;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_io::Timer;
use async_net::TcpListener;
use event_listener::{Event, EventListener};
use futures_lite::future;
use futures_rustls::TlsAcceptor;
use smol::Executor;
use smol::channel;
use smtpkit_proto::ServerConfig;
use smtpkit_proto::server::ConfigError;
use tracing::{info, warn};

pub use smtpkit_server::{
    CloseReason, ConnectionLimiter, Credentials, Decision, EnhancedCode, ForwardPath, Handler,
    ListenerKind, Metrics, MetricsSnapshot, Parameters, ProxySettings, Reply, ReplyCode,
    ReversePath, ServerSettings, Session, SessionInfo, TrustedNetworks,
};
pub use smtpkit_server::{proxy, tls};

/// Why a server could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring a listener failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The settings do not make a valid core config.
    #[error("invalid settings: {0}")]
    Config(#[from] ConfigError),
    /// An implicit TLS listener was added without a TLS config.
    #[error("{0} listener needs a TLS config")]
    MissingTls(ListenerKind),
    /// No listener was added.
    #[error("no listener")]
    NoListener,
}

/// Where a listener comes from.
#[derive(Debug)]
pub enum ListenerSource {
    /// Bind this address.
    Addr(SocketAddr),
    /// An already bound std listener (from socket activation, say); it is set non-blocking.
    Std(std::net::TcpListener),
    /// An already bound `async-net` (`smol::net`) listener.
    Smol(TcpListener),
}

impl From<SocketAddr> for ListenerSource {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl From<std::net::TcpListener> for ListenerSource {
    fn from(l: std::net::TcpListener) -> Self {
        Self::Std(l)
    }
}

impl From<TcpListener> for ListenerSource {
    fn from(l: TcpListener) -> Self {
        Self::Smol(l)
    }
}

/// The server's lifecycle, broadcast to every accept loop and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Running,
    /// Stop accepting; sessions finish their transaction, then get 421.
    Draining,
    /// The grace period is over: every session gets 421 now.
    Abort,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Draining,
            _ => Self::Abort,
        }
    }
}

/// A small value many tasks watch: tokio's `watch` channel, on an atomic and an [`Event`].
#[derive(Debug)]
pub(crate) struct Watch {
    value: AtomicU8,
    changed: Event,
}

impl Watch {
    fn new(value: u8) -> Self {
        Self {
            value: AtomicU8::new(value),
            changed: Event::new(),
        }
    }

    fn get(&self) -> u8 {
        self.value.load(Ordering::Acquire)
    }

    /// Sets the value and wakes every waiter.
    fn set(&self, value: u8) {
        self.value.store(value, Ordering::Release);
        self.changed.notify(usize::MAX);
    }

    /// Sets the value to `to` only if it is `from`; true if it changed.
    fn replace(&self, from: u8, to: u8) -> bool {
        let changed = self
            .value
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.changed.notify(usize::MAX);
        }
        changed
    }

    /// A listener that fires on the next change. Read the value after creating it, so a change
    /// between the read and the wait cannot be missed.
    pub(crate) fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// Resolves once `done` holds for the value.
    async fn wait_for(&self, done: impl Fn(u8) -> bool) {
        loop {
            if done(self.get()) {
                return;
            }
            let listener = self.listen();
            if done(self.get()) {
                return;
            }
            listener.await;
        }
    }
}

/// The server's lifecycle state, as a [`Watch`].
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: Watch,
    /// 1 once the accept loops and all sessions are gone.
    done: Watch,
}

impl Lifecycle {
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.get())
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.state.listen()
    }
}

/// Where the server's tasks run.
#[derive(Clone)]
enum Spawner {
    Global,
    Executor(Arc<Executor<'static>>),
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Global => "Global",
            Self::Executor(_) => "Executor",
        })
    }
}

impl Spawner {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self {
            Self::Global => smol::spawn(task).detach(),
            Self::Executor(ex) => ex.spawn(task).detach(),
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) settings: ServerSettings,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) limiter: ConnectionLimiter,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    spawner: Spawner,
}

/// Builds an [`SmtpServer`]; see [`SmtpServer::builder`].
#[must_use = "call build()"]
pub struct Builder<H> {
    handler: Arc<H>,
    settings: ServerSettings,
    listeners: Vec<(ListenerSource, ListenerKind)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<Arc<Metrics>>,
    spawner: Spawner,
}

impl<H> std::fmt::Debug for Builder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .field("listeners", &self.listeners)
            .field("tls", &self.tls.is_some())
            .field("executor", &self.spawner)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Builder<H> {
    /// Adds a listener: an address to bind or a bound listener.
    pub fn listener(mut self, source: impl Into<ListenerSource>, kind: ListenerKind) -> Self {
        self.listeners.push((source.into(), kind));
        self
    }

    /// The settings shared by all listeners (defaults otherwise).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The TLS config for STARTTLS and implicit TLS (see [`tls`] to load one).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Counters to update, if the application wants to share them (a fresh set otherwise).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs the accept loops and sessions on `executor` instead of smol's global executor.
    /// The application runs the executor (on as many threads as it likes).
    pub fn executor(mut self, executor: Arc<Executor<'static>>) -> Self {
        self.spawner = Spawner::Executor(executor);
        self
    }

    /// Binds the listeners and checks the configuration.
    pub async fn build(self) -> Result<SmtpServer<H>, Error> {
        if self.listeners.is_empty() {
            return Err(Error::NoListener);
        }
        let has_tls = self.tls.is_some();
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (source, kind) in self.listeners {
            if kind.implicit_tls() && !has_tls {
                return Err(Error::MissingTls(kind));
            }
            let config = self.settings.server_config(kind, has_tls)?;
            let listener = match source {
                ListenerSource::Addr(addr) => {
                    TcpListener::try_from(smtpkit_server::bind_listener(addr)?)?
                }
                // `Async::new` inside makes the socket non-blocking.
                ListenerSource::Std(l) => TcpListener::try_from(l)?,
                ListenerSource::Smol(l) => l,
            };
            listeners.push(Listener {
                addr: listener.local_addr()?,
                listener,
                kind,
                config,
            });
        }
        let lifecycle = Arc::new(Lifecycle {
            state: Watch::new(State::Running as u8),
            done: Watch::new(0),
        });
        let shared = Arc::new(Shared {
            handler: self.handler,
            limiter: ConnectionLimiter::new(
                self.settings.max_connections,
                self.settings.max_per_ip,
            ),
            settings: self.settings,
            tls: self.tls.map(TlsAcceptor::from),
            metrics: self.metrics.unwrap_or_default(),
            lifecycle,
            spawner: self.spawner,
        });
        Ok(SmtpServer { shared, listeners })
    }
}

struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    kind: ListenerKind,
    config: Arc<ServerConfig>,
}

/// A bound server, ready to [`run`](Self::run) or [`spawn`](Self::spawn).
pub struct SmtpServer<H> {
    shared: Arc<Shared<H>>,
    listeners: Vec<Listener>,
}

impl<H> std::fmt::Debug for SmtpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field(
                "listeners",
                &self
                    .listeners
                    .iter()
                    .map(|l| (l.addr, l.kind))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<H: Handler> SmtpServer<H> {
    /// A builder serving `handler`.
    pub fn builder(handler: H) -> Builder<H> {
        Builder {
            handler: Arc::new(handler),
            settings: ServerSettings::default(),
            listeners: Vec::new(),
            tls: None,
            metrics: None,
            spawner: Spawner::Global,
        }
    }

    /// A handle to stop the server and read its addresses and counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            lifecycle: Arc::clone(&self.shared.lifecycle),
            addrs: self.listeners.iter().map(|l| l.addr).collect(),
            metrics: Arc::clone(&self.shared.metrics),
        }
    }

    /// The bound addresses, in the order the listeners were added.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Serves until [`ServerHandle::shutdown`] and the end of every session.
    pub async fn run(self) {
        let (alive_tx, alive_rx) = channel::bounded::<()>(1);
        for l in self.listeners {
            info!(addr = %l.addr, listener = %l.kind, "listening");
            self.shared
                .spawner
                .spawn(accept_loop(Arc::clone(&self.shared), l, alive_tx.clone()));
        }
        drop(alive_tx);
        // Nothing is ever sent: `recv` fails once every accept loop and every connection task
        // has dropped its sender.
        let _ = alive_rx.recv().await;
        self.shared.lifecycle.done.set(1);
        info!("server stopped");
    }

    /// Runs the server in a task (on the builder's executor, or smol's global one).
    pub fn spawn(self) -> ServerHandle {
        let handle = self.handle();
        let spawner = self.shared.spawner.clone();
        spawner.spawn(self.run());
        handle
    }
}

async fn accept_loop<H: Handler>(shared: Arc<Shared<H>>, l: Listener, alive: channel::Sender<()>) {
    let lifecycle = &shared.lifecycle;
    // `or` favours the accept, so a flood of connections must not hide a shutdown.
    while lifecycle.state() == State::Running {
        let stopped = async {
            lifecycle
                .state
                .wait_for(|s| State::from_u8(s) != State::Running)
                .await;
            None
        };
        let accepted = future::or(async { Some(l.listener.accept().await) }, stopped).await;
        match accepted {
            None => break,
            Some(Ok((tcp, peer))) => {
                let task = conn::serve(
                    Arc::clone(&shared),
                    tcp,
                    peer,
                    l.kind,
                    Arc::clone(&l.config),
                    alive.clone(),
                );
                shared.spawner.spawn(task);
            }
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, addr = %l.addr, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
    info!(addr = %l.addr, "listener closed");
}

/// Controls a running server; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    lifecycle: Arc<Lifecycle>,
    addrs: Vec<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl ServerHandle {
    /// The bound addresses, in the order the listeners were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting at once, lets sessions in a transaction finish it for up to `grace`,
    /// then closes every remaining session with `421 4.3.2`. Resolves when all sessions are
    /// closed.
    pub fn shutdown(&self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        let lifecycle = Arc::clone(&self.lifecycle);
        async move {
            lifecycle
                .state
                .replace(State::Running as u8, State::Draining as u8);
            let done = async {
                lifecycle.done.wait_for(|d| d == 1).await;
                true
            };
            let expired = async {
                Timer::after(grace).await;
                false
            };
            if !future::or(done, expired).await {
                lifecycle.state.set(State::Abort as u8);
                lifecycle.done.wait_for(|d| d == 1).await;
            }
        }
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        self.lifecycle.done.get() == 1
    }
}
