//! The adapter conformance suite: one list of SMTP conversations, written once as data, run
//! over loopback TCP against every adapter (smtpkit-tokio, smtpkit-smol, smtpkit-mio). Every adapter
//! must answer every conversation with the same bytes and make the same application calls.
//!
//! - [`Adapter`]: starts a server from a [`ServerSpec`] on its own thread or runtime and
//!   returns a [`Running`] server, so the suite itself is plain blocking code.
//! - [`RecordingHandler`]: the application; it records every session call and every message
//!   byte-exact, and refuses things on cue (see its docs).
//! - [`CONVERSATIONS`]: the conversations; each is client bytes and pauses, the exact server
//!   bytes expected, and the calls the application must see.
//! - [`conformance_suite!`]: one `#[test]` per conversation for an adapter.
//! - [`execute`] and [`compare`]: a conversation's [`Transcript`], to compare adapters.
//!
//! Adding an adapter is one line in `tests/conformance.rs`:
//!
//! ```
//! smtp_test::conformance_suite!(tokio_adapter, smtp_test::adapters::Tokio);
//! ```
//!
//! Every socket operation has a timeout, and every wait is bounded, so a hung adapter fails
//! its test instead of hanging the suite.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod adapters;
mod client;
pub mod conversation;
pub mod dns;
mod handler;
pub mod mailauth;
mod pki;
mod runner;
pub mod support;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use conversation::{CONVERSATIONS, Calls, Conversation, Listen, Step, base_settings};
pub use handler::{
    Call, PASSWORD, Record, RecordingHandler, RecordingSession, TOKEN, USER, escape,
};
pub use pki::{Pki, SERVER_NAME};
pub use runner::{Transcript, compare, conversation, execute, run};
use smtpkit_server::rdns::ReverseLookup;
pub use smtpkit_server::{
    Endpoint, ListenerKind, ListenerSettings, ListenerSource, ServerSettings,
};

/// A runtime adapter under test.
pub trait Adapter {
    /// The adapter's name in failure messages.
    const NAME: &'static str;

    /// Binds every listener of `spec` on `127.0.0.1` (port 0) and serves `spec.handler` on a
    /// thread or runtime of its own. Returns once the listeners accept connections.
    ///
    /// Panics if the server cannot start: that fails the test, as it should.
    fn start(spec: ServerSpec) -> Running;
}

/// What server to start.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerSpec {
    /// Settings shared by the listeners.
    pub settings: ServerSettings,
    /// The listeners, in order, each on `127.0.0.1:0` unless [`unix`](Self::unix) names a
    /// socket file for it.
    pub listeners: Vec<ListenerSettings>,
    /// For each listener (by index), a Unix-domain socket path to bind instead of TCP.
    pub unix: Vec<Option<PathBuf>>,
    /// The TLS config, when the server has a certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The application.
    pub handler: RecordingHandler,
    /// The clients' reverse-DNS lookup (none by default).
    pub reverse_dns: Option<Arc<dyn ReverseLookup>>,
}

impl ServerSpec {
    /// A server with these settings, listeners, TLS config and application.
    pub fn new(
        settings: ServerSettings,
        listeners: Vec<ListenerSettings>,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: RecordingHandler,
    ) -> Self {
        Self {
            settings,
            listeners,
            unix: Vec::new(),
            tls,
            handler,
            reverse_dns: None,
        }
    }

    /// Takes the listeners, each with where to bind it: its Unix socket path, or
    /// `127.0.0.1:0`.
    pub fn take_listeners(&mut self) -> Vec<(ListenerSource, ListenerSettings)> {
        let unix = std::mem::take(&mut self.unix);
        std::mem::take(&mut self.listeners)
            .into_iter()
            .enumerate()
            .map(|(i, settings)| {
                let source = match unix.get(i).cloned().flatten() {
                    Some(path) => ListenerSource::unix(path, None),
                    None => SocketAddr::from(([127, 0, 0, 1], 0)).into(),
                };
                (source, settings)
            })
            .collect()
    }

    /// The same server looking its clients up with `lookup`.
    #[must_use]
    pub fn reverse_dns(mut self, lookup: Arc<dyn ReverseLookup>) -> Self {
        self.reverse_dns = Some(lookup);
        self
    }
}

/// Stops a server: graceful shutdown with the given grace period, returning once every
/// session has ended and the listeners are closed.
pub type ShutdownFn = Box<dyn FnOnce(Duration) + Send>;

/// A started server.
///
/// Dropping it shuts the server down with no grace period, so a failing test still stops its
/// server.
pub struct Running {
    /// The bound TCP addresses, in the order of [`ServerSpec::listeners`] (Unix ones left
    /// out).
    pub addrs: Vec<SocketAddr>,
    /// Every listener's address or socket path, in the order of [`ServerSpec::listeners`].
    pub endpoints: Vec<Endpoint>,
    shutdown: Option<ShutdownFn>,
}

impl Running {
    /// A server listening on `endpoints`, stopped by `shutdown`.
    pub fn new(endpoints: Vec<Endpoint>, shutdown: ShutdownFn) -> Self {
        Self {
            addrs: endpoints.iter().filter_map(Endpoint::tcp).collect(),
            endpoints,
            shutdown: Some(shutdown),
        }
    }

    /// Shuts down (see [`ShutdownFn`]); does nothing if that already happened.
    pub fn shutdown(&mut self, grace: Duration) {
        if let Some(f) = self.shutdown.take() {
            f(grace);
        }
    }

    /// Takes the shutdown function, to run it on another thread while clients go on.
    pub fn take_shutdown(&mut self) -> Option<ShutdownFn> {
        self.shutdown.take()
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("endpoints", &self.endpoints)
            .field("running", &self.shutdown.is_some())
            .finish()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

/// Calls `$callback!($($args)*; name, name, ...)` with the name of every conversation, in
/// the order of [`CONVERSATIONS`]. A unit test keeps the two lists equal.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conversation_names {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            $($args)*;
            d1_typical,
            pipelining_burst,
            starttls_injection,
            starttls_refused_by_hook,
            auth_plain_after_starttls,
            auth_login_implicit_tls,
            auth_xoauth2,
            auth_oauthbearer,
            bdat,
            bdat_refused_skip,
            size_overrun,
            bare_line_endings_normalize,
            bare_line_endings_reject,
            line_too_long,
            slow_drip,
            never_reads,
            idle_timeout,
            disconnect_mid_data,
            connection_limit,
            graceful_shutdown,
            shutdown_grace_expires,
            hung_decision,
            hung_data_chunk,
            per_listener_tls_proxy,
            connection_limit_across_listeners,
            shutdown_all_listeners,
            disabled_commands_hidden_extensions,
            xclient_xforward,
            unix_lmtp,
            unix_smtp_starttls,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($adapter:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run::<$adapter>(stringify!($name));
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __names {
    (; $($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

/// The names [`conformance_suite!`] makes tests for.
#[doc(hidden)]
pub const TEST_NAMES: &[&str] = __with_conversation_names!(__names!());

/// Generates a module `$module` with one `#[test]` per conversation, run against
/// `$adapter` (a type implementing [`Adapter`]).
///
/// ```
/// smtp_test::conformance_suite!(mio_adapter, smtp_test::adapters::Mio);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $adapter:ty) => {
        mod $module {
            $crate::__with_conversation_names!(__conformance_tests!($adapter));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_conversation_has_a_test() {
        let names: Vec<_> = CONVERSATIONS.iter().map(|c| c.name).collect();
        assert_eq!(names, TEST_NAMES);
    }

    #[test]
    fn escape_shows_line_endings() {
        assert_eq!(escape(b"a\r\n.\xff"), r#""a\r\n.\xff""#);
    }
}
