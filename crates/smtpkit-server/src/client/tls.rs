//! [`TlsSettings`]: how a client connection is encrypted, and with which roots.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// When the connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// TLS from the first byte (SMTPS, port 465; RFC 8314 3).
    Implicit,
    /// STARTTLS, or no session at all: a server that does not offer it, or refuses it, gets
    /// [`Error::TlsUnavailable`](super::Error::TlsUnavailable) or its refusal.
    Required,
    /// STARTTLS when the server offers it, plaintext otherwise (RFC 3207 as MX relays use it).
    /// A handshake that fails still fails the connection: the server did promise TLS.
    Opportunistic,
}

/// The TLS side of a client connection: the rustls config (roots, client certificate), the
/// name the certificate must carry (SNI), which is independent of the address connected to,
/// and when to encrypt.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The rustls client configuration.
    pub config: Arc<ClientConfig>,
    /// The name sent as SNI and verified against the server's certificate.
    pub server_name: ServerName<'static>,
    /// Implicit TLS, or STARTTLS required or opportunistic.
    pub mode: TlsMode,
}

impl TlsSettings {
    /// TLS for `server_name` with the given config.
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>, mode: TlsMode) -> Self {
        Self {
            config,
            server_name,
            mode,
        }
    }

    /// TLS for the DNS name `server_name`, verified against the Mozilla roots of
    /// `webpki-roots`.
    pub fn webpki(server_name: &str, mode: TlsMode) -> Result<Self, InvalidDnsNameError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(roots, server_name, mode)
    }

    /// TLS for the DNS name `server_name`, verified against `roots` (a private CA, say).
    pub fn with_roots(
        roots: RootCertStore,
        server_name: &str,
        mode: TlsMode,
    ) -> Result<Self, InvalidDnsNameError> {
        let server_name = ServerName::try_from(server_name.to_owned())?;
        Ok(Self::new(Arc::new(client_config(roots)), server_name, mode))
    }
}

/// A config builder on `provider` with TLS 1.2 and 1.3.
fn builder(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Both providers the crate builds with (ring, aws-lc-rs) support the safe default
        // versions: this cannot fail.
        .expect("the crate's crypto provider supports TLS 1.2 and 1.3")
}

/// A client config with the crate's provider, TLS 1.2 and 1.3, and no client
/// certificate.
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    builder(crate::tls::provider())
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A client config with the crate's provider, TLS 1.2 and 1.3, no client certificate, and
/// [`AnyCertificate`] as the verifier: for opportunistic TLS, never where a name must be
/// proven.
pub fn any_certificate_config() -> ClientConfig {
    let provider = crate::tls::provider();
    let verifier = Arc::new(AnyCertificate::new(&provider));
    builder(provider)
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// A verifier for opportunistic TLS (RFC 7435): any certificate chain and any name pass, but
/// the handshake's signatures are still checked, so the session is encrypted to whoever holds
/// the key of the presented certificate. It does not protect against an active attacker.
///
/// Verifiers that judge the certificate themselves (DANE, say) can delegate the signature
/// checks to one of these.
#[derive(Debug, Clone)]
pub struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    /// Checks signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roots() {
        let t = TlsSettings::webpki("mx.example.com", TlsMode::Required).unwrap();
        assert_eq!(t.server_name.to_str(), "mx.example.com");
        assert_eq!(t.mode, TlsMode::Required);
        assert!(TlsSettings::webpki("not a name", TlsMode::Opportunistic).is_err());
        // An IP address is a valid name for the certificate check too.
        let t = TlsSettings::with_roots(RootCertStore::empty(), "192.0.2.1", TlsMode::Implicit);
        assert!(t.is_ok());
    }

    /// Runs a handshake in memory between `client` (for `name`) and a server presenting a
    /// self-signed certificate for `cert_name`; `Ok` when the client accepts it.
    fn handshake(client: ClientConfig, name: &str, cert_name: &str) -> Result<(), rustls::Error> {
        use rustls::pki_types::PrivateKeyDer;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![cert_name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        // A handshake takes a few flights each way; 10 rounds bound a stuck one.
        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut bytes = Vec::new();
            server.write_tls(&mut bytes).unwrap();
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn any_certificate_accepts_a_stranger_that_verified_roots_refuse() {
        assert_eq!(
            handshake(any_certificate_config(), "mx.example.com", "other.test"),
            Ok(())
        );
        let refused = handshake(
            client_config(RootCertStore::empty()),
            "mx.example.com",
            "other.test",
        );
        assert!(
            matches!(refused, Err(rustls::Error::InvalidCertificate(_))),
            "{refused:?}"
        );
    }
}
