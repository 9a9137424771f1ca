//! The client's reverse-DNS name, forward-confirmed (FCrDNS), with a timeout and a cache.
//!
//! A PTR record alone proves nothing: whoever controls the address's reverse zone can name it
//! `mail.bank.example`. The name counts only when it resolves back to the address ("forward
//! confirmed", as Postfix's `client_name` and RFC 8601's `iprev` check it). [`ReverseDns`] does
//! that over any [`Resolver`]: PTR names of the address, then A or AAAA of each name (at most
//! [`MAX_PTR_NAMES`]), and remembers the outcome per address.
//!
//! Nothing here needs a runtime: the resolver brings its own IO, and the caller brings a timer
//! future for the timeout (`tokio::time::sleep(rdns.timeout())` in a tokio server).
//! `smtpkit-tokio`'s `rdns` feature has the hickory-resolver implementation.

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use lru::LruCache;
use smtpkit_proto::address::Domain;

/// PTR names checked per address at most, as SPF bounds its `ptr` mechanism (RFC 7208 5.5): an
/// address with hundreds of PTR records must not cost hundreds of lookups.
pub const MAX_PTR_NAMES: usize = 10;

/// The DNS lookups reverse DNS needs. Implementations do their own IO; they need not time out
/// on their own, since [`ReverseDns::lookup`] bounds the whole check.
pub trait Resolver: Send + Sync + 'static {
    /// The PTR names of `ip` (the `in-addr.arpa` / `ip6.arpa` name of the address).
    fn lookup_ptr(
        &self,
        ip: IpAddr,
    ) -> impl Future<Output = Result<Answer<String>, LookupError>> + Send;

    /// The addresses of `name` in `family`: its A records for [`AddressFamily::V4`], AAAA for
    /// [`AddressFamily::V6`].
    fn lookup_ip(
        &self,
        name: &str,
        family: AddressFamily,
    ) -> impl Future<Output = Result<Answer<IpAddr>, LookupError>> + Send;
}

/// Which address records a forward lookup asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

impl AddressFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// A positive answer: the records and how long they may be cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    /// The records (PTR names, or addresses), never empty for a useful answer.
    pub records: Vec<T>,
    /// The smallest TTL of the records.
    pub ttl: Duration,
}

/// Why a lookup gave no records.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// The name does not exist, or has no records of the type: a definite answer.
    NotFound {
        /// How long the absence may be cached (RFC 2308: the SOA's minimum), when known.
        ttl: Option<Duration>,
    },
    /// No answer in time.
    Timeout,
    /// Any other failure (SERVFAIL, REFUSED, network errors): it may work next time.
    Failed(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { .. } => f.write_str("no records"),
            Self::Timeout => f.write_str("timed out"),
            Self::Failed(why) => write!(f, "lookup failed: {why}"),
        }
    }
}

impl std::error::Error for LookupError {}

/// The outcome of reverse DNS for one address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReverseName {
    /// A PTR name of the address that resolves back to it (FCrDNS passed): lowercase, without
    /// the trailing dot.
    Confirmed(String),
    /// The address has PTR names, but none of them resolves back to it. The first name, for
    /// logs only: it is whatever the address's owner chose to say.
    Unconfirmed(String),
    /// The address has no PTR record (or only names that are not host names).
    NotFound,
    /// The check could not finish: a timeout or a failing nameserver. Postfix answers mail
    /// that depends on the name with a 4xx in this case, never a 5xx.
    TempError,
}

impl ReverseName {
    /// The forward-confirmed name, if there is one. This is the only name policy should use.
    pub fn confirmed(&self) -> Option<&str> {
        match self {
            Self::Confirmed(name) => Some(name),
            _ => None,
        }
    }
}

/// The confirmed name, or `unknown` (Postfix's word), as it goes in a `Received:` header:
/// `from helo (name [ip])`.
impl fmt::Display for ReverseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.confirmed().unwrap_or("unknown"))
    }
}

/// How [`ReverseDns`] times out and caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseDnsSettings {
    /// The whole check (PTR and forward lookups) gives up after this and yields
    /// [`ReverseName::TempError`]. Default 5 s: one try of the system resolver (`timeout:5` in
    /// resolv.conf(5)), so a dead nameserver delays a greeting by no more than that.
    pub timeout: Duration,
    /// Addresses remembered at most; 0 turns the cache off. Default 10,000: a few megabytes,
    /// more than the distinct clients a busy server sees in an hour.
    pub cache_capacity: usize,
    /// The longest any outcome is cached, whatever the TTLs say. Default 1 hour.
    pub max_ttl: Duration,
    /// How long a missing PTR is cached when the answer carried no SOA. Default 5 minutes (the
    /// common SOA minimum).
    pub negative_ttl: Duration,
    /// How long a [`ReverseName::TempError`] is cached. Default 30 s: a client that reconnects
    /// right after a 4xx does not wait out another timeout, and a DNS hiccup is soon forgotten.
    pub error_ttl: Duration,
}

impl Default for ReverseDnsSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            cache_capacity: 10_000,
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            error_ttl: Duration::from_secs(30),
        }
    }
}

/// Reverse DNS with forward confirmation over a [`Resolver`], shared by all sessions of a
/// server (`Arc<ReverseDns<R>>`).
pub struct ReverseDns<R> {
    resolver: R,
    settings: ReverseDnsSettings,
    cache: Option<Mutex<LruCache<IpAddr, Cached>>>,
}

#[derive(Clone, Debug)]
struct Cached {
    name: ReverseName,
    expires: Instant,
}

impl<R: Resolver> ReverseDns<R> {
    /// Reverse DNS over `resolver`.
    pub fn new(resolver: R, settings: ReverseDnsSettings) -> Self {
        let cache =
            NonZeroUsize::new(settings.cache_capacity).map(|n| Mutex::new(LruCache::new(n)));
        Self {
            resolver,
            settings,
            cache,
        }
    }

    /// The configured timeout: the caller's timer future for [`lookup`](Self::lookup) should
    /// fire after it.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The resolver.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }

    /// The reverse name of `ip` at `now`: from the cache, or looked up and cached. The lookup
    /// gives up when `timer` completes (make it fire after [`timeout`](Self::timeout)), with
    /// [`ReverseName::TempError`].
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, from a dual-stack socket) is checked
    /// as the IPv4 address it is.
    pub async fn lookup(
        &self,
        ip: IpAddr,
        now: Instant,
        timer: impl Future<Output = ()>,
    ) -> ReverseName {
        let ip = ip.to_canonical();
        if let Some(name) = self.cached(ip, now) {
            return name;
        }
        let (name, ttl) = {
            let mut check = pin!(self.check(ip));
            let mut timer = pin!(timer);
            // The check is polled first, so an answer that is ready wins over a timer that
            // fired at the same time.
            poll_fn(|cx| {
                if let Poll::Ready(done) = check.as_mut().poll(cx) {
                    return Poll::Ready(done);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready((ReverseName::TempError, self.settings.error_ttl))
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        if let Some(cache) = &self.cache {
            let ttl = ttl.min(self.settings.max_ttl);
            if !ttl.is_zero() {
                lock(cache).put(
                    ip,
                    Cached {
                        name: name.clone(),
                        expires: now + ttl,
                    },
                );
            }
        }
        name
    }

    fn cached(&self, ip: IpAddr, now: Instant) -> Option<ReverseName> {
        let mut cache = lock(self.cache.as_ref()?);
        match cache.get(&ip) {
            Some(hit) if hit.expires > now => Some(hit.name.clone()),
            Some(_) => {
                cache.pop(&ip);
                None
            }
            None => None,
        }
    }

    /// FCrDNS for `ip`, and how long its outcome may be cached.
    async fn check(&self, ip: IpAddr) -> (ReverseName, Duration) {
        let ptr = match self.resolver.lookup_ptr(ip).await {
            Ok(answer) => answer,
            Err(LookupError::NotFound { ttl }) => {
                return (
                    ReverseName::NotFound,
                    ttl.unwrap_or(self.settings.negative_ttl),
                );
            }
            Err(e) => {
                tracing::debug!(%ip, error = %e, "PTR lookup failed");
                return (ReverseName::TempError, self.settings.error_ttl);
            }
        };
        let names: Vec<String> = ptr
            .records
            .iter()
            .filter_map(|n| host_name(n))
            .take(MAX_PTR_NAMES)
            .collect();
        let Some(first) = names.first().cloned() else {
            return (ReverseName::NotFound, ptr.ttl);
        };
        let family = AddressFamily::of(ip);
        let mut failed = false;
        let mut ttl = ptr.ttl;
        for name in names {
            match self.resolver.lookup_ip(&name, family).await {
                Ok(forward) if forward.records.iter().any(|a| a.to_canonical() == ip) => {
                    return (ReverseName::Confirmed(name), ptr.ttl.min(forward.ttl));
                }
                Ok(forward) => ttl = ttl.min(forward.ttl),
                Err(LookupError::NotFound { ttl: negative }) => {
                    ttl = ttl.min(negative.unwrap_or(self.settings.negative_ttl));
                }
                Err(e) => {
                    tracing::debug!(%ip, %name, error = %e, "forward lookup failed");
                    failed = true;
                }
            }
        }
        if failed {
            // A name we could not check might have confirmed: not knowing is not a mismatch.
            (ReverseName::TempError, self.settings.error_ttl)
        } else {
            (ReverseName::Unconfirmed(first), ttl)
        }
    }
}

/// A boxed, sendable future, as [`ReverseLookup`] takes and returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`ReverseDns`] as a trait object: a server holds an `Arc<dyn ReverseLookup>` and needs no
/// type parameter for the application's resolver.
pub trait ReverseLookup: Send + Sync + 'static {
    /// As [`ReverseDns::lookup`].
    fn reverse_name<'a>(
        &'a self,
        ip: IpAddr,
        now: Instant,
        timer: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, ReverseName>;

    /// As [`ReverseDns::timeout`].
    fn timeout(&self) -> Duration;
}

impl fmt::Debug for dyn ReverseLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReverseLookup")
            .field("timeout", &self.timeout())
            .finish_non_exhaustive()
    }
}

impl<R: Resolver> ReverseLookup for ReverseDns<R> {
    fn reverse_name<'a>(
        &'a self,
        ip: IpAddr,
        now: Instant,
        timer: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, ReverseName> {
        Box::pin(self.lookup(ip, now, timer))
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }
}

impl<R> fmt::Debug for ReverseDns<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReverseDns")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `name` as a host name (lowercase, no trailing dot), or `None` if it is not one: a PTR
/// target is free text to DNS, but it ends up in logs and `Received:` headers.
fn host_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_ascii() || !name.contains('.') {
        return None;
    }
    Domain::parse(name)
        .ok()
        .map(|d| d.as_str().to_ascii_lowercase())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the cache inconsistent: every entry is
    // written whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Waker};

    use super::*;

    /// A resolver answering from tables, counting its lookups; names missing from the tables
    /// are NXDOMAIN, and names in `failing` fail.
    #[derive(Default)]
    struct Table {
        ptr: HashMap<IpAddr, Vec<&'static str>>,
        ip: HashMap<&'static str, Vec<IpAddr>>,
        failing: Vec<&'static str>,
        ptr_fails: bool,
        hang: bool,
        lookups: AtomicUsize,
    }

    const TTL: Duration = Duration::from_secs(60);

    impl Resolver for Table {
        async fn lookup_ptr(&self, ip: IpAddr) -> Result<Answer<String>, LookupError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.ptr_fails {
                return Err(LookupError::Failed("SERVFAIL".into()));
            }
            match self.ptr.get(&ip) {
                Some(names) => Ok(Answer {
                    records: names.iter().map(|n| (*n).to_owned()).collect(),
                    ttl: TTL,
                }),
                None => Err(LookupError::NotFound {
                    ttl: Some(Duration::from_secs(10)),
                }),
            }
        }

        async fn lookup_ip(
            &self,
            name: &str,
            family: AddressFamily,
        ) -> Result<Answer<IpAddr>, LookupError> {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            if self.failing.contains(&name) {
                return Err(LookupError::Timeout);
            }
            let records: Vec<IpAddr> = self
                .ip
                .get(name)
                .into_iter()
                .flatten()
                .copied()
                .filter(|a| AddressFamily::of(*a) == family)
                .collect();
            if records.is_empty() {
                return Err(LookupError::NotFound { ttl: None });
            }
            Ok(Answer {
                records,
                ttl: Duration::from_secs(30),
            })
        }
    }

    /// Polls `fut` to completion; the table resolver never waits, so a few polls suffice.
    fn run<T>(fut: impl Future<Output = T>) -> T {
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100 {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        panic!("the future did not complete")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lookup(rdns: &ReverseDns<Table>, addr: &str, now: Instant) -> ReverseName {
        run(rdns.lookup(ip(addr), now, std::future::pending()))
    }

    fn table() -> Table {
        let mut t = Table::default();
        t.ptr.insert(ip("192.0.2.1"), vec!["Mail.Example.TEST."]);
        t.ip.insert(
            "mail.example.test",
            vec![ip("192.0.2.1"), ip("2001:db8::1")],
        );
        t.ptr.insert(ip("192.0.2.2"), vec!["liar.example.test."]);
        t.ip.insert("liar.example.test", vec![ip("198.51.100.9")]);
        t.ptr.insert(ip("2001:db8::1"), vec!["mail.example.test."]);
        t
    }

    #[test]
    fn confirmed_name_is_lowercase_without_the_dot() {
        let rdns = ReverseDns::new(table(), ReverseDnsSettings::default());
        let name = lookup(&rdns, "192.0.2.1", Instant::now());
        assert_eq!(name, ReverseName::Confirmed("mail.example.test".into()));
        assert_eq!(name.to_string(), "mail.example.test");
        assert_eq!(
            lookup(&rdns, "2001:db8::1", Instant::now()).confirmed(),
            Some("mail.example.test")
        );
    }

    #[test]
    fn mapped_ipv4_is_checked_as_ipv4() {
        let rdns = ReverseDns::new(table(), ReverseDnsSettings::default());
        let name = lookup(&rdns, "::ffff:192.0.2.1", Instant::now());
        assert_eq!(name.confirmed(), Some("mail.example.test"));
    }

    #[test]
    fn mismatch_keeps_the_claimed_name_but_is_not_confirmed() {
        let rdns = ReverseDns::new(table(), ReverseDnsSettings::default());
        let name = lookup(&rdns, "192.0.2.2", Instant::now());
        assert_eq!(name, ReverseName::Unconfirmed("liar.example.test".into()));
        assert_eq!(name.to_string(), "unknown");
    }

    #[test]
    fn no_ptr_is_not_found() {
        let rdns = ReverseDns::new(table(), ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.99", Instant::now()),
            ReverseName::NotFound
        );
    }

    #[test]
    fn any_confirming_name_among_several_counts() {
        let mut t = table();
        t.ptr.insert(
            ip("192.0.2.3"),
            vec![
                "liar.example.test.",
                "bad name!.test.",
                "host3.example.test.",
            ],
        );
        t.ip.insert("host3.example.test", vec![ip("192.0.2.3")]);
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.3", Instant::now()).confirmed(),
            Some("host3.example.test")
        );
    }

    #[test]
    fn names_that_are_not_host_names_are_ignored() {
        let mut t = table();
        t.ptr.insert(
            ip("192.0.2.4"),
            vec!["with space.test.", "localhost.", "ünï.test."],
        );
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.4", Instant::now()),
            ReverseName::NotFound
        );
        // Only the PTR lookup ran: no forward lookup for an invalid name.
        assert_eq!(rdns.resolver().lookups.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn forward_lookups_are_bounded() {
        let mut t = table();
        let names: Vec<&'static str> = (0..50)
            .map(|i| &*format!("h{i}.example.test.").leak())
            .collect();
        t.ptr.insert(ip("192.0.2.5"), names);
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.5", Instant::now()),
            ReverseName::Unconfirmed("h0.example.test".into())
        );
        assert_eq!(
            rdns.resolver().lookups.load(Ordering::Relaxed),
            1 + MAX_PTR_NAMES
        );
    }

    #[test]
    fn failures_are_temporary_not_mismatches() {
        let mut t = table();
        t.failing.push("mail.example.test");
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.1", Instant::now()),
            ReverseName::TempError
        );

        let t = Table {
            ptr_fails: true,
            ..table()
        };
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        assert_eq!(
            lookup(&rdns, "192.0.2.1", Instant::now()),
            ReverseName::TempError
        );
    }

    #[test]
    fn works_as_a_trait_object() {
        let rdns: std::sync::Arc<dyn ReverseLookup> =
            std::sync::Arc::new(ReverseDns::new(table(), ReverseDnsSettings::default()));
        let name = run(rdns.reverse_name(
            ip("192.0.2.1"),
            Instant::now(),
            Box::pin(std::future::pending()),
        ));
        assert_eq!(name.confirmed(), Some("mail.example.test"));
        assert_eq!(rdns.timeout(), ReverseDnsSettings::default().timeout);
    }

    #[test]
    fn the_timer_ends_a_hanging_lookup() {
        let t = Table {
            hang: true,
            ..table()
        };
        let rdns = ReverseDns::new(t, ReverseDnsSettings::default());
        let name = run(rdns.lookup(ip("192.0.2.1"), Instant::now(), std::future::ready(())));
        assert_eq!(name, ReverseName::TempError);
    }

    #[test]
    fn outcomes_are_cached_until_their_ttl() {
        let rdns = ReverseDns::new(table(), ReverseDnsSettings::default());
        let count = || rdns.resolver().lookups.load(Ordering::Relaxed);
        let t0 = Instant::now();
        lookup(&rdns, "192.0.2.1", t0);
        assert_eq!(count(), 2);
        // The confirmed outcome lives as long as the shorter of the PTR (60 s) and A (30 s) TTLs.
        assert!(
            lookup(&rdns, "192.0.2.1", t0 + Duration::from_secs(29))
                .confirmed()
                .is_some()
        );
        assert_eq!(count(), 2);
        lookup(&rdns, "192.0.2.1", t0 + Duration::from_secs(30));
        assert_eq!(count(), 4);

        // A missing PTR is cached for the SOA's negative TTL (10 s here).
        lookup(&rdns, "192.0.2.99", t0);
        lookup(&rdns, "192.0.2.99", t0 + Duration::from_secs(9));
        assert_eq!(count(), 5);
        lookup(&rdns, "192.0.2.99", t0 + Duration::from_secs(10));
        assert_eq!(count(), 6);
    }

    #[test]
    fn cache_ttls_are_capped_and_errors_cached_briefly() {
        let settings = ReverseDnsSettings {
            max_ttl: Duration::from_secs(5),
            error_ttl: Duration::from_secs(2),
            ..Default::default()
        };
        let t = Table {
            ptr_fails: true,
            ..table()
        };
        let rdns = ReverseDns::new(t, settings.clone());
        let t0 = Instant::now();
        lookup(&rdns, "192.0.2.1", t0);
        lookup(&rdns, "192.0.2.1", t0 + Duration::from_secs(1));
        assert_eq!(rdns.resolver().lookups.load(Ordering::Relaxed), 1);
        lookup(&rdns, "192.0.2.1", t0 + Duration::from_secs(2));
        assert_eq!(rdns.resolver().lookups.load(Ordering::Relaxed), 2);

        let rdns = ReverseDns::new(table(), settings);
        lookup(&rdns, "192.0.2.1", t0);
        lookup(&rdns, "192.0.2.1", t0 + Duration::from_secs(5));
        assert_eq!(rdns.resolver().lookups.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_cache_is_bounded_and_can_be_off() {
        let settings = ReverseDnsSettings {
            cache_capacity: 2,
            ..Default::default()
        };
        let rdns = ReverseDns::new(table(), settings);
        let t0 = Instant::now();
        for addr in ["192.0.2.1", "192.0.2.2", "192.0.2.99"] {
            lookup(&rdns, addr, t0);
        }
        assert_eq!(rdns.cache.as_ref().map(|c| lock(c).len()), Some(2));
        let before = rdns.resolver().lookups.load(Ordering::Relaxed);
        // The least recently used address was evicted: it is looked up again.
        lookup(&rdns, "192.0.2.1", t0);
        assert!(rdns.resolver().lookups.load(Ordering::Relaxed) > before);

        let rdns = ReverseDns::new(
            table(),
            ReverseDnsSettings {
                cache_capacity: 0,
                ..Default::default()
            },
        );
        lookup(&rdns, "192.0.2.99", t0);
        lookup(&rdns, "192.0.2.99", t0);
        assert_eq!(rdns.resolver().lookups.load(Ordering::Relaxed), 2);
    }
}
