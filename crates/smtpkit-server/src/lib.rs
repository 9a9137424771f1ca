//! Runtime-independent pieces of an SMTP server built on [`smtpkit_proto`], shared by the tokio,
//! smol and mio adapters so that every adapter behaves the same.
//!
//! - [`Handler`] and [`Session`]: the application's API, in the style of go-smtp and Node's
//!   smtp-server. One `Handler` per server makes one `Session` per connection.
//! - [`Dispatcher`]: turns the core's [`Event`](smtpkit_proto::Event)s into `Session` calls and
//!   answers the core. AUTH PLAIN/LOGIN exchanges, BDAT, LMTP per-recipient replies and the
//!   body error latch live here, written once.
//! - [`collect`]: a bounded message collector (memory, then a temporary file) for handlers that
//!   want the body whole.
//! - [`reader`]: the message as an async reader, through a bounded pipe.
//! - [`blocking`]: synchronous forms of `Handler` and `Session` for runtime-free servers.
//! - [`proxy`]: a sans-IO PROXY protocol v1/v2 parser and [`TrustedNetworks`].
//! - [`rdns`]: the client's forward-confirmed reverse-DNS name over a pluggable
//!   [`Resolver`](rdns::Resolver), with a timeout and a cache.
//! - [`tls`]: certificate loading, a reloadable certificate resolver and the rustls config.
//! - [`ConnectionLimiter`] and [`Metrics`]: connection bookkeeping shared by the accept loops;
//!   [`metrics`] also records every count through the `metrics` facade.
//! - [`FailureLimiter`]: failure counts across sessions (AUTH per client and per user).
//! - [`ServerSettings`] (what all listeners of a server share) and [`ListenerSettings`] (what
//!   may differ per listener: kind, TLS, PROXY): build each listener's core
//!   [`ServerConfig`](smtpkit_proto::ServerConfig).
//! - [`Builder`], [`Error`], [`State`]/[`Lifecycle`]: one builder, one error type and one
//!   lifecycle for every adapter.
//! - [`driver`]: the connection logic written once. An accepted connection goes through
//!   PROXY trust and header, the [`ConnectionLimiter`], the TLS handshake for
//!   [`ListenerKind::Smtps`], then the core's loop (see the [`smtpkit_proto`] crate docs) with
//!   [`Dispatcher::handle`] for every event, each bounded by the core's own deadline, and
//!   finally [`Dispatcher::close`]. The async adapters run [`driver::serve`]; the mio adapter
//!   calls the same runtime-free pieces from its event loop.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

// The crate README's examples are compiled and run as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod blocking;
mod builder;
pub mod client;
pub mod collect;
mod dispatch;
pub mod driver;
mod endpoint;
mod envelope;
mod error;
mod forwarded;
mod handler;
mod id;
mod lifecycle;
mod limit;
mod listen;
pub mod metrics;
pub mod proxy;
mod rate;
pub mod rdns;
pub mod reader;
mod settings;
pub mod tls;
mod tls_info;

pub use crate::metrics::{Metrics, MetricsSnapshot};
pub use builder::{
    Adapter, BoundListener, Builder, ListenerSource, Parts, WithExecutor, WithThreads,
};
pub use dispatch::{Dispatcher, MAX_AUTH_STEPS};
pub use endpoint::{Endpoint, EndpointParseError};
pub use envelope::{Envelope, Recipient};
pub use error::Error;
pub use forwarded::Forwarded;
pub use handler::{Decision, Handler, Session, SessionInfo};
pub use id::SessionId;
pub use lifecycle::{Lifecycle, ListenerGuard, State, TaskGuard};
pub use limit::{ConnectionGuard, ConnectionLimiter, LimitExceeded};
pub use listen::{LISTEN_BACKLOG, ListenerSettings, SocketFile, bind_listener, bind_unix_listener};
pub use proxy::{
    ProxyError, ProxyHeader, ProxySettings, ProxySsl, ProxyTlvs, TrustedNetworks,
    parse_proxy_header,
};
pub use rate::{FailureLimiter, Verdict};
pub use settings::{AUTH_MECHANISMS, DEFAULT_AUTH_MECHANISMS, ListenerKind, ServerSettings};
pub use tls::{ClientAuth, ClientAuthMode};
pub use tls_info::TlsInfo;

// The types an application needs to implement a `Session`, so it can depend on this crate alone.
pub use smtpkit_proto::address::{ForwardPath, ReversePath};
pub use smtpkit_proto::auth::{self, Credentials, Mechanism};
pub use smtpkit_proto::extension::{BodyType, Parameters};
pub use smtpkit_proto::{CloseReason, EnhancedCode, HelloVerb, Reply, ReplyCode};
