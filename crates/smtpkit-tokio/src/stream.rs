//! The connection's bytes for the shared driver: plain TCP or TLS, with bytes read ahead
//! (after a PROXY header) replayed first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smtpkit_server::driver::{ReadAhead, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// TCP that first yields bytes read ahead: those after a PROXY header (an SMTP command, or
/// the ClientHello of an implicit TLS connection) must reach whoever reads next.
#[derive(Debug)]
pub(crate) struct Rewind {
    ahead: ReadAhead,
    tcp: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(n) = this.ahead.take(buf.initialize_unfilled()) {
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
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
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self::Plain(Rewind {
            ahead: ReadAhead::default(),
            tcp,
        })
    }

    fn io(&mut self) -> Option<Pin<&mut (dyn AsyncReadWrite + Send)>> {
        match self {
            Self::Plain(s) => Some(Pin::new(s)),
            Self::Tls(s) => Some(Pin::new(s.as_mut())),
            Self::Closed => None,
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

impl Transport for Stream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let Some(io) = self.io() else {
            return Poll::Ready(Ok(0));
        };
        let mut buf = ReadBuf::new(buf);
        io.poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
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
            .map_or(Poll::Ready(Ok(())), |io| io.poll_shutdown(cx))
    }

    fn unread(&mut self, bytes: Vec<u8>) {
        if let Self::Plain(r) = self {
            r.ahead = ReadAhead::new(bytes);
        }
    }

    async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let Self::Plain(plain) = std::mem::replace(self, Self::Closed) else {
            return Err(io::Error::other("TLS is already on"));
        };
        let tls = TlsAcceptor::from(config).accept(plain).await?;
        *self = Self::Tls(Box::new(tls));
        Ok(())
    }
}
