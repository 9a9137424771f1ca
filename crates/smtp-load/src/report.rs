//! Per-session counters and the final run report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::session::Failure;

/// Latencies are recorded in microseconds, from 1 µs to one hour, with 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// What one session counted; sessions are merged at the end so the hot path shares nothing.
#[derive(Debug)]
pub(crate) struct SessionStats {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) interrupted: u64,
    pub(crate) body_bytes: u64,
    pub(crate) connections: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) samples: BTreeMap<String, String>,
}

impl SessionStats {
    pub(crate) fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("valid histogram bounds"),
            accepted: 0,
            failed: 0,
            interrupted: 0,
            body_bytes: 0,
            connections: 0,
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    pub(crate) fn accepted(&mut self, latency: Duration, body_bytes: usize) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, LATENCY_MAX_US));
        self.accepted += 1;
        self.body_bytes += body_bytes as u64;
    }

    pub(crate) fn failed(&mut self, failure: &Failure) {
        if *failure == Failure::Interrupted {
            self.interrupted += 1;
            return;
        }
        self.failed += 1;
        let key = failure.key();
        if let Some(sample) = failure.sample() {
            self.samples
                .entry(key.clone())
                .or_insert_with(|| sample.to_owned());
        }
        *self.errors.entry(key).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        self.accepted += other.accepted;
        self.failed += other.failed;
        self.interrupted += other.interrupted;
        self.body_bytes += other.body_bytes;
        self.connections += other.connections;
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
        for (key, sample) in other.samples {
            self.samples.entry(key).or_insert(sample);
        }
    }
}

/// Latency percentiles of accepted messages, in milliseconds: from sending MAIL to reading the final
/// reply to the message content.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest message.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// CPU and memory of the server process under test, from `/proc/PID`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The process measured (only this process: the children of a forking server are not counted).
    pub pid: u32,
    /// User plus system CPU seconds the server used during the run.
    pub cpu_secs: f64,
    /// `cpu_secs` per 1,000 accepted messages; absent when none were accepted.
    pub cpu_secs_per_1000_messages: Option<f64>,
    /// Resident set size after the run, KiB (`VmRSS`).
    pub rss_kib: Option<u64>,
    /// Peak resident set size over the process's life, KiB (`VmHWM`).
    pub peak_rss_kib: Option<u64>,
}

/// How the run was configured, repeated in the report so a JSON line stands on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mode {
    /// Concurrent sessions.
    pub sessions: u32,
    /// Messages per connection; `None` means one connection per session for all its messages.
    pub per_connection: Option<u64>,
    /// MAIL, RCPT and DATA were pipelined (RFC 2920).
    pub pipelining: bool,
    /// BDAT (RFC 3030) instead of DATA.
    pub bdat: bool,
    /// STARTTLS (RFC 3207) on every connection.
    pub starttls: bool,
    /// Message sizes as `bytes:weight` pairs.
    pub sizes: String,
}

/// The result of [`crate::run`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The server measured.
    pub target: String,
    /// The run's configuration.
    pub mode: Mode,
    /// Messages the run was asked to send.
    pub messages_requested: u64,
    /// Messages the server accepted with a 2xx final reply.
    pub messages_accepted: u64,
    /// Messages refused or lost to an error (see `errors`).
    pub messages_failed: u64,
    /// Messages in flight when the duration limit ended the run.
    pub messages_interrupted: u64,
    /// Messages never started because the duration limit ended the run.
    pub messages_not_started: u64,
    /// Whether the duration limit ended the run early.
    pub duration_limit_hit: bool,
    /// TCP connections opened successfully.
    pub connections: u64,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Accepted messages per second of wall time.
    pub messages_per_sec: f64,
    /// Message bytes (before dot-stuffing) of accepted messages.
    pub body_bytes: u64,
    /// Accepted message bytes per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Latency of accepted messages.
    pub latency: Latency,
    /// Failures grouped by reply code (`"451"`) or by kind (`"io: connection reset"`, `"timeout"`).
    pub errors: BTreeMap<String, u64>,
    /// The first reply text seen for each reply code in `errors`.
    pub error_samples: BTreeMap<String, String>,
    /// CPU seconds (user + system) this load generator used during the run.
    pub client_cpu_secs: f64,
    /// The server's CPU and memory, when its PID was given.
    pub server: Option<ServerUsage>,
}

impl Report {
    /// Whether every requested message was accepted.
    pub fn all_accepted(&self) -> bool {
        self.messages_accepted == self.messages_requested
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.mode;
        let mut flags = Vec::new();
        if m.pipelining {
            flags.push("pipelining");
        }
        if m.bdat {
            flags.push("bdat");
        }
        if m.starttls {
            flags.push("starttls");
        }
        let per_conn = m
            .per_connection
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        writeln!(f, "target              {}", self.target)?;
        writeln!(
            f,
            "mode                {} sessions, {} msgs/connection, sizes {}{}{}",
            m.sessions,
            per_conn,
            m.sizes,
            if flags.is_empty() { "" } else { ", " },
            flags.join(", ")
        )?;
        writeln!(
            f,
            "messages            {} accepted, {} failed, {} interrupted, {} not started (of {})",
            self.messages_accepted,
            self.messages_failed,
            self.messages_interrupted,
            self.messages_not_started,
            self.messages_requested
        )?;
        writeln!(f, "connections         {}", self.connections)?;
        writeln!(
            f,
            "elapsed             {:.3} s{}",
            self.elapsed_secs,
            if self.duration_limit_hit {
                " (duration limit hit)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "throughput          {:.1} msg/s, {:.2} MB/s",
            self.messages_per_sec, self.mb_per_sec
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "latency ms          p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
        )?;
        writeln!(f, "client cpu          {:.2} s", self.client_cpu_secs)?;
        if let Some(s) = &self.server {
            write!(f, "server pid {:<8} cpu {:.2} s", s.pid, s.cpu_secs)?;
            if let Some(per) = s.cpu_secs_per_1000_messages {
                write!(f, " ({per:.3} s per 1000 msgs)")?;
            }
            if let (Some(rss), Some(peak)) = (s.rss_kib, s.peak_rss_kib) {
                write!(f, ", rss {} KiB, peak rss {} KiB", rss, peak)?;
            }
            writeln!(f)?;
        }
        if self.errors.is_empty() {
            writeln!(f, "errors              none")?;
        } else {
            writeln!(f, "errors")?;
            for (key, n) in &self.errors {
                match self.error_samples.get(key) {
                    Some(sample) => writeln!(f, "  {key}: {n}  (e.g. \"{sample}\")")?,
                    None => writeln!(f, "  {key}: {n}")?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_keeps_first_sample() {
        let mut a = SessionStats::new();
        a.accepted(Duration::from_micros(500), 1000);
        a.failed(&Failure::Reply {
            code: 451,
            text: "451 first".into(),
        });
        let mut b = SessionStats::new();
        b.accepted(Duration::from_millis(2), 24);
        b.failed(&Failure::Reply {
            code: 451,
            text: "451 second".into(),
        });
        b.failed(&Failure::Timeout);
        b.failed(&Failure::Interrupted);
        a.merge(b);
        assert_eq!(
            (a.accepted, a.failed, a.interrupted, a.body_bytes),
            (2, 3, 1, 1024)
        );
        assert_eq!(a.errors.get("451"), Some(&2));
        assert_eq!(a.errors.get("timeout"), Some(&1));
        assert_eq!(a.samples.get("451").map(String::as_str), Some("451 first"));
        let lat = Latency::from_histogram(&a.latency_us);
        assert!((lat.max_ms - 2.0).abs() < 0.01, "{lat:?}");
        assert!(lat.p50_ms < 0.51, "{lat:?}");
    }
}
