//! [`Metrics`]: server-wide counters, updated without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by all sessions of a server. Read them with [`Metrics::snapshot`].
///
/// Counters only grow, except `connections_open`.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    messages_accepted: AtomicU64,
    messages_rejected: AtomicU64,
    bytes_received: AtomicU64,
    tls_handshake_failures: AtomicU64,
    auth_failures: AtomicU64,
}

/// The counters of a [`Metrics`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connections accepted since start (including refused ones).
    pub connections_total: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections refused by a limit or an untrusted PROXY source.
    pub connections_refused: u64,
    /// Messages answered positively.
    pub messages_accepted: u64,
    /// Messages refused by the application or the core.
    pub messages_rejected: u64,
    /// Message content octets received.
    pub bytes_received: u64,
    /// Failed TLS handshakes (implicit TLS and STARTTLS).
    pub tls_handshake_failures: u64,
    /// Refused AUTH attempts.
    pub auth_failures: u64,
}

// Relaxed ordering throughout: each counter is independent and only read for reporting.
impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection was accepted; pair with [`connection_closed`](Self::connection_closed).
    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`connection_opened`](Self::connection_opened) ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was refused before its session started.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was answered positively.
    pub fn message_accepted(&self) {
        self.messages_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was refused.
    pub fn message_rejected(&self) {
        self.messages_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Message content was received.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    /// A TLS handshake failed.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An AUTH attempt was refused.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_total: get(&self.connections_total),
            connections_open: get(&self.connections_open),
            connections_refused: get(&self.connections_refused),
            messages_accepted: get(&self.messages_accepted),
            messages_rejected: get(&self.messages_rejected),
            bytes_received: get(&self.bytes_received),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            auth_failures: get(&self.auth_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_refused();
        m.message_accepted();
        m.message_rejected();
        m.add_bytes(10);
        m.add_bytes(5);
        m.tls_handshake_failed();
        m.auth_failed();
        assert_eq!(
            m.snapshot(),
            MetricsSnapshot {
                connections_total: 2,
                connections_open: 1,
                connections_refused: 1,
                messages_accepted: 1,
                messages_rejected: 1,
                bytes_received: 15,
                tls_handshake_failures: 1,
                auth_failures: 1,
            }
        );
    }
}
