//! [`Error`]: why a client connection, or one recipient of a message, failed, and whether
//! trying again later can help.

use std::fmt;
use std::io;
use std::sync::Arc;

use smtpkit_proto::client::ClientError;
use smtpkit_proto::reply::ReplyParseError;
use smtpkit_proto::{Reply, ReplyCode};

/// What went wrong with a connection, a command, or one recipient of a message.
///
/// [`is_temporary`](Self::is_temporary) is what a queue branches on: a 4xx reply, a timeout,
/// a refused or reset connection, a failed TLS handshake are worth another try later; a 5xx
/// reply, or a message this server can never take ([`Error::Usage`]), are not. `Clone`, so
/// one connection failure can stand for every recipient it left without an answer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, reading or writing failed (refused, reset, unreachable).
    Io(Arc<io::Error>),
    /// The server did not answer, or did not take content, within the core's deadline
    /// (RFC 5321 4.5.3.2), or the TLS handshake took longer than the command timeout.
    Timeout,
    /// The TLS handshake failed (a certificate that does not verify, say).
    Tls(Arc<io::Error>),
    /// TLS is required but the server does not offer STARTTLS.
    TlsUnavailable,
    /// The server refused: the greeting, EHLO, STARTTLS, AUTH, MAIL, a recipient, DATA,
    /// or the message; or it closed the session with 421.
    Rejected(Reply<'static>),
    /// The server closed the connection without a reply.
    Closed,
    /// The server's bytes are not an SMTP reply, or answer nothing the client sent.
    Protocol(ProtocolError),
    /// The request cannot be sent on this connection: an extension the server does not
    /// offer, a message over its SIZE, AUTH without TLS, a command out of turn. Nothing was
    /// sent.
    Usage(ClientError),
}

/// How the server broke the protocol. For diagnostics; do not branch on the variants.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Bytes that are not a reply.
    Malformed(ReplyParseError),
    /// A reply to nothing the client sent.
    Unsolicited(Reply<'static>),
}

impl Error {
    /// Whether a later attempt may succeed: everything but a 5xx reply and a usage error.
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Rejected(reply) => reply.code().class() != 5,
            Self::Usage(_) => false,
            _ => true,
        }
    }

    /// Whether the failure is final: a 5xx reply, or a message the server cannot take.
    pub fn is_permanent(&self) -> bool {
        !self.is_temporary()
    }

    /// The server's reply, when the server said no.
    pub fn reply(&self) -> Option<&Reply<'static>> {
        match self {
            Self::Rejected(reply) => Some(reply),
            _ => None,
        }
    }

    /// An IO failure as a client error: a timed-out operation is [`Error::Timeout`].
    pub fn io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            Self::Timeout
        } else {
            Self::Io(Arc::new(e))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Timeout => f.write_str("the server did not answer in time"),
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Self::TlsUnavailable => {
                f.write_str("TLS is required but the server does not offer STARTTLS")
            }
            Self::Rejected(reply) => write!(f, "the server replied: {}", ShowReply(reply)),
            Self::Closed => f.write_str("the server closed the connection"),
            Self::Protocol(ProtocolError::Malformed(e)) => write!(f, "malformed reply: {e}"),
            Self::Protocol(ProtocolError::Unsolicited(reply)) => {
                write!(f, "unexpected reply: {}", ShowReply(reply))
            }
            Self::Usage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) | Self::Tls(e) => Some(&**e),
            Self::Usage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Self::Usage(e)
    }
}

/// A reply on one line for messages: code, enhanced code, text.
struct ShowReply<'a>(&'a Reply<'static>);

impl fmt::Display for ShowReply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.code())?;
        if let Some(e) = self.0.enhanced() {
            write!(f, " {e}")?;
        }
        for (i, line) in self.0.lines().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// The code of a reply that closes the session (RFC 5321 3.8).
pub(crate) const CLOSING: ReplyCode = ReplyCode::UNAVAILABLE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_permanent() {
        let r = |code: u16| Reply::new(ReplyCode::new(code).unwrap(), "no").unwrap();
        assert!(Error::Rejected(r(451)).is_temporary());
        assert!(Error::Rejected(r(421)).is_temporary());
        assert!(Error::Rejected(r(550)).is_permanent());
        assert!(Error::Timeout.is_temporary());
        assert!(Error::io(io::ErrorKind::ConnectionRefused.into()).is_temporary());
        assert!(matches!(
            Error::io(io::ErrorKind::TimedOut.into()),
            Error::Timeout
        ));
        assert!(Error::Usage(ClientError::TooBig { max: 10 }).is_permanent());
        assert_eq!(
            Error::Rejected(r(550)).to_string(),
            "the server replied: 550 no"
        );
    }
}
