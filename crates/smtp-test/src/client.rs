//! The suite's client: blocking `std::net` over 127.0.0.1 or a Unix-domain socket, plain or
//! TLS, with a timeout on every socket operation, keeping every byte it reads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use smtpkit_server::Endpoint;

use crate::pki::Pki;

/// The longest any single socket operation may block.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected socket: TCP or Unix-domain.
enum Socket {
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

impl Socket {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_socket!(self, |s| s.set_read_timeout(t))
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        on_socket!(self, |s| s.set_write_timeout(t))
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        on_socket!(self, |s| s.shutdown(how))
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        on_socket!(self, |s| s.read(buf))
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        on_socket!(self, |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        on_socket!(self, |s| s.flush())
    }
}

enum Stream {
    Plain(Socket),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Socket>>),
    /// After a deliberate disconnect.
    Gone,
}

/// One client connection.
pub(crate) struct Client {
    stream: Stream,
    /// Every byte read from the server, in order.
    pub(crate) received: Vec<u8>,
}

impl Client {
    pub(crate) fn connect(addr: &Endpoint) -> io::Result<Self> {
        let socket = match (addr.tcp(), addr.path()) {
            (Some(addr), _) => {
                let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                // Each step's bytes should leave at once, so 1-byte writes really arrive one
                // by one.
                tcp.set_nodelay(true)?;
                Socket::Tcp(tcp)
            }
            (None, Some(path)) => Socket::Unix(UnixStream::connect(path)?),
            (None, None) => return Err(io::ErrorKind::AddrNotAvailable.into()),
        };
        socket.set_read_timeout(Some(IO_TIMEOUT))?;
        socket.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream: Stream::Plain(socket),
            received: Vec::new(),
        })
    }

    fn socket(&self) -> Option<&Socket> {
        match &self.stream {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(tls.get_ref()),
            Stream::Gone => None,
        }
    }

    fn io(&mut self) -> io::Result<&mut dyn ReadWrite> {
        match &mut self.stream {
            Stream::Plain(tcp) => Ok(tcp),
            Stream::Tls(tls) => Ok(tls.as_mut()),
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = self.io()?;
        io.write_all(bytes)?;
        io.flush()
    }

    /// Writes `chunk` over and over without reading, until a write fails or blocks for
    /// `write_timeout`, or `max` bytes went out. Returns the bytes written.
    pub(crate) fn flood(&mut self, chunk: &[u8], max: usize, write_timeout: Duration) -> usize {
        if let Some(tcp) = self.socket() {
            let _ = tcp.set_write_timeout(Some(write_timeout));
        }
        let mut written = 0;
        while written < max {
            match self.io().and_then(|io| io.write(chunk)) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        written
    }

    /// Reads until `n` more bytes arrived, the server closed, or `deadline` passed; returns
    /// the bytes read by this call.
    pub(crate) fn read_up_to(&mut self, n: usize, deadline: Instant) -> io::Result<&[u8]> {
        let start = self.received.len();
        let mut buf = [0u8; 4096];
        while self.received.len() - start < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(tcp) = self.socket() {
                tcp.set_read_timeout(Some(left))?;
            }
            let want = (n - (self.received.len() - start)).min(buf.len());
            match self.io()?.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => self.received.extend_from_slice(&buf[..k]),
                Err(e) if is_timeout(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(&self.received[start..])
    }

    /// Reads to the end of the stream, at most `cap` bytes, until `deadline`. Returns the
    /// bytes read and whether the end was reached (a reset counts as the end).
    pub(crate) fn read_to_end(&mut self, cap: usize, deadline: Instant) -> (Vec<u8>, bool) {
        let start = self.received.len();
        let mut buf = [0u8; 4096];
        let eof = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.received.len() - start >= cap {
                break false;
            }
            if let Some(tcp) = self.socket()
                && tcp.set_read_timeout(Some(left)).is_err()
            {
                break true;
            }
            match self.io().and_then(|io| io.read(&mut buf)) {
                Ok(0) => break true,
                Ok(k) => self.received.extend_from_slice(&buf[..k]),
                Err(e) if is_timeout(&e) => break false,
                // A reset, or the server's TLS close without close_notify: the end.
                Err(_) => break true,
            }
        };
        (self.received[start..].to_vec(), eof)
    }

    /// Runs the TLS handshake on the connection (after `220` to STARTTLS, or at once for
    /// implicit TLS).
    pub(crate) fn start_tls(&mut self, pki: &Pki) -> io::Result<()> {
        let Stream::Plain(mut tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS is already on or the client is gone"));
        };
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut conn = pki.client_connection();
        // Every round trip of the handshake is bounded by the socket timeouts; a TLS 1.3
        // handshake needs two, so ten bounds it even with partial reads.
        for _ in 0..10 {
            if !conn.is_handshaking() {
                break;
            }
            conn.complete_io(&mut tcp)?;
        }
        if conn.is_handshaking() {
            return Err(io::Error::other("TLS handshake did not finish"));
        }
        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        Ok(())
    }

    /// Closes the connection in both directions without QUIT.
    pub(crate) fn disconnect(&mut self) {
        if let Some(tcp) = self.socket() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        self.stream = Stream::Gone;
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
