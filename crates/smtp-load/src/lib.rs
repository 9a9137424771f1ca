//! `smtp-load`: an SMTP load generator and a trivial baseline server.
//!
//! It targets any SMTP server at `host:port` (ours, Postfix, anything), so the same numbers can be
//! compared across servers:
//!
//! - [`run`] drives N concurrent sessions that share M messages, with optional PIPELINING (RFC 2920),
//!   BDAT (RFC 3030) and STARTTLS (RFC 3207), and returns a [`Report`]: messages/s, MB/s, latency
//!   percentiles, errors by reply code, client CPU and, given the server's PID, server CPU and memory.
//! - [`baseline_server`] is the fastest possible "server": fixed replies, no parsing beyond staying in
//!   step. Running [`run`] against it measures the load generator's own ceiling.
//! - [`idle()`] holds many idle connections open to measure the server's memory per connection.
//! - [`torture::run`] drives an `smtpd` binary through hostile clients and broken storage and checks
//!   each outcome (`cargo xtask torture`).
//!
//! Message bodies are generated once per run ([`body`]); sessions send them with the project's own
//! client (`smtpkit_tokio::client`), which parses replies, pipelines, and dot-stuffs or chunks.

pub mod baseline;
pub mod body;
pub mod idle;
pub mod procfs;
pub mod report;
pub mod session;
pub mod tls;
pub mod torture;

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use baseline::baseline_server;
pub use body::SizeDist;
pub use idle::{IdleOptions, IdleReport, idle};
pub use report::{Latency, Mode, Report, ServerUsage};
pub use session::StartTls;

use body::Rng;
use report::SessionStats;
use session::{Connection, Payload, Plan};

/// RFC 5321 §4.5.3.2 suggests minutes for most replies; 30 s keeps a stuck run short while leaving a
/// loaded server plenty of time.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The server to load.
    pub target: SocketAddr,
    /// Concurrent sessions (tasks), each using one connection at a time.
    pub sessions: u32,
    /// Messages to send in total, shared by all sessions.
    pub messages: u64,
    /// Message sizes.
    pub sizes: SizeDist,
    /// Messages per connection before it is closed and a new one opened; `None` keeps one connection
    /// per session for the whole run.
    pub per_connection: Option<NonZeroU64>,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920).
    pub pipelining: bool,
    /// Send the message with `BDAT <n> LAST` (RFC 3030) instead of DATA.
    pub bdat: bool,
    /// Upgrade every connection with STARTTLS.
    pub starttls: Option<StartTls>,
    /// Authenticate every connection with AUTH PLAIN as this user and password (after STARTTLS
    /// when there is one; in plaintext otherwise, which only a test server allows).
    pub auth: Option<(String, String)>,
    /// Stop starting messages after this long; messages in flight are interrupted.
    pub duration_limit: Option<Duration>,
    /// Timeout for every reply (and every write and connect).
    pub read_timeout: Duration,
    /// The domain sent with EHLO.
    pub ehlo_name: String,
    /// The reverse path sent with MAIL FROM.
    pub mail_from: String,
    /// The forward paths, one RCPT TO each.
    pub rcpt_to: Vec<String>,
    /// The server process whose CPU and memory are reported.
    pub server_pid: Option<u32>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl RunOptions {
    /// Defaults: 50 sessions, 1,000 messages of 1 KiB, one connection per session, no extensions.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            sessions: 50,
            messages: 1000,
            sizes: SizeDist::fixed(1024),
            per_connection: None,
            pipelining: false,
            bdat: false,
            starttls: None,
            auth: None,
            duration_limit: None,
            read_timeout: DEFAULT_READ_TIMEOUT,
            ehlo_name: "smtp-load.invalid".to_owned(),
            mail_from: "load@smtp-load.invalid".to_owned(),
            rcpt_to: vec!["sink@localhost".to_owned()],
            server_pid: None,
            progress: false,
        }
    }
}

/// State shared by all sessions of a run.
#[derive(Debug)]
struct Shared {
    /// Messages not yet claimed by a session.
    unclaimed: AtomicU64,
    /// Messages finished (accepted or not), for the progress bar.
    finished: AtomicU64,
    limit_hit: AtomicBool,
}

impl Shared {
    /// Claims the next message, unless all are taken or the run's deadline has passed.
    fn claim(&self, deadline: Option<Instant>) -> bool {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            self.limit_hit.store(true, Ordering::Relaxed);
            return false;
        }
        self.unclaimed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Runs a load test and reports on it. Failures (refusals, IO errors, timeouts) are counted in the
/// report, never returned: a load test should finish and say what went wrong.
pub async fn run(opts: RunOptions) -> Report {
    let plan = Arc::new(make_plan(&opts));
    let shared = Arc::new(Shared {
        unclaimed: AtomicU64::new(opts.messages),
        finished: AtomicU64::new(0),
        limit_hit: AtomicBool::new(false),
    });

    let client_cpu_before = procfs::cpu_seconds(None);
    let server_cpu_before = opts
        .server_pid
        .and_then(|pid| procfs::cpu_seconds(Some(pid)));
    let progress = progress_bar(opts.progress, opts.messages, "messages");
    let ticker = {
        let progress = progress.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // Sessions bump a counter; drawing from here keeps the progress bar off the hot path.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                progress.set_position(shared.finished.load(Ordering::Relaxed));
            }
        })
    };

    let started = Instant::now();
    let mut sessions = JoinSet::new();
    for index in 0..opts.sessions {
        let (plan, shared) = (plan.clone(), shared.clone());
        let per_connection = opts.per_connection.map_or(u64::MAX, NonZeroU64::get);
        let weights = opts.sizes.clone();
        sessions.spawn(session(
            plan,
            shared,
            weights,
            per_connection,
            u64::from(index),
        ));
    }
    let mut stats = SessionStats::new();
    while let Some(joined) = sessions.join_next().await {
        stats.merge(joined.expect("session task does not panic"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();

    let client_cpu_secs = match (client_cpu_before, procfs::cpu_seconds(None)) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    };
    let server = opts.server_pid.map(|pid| {
        let cpu_secs = match (server_cpu_before, procfs::cpu_seconds(Some(pid))) {
            (Some(before), Some(after)) => after - before,
            _ => 0.0,
        };
        let memory = procfs::memory(Some(pid));
        ServerUsage {
            pid,
            cpu_secs,
            cpu_secs_per_1000_messages: (stats.accepted > 0)
                .then(|| cpu_secs * 1000.0 / stats.accepted as f64),
            rss_kib: memory.map(|m| m.rss_kib),
            peak_rss_kib: memory.map(|m| m.peak_rss_kib),
        }
    });
    let per_sec = |n: f64| if elapsed > 0.0 { n / elapsed } else { 0.0 };
    Report {
        target: opts.target.to_string(),
        mode: Mode {
            sessions: opts.sessions,
            per_connection: opts.per_connection.map(NonZeroU64::get),
            pipelining: opts.pipelining,
            bdat: opts.bdat,
            starttls: opts.starttls.is_some(),
            sizes: opts.sizes.to_string(),
        },
        messages_requested: opts.messages,
        messages_accepted: stats.accepted,
        messages_failed: stats.failed,
        messages_interrupted: stats.interrupted,
        messages_not_started: shared.unclaimed.load(Ordering::Relaxed),
        duration_limit_hit: shared.limit_hit.load(Ordering::Relaxed),
        connections: stats.connections,
        elapsed_secs: elapsed,
        messages_per_sec: per_sec(stats.accepted as f64),
        body_bytes: stats.body_bytes,
        mb_per_sec: per_sec(stats.body_bytes as f64) / 1e6,
        latency: Latency::from_histogram(&stats.latency_us),
        errors: stats.errors,
        error_samples: stats.samples,
        client_cpu_secs,
        server,
    }
}

/// Generates every message and the client config once, before the clock starts.
fn make_plan(opts: &RunOptions) -> Plan {
    let first_rcpt = opts.rcpt_to.first().map_or("", String::as_str);
    let payloads = opts
        .sizes
        .entries()
        .iter()
        .enumerate()
        .map(|(i, &(size, _))| Payload {
            message: body::generate_message(size, i as u64 + 1, &opts.mail_from, first_rcpt),
        })
        .collect();
    let config = session::smtp_config(
        &opts.ehlo_name,
        opts.pipelining,
        opts.bdat,
        opts.read_timeout,
        opts.auth.is_some(),
    );
    Plan {
        target: opts.target,
        config: config.map(Arc::new),
        mail_from: opts.mail_from.clone(),
        rcpt_to: opts.rcpt_to.clone(),
        pipelining: opts.pipelining,
        bdat: opts.bdat,
        starttls: opts.starttls.clone(),
        auth: opts.auth.clone(),
        read_timeout: opts.read_timeout,
        deadline: opts.duration_limit.map(|limit| Instant::now() + limit),
        payloads,
    }
}

/// One session: claims messages one at a time and sends them, reconnecting every `per_connection`
/// messages or after a fatal failure.
async fn session(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    sizes: SizeDist,
    per_connection: u64,
    index: u64,
) -> SessionStats {
    let mut rng = Rng::new(index + 1);
    let mut stats = SessionStats::new();
    // Every iteration claims a message first, so the loop ends after at most `messages` iterations.
    'connections: while shared.claim(plan.deadline) {
        let mut conn = match Connection::open(&plan).await {
            Ok(conn) => conn,
            Err(failure) => {
                // The claimed message is lost with the connection.
                stats.failed(&failure);
                shared.finished.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        stats.connections += 1;
        let mut sent = 0;
        loop {
            let payload = &plan.payloads[sizes.pick(&mut rng)];
            let result = conn.send_message(&plan, payload).await;
            shared.finished.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(latency) => stats.accepted(latency, payload.message.len()),
                // A 421 is a refusal that also closes the connection.
                Err(failure) if failure.is_fatal() || !conn.is_open() => {
                    stats.failed(&failure);
                    continue 'connections;
                }
                Err(failure) => stats.failed(&failure),
            }
            sent += 1;
            if sent >= per_connection || !shared.claim(plan.deadline) {
                break;
            }
        }
        conn.quit(&plan).await;
    }
    stats
}

/// A progress bar on stderr, or a hidden one. indicatif also hides it when stderr is not a terminal.
pub(crate) fn progress_bar(visible: bool, len: u64, unit: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!(
        "{{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
