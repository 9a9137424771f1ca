//! [`Builder`]: what every adapter's server is built from, collected once: the handler, the
//! settings, the listeners, TLS and the counters. Each adapter names it with its own marker
//! type (`smtpkit_tokio::Builder<H>` is `Builder<H, smtpkit_tokio::Tokio>`), which says how
//! to [`build`](Builder::build) and what else may be set.

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use crate::driver::{Context, ListenerConfig};
use crate::endpoint::Endpoint;
use crate::listen::{ListenerSettings, SocketFile, bind_unix_listener};
use crate::metrics::Metrics;
use crate::rdns::ReverseLookup;
use crate::{Error, ServerSettings};

/// Where a listener comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerSource {
    /// Bind this address (see [`bind_listener`](crate::bind_listener)).
    Addr(SocketAddr),
    /// An already bound std listener (from socket activation, say, or a runtime's listener
    /// turned back with `into_std`); it is set non-blocking.
    Std(std::net::TcpListener),
    /// Bind a Unix-domain socket at `path`, with permissions `mode` (`0o660`, say; the umask's
    /// otherwise); see [`bind_unix_listener`]. The file is removed when the server stops.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its permission bits.
        mode: Option<u32>,
    },
    /// An already bound Unix-domain listener (socket activation); it is set non-blocking,
    /// and its file is left in place (its owner made it).
    StdUnix(UnixListener),
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

impl From<UnixListener> for ListenerSource {
    fn from(l: UnixListener) -> Self {
        Self::StdUnix(l)
    }
}

impl ListenerSource {
    /// A Unix-domain socket to bind at `path`, with permissions `mode` when given.
    pub fn unix(path: impl Into<PathBuf>, mode: Option<u32>) -> Self {
        Self::Unix {
            path: path.into(),
            mode,
        }
    }

    /// Whether the listener is a Unix-domain socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix { .. } | Self::StdUnix(_))
    }

    fn bind(self) -> std::io::Result<(BoundListener, Endpoint)> {
        match self {
            Self::Addr(addr) => tcp(crate::bind_listener(addr)?),
            Self::Std(l) => tcp(l),
            Self::Unix { path, mode } => {
                let (l, file) = bind_unix_listener(&path, mode)?;
                Ok((BoundListener::Unix(l, Some(file)), Endpoint::unix(path)))
            }
            Self::StdUnix(l) => {
                l.set_nonblocking(true)?;
                let path = l.local_addr()?.as_pathname().map(Arc::from);
                Ok((BoundListener::Unix(l, None), Endpoint::Unix(path)))
            }
        }
    }

    /// Why these listener settings cannot be served on this source, if they cannot.
    fn check(&self, settings: &ListenerSettings) -> Result<(), Error> {
        if !self.is_unix() {
            return Ok(());
        }
        // A PROXY header names an internet client and a local MTA on a socket file has none;
        // implicit TLS on a local socket protects nothing, and STARTTLS stays available.
        if settings.proxy.is_some() {
            return Err(Error::UnixListener("the PROXY protocol"));
        }
        if settings.kind.implicit_tls() {
            return Err(Error::UnixListener("implicit TLS"));
        }
        Ok(())
    }
}

fn tcp(l: std::net::TcpListener) -> std::io::Result<(BoundListener, Endpoint)> {
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    Ok((BoundListener::Tcp(l), Endpoint::Tcp(addr)))
}

/// A bound, non-blocking listener, for an adapter to register with its runtime.
#[derive(Debug)]
pub enum BoundListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix-domain listener and, when the server bound it, its file (removed when dropped:
    /// the adapter keeps it as long as it accepts).
    Unix(UnixListener, Option<SocketFile>),
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
    pub listeners: Vec<(Arc<ListenerConfig>, BoundListener, Endpoint)>,
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
    /// Adds a listener: an address to bind or a bound listener (TCP or a Unix-domain socket,
    /// see [`ListenerSource`]), and its kind or its [`ListenerSettings`] (TLS on or off, PROXY).
    /// A Unix-domain listener with PROXY or implicit TLS is refused by `build` with
    /// [`Error::UnixListener`].
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
                source.check(&listener)?;
                let config = ListenerConfig::new(&settings, listener, tls.as_ref())?;
                let (socket, addr) = source.bind()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProxySettings;
    use crate::settings::ListenerKind;

    fn parts(source: ListenerSource, settings: ListenerSettings) -> Result<Parts<()>, Error> {
        Builder::<(), ()>::new(())
            .listener(source, settings)
            .parts()
            .0
    }

    #[test]
    fn unix_listeners_refuse_proxy_and_implicit_tls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let proxied = ListenerSettings::new(ListenerKind::Lmtp)
            .proxy(ProxySettings::new("127.0.0.0/8".parse().unwrap()));
        let err = parts(ListenerSource::unix(&path, None), proxied).unwrap_err();
        assert!(
            matches!(err, Error::UnixListener("the PROXY protocol")),
            "{err}"
        );
        let smtps = ListenerSettings::new(ListenerKind::Smtps);
        let err = parts(ListenerSource::unix(&path, None), smtps).unwrap_err();
        assert!(matches!(err, Error::UnixListener("implicit TLS")), "{err}");
        // Nothing was bound for a refused configuration.
        assert!(!path.exists());

        let ok = parts(
            ListenerSource::unix(&path, Some(0o600)),
            ListenerKind::Lmtp.into(),
        );
        let listeners = ok.unwrap().listeners;
        assert!(matches!(listeners[0].1, BoundListener::Unix(_, Some(_))));
        assert_eq!(listeners[0].2, Endpoint::unix(&path));
        drop(listeners);
        assert!(!path.exists(), "the socket file goes with the listener");
    }
}
