//! The hickory-resolver implementation of [`smtpkit_server::rdns::Resolver`] (feature `rdns`).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Instant;
//! use smtpkit_server::rdns::{ReverseDns, ReverseDnsSettings};
//! use smtpkit_tokio::rdns::HickoryResolver;
//!
//! let settings = ReverseDnsSettings::default();
//! // The system's nameservers (/etc/resolv.conf), or `HickoryResolver::new(&[addr], timeout)`.
//! let rdns = ReverseDns::new(HickoryResolver::from_system(settings.timeout)?, settings);
//! let ip = "192.0.2.1".parse().unwrap();
//! let name = rdns.lookup(ip, Instant::now(), tokio::time::sleep(rdns.timeout())).await;
//! println!("from [{ip}] ({name})");
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use smtpkit_server::rdns::{AddressFamily, Answer, LookupError, Resolver};
// What a server that looks its clients up needs, in one place.
pub use smtpkit_server::rdns::{ReverseDns, ReverseDnsSettings, ReverseLookup, ReverseName};

/// A [`Resolver`] over hickory-resolver's tokio resolver.
///
/// Its lookups need tokio's reactor. A server on smol or mio gives it a runtime to run them on
/// with [`on_runtime`](Self::on_runtime); their executors then only wait for the answers.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
    runtime: Option<tokio::runtime::Handle>,
}

impl HickoryResolver {
    /// A resolver asking the nameservers at `nameservers` (ip:port, UDP with TCP for truncated
    /// answers), each query giving up after `timeout`.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> io::Result<Self> {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        Self::with_config(ResolverConfig::from_name_servers(servers), timeout)
    }

    /// A resolver asking the system's nameservers (`/etc/resolv.conf`).
    pub fn from_system(timeout: Duration) -> io::Result<Self> {
        let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(io_error)?;
        Self::with_config(config, timeout)
    }

    /// A resolver with hickory's own `config`; `timeout` bounds each query.
    pub fn with_config(config: ResolverConfig, timeout: Duration) -> io::Result<Self> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        // One try: the caller's timer bounds the whole check, and a retry would only outlast it.
        opts.attempts = 1;
        Self::with_options(config, opts)
    }

    /// A resolver with hickory's own `config` and `opts`, as an application that configures
    /// hickory itself (smtpd's `[dns]` section) builds them.
    pub fn with_options(config: ResolverConfig, opts: ResolverOpts) -> io::Result<Self> {
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(io_error)?;
        Ok(Self {
            inner,
            runtime: None,
        })
    }

    /// The same resolver running every lookup as a task on `runtime`, so a server on another
    /// executor (smol, mio) can use it: the answer wakes the waiting session from the
    /// runtime's thread.
    #[must_use]
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }
}

/// Runs `lookup` on `runtime` when there is one, here otherwise.
async fn run_on<T: Send + 'static>(
    runtime: Option<&tokio::runtime::Handle>,
    lookup: impl Future<Output = Result<T, LookupError>> + Send + 'static,
) -> Result<T, LookupError> {
    match runtime {
        None => lookup.await,
        Some(rt) => {
            // Dropping a JoinHandle leaves the task running: abort it when the session's
            // timer ends the wait first.
            let mut task = AbortOnDrop(rt.spawn(lookup));
            match (&mut task.0).await {
                Ok(answer) => answer,
                Err(e) => Err(LookupError::Failed(e.to_string())),
            }
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver")
            .field("options", self.inner.options())
            .finish_non_exhaustive()
    }
}

impl Resolver for HickoryResolver {
    async fn lookup_ptr(&self, ip: IpAddr) -> Result<Answer<String>, LookupError> {
        run_on(self.runtime.as_ref(), lookup_ptr(self.inner.clone(), ip)).await
    }

    async fn lookup_ip(
        &self,
        name: &str,
        family: AddressFamily,
    ) -> Result<Answer<IpAddr>, LookupError> {
        let lookup = lookup_ip(self.inner.clone(), name.to_owned(), family);
        run_on(self.runtime.as_ref(), lookup).await
    }
}

async fn lookup_ptr(resolver: TokioResolver, ip: IpAddr) -> Result<Answer<String>, LookupError> {
    {
        let lookup = resolver
            .reverse_lookup(Name::from(ip))
            .await
            .map_err(lookup_error)?;
        let records = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => Some(ptr.0.to_ascii()),
                _ => None,
            })
            .collect();
        answer(&lookup, records)
    }
}

async fn lookup_ip(
    resolver: TokioResolver,
    name: String,
    family: AddressFamily,
) -> Result<Answer<IpAddr>, LookupError> {
    {
        // Absolute: a PTR name is never relative to a search domain.
        let name = Name::from_ascii(&name)
            .map(|mut n| {
                n.set_fqdn(true);
                n
            })
            .map_err(|e| LookupError::Failed(e.to_string()))?;
        let lookup = match family {
            AddressFamily::V4 => resolver.ipv4_lookup(name).await,
            AddressFamily::V6 => resolver.ipv6_lookup(name).await,
        }
        .map_err(lookup_error)?;
        let records = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        answer(&lookup, records)
    }
}

fn answer<T>(lookup: &Lookup, records: Vec<T>) -> Result<Answer<T>, LookupError> {
    if records.is_empty() {
        // Only CNAMEs (or other types) came back: no records of the kind asked for.
        return Err(LookupError::NotFound { ttl: None });
    }
    // hickory caches too, and counts the TTL down: what is left of it is what we may keep.
    let ttl = lookup
        .valid_until()
        .saturating_duration_since(Instant::now());
    Ok(Answer { records, ttl })
}

fn lookup_error(e: NetError) -> LookupError {
    match e {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(no)) => {
            LookupError::NotFound {
                ttl: no.negative_ttl.map(|s| Duration::from_secs(s.into())),
            }
        }
        NetError::Timeout => LookupError::Timeout,
        e => LookupError::Failed(e.to_string()),
    }
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}
