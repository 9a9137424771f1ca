//! The sockets an event loop serves: TCP or Unix-domain, listening or connected.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use smtpkit_server::{BoundListener, Endpoint, SocketFile};

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

impl Socket {
    /// Closes the write side.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        on_socket!(self, |s| s.shutdown(Shutdown::Write))
    }

    /// Turns Nagle off (TCP only): replies are small and latency-bound.
    pub(crate) fn set_nodelay(&self) {
        if let Self::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        on_socket!(*self, |s| (&*s).read(buf))
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        on_socket!(*self, |s| (&*s).write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        on_socket!(*self, |s| (&*s).flush())
    }
}

impl Source for Socket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        on_socket!(self, |s| s.register(registry, token, interests))
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        on_socket!(self, |s| s.reregister(registry, token, interests))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        on_socket!(self, |s| s.deregister(registry))
    }
}

/// A listening socket; a Unix one keeps its file until it is dropped.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        local: Endpoint,
        _file: Option<SocketFile>,
    },
}

impl ListenSocket {
    pub(crate) fn new(socket: BoundListener, local: &Endpoint) -> Self {
        match socket {
            BoundListener::Tcp(l) => Self::Tcp(TcpListener::from_std(l)),
            BoundListener::Unix(l, file) => Self::Unix {
                listener: UnixListener::from_std(l),
                local: local.clone(),
                _file: file,
            },
        }
    }

    /// The next connection, with the client's and the local address.
    pub(crate) fn accept(&self) -> io::Result<(Socket, Endpoint, Endpoint)> {
        match self {
            Self::Tcp(l) => {
                let (tcp, peer) = l.accept()?;
                let local = tcp.local_addr().unwrap_or(peer);
                Ok((Socket::Tcp(tcp), peer.into(), local.into()))
            }
            Self::Unix {
                listener, local, ..
            } => {
                let (unix, peer) = listener.accept()?;
                let peer = Endpoint::Unix(peer.as_pathname().map(Into::into));
                Ok((Socket::Unix(unix), peer, local.clone()))
            }
        }
    }
}

impl Source for ListenSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.register(registry, token, interests),
            Self::Unix { listener: l, .. } => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.reregister(registry, token, interests),
            Self::Unix { listener: l, .. } => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.deregister(registry),
            Self::Unix { listener: l, .. } => l.deregister(registry),
        }
    }
}
