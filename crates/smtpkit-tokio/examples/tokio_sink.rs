//! A sink: accepts every message and discards it, keeping only a byte count. It measures the
//! adapter and the core with nothing else in the way (`cargo xtask loadtest` runs it).
//!
//! Run: `cargo run --release -p smtpkit-tokio --example tokio_sink -- --listen 127.0.0.1:2525`.
//! The first line on stdout is `listening on ADDR`; Ctrl-C shuts down gracefully.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use smtpkit_tokio::{
    Handler, ListenerKind, Reply, ServerSettings, Session, SessionInfo, SmtpServer,
};

const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
const USAGE: &str = "usage: sink [--listen ADDR]  (default 127.0.0.1:2525)";

struct Sink;

/// One connection: only the size of the current message.
struct Discard {
    bytes: u64,
}

impl Handler for Sink {
    type Session = Discard;
    async fn connect(&self, _: &SessionInfo) -> Result<Discard, Reply<'static>> {
        Ok(Discard { bytes: 0 })
    }
}

impl Session for Discard {
    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    async fn reset(&mut self, _: &SessionInfo) {
        self.bytes = 0;
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    listen
        .parse()
        .map_err(|e| format!("bad --listen address `{listen}`: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // A load generator opens many sessions from one address; the per-address limit that
    // protects a real server would only measure itself here.
    let settings = ServerSettings {
        hostname: "sink.test".into(),
        max_connections: 100_000,
        max_per_ip: 100_000,
        ..ServerSettings::default()
    };
    let server = match SmtpServer::builder(Sink)
        .settings(settings)
        .listener(addr, ListenerKind::Smtp)
        .build()
        .await
    {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = server.spawn();
    // The load test waits for this line (with the real port when ADDR had port 0).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", handle.local_addrs()[0]);
    let _ = out.flush();
    drop(out);
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown(Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}
