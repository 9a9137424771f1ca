//! Accepts every message and discards it: the mio server for `cargo xtask loadtest`.
//!
//! Run: `cargo run --release -p smtpkit-mio --example mio_sink -- --listen 127.0.0.1:2525`.
//! The first line on stdout is `listening on ADDR`.
use std::io::Write;
use std::net::SocketAddr;

use smtpkit_mio::{Blocking, BlockingHandler, BlockingSession, ListenerKind, Reply, SessionInfo};
use smtpkit_mio::{ServerSettings, SmtpServer};

struct Sink;
struct Discard;

impl BlockingHandler for Sink {
    type Session = Discard;
    fn connect(&self, _: &SessionInfo) -> Result<Discard, Reply<'static>> {
        Ok(Discard)
    }
}

// Every default accepts, and the default `data_chunk` drops the content.
impl BlockingSession for Discard {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:2525".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            other => {
                return Err(
                    format!("unknown argument {other:?}; usage: sink [--listen ADDR]").into(),
                );
            }
        }
    }
    let settings = ServerSettings {
        // A load generator opens many sessions from one address.
        max_per_ip: 10_000,
        max_connections: 10_000,
        ..Default::default()
    };
    let server = SmtpServer::builder(Blocking(Sink))
        .settings(settings)
        .listener(listen, ListenerKind::Smtp)
        .build()?;
    let addr = server.local_addrs()[0];
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    drop(out);
    server.run()?;
    Ok(())
}
