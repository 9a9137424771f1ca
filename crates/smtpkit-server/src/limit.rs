//! [`ConnectionLimiter`]: open connections in total and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::proxy::TrustedNetworks;

/// Counts open connections and refuses those over the limits.
///
/// Cheap to clone; clones share the counts.
///
/// ```
/// use smtpkit_server::ConnectionLimiter;
/// let limiter = ConnectionLimiter::new(10, 1);
/// let ip = "192.0.2.1".parse().unwrap();
/// let guard = limiter.try_acquire(ip).unwrap();
/// assert!(limiter.try_acquire(ip).is_err());
/// drop(guard);
/// assert!(limiter.try_acquire(ip).is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_ip: usize,
    /// Addresses the per-address limit does not apply to.
    exempt: TrustedNetworks,
    // One lock for both counts keeps them consistent; it is held for a map lookup only, once
    // per connection open and close.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The server has `max_connections` open.
    #[error("too many connections")]
    Total,
    /// This client address has `max_per_ip` open.
    #[error("too many connections from this address")]
    PerIp,
}

impl LimitExceeded {
    /// The bytes an adapter writes to a connection it refuses, before any core session exists:
    /// `421 4.7.0 <hostname> Too many connections, try again later` (RFC 5321 3.8: 421 and
    /// close). One place, so every adapter refuses with the same bytes.
    pub fn reply_bytes(&self, hostname: &str) -> Vec<u8> {
        let text = format!("{hostname} Too many connections, try again later");
        let reply = smtpkit_proto::Reply::new(smtpkit_proto::ReplyCode::UNAVAILABLE, text)
            // A hostname too long for one reply line: drop it rather than the reply.
            .or_else(|_| {
                smtpkit_proto::Reply::new(
                    smtpkit_proto::ReplyCode::UNAVAILABLE,
                    "Too many connections, try again later",
                )
            })
            .map(|r| r.with_enhanced(smtpkit_proto::EnhancedCode::SECURITY_TRANSIENT));
        let mut out = Vec::with_capacity(80);
        if let Ok(reply) = reply {
            reply.encode(true, &mut out);
        }
        out
    }
}

/// An open connection's place in the counts; dropping it frees the place.
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct ConnectionGuard {
    inner: Arc<Inner>,
    /// `None` for a Unix-socket connection, which counts towards the total only.
    ip: Option<IpAddr>,
}

impl ConnectionLimiter {
    /// A limiter allowing `max_total` connections, `max_per_ip` of them from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self::with_exempt(max_total, max_per_ip, TrustedNetworks::default())
    }

    /// Like [`new`](Self::new), but addresses in `exempt` are not held to `max_per_ip` (they
    /// still count towards, and are held to, `max_total`): the server's own networks, as
    /// Postfix's `smtpd_client_event_limit_exceptions` exempts `$mynetworks`.
    pub fn with_exempt(max_total: usize, max_per_ip: usize, exempt: TrustedNetworks) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total,
                max_per_ip,
                exempt,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Counts a connection from `ip`, or says which limit it is over.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionGuard, LimitExceeded> {
        let ip = canonical(ip);
        let mut counts = self.lock();
        if counts.total >= self.inner.max_total {
            return Err(LimitExceeded::Total);
        }
        let exempt = self.inner.exempt.contains(ip);
        let n = counts.per_ip.entry(ip).or_insert(0);
        if *n >= self.inner.max_per_ip && !exempt {
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(LimitExceeded::PerIp);
        }
        *n += 1;
        counts.total += 1;
        Ok(ConnectionGuard {
            inner: Arc::clone(&self.inner),
            ip: Some(ip),
        })
    }

    /// Counts a connection that has no client address (a Unix-domain socket): only
    /// `max_total` applies.
    pub fn try_acquire_local(&self) -> Result<ConnectionGuard, LimitExceeded> {
        let mut counts = self.lock();
        if counts.total >= self.inner.max_total {
            return Err(LimitExceeded::Total);
        }
        counts.total += 1;
        Ok(ConnectionGuard {
            inner: Arc::clone(&self.inner),
            ip: None,
        })
    }

    /// Open connections.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Open connections from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&canonical(ip)).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.inner.lock();
        counts.total = counts.total.saturating_sub(1);
        let Some(ip) = self.ip else { return };
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                // Forget idle addresses so the map stays as small as the open connections.
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// An IPv4-mapped IPv6 address counts as its IPv4 address (dual-stack sockets report those).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_limit_reply_bytes() {
        assert_eq!(
            LimitExceeded::PerIp.reply_bytes("mx.test"),
            b"421 4.7.0 mx.test Too many connections, try again later\r\n"
        );
        let long = "h".repeat(600);
        assert_eq!(
            LimitExceeded::Total.reply_bytes(&long),
            b"421 4.7.0 Too many connections, try again later\r\n"
        );
    }

    #[test]
    fn total_and_per_ip() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.try_acquire(a).unwrap();
        let g2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), LimitExceeded::PerIp);
        let g3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), LimitExceeded::Total);
        assert_eq!((l.total(), l.count(a), l.count(b)), (3, 2, 1));
        drop(g1);
        assert_eq!(l.count(a), 1);
        let g4 = l.try_acquire(b).unwrap();
        drop((g2, g3, g4));
        assert_eq!(l.total(), 0);
        assert!(l.lock().per_ip.is_empty());
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let l = ConnectionLimiter::new(10, 1);
        let _g = l.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            l.try_acquire("::ffff:192.0.2.1".parse().unwrap())
                .unwrap_err(),
            LimitExceeded::PerIp
        );
    }

    #[test]
    fn exempt_networks_skip_the_per_ip_limit_only() {
        let l = ConnectionLimiter::with_exempt(3, 1, "127.0.0.0/8".parse().unwrap());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let g = [l.try_acquire(local).unwrap(), l.try_acquire(local).unwrap()];
        let _o = l.try_acquire(other).unwrap();
        assert_eq!(l.try_acquire(other).unwrap_err(), LimitExceeded::Total);
        assert_eq!(l.try_acquire(local).unwrap_err(), LimitExceeded::Total);
        drop(g);
        assert_eq!(l.try_acquire(other).unwrap_err(), LimitExceeded::PerIp);
    }

    #[test]
    fn local_connections_count_towards_the_total_only() {
        let l = ConnectionLimiter::new(2, 0);
        let a = l.try_acquire_local().unwrap();
        let _b = l.try_acquire_local().unwrap();
        assert_eq!(l.try_acquire_local().unwrap_err(), LimitExceeded::Total);
        assert!(l.lock().per_ip.is_empty());
        drop(a);
        assert_eq!(l.total(), 1);
        assert!(l.try_acquire_local().is_ok());
    }

    #[test]
    fn zero_per_ip_leaves_no_entry() {
        let l = ConnectionLimiter::new(10, 0);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(l.try_acquire(ip).unwrap_err(), LimitExceeded::PerIp);
        assert!(l.lock().per_ip.is_empty());
    }
}
