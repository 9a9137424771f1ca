//! [`Stream`]: a client connection's bytes, plain first and TLS after a handshake, written once
//! for every adapter; [`Address`]: where a client connects, a TCP address or a Unix socket.
//!
//! An adapter supplies only its [`Socket`] (its runtime's TCP and Unix streams, and how its
//! TLS library wraps them); the state changes and the [`Transport`] methods are here.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;

use super::Transport;

/// A connected plain socket (TCP or Unix) of one runtime, and how its TLS client starts.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The socket after the TLS handshake.
    type Tls: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Runs the client side of a TLS handshake for `server_name`.
    fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> impl Future<Output = io::Result<Self::Tls>> + Send;
}

/// A client connection's bytes: the socket, then TLS on it.
#[derive(Debug)]
pub enum Stream<S: Socket> {
    /// Plaintext.
    Plain(S),
    /// After the handshake.
    Tls(Box<S::Tls>),
    /// A handshake failed; reads see the end, writes fail.
    Closed,
}

impl<S: Socket> Stream<S> {
    /// A plaintext stream on a connected socket.
    pub fn new(socket: impl Into<S>) -> Self {
        Self::Plain(socket.into())
    }

    fn io(&mut self) -> Option<Pin<&mut (dyn ReadWrite + Send)>> {
        match self {
            Self::Plain(s) => Some(Pin::new(s)),
            Self::Tls(s) => Some(Pin::new(s.as_mut())),
            Self::Closed => None,
        }
    }
}

trait ReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> ReadWrite for T {}

impl<S: Socket> Transport for Stream<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.io() {
            Some(io) => io.poll_read(cx, buf),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.io() {
            Some(io) => io.poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()
            .map_or(Poll::Ready(Ok(())), |io| io.poll_flush(cx))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()
            .map_or(Poll::Ready(Ok(())), |io| io.poll_close(cx))
    }

    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<()> {
        let Self::Plain(socket) = std::mem::replace(self, Self::Closed) else {
            return Err(io::Error::other("TLS is already on"));
        };
        let tls = socket.start_tls(config, server_name).await?;
        *self = Self::Tls(Box::new(tls));
        Ok(())
    }
}

/// Where a client connects: `192.0.2.1:24`, `[2001:db8::1]:24`, or `unix:/run/dovecot/lmtp`
/// (Dovecot's LMTP, a local content filter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The path of a Unix-domain stream socket.
    Unix(PathBuf),
}

/// The prefix that marks a Unix socket path in an [`Address`]'s text form (Postfix's
/// `lmtp:unix:/path` uses the same word).
const UNIX_PREFIX: &str = "unix:";

/// Why a text is not an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither ip:port nor unix:/path")]
pub struct AddressError(String);

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(UNIX_PREFIX) {
            Some(path) if !path.is_empty() => Ok(Self::Unix(PathBuf::from(path))),
            Some(_) => Err(AddressError(s.to_owned())),
            None => s
                .parse()
                .map(Self::Tcp)
                .map_err(|_| AddressError(s.to_owned())),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for (text, parsed) in [
            (
                "127.0.0.1:24",
                Address::Tcp("127.0.0.1:24".parse().unwrap()),
            ),
            ("[::1]:24", Address::Tcp("[::1]:24".parse().unwrap())),
            (
                "unix:/run/dovecot/lmtp",
                Address::Unix("/run/dovecot/lmtp".into()),
            ),
        ] {
            assert_eq!(text.parse::<Address>(), Ok(parsed.clone()));
            assert_eq!(parsed.to_string(), text);
        }
        for bad in ["unix:", "localhost", "127.0.0.1", "/run/dovecot/lmtp", ""] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
