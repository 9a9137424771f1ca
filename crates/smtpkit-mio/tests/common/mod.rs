//! The shared test fixtures (`smtp_test::support`), and a mio server to run them against.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use smtp_test::support::blocking::Raw;
pub use smtp_test::support::eventually_blocking as eventually;
pub use smtp_test::support::{Recorder, T, pki, settings};
use smtpkit_mio::{Blocking, ListenerSettings, ServerHandle, ServerSettings, SmtpServer};

/// A started server; dropping it shuts it down, so no threads outlive a test.
pub struct Running {
    pub handle: ServerHandle,
    pub rec: Recorder,
}

impl Running {
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.handle.local_addrs()[i]
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::from_millis(100));
    }
}

pub fn start(
    settings: ServerSettings,
    listeners: &[impl Into<ListenerSettings> + Clone],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let rec = Recorder::default();
    let b = SmtpServer::builder(Blocking(rec.clone())).threads(2.try_into().unwrap());
    let server = smtp_test::support::configure(b, settings, listeners, tls);
    let handle = server.build().unwrap().start().unwrap();
    Running { handle, rec }
}
