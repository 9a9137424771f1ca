//! Runtime-independent pieces of an SMTP server built on [`smtpkit_proto`], shared by the tokio,
//! smol and mio adapters so that every adapter behaves the same.
//!
//! - [`Handler`] and [`Session`]: the application's API, in the style of go-smtp and Node's
//!   smtp-server. One `Handler` per server makes one `Session` per connection.
//! - [`Dispatcher`]: turns the core's [`Event`](smtpkit_proto::Event)s into `Session` calls and
//!   answers the core. AUTH PLAIN/LOGIN exchanges, BDAT, LMTP per-recipient replies and the
//!   body error latch live here, written once.
//! - [`blocking`]: synchronous forms of `Handler` and `Session` for runtime-free servers.
//! - [`proxy`]: a sans-IO PROXY protocol v1/v2 parser and [`TrustedNetworks`].
//! - [`tls`]: certificate loading, a reloadable certificate resolver and the rustls config.
//! - [`ConnectionLimiter`] and [`Metrics`]: connection bookkeeping shared by the accept loops.
//! - [`FailureLimiter`]: failure counts across sessions (AUTH per client and per user).
//! - [`ServerSettings`] and [`ListenerKind`]: builds each listener's core
//!   [`ServerConfig`](smtpkit_proto::ServerConfig).
//!
//! An adapter's connection task is, in order: accept, check [`ConnectionLimiter`], read a PROXY
//! header when the peer is trusted, run the TLS handshake for [`ListenerKind::Smtps`], build a
//! [`SessionInfo`], call [`Dispatcher::connect`], then run the core's loop (see the
//! [`smtpkit_proto`] crate docs) with [`Dispatcher::handle`] for every event, and finally
//! [`Dispatcher::close`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod blocking;
mod builder;
mod dispatch;
pub mod driver;
mod error;
mod handler;
mod id;
mod lifecycle;
mod limit;
mod listen;
mod metrics;
pub mod proxy;
mod rate;
mod settings;
pub mod tls;

pub use builder::{Adapter, Builder, ListenerSource, Parts, WithExecutor, WithThreads};
pub use dispatch::Dispatcher;
pub use error::Error;
pub use handler::{Decision, Handler, Session, SessionInfo};
pub use id::SessionId;
pub use lifecycle::{Lifecycle, State, TaskGuard};
pub use limit::{ConnectionGuard, ConnectionLimiter, LimitExceeded};
pub use listen::{LISTEN_BACKLOG, ListenerSettings, bind_listener};
pub use metrics::{Metrics, MetricsSnapshot};
pub use proxy::{ProxyError, ProxyHeader, ProxySettings, TrustedNetworks, parse_proxy_header};
pub use rate::{FailureLimiter, Verdict};
pub use settings::{AUTH_MECHANISMS, ListenerKind, ServerSettings};

// The types an application needs to implement a `Session`, so it can depend on this crate alone.
pub use smtpkit_proto::address::{ForwardPath, ReversePath};
pub use smtpkit_proto::auth::Credentials;
pub use smtpkit_proto::extension::Parameters;
pub use smtpkit_proto::{CloseReason, EnhancedCode, Reply, ReplyCode};
