//! A tokio adapter for the [`smtpkit_proto`] SMTP server core: listeners, timers, TLS.
//!
//! The application implements [`Handler`] and
//! [`Session`] from `smtpkit-server` (re-exported here); this crate does the
//! IO. Each connection is one task running the core's loop: read only when the core wants
//! input, wake up for its deadline, write every reply out before reading again, and upgrade to
//! TLS on STARTTLS.
//!
//! ```no_run
//! use smtpkit_tokio::{Decision, Handler, ListenerKind, Reply, Session, SessionInfo, SmtpServer};
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
//! # async fn run() -> Result<(), smtpkit_tokio::Error> {
//! let server = SmtpServer::builder(Sink)
//!     .listener("127.0.0.1:2525".parse::<std::net::SocketAddr>().unwrap(), ListenerKind::Smtp)
//!     .build()
//!     .await?;
//! let handle = server.spawn();
//! tokio::signal::ctrl_c().await.ok();
//! handle.shutdown(std::time::Duration::from_secs(30)).await;
//! # Ok(())
//! # }
//! ```
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
use std::time::Duration;

use smtpkit_proto::ServerConfig;
use smtpkit_proto::server::ConfigError;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
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
    /// An already bound tokio listener.
    Tokio(TcpListener),
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
        Self::Tokio(l)
    }
}

/// The server's lifecycle, broadcast to every accept loop and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    /// Stop accepting; sessions finish their transaction, then get 421.
    Draining,
    /// The grace period is over: every session gets 421 now.
    Abort,
}

/// What every connection task shares.
pub(crate) struct Shared<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) settings: ServerSettings,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) limiter: ConnectionLimiter,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state: watch::Sender<State>,
}

/// Builds an [`SmtpServer`]; see [`SmtpServer::builder`].
#[derive(Debug)]
#[must_use = "call build()"]
pub struct Builder<H> {
    handler: Arc<H>,
    settings: ServerSettings,
    listeners: Vec<(ListenerSource, ListenerKind)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<Arc<Metrics>>,
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
                    TcpListener::from_std(smtpkit_server::bind_listener(addr)?)?
                }
                ListenerSource::Std(l) => {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)?
                }
                ListenerSource::Tokio(l) => l,
            };
            listeners.push(Listener {
                addr: listener.local_addr()?,
                listener,
                kind,
                config,
            });
        }
        let (state, _) = watch::channel(State::Running);
        let (done_tx, done_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            handler: self.handler,
            limiter: ConnectionLimiter::new(
                self.settings.max_connections,
                self.settings.max_per_ip,
            ),
            settings: self.settings,
            tls: self.tls.map(TlsAcceptor::from),
            metrics: self.metrics.unwrap_or_default(),
            state,
        });
        Ok(SmtpServer {
            shared,
            listeners,
            done_tx,
            done_rx,
        })
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
    done_tx: watch::Sender<bool>,
    done_rx: watch::Receiver<bool>,
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
        }
    }

    /// A handle to stop the server and read its addresses and counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.shared.state.clone(),
            done: self.done_rx.clone(),
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
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        for l in self.listeners {
            info!(addr = %l.addr, listener = %l.kind, "listening");
            tokio::spawn(accept_loop(Arc::clone(&self.shared), l, alive_tx.clone()));
        }
        drop(alive_tx);
        // Nothing is ever sent: `recv` returns `None` once every accept loop and every
        // connection task has dropped its sender.
        let _ = alive_rx.recv().await;
        self.done_tx.send_replace(true);
        info!("server stopped");
    }

    /// Runs the server in a task.
    pub fn spawn(self) -> ServerHandle {
        let handle = self.handle();
        tokio::spawn(self.run());
        handle
    }
}

async fn accept_loop<H: Handler>(shared: Arc<Shared<H>>, l: Listener, alive: mpsc::Sender<()>) {
    let mut state = shared.state.subscribe();
    loop {
        tokio::select! {
            accepted = l.listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let task = conn::serve(
                        Arc::clone(&shared),
                        tcp,
                        peer,
                        l.kind,
                        Arc::clone(&l.config),
                        alive.clone(),
                    );
                    tokio::spawn(task);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, addr = %l.addr, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // The guard `wait_for` returns must not live across the accept arm's await.
            _ = async { state.wait_for(|s| *s != State::Running).await.map(|_| ()) } => break,
        }
    }
    info!(addr = %l.addr, "listener closed");
}

/// Controls a running server; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    state: watch::Sender<State>,
    done: watch::Receiver<bool>,
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
        let state = self.state.clone();
        let mut done = self.done.clone();
        async move {
            state.send_if_modified(|s| {
                let change = *s == State::Running;
                if change {
                    *s = State::Draining;
                }
                change
            });
            let finished =
                tokio::time::timeout(grace, async { done.wait_for(|d| *d).await.map(|_| ()) })
                    .await;
            if finished.is_err() {
                state.send_replace(State::Abort);
                let _ = done.wait_for(|d| *d).await.map(|_| ());
            }
        }
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.done.borrow()
    }
}
