//! Queue ids: unique across processes and machines sharing one store, and safe as file names.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A message's id in the queue: `<microseconds since the epoch, hex>-<process nonce>-<counter>`.
///
/// The time orders ids roughly by arrival; the 64-bit random nonce, drawn once per process,
/// keeps ids of several instances apart without coordination (a database store may use its
/// own ids: only uniqueness and this character set are relied on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

static NONCE: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl QueueId {
    /// A new id, made at `now`.
    #[must_use]
    pub fn generate(now: SystemTime) -> Self {
        let micros = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let nonce = *NONCE.get_or_init(|| fastrand::u64(..));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("{micros:x}-{nonce:016x}-{n:x}"))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` could be an id: non-empty, at most 64 octets of `[0-9a-zA-Z-]`. Anything else
    /// (a path, a dot file) is refused before it reaches the file system.
    #[must_use]
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }
}

impl TryFrom<String> for QueueId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if Self::is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(format!("`{s}` is not a queue id"))
        }
    }
}

impl std::str::FromStr for QueueId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> Self {
        id.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let now = SystemTime::now();
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| QueueId::generate(now)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| QueueId::is_valid(id.as_str())));
        for bad in ["", "../x", "a/b", ".hidden", "x y", &"a".repeat(65)] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad}");
        }
    }
}
