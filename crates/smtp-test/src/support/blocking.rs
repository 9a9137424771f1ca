//! A blocking line client with TLS, for the adapters' own tests.

#![allow(missing_docs)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use super::T;

/// The client's stream: plain TCP, then TLS after STARTTLS (or from the start).
#[derive(Debug)]
pub enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Only while switching to TLS.
    Closed,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Closed => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::Closed => Ok(()),
        }
    }
}

/// A line-oriented raw client; every read is bounded by [`T`].
#[derive(Debug)]
pub struct Raw {
    pub io: Io,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect_timeout(&addr, T).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        tcp.set_write_timeout(Some(T)).unwrap();
        Self {
            io: Io::Plain(tcp),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, s: impl AsRef<[u8]>) {
        self.io.write_all(s.as_ref()).unwrap();
        self.io.flush().unwrap();
    }

    /// Switches to TLS (after a 220 to STARTTLS, or at once for implicit TLS).
    pub fn upgrade(&mut self, client: Arc<rustls::ClientConfig>) {
        assert!(self.buf.is_empty(), "bytes buffered before TLS");
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Closed) else {
            panic!("already TLS");
        };
        let conn = rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        self.io = Io::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
    }

    /// One line with its CRLF, or "" at EOF (or on a reset).
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk) {
                Ok(0) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    panic!("reply timed out")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                }
            }
        }
    }

    /// One whole reply (all its lines), or "" at EOF.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            out.push_str(&line);
            if line.is_empty() || line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    /// Reads a reply and checks its start.
    pub fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    pub fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr);
        c.expect("220 ");
        c
    }

    /// Everything up to EOF (bounded by the read timeout).
    pub fn rest(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return out;
            }
            out.push_str(&line);
        }
    }
}
