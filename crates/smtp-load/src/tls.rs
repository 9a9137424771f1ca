//! Client TLS configuration for STARTTLS (rustls with the `ring` provider).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use smtpkit_tokio::client;

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Verification<'a> {
    /// Verify the chain against the CA certificates in this PEM file.
    CaFile(&'a Path),
    /// Accept any certificate (the handshake signature is still checked). Only for load tests against
    /// servers with self-signed certificates: it gives no protection against an attacker.
    Insecure,
}

/// Why a TLS client configuration could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The CA file could not be read or parsed.
    CaFile(String),
    /// rustls rejected the configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile(msg) => write!(f, "cannot load CA file: {msg}"),
            Self::Rustls(e) => write!(f, "tls configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// Builds a client configuration with smtpkit's provider (`ring`) and the given verification.
pub fn client_config(verification: Verification<'_>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let config = match verification {
        Verification::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsConfigError::CaFile(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| TlsConfigError::CaFile(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(TlsConfigError::Rustls)?;
            }
            if roots.is_empty() {
                return Err(TlsConfigError::CaFile(format!(
                    "{}: no certificates",
                    path.display()
                )));
            }
            client::client_config(roots)
        }
        Verification::Insecure => client::any_certificate_config(),
    };
    Ok(Arc::new(config))
}
