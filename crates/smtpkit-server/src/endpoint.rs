//! [`Endpoint`]: one end of a connection, an internet socket address or a Unix-domain socket.

use core::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Where one end of a session is: a TCP address, or a Unix-domain socket.
///
/// A Unix-socket session has no IP address, and nothing pretends it does: [`ip`](Self::ip) is
/// `None`, so per-address limits, reverse DNS, SPF and XCLIENT authorization (all keyed by IP)
/// do not apply to it.
///
/// It parses from an address (`192.0.2.1:25`, `[::1]:24`) or from `unix:` and a path:
///
/// ```
/// use smtpkit_server::Endpoint;
/// let lmtp: Endpoint = "unix:/run/smtpd/lmtp.sock".parse().unwrap();
/// assert!(lmtp.is_unix() && lmtp.ip().is_none());
/// assert_eq!(lmtp.to_string(), "unix:/run/smtpd/lmtp.sock");
/// let mx: Endpoint = "192.0.2.1:25".parse().unwrap();
/// assert_eq!(mx.ip(), Some("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket: its path, or `None` for an unnamed socket (a client's, usually).
    Unix(Option<Arc<Path>>),
}

impl Endpoint {
    /// A Unix-domain socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(Some(Arc::from(path.into())))
    }

    /// The IP address; `None` for a Unix-domain socket.
    pub fn ip(&self) -> Option<IpAddr> {
        self.tcp().map(|a| a.ip())
    }

    /// The TCP address; `None` for a Unix-domain socket.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// Whether this is a Unix-domain socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// The socket file's path, for a named Unix-domain socket.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) => path.as_deref(),
            Self::Tcp(_) => None,
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Every log line of a session names its peer: IPv4 written directly, as `Display`
            // writes it (padding too), rather than octet by octet through the formatter.
            Self::Tcp(SocketAddr::V4(addr)) => f.pad(v4_text(*addr, &mut [0; 21])),
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Self::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// `a.b.c.d:port` in `buffer`.
fn v4_text(addr: SocketAddrV4, buffer: &mut [u8; 21]) -> &str {
    let mut len = 0;
    let mut push = |byte: u8| {
        buffer[len] = byte;
        len += 1;
    };
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        decimal(u32::from(octet), &mut push);
    }
    push(b':');
    decimal(u32::from(addr.port()), &mut push);
    // Only ASCII digits, dots and a colon were written.
    core::str::from_utf8(&buffer[..len]).unwrap_or("")
}

/// `value` in decimal, most significant digit first, without leading zeros.
fn decimal(value: u32, push: &mut impl FnMut(u8)) {
    let mut divisor = 1;
    while value / divisor >= 10 {
        divisor *= 10;
    }
    while divisor > 0 {
        push(b'0' + (value / divisor % 10) as u8);
        divisor /= 10;
    }
}

/// Why a string is not an [`Endpoint`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an address (host:port) or unix:/path: {0:?}")]
pub struct EndpointParseError(String);

impl FromStr for Endpoint {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Self::unix(path)),
            Some(_) => Err(EndpointParseError(s.to_owned())),
            None => s
                .parse()
                .map(Self::Tcp)
                .map_err(|_| EndpointParseError(s.to_owned())),
        }
    }
}

/// As its string form (`192.0.2.1:25`, `unix:/path`), so a configuration file can name it.
#[cfg(feature = "serde")]
impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "127.0.0.1:25",
            "[::1]:24",
            "unix:/run/smtpd/lmtp.sock",
            "unix:rel.sock",
        ] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
        for bad in ["unix:", "localhost", "1.2.3.4", ""] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        assert_eq!(Endpoint::Unix(None).to_string(), "unix:(unnamed)");
    }

    #[test]
    fn ipv4_is_written_as_socket_addr_writes_it() {
        for s in [
            "0.0.0.0:0",
            "127.0.0.1:25",
            "192.0.2.10:50816",
            "10.100.9.255:65535",
            "255.255.255.255:1",
        ] {
            let addr: SocketAddr = s.parse().unwrap();
            let e = Endpoint::from(addr);
            assert_eq!(e.to_string(), s);
            assert_eq!(format!("[{e:>24}]"), format!("[{addr:>24}]"));
            assert_eq!(format!("[{e:<22}]"), format!("[{addr:<22}]"));
        }
    }

    #[test]
    fn unix_has_no_ip() {
        let e = Endpoint::unix("/tmp/x.sock");
        assert_eq!((e.ip(), e.tcp()), (None, None));
        assert_eq!(e.path(), Some(Path::new("/tmp/x.sock")));
        let addr: SocketAddr = "192.0.2.1:25".parse().unwrap();
        assert_eq!(Endpoint::from(addr).tcp(), Some(addr));
        assert_eq!(Endpoint::from(addr).path(), None);
    }
}
