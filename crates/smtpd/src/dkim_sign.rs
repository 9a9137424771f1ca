//! DKIM signing of relayed mail (RFC 6376; Ed25519, RFC 8463): every message a user submits
//! for another domain is signed once, when it is queued, with each key its `From:` domain has in
//! `[dkim] key_dir` (an Ed25519 and an RSA-2048 signature, selectors as `smtpd dns-records`
//! made them), relaxed/relaxed, over [`SIGNED_HEADERS`].
//!
//! The body is hashed as it arrives ([`BodyHash`]): both signatures are relaxed and SHA-256, so
//! one body hash serves both, and the end of data only hashes the header fields and signs.
//! mail-auth 0.13.3's own streaming signer cannot do that: it borrows its signer (so it cannot
//! live in a session that owns it) and hashes the body once per key. Its parts are public, so
//! [`Signer::sign`] puts them together the way its `finish` does: the body canonicalizer, the
//! header canonicalizer, the keys and the `DKIM-Signature` writer are mail-auth's.
//!
//! A domain without keys is sent unsigned (`smtpd` warns about it at startup); a message is
//! never refused for want of a signature.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::{
    DkimKey, Ed25519Key, HashContext as _, HashImpl, RsaKey, Sha256, SigningKey as _,
};
use mail_auth::common::headers::{HeaderWriter as _, Writable, Writer};
use mail_auth::dkim::canonicalize::{BodyHasher, CanonicalHeaders};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done, Signature};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::dkim_key::{Algorithm, KeyStore};

/// The header fields signed, in the order they are looked for. `From` is listed twice so the
/// signature also covers a second `From:` that is not there (over-signing, RFC 6376 8.15): a
/// relay cannot add one that some readers would show instead. Fields a message lacks are
/// signed as absent, so none can be added later either.
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
];

type Hasher = <Sha256 as HashImpl>::Context;

/// The relaxed SHA-256 hash of a message's body, computed as the content passes: the header
/// block is skipped (it is signed at the end, with what the relay adds), the body is hashed
/// chunk by chunk and never held.
pub struct BodyHash {
    phase: Phase,
}

enum Phase {
    /// Still in the header block: its last bytes, to find a blank line split across chunks.
    /// It starts as a line end, so content that begins with the blank line has no header.
    Header { tail: Vec<u8> },
    /// Boxed: the hash state is large, the header phase is a few bytes.
    Body(Box<BodyHasher<Hasher>>),
}

impl fmt::Debug for BodyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Header { .. } => "header",
            Phase::Body(_) => "body",
        };
        f.debug_struct("BodyHash").field("phase", &phase).finish()
    }
}

impl Default for BodyHash {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyHash {
    /// Before the first byte of content.
    #[must_use]
    pub fn new() -> Self {
        Self {
            phase: Phase::Header {
                tail: b"\r\n".to_vec(),
            },
        }
    }

    /// The next piece of content (un-stuffed, CRLF lines, as the core hands it out).
    pub fn write(&mut self, chunk: &[u8]) {
        match &mut self.phase {
            Phase::Body(hasher) => hasher.write(chunk),
            Phase::Header { tail } => {
                // A blank line starting in the held tail needs at most 3 bytes of this chunk.
                let mut window = tail.clone();
                window.extend_from_slice(&chunk[..chunk.len().min(3)]);
                let start = memchr::memmem::find(&window, b"\r\n\r\n")
                    .map(|at| at + 4 - tail.len())
                    .or_else(|| memchr::memmem::find(chunk, b"\r\n\r\n").map(|at| at + 4));
                let Some(start) = start else {
                    tail.extend_from_slice(chunk);
                    let keep = tail.len().saturating_sub(3);
                    tail.drain(..keep);
                    return;
                };
                let mut hasher =
                    BodyHasher::new(<Sha256 as HashImpl>::hasher(), Canonicalization::Relaxed, 0);
                hasher.write(&chunk[start..]);
                self.phase = Phase::Body(Box::new(hasher));
            }
        }
    }

    /// The body hash (`bh=`). Content without a blank line has an empty body.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        let hasher = match self.phase {
            Phase::Body(hasher) => *hasher,
            Phase::Header { .. } => {
                BodyHasher::new(<Sha256 as HashImpl>::hasher(), Canonicalization::Relaxed, 0)
            }
        };
        let (context, _) = hasher.finish();
        context.complete().as_ref().to_vec()
    }
}

/// The signing keys of every domain in the key directory, parsed once (at startup and on
/// reload), shared by all sessions.
#[derive(Default)]
pub struct Signer {
    /// Per signing domain (lower case), one signer per algorithm, Ed25519 first.
    domains: HashMap<String, Vec<DkimSigner<DkimKey, Done>>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut domains: Vec<_> = self.domains.keys().collect();
        domains.sort();
        f.debug_struct("Signer")
            .field("domains", &domains)
            .finish_non_exhaustive()
    }
}

/// A key file that mail-auth cannot sign with.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SignerError {
    /// The key file.
    pub path: String,
    /// mail-auth's complaint.
    pub reason: String,
}

impl Signer {
    /// Signers for the newest key of each algorithm of each domain of `store`.
    pub fn from_store(store: &KeyStore) -> Result<Self, SignerError> {
        let mut domains: HashMap<String, Vec<DkimSigner<DkimKey, Done>>> = HashMap::new();
        let mut names: Vec<&str> = store.keys().iter().map(|k| k.domain.as_str()).collect();
        names.dedup();
        for domain in names {
            for key in store.signing_keys(domain) {
                let error = |e: mail_auth::Error| SignerError {
                    path: key.path.display().to_string(),
                    reason: e.to_string(),
                };
                let dkim_key = match key.algorithm {
                    Algorithm::Ed25519 => {
                        DkimKey::from(Ed25519Key::from_pkcs8_der(key.pkcs8_der()).map_err(error)?)
                    }
                    Algorithm::Rsa => DkimKey::from(
                        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(
                            PrivatePkcs8KeyDer::from(key.pkcs8_der()),
                        ))
                        .map_err(error)?,
                    ),
                };
                let signer = DkimSigner::from_key(dkim_key)
                    .domain(key.domain.as_str())
                    .selector(key.selector.as_str())
                    .headers(SIGNED_HEADERS);
                domains.entry(key.domain.clone()).or_default().push(signer);
            }
        }
        Ok(Self { domains })
    }

    /// The signer for the key directory `key_dir`, and what the operator must hear about
    /// (logged once, at startup and on reload): a directory or key that cannot be used (then
    /// nothing is signed) and each of `domains` without keys (its mail goes out unsigned).
    /// Never an error: mail is never refused for want of a signature.
    #[must_use]
    pub fn load<'a>(
        key_dir: &Path,
        domains: impl IntoIterator<Item = &'a str>,
    ) -> (Self, Vec<String>) {
        let signer = KeyStore::load(key_dir)
            .map_err(|e| e.to_string())
            .and_then(|store| Self::from_store(&store).map_err(|e| e.to_string()));
        match signer {
            Ok(signer) => {
                let warnings = domains
                    .into_iter()
                    .filter(|d| !signer.signs(d))
                    .map(|d| {
                        format!(
                            "no DKIM key for {d} in {}: its relayed mail goes out unsigned \
                             (`smtpd dns-records {d}` makes the keys)",
                            key_dir.display()
                        )
                    })
                    .collect();
                (signer, warnings)
            }
            Err(e) => (
                Self::default(),
                vec![format!(
                    "DKIM keys: {e}; relayed mail goes out unsigned (the key directory must be \
                     readable by the account smtpd runs as)"
                )],
            ),
        }
    }

    /// Whether any domain has a key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Whether `domain` has a key.
    #[must_use]
    pub fn signs(&self, domain: &str) -> bool {
        self.domains.contains_key(&domain.to_ascii_lowercase())
    }

    /// The `DKIM-Signature` fields for a message from `domain` (each ending in CRLF, to go in
    /// front of the message). Its header block is `added` (fields the relay puts above the
    /// message's own) then `header` (the message's, up to the blank line or beyond: the body
    /// is not read); `body_hash` is its [`BodyHash`], `now` the signing time (`t=`). Empty when
    /// `domain` has no key.
    pub fn sign(
        &self,
        domain: &str,
        added: &[u8],
        header: &[u8],
        body_hash: &[u8],
        now: SystemTime,
    ) -> Result<String, mail_auth::Error> {
        let Some(signers) = self.domains.get(&domain.to_ascii_lowercase()) else {
            return Ok(String::new());
        };
        // mail-auth's header field scanner (the one its verifier uses) is private; its parser
        // hands out the same (name, value) pairs.
        let parsed = AuthenticatedMessage::parse_with_opts(
            header,
            (!added.is_empty()).then_some(added),
            true,
        )
        .ok_or(mail_auth::Error::NoHeadersFound)?;
        let now = smtpkit_queue::unix(now);
        let mut out = String::new();
        for signer in signers {
            // mail-auth's `DkimSigningStream::finish`, with the streamed body hash.
            let template = &signer.template;
            let mut headers = Vec::with_capacity(template.h.len());
            let mut found = vec![false; template.h.len()];
            let mut signed = Vec::with_capacity(template.h.len());
            for &(name, value) in &parsed.headers {
                if let Some(at) = template
                    .h
                    .iter()
                    .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
                {
                    headers.push((name, value));
                    found[at] = true;
                    signed.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            if signed.is_empty() {
                return Err(mail_auth::Error::NoHeadersFound);
            }
            // The verifier takes instances bottom-up (RFC 6376 5.4.2); absent ones go last.
            signed.reverse();
            for (name, found) in template.h.iter().zip(found) {
                if !found {
                    signed.push(name.clone());
                }
            }
            let mut signature = template.clone();
            signature.bh = body_hash.to_vec();
            signature.t = now;
            signature.h = signed;
            signature.b = signer.key.sign(Signable {
                headers: template.ch.canonical_headers(headers),
                signature: &signature,
            })?;
            out.push_str(&signature.to_header());
        }
        Ok(out)
    }
}

/// What a DKIM signature's `b=` covers: the signed header fields, then the signature field
/// itself with an empty `b=` (RFC 6376 3.7).
struct Signable<'a> {
    headers: CanonicalHeaders<'a>,
    signature: &'a Signature,
}

impl Writable for Signable<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@elsewhere.test\r\n\
Subject: streamed\r\n\r\nFirst  line \t\r\n\r\nsecond line\r\n\r\n\r\n";

    /// mail-auth's whole-message signer, for its `bh=`.
    fn reference_body_hash(message: &[u8]) -> Vec<u8> {
        let key = Ed25519Key::from_pkcs8_der(
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        DkimSigner::from_key(key)
            .domain("example.test")
            .selector("s")
            .headers(["From"])
            .sign(message)
            .unwrap()
            .bh
    }

    fn streamed(message: &[u8], size: usize) -> Vec<u8> {
        let mut hash = BodyHash::new();
        for chunk in message.chunks(size) {
            hash.write(chunk);
        }
        hash.finish()
    }

    #[test]
    fn the_streamed_body_hash_is_mail_auths_at_any_chunking() {
        for message in [
            MESSAGE,
            b"From: a@example.test\r\n\r\n",
            b"From: a@example.test\r\n",
            b"From: a@example.test\r\n\r\n\r\n\r\nx\r\n",
            b"From: a@example.test\r\nX: \r\n\tfolded\r\n\r\nbody without end",
        ] {
            let expected = reference_body_hash(message);
            for size in 1..=message.len() {
                assert_eq!(
                    streamed(message, size),
                    expected,
                    "{} in chunks of {size}",
                    String::from_utf8_lossy(message)
                );
            }
        }
        // No header at all: everything after the first line end is body.
        let mut other = BodyHash::new();
        other.write(b"\r\nbody\r\n");
        let mut same = BodyHash::new();
        same.write(b"X: y\r\n\r\nbody\r\n");
        assert_eq!(other.finish(), same.finish());
        // A different body hashes differently.
        assert_ne!(
            streamed(MESSAGE, 7),
            streamed(&[MESSAGE, b"more\r\n"].concat(), 7)
        );
    }

    #[test]
    fn a_domain_without_keys_is_not_signed() {
        let signer = Signer::default();
        assert!(signer.is_empty());
        assert!(!signer.signs("example.test"));
        let out = signer
            .sign("example.test", b"", MESSAGE, &[0; 32], SystemTime::now())
            .unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn loading_warns_about_domains_without_keys_and_unusable_directories() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyStore::load(dir.path()).unwrap();
        store
            .ensure("example.test", SystemTime::UNIX_EPOCH)
            .unwrap();
        let (signer, warnings) = Signer::load(dir.path(), ["Example.test", "other.test"]);
        assert!(signer.signs("example.test"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("no DKIM key for other.test in "),
            "{warnings:?}"
        );

        std::fs::write(dir.path().join("broken.test.s.ed25519.key"), "not a key").unwrap();
        let (signer, warnings) = Signer::load(dir.path(), ["example.test"]);
        assert!(signer.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("broken.test.s.ed25519.key"),
            "{warnings:?}"
        );
    }
}
