//! Sending mail with tokio: connect by address, optionally with TLS (implicit for port 465,
//! or STARTTLS required or opportunistic), then send messages over the one connection.
//!
//! ```
//! use std::sync::Arc;
//! use smtpkit_tokio::client::{self, Body, ClientConfig, ClientOptions, Envelope, Recipient};
//! use smtpkit_tokio::{ForwardPath, Handler, ListenerKind, Reply, ReversePath, Session, SessionInfo, SmtpServer};
//! use smtpkit_proto::address::Mailbox;
//!
//! // A server that accepts everything, to send to.
//! struct Accept;
//! struct Conn;
//! impl Handler for Accept {
//!     type Session = Conn;
//!     async fn connect(&self, _: &SessionInfo) -> Result<Conn, Reply<'static>> { Ok(Conn) }
//! }
//! impl Session for Conn {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = SmtpServer::builder(Accept)
//!     .listener("127.0.0.1:0".parse::<std::net::SocketAddr>()?, ListenerKind::Smtp)
//!     .build()
//!     .await?;
//! let addr = server.local_addrs()[0];
//! let handle = server.spawn();
//!
//! let config = Arc::new(ClientConfig::new(ClientOptions { hostname: "client.example".into(), ..Default::default() })?);
//! let mut conn = client::connect(addr, config, None).await?;
//! let to = [Recipient::new(ForwardPath::Mailbox(Mailbox::parse("bob@example.net")?))];
//! let from = ReversePath::Mailbox(Mailbox::parse("alice@example.org")?);
//! let delivery = conn.send(&Envelope::new(from, &to), Body::Bytes(b"Subject: hi\r\n\r\nHello\r\n")).await?;
//! assert!(delivery.all_delivered());
//! conn.quit().await?;
//! handle.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```
//!
//! The session logic is `smtpkit_server::client`, shared with `smtpkit-smol` and
//! `smtpkit-mio`; this module supplies tokio's TCP and Unix sockets, timer and rustls
//! handshake.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use smtpkit_proto::client::{
    Capabilities, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient, Sasl,
};
pub use smtpkit_server::client::{
    Address, AnyCertificate, Body, Delivery, Error, ProtocolError, TlsMode, TlsSettings, Transport,
    any_certificate_config, client_config,
};

use crate::Tokio;

/// A client connection on tokio.
pub type Connection = smtpkit_server::client::Connection<Tokio, Stream>;

/// A client connection's bytes: a TCP or Unix socket, then TLS on it.
pub type Stream = smtpkit_server::client::Stream<Socket>;

/// Connects to `addr` and opens a session ([`Connection::open`]): greeting, EHLO, and TLS as
/// `tls` says. The TCP connect may take as long as the greeting timeout.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    tls: Option<TlsSettings>,
) -> Result<Connection, Error> {
    let limit = config.options().timeouts.greeting;
    let tcp = within(limit, TcpStream::connect(addr)).await?;
    Connection::open(Stream::new(tcp), config, tls).await
}

/// Connects to the Unix socket at `path` (Dovecot's LMTP, say) and opens a session as
/// [`connect`] does.
#[cfg(unix)]
pub async fn connect_unix(
    path: impl AsRef<std::path::Path>,
    config: Arc<ClientConfig>,
    tls: Option<TlsSettings>,
) -> Result<Connection, Error> {
    let limit = config.options().timeouts.greeting;
    let unix = within(limit, UnixStream::connect(path)).await?;
    Connection::open(Stream::new(unix), config, tls).await
}

/// [`connect`] or [`connect_unix`], as `address` says.
pub async fn connect_to(
    address: &Address,
    config: Arc<ClientConfig>,
    tls: Option<TlsSettings>,
) -> Result<Connection, Error> {
    match address {
        Address::Tcp(addr) => connect(*addr, config, tls).await,
        #[cfg(unix)]
        Address::Unix(path) => connect_unix(path, config, tls).await,
        #[cfg(not(unix))]
        Address::Unix(_) => Err(Error::io(io::ErrorKind::Unsupported.into())),
    }
}

/// A connect bounded by `limit`.
async fn within<T>(
    limit: std::time::Duration,
    connect: impl Future<Output = io::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, connect).await {
        Ok(r) => r.map_err(Error::io),
        Err(_) => Err(Error::Timeout),
    }
}

/// A connected socket, before TLS.
#[derive(Debug)]
pub enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain stream socket.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl From<TcpStream> for Socket {
    /// Commands are small and a pipelined group is written at once, so Nagle's algorithm
    /// would only add delay.
    fn from(tcp: TcpStream) -> Self {
        let _ = tcp.set_nodelay(true);
        Self::Tcp(tcp)
    }
}

#[cfg(unix)]
impl From<UnixStream> for Socket {
    fn from(unix: UnixStream) -> Self {
        Self::Unix(unix)
    }
}

impl Socket {
    fn io(self: Pin<&mut Self>) -> Pin<&mut (dyn ReadWrite + Send)> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s),
        }
    }
}

trait ReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> ReadWrite for T {}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

impl futures_io::AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        compat_read(self, cx, buf)
    }
}

impl futures_io::AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(self, cx)
    }
}

impl smtpkit_server::client::Socket for Socket {
    type Tls = Compat<TlsStream<Self>>;

    async fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<Self::Tls> {
        let tls = TlsConnector::from(config)
            .connect(server_name, self)
            .await?;
        Ok(Compat(tls))
    }
}

/// A tokio stream seen through the `futures-io` traits the shared client driver uses.
#[derive(Debug)]
pub struct Compat<T>(T);

/// A tokio read into a plain buffer.
fn compat_read<R: AsyncRead + ?Sized>(
    r: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    r.poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
}

impl<T: AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        compat_read(Pin::new(&mut self.0), cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tokio reader as a message [`Body`]: `Body::Reader(&mut BodyReader(file))`.
#[derive(Debug)]
pub struct BodyReader<R>(pub R);

impl<R: AsyncRead + Unpin> futures_io::AsyncRead for BodyReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        compat_read(Pin::new(&mut self.0), cx, buf)
    }
}
