//! An authoritative DNS server on 127.0.0.1 with records a test writes, for anything that
//! resolves: reverse DNS, SPF/DKIM/DMARC/ARC ([`txt`] splits long records), MX later; and a
//! [`SilentDns`] that never answers.
//!
//! It serves the whole `test.` TLD and the reverse trees `in-addr.arpa.` and `ip6.arpa.`, so
//! every name a test asks about gets an authoritative answer (NXDOMAIN when it wrote no record),
//! never REFUSED: mail authentication walks up to the TLD (`_dmarc.test.`) and must see NXDOMAIN
//! there. Records are zone-file lines with absolute names:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use smtp_test::dns::{TestDns, ptr};
//!
//! let ip = "192.0.2.1".parse().unwrap();
//! let records = format!("mail.example.test. 300 IN A 192.0.2.1\n{}", ptr(ip, "mail.example.test."));
//! let dns = TestDns::start(&records).await.unwrap();
//! assert!(dns.addr().ip().is_loopback());
//! # });
//! ```
//!
//! UDP and TCP share the port. The server runs on the tokio runtime that started it and stops
//! when the [`TestDns`] is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name, RecordSet, RrKey};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// The zones served. Every record a test writes must fall in one of them.
pub const ZONES: [&str; 3] = ["test.", "in-addr.arpa.", "ip6.arpa."];

/// The negative TTL of every zone (the SOA's minimum), in seconds: what a resolver may cache an
/// NXDOMAIN for.
pub const NEGATIVE_TTL: u32 = 60;

/// The PTR record line for `ip` pointing at `name` (absolute, with the trailing dot), TTL 300.
pub fn ptr(ip: IpAddr, name: &str) -> String {
    format!("{} 300 IN PTR {name}\n", Name::from(ip))
}

/// The TXT record line for `name` (absolute) holding `value`, TTL 300, split into strings of at
/// most 255 octets (RFC 1035 3.3.14) as DKIM keys need; `"` and `\\` are escaped.
pub fn txt(name: &str, value: &str) -> String {
    let mut line = format!("{name} 300 IN TXT");
    for piece in value.as_bytes().chunks(255) {
        line.push_str(" \"");
        for &b in piece {
            if matches!(b, b'"' | b'\\') {
                line.push('\\');
            }
            line.push(char::from(b));
        }
        line.push('"');
    }
    line.push('\n');
    line
}

/// A nameserver that never answers: queries arrive (UDP) or connect (TCP) and wait. For
/// "the server is not answering" (`temperror`) cases; its sockets close when it is dropped.
#[derive(Debug)]
pub struct SilentDns {
    addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl SilentDns {
    /// Binds UDP and TCP on one free port of 127.0.0.1.
    pub fn start() -> io::Result<Self> {
        let mut last = None;
        for _ in 0..20 {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            match std::net::TcpListener::bind(udp.local_addr()?) {
                Ok(tcp) => {
                    return Ok(Self {
                        addr: udp.local_addr()?,
                        _udp: udp,
                        _tcp: tcp,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
    }

    /// The address to point a resolver at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A running authoritative server. Keep it alive for as long as the test resolves: dropping it
/// stops the server.
pub struct TestDns {
    addr: SocketAddr,
    // Dropping the server aborts its tasks.
    _server: Server<Catalog>,
}

impl TestDns {
    /// Starts a server on a free port of 127.0.0.1 answering with `records` (zone-file lines,
    /// absolute names), each zone of [`ZONES`] with its own SOA.
    pub async fn start(records: &str) -> io::Result<Self> {
        let all = parse(records, "")?;
        let mut catalog = Catalog::new();
        let mut placed = 0;
        for zone in ZONES {
            let origin = Name::from_ascii(zone).map_err(invalid)?;
            let lower = LowerName::from(origin.clone());
            let soa = format!(
                "@ 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 {NEGATIVE_TTL}\n\
                 @ 3600 IN NS ns.test.\n"
            );
            let mut zone_records = parse(&soa, zone)?;
            for (key, set) in &all {
                if lower.zone_of(&key.name) {
                    zone_records.insert(key.clone(), set.clone());
                    placed += 1;
                }
            }
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin,
                zone_records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(invalid)?;
            let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
            catalog.upsert(lower, vec![handler]);
        }
        if placed != all.len() {
            return Err(invalid(format!("records outside the zones {ZONES:?}")));
        }

        let (udp, tcp) = bind_udp_and_tcp().await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Ok(Self {
            addr,
            _server: server,
        })
    }

    /// The address to point a resolver at (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1. The port the system picks
/// for UDP may be taken for TCP (by another test, say), so this tries a few.
async fn bind_udp_and_tcp() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

fn parse(text: &str, origin: &str) -> io::Result<BTreeMap<RrKey, RecordSet>> {
    let origin = if origin.is_empty() {
        Name::root()
    } else {
        Name::from_ascii(origin).map_err(invalid)?
    };
    let (_, records) = Parser::new(text, None, Some(origin))
        .parse()
        .map_err(invalid)?;
    Ok(records)
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}
