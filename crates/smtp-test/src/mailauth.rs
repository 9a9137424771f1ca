//! Signing for mail authentication tests: DKIM keys made at test time (Ed25519) or loaded from
//! a committed throw-away fixture (RSA: ring cannot generate RSA keys), their DNS records for
//! [`TestDns`](crate::dns::TestDns), and DKIM signatures and ARC seals over test messages.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput};

use crate::dns::txt;

/// A 2048-bit RSA key made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`
/// for these tests only. It signs nothing outside them.
pub const RSA_PKCS8_PEM: &str = include_str!("../fixtures/dkim-rsa-throwaway.pem");

/// The selector of the Ed25519 key.
pub const ED25519_SELECTOR: &str = "ed";
/// The selector of the RSA key.
pub const RSA_SELECTOR: &str = "rsa";

/// The signed header fields: what a typical signer covers.
const SIGNED: [&str; 4] = ["From", "To", "Subject", "Date"];

/// Two signing keys: a fresh Ed25519 key and the RSA fixture.
pub struct Keys {
    /// mail-auth's keys are not `Clone` and its signers own theirs: each signature is made
    /// with a key built afresh from these bytes.
    ed25519_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys")
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    /// A new Ed25519 key and the RSA fixture.
    ///
    /// # Panics
    /// If ring cannot make a key (it always can).
    pub fn new() -> Self {
        Self {
            ed25519_pkcs8: Ed25519Key::generate_pkcs8().expect("ed25519 key"),
        }
    }

    fn ed25519(&self) -> Ed25519Key {
        Ed25519Key::from_pkcs8_der(&self.ed25519_pkcs8).expect("ed25519 key")
    }

    fn rsa() -> RsaKey<Sha256> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(RSA_PKCS8_PEM.as_bytes()).expect("rsa fixture");
        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).expect("rsa fixture")
    }

    /// The DKIM key records of both keys for `domain` (no trailing dot), zone-file lines.
    pub fn records(&self, domain: &str) -> String {
        let ed = STANDARD.encode(self.ed25519().public_key());
        let rsa = STANDARD.encode(Self::rsa().public_key());
        format!(
            "{}{}",
            txt(
                &format!("{ED25519_SELECTOR}._domainkey.{domain}."),
                &format!("v=DKIM1; k=ed25519; p={ed}")
            ),
            txt(
                &format!("{RSA_SELECTOR}._domainkey.{domain}."),
                &format!("v=DKIM1; k=rsa; p={rsa}")
            )
        )
    }

    /// `message` with an Ed25519 `DKIM-Signature` by `domain` prepended.
    ///
    /// # Panics
    /// If the message has none of the signed header fields.
    pub fn sign_ed25519(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let signature = DkimSigner::from_key(self.ed25519())
            .domain(domain)
            .selector(ED25519_SELECTOR)
            .headers(SIGNED)
            .sign(message)
            .expect("dkim signature");
        prepend(signature.to_header(), message)
    }

    /// `message` with an RSA-SHA256 `DKIM-Signature` by `domain` prepended.
    ///
    /// # Panics
    /// If the message has none of the signed header fields.
    pub fn sign_rsa(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let signature = DkimSigner::from_key(Self::rsa())
            .domain(domain)
            .selector(RSA_SELECTOR)
            .headers(SIGNED)
            .sign(message)
            .expect("dkim signature");
        prepend(signature.to_header(), message)
    }

    /// `message` as forwarder `domain` passes it on: its own results for the hop it received
    /// (a DKIM pass for the `From:` domain) sealed into the first ARC set with the RSA key.
    ///
    /// # Panics
    /// If the message does not parse.
    pub fn arc_seal(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let parsed = AuthenticatedMessage::parse(message).expect("message parses");
        let results =
            AuthenticationResults::new(domain).with_dkim_result(&DkimOutput::pass(), parsed.from());
        let set = mail_auth::arc::ArcSealer::from_key(Self::rsa())
            .domain(domain)
            .selector(RSA_SELECTOR)
            .headers(["From", "To", "Subject", "DKIM-Signature"])
            .seal(&parsed, &results, &ArcOutput::default())
            .expect("arc seal");
        prepend(set.to_header(), message)
    }
}

fn prepend(header: String, message: &[u8]) -> Vec<u8> {
    let mut out = header.into_bytes();
    out.extend_from_slice(message);
    out
}
