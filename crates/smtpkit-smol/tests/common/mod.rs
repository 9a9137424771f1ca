//! The shared test fixtures (`smtp_test::support`), a smol server to run them against, TLS
//! for the client, and a bounded `block_on`.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use smol::io::{AsyncRead, AsyncWrite};
pub use smtp_test::support::{Raw, Recorder, T, eventually, pki, settings, sleep, timeout};
use smtpkit_server::blocking::Blocking;
use smtpkit_smol::{ListenerSettings, ServerHandle, ServerSettings, SmtpServer};

pub type Running = smtp_test::support::Running<ServerHandle>;

/// Runs a test body on the current thread (the server runs on smol's global executor), failing
/// it if the whole body takes longer than `limit`.
pub fn run<F: Future<Output = ()>>(limit: Duration, test: F) {
    smol::block_on(async {
        timeout(limit, test).await.expect("test timed out");
    });
}

pub async fn start(
    settings: ServerSettings,
    listeners: &[impl Into<ListenerSettings> + Clone],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let rec = Recorder::default();
    let b = SmtpServer::builder(Blocking(rec.clone()));
    let server = smtp_test::support::configure(b, settings, listeners, tls);
    let handle = server.build().await.unwrap().spawn();
    Running::new(handle.clone(), rec, handle.local_addrs().to_vec())
}

/// Runs the client handshake over `io` for `localhost`, trusting only the test CA.
pub async fn handshake<IO>(io: IO) -> futures_rustls::client::TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(Arc::clone(&pki().client));
    timeout(T, connector.connect("localhost".try_into().unwrap(), io))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed")
}
