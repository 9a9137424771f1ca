//! Logs the session id, client (with its forward-confirmed reverse name when built with the
//! `rdns` feature), TLS version and SNI name, sender, recipients and subject of every message,
//! and accepts it.
//! Run: `cargo run -p smtpkit-tokio --features rdns --example tokio_logging_server`, then send
//! mail to 127.0.0.1:2525.
use smtpkit_tokio::{Decision, Handler, ListenerKind, Reply, Session, SessionInfo, SmtpServer};

struct Logger;
#[derive(Default)]
struct Mail {
    head: Vec<u8>,
}

impl Handler for Logger {
    type Session = Mail;
    async fn connect(&self, _: &SessionInfo) -> Result<Mail, Reply<'static>> {
        Ok(Mail::default())
    }
}

impl Session for Mail {
    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        // Keep only the header section (up to 64 KiB): the subject is all we log.
        let room = (64 * 1024usize).saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        Ok(())
    }
    async fn data_end(&mut self, info: &SessionInfo) -> Decision {
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
        let name = info.reverse_name.as_ref().map(ToString::to_string);
        tracing::info!(session = %info.id, peer = %info.peer, ?name, tls, ?sni, from, to, %subject, "message");
        Decision::Accept
    }
    async fn reset(&mut self, _: &SessionInfo) {
        *self = Self::default();
    }
}

#[tokio::main]
async fn main() -> Result<(), smtpkit_tokio::Error> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let addr = "127.0.0.1:2525"
        .parse::<std::net::SocketAddr>()
        .expect("valid address");
    let builder = SmtpServer::builder(Logger).listener(addr, ListenerKind::Smtp);
    #[cfg(feature = "rdns")]
    let builder = {
        use smtpkit_tokio::rdns::{HickoryResolver, ReverseDns, ReverseDnsSettings};
        let settings = ReverseDnsSettings::default();
        let resolver = HickoryResolver::from_system(settings.timeout)?;
        builder.reverse_dns(std::sync::Arc::new(ReverseDns::new(resolver, settings)))
    };
    let server = builder.build().await?;
    let handle = server.spawn();
    tokio::signal::ctrl_c().await?;
    handle.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}
