//! [`Error`]: why a server could not be built or started, the same for every adapter.

use std::io;

use smtpkit_proto::server::ConfigError;

use crate::settings::ListenerKind;

/// Why a server could not be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring a listener (or, for mio, creating a poll or a thread) failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The settings do not make a valid core config.
    #[error("invalid settings: {0}")]
    Config(#[from] ConfigError),
    /// A listener needs TLS (implicit TLS) and the server has no TLS config.
    #[error("{0} listener needs a TLS config")]
    MissingTls(ListenerKind),
    /// A Unix-domain socket listener was configured with something only TCP has (the
    /// PROXY protocol, implicit TLS).
    #[error("a Unix-socket listener cannot use {0}")]
    UnixListener(&'static str),
    /// A listener's TLS config could not be made (client-certificate verification).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// No listener was added.
    #[error("no listener")]
    NoListener,
}
