//! [`TlsSettings`]: how a client connection is encrypted, and with which roots.

use std::sync::Arc;

use rustls::pki_types::{InvalidDnsNameError, ServerName};
use rustls::{ClientConfig, RootCertStore};

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

/// A client config with the crate's ring provider, TLS 1.2 and 1.3, and no client
/// certificate.
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        // The ring provider supports the safe default versions: this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
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
}
