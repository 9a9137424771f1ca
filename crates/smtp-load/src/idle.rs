//! Idle-connection memory test: open many connections, greet them, hold them, and see how much
//! resident memory the server spends per connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use smtpkit_tokio::client;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::procfs;
use crate::session::{self, Failure};

/// Connection attempts in flight at once: enough to open 10,000 connections in a few seconds without
/// overflowing the server's listen backlog (commonly 128 to 4096).
const CONNECT_CONCURRENCY: usize = 64;

/// Options for [`idle`].
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The server to connect to.
    pub target: SocketAddr,
    /// How many connections to open.
    pub connections: u64,
    /// How long to hold them open after the last one is set up.
    pub hold: Duration,
    /// The server process whose memory is measured.
    pub server_pid: Option<u32>,
    /// Timeout for each connect and each reply.
    pub read_timeout: Duration,
    /// The domain sent with EHLO.
    pub ehlo_name: String,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl IdleOptions {
    /// Defaults: 10,000 connections held for 5 seconds, 30 s timeouts.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            connections: 10_000,
            hold: Duration::from_secs(5),
            server_pid: None,
            read_timeout: Duration::from_secs(30),
            ehlo_name: "smtp-load.invalid".to_owned(),
            progress: false,
        }
    }
}

/// The result of [`idle`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleReport {
    /// The server measured.
    pub target: String,
    /// Connections asked for.
    pub connections_requested: u64,
    /// Connections greeted and answered EHLO with 250, then held.
    pub connections_established: u64,
    /// This process's open-file limit (soft) after trying to raise it.
    pub nofile_limit: Option<u64>,
    /// Set when the open-file limit is too low for the requested connections.
    pub limit_warning: Option<String>,
    /// Seconds spent opening the connections.
    pub setup_secs: f64,
    /// Server resident set size before any connection, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server resident set size with every connection open, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// `(after - before) / connections_established`, in bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// Failures grouped like [`crate::Report::errors`].
    pub errors: BTreeMap<String, u64>,
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target              {}", self.target)?;
        writeln!(
            f,
            "connections         {} established of {} in {:.2} s",
            self.connections_established, self.connections_requested, self.setup_secs
        )?;
        if let Some(limit) = self.nofile_limit {
            writeln!(f, "open-file limit     {limit}")?;
        }
        if let Some(warning) = &self.limit_warning {
            writeln!(f, "warning             {warning}")?;
        }
        if let (Some(before), Some(after)) = (self.server_rss_before_kib, self.server_rss_after_kib)
        {
            writeln!(
                f,
                "server rss          {before} KiB before, {after} KiB after"
            )?;
        }
        if let Some(per) = self.rss_per_connection_bytes {
            writeln!(f, "rss per connection  {per:.0} bytes")?;
        }
        if self.errors.is_empty() {
            writeln!(f, "errors              none")?;
        } else {
            writeln!(f, "errors")?;
            for (key, n) in &self.errors {
                writeln!(f, "  {key}: {n}")?;
            }
        }
        Ok(())
    }
}

/// Raises this process's open-file soft limit as far as the hard limit allows and returns it.
pub fn raise_nofile_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Opens `connections` connections, reads each greeting, says EHLO, and holds them all open while the
/// server's memory is measured.
pub async fn idle(opts: IdleOptions) -> IdleReport {
    let nofile_limit = raise_nofile_limit();
    // Leave a few descriptors for stdio, the runtime and /proc reads.
    let limit_warning = nofile_limit
        .filter(|&limit| limit < opts.connections + 32)
        .map(|limit| {
            format!(
                "open-file limit {limit} allows at most about {} connections",
                limit.saturating_sub(32)
            )
        });
    let rss_before = opts
        .server_pid
        .and_then(|pid| procfs::memory(Some(pid)))
        .map(|m| m.rss_kib);

    let progress = crate::progress_bar(opts.progress, opts.connections, "connections");
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let done = Arc::new(AtomicU64::new(0));
    let opts = Arc::new(opts);
    let mut tasks = JoinSet::new();
    for _ in 0..opts.connections {
        let permits = permits.clone();
        let done = done.clone();
        let opts = opts.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let result = open_idle(&opts).await;
            done.fetch_add(1, Ordering::Relaxed);
            progress.inc(1);
            result
        });
    }
    let mut held = Vec::with_capacity(usize::try_from(opts.connections).unwrap_or(0));
    let mut errors = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("idle task does not panic") {
            Ok(stream) => held.push(stream),
            Err(failure) => *errors.entry(failure.key()).or_default() += 1,
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    tokio::time::sleep(opts.hold).await;
    let rss_after = opts
        .server_pid
        .and_then(|pid| procfs::memory(Some(pid)))
        .map(|m| m.rss_kib);
    let established = held.len() as u64;
    let rss_per_connection_bytes = match (rss_before, rss_after) {
        (Some(before), Some(after)) if established > 0 => {
            Some(after.saturating_sub(before) as f64 * 1024.0 / established as f64)
        }
        _ => None,
    };
    drop(held);

    IdleReport {
        target: opts.target.to_string(),
        connections_requested: opts.connections,
        connections_established: established,
        nofile_limit,
        limit_warning,
        setup_secs,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        rss_per_connection_bytes,
        errors,
    }
}

/// Connects, reads the greeting and says EHLO with the project's client; the connection is then
/// held without a command.
async fn open_idle(opts: &IdleOptions) -> Result<client::Connection, Failure> {
    let deadline = Instant::now() + opts.read_timeout;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(opts.target))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|e| Failure::Connect(e.kind()))?;
    let config = session::smtp_config(&opts.ehlo_name, true, false, opts.read_timeout, false)
        .ok_or(Failure::Protocol("invalid EHLO name"))?;
    let conn = client::Connection::open(client::Stream::new(tcp), Arc::new(config), None).await?;
    Ok(conn)
}
