//! The connection's bytes for the shared driver: plain TCP or a Unix-domain socket, or TLS
//! over either, with bytes read ahead (after a PROXY header) replayed first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_net::TcpStream;
use async_net::unix::UnixStream;
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use smtpkit_server::TlsInfo;
use smtpkit_server::driver::{ReadAhead, Transport};

/// TCP that first yields bytes read ahead: those after a PROXY header (an SMTP command, or
/// the ClientHello of an implicit TLS connection) must reach whoever reads next.
/// An accepted connection.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! on_socket {
    ($socket:expr, |$s:ident| $call:expr) => {
        match $socket {
            Socket::Tcp($s) => $call,
            Socket::Unix($s) => $call,
        }
    };
}

#[derive(Debug)]
pub(crate) struct Rewind {
    ahead: ReadAhead,
    socket: Socket,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.ahead.take(buf) {
            Some(n) => Poll::Ready(Ok(n)),
            None => on_socket!(&mut this.socket, |s| Pin::new(s).poll_read(cx, buf)),
        }
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_socket!(&mut self.get_mut().socket, |s| Pin::new(s)
            .poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_socket!(&mut self.get_mut().socket, |s| Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_socket!(&mut self.get_mut().socket, |s| Pin::new(s).poll_close(cx))
    }
}

/// The session's stream: plain until STARTTLS or for the whole session, TLS after it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(Rewind),
    Tls(Box<TlsStream<Rewind>>),
    /// The TCP stream went into a failed TLS handshake; reads see EOF, writes fail.
    Closed,
}

impl Stream {
    pub(crate) fn new(socket: Socket) -> Self {
        Self::Plain(Rewind {
            ahead: ReadAhead::default(),
            socket,
        })
    }
}

/// Calls `$method` on the plain or TLS stream; `$closed` when the handshake failed.
macro_rules! on_stream {
    ($self:ident, $closed:expr, |$io:ident| $call:expr) => {
        match $self {
            Stream::Plain($io) => $call,
            Stream::Tls(tls) => {
                let $io = tls.as_mut();
                $call
            }
            Stream::Closed => Poll::Ready($closed),
        }
    };
}

impl Transport for Stream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        on_stream!(self, Ok(0), |io| Pin::new(io).poll_read(cx, buf))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = Err(io::ErrorKind::NotConnected.into());
        on_stream!(self, closed, |io| Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, Ok(()), |io| Pin::new(io).poll_flush(cx))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self, Ok(()), |io| Pin::new(io).poll_close(cx))
    }

    fn unread(&mut self, bytes: Vec<u8>) {
        if let Self::Plain(r) = self {
            r.ahead = ReadAhead::new(bytes);
        }
    }

    async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<TlsInfo> {
        let Self::Plain(plain) = std::mem::replace(self, Self::Closed) else {
            return Err(io::Error::other("TLS is already on"));
        };
        let tls = TlsAcceptor::from(config).accept(plain).await?;
        let facts = TlsInfo::from_connection(tls.get_ref().1);
        *self = Self::Tls(Box::new(tls));
        Ok(facts)
    }
}
