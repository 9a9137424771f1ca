//! `smtp-load`: command-line front end; the work is done in the library.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use rustls::pki_types::ServerName;
use smtp_load::baseline::Tally;
use smtp_load::tls::{self, Verification};
use smtp_load::{IdleOptions, RunOptions, SizeDist, StartTls};
use tokio::net::TcpListener;

/// SMTP load generator and baseline server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send messages over concurrent sessions and report throughput, latency and errors.
    Run(RunArgs),
    /// Run the trivial baseline SMTP server (fixed replies, no storage).
    BaselineServer {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: SocketAddr,
        /// Print `received N messages` on standard output once N messages have arrived (a queue
        /// benchmark waits for that line), then keep serving.
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Hold many idle connections open and report the server's memory per connection.
    Idle(IdleArgs),
    /// Drive an smtpd binary through hostile clients and broken storage; print a table and exit
    /// non-zero on any failed check (run by `cargo xtask torture`).
    Torture(TortureArgs),
}

#[derive(Debug, Args)]
struct TortureArgs {
    /// The smtpd binary to test (a release build).
    #[arg(long)]
    smtpd: PathBuf,
    /// Small counts for CI (well under a minute).
    #[arg(long)]
    smoke: bool,
    /// Run only these scenarios (flood, slow, size, storage, crash, auth, recipients, injection);
    /// repeatable.
    #[arg(long)]
    only: Vec<String>,
    /// Keep the temporary directory (configs, logs, Maildirs) even when everything passes.
    #[arg(long)]
    keep: bool,
    /// Seconds within which a trickling client must be cut.
    #[arg(long)]
    slow_cut: Option<u64>,
    /// Password checks the server may run at once (its permit pool).
    #[arg(long)]
    auth_permits: Option<u64>,
    /// MiB of RSS allowed above idle during the AUTH storm, beyond the permits' Argon2 memory.
    #[arg(long)]
    auth_headroom_mib: Option<u64>,
    /// MiB above idle, beyond the permits' Argon2 memory, the server may still hold a few seconds
    /// after the AUTH storm.
    #[arg(long)]
    auth_returned_slack_mib: Option<u64>,
    /// Do not require a cross-session AUTH failure rate limit.
    #[arg(long)]
    no_auth_rate_limit: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The SMTP server, as host:port.
    #[arg(long)]
    target: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 50)]
    sessions: u32,
    /// Messages to send in total.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Message size in bytes (suffixes k and m allowed).
    #[arg(long, default_value = "1k", value_parser = smtp_load::body::parse_size)]
    size: usize,
    /// Message size distribution, e.g. 1k:70,64k:25,1m:5 (overrides --size).
    #[arg(long)]
    size_dist: Option<SizeDist>,
    /// Messages per connection (1 = a new connection for every message). Default: one connection per
    /// session for all its messages.
    #[arg(long)]
    per_connection: Option<NonZeroU64>,
    /// Send MAIL, RCPT and DATA in one write (RFC 2920 PIPELINING).
    #[arg(long)]
    pipelining: bool,
    /// Send content with BDAT chunks (RFC 3030 CHUNKING) instead of DATA.
    #[arg(long)]
    bdat: bool,
    /// Upgrade every connection with STARTTLS (needs --insecure-tls or --ca).
    #[arg(long)]
    starttls: bool,
    /// Accept any server certificate (self-signed test servers only).
    #[arg(long, requires = "starttls", conflicts_with = "ca")]
    insecure_tls: bool,
    /// PEM file of CA certificates to verify the server with.
    #[arg(long, requires = "starttls")]
    ca: Option<PathBuf>,
    /// Name to verify the certificate against (default: the host part of --target).
    #[arg(long, requires = "starttls")]
    tls_name: Option<String>,
    /// Authenticate every connection with AUTH PLAIN, as `user:password` (plaintext is allowed:
    /// for test servers on loopback).
    #[arg(long, value_parser = parse_auth)]
    auth: Option<(String, String)>,
    /// Stop the whole run after this many seconds.
    #[arg(long)]
    duration_limit: Option<u64>,
    /// Timeout for every reply, in seconds.
    #[arg(long, default_value_t = 30)]
    read_timeout: u64,
    /// Reverse path for MAIL FROM.
    #[arg(long, default_value = "load@smtp-load.invalid")]
    mail_from: String,
    /// Recipient for RCPT TO (repeat for several recipients per message).
    #[arg(long, default_value = "sink@localhost")]
    rcpt: Vec<String>,
    /// Domain sent with EHLO.
    #[arg(long, default_value = "smtp-load.invalid")]
    ehlo: String,
    /// PID of the server process, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Do not show the progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// The SMTP server, as host:port.
    #[arg(long)]
    target: String,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Seconds to hold the connections after they are all open.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// PID of the server process, to measure its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Timeout for each connect and reply, in seconds.
    #[arg(long, default_value_t = 30)]
    read_timeout: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Do not show the progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::BaselineServer { listen, expect } => baseline(listen, expect).await,
        Command::Idle(args) => idle(args).await,
        Command::Torture(args) => torture(args).await,
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("smtp-load: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> Result<ExitCode, String> {
    let (target, host) = resolve(&args.target)?;
    check_pid(args.server_pid)?;
    // Hundreds of sessions with --per-connection 1 churn through descriptors quickly.
    smtp_load::idle::raise_nofile_limit();
    let starttls = if args.starttls {
        let verification = match (&args.ca, args.insecure_tls) {
            (Some(path), _) => Verification::CaFile(path),
            (None, true) => Verification::Insecure,
            (None, false) => return Err("--starttls needs --ca FILE or --insecure-tls".into()),
        };
        let config = tls::client_config(verification).map_err(|e| e.to_string())?;
        let name = args.tls_name.unwrap_or(host);
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("invalid TLS name `{name}`: {e}"))?;
        Some(StartTls {
            config,
            server_name,
        })
    } else {
        None
    };
    let opts = RunOptions {
        sessions: args.sessions.max(1),
        messages: args.messages,
        sizes: args.size_dist.unwrap_or_else(|| SizeDist::fixed(args.size)),
        per_connection: args.per_connection,
        pipelining: args.pipelining,
        bdat: args.bdat,
        starttls,
        auth: args.auth,
        duration_limit: args.duration_limit.map(Duration::from_secs),
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        ehlo_name: args.ehlo,
        mail_from: args.mail_from,
        rcpt_to: args.rcpt,
        server_pid: args.server_pid,
        progress: !args.no_progress && !args.json,
        ..RunOptions::new(target)
    };
    let report = smtp_load::run(opts).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{report}");
    }
    Ok(if report.all_accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn baseline(listen: SocketAddr, expect: Option<u64>) -> Result<ExitCode, String> {
    smtp_load::idle::raise_nofile_limit();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts read the port from this first line, so it must reach them before any connection does.
    println!("listening on {addr}");
    let tally = expect.map(|n| Arc::new(Tally::new(n)));
    if let Some(tally) = tally.clone() {
        tokio::spawn(async move {
            tally.complete().await;
            println!("received {} messages", tally.received());
        });
    }
    tokio::select! {
        result = smtp_load::baseline::counting_server(listener, tally) => result.map_err(|e| format!("accept: {e}"))?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn idle(args: IdleArgs) -> Result<ExitCode, String> {
    let (target, _) = resolve(&args.target)?;
    check_pid(args.server_pid)?;
    let opts = IdleOptions {
        connections: args.connections,
        hold: Duration::from_secs(args.hold),
        server_pid: args.server_pid,
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        progress: !args.no_progress && !args.json,
        ..IdleOptions::new(target)
    };
    let report = smtp_load::idle(opts).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{report}");
    }
    Ok(
        if report.connections_established == report.connections_requested {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn torture(args: TortureArgs) -> Result<ExitCode, String> {
    use smtp_load::torture::{self, Counts, Expectations, TortureOptions, Verdict};
    let known = torture::scenario_names();
    if let Some(bad) = args
        .only
        .iter()
        .find(|o| !known.iter().any(|k| k.starts_with(o.as_str())))
    {
        return Err(format!(
            "unknown scenario `{bad}`; expected one of {}",
            known.join(", ")
        ));
    }
    let mut expect = Expectations::default();
    if let Some(s) = args.slow_cut {
        expect.slow_cut = Duration::from_secs(s);
    }
    if let Some(n) = args.auth_permits {
        expect.auth_permits = n;
    }
    if let Some(n) = args.auth_headroom_mib {
        expect.headroom_mib = n;
    }
    if let Some(n) = args.auth_returned_slack_mib {
        expect.returned_slack_mib = n;
    }
    expect.auth_rate_limit = !args.no_auth_rate_limit;
    // Each server runs in its own directory, so a relative path would not find the binary.
    let smtpd =
        std::fs::canonicalize(&args.smtpd).map_err(|e| format!("{}: {e}", args.smtpd.display()))?;
    let opts = TortureOptions {
        smtpd,
        counts: if args.smoke {
            Counts::smoke()
        } else {
            Counts::full()
        },
        expect,
        only: args.only,
        keep: args.keep,
    };
    let started = std::time::Instant::now();
    let (rows, kept) = torture::run(&opts).await?;
    println!("\n{}", torture::table(&rows));
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Fail).count();
    println!(
        "{} checks, {failed} failed, {} skipped, in {:.0?}",
        rows.len(),
        rows.iter()
            .filter(|r| matches!(r.verdict, Verdict::Skip(_)))
            .count(),
        started.elapsed()
    );
    if let Some(dir) = kept {
        println!("configs, logs and Maildirs kept in {}", dir.display());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resolves `host:port` to its first address, and returns the host part for TLS name checks.
fn resolve(target: &str) -> Result<(SocketAddr, String), String> {
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{target}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{target}` resolves to no address"))?;
    let host = target
        .rsplit_once(':')
        .map_or(target, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((addr, host))
}

/// `user:password`, split at the first colon (a password may contain colons, a user name not).
fn parse_auth(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .filter(|(user, _)| !user.is_empty())
        .map(|(user, password)| (user.to_owned(), password.to_owned()))
        .ok_or_else(|| "expected user:password".to_owned())
}

fn check_pid(pid: Option<u32>) -> Result<(), String> {
    match pid {
        Some(pid) if smtp_load::procfs::cpu_seconds(Some(pid)).is_none() => Err(format!(
            "no readable /proc/{pid}/stat: is --server-pid right?"
        )),
        _ => Ok(()),
    }
}
