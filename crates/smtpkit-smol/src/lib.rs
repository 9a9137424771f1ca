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
//! on the application's own [`smol::Executor`] given to `Builder::executor`.
//!
//! The connection logic (admission, the run loop, deadlines, STARTTLS, shutdown) is
//! `smtpkit_server::driver`, shared with `smtpkit-tokio`; this crate supplies async-io's
//! sockets and timers, futures-rustls and task spawning.
//!
//! Shutdown is graceful: listeners close, idle sessions get `421 4.3.2`, sessions in a
//! transaction may finish it (then get `421 4.3.2`), and after the grace period every session
//! still open is closed with `421 4.3.2`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

// The crate README's examples are compiled and run as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod client;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_io::Timer;
use async_net::TcpListener;
use async_net::unix::UnixListener;
use smol::Executor;
use smtpkit_server::driver::{self, Accept, Context, ListenerConfig, Spawn};
use smtpkit_server::{Adapter, BoundListener, Parts, SocketFile, WithExecutor};

pub use smtpkit_server::{AUTH_MECHANISMS, Mechanism, auth};
pub use smtpkit_server::{
    CloseReason, ConnectionLimiter, Credentials, Decision, Endpoint, EnhancedCode, Envelope, Error,
    ForwardPath, Handler, HelloVerb, ListenerKind, ListenerSettings, ListenerSource, Metrics,
    MetricsSnapshot, Parameters, ProxyHeader, ProxySettings, ProxyTlvs, Recipient, Reply,
    ReplyCode, ReversePath, ServerSettings, Session, SessionInfo, TlsInfo, TrustedNetworks,
};
// `reader` is already the futures-io form of the message reader.
pub use smtpkit_server::{proxy, reader, tls};

use crate::stream::{Socket, Stream};

/// Controls a running server; cheap to clone. See [`driver::ServerHandle`].
pub type ServerHandle = driver::ServerHandle<Smol>;

/// The smol adapter: async-io's timers for the shared driver, the executor, and how a
/// [`Builder`] builds.
#[derive(Debug, Default)]
pub struct Smol {
    spawner: Spawner,
}

impl driver::Runtime for Smol {
    type Timer = Timer;

    fn timer(at: Instant) -> Timer {
        Timer::at(at)
    }

    fn reset(timer: Pin<&mut Timer>, at: Instant) {
        timer.get_mut().set_at(at);
    }
}

/// Where the server's tasks run.
#[derive(Clone, Default)]
enum Spawner {
    #[default]
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

impl Spawn for Spawner {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self {
            Self::Global => smol::spawn(task).detach(),
            Self::Executor(ex) => ex.spawn(task).detach(),
        }
    }
}

enum Acceptor {
    Tcp(TcpListener),
    /// The file goes when the acceptor does, at shutdown.
    Unix {
        listener: UnixListener,
        local: Endpoint,
        _file: Option<SocketFile>,
    },
}

impl Acceptor {
    fn new(socket: BoundListener, local: &Endpoint) -> io::Result<Self> {
        // `try_from` registers the socket with the reactor.
        Ok(match socket {
            BoundListener::Tcp(l) => Self::Tcp(TcpListener::try_from(l)?),
            BoundListener::Unix(l, file) => Self::Unix {
                listener: UnixListener::try_from(l)?,
                local: local.clone(),
                _file: file,
            },
        })
    }
}

impl Accept for Acceptor {
    type Transport = Stream;

    async fn accept(&self) -> io::Result<(Stream, Endpoint, Endpoint)> {
        match self {
            Self::Tcp(l) => {
                let (tcp, peer) = l.accept().await?;
                // Replies are small and latency-bound; do not let Nagle hold them back.
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(peer);
                Ok((Stream::new(Socket::Tcp(tcp)), peer.into(), local.into()))
            }
            Self::Unix {
                listener, local, ..
            } => {
                let (unix, peer) = listener.accept().await?;
                let peer = Endpoint::Unix(peer.as_pathname().map(Into::into));
                Ok((Stream::new(Socket::Unix(unix)), peer, local.clone()))
            }
        }
    }
}

/// Builds an [`SmtpServer`]; see [`SmtpServer::builder`].
pub type Builder<H> = smtpkit_server::Builder<H, Smol>;

impl<H: Handler> Adapter<H> for Smol {
    type Build = std::future::Ready<Result<SmtpServer<H>, Error>>;

    fn build(parts: Result<Parts<H>, Error>, options: Self) -> Self::Build {
        std::future::ready(parts.and_then(|parts| {
            let mut listeners = Vec::with_capacity(parts.listeners.len());
            for (config, socket, addr) in parts.listeners {
                let acceptor = Acceptor::new(socket, &addr)?;
                listeners.push((config, addr, acceptor));
            }
            Ok(SmtpServer {
                ctx: Arc::new(parts.context),
                listeners,
                spawner: options.spawner,
            })
        }))
    }
}

impl WithExecutor for Smol {
    type Executor = Arc<Executor<'static>>;

    fn set_executor(&mut self, executor: Arc<Executor<'static>>) {
        self.spawner = Spawner::Executor(executor);
    }
}

/// A bound server, ready to [`run`](Self::run) or [`spawn`](Self::spawn).
pub struct SmtpServer<H> {
    ctx: Arc<Context<H>>,
    listeners: Vec<(Arc<ListenerConfig>, Endpoint, Acceptor)>,
    spawner: Spawner,
}

impl<H> std::fmt::Debug for SmtpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("addrs", &self.local_addrs())
            .field("executor", &self.spawner)
            .finish_non_exhaustive()
    }
}

impl<H> SmtpServer<H> {
    /// The bound TCP addresses, in the order their listeners were added (Unix-socket
    /// listeners left out: see `endpoints`).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.1.tcp()).collect()
    }

    /// Every listener's address or socket path, in the order the listeners were added.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.listeners.iter().map(|l| l.1.clone()).collect()
    }
}

impl<H: Handler> SmtpServer<H> {
    /// A builder serving `handler`.
    pub fn builder(handler: H) -> Builder<H> {
        Builder::new(handler)
    }

    /// A handle to stop the server and read its addresses and counters.
    pub fn handle(&self) -> ServerHandle {
        let lifecycle = Arc::clone(&self.ctx.lifecycle);
        ServerHandle::new(lifecycle, self.endpoints(), Arc::clone(&self.ctx.metrics))
    }

    /// Serves until [`ServerHandle::shutdown`] and the end of every session.
    pub async fn run(self) {
        driver::run_server::<Smol, H, Acceptor>(self.ctx, self.listeners, self.spawner).await;
    }

    /// Runs the server in a task (on the builder's executor, or smol's global one).
    pub fn spawn(self) -> ServerHandle {
        let handle = self.handle();
        let spawner = self.spawner.clone();
        spawner.spawn(self.run());
        handle
    }
}
