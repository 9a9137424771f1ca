//! DKIM signing keys on disk: the layout `smtpd dns-records` writes and outbound signing reads.
//!
//! One directory (`[dkim] key_dir`, default `./dkim`) holds one PEM file per key (PKCS#8,
//! `-----BEGIN PRIVATE KEY-----`, mode 0600, the directory 0700), named
//! `<domain>.<selector>.<algorithm>.key`, e.g. `example.org.202612e.ed25519.key`. Selectors
//! are the year and month the key was made plus a letter for the algorithm (`202612e` for
//! Ed25519, `202612r` for RSA), so both keys of a domain are published side by side (RFC 8463
//! 4 recommends signing with both while verifiers learn Ed25519) and a rotation next month gets
//! new selectors while the old records stay until mail signed with them has been delivered.
//!
//! [`KeyStore::load`] reads every key of the directory; [`KeyStore::ensure`] makes the keys a
//! domain lacks. The private key bytes are PKCS#8 DER ([`Key::pkcs8_der`]), which is what
//! mail-auth's `Ed25519Key::from_pkcs8_der` and `RsaKey::from_key_der` take.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::pkcs8::{SecretDocument, der::zeroize::Zeroizing};

/// The signature algorithms smtpd makes keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
    /// `rsa-sha256` (RFC 6376) with a 2048-bit modulus: what every verifier understands, and
    /// RFC 8301 4's recommended size (1024 is the minimum, larger keys overflow many DNS UIs).
    Rsa,
}

/// RSA modulus size; see [`Algorithm::Rsa`].
pub const RSA_BITS: usize = 2048;

impl Algorithm {
    /// Both, in the order records are printed.
    pub const ALL: [Self; 2] = [Self::Ed25519, Self::Rsa];

    /// The name in file names and in the DKIM record's `k=` tag.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Rsa => "rsa",
        }
    }

    /// The letter ending the selector, so the two keys of one month have different selectors.
    #[must_use]
    pub fn selector_suffix(self) -> char {
        match self {
            Self::Ed25519 => 'e',
            Self::Rsa => 'r',
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One signing key.
#[derive(Clone)]
pub struct Key {
    /// The signing domain (`d=`), lower case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The file it was read from or written to.
    pub path: PathBuf,
    pkcs8: Zeroizing<Vec<u8>>,
    /// The `p=` value: base64 of the raw 32-octet key for Ed25519 (RFC 8463 4.2), of the
    /// SubjectPublicKeyInfo DER for RSA (what OpenDKIM publishes and RFC 6376 verifiers read).
    public_key: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The private key, PKCS#8 DER.
    #[must_use]
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The `p=` value of the DKIM record.
    #[must_use]
    pub fn public_key_base64(&self) -> &str {
        &self.public_key
    }

    /// The name the record is published at: `<selector>._domainkey.<domain>.`.
    #[must_use]
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}.", self.selector, self.domain)
    }

    /// The DKIM key record (RFC 6376 3.6.1), one string however long.
    #[must_use]
    pub fn record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm, self.public_key)
    }

    fn from_pkcs8(
        domain: String,
        selector: String,
        algorithm: Algorithm,
        path: PathBuf,
        der: &[u8],
    ) -> Result<Self, String> {
        let public = match algorithm {
            Algorithm::Ed25519 => {
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
                ring::signature::KeyPair::public_key(&pair)
                    .as_ref()
                    .to_vec()
            }
            Algorithm::Rsa => rsa::PrivateKey::from_pkcs8_der(der)
                .map_err(|e| format!("not an RSA PKCS#8 key: {e}"))?
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?
                .into_vec(),
        };
        Ok(Self {
            domain,
            selector,
            algorithm,
            path,
            pkcs8: Zeroizing::new(der.to_vec()),
            public_key: base64::engine::general_purpose::STANDARD.encode(public),
        })
    }
}

/// Every key in one directory.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    dir: PathBuf,
    keys: Vec<Key>,
}

/// A problem with the key directory or one of its files; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A key file does not hold a key of the algorithm its name says.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

impl KeyStore {
    /// Reads every `*.key` file of `dir` (other files are left alone). A directory that does
    /// not exist yet holds no keys.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let dir = dir.into();
        let mut keys = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self { dir, keys }),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some((domain, selector, algorithm)) = parse_file_name(&name) else {
                continue;
            };
            let path = entry.path();
            let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_error(&path))?);
            let invalid = |reason: String| KeyError::Invalid {
                path: path.clone(),
                reason,
            };
            let (_, doc) = SecretDocument::from_pem(&text).map_err(|e| invalid(e.to_string()))?;
            keys.push(
                Key::from_pkcs8(
                    domain.to_owned(),
                    selector.to_owned(),
                    algorithm,
                    path.clone(),
                    doc.as_bytes(),
                )
                .map_err(invalid)?,
            );
        }
        // Newest selector first within a domain and algorithm: `202701e` sorts after `202612e`.
        keys.sort_by(|a, b| {
            (&a.domain, a.algorithm)
                .cmp(&(&b.domain, b.algorithm))
                .then_with(|| b.selector.cmp(&a.selector))
        });
        Ok(Self { dir, keys })
    }

    /// Every key, by domain, algorithm, then newest selector first.
    #[must_use]
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key to sign `domain`'s mail with for each algorithm: the newest selector of each.
    pub fn signing_keys(&self, domain: &str) -> impl Iterator<Item = &Key> {
        let domain = domain.to_ascii_lowercase();
        Algorithm::ALL.into_iter().filter_map(move |algorithm| {
            self.keys
                .iter()
                .find(|k| k.domain == domain && k.algorithm == algorithm)
        })
    }

    /// Makes the keys `domain` lacks (one per [`Algorithm`]), selectors from `now`'s year and
    /// month; keeps the ones it has. Returns the domain's signing keys and whether each was
    /// made now.
    pub fn ensure(&mut self, domain: &str, now: SystemTime) -> Result<Vec<(Key, bool)>, KeyError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut out = Vec::new();
        for algorithm in Algorithm::ALL {
            if let Some(key) = self
                .keys
                .iter()
                .find(|k| k.domain == domain && k.algorithm == algorithm)
            {
                out.push((key.clone(), false));
                continue;
            }
            let selector = selector(algorithm, now);
            let key = self.generate(&domain, &selector, algorithm)?;
            self.keys.push(key.clone());
            out.push((key, true));
        }
        Ok(out)
    }

    fn generate(
        &self,
        domain: &str,
        selector: &str,
        algorithm: Algorithm,
    ) -> Result<Key, KeyError> {
        let path = self
            .dir
            .join(format!("{domain}.{selector}.{}.key", algorithm.name()));
        let invalid = |reason: String| KeyError::Invalid {
            path: path.clone(),
            reason,
        };
        let der: Zeroizing<Vec<u8>> = match algorithm {
            Algorithm::Ed25519 => {
                let rng = ring::rand::SystemRandom::new();
                let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|e| invalid(format!("cannot generate an Ed25519 key: {e}")))?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
            Algorithm::Rsa => {
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
                    .map_err(|e| invalid(format!("cannot generate an RSA key: {e}")))?;
                key.to_pkcs8_der()
                    .map_err(|e| invalid(e.to_string()))?
                    .to_bytes()
            }
        };
        let doc = SecretDocument::try_from(der.as_slice()).map_err(|e| invalid(e.to_string()))?;
        let pem = doc
            .to_pem("PRIVATE KEY", LineEnding::LF)
            .map_err(|e| invalid(e.to_string()))?;
        write_private(&self.dir, &path, pem.as_bytes())?;
        Key::from_pkcs8(
            domain.to_owned(),
            selector.to_owned(),
            algorithm,
            path.clone(),
            &der,
        )
        .map_err(invalid)
    }
}

/// Writes `bytes` to `path` readable by the owner only, under a temporary name first so a crash
/// never leaves a half-written key under the real one.
fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// `<domain>.<selector>.<algorithm>.key`, split from the right: the domain holds dots, the
/// selector and algorithm never do.
fn parse_file_name(name: &str) -> Option<(&str, &str, Algorithm)> {
    let stem = name.strip_suffix(".key")?;
    let (rest, algorithm) = stem.rsplit_once('.')?;
    let algorithm = Algorithm::from_name(algorithm)?;
    let (domain, selector) = rest.rsplit_once('.')?;
    (!domain.is_empty() && !selector.is_empty()).then_some((domain, selector, algorithm))
}

/// The selector for a key of `algorithm` made at `now`: `YYYYMM` in UTC plus the algorithm's
/// letter, e.g. `202612e`.
#[must_use]
pub fn selector(algorithm: Algorithm, now: SystemTime) -> String {
    let days = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, _) = crate::dns_records::civil(days);
    format!("{year:04}{month:02}{}", algorithm.selector_suffix())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn selectors_are_year_month_and_algorithm() {
        // 2026-12-02T01:00:00Z.
        assert_eq!(selector(Algorithm::Ed25519, at(1_796_173_200)), "202612e");
        assert_eq!(selector(Algorithm::Rsa, at(1_796_173_200)), "202612r");
        // 2027-01-01T00:00:00Z, and the last second of 2026.
        assert_eq!(selector(Algorithm::Rsa, at(1_798_761_600)), "202701r");
        assert_eq!(selector(Algorithm::Rsa, at(1_798_761_599)), "202612r");
        assert_eq!(selector(Algorithm::Ed25519, at(951_782_400)), "200002e");
    }

    #[test]
    fn file_names_split_from_the_right() {
        assert_eq!(
            parse_file_name("mail.example.org.202612e.ed25519.key"),
            Some(("mail.example.org", "202612e", Algorithm::Ed25519))
        );
        assert_eq!(
            parse_file_name("example.org.202612r.rsa.key"),
            Some(("example.org", "202612r", Algorithm::Rsa))
        );
        for other in [
            "example.org.202612r.rsa.key.tmp",
            "example.org.202612r.dsa.key",
            "202612r.rsa.key",
            "README",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn keys_are_made_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("dkim");
        let mut store = KeyStore::load(&key_dir).unwrap();
        assert!(store.keys().is_empty());
        let made = store.ensure("Example.ORG.", at(1_796_173_200)).unwrap();
        assert_eq!(made.len(), 2);
        assert!(made.iter().all(|(_, new)| *new));
        let (ed, rsa) = (&made[0].0, &made[1].0);
        assert_eq!(
            ed.path,
            key_dir.join("example.org.202612e.ed25519.key"),
            "{ed:?}"
        );
        assert_eq!(rsa.record_name(), "202612r._domainkey.example.org.");
        // A raw Ed25519 key is 32 octets: 44 base64 characters.
        assert_eq!(ed.public_key_base64().len(), 44);
        assert!(ed.record().starts_with("v=DKIM1; k=ed25519; p="));
        // 2048-bit SubjectPublicKeyInfo: 294 octets, 392 base64 characters.
        assert_eq!(rsa.public_key_base64().len(), 392);
        for key in [ed, rsa] {
            let mode = fs::metadata(&key.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.path.display());
            let text = fs::read_to_string(&key.path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        }
        let mode = fs::metadata(&key_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // ring signs with what was stored: the files hold usable keys.
        ring::signature::Ed25519KeyPair::from_pkcs8(ed.pkcs8_der()).unwrap();
        ring::signature::RsaKeyPair::from_pkcs8(rsa.pkcs8_der()).unwrap();

        // A second run a month later keeps the keys: the published records stay right.
        let mut reloaded = KeyStore::load(&key_dir).unwrap();
        assert_eq!(reloaded.keys().len(), 2);
        let again = reloaded.ensure("example.org", at(1_798_761_600)).unwrap();
        assert!(again.iter().all(|(_, new)| !*new));
        assert_eq!(again[0].0.record(), ed.record());
        assert_eq!(again[1].0.record(), rsa.record());
        let signing: Vec<_> = reloaded
            .signing_keys("EXAMPLE.org")
            .map(|k| k.selector.as_str())
            .collect();
        assert_eq!(signing, ["202612e", "202612r"]);
        assert_eq!(reloaded.signing_keys("other.test").count(), 0);
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.org.202612e.ed25519.key");
        fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = KeyStore::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("example.org.202612e.ed25519.key"), "{e}");
    }
}
