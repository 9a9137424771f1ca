//! The shared test fixtures (`smtp_test::support`), and a tokio server to run them against.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Arc;

pub use smtp_test::support::{Raw, Recorder, T, eventually, pki, settings};
use smtpkit_server::blocking::Blocking;
use smtpkit_tokio::{ListenerSettings, ServerHandle, ServerSettings, SmtpServer};

pub type Running = smtp_test::support::Running<ServerHandle>;

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
