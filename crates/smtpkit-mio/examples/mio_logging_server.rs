//! Logs the session id, client, TLS version and SNI name, sender, recipients and subject of
//! every message, and accepts it.
//! Run: `cargo run -p smtpkit-mio --example mio_logging_server`, then send mail to 127.0.0.1:2525.
//! Plain synchronous code: no async runtime anywhere.
use smtpkit_mio::{Blocking, BlockingHandler, BlockingSession, Decision, ListenerKind};
use smtpkit_mio::{Reply, SessionInfo, SmtpServer};

struct Logger;
#[derive(Default)]
struct Mail {
    head: Vec<u8>,
}

impl BlockingHandler for Logger {
    type Session = Mail;
    fn connect(&self, _: &SessionInfo) -> Result<Mail, Reply<'static>> {
        Ok(Mail::default())
    }
}

impl BlockingSession for Mail {
    fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        // Keep only the header section (up to 64 KiB): the subject is all we log.
        let room = (64 * 1024usize).saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        Ok(())
    }
    fn data_end(&mut self, info: &SessionInfo) -> Decision {
        let subject = mail_parser::MessageParser::default()
            .parse_headers(&self.head)
            .and_then(|m| m.subject().map(str::to_owned))
            .unwrap_or_default();
        // The dispatcher keeps the envelope, so the session need not collect it.
        let (from, to) = info.envelope.as_ref().map_or_else(Default::default, |e| {
            let to: Vec<_> = e
                .recipients
                .iter()
                .map(|r| r.forward_path.as_str())
                .collect();
            (e.reverse_path.as_str(), to.join(","))
        });
        let tls = info
            .tls_info
            .as_deref()
            .map_or("none", |t| t.version_name());
        let sni = info.tls_info.as_deref().and_then(|t| t.sni.as_deref());
        tracing::info!(session = %info.id, peer = %info.peer, tls, ?sni, from, to, %subject, "message");
        Decision::Accept
    }
    fn reset(&mut self, _: &SessionInfo) {
        *self = Self::default();
    }
}

fn main() -> Result<(), smtpkit_mio::Error> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let addr = "127.0.0.1:2525"
        .parse::<std::net::SocketAddr>()
        .expect("valid address");
    let server = SmtpServer::builder(Blocking(Logger))
        .listener(addr, ListenerKind::Smtp)
        .build()?;
    // Stop with Ctrl-C (the process ends); a real program would call
    // `server.handle().shutdown(grace)` from its signal handling thread.
    server.run()
}
