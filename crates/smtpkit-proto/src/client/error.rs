//! [`ClientError`]: why the client refused a command before sending anything.

use core::fmt;

/// The client refused a command locally; nothing was sent and nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The session cannot take this now: the greeting is not done, another command or a
    /// transaction is in progress, or (for content) no content is expected.
    NotReady,
    /// The session is closed.
    Closed,
    /// The server did not offer what this needs (the keyword is given).
    NotOffered(&'static str),
    /// The declared size is over the server's SIZE limit (RFC 1870 6).
    TooBig {
        /// The server's limit.
        max: u64,
    },
    /// AUTH on a session without TLS, and the config does not allow it.
    InsecureAuth,
    /// REQUIRETLS on a session without TLS (RFC 8689 4.1).
    TlsRequired,
    /// An envelope without recipients.
    NoRecipients,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => f.write_str("the session is not ready for this command"),
            Self::Closed => f.write_str("the session is closed"),
            Self::NotOffered(what) => write!(f, "the server does not offer {what}"),
            Self::TooBig { max } => write!(f, "message is over the server's limit of {max}"),
            Self::InsecureAuth => f.write_str("AUTH without TLS is not allowed"),
            Self::TlsRequired => f.write_str("REQUIRETLS needs a TLS session"),
            Self::NoRecipients => f.write_str("the envelope has no recipients"),
        }
    }
}

impl std::error::Error for ClientError {}
