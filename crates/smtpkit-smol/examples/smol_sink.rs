//! A server that accepts every message and discards it: the smol adapter under load, with no
//! application cost. `cargo xtask loadtest` runs it.
//!
//! Run: `cargo run --release -p smtpkit-smol --example smol_sink -- --listen 127.0.0.1:2525`. The first
//! line on stdout is `listening on ADDR` (the bound address, so `:0` works).
use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use smtpkit_smol::{
    Handler, ListenerKind, Reply, ServerSettings, Session, SessionInfo, SmtpServer,
};

struct Sink;
struct Discard;

impl Handler for Sink {
    type Session = Discard;
    async fn connect(&self, _: &SessionInfo) -> Result<Discard, Reply<'static>> {
        Ok(Discard)
    }
}

// Every default accepts and `data_chunk` ignores the content.
impl Session for Discard {}

fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:2525".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().ok_or("--listen needs an address")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: sink [--listen ADDR]"
                ));
            }
        }
    }
    addr.parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = listen_addr()?;
    let settings = ServerSettings {
        hostname: "sink.test".into(),
        // A load generator opens all its sessions from one address.
        max_connections: 100_000,
        max_per_ip: 100_000,
        ..Default::default()
    };
    // One executor thread per core, like tokio's multi-threaded runtime; this thread is one.
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let executor = Arc::new(smol::Executor::new());
    for _ in 1..threads {
        let ex = Arc::clone(&executor);
        std::thread::spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())));
    }
    smol::block_on(executor.run(async {
        let server = SmtpServer::builder(Sink)
            .settings(settings)
            .executor(Arc::clone(&executor))
            .listener(addr, ListenerKind::Smtp)
            .build()
            .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.local_addrs()[0])?;
        out.flush()?;
        drop(out);
        // Runs until the process is killed.
        server.run().await;
        Ok(())
    }))
}
