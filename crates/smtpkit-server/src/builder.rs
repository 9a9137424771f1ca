//! [`Builder`]: what every adapter's server is built from, collected once: the handler, the
//! settings, the listeners, TLS and the counters. Each adapter names it with its own marker
//! type (`smtpkit_tokio::Builder<H>` is `Builder<H, smtpkit_tokio::Tokio>`), which says how
//! to [`build`](Builder::build) and what else may be set.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::driver::{Context, ListenerConfig};
use crate::listen::ListenerSettings;
use crate::metrics::Metrics;
use crate::rdns::ReverseLookup;
use crate::{Error, ServerSettings};

/// Where a listener comes from.
#[derive(Debug)]
pub enum ListenerSource {
    /// Bind this address (see [`bind_listener`](crate::bind_listener)).
    Addr(SocketAddr),
    /// An already bound std listener (from socket activation, say, or a runtime's listener
    /// turned back with `into_std`); it is set non-blocking.
    Std(std::net::TcpListener),
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

impl ListenerSource {
    fn bind(self) -> std::io::Result<std::net::TcpListener> {
        let l = match self {
            Self::Addr(addr) => crate::bind_listener(addr)?,
            Self::Std(l) => l,
        };
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

/// An adapter: how a [`Builder`] becomes its server.
pub trait Adapter<H>: Sized {
    /// What [`Builder::build`] returns: the server, or a future of it.
    type Build;

    /// Builds the server from the checked, bound parts.
    fn build(parts: Result<Parts<H>, Error>, options: Self) -> Self::Build;
}

/// An adapter with a choice of executor.
pub trait WithExecutor {
    /// The executor type.
    type Executor;
    /// Runs the server's tasks on `executor`.
    fn set_executor(&mut self, executor: Self::Executor);
}

/// An adapter with a number of event-loop threads.
pub trait WithThreads {
    /// Sets the number of event-loop threads.
    fn set_threads(&mut self, threads: std::num::NonZeroUsize);
}

/// A server's parts, checked and bound: its context and each listener's config with its
/// socket.
#[derive(Debug)]
pub struct Parts<H> {
    /// What every task shares.
    pub context: Context<H>,
    /// Each listener: its config, its bound socket (non-blocking), its address.
    pub listeners: Vec<(Arc<ListenerConfig>, std::net::TcpListener, SocketAddr)>,
}

/// Builds a server; see each adapter's `SmtpServer::builder`.
#[derive(Debug)]
#[must_use = "call build()"]
pub struct Builder<H, A> {
    handler: H,
    settings: ServerSettings,
    listeners: Vec<(ListenerSource, ListenerSettings)>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<Arc<Metrics>>,
    reverse_dns: Option<Arc<dyn ReverseLookup>>,
    options: A,
}

impl<H, A: Default> Builder<H, A> {
    /// A builder serving `handler`.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            settings: ServerSettings::default(),
            listeners: Vec::new(),
            tls: None,
            metrics: None,
            reverse_dns: None,
            options: A::default(),
        }
    }
}

impl<H, A> Builder<H, A> {
    /// Adds a listener: an address to bind or a bound listener, and its kind or its
    /// [`ListenerSettings`] (TLS on or off, PROXY).
    pub fn listener(
        mut self,
        source: impl Into<ListenerSource>,
        settings: impl Into<ListenerSettings>,
    ) -> Self {
        self.listeners.push((source.into(), settings.into()));
        self
    }

    /// The settings shared by all listeners (defaults otherwise).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The TLS config for STARTTLS and implicit TLS (see [`tls`](crate::tls) to load one).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Counters to update, if the application wants to share them (a fresh set otherwise).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Looks every client up in reverse DNS (with forward confirmation) before its greeting,
    /// on the listeners that have [`ListenerSettings::reverse_dns`] on (the default); the
    /// outcome is [`SessionInfo::reverse_name`](crate::SessionInfo::reverse_name). The lookup
    /// is bounded by `lookup.timeout()` on the adapter's timer. Usually an
    /// `Arc<`[`ReverseDns`](crate::rdns::ReverseDns)`>` over a [`Resolver`](crate::rdns::Resolver).
    ///
    /// The resolver's futures are polled by the adapter's executor: with smol or mio, a
    /// resolver that needs tokio's reactor must run its lookups on a tokio runtime of its
    /// own (`smtpkit_tokio::rdns::HickoryResolver::on_runtime`).
    pub fn reverse_dns(mut self, lookup: Arc<dyn ReverseLookup>) -> Self {
        self.reverse_dns = Some(lookup);
        self
    }

    /// Checks the configuration and binds the listeners.
    fn parts(self) -> (Result<Parts<H>, Error>, A) {
        let Self {
            handler,
            settings,
            listeners,
            tls,
            metrics,
            reverse_dns,
            options,
        } = self;
        let parts = (|| {
            if listeners.is_empty() {
                return Err(Error::NoListener);
            }
            let mut bound = Vec::with_capacity(listeners.len());
            for (source, listener) in listeners {
                let config = ListenerConfig::new(&settings, listener, tls.as_ref())?;
                let socket = source.bind()?;
                let addr = socket.local_addr()?;
                bound.push((Arc::new(config), socket, addr));
            }
            let mut context = Context::new(handler, settings, metrics);
            context.reverse_dns = reverse_dns;
            Ok(Parts {
                context,
                listeners: bound,
            })
        })();
        (parts, options)
    }
}

impl<H, A: Adapter<H>> Builder<H, A> {
    /// Checks the configuration, binds the listeners and makes the server.
    pub fn build(self) -> A::Build {
        let (parts, options) = self.parts();
        A::build(parts, options)
    }
}

impl<H, A: WithExecutor> Builder<H, A> {
    /// Runs the accept loops and sessions on `executor` instead of the runtime's default.
    /// The application runs the executor (on as many threads as it likes).
    pub fn executor(mut self, executor: A::Executor) -> Self {
        self.options.set_executor(executor);
        self
    }
}

impl<H, A: WithThreads> Builder<H, A> {
    /// The number of event-loop threads.
    pub fn threads(mut self, threads: std::num::NonZeroUsize) -> Self {
        self.options.set_threads(threads);
        self
    }
}
