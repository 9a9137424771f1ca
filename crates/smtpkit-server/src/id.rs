//! [`SessionId`]: short, printable, unique session identifiers for logs.

use core::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Crockford's base32 alphabet: no I, L, O or U, so ids read back unambiguously.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Bits of the id taken by the per-process counter; the rest is a per-process random prefix,
/// so ids from two runs of the server rarely collide in merged logs.
const COUNTER_BITS: u32 = 40;

/// A session identifier: 13 base32 characters, unique within the process (for 2^40 sessions).
///
/// ```
/// let a = smtpkit_server::SessionId::next();
/// let b = smtpkit_server::SessionId::next();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().len(), 13);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// The next id of this process.
    pub fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PREFIX: OnceLock<u64> = OnceLock::new();
        // RandomState is seeded from the OS per process: enough randomness for a log prefix
        // without a dependency on a random number crate.
        let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(0x5354_5450_u64));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & ((1 << COUNTER_BITS) - 1);
        Self((prefix << COUNTER_BITS) | n)
    }

    /// The numeric value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 13];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 60 - 5 * i as u32;
            // The first character holds the top 4 bits, the others 5 each.
            *c = ALPHABET[((self.0 >> shift) & 0x1f) as usize];
        }
        // Every byte comes from ALPHABET, which is ASCII.
        f.write_str(core::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_printable() {
        let ids: Vec<_> = (0..1000).map(|_| SessionId::next()).collect();
        let mut set: Vec<_> = ids.iter().map(|i| i.to_string()).collect();
        set.sort();
        set.dedup();
        assert_eq!(set.len(), 1000);
        assert!(
            set.iter()
                .all(|s| s.len() == 13 && s.bytes().all(|b| ALPHABET.contains(&b)))
        );
        assert_eq!(SessionId(0).to_string(), "0000000000000");
        assert_eq!(SessionId(u64::MAX).to_string(), "FZZZZZZZZZZZZ");
    }
}
