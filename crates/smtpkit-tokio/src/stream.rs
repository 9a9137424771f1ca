//! The connection's bytes for the shared driver: plain TCP or a Unix-domain socket, or TLS
//! over either, with bytes read ahead (after a PROXY header) replayed first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io::Cursor;

use smtpkit_server::TlsInfo;
use smtpkit_server::driver::Transport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Chain, Join, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// TCP whose reads first yield bytes read ahead: those after a PROXY header (an SMTP command,
/// or the ClientHello of an implicit TLS connection) must reach whoever reads next.
pub(crate) type Rewind = Join<Chain<Cursor<Vec<u8>>, ReadHalf>, WriteHalf>;

/// An accepted connection.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

fn rewind(socket: Socket) -> Rewind {
    let (read, write) = match socket {
        Socket::Tcp(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
        }
        Socket::Unix(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Unix(r), WriteHalf::Unix(w))
        }
    };
    tokio::io::join(Cursor::new(Vec::new()).chain(read), write)
}

/// The read side of a [`Socket`]: split halves without a lock, as TLS needs reads and
/// writes apart.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The write side of a [`Socket`].
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Self::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Self::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_flush(cx),
            Self::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Self::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
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
        Self::Plain(rewind(socket))
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
        // A `Chain` never goes back to its first reader once that has ended, so the
        // read-ahead gets a new one.
        if let Self::Plain(plain) = std::mem::replace(self, Self::Closed) {
            let (read, write) = plain.into_inner();
            let (_, read) = read.into_inner();
            *self = Self::Plain(tokio::io::join(Cursor::new(bytes).chain(read), write));
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
