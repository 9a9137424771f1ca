//! A throw-away CA and a `localhost` certificate, generated once per test process.

use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use smtpkit_server::tls::{ReloadableCert, certified_key, provider, rustls_config};

/// The name on the server certificate, which the client verifies.
pub const SERVER_NAME: &str = "localhost";

/// The server and client TLS configs of the suite, both with the ring provider.
#[derive(Debug)]
pub struct Pki {
    /// For the server under test: a `localhost` certificate signed by the suite's CA.
    pub server: Arc<rustls::ServerConfig>,
    /// For the suite's client: trusts only the suite's CA.
    pub client: Arc<rustls::ClientConfig>,
    /// The CA certificate, PEM (for clients such as lettre).
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    /// The process-wide instance; key generation is the slow part, so it happens once.
    pub fn get() -> &'static Self {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(Self::generate)
    }

    /// A fresh CA, leaf certificate and configs.
    ///
    /// # Panics
    ///
    /// If rcgen or rustls refuse their own freshly generated material, which would be a bug
    /// in the suite.
    pub fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec![SERVER_NAME.into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        let key = certified_key(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("certified key");
        let server = rustls_config(Arc::new(ReloadableCert::new(key))).expect("server config");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("CA root");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            server,
            client: Arc::new(client),
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
        }
    }

    /// A client connection for [`SERVER_NAME`].
    pub fn client_connection(&self) -> rustls::ClientConnection {
        let name = ServerName::try_from(SERVER_NAME).expect("valid server name");
        rustls::ClientConnection::new(Arc::clone(&self.client), name).expect("client connection")
    }
}
