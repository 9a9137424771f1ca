//! [`TlsInfo`]: what the application may know of a finished TLS handshake.

use rustls::pki_types::CertificateDer;
use rustls::{CipherSuite, ProtocolVersion, ServerConnection};

/// The facts of a TLS session, taken once after its handshake (implicit TLS or STARTTLS).
///
/// Every adapter builds it with [`TlsInfo::from_connection`], so the three of them report the
/// same facts for the same handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version (`TLSv1_3`, say).
    pub version: Option<ProtocolVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<CipherSuite>,
    /// The host name the client asked for with SNI, if it sent one.
    pub sni: Option<String>,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate chain, leaf first; empty when it presented none.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

impl TlsInfo {
    /// The facts of `conn`, whose handshake has finished.
    pub fn from_connection(conn: &ServerConnection) -> Self {
        Self {
            version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            sni: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates: conn
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        }
    }

    /// The version as a short printable name for logs and `Received:` headers (`TLSv1.3`).
    pub fn version_name(&self) -> &'static str {
        match self.version {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            Some(_) => "TLS",
            None => "unknown",
        }
    }
}
