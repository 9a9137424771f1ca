//! Binding listeners with a backlog sized for mail bursts, shared by every adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Pending connections the kernel queues before `accept`.
///
/// `std` and mio use 128, which a burst of a few hundred clients (a mailing list run, a load
/// generator, a reconnect storm after a restart) overflows: the kernel then drops handshakes and
/// those clients stall for seconds of SYN retransmits. 1024 absorbs such bursts; Linux caps it
/// at `net.core.somaxconn` (4096 by default since 5.4).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds `addr` for accepting SMTP connections: `SO_REUSEADDR` (so a restarted server can rebind
/// while old connections linger in TIME_WAIT), the [`LISTEN_BACKLOG`], non-blocking.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` means IPv6 only; listen on `0.0.0.0` as well for IPv4.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_accepts() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert!(peer.ip().is_loopback());
        // A second bind of the same port fails: reuse-address does not mean sharing.
        assert!(bind_listener(addr).is_err());
    }
}
