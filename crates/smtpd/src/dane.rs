//! DANE for SMTP (RFC 7672): an MX host's TLSA records (`_25._tcp.HOST`), looked up with
//! DNSSEC validation, decide which certificate it may present.
//!
//! Only an RRset the resolver validated (`Proof::Secure`) counts: an unsigned zone is no DANE
//! (RFC 7672 2.2), a bogus answer makes the host unusable (defer). Of the records, only
//! `DANE-EE(3)` and `DANE-TA(2)` are usable for SMTP (RFC 7672 3.1.3: PKIX-TA/EE are not),
//! with selector 0 (whole certificate) or 1 (SubjectPublicKeyInfo) and matching 0 (exact),
//! 1 (SHA-256) or 2 (SHA-512). [`DaneVerifier`] is the rustls verifier that checks them in
//! place of the web PKI:
//! - `DANE-EE`: the server's own certificate matches; its names and dates are not checked
//!   (RFC 7672 3.1.1);
//! - `DANE-TA`: a certificate the server sent matches, and the chain from the server's
//!   certificate up to it is valid for the MX host name (RFC 7672 3.1.2).

use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::RData;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use smtpkit_tokio::client::AnyCertificate;

/// One TLSA record: usage, selector, matching type, data (RFC 6698 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 2 = DANE-TA, 3 = DANE-EE (others are not usable for SMTP).
    pub usage: u8,
    /// 0 = the whole certificate, 1 = its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 = exact, 1 = SHA-256, 2 = SHA-512.
    pub matching: u8,
    /// What the selected part must equal, or hash to.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// `DANE-EE` or `DANE-TA` with a known selector and matching type (RFC 7672 3.1.3).
    #[must_use]
    pub fn is_usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` is the certificate (or key) this record names.
    #[must_use]
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let spki;
        let selected: &[u8] = match self.selector {
            0 => cert.as_ref(),
            1 => match webpki::EndEntityCert::try_from(cert) {
                Ok(parsed) => {
                    spki = parsed.subject_public_key_info();
                    spki.as_ref()
                }
                Err(_) => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => ring::digest::digest(&ring::digest::SHA256, selected).as_ref() == self.data,
            2 => ring::digest::digest(&ring::digest::SHA512, selected).as_ref() == self.data,
            _ => false,
        }
    }

    /// The record in presentation form, for logs and TLS reports: `3 1 1 <hex>`.
    #[must_use]
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = format!("{} {} {} ", self.usage, self.selector, self.matching);
        for b in &self.data {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// What the TLSA lookup of an MX host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No validated TLSA records (none, an unsigned zone, or only unusable ones): no DANE.
    Nothing,
    /// Validated, usable records: the session must match one.
    Records(Vec<Tlsa>),
    /// The answer failed validation, or the lookup failed: the host is not to be used now.
    Failed(String),
}

/// The TLSA records of `_PORT._tcp.HOST` from a validating resolver.
pub async fn lookup(resolver: &TokioResolver, host: &str, port: u16) -> Found {
    let name = format!("_{port}._tcp.{}.", host.trim_end_matches('.'));
    let lookup = match resolver.tlsa_lookup(name.as_str()).await {
        Ok(lookup) => lookup,
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => return Found::Nothing,
        Err(e) => return Found::Failed(format!("TLSA {name}: {e}")),
    };
    let mut records = Vec::new();
    for r in lookup.answers() {
        let RData::TLSA(tlsa) = &r.data else {
            continue;
        };
        match r.proof {
            Proof::Secure => {}
            Proof::Bogus => return Found::Failed(format!("TLSA {name}: DNSSEC validation failed")),
            // Unsigned: as if there were no records (RFC 7672 2.2).
            _ => return Found::Nothing,
        }
        let record = Tlsa {
            usage: u8::from(tlsa.cert_usage),
            selector: u8::from(tlsa.selector),
            matching: u8::from(tlsa.matching),
            data: tlsa.cert_data.clone(),
        };
        if record.is_usable() {
            records.push(record);
        }
    }
    if records.is_empty() {
        Found::Nothing
    } else {
        Found::Records(records)
    }
}

/// A rustls verifier that checks the presented chain against TLSA records; see the
/// [module docs](self).
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
    /// The handshake's signatures are checked as for any certificate; only the chain is DANE's.
    signatures: AnyCertificate,
}

impl DaneVerifier {
    /// Checks against `records` (the usable ones of a validated RRset).
    #[must_use]
    pub fn new(records: Vec<Tlsa>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            records,
            signatures: AnyCertificate::new(&provider),
            provider,
        }
    }

    /// A client configuration that verifies with these records.
    ///
    /// # Errors
    ///
    /// When the provider supports no safe protocol version.
    pub fn client_config(self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = Arc::clone(&self.provider);
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth())
    }

    /// `DANE-TA`: a presented certificate matching `record` anchors a valid chain for the name.
    fn trust_anchor_chain(
        &self,
        record: &Tlsa,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        intermediates.iter().any(|anchor| {
            if !record.matches(anchor) {
                return false;
            }
            let mut roots = RootCertStore::empty();
            if roots.add(anchor.clone().into_owned()).is_err() {
                return false;
            }
            let Ok(webpki) = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&self.provider),
            )
            .build() else {
                return false;
            };
            webpki
                .verify_server_cert(end_entity, intermediates, server_name, &[], now)
                .is_ok()
        })
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.records.iter().any(|r| match r.usage {
            3 => r.matches(end_entity),
            2 => self.trust_anchor_chain(r, end_entity, intermediates, server_name, now),
            _ => false,
        });
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData,
    };
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sha256(b: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    }

    fn sha512(b: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA512, b)
            .as_ref()
            .to_vec()
    }

    fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    struct Chain {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        leaf_spki: Vec<u8>,
        leaf_key: PrivateKeyDer<'static>,
    }

    fn chain(names: &[&str]) -> Chain {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
        Chain {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            leaf_spki: key.subject_public_key_info(),
            leaf_key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    #[test]
    fn selectors_and_matching_types() {
        let c = chain(&["mx.example.test"]);
        let leaf = c.leaf.as_ref().to_vec();
        for (record, expected) in [
            (tlsa(3, 0, 0, leaf.clone()), true),
            (tlsa(3, 0, 1, sha256(&leaf)), true),
            (tlsa(3, 0, 2, sha512(&leaf)), true),
            (tlsa(3, 1, 0, c.leaf_spki.clone()), true),
            (tlsa(3, 1, 1, sha256(&c.leaf_spki)), true),
            (tlsa(3, 1, 2, sha512(&c.leaf_spki)), true),
            (tlsa(3, 1, 1, sha256(&leaf)), false),
            (tlsa(3, 0, 1, sha256(c.ca.as_ref())), false),
            (tlsa(3, 0, 3, sha256(&leaf)), false),
        ] {
            assert_eq!(record.matches(&c.leaf), expected, "{}", record.to_text());
        }
        assert!(tlsa(2, 1, 1, vec![]).is_usable());
        assert!(
            !tlsa(1, 1, 1, vec![]).is_usable(),
            "PKIX-EE is not for SMTP"
        );
        assert!(!tlsa(3, 2, 1, vec![]).is_usable());
        assert_eq!(tlsa(3, 1, 1, vec![0xab, 1]).to_text(), "3 1 1 ab01");
    }

    /// A TLS handshake on loopback: a server presenting `c`'s leaf (and its CA when
    /// `send_ca`), a client verifying with `records` for `name`. `Ok` when both sides finish.
    fn handshake(c: &Chain, send_ca: bool, records: Vec<Tlsa>, name: &str) -> Result<(), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut certs = vec![c.leaf.clone()];
        if send_ca {
            certs.push(c.ca.clone());
        }
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, c.leaf_key.clone_key())
            .unwrap();
        let client = DaneVerifier::new(records, provider)
            .client_config()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let served = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                tls.write_all(b"220 ok").await.map_err(|e| e.to_string())?;
                tls.shutdown().await.map_err(|e| e.to_string())
            });
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                let mut tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut got = Vec::new();
                tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
                if got == b"220 ok" {
                    Ok(())
                } else {
                    Err(format!("read {got:?}"))
                }
            })
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
            // The server's side fails too when the client refuses; only the client's verdict
            // is under test.
            let _ = served.await;
            outcome
        })
    }

    #[test]
    fn dane_ee_ignores_names_and_issuers_but_not_the_key() {
        let c = chain(&["whatever.example"]);
        let ee = tlsa(3, 1, 1, sha256(&c.leaf_spki));
        handshake(&c, false, vec![ee.clone()], "mx.dest.test").expect("DANE-EE match");
        let other = chain(&["mx.dest.test"]);
        let wrong = tlsa(3, 1, 1, sha256(&other.leaf_spki));
        let err = handshake(&c, false, vec![wrong.clone()], "mx.dest.test").unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // Any one matching record is enough.
        handshake(&c, false, vec![wrong, ee], "mx.dest.test").expect("second record");
    }

    #[test]
    fn dane_ta_needs_the_anchor_in_the_chain_and_the_right_name() {
        let c = chain(&["mx.dest.test"]);
        let ta = tlsa(2, 0, 1, sha256(c.ca.as_ref()));
        handshake(&c, true, vec![ta.clone()], "mx.dest.test").expect("DANE-TA match");
        let err = handshake(&c, true, vec![ta.clone()], "mx.other.test").unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // The server did not send its CA: nothing to match the record against.
        assert!(handshake(&c, false, vec![ta], "mx.dest.test").is_err());
        // A DANE-TA record naming the leaf itself is no trust anchor for it.
        let leaf_as_ta = tlsa(2, 0, 1, sha256(c.leaf.as_ref()));
        assert!(handshake(&c, true, vec![leaf_as_ta], "mx.dest.test").is_err());
    }
}
