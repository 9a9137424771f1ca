//! Sending mail with smol: connect by address, optionally with TLS (implicit for port 465,
//! or STARTTLS required or opportunistic), then send messages over the one connection.
//!
//! ```
//! use std::sync::Arc;
//! use smtpkit_smol::client::{self, Body, ClientConfig, ClientOptions, Envelope, Recipient};
//! use smtpkit_smol::{ForwardPath, Handler, ListenerKind, Reply, ReversePath, Session, SessionInfo, SmtpServer};
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let server = SmtpServer::builder(Accept)
//!         .listener("127.0.0.1:0".parse::<std::net::SocketAddr>()?, ListenerKind::Smtp)
//!         .build()
//!         .await?;
//!     let addr = server.local_addrs()[0];
//!     let handle = server.spawn();
//!
//!     let config = Arc::new(ClientConfig::new(ClientOptions { hostname: "client.example".into(), ..Default::default() })?);
//!     let mut conn = client::connect(addr, config, None).await?;
//!     let to = [Recipient::new(ForwardPath::Mailbox(Mailbox::parse("bob@example.net")?))];
//!     let from = ReversePath::Mailbox(Mailbox::parse("alice@example.org")?);
//!     let delivery = conn.send(&Envelope::new(from, &to), Body::Bytes(b"Subject: hi\r\n\r\nHello\r\n")).await?;
//!     assert!(delivery.all_delivered());
//!     conn.quit().await?;
//!     handle.shutdown(std::time::Duration::from_secs(1)).await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! The session logic is `smtpkit_server::client`, shared with `smtpkit-tokio` and
//! `smtpkit-mio`; this module supplies async-net's TCP and Unix sockets, async-io's timer and
//! futures-rustls.
//! A message body is any `futures_io::AsyncRead` ([`Body::Reader`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_net::TcpStream;
#[cfg(unix)]
use async_net::unix::UnixStream;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls::pki_types::ServerName;

pub use smtpkit_proto::client::{
    Capabilities, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient, Sasl,
};
pub use smtpkit_server::client::{
    Address, AnyCertificate, Body, Delivery, Error, ProtocolError, TlsMode, TlsSettings, Transport,
    any_certificate_config, client_config,
};

use crate::Smol;

/// A client connection on smol.
pub type Connection = smtpkit_server::client::Connection<Smol, Stream>;

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
    let unix = within(limit, UnixStream::connect(path.as_ref())).await?;
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
    let timeout = async {
        async_io::Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    connect.or(timeout).await.map_err(Error::io)
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
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
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

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_close(cx)
    }
}

impl smtpkit_server::client::Socket for Socket {
    type Tls = TlsStream<Self>;

    async fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<Self::Tls> {
        TlsConnector::from(config).connect(server_name, self).await
    }
}
