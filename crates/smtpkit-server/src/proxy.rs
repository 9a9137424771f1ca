//! The PROXY protocol, versions 1 (text) and 2 (binary), sans-IO: a load balancer in front of
//! the server prefixes each connection with the client's real address.
//!
//! See <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>. Only headers from
//! [`TrustedNetworks`] may be believed: anyone else could claim any address.
//!
//! ```
//! use smtpkit_server::proxy::{parse_proxy_header, ProxyHeader};
//! let buf = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\nEHLO";
//! let (header, used) = parse_proxy_header(buf).unwrap().unwrap();
//! assert_eq!(used, buf.len() - 4);
//! let ProxyHeader::Proxied { source, .. } = header else { panic!() };
//! assert_eq!(source.to_string(), "192.0.2.1:56324");
//! ```

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

mod tlv;

pub use self::tlv::{ProxySsl, ProxyTlvs};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 header, CRLF included (spec section 2.1).
pub const MAX_V1_HEADER: usize = 107;
/// The longest v2 header accepted: 16 fixed octets plus 520 of addresses and TLVs. The spec
/// (2.2) asks receivers to take at least 216 octets of addresses; 536 leaves room for the
/// usual TLVs (ALPN, authority, SSL details) while bounding what an attacker can make us buffer.
pub const MAX_V2_HEADER: usize = 536;

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The original connection's addresses.
    Proxied {
        /// The header's version, 1 or 2.
        version: u8,
        /// The real client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, or a v2 family without usable addresses (UNSPEC, UNIX, UDP): keep the
    /// connection's own addresses.
    Unknown {
        /// The header's version, 1 or 2.
        version: u8,
    },
    /// v2 `LOCAL`: the proxy's own connection (a health check); keep the connection's own
    /// addresses.
    Local,
}

/// Why a PROXY header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The bytes start neither a v1 nor a v2 header.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// The header is longer than the limit (v1: 107 octets, v2: [`MAX_V2_HEADER`]).
    #[error("PROXY header too long")]
    TooLong,
    /// A v2 header with a version other than 2 or a command other than LOCAL/PROXY.
    #[error("unsupported PROXY protocol version or command")]
    Unsupported,
    /// The header does not follow the grammar; the string says where (do not branch on it).
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Parses a PROXY header at the start of `buf`.
///
/// `Ok(None)`: the bytes so far could start a header; read more. `Ok(Some((header, n)))`: the
/// header took `n` octets, and what follows belongs to the application protocol.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if buf.is_empty() {
        Ok(None)
    } else if starts(V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

/// The TLVs of a v2 PROXY header: `header` is the complete header, as measured by
/// [`parse_proxy_header`]. `None` for v1, for LOCAL, and for an incomplete header.
pub fn proxy_tlvs(header: &[u8]) -> Option<ProxyTlvs> {
    if header.len() < 16 || header[..12] != V2_SIGNATURE[..] || header[12] & 0x0f != 0x1 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    let body = header.get(16..16 + len)?;
    let addresses = match header[13] {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => 0,
    };
    body.get(addresses..).map(ProxyTlvs::parse)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_HEADER)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1_HEADER {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::Malformed("line must end in CRLF"));
    }
    let line = core::str::from_utf8(&window[V1_PREFIX.len()..lf - 1])
        .map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut words = line.split(' ');
    let header = match words.next() {
        // The spec lets the sender put anything after UNKNOWN, and the receiver ignore it.
        Some("UNKNOWN") => ProxyHeader::Unknown { version: 1 },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let v6 = proto == "TCP6";
            let mut next = || words.next().ok_or(ProxyError::Malformed("missing field"));
            let src = parse_ip(next()?, v6)?;
            let dst = parse_ip(next()?, v6)?;
            let sport = parse_port(next()?)?;
            let dport = parse_port(next()?)?;
            if words.next().is_some() {
                return Err(ProxyError::Malformed("extra field"));
            }
            ProxyHeader::Proxied {
                version: 1,
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
            }
        }
        _ => return Err(ProxyError::Malformed("unknown protocol")),
    };
    Ok(Some((header, lf + 1)))
}

fn parse_ip(s: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    let ip = if v6 {
        s.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ProxyError::Malformed("invalid address"))
}

fn parse_port(s: &str) -> Result<u16, ProxyError> {
    // Digits only: `str::parse` would also take a leading '+'.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Malformed("invalid port"));
    }
    s.parse().map_err(|_| ProxyError::Malformed("invalid port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Unsupported);
    }
    if total > MAX_V2_HEADER {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let header = match ver_cmd & 0x0f {
        // LOCAL: the address block, if any, is to be ignored.
        0x0 => ProxyHeader::Local,
        0x1 => match family {
            // TCP over IPv4: 4 + 4 address octets, 2 + 2 port octets.
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or(ProxyError::Malformed("short IPv4 address block"))?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                ProxyHeader::Proxied {
                    version: 2,
                    source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                    destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
                }
            }
            // TCP over IPv6: 16 + 16 address octets, 2 + 2 port octets.
            0x21 => {
                let a = body
                    .get(..36)
                    .ok_or(ProxyError::Malformed("short IPv6 address block"))?;
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                ProxyHeader::Proxied {
                    version: 2,
                    source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                    destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
                }
            }
            // UNSPEC, UDP and UNIX sockets: nothing an SMTP session can use.
            0x00 | 0x12 | 0x22 | 0x31 | 0x32 => ProxyHeader::Unknown { version: 2 },
            _ => return Err(ProxyError::Malformed("unknown address family")),
        },
        _ => return Err(ProxyError::Unsupported),
    };
    Ok(Some((header, total)))
}

/// Source networks whose PROXY headers are believed.
///
/// ```
/// use smtpkit_server::TrustedNetworks;
/// let t: TrustedNetworks = "10.0.0.0/8, ::1/128".parse().unwrap();
/// assert!(t.contains("10.1.2.3".parse().unwrap()));
/// assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!t.contains("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedNetworks {
    nets: Vec<IpNet>,
}

impl TrustedNetworks {
    /// The given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().collect(),
        }
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address is checked as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Why a [`TrustedNetworks`] list did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?}: expected an address or CIDR block")]
pub struct NetworkParseError(String);

impl FromStr for TrustedNetworks {
    type Err = NetworkParseError;

    /// A comma- or space-separated list of CIDR blocks or single addresses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split([',', ' '])
            .filter(|w| !w.is_empty())
            .map(|w| {
                w.parse::<IpNet>()
                    .or_else(|_| w.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| NetworkParseError(w.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

impl fmt::Display for TrustedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            n.fmt(f)?;
        }
        Ok(())
    }
}

/// PROXY protocol settings of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Connections from these networks must start with a PROXY header; connections from
    /// anywhere else are closed at once.
    pub trusted: TrustedNetworks,
    /// How long to wait for the whole header. Default 5 s: a proxy sends it at once.
    pub timeout: Duration,
}

impl ProxySettings {
    /// Settings trusting `trusted`, with the default timeout.
    pub fn new(trusted: TrustedNetworks) -> Self {
        Self {
            trusted,
            timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_valid() {
        let cases: &[(&[u8], ProxyHeader)] = &[
            (
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
                ProxyHeader::Proxied {
                    version: 1,
                    source: sa("192.0.2.1:56324"),
                    destination: sa("198.51.100.2:25"),
                },
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 587\r\n",
                ProxyHeader::Proxied {
                    version: 1,
                    source: sa("[2001:db8::1]:65535"),
                    destination: sa("[2001:db8::2]:587"),
                },
            ),
            (b"PROXY UNKNOWN\r\n", ProxyHeader::Unknown { version: 1 }),
            (
                b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n",
                ProxyHeader::Unknown { version: 1 },
            ),
        ];
        for (input, expected) in cases {
            let mut buf = input.to_vec();
            buf.extend_from_slice(b"EHLO x\r\n");
            assert_eq!(
                parse_proxy_header(&buf),
                Ok(Some((*expected, input.len()))),
                "{}",
                String::from_utf8_lossy(input)
            );
            // Every strict prefix asks for more.
            for n in 0..input.len() {
                assert_eq!(parse_proxy_header(&input[..n]), Ok(None), "prefix {n}");
            }
        }
    }

    #[test]
    fn v1_malformed() {
        let cases: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 25\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 25\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 25\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25\n",
            b"PROXY \xff\r\n",
        ];
        for input in cases {
            assert!(
                matches!(parse_proxy_header(input), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            parse_proxy_header(b"EHLO client\r\n"),
            Err(ProxyError::NotProxy)
        );
        assert_eq!(parse_proxy_header(b"proxy "), Err(ProxyError::NotProxy));
    }

    #[test]
    fn tlvs_after_the_addresses() {
        let mut v4 = vec![192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25];
        v4.extend_from_slice(&[0x02, 0x00, 0x07]);
        v4.extend_from_slice(b"mx.test");
        let header = v2(1, 0x11, &v4);
        let tlvs = proxy_tlvs(&header).expect("TLVs of a v2 PROXY header");
        assert_eq!(tlvs.authority.as_deref(), Some("mx.test"));
        // LOCAL and v1 headers carry none.
        assert_eq!(proxy_tlvs(&v2(0, 0x11, &v4)), None);
        assert_eq!(proxy_tlvs(b"PROXY UNKNOWN\r\n"), None);
        assert_eq!(proxy_tlvs(&header[..20]), None);
    }

    #[test]
    fn v1_oversize() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1_HEADER, b'x');
        assert_eq!(parse_proxy_header(&long), Err(ProxyError::TooLong));
        // Exactly 107 octets with the CRLF is still valid.
        long.truncate(MAX_V1_HEADER - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_proxy_header(&long),
            Ok(Some((ProxyHeader::Unknown { version: 1 }, MAX_V1_HEADER)))
        );
    }

    #[test]
    fn v2_valid() {
        let mut v4 = vec![192, 0, 2, 1, 198, 51, 100, 2];
        v4.extend_from_slice(&56324u16.to_be_bytes());
        v4.extend_from_slice(&25u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        let mut with_tlv = v4.clone();
        with_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        let mut v6 = Vec::new();
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 1, 0, 2]);
        let proxied4 = ProxyHeader::Proxied {
            version: 2,
            source: sa("192.0.2.1:56324"),
            destination: sa("198.51.100.2:25"),
        };
        let cases = [
            (v2(1, 0x11, &v4), proxied4),
            (v2(1, 0x11, &with_tlv), proxied4),
            (
                v2(1, 0x21, &v6),
                ProxyHeader::Proxied {
                    version: 2,
                    source: sa("[2001:db8::1]:1"),
                    destination: sa("[2001:db8::2]:2"),
                },
            ),
            (v2(0, 0x00, &[]), ProxyHeader::Local),
            (v2(0, 0x11, &v4), ProxyHeader::Local),
            (v2(1, 0x00, &[]), ProxyHeader::Unknown { version: 2 }),
            (v2(1, 0x31, &[0; 216]), ProxyHeader::Unknown { version: 2 }),
        ];
        for (input, expected) in cases {
            let mut buf = input.clone();
            buf.extend_from_slice(b"\x16\x03\x01");
            assert_eq!(parse_proxy_header(&buf), Ok(Some((expected, input.len()))));
            for n in 0..input.len() {
                assert_eq!(parse_proxy_header(&input[..n]), Ok(None), "prefix {n}");
            }
        }
    }

    #[test]
    fn v2_malformed_and_oversize() {
        assert_eq!(
            parse_proxy_header(&v2(1, 0x11, &[0; 11])),
            Err(ProxyError::Malformed("short IPv4 address block"))
        );
        assert_eq!(
            parse_proxy_header(&v2(1, 0x21, &[0; 12])),
            Err(ProxyError::Malformed("short IPv6 address block"))
        );
        assert!(matches!(
            parse_proxy_header(&v2(1, 0x41, &[0; 12])),
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(
            parse_proxy_header(&v2(2, 0x11, &[0; 12])),
            Err(ProxyError::Unsupported)
        );
        let mut v1 = v2(1, 0x11, &[0; 12]);
        v1[12] = 0x11;
        assert_eq!(parse_proxy_header(&v1), Err(ProxyError::Unsupported));
        // The length field alone is enough to refuse an oversize header, before its body.
        let big = v2(1, 0x11, &vec![0; MAX_V2_HEADER - 15]);
        assert_eq!(parse_proxy_header(&big[..16]), Err(ProxyError::TooLong));
        let max = v2(1, 0x11, &vec![0; MAX_V2_HEADER - 16]);
        assert!(matches!(
            parse_proxy_header(&max),
            Ok(Some((_, MAX_V2_HEADER)))
        ));
        // Truncated: waits for more.
        assert_eq!(parse_proxy_header(&max[..100]), Ok(None));
    }

    #[test]
    fn trusted_networks() {
        let t: TrustedNetworks = "127.0.0.0/8,2001:db8::/32 192.0.2.7".parse().unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("2001:db8::5".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("::1".parse().unwrap()));
        assert_eq!(t.networks().len(), 3);
        assert_eq!(t.to_string(), "127.0.0.0/8, 2001:db8::/32, 192.0.2.7/32");
        assert!("10.0.0.0/33".parse::<TrustedNetworks>().is_err());
        assert!("nope".parse::<TrustedNetworks>().is_err());
        assert!(TrustedNetworks::default().networks().is_empty());
    }
}
