//! What the adapters' own tests share (their `tests/common` modules re-export it): the
//! recording application, certificates, fast settings, an async and a blocking line client,
//! and bounded waiting.

#![allow(missing_docs)]

pub mod blocking;
mod client;
mod recorder;

use std::time::{Duration, Instant};

use smol::{Timer, future};
use smtpkit_server::ServerSettings;

pub use self::client::Raw;
pub use self::recorder::{Conn, Message, Recorder, Store};
pub use crate::pki::Pki;

/// Every wait in the tests is bounded by this.
pub const T: Duration = Duration::from_secs(10);

/// `fut`, or `Err(())` if it takes longer than `limit`. async-io's timer runs under any
/// executor.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, ()> {
    future::or(async { Ok(fut.await) }, async {
        Timer::after(limit).await;
        Err(())
    })
    .await
}

/// Waits for `d`.
pub async fn sleep(d: Duration) {
    Timer::after(d).await;
}

/// Waits until `f` holds, polling; panics after [`T`].
pub async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in time");
        sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for blocking tests.
pub fn eventually_blocking(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The suite's certificates (generated once per process).
pub fn pki() -> &'static Pki {
    Pki::get()
}

/// Fast settings for tests: short command and data timeouts, no per-address limit in the way.
pub fn settings() -> ServerSettings {
    let mut s = ServerSettings {
        hostname: "mx.test".into(),
        max_per_ip: 1000,
        ..Default::default()
    };
    s.timeouts.command = Duration::from_secs(3);
    s.timeouts.data_block = Duration::from_secs(3);
    s
}

/// A server under test with its recording application.
#[derive(Debug)]
pub struct Running<H> {
    /// The adapter's handle.
    pub handle: H,
    /// What the application saw.
    pub rec: Recorder,
    addrs: Vec<std::net::SocketAddr>,
}

impl<H> Running<H> {
    /// A started server listening on `addrs`.
    pub fn new(handle: H, rec: Recorder, addrs: Vec<std::net::SocketAddr>) -> Self {
        Self { handle, rec, addrs }
    }

    /// The address of listener `i`.
    pub fn addr(&self, i: usize) -> std::net::SocketAddr {
        self.addrs[i]
    }
}

/// `builder` with `settings`, one `127.0.0.1:0` listener per entry of `listeners`, and `tls`.
pub fn configure<H, A>(
    builder: smtpkit_server::Builder<H, A>,
    settings: ServerSettings,
    listeners: &[impl Into<smtpkit_server::ListenerSettings> + Clone],
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> smtpkit_server::Builder<H, A> {
    let mut b = builder.settings(settings);
    for l in listeners {
        b = b.listener(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), l.clone());
    }
    match tls {
        Some(tls) => b.tls(tls),
        None => b,
    }
}
