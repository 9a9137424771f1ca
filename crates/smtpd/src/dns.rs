//! `[dns]`: the nameservers smtpd asks, and how; the resolver built from them for the clients'
//! reverse-DNS names (and, with [`Dns::resolver_config`], for anything else that resolves).
//!
//! ```toml
//! [dns]
//! nameservers = ["127.0.0.1:53"]   # empty: the system's /etc/resolv.conf
//! timeout = 5                      # seconds per query, and for a whole reverse lookup
//! attempts = 2
//! cache_size = 10000
//! reverse_lookup = true
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use serde::{Deserialize, Serialize};
use smtpkit_server::rdns::{ReverseDns, ReverseDnsSettings, ReverseLookup};
use smtpkit_tokio::rdns::HickoryResolver;

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Nameservers as `ip:port`, asked over UDP (TCP for truncated answers). Default: none,
    /// meaning the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Seconds a query waits for an answer; also the bound of a client's whole reverse lookup
    /// (PTR and forward confirmation), after which the name is a temporary failure. Default 5,
    /// resolv.conf(5)'s `timeout`.
    pub timeout: u64,
    /// Tries per query and nameserver. Default 2, resolv.conf(5)'s `attempts`.
    pub attempts: usize,
    /// Answers cached: hickory's record cache and the reverse-name cache each hold this many.
    /// Default 10,000 (see `ReverseDnsSettings::cache_capacity`).
    pub cache_size: usize,
    /// Look every client's name up (with forward confirmation) before the greeting, for the
    /// `Received:` header and the log. Default `true`, as Postfix.
    pub reverse_lookup: bool,
}

impl Default for Dns {
    fn default() -> Self {
        let rdns = ReverseDnsSettings::default();
        Self {
            nameservers: Vec::new(),
            timeout: rdns.timeout.as_secs(),
            attempts: ResolverOpts::default().attempts,
            cache_size: rdns.cache_capacity,
            reverse_lookup: true,
        }
    }
}

impl Dns {
    /// The query timeout as a `Duration`.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// hickory's configuration for these settings: the nameservers (or the system's) and the
    /// options. Every resolver smtpd builds starts from here.
    ///
    /// # Errors
    ///
    /// When `nameservers` is empty and the system's configuration cannot be read.
    pub fn resolver_config(&self) -> io::Result<(ResolverConfig, ResolverOpts)> {
        let (config, mut opts) = if self.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| io::Error::other(format!("/etc/resolv.conf: {e}")))?
        } else {
            let servers = self
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        opts.timeout = self.timeout();
        opts.attempts = self.attempts;
        opts.cache_size = self.cache_size as u64;
        Ok((config, opts))
    }

    /// The clients' reverse-DNS lookup, or `None` when `reverse_lookup` is off. Build it on
    /// the tokio runtime that serves the sessions.
    ///
    /// # Errors
    ///
    /// As [`resolver_config`](Self::resolver_config).
    pub fn reverse_dns(&self) -> io::Result<Option<Arc<dyn ReverseLookup>>> {
        if !self.reverse_lookup {
            return Ok(None);
        }
        let (config, opts) = self.resolver_config()?;
        let resolver = HickoryResolver::with_options(config, opts)?;
        let settings = ReverseDnsSettings {
            timeout: self.timeout(),
            cache_capacity: self.cache_size,
            ..ReverseDnsSettings::default()
        };
        Ok(Some(Arc::new(ReverseDns::new(resolver, settings))))
    }

    /// Problems with these settings, for the configuration check.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.timeout == 0 {
            problems.push("[dns] timeout must be at least 1 second".to_owned());
        }
        if self.attempts == 0 {
            problems.push("[dns] attempts must be at least 1".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_resolv_conf_and_the_library() {
        let dns = Dns::default();
        assert!(dns.reverse_lookup && dns.nameservers.is_empty());
        assert_eq!(dns.timeout(), ReverseDnsSettings::default().timeout);
        assert_eq!(dns.attempts, 2);
        assert!(dns.problems().is_empty());
    }

    #[test]
    fn nameservers_become_hickory_config_with_the_options() {
        let dns: Dns = toml::from_str(
            "nameservers = [\"127.0.0.1:5353\", \"[::1]:53\"]\ntimeout = 3\nattempts = 1\ncache_size = 7\n",
        )
        .unwrap();
        let (config, opts) = dns.resolver_config().unwrap();
        let servers: Vec<_> = config
            .name_servers
            .iter()
            .map(|s| {
                (
                    s.ip,
                    s.connections.iter().map(|c| c.port).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("127.0.0.1".parse().unwrap(), vec![5353, 5353]),
                ("::1".parse().unwrap(), vec![53, 53]),
            ]
        );
        assert_eq!(opts.timeout, Duration::from_secs(3));
        assert_eq!((opts.attempts, opts.cache_size), (1, 7));
    }

    #[test]
    fn zero_timeout_or_attempts_is_a_problem() {
        let dns = Dns {
            timeout: 0,
            attempts: 0,
            ..Dns::default()
        };
        assert_eq!(dns.problems().len(), 2);
    }

    #[test]
    fn off_builds_no_lookup() {
        let dns = Dns {
            reverse_lookup: false,
            ..Dns::default()
        };
        assert!(dns.reverse_dns().unwrap().is_none());
    }
}
