//! Listeners: binding with a backlog sized for mail bursts, and [`ListenerSettings`], what may
//! differ between the listeners of one server. Shared by every adapter.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

mod unix;

pub use self::unix::{SocketFile, bind_unix_listener};
use crate::proxy::ProxySettings;
use crate::settings::ListenerKind;
use crate::tls::ClientAuth;

/// What one listener of a server serves: its kind, whether it offers TLS, and whether it
/// expects PROXY headers. Everything else ([`ServerSettings`](crate::ServerSettings), the
/// connection limits, the shutdown) is shared by all listeners of the server.
///
/// A bare [`ListenerKind`] converts into the default settings for that kind.
///
/// ```
/// use smtpkit_server::{ListenerKind, ListenerSettings, ProxySettings};
/// let plain = ListenerSettings::from(ListenerKind::Smtp).tls(false);
/// assert!(!plain.tls && plain.proxy.is_none());
/// let behind_proxy = ListenerSettings::new(ListenerKind::Submission)
///     .proxy(ProxySettings::new("10.0.0.0/8".parse().unwrap()));
/// assert!(behind_proxy.tls && behind_proxy.proxy.is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerSettings {
    /// What the listener serves.
    pub kind: ListenerKind,
    /// Whether TLS is used on this listener when the server has a TLS config: STARTTLS is
    /// offered on SMTP, submission and LMTP listeners, implicit TLS runs on SMTPS. Default on;
    /// an SMTPS listener needs it.
    pub tls: bool,
    /// PROXY protocol: `None` (the default) reads no header.
    pub proxy: Option<ProxySettings>,
    /// Whether the client's reverse-DNS name is looked up before the greeting, when the server
    /// has a resolver ([`Builder::reverse_dns`](crate::Builder::reverse_dns)). Default on, as
    /// Postfix always looks the client up; an internal listener (LMTP from the local MTA) may
    /// turn it off.
    pub reverse_dns: bool,
    /// Commands answered `502 5.5.1` on this listener, as Node's `disabledCommands` (see
    /// [`ServerOptions::disabled_commands`](smtpkit_proto::ServerOptions::disabled_commands)).
    /// Default none.
    pub disabled_commands: Vec<String>,
    /// EHLO keywords not offered on this listener, as Node's `hideSTARTTLS`, `hideSize`...
    /// (see [`Extensions::hide`](smtpkit_proto::server::Extensions::hide)). Default none.
    pub hidden_extensions: Vec<String>,
    /// Client certificates asked for (and verified) in this listener's TLS handshakes, as
    /// Node's `requestCert`/`rejectUnauthorized`. Default none: no certificate is asked for.
    /// Needs the server's TLS config.
    pub client_auth: Option<ClientAuth>,
}

impl ListenerSettings {
    /// The defaults for a listener of `kind`: TLS when the server has a certificate, no PROXY.
    pub fn new(kind: ListenerKind) -> Self {
        Self {
            kind,
            tls: true,
            proxy: None,
            reverse_dns: true,
            disabled_commands: Vec::new(),
            hidden_extensions: Vec::new(),
            client_auth: None,
        }
    }

    /// Asks TLS clients of this listener for a certificate and verifies it as `auth` says.
    #[must_use]
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = Some(auth);
        self
    }

    /// Answers `verb` with `502 5.5.1` on this listener.
    #[must_use]
    pub fn disable_command(mut self, verb: impl Into<String>) -> Self {
        self.disabled_commands.push(verb.into());
        self
    }

    /// Stops offering the extension with EHLO keyword `keyword` on this listener.
    #[must_use]
    pub fn hide_extension(mut self, keyword: impl Into<String>) -> Self {
        self.hidden_extensions.push(keyword.into());
        self
    }

    /// Turns TLS on or off for this listener.
    #[must_use]
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Turns the reverse-DNS lookup of clients on or off for this listener.
    #[must_use]
    pub fn reverse_dns(mut self, on: bool) -> Self {
        self.reverse_dns = on;
        self
    }

    /// Expects a PROXY header from the trusted sources of `proxy`.
    #[must_use]
    pub fn proxy(mut self, proxy: ProxySettings) -> Self {
        self.proxy = Some(proxy);
        self
    }
}

impl From<ListenerKind> for ListenerSettings {
    fn from(kind: ListenerKind) -> Self {
        Self::new(kind)
    }
}

/// Pending connections the kernel queues before `accept`.
///
/// `std` and mio use 128, which a burst of a few hundred clients (a mailing list run, a load
/// generator, a reconnect storm after a restart) overflows: the kernel then drops handshakes and
/// those clients stall for seconds of SYN retransmits. 1024 absorbs such bursts; Linux caps it
/// at `net.core.somaxconn` (4096 by default since 5.4).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds `addr` for accepting SMTP connections: `SO_REUSEADDR` (so a restarted server can rebind
/// while old connections linger in TIME_WAIT), the [`LISTEN_BACKLOG`], non-blocking. An error
/// names the address (the kind is kept), so an operator with several listeners knows which one.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    bind(addr).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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
        let err = bind_listener(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().starts_with(&addr.to_string()), "{err}");
    }
}
