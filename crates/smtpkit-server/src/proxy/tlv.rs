//! [`ProxyTlvs`]: the type-length-value fields after the addresses of a PROXY v2 header
//! (spec section 2.2.1 onwards): what the proxy knew of the client that addresses cannot say.

/// `PP2_TYPE_ALPN`.
const ALPN: u8 = 0x01;
/// `PP2_TYPE_AUTHORITY`: the host name the client asked for (SNI).
const AUTHORITY: u8 = 0x02;
/// `PP2_TYPE_UNIQUE_ID`.
const UNIQUE_ID: u8 = 0x05;
/// `PP2_TYPE_SSL`, with its own sub-TLVs.
const SSL: u8 = 0x20;
const SSL_VERSION: u8 = 0x21;
const SSL_CN: u8 = 0x22;
const SSL_CIPHER: u8 = 0x23;
/// `PP2_CLIENT_SSL`: the client connected over TLS.
const CLIENT_SSL: u8 = 0x01;
/// `PP2_CLIENT_CERT_CONN`: the client presented a certificate on this connection.
const CLIENT_CERT_CONN: u8 = 0x02;

/// The TLVs of a PROXY v2 header that an SMTP application may use; others are kept raw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyTlvs {
    /// The ALPN protocol the proxy agreed with the client.
    pub alpn: Option<Vec<u8>>,
    /// The host name the client asked the proxy for (its SNI), as sent.
    pub authority: Option<String>,
    /// The proxy's id for the connection (up to 128 octets).
    pub unique_id: Option<Vec<u8>>,
    /// What the proxy knew of the client's TLS, when the client used TLS to reach it.
    pub ssl: Option<ProxySsl>,
    /// Every other TLV as `(type, value)`, in order.
    pub other: Vec<(u8, Vec<u8>)>,
}

/// `PP2_TYPE_SSL`: the client's TLS session with the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxySsl {
    /// The client presented a certificate on this connection.
    pub client_cert: bool,
    /// The proxy verified the client's certificate (`verify` field zero).
    pub verified: bool,
    /// The TLS version (`TLSv1.3`).
    pub version: Option<String>,
    /// The cipher (`ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: Option<String>,
    /// The common name of the client certificate's subject.
    pub common_name: Option<String>,
}

impl ProxyTlvs {
    /// The TLVs in `area`, the octets after a v2 header's address block. A truncated last TLV
    /// ends the list: the addresses are still good, and nothing in a TLV is needed to serve.
    pub fn parse(area: &[u8]) -> Self {
        let mut tlvs = Self::default();
        for (kind, value) in entries(area) {
            match kind {
                ALPN => tlvs.alpn = Some(value.to_vec()),
                AUTHORITY => tlvs.authority = Some(String::from_utf8_lossy(value).into_owned()),
                UNIQUE_ID => tlvs.unique_id = Some(value.to_vec()),
                SSL => tlvs.ssl = ProxySsl::parse(value),
                _ => tlvs.other.push((kind, value.to_vec())),
            }
        }
        tlvs
    }
}

impl ProxySsl {
    fn parse(value: &[u8]) -> Option<Self> {
        let (&client, rest) = value.split_first()?;
        let verify = rest.get(..4)?;
        if client & CLIENT_SSL == 0 {
            return None;
        }
        let mut ssl = Self {
            client_cert: client & CLIENT_CERT_CONN != 0,
            verified: verify == [0, 0, 0, 0],
            ..Self::default()
        };
        let text = |v: &[u8]| Some(String::from_utf8_lossy(v).into_owned());
        for (kind, v) in entries(&rest[4..]) {
            match kind {
                SSL_VERSION => ssl.version = text(v),
                SSL_CN => ssl.common_name = text(v),
                SSL_CIPHER => ssl.cipher = text(v),
                _ => {}
            }
        }
        Some(ssl)
    }
}

/// The `(type, value)` entries of a TLV list, up to the first truncated one.
fn entries(mut area: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [kind, hi, lo, rest @ ..] = area else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let value = rest.get(..len)?;
        let kind = *kind;
        area = &rest[len..];
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn known_tlvs_are_decoded_and_others_kept() {
        let mut ssl = vec![CLIENT_SSL | CLIENT_CERT_CONN, 0, 0, 0, 0];
        ssl.extend(tlv(SSL_VERSION, b"TLSv1.3"));
        ssl.extend(tlv(SSL_CN, b"client.test"));
        ssl.extend(tlv(SSL_CIPHER, b"TLS_AES_128_GCM_SHA256"));
        let mut area = tlv(ALPN, b"smtp");
        area.extend(tlv(AUTHORITY, b"mx.test"));
        area.extend(tlv(UNIQUE_ID, b"\x01\x02"));
        area.extend(tlv(SSL, &ssl));
        area.extend(tlv(0xE0, b"custom"));
        let tlvs = ProxyTlvs::parse(&area);
        assert_eq!(tlvs.alpn.as_deref(), Some(&b"smtp"[..]));
        assert_eq!(tlvs.authority.as_deref(), Some("mx.test"));
        assert_eq!(tlvs.unique_id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(tlvs.other, [(0xE0, b"custom".to_vec())]);
        let ssl = tlvs.ssl.expect("SSL TLV");
        assert!(ssl.client_cert && ssl.verified);
        assert_eq!(ssl.version.as_deref(), Some("TLSv1.3"));
        assert_eq!(ssl.common_name.as_deref(), Some("client.test"));
        assert_eq!(ssl.cipher.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    }

    #[test]
    fn truncated_and_unverified() {
        // A failed verification, and a client that did not use TLS: no SSL facts.
        let mut area = tlv(SSL, &[CLIENT_SSL, 0, 0, 0, 1]);
        area.extend(tlv(AUTHORITY, b"a"));
        // The last TLV claims more octets than there are.
        area.extend_from_slice(&[ALPN, 0, 9, b'x']);
        let tlvs = ProxyTlvs::parse(&area);
        assert!(!tlvs.ssl.expect("SSL TLV").verified);
        assert_eq!(tlvs.authority.as_deref(), Some("a"));
        assert_eq!(tlvs.alpn, None);
        assert_eq!(ProxyTlvs::parse(&tlv(SSL, &[0, 0, 0, 0, 0])).ssl, None);
        assert_eq!(ProxyTlvs::parse(&[]), ProxyTlvs::default());
        assert_eq!(ProxyTlvs::parse(&[1, 0]), ProxyTlvs::default());
    }
}
