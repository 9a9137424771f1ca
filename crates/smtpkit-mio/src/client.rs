//! Sending mail without an async runtime: a blocking client on a [`mio`] socket.
//!
//! Each call ([`Connection::send`], ...) runs the shared client driver
//! (`smtpkit_server::client`) to completion on the calling thread: the thread waits in a
//! [`mio::Poll`] for the socket (TCP or Unix), never longer than the core's next deadline.
//! TLS is futures-rustls over the non-blocking socket.
//!
//! ```
//! use std::sync::Arc;
//! use smtpkit_mio::client::{Body, ClientConfig, ClientOptions, Connection, Envelope, Recipient};
//! use smtpkit_mio::{Blocking, BlockingHandler, BlockingSession, ListenerKind, Reply, SessionInfo, SmtpServer};
//! use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
//!
//! // A server that accepts everything, to send to.
//! struct Accept;
//! struct Conn;
//! impl BlockingHandler for Accept {
//!     type Session = Conn;
//!     fn connect(&self, _: &SessionInfo) -> Result<Conn, Reply<'static>> { Ok(Conn) }
//! }
//! impl BlockingSession for Conn {}
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = SmtpServer::builder(Blocking(Accept))
//!     .listener("127.0.0.1:0".parse::<std::net::SocketAddr>()?, ListenerKind::Smtp)
//!     .build()?;
//! let addr = server.local_addrs()[0];
//! let handle = server.start()?;
//!
//! let config = Arc::new(ClientConfig::new(ClientOptions { hostname: "client.example".into(), ..Default::default() })?);
//! let mut conn = Connection::connect(addr, config, None)?;
//! let to = [Recipient::new(ForwardPath::Mailbox(Mailbox::parse("bob@example.net")?))];
//! let from = ReversePath::Mailbox(Mailbox::parse("alice@example.org")?);
//! let delivery = conn.send(&Envelope::new(from, &to), Body::Bytes(b"Subject: hi\r\n\r\nHello\r\n"))?;
//! assert!(delivery.all_delivered());
//! conn.quit()?;
//! handle.shutdown(std::time::Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use mio::{Events, Interest, Token};
use rustls::pki_types::ServerName;
use smtpkit_proto::Reply;

pub use smtpkit_proto::client::{
    Capabilities, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient, Sasl,
};
pub use smtpkit_server::client::{
    Address, AnyCertificate, Body, Delivery, Error, ProtocolError, TlsMode, TlsSettings,
    any_certificate_config, client_config,
};

use crate::block::{Mio, block_on_with};

type Driver = smtpkit_server::client::Connection<Mio, Stream>;

/// A blocking client connection. Every method returns once the server has answered, the
/// core's deadline has passed, or the connection failed.
pub struct Connection {
    driver: Driver,
    poll: mio::Poll,
    events: Events,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

/// Runs `fut` on this thread, waiting in `poll` for the socket or the next deadline.
fn run<F: Future>(poll: &mut mio::Poll, events: &mut Events, fut: F) -> F::Output {
    block_on_with(fut, |timeout| {
        // An interrupted wait is just an early one.
        let _ = poll.poll(events, timeout);
    })
}

impl Connection {
    /// Connects to `addr` (within the greeting timeout) and opens a session: greeting, EHLO,
    /// and TLS as `tls` says.
    pub fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        let limit = config.options().timeouts.greeting;
        let tcp = std::net::TcpStream::connect_timeout(&addr, limit).map_err(Error::io)?;
        // Commands are small and a pipelined group is written at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        tcp.set_nonblocking(true).map_err(Error::io)?;
        Self::open(Socket::Tcp(mio::net::TcpStream::from_std(tcp)), config, tls)
    }

    /// Connects to the Unix socket at `path` (Dovecot's LMTP, say) and opens a session as
    /// [`connect`](Self::connect) does. A local connect does not wait for the peer, so it
    /// needs no timeout of its own.
    #[cfg(unix)]
    pub fn connect_unix(
        path: impl AsRef<std::path::Path>,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        let unix = std::os::unix::net::UnixStream::connect(path).map_err(Error::io)?;
        unix.set_nonblocking(true).map_err(Error::io)?;
        Self::open(
            Socket::Unix(mio::net::UnixStream::from_std(unix)),
            config,
            tls,
        )
    }

    /// [`connect`](Self::connect) or [`connect_unix`](Self::connect_unix), as `address`
    /// says.
    pub fn connect_to(
        address: &Address,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        match address {
            Address::Tcp(addr) => Self::connect(*addr, config, tls),
            #[cfg(unix)]
            Address::Unix(path) => Self::connect_unix(path, config, tls),
            #[cfg(not(unix))]
            Address::Unix(_) => Err(Error::io(io::ErrorKind::Unsupported.into())),
        }
    }

    fn open(
        mut socket: Socket,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        let mut poll = mio::Poll::new().map_err(Error::io)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = poll.registry();
        match &mut socket {
            Socket::Tcp(s) => registry.register(s, Token(0), interest),
            #[cfg(unix)]
            Socket::Unix(s) => registry.register(s, Token(0), interest),
        }
        .map_err(Error::io)?;
        let mut events = Events::with_capacity(4);
        let stream = Stream::new(socket);
        let driver = run(&mut poll, &mut events, Driver::open(stream, config, tls))?;
        Ok(Self {
            driver,
            poll,
            events,
        })
    }

    /// The server's greeting.
    pub fn greeting(&self) -> Option<&Reply<'static>> {
        self.driver.greeting()
    }

    /// What the server offered in its last EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        self.driver.capabilities()
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.driver.is_tls()
    }

    /// Whether the connection can take another command.
    pub fn is_open(&self) -> bool {
        self.driver.is_open()
    }

    /// Authenticates (RFC 4954); see `smtpkit_server::client::Connection::auth`.
    pub fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error> {
        run(&mut self.poll, &mut self.events, self.driver.auth(sasl))
    }

    /// Sends NOOP; its reply.
    pub fn noop(&mut self) -> Result<Reply<'static>, Error> {
        run(&mut self.poll, &mut self.events, self.driver.noop())
    }

    /// Sends one message; see `smtpkit_server::client::Connection::send`. A body from a
    /// `std::io::Read` goes in as `Body::Reader(&mut BodyReader(file))`.
    pub fn send(&mut self, envelope: &Envelope<'_>, body: Body<'_>) -> Result<Delivery, Error> {
        run(
            &mut self.poll,
            &mut self.events,
            self.driver.send(envelope, body),
        )
    }

    /// Sends QUIT, waits for the reply and closes the connection.
    pub fn quit(self) -> Result<(), Error> {
        let Self {
            driver,
            mut poll,
            mut events,
        } = self;
        run(&mut poll, &mut events, driver.quit())
    }
}

/// A blocking reader as a message [`Body`]: each read blocks the thread, which holds no
/// other session.
#[derive(Debug)]
pub struct BodyReader<R>(pub R);

impl<R: io::Read + Unpin> AsyncRead for BodyReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.0.read(buf))
    }
}

/// A non-blocking mio socket as futures-io: `WouldBlock` is `Pending`, and the executor
/// polls again after the next readiness event, so no waker is kept.
#[derive(Debug)]
enum Socket {
    Tcp(mio::net::TcpStream),
    #[cfg(unix)]
    Unix(mio::net::UnixStream),
}

/// Retries interrupted calls; `WouldBlock` becomes `Pending`.
fn nonblocking<T>(mut op: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            r => return Poll::Ready(r),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => nonblocking(|| s.read(buf)),
            #[cfg(unix)]
            Self::Unix(s) => nonblocking(|| s.read(buf)),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => nonblocking(|| s.write(buf)),
            #[cfg(unix)]
            Self::Unix(s) => nonblocking(|| s.write(buf)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => nonblocking(|| s.flush()),
            #[cfg(unix)]
            Self::Unix(s) => nonblocking(|| s.flush()),
        }
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.get_mut() {
            Self::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            #[cfg(unix)]
            Self::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        })
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

/// The connection's bytes: the socket, then TLS on it.
type Stream = smtpkit_server::client::Stream<Socket>;
