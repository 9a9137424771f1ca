//! TLS configuration: load PEM files into a rustls [`ServerConfig`] using the `ring` provider,
//! and swap certificates at run time with [`ReloadableCert`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use smtpkit_server::tls::{ReloadableCert, rustls_config};
//!
//! let cert = Arc::new(ReloadableCert::from_files("cert.pem", "key.pem")?);
//! let config = rustls_config(cert.clone())?;
//! // ... later, after the files were renewed:
//! cert.reload()?;
//! # Ok::<(), smtpkit_server::tls::TlsError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Why TLS configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// rustls refused the key or the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (no usable root, say).
    #[error("client certificate verification: {0}")]
    ClientAuth(#[from] VerifierBuilderError),
}

/// Whether a listener insists on a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum ClientAuthMode {
    /// Ask for a certificate, accept clients without one (Node `requestCert` alone); a
    /// certificate that does not verify still fails the handshake.
    Optional,
    /// Refuse the handshake of a client without a valid certificate (Node `requestCert` with
    /// `rejectUnauthorized`).
    Required,
}

/// Client-certificate verification for a listener: the CA certificates a client's chain must
/// lead to, and whether one is required. The verified chain is
/// [`TlsInfo::peer_certificates`](crate::TlsInfo::peer_certificates).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientAuth {
    /// The trusted CA certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// Optional or required.
    pub mode: ClientAuthMode,
}

impl ClientAuth {
    /// Verification against `roots`.
    pub fn new(roots: Vec<CertificateDer<'static>>, mode: ClientAuthMode) -> Self {
        Self { roots, mode }
    }

    /// Verification against the CA certificates of a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>, mode: ClientAuthMode) -> Result<Self, TlsError> {
        let path = path.as_ref();
        let pem_err = |source| TlsError::Pem {
            path: path.to_owned(),
            source,
        };
        let roots = CertificateDer::pem_file_iter(path)
            .map_err(pem_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err)?;
        if roots.is_empty() {
            return Err(TlsError::NoCertificate(path.to_owned()));
        }
        Ok(Self::new(roots, mode))
    }
}

/// `base` with client certificates verified as `auth` says: the same certificates (its
/// resolver), ALPN and provider, rustls' safe default protocol versions, and a session cache
/// of its own, so a session begun without a certificate elsewhere is never resumed here.
pub fn with_client_auth(
    base: &ServerConfig,
    auth: &ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for root in &auth.roots {
        roots.add(root.clone())?;
    }
    let provider = Arc::clone(base.crypto_provider());
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    let verifier = match auth.mode {
        ClientAuthMode::Optional => builder.allow_unauthenticated().build()?,
        ClientAuthMode::Required => builder.build()?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::clone(&base.cert_resolver));
    config.alpn_protocols.clone_from(&base.alpn_protocols);
    config.ignore_client_order = base.ignore_client_order;
    config.max_fragment_size = base.max_fragment_size;
    Ok(Arc::new(config))
}

/// The provider every config of this crate uses, chosen explicitly so nothing depends on a
/// process-wide default provider: ring with the `ring` feature (the default), aws-lc-rs with
/// `aws-lc-rs` alone.
pub fn provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    let provider = rustls::crypto::ring::default_provider();
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(provider)
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("smtpkit-server needs a rustls crypto provider: enable `ring` or `aws-lc-rs`");

/// Loads a certificate chain and a private key (PKCS#8, PKCS#1 or SEC1) from PEM files into a
/// server config with rustls' safe default protocol versions (TLS 1.2 and 1.3).
pub fn load_tls(
    cert_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let key = load_certified_key(cert_pem.as_ref(), key_pem.as_ref())?;
    let resolver = Arc::new(ReloadableCert::new(key));
    rustls_config(resolver)
}

/// A server config whose certificates come from `resolver`: a [`ReloadableCert`], or the
/// application's own resolver (for SNI with many names, or certificates from a store).
pub fn rustls_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Arc::new(config))
}

/// Reads a PEM certificate chain and private key and checks that they fit together.
pub fn load_certified_key(cert_pem: &Path, key_pem: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .map_err(pem_err(cert_pem))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert_pem))?;
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(pem_err(key_pem))?;
    certified_key(certs, key).map_err(|e| match e {
        TlsError::NoCertificate(_) => TlsError::NoCertificate(cert_pem.to_owned()),
        other => other,
    })
}

/// Builds a [`CertifiedKey`] from DER parts, checking that the key matches the certificate.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(PathBuf::new()));
    }
    let signing_key = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match()?;
    Ok(certified)
}

/// A certificate resolver whose certificates can be replaced while the server runs.
///
/// It serves a default certificate, or one chosen by the client's SNI name when one was added
/// with [`set_for_name`](Self::set_for_name). Handshakes in progress keep the certificate they
/// started with.
pub struct ReloadableCert {
    files: Option<(PathBuf, PathBuf)>,
    // A read lock per handshake is cheap next to the handshake; writes happen on reload only.
    current: RwLock<Certs>,
}

struct Certs {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let certs = self.read();
        f.debug_struct("ReloadableCert")
            .field("files", &self.files)
            .field("names", &certs.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// A resolver serving `key`; [`reload`](Self::reload) has no files to read.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            files: None,
            current: RwLock::new(Certs {
                default: Arc::new(key),
                by_name: HashMap::new(),
            }),
        }
    }

    /// A resolver serving the PEM files, which [`reload`](Self::reload) reads again.
    pub fn from_files(
        cert_pem: impl Into<PathBuf>,
        key_pem: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let (cert, key) = (cert_pem.into(), key_pem.into());
        let mut this = Self::new(load_certified_key(&cert, &key)?);
        this.files = Some((cert, key));
        Ok(this)
    }

    /// Reads the files again and serves the new certificate to new handshakes. On error the
    /// old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Some((cert, key)) = &self.files {
            let key = load_certified_key(cert, key)?;
            self.set(key);
        }
        Ok(())
    }

    /// Replaces the default certificate.
    pub fn set(&self, key: CertifiedKey) {
        self.write().default = Arc::new(key);
    }

    /// Serves `key` to clients asking for `name` (SNI, compared case-insensitively).
    pub fn set_for_name(&self, name: &str, key: CertifiedKey) {
        self.write()
            .by_name
            .insert(name.to_ascii_lowercase(), Arc::new(key));
    }

    /// The certificate served to new handshakes without a matching SNI name.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.read().default)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Certs> {
        // A writer only swaps Arcs, so a poisoned lock still holds consistent data.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Certs> {
        self.current.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.read();
        let by_name = hello
            .server_name()
            .filter(|_| !certs.by_name.is_empty())
            .and_then(|n| certs.by_name.get(&n.to_ascii_lowercase()));
        Some(Arc::clone(by_name.unwrap_or(&certs.default)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self_signed(name);
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "smtpkit-server-tls-{tag}-{}-{}",
            std::process::id(),
            crate::SessionId::next()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn load_and_reload() {
        let dir = tempdir("reload");
        let (c, k) = write_pair(&dir, "one.example");
        assert!(load_tls(&c, &k).is_ok());
        let r = ReloadableCert::from_files(&c, &k).unwrap();
        let before = r.current().cert[0].clone();
        write_pair(&dir, "two.example");
        r.reload().unwrap();
        assert_ne!(r.current().cert[0], before);
        // A broken file keeps the old certificate.
        let now = r.current().cert[0].clone();
        std::fs::write(&k, "garbage").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(r.current().cert[0], now);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors() {
        let dir = tempdir("errors");
        let (c, k) = write_pair(&dir, "one.example");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            load_tls(&empty, &k),
            Err(TlsError::NoCertificate(p)) if p == empty
        ));
        assert!(matches!(
            load_tls(dir.join("missing.pem"), &k),
            Err(TlsError::Pem { .. })
        ));
        // A key that does not belong to the certificate.
        let (_, other_key) = self_signed("x");
        let k2 = dir.join("other.pem");
        std::fs::write(&k2, other_key).unwrap();
        assert!(matches!(load_tls(&c, &k2), Err(TlsError::Rustls(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_shows_names_not_keys() {
        let (cert, key) = self_signed("a.example");
        let ck = || {
            certified_key(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let r = ReloadableCert::new(ck());
        r.set_for_name("A.Example", ck());
        let dbg = format!("{r:?}");
        assert!(dbg.contains("a.example"), "{dbg}");
        assert!(!dbg.contains("PRIVATE"));
    }
}
