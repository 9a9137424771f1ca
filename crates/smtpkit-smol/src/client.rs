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
//! `smtpkit-mio`; this module supplies async-net's TCP, async-io's timer and futures-rustls.
//! A message body is any `futures_io::AsyncRead` ([`Body::Reader`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_net::TcpStream;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls::pki_types::ServerName;

pub use smtpkit_proto::client::{
    Capabilities, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient, Sasl,
};
pub use smtpkit_server::client::{
    Body, Delivery, Error, ProtocolError, TlsMode, TlsSettings, Transport, client_config,
};

use crate::Smol;

/// A client connection on smol.
pub type Connection = smtpkit_server::client::Connection<Smol, Stream>;

/// Connects to `addr` and opens a session ([`Connection::open`]): greeting, EHLO, and TLS as
/// `tls` says. The TCP connect may take as long as the greeting timeout.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    tls: Option<TlsSettings>,
) -> Result<Connection, Error> {
    let limit = config.options().timeouts.greeting;
    let timeout = async {
        async_io::Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    let tcp = TcpStream::connect(addr)
        .or(timeout)
        .await
        .map_err(Error::io)?;
    Connection::open(Stream::new(tcp), config, tls).await
}

/// A client connection's bytes: TCP, then TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// After the handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// A handshake failed; reads see the end, writes fail.
    Closed,
}

impl Stream {
    /// A connected TCP stream. Commands are small and a pipelined group is written at once,
    /// so Nagle's algorithm would only add delay.
    pub fn new(tcp: TcpStream) -> Self {
        let _ = tcp.set_nodelay(true);
        Self::Plain(tcp)
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
        let Self::Plain(tcp) = std::mem::replace(self, Self::Closed) else {
            return Err(io::Error::other("TLS is already on"));
        };
        let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
        *self = Self::Tls(Box::new(tls));
        Ok(())
    }
}
