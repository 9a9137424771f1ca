//! The `proxy` target: the PROXY protocol v1/v2 header parser of `smtpkit-server`.

use std::net::SocketAddr;

use smtpkit_server::proxy::{MAX_V1_HEADER, MAX_V2_HEADER, ProxyHeader, parse_proxy_header};

/// The v2 signature (spec section 2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// `proxy`: any bytes as the start of a connection behind a load balancer.
///
/// Asserts: `parse_proxy_header` does not panic; a parsed header takes at least one octet, at
/// most the input and at most the limit of its version, and its version matches the input's
/// signature; the same header parses from exactly its own octets, and `Proxied` addresses
/// survive re-encoding as v1 and v2; "read more" is only asked below the size limit, so a
/// peer can never make the server buffer more than one header; and the answer never changes as
/// more bytes arrive (a prefix's success or error is final), so reading the header in pieces
/// cannot change what is believed.
pub fn proxy(data: &[u8]) {
    let full = parse_proxy_header(data);
    match &full {
        Ok(None) => {
            let limit = if data.starts_with(b"PROXY ") {
                MAX_V1_HEADER
            } else {
                MAX_V2_HEADER
            };
            assert!(
                data.len() < limit,
                "asks for more after {} octets",
                data.len()
            );
        }
        Ok(Some((header, used))) => {
            let used = *used;
            assert!(
                used >= 1 && used <= data.len(),
                "used {used} of {}",
                data.len()
            );
            let v2 = data.starts_with(V2_SIGNATURE);
            let limit = if v2 { MAX_V2_HEADER } else { MAX_V1_HEADER };
            assert!(used <= limit, "a header of {used} octets");
            match header {
                ProxyHeader::Proxied { version, .. } | ProxyHeader::Unknown { version } => {
                    assert_eq!(*version, if v2 { 2 } else { 1 });
                }
                ProxyHeader::Local => assert!(v2, "LOCAL exists only in v2"),
            }
            assert_eq!(
                parse_proxy_header(&data[..used]),
                Ok(Some((*header, used))),
                "the header's own octets parse differently"
            );
            if let ProxyHeader::Proxied {
                source,
                destination,
                ..
            } = *header
            {
                round_trip(source, destination);
            }
        }
        Err(_) => {}
    }
    // A few cut points stand for "the header arrived in two reads".
    let len = data.len();
    let used = match &full {
        Ok(Some((_, n))) => *n,
        _ => len,
    };
    for cut in [1, 15, 16, len / 2, used.saturating_sub(1)] {
        if cut == 0 || cut >= len {
            continue;
        }
        match parse_proxy_header(&data[..cut]) {
            Ok(None) => {}
            decided => assert_eq!(decided, full, "the answer after {cut} octets changed later"),
        }
    }
}

/// Encodes `source` and `destination` as v1 and as v2 and checks they parse back.
fn round_trip(source: SocketAddr, destination: SocketAddr) {
    let v1 = encode_v1(source, destination);
    assert_eq!(
        parse_proxy_header(&v1),
        Ok(Some((
            ProxyHeader::Proxied {
                version: 1,
                source,
                destination
            },
            v1.len()
        ))),
        "v1 {:?}",
        String::from_utf8_lossy(&v1)
    );
    let v2 = encode_v2(source, destination);
    assert_eq!(
        parse_proxy_header(&v2),
        Ok(Some((
            ProxyHeader::Proxied {
                version: 2,
                source,
                destination
            },
            v2.len()
        )))
    );
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("a parsed header mixes address families: {source} {destination}"),
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&u16::try_from(body.len()).expect("short body").to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_round_trip() {
        round_trip(
            "192.0.2.1:1".parse().unwrap(),
            "198.51.100.2:25".parse().unwrap(),
        );
        round_trip(
            "[2001:db8::1]:65535".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
        );
    }

    #[test]
    fn known_inputs_pass() {
        proxy(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n");
        proxy(b"PROXY UNKNOWN\r\n");
        proxy(b"PROXY TCP4 1.2.3.4");
        proxy(&encode_v2(
            "10.0.0.1:5".parse().unwrap(),
            "10.0.0.2:25".parse().unwrap(),
        ));
        proxy(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff");
        proxy(b"");
    }
}
