//! Password hashing for SMTP AUTH accounts: Argon2id, stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds in a release build): call
//! them from a blocking thread (`tokio::task::spawn_blocking`), not from an async task.

use std::collections::HashMap;
use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use password_hash::rand_core::OsRng;

use crate::config;

/// A password could not be hashed, or a stored hash is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The string is not in PHC format (`$algorithm$v=..$params$salt$hash`).
    #[error("not a PHC string ({0}); generate one with `smtpd hash-password`")]
    Format(password_hash::Error),
    /// The PHC string names an algorithm other than argon2id, argon2i or argon2d.
    #[error("unsupported algorithm `{0}`, expected argon2id")]
    Algorithm(String),
    /// Hashing failed: parameters out of range or the password is too long (over 4 GiB).
    #[error("cannot hash password: {0}")]
    Hash(password_hash::Error),
}

/// The Argon2id parameters for new hashes: the `argon2` crate's defaults, which are OWASP's
/// first recommended configuration (m = 19 MiB, t = 2, p = 1).
fn default_hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes `password` with a fresh random salt and the default Argon2id parameters.
pub fn hash_password(password: impl AsRef<[u8]>) -> Result<String, PasswordError> {
    hash_password_with(password, Params::default())
}

/// Hashes `password` with a fresh random salt and the given Argon2id parameters.
pub fn hash_password_with(
    password: impl AsRef<[u8]>,
    params: Params,
) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_ref(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Checks that `phc` is an Argon2 PHC string that [`verify_password`] can use.
pub fn check_phc(phc: &str) -> Result<(), PasswordError> {
    let hash = PasswordHash::new(phc).map_err(PasswordError::Format)?;
    Algorithm::try_from(hash.algorithm)
        .map_err(|_| PasswordError::Algorithm(hash.algorithm.to_string()))?;
    Params::try_from(&hash).map_err(PasswordError::Format)?;
    if hash.hash.is_none() {
        return Err(PasswordError::Format(password_hash::Error::PhcStringField));
    }
    Ok(())
}

/// Whether `password` matches the PHC string `phc`. The parameters come from `phc`; the final
/// comparison is constant-time (`password_hash::Output`'s `PartialEq`). An unusable `phc` never
/// matches.
#[must_use]
pub fn verify_password(password: impl AsRef<[u8]>, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    default_hasher()
        .verify_password(password.as_ref(), &hash)
        .is_ok()
}

/// A hash of a random, discarded password with the default parameters, verified against when the
/// user does not exist so that unknown and known names take the same time.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$nQOYw4ko0tMbWj+3xYgSAg$i4huULO42/qzaWGUFEvX243ERh0f5IHtIP176qVddk0";

/// The AUTH accounts from the configuration.
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
}

impl Credentials {
    /// Builds the table from `[[user]]` sections. Later duplicates win; configuration
    /// validation refuses duplicates anyway.
    #[must_use]
    pub fn new(users: &[config::User]) -> Self {
        Self {
            users: users
                .iter()
                .map(|user| (user.name.clone(), user.password_hash.clone()))
                .collect(),
        }
    }

    /// Whether there are no accounts (AUTH should then not be offered).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `name` exists and `password` is its password. Takes about as long for an unknown
    /// name as for a wrong password, so response times do not reveal which names exist.
    #[must_use]
    pub fn verify(&self, name: &str, password: impl AsRef<[u8]>) -> bool {
        match self.users.get(name) {
            Some(phc) => verify_password(password, phc),
            None => {
                let _ = verify_password(password, DUMMY_PHC);
                false
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Credentials")
            .field("users", &names)
            .finish()
    }
}

/// Cheap parameters so tests do not spend seconds in debug builds (the minimum memory cost
/// Argon2 allows for one lane).
#[cfg(test)]
pub(crate) fn test_params() -> Params {
    Params::new(Params::MIN_M_COST, 1, 1, None).expect("valid parameters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash_password_with("correct horse", test_params()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(check_phc(&phc).is_ok());
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horse ", &phc));
        assert!(!verify_password("", &phc));
        // Salts are random, so the same password hashes differently.
        assert_ne!(
            phc,
            hash_password_with("correct horse", test_params()).unwrap()
        );
    }

    #[test]
    fn default_parameters_are_used_and_verifiable() {
        let phc = hash_password("pw").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("pw", &phc));
    }

    #[test]
    fn dummy_hash_is_valid_with_default_parameters() {
        assert_eq!(check_phc(DUMMY_PHC), Ok(()));
        assert!(DUMMY_PHC.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[test]
    fn unusable_hashes_never_match_and_are_reported() {
        assert!(!verify_password("pw", "pw"));
        assert!(!verify_password("pw", ""));
        assert!(matches!(check_phc("plain"), Err(PasswordError::Format(_))));
        assert!(matches!(
            check_phc("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"),
            Err(PasswordError::Algorithm(a)) if a == "scrypt"
        ));
        assert!(check_phc("$argon2id$v=19$m=19456,t=2,p=1$nQOYw4ko0tMbWj+3xYgSAg").is_err());
    }

    #[test]
    fn credentials_check_name_and_password() {
        let phc = hash_password_with(b"s3cret\xff", test_params()).unwrap();
        let users = [config::User {
            name: "alice@example.org".to_owned(),
            password_hash: phc,
        }];
        let credentials = Credentials::new(&users);
        assert!(!credentials.is_empty());
        assert!(credentials.verify("alice@example.org", b"s3cret\xff"));
        assert!(!credentials.verify("alice@example.org", "s3cret"));
        assert!(!credentials.verify("bob@example.org", b"s3cret\xff"));
        assert!(!format!("{credentials:?}").contains("argon2"));
    }
}
