//! A blocking SMTP server on [`mio`] event loops, built on the [`smtpkit_proto`] core: no async
//! runtime.
//!
//! The server runs N event-loop threads (default: the available parallelism, at most 4) and
//! one accept thread. The accept thread hands new connections out round-robin through a
//! channel and a [`mio::Waker`]. Each loop owns a [`mio::Poll`], a slab of connections and a
//! deadline heap fed by the core's `poll_timeout`; it waits for socket readiness or the
//! earliest deadline. A connection asks for readable events only while the core wants input
//! (or TLS must read) and for writable events only while it has bytes to send. TLS (STARTTLS
//! and implicit TLS) is `rustls::ServerConnection` driven through its sans-IO calls.
//!
//! The application writes plain synchronous code against
//! [`BlockingHandler`]/[`BlockingSession`] (the same methods as the async
//! [`Handler`]/[`Session`], as `fn`s) and wraps it in [`Blocking`]. An async `Handler` works
//! too: its futures are polled on the loop thread by a minimal executor, so they may wait on
//! channels or locks but not on a runtime's reactor.
//!
//! **Handler calls run on the event-loop thread.** A slow handler (a synchronous database
//! write, say) stalls every other session of that loop while it runs, as in any mio server.
//! Keep handlers quick, add loops with `Builder::threads`, or hand slow work to a worker
//! pool and answer later from a queue the handler waits on.
//!
//! ```no_run
//! use smtpkit_mio::{Blocking, BlockingHandler, BlockingSession, Decision, ListenerKind, Reply};
//! use smtpkit_mio::{SessionInfo, SmtpServer};
//!
//! struct Sink;
//! struct Conn(Vec<u8>);
//!
//! impl BlockingHandler for Sink {
//!     type Session = Conn;
//!     fn connect(&self, _info: &SessionInfo) -> Result<Conn, Reply<'static>> {
//!         Ok(Conn(Vec::new()))
//!     }
//! }
//!
//! impl BlockingSession for Conn {
//!     fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
//!         self.0.extend_from_slice(chunk);
//!         Ok(())
//!     }
//!     fn data_end(&mut self, info: &SessionInfo) -> Decision {
//!         println!("{}: {} octets", info.id, self.0.len());
//!         Decision::Accept
//!     }
//!     fn reset(&mut self, _: &SessionInfo) {
//!         self.0.clear();
//!     }
//! }
//!
//! # fn main() -> Result<(), smtpkit_mio::Error> {
//! let server = SmtpServer::builder(Blocking(Sink))
//!     .listener("127.0.0.1:2525".parse::<std::net::SocketAddr>().unwrap(), ListenerKind::Smtp)
//!     .build()?;
//! let handle = server.start()?;
//! // Another thread (a signal handler, say) calls this to stop:
//! handle.shutdown(std::time::Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```
//!
//! Shutdown is graceful: the listeners close, idle sessions get `421 4.3.2`, sessions in a
//! transaction may finish it (then get `421 4.3.2`), and after the grace period every session
//! still open gets `421 4.3.2` and is closed; then the threads are joined.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

// The crate README's examples are compiled and run as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod accept;
mod block;
pub mod client;
mod conn;
mod control;
mod socket;
mod worker;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use smtpkit_server::driver::Context;
use smtpkit_server::{Adapter, Parts, WithThreads};
use tracing::info;

pub use smtpkit_server::blocking::{Blocking, BlockingHandler, BlockingSession};
pub use smtpkit_server::{AUTH_MECHANISMS, Mechanism, auth};
pub use smtpkit_server::{
    CloseReason, ConnectionLimiter, Credentials, Decision, Endpoint, EnhancedCode, Envelope, Error,
    ForwardPath, Handler, HelloVerb, ListenerKind, ListenerSettings, ListenerSource, Metrics,
    MetricsSnapshot, Parameters, ProxyHeader, ProxySettings, ProxyTlvs, Recipient, Reply,
    ReplyCode, ReversePath, ServerSettings, Session, SessionInfo, TlsInfo, TrustedNetworks,
};
pub use smtpkit_server::{proxy, tls};

use crate::control::Control;
use smtpkit_server::State;

/// The most event loops `Builder::threads` picks by default: beyond that, SMTP sessions
/// are bound by the handler and the disk, not by the loops.
const DEFAULT_MAX_THREADS: usize = 4;

/// What every event loop shares: the driver's context.
pub(crate) type Shared<H> = Context<H>;

/// Builds an [`SmtpServer`]; see [`SmtpServer::builder`].
pub type Builder<H> = smtpkit_server::Builder<H, Mio>;

/// The mio adapter's build options: the number of event loops.
#[derive(Debug, Default)]
pub struct Mio {
    /// Default: the available parallelism, at most [`DEFAULT_MAX_THREADS`].
    threads: Option<NonZeroUsize>,
}

impl WithThreads for Mio {
    fn set_threads(&mut self, threads: NonZeroUsize) {
        self.threads = Some(threads);
    }
}

impl<H: Handler> Adapter<H> for Mio {
    type Build = Result<SmtpServer<H>, Error>;

    fn build(parts: Result<Parts<H>, Error>, options: Self) -> Self::Build {
        let parts = parts?;
        let listeners = parts
            .listeners
            .into_iter()
            .map(|(config, socket, addr)| accept::Listener {
                listener: socket::ListenSocket::new(socket, &addr),
                addr,
                config,
            })
            .collect();
        let threads = options.threads.map_or_else(
            || {
                thread::available_parallelism()
                    .map_or(1, NonZeroUsize::get)
                    .min(DEFAULT_MAX_THREADS)
            },
            NonZeroUsize::get,
        );
        let shared = Arc::new(parts.context);
        let control = Arc::new(Control::new(Arc::clone(&shared.lifecycle)));
        Ok(SmtpServer {
            shared,
            control,
            listeners,
            threads,
        })
    }
}

/// A bound server, ready to [`start`](Self::start) or [`run`](Self::run).
pub struct SmtpServer<H> {
    shared: Arc<Shared<H>>,
    control: Arc<Control>,
    listeners: Vec<accept::Listener>,
    threads: usize,
}

impl<H> std::fmt::Debug for SmtpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field(
                "listeners",
                &self
                    .listeners
                    .iter()
                    .map(|l| (l.addr.to_string(), l.config.settings.kind))
                    .collect::<Vec<_>>(),
            )
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> SmtpServer<H> {
    /// A builder serving `handler`. For synchronous code, pass `Blocking(handler)`.
    pub fn builder(handler: H) -> Builder<H> {
        Builder::new(handler)
    }

    /// A handle to stop the server and read its addresses and counters; valid before and
    /// after [`start`](Self::start).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: Arc::clone(&self.control),
            addrs: self.local_addrs(),
            endpoints: self.endpoints(),
            metrics: Arc::clone(&self.shared.metrics),
        }
    }

    /// The bound TCP addresses, in the order their listeners were added (Unix-socket
    /// listeners left out: see `endpoints`).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.addr.tcp()).collect()
    }

    /// Every listener's address or socket path, in the order the listeners were added.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.listeners.iter().map(|l| l.addr.clone()).collect()
    }

    /// Starts the event-loop threads and the accept thread, and returns at once.
    pub fn start(self) -> Result<ServerHandle, Error> {
        let handle = self.handle();
        let control = &self.control;
        let mut workers = Vec::with_capacity(self.threads);
        for i in 0..self.threads {
            workers.push(worker::Worker::new(
                Arc::clone(&self.shared),
                Arc::clone(control),
                i,
            )?);
        }
        let acceptor = accept::Acceptor::new(
            self.listeners,
            workers.iter().map(worker::Worker::inbox).collect(),
            Arc::clone(control),
        )?;
        for l in acceptor.listeners() {
            info!(addr = %l.addr, listener = %l.config.settings.kind, "listening");
        }
        for (i, w) in workers.into_iter().enumerate() {
            control.spawn(format!("smtp-loop-{i}"), move || w.run())?;
        }
        control.spawn("smtp-accept".into(), move || acceptor.run())?;
        Ok(handle)
    }

    /// Serves on the calling thread's behalf until [`ServerHandle::shutdown`] (called from
    /// another thread, with a handle from [`handle`](Self::handle)) has closed every session.
    pub fn run(self) -> Result<(), Error> {
        self.start()?.wait();
        Ok(())
    }
}

/// Controls a running server from any thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    control: Arc<Control>,
    addrs: Vec<SocketAddr>,
    endpoints: Vec<Endpoint>,
    metrics: Arc<Metrics>,
}

impl ServerHandle {
    /// The bound TCP addresses, in the order their listeners were added (Unix-socket
    /// listeners left out: see `endpoints`).
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

    /// Stops accepting at once; once the listeners are closed, lets sessions in a transaction
    /// finish it for up to `grace`, then closes every remaining session with `421 4.3.2`.
    /// Returns when every session is closed and every thread of the server has been joined.
    pub fn shutdown(&self, grace: Duration) {
        self.control.close();
        if !self.control.wait_stopped(Some(grace)) {
            self.control.set_state(State::Abort);
        }
        self.wait();
    }

    /// Blocks until the server has stopped (after a [`shutdown`](Self::shutdown) from
    /// another thread) and joins its threads.
    pub fn wait(&self) {
        self.control.wait_stopped(None);
        self.control.join();
        info!("server stopped");
    }

    /// Whether every thread of the server has ended.
    pub fn is_stopped(&self) -> bool {
        self.control.is_stopped()
    }
}
