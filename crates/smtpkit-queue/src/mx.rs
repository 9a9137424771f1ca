//! Where mail for a domain goes (RFC 5321 5.1): MX hosts in preference order, shuffled among
//! equal preferences, the domain itself when it has no MX, nowhere when it publishes a null MX
//! (RFC 7505).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};

/// A DNS lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The name does not exist (NXDOMAIN).
    #[error("no such domain")]
    NoSuchName,
    /// The name exists but has no records of that type.
    #[error("no records")]
    NoRecords,
    /// The lookup itself failed (timeout, SERVFAIL): try again later.
    #[error("{0}")]
    Failed(String),
}

/// The lookups delivery makes.
pub trait MxResolver: Send + Sync + 'static {
    /// The MX records of `domain`: (preference, exchange without the trailing dot; `.` for a
    /// null MX).
    fn mx(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Vec<(u16, String)>, LookupError>> + Send;
    /// The IPv6 and IPv4 addresses of `host`.
    fn addresses(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send;
}

/// One host to try, with its addresses (IPv6 first, then IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
}

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Permanent: a null MX, a domain that does not exist, an implicit MX without addresses.
    #[error("{0}")]
    Permanent(String),
    /// Temporary: DNS failed, or no MX host has an address right now.
    #[error("{0}")]
    Temporary(String),
}

/// Sorts MX records by preference, shuffling those of equal preference (RFC 5321 5.1: "the
/// sender-SMTP MUST randomize them to spread the load").
#[must_use]
pub fn order(mut records: Vec<(u16, String)>, rng: &mut fastrand::Rng) -> Vec<(u16, String)> {
    rng.shuffle(&mut records);
    // Stable: the shuffle decides the order among equals.
    records.sort_by_key(|(pref, _)| *pref);
    records
}

/// Whether the records are a null MX (RFC 7505 3: one record, exchange `.`).
#[must_use]
pub fn is_null_mx(records: &[(u16, String)]) -> bool {
    matches!(records, [(_, host)] if host.is_empty() || host == ".")
}

/// The hosts to try for `domain`, in order.
pub async fn route<R: MxResolver>(
    resolver: &R,
    domain: &str,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Host>, RouteError> {
    let records = match resolver.mx(domain).await {
        Ok(records) if is_null_mx(&records) => {
            return Err(RouteError::Permanent(format!(
                "domain {domain} does not accept mail (null MX, RFC 7505)"
            )));
        }
        Ok(records) if !records.is_empty() => order(records, rng),
        // RFC 5321 5.1: no MX, so the domain itself is the host (implicit MX).
        Ok(_) | Err(LookupError::NoRecords) => {
            return match resolver.addresses(domain).await {
                Ok(addresses) if !addresses.is_empty() => Ok(vec![Host {
                    name: domain.to_owned(),
                    addresses,
                }]),
                Ok(_) | Err(LookupError::NoRecords | LookupError::NoSuchName) => Err(
                    RouteError::Permanent(format!("domain {domain} has no MX and no address")),
                ),
                Err(LookupError::Failed(e)) => Err(RouteError::Temporary(format!(
                    "address lookup for {domain} failed: {e}"
                ))),
            };
        }
        Err(LookupError::NoSuchName) => {
            return Err(RouteError::Permanent(format!(
                "domain {domain} does not exist"
            )));
        }
        Err(LookupError::Failed(e)) => {
            return Err(RouteError::Temporary(format!(
                "MX lookup for {domain} failed: {e}"
            )));
        }
    };
    let mut hosts = Vec::with_capacity(records.len());
    let mut last_error = None;
    for (_, name) in records {
        match resolver.addresses(&name).await {
            Ok(addresses) if !addresses.is_empty() => hosts.push(Host { name, addresses }),
            Ok(_) => last_error = Some(format!("{name} has no address")),
            Err(e) => last_error = Some(format!("{name}: {e}")),
        }
    }
    if hosts.is_empty() {
        // Postfix defers here too: an MX host without an address is usually a DNS problem
        // the domain's owner will fix.
        return Err(RouteError::Temporary(last_error.unwrap_or_else(|| {
            format!("no MX host of {domain} has an address")
        })));
    }
    Ok(hosts)
}

/// [`MxResolver`] over hickory-resolver.
#[derive(Clone)]
pub struct HickoryMx {
    inner: TokioResolver,
}

impl std::fmt::Debug for HickoryMx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryMx").finish_non_exhaustive()
    }
}

impl HickoryMx {
    /// Asks the nameservers at `nameservers` (ip:port; UDP, TCP for truncated answers), or the
    /// system's (`/etc/resolv.conf`) when the list is empty.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> std::io::Result<Self> {
        let config = if nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .0
        } else {
            ResolverConfig::from_name_servers(
                nameservers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect(),
            )
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        Self::with_options(config, opts)
    }

    /// A resolver with hickory's own configuration and options (smtpd's `[dns]` section
    /// produces them for every resolver it builds).
    pub fn with_options(config: ResolverConfig, opts: ResolverOpts) -> std::io::Result<Self> {
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The hickory resolver underneath, for other lookups delivery makes (MTA-STS, TLSA) on
    /// the same cache.
    #[must_use]
    pub fn resolver(&self) -> &TokioResolver {
        &self.inner
    }
}

fn absolute(name: &str) -> Result<Name, LookupError> {
    let mut n = Name::from_ascii(name).map_err(|e| LookupError::Failed(e.to_string()))?;
    n.set_fqdn(true);
    Ok(n)
}

fn lookup_error(e: NetError) -> LookupError {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if no.response_code == ResponseCode::NXDomain =>
        {
            LookupError::NoSuchName
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => LookupError::NoRecords,
        e => LookupError::Failed(e.to_string()),
    }
}

fn host_name(name: &Name) -> String {
    let s = name.to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_owned()
}

impl MxResolver for HickoryMx {
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, LookupError> {
        let lookup = self
            .inner
            .mx_lookup(absolute(domain)?)
            .await
            .map_err(lookup_error)?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => {
                    let host = host_name(&mx.exchange);
                    Some((
                        mx.preference,
                        if host.is_empty() {
                            ".".to_owned()
                        } else {
                            host
                        },
                    ))
                }
                _ => None,
            })
            .collect())
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let name = absolute(host)?;
        let (v6, v4) = tokio::join!(
            self.inner.ipv6_lookup(name.clone()),
            self.inner.ipv4_lookup(name)
        );
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for lookup in [v6, v4] {
            match lookup {
                Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => errors.push(lookup_error(e)),
            }
        }
        if out.is_empty() {
            // Both failed: NXDOMAIN wins (the name does not exist), then a real failure.
            return Err(if errors.contains(&LookupError::NoSuchName) {
                LookupError::NoSuchName
            } else {
                errors
                    .into_iter()
                    .find(|e| matches!(e, LookupError::Failed(_)))
                    .unwrap_or(LookupError::NoRecords)
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_preferences_are_shuffled_and_lower_ones_come_first() {
        let records = vec![
            (20, "c".to_owned()),
            (10, "a1".to_owned()),
            (10, "a2".to_owned()),
            (10, "a3".to_owned()),
            (5, "z".to_owned()),
        ];
        let mut firsts = std::collections::HashSet::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let o = order(records.clone(), &mut rng);
            let prefs: Vec<u16> = o.iter().map(|r| r.0).collect();
            assert_eq!(prefs, [5, 10, 10, 10, 20]);
            firsts.insert(o[1].1.clone());
        }
        assert_eq!(
            firsts.len(),
            3,
            "every host of preference 10 came first sometimes"
        );
    }

    #[test]
    fn null_mx() {
        assert!(is_null_mx(&[(0, ".".to_owned())]));
        assert!(!is_null_mx(&[(0, ".".to_owned()), (10, "mx".to_owned())]));
        assert!(!is_null_mx(&[(0, "mx".to_owned())]));
    }
}
