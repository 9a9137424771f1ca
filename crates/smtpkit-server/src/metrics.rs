//! [`Metrics`]: server-wide counters, updated without locks, and mirrored to the
//! [`metrics`](https://docs.rs/metrics) facade.
//!
//! Every update goes to the process's `metrics` recorder as well, under the names in
//! [`describe`]: an application that installs a recorder (a Prometheus exporter, say) gets
//! the same numbers the [`MetricsSnapshot`] shows, from every adapter, without recording
//! anything itself. Without a recorder the facade calls do nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Counters shared by all sessions of a server. Read them with [`Metrics::snapshot`].
///
/// Counters only grow, except `connections_open`.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    sessions_total: AtomicU64,
    messages_accepted: AtomicU64,
    messages_rejected: AtomicU64,
    bytes_received: AtomicU64,
    tls_handshakes: AtomicU64,
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
    /// SMTP sessions started (connections past the limits, PROXY and implicit TLS).
    pub sessions_total: u64,
    /// Messages answered positively.
    pub messages_accepted: u64,
    /// Messages refused by the application or the core.
    pub messages_rejected: u64,
    /// Message content octets received.
    pub bytes_received: u64,
    /// Completed TLS handshakes (implicit TLS and STARTTLS).
    pub tls_handshakes: u64,
    /// Failed TLS handshakes (implicit TLS and STARTTLS).
    pub tls_handshake_failures: u64,
    /// Refused AUTH attempts.
    pub auth_failures: u64,
}

// The names the facade records under (Prometheus conventions: `_total` counters, base units).
const CONNECTIONS: &str = "smtp_connections_total";
const CONNECTIONS_OPEN: &str = "smtp_connections_open";
const CONNECTIONS_REFUSED: &str = "smtp_connections_refused_total";
const SESSIONS: &str = "smtp_sessions_total";
const SESSION_DURATION: &str = "smtp_session_duration_seconds";
const MESSAGES: &str = "smtp_messages_total";
const MESSAGE_DECISION: &str = "smtp_message_decision_seconds";
const BYTES: &str = "smtp_received_bytes_total";
const TLS_HANDSHAKES: &str = "smtp_tls_handshakes_total";
const AUTH_FAILURES: &str = "smtp_auth_failures_total";

/// The histograms [`Metrics`] records, for exporters that want buckets chosen per metric.
pub const HISTOGRAMS: &[&str] = &[SESSION_DURATION, MESSAGE_DECISION];

/// Registers the help text and unit of every metric with the installed recorder; call it
/// once after installing one. The names, with their labels:
///
/// | name | kind | what |
/// | --- | --- | --- |
/// | `smtp_connections_total` | counter | connections accepted |
/// | `smtp_connections_open` | gauge | connections open now |
/// | `smtp_connections_refused_total` | counter | connections refused by a limit or PROXY trust |
/// | `smtp_sessions_total` | counter | SMTP sessions started |
/// | `smtp_session_duration_seconds` | histogram | session length |
/// | `smtp_messages_total{outcome="accepted"\|"rejected"}` | counter | messages by outcome |
/// | `smtp_message_decision_seconds` | histogram | end of content to the application's answer (storage latency) |
/// | `smtp_received_bytes_total` | counter | message content octets |
/// | `smtp_tls_handshakes_total{result="ok"\|"failed"}` | counter | TLS handshakes (implicit and STARTTLS) |
/// | `smtp_auth_failures_total` | counter | refused AUTH attempts |
pub fn describe() {
    describe_counter!(CONNECTIONS, "Connections accepted");
    describe_gauge!(CONNECTIONS_OPEN, "Connections open now");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused by a limit or PROXY trust"
    );
    describe_counter!(SESSIONS, "SMTP sessions started");
    describe_histogram!(SESSION_DURATION, Unit::Seconds, "Session length");
    describe_counter!(MESSAGES, "Messages by outcome (accepted, rejected)");
    describe_histogram!(
        MESSAGE_DECISION,
        Unit::Seconds,
        "Time from the end of a message's content to the application's answer"
    );
    describe_counter!(BYTES, Unit::Bytes, "Message content octets received");
    describe_counter!(TLS_HANDSHAKES, "TLS handshakes by result (ok, failed)");
    describe_counter!(AUTH_FAILURES, "Refused AUTH attempts");
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
        counter!(CONNECTIONS).increment(1);
        gauge!(CONNECTIONS_OPEN).increment(1.0);
    }

    /// A connection counted by [`connection_opened`](Self::connection_opened) ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }

    /// A connection was refused before its session started.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        counter!(CONNECTIONS_REFUSED).increment(1);
    }

    /// An SMTP session started; pair with [`session_ended`](Self::session_ended).
    pub fn session_started(&self) {
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        counter!(SESSIONS).increment(1);
    }

    /// A session ended after `duration`.
    pub fn session_ended(&self, duration: Duration) {
        histogram!(SESSION_DURATION).record(duration.as_secs_f64());
    }

    /// A message was answered positively.
    pub fn message_accepted(&self) {
        self.messages_accepted.fetch_add(1, Ordering::Relaxed);
        counter!(MESSAGES, "outcome" => "accepted").increment(1);
    }

    /// A message was refused.
    pub fn message_rejected(&self) {
        self.messages_rejected.fetch_add(1, Ordering::Relaxed);
        counter!(MESSAGES, "outcome" => "rejected").increment(1);
    }

    /// The application answered a complete message `latency` after its content ended.
    pub fn message_decided(&self, latency: Duration) {
        histogram!(MESSAGE_DECISION).record(latency.as_secs_f64());
    }

    /// Message content was received.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
        counter!(BYTES).increment(n);
    }

    /// A TLS handshake completed.
    pub fn tls_handshake_succeeded(&self) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        counter!(TLS_HANDSHAKES, "result" => "ok").increment(1);
    }

    /// A TLS handshake failed.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
        counter!(TLS_HANDSHAKES, "result" => "failed").increment(1);
    }

    /// An AUTH attempt was refused.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        counter!(AUTH_FAILURES).increment(1);
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_total: get(&self.connections_total),
            connections_open: get(&self.connections_open),
            connections_refused: get(&self.connections_refused),
            sessions_total: get(&self.sessions_total),
            messages_accepted: get(&self.messages_accepted),
            messages_rejected: get(&self.messages_rejected),
            bytes_received: get(&self.bytes_received),
            tls_handshakes: get(&self.tls_handshakes),
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
        m.session_started();
        m.session_ended(Duration::from_millis(5));
        m.message_accepted();
        m.message_rejected();
        m.message_decided(Duration::from_millis(1));
        m.add_bytes(10);
        m.add_bytes(5);
        m.tls_handshake_succeeded();
        m.tls_handshake_failed();
        m.auth_failed();
        assert_eq!(
            m.snapshot(),
            MetricsSnapshot {
                connections_total: 2,
                connections_open: 1,
                connections_refused: 1,
                sessions_total: 1,
                messages_accepted: 1,
                messages_rejected: 1,
                bytes_received: 15,
                tls_handshakes: 1,
                tls_handshake_failures: 1,
                auth_failures: 1,
            }
        );
    }
}
