//! Password hashing for SMTP AUTH accounts: Argon2id, stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds in a release build) and
//! memory-hard (19 MiB per check with the default parameters). The server runs every check
//! through a [`CheckPool`]: a fixed number of checks at once, each on a blocking thread with
//! Argon2 memory that is allocated once per slot and reused, so a storm of failed logins costs
//! at most `slots x m_cost` of memory by construction, not by allocator luck (glibc keeps freed
//! 19 MiB buffers in per-thread arenas; 143 concurrent checks once grew a server to 16 GB).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    /// The hash asks for more memory per check than [`MAX_M_COST_KIB`].
    #[error("the hash needs {0} KiB per check, more than the {MAX_M_COST_KIB} KiB allowed")]
    TooCostly(u32),
}

/// The most memory one password check may use, in KiB (Argon2 `m`): 256 MiB, 13 times OWASP's
/// first recommendation. It bounds the pool's memory whatever the configured hashes ask for.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;

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
    let params = Params::try_from(&hash).map_err(PasswordError::Format)?;
    if params.m_cost() > MAX_M_COST_KIB {
        return Err(PasswordError::TooCostly(params.m_cost()));
    }
    if hash.hash.is_none() {
        return Err(PasswordError::Format(password_hash::Error::PhcStringField));
    }
    Ok(())
}

/// Whether `password` matches the PHC string `phc`. The parameters come from `phc`; the final
/// comparison is constant-time (`password_hash::Output`'s `PartialEq`). An unusable `phc` never
/// matches. Allocates the Argon2 memory for this one call; servers use a [`CheckPool`].
#[must_use]
pub fn verify_password(password: impl AsRef<[u8]>, phc: &str) -> bool {
    verify_password_in(password.as_ref(), phc, &mut CheckMemory::default())
}

/// Argon2's working memory for one check, kept between checks so it is allocated once.
#[derive(Default)]
pub struct CheckMemory(Vec<Block>);

impl fmt::Debug for CheckMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckMemory({} KiB)", self.0.len())
    }
}

/// [`verify_password`] with the caller's memory, grown to what `phc` needs (up to
/// [`MAX_M_COST_KIB`]) and never shrunk.
fn verify_password_in(password: &[u8], phc: &str, memory: &mut CheckMemory) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm),
        Params::try_from(&hash),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, Block::new());
    }
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, out, &mut memory.0[..blocks])
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == expected)
}

/// Runs password checks a fixed number at a time, each on a blocking thread with a reused
/// [`CheckMemory`]. Checks past the limit wait their turn; the memory in use is at most
/// `slots x` the largest `m` of the configured hashes (19 MiB each with the defaults).
#[derive(Debug)]
pub struct CheckPool {
    permits: tokio::sync::Semaphore,
    memory: Mutex<Vec<CheckMemory>>,
    slots: usize,
}

impl CheckPool {
    /// A pool running at most `slots` checks at once (at least one).
    #[must_use]
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            permits: tokio::sync::Semaphore::new(slots),
            memory: Mutex::new((0..slots).map(|_| CheckMemory::default()).collect()),
            slots,
        }
    }

    /// How many checks run at once.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Runs `check` (for example [`Accounts::verify_in`]) on a blocking thread with a slot's
    /// memory, once a slot is free. `false` when the check itself failed to run.
    pub async fn check(
        &self,
        check: impl FnOnce(&mut CheckMemory) -> bool + Send + 'static,
    ) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        // A permit guarantees a slot: there are as many slots as permits.
        let mut memory = self.lock().pop().unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let ok = check(&mut memory);
            (ok, memory)
        })
        .await;
        match checked {
            Ok((ok, memory)) => {
                self.lock().push(memory);
                ok
            }
            // The blocking task panicked: its memory is gone; a fresh slot takes its place.
            Err(_) => {
                self.lock().push(CheckMemory::default());
                false
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CheckMemory>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A hash of a random, discarded password with the default parameters, verified against when the
/// user does not exist so that unknown and known names take the same time.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$nQOYw4ko0tMbWj+3xYgSAg$i4huULO42/qzaWGUFEvX243ERh0f5IHtIP176qVddk0";

/// The AUTH accounts from the configuration.
#[derive(Clone, Default)]
pub struct Accounts {
    users: HashMap<String, String>,
}

impl Accounts {
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
        self.verify_in(name, password.as_ref(), &mut CheckMemory::default())
    }

    /// [`verify`](Self::verify) with the caller's Argon2 memory.
    pub fn verify_in(&self, name: &str, password: &[u8], memory: &mut CheckMemory) -> bool {
        match self.users.get(name) {
            Some(phc) => verify_password_in(password, phc, memory),
            None => {
                let _ = verify_password_in(password, DUMMY_PHC, memory);
                false
            }
        }
    }
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Accounts").field("users", &names).finish()
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
    fn reused_memory_gives_the_same_answers() {
        let mut memory = CheckMemory::default();
        let cheap = hash_password_with("a", test_params()).unwrap();
        let default = hash_password("b").unwrap();
        for _ in 0..2 {
            assert!(verify_password_in(b"a", &cheap, &mut memory));
            assert!(!verify_password_in(b"b", &cheap, &mut memory));
            assert!(verify_password_in(b"b", &default, &mut memory));
            assert!(!verify_password_in(b"a", &default, &mut memory));
        }
        // Grown to the larger hash's 19 MiB and kept.
        assert_eq!(memory.0.len(), 19 * 1024);
        assert!(verify_password_in(b"a", &cheap, &mut memory));
        assert_eq!(memory.0.len(), 19 * 1024);
    }

    #[test]
    fn costly_hashes_are_refused() {
        let params = Params::new(MAX_M_COST_KIB + 8, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        // Build the PHC string without running the 256 MiB hash.
        let phc = format!(
            "$argon2id$v=19$m={},t=1,p=1${}$i4huULO42/qzaWGUFEvX243ERh0f5IHtIP176qVddk0",
            params.m_cost(),
            salt.as_str()
        );
        assert_eq!(
            check_phc(&phc),
            Err(PasswordError::TooCostly(MAX_M_COST_KIB + 8))
        );
        assert!(!verify_password("x", &phc));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pool_runs_at_most_its_slots_and_reuses_memory() {
        let phc = hash_password_with("pw", test_params()).unwrap();
        let accounts = std::sync::Arc::new(Accounts::new(&[config::User {
            name: "u".to_owned(),
            password_hash: phc,
        }]));
        let pool = std::sync::Arc::new(CheckPool::new(2));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (pool, accounts) = (pool.clone(), accounts.clone());
            tasks.push(tokio::spawn(async move {
                let pw = if i % 2 == 0 { "pw" } else { "wrong" };
                let ok = pool
                    .check(move |memory| accounts.verify_in("u", pw.as_bytes(), memory))
                    .await;
                (i, ok)
            }));
        }
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 2 == 0, "check {i}");
        }
        assert_eq!(pool.slots(), 2);
        let memory = pool.lock();
        assert_eq!(memory.len(), 2, "every slot came back");
        assert!(
            memory
                .iter()
                .all(|m| m.0.len() <= Params::MIN_M_COST as usize * 2)
        );
    }

    #[test]
    fn credentials_check_name_and_password() {
        let phc = hash_password_with(b"s3cret\xff", test_params()).unwrap();
        let users = [config::User {
            name: "alice@example.org".to_owned(),
            password_hash: phc,
        }];
        let credentials = Accounts::new(&users);
        assert!(!credentials.is_empty());
        assert!(credentials.verify("alice@example.org", b"s3cret\xff"));
        assert!(!credentials.verify("alice@example.org", "s3cret"));
        assert!(!credentials.verify("bob@example.org", b"s3cret\xff"));
        assert!(!format!("{credentials:?}").contains("argon2"));
    }
}
