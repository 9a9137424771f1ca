//! Counting failures across sessions, as Postfix's `anvil` does for
//! `smtpd_client_auth_rate_limit`: a client or a user name that fails too often within a window
//! is refused without the (deliberately expensive) password check until the window ends.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use smtpkit_server::{FailureLimiter, Verdict};
//!
//! let limiter = FailureLimiter::new(2, Duration::from_secs(60));
//! let now = Instant::now();
//! let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
//! assert_eq!(limiter.check(&ip, now), Verdict::Allowed);
//! limiter.record_failure(ip, now);
//! limiter.record_failure(ip, now);
//! // The first refusal in a window says so, so the caller logs once per window.
//! assert_eq!(limiter.check(&ip, now), Verdict::Exceeded { first: true });
//! assert_eq!(limiter.check(&ip, now), Verdict::Exceeded { first: false });
//! assert_eq!(limiter.check(&ip, now + Duration::from_secs(61)), Verdict::Allowed);
//! ```
//!
//! The clock is an input (`now`), so tests need no sleeping and the type has no runtime.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most. Past it, expired windows are dropped; if every window is still live,
/// new keys are not tracked (they are allowed) rather than letting an attacker who rotates
/// addresses grow the table without bound. Per-user limits and the bounded password-check pool
/// still hold for them.
const MAX_KEYS: usize = 100_000;

/// Whether a key may try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit.
    Allowed,
    /// At or over the limit for the rest of the window. `first` is true for the first refusal
    /// of the window, so the caller can log once per window instead of once per attempt.
    Exceeded {
        /// First refusal in this window.
        first: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    failures: u32,
    refused: bool,
}

/// Fixed-window failure counts per key (a client address, a user name). A limit of 0 turns the
/// limiter off. Shared by all sessions of a server (`Arc<FailureLimiter<_>>`).
#[derive(Debug)]
pub struct FailureLimiter<K> {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq> FailureLimiter<K> {
    /// At most `limit` failures per key in each `window`; 0 means no limit.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may make another attempt at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Verdict {
        if self.limit == 0 {
            return Verdict::Allowed;
        }
        let mut windows = self.lock();
        let Some(w) = windows.get_mut(key) else {
            return Verdict::Allowed;
        };
        if now.saturating_duration_since(w.start) >= self.window {
            windows.remove(key);
            return Verdict::Allowed;
        }
        if w.failures < self.limit {
            return Verdict::Allowed;
        }
        let first = !w.refused;
        w.refused = true;
        Verdict::Exceeded { first }
    }

    /// Counts a failure of `key` at `now`.
    pub fn record_failure(&self, key: K, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let window = self.window;
        let mut windows = self.lock();
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            windows.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if windows.len() >= MAX_KEYS {
                return;
            }
        }
        let w = windows.entry(key).or_insert(Window {
            start: now,
            failures: 0,
            refused: false,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                failures: 0,
                refused: false,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Keys currently tracked (for tests and metrics).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        // A panic while holding the lock cannot leave a count half-updated in a harmful way.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_window_and_reset() {
        let l = FailureLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.check(&"u", t0), Verdict::Allowed, "attempt {i}");
            l.record_failure("u", t0 + Duration::from_secs(i));
        }
        assert_eq!(
            l.check(&"u", t0 + Duration::from_secs(5)),
            Verdict::Exceeded { first: true }
        );
        assert_eq!(
            l.check(&"u", t0 + Duration::from_secs(9)),
            Verdict::Exceeded { first: false }
        );
        // Another key is independent.
        assert_eq!(l.check(&"v", t0), Verdict::Allowed);
        // The window started at the first failure and ends 10 s later.
        assert_eq!(
            l.check(&"u", t0 + Duration::from_secs(10)),
            Verdict::Allowed
        );
        assert_eq!(l.tracked(), 0);
        l.record_failure("u", t0 + Duration::from_secs(11));
        assert_eq!(
            l.check(&"u", t0 + Duration::from_secs(11)),
            Verdict::Allowed
        );
    }

    #[test]
    fn zero_disables() {
        let l = FailureLimiter::new(0, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..100 {
            l.record_failure(1u8, t0);
        }
        assert_eq!(l.check(&1, t0), Verdict::Allowed);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn table_is_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for k in 0..(MAX_KEYS as u32 + 10) {
            l.record_failure(k, t0);
        }
        assert_eq!(l.tracked(), MAX_KEYS);
        // Once the windows expire, new keys are tracked again.
        l.record_failure(u32::MAX, t0 + Duration::from_secs(11));
        assert_eq!(l.tracked(), 1);
        assert_eq!(
            l.check(&u32::MAX, t0 + Duration::from_secs(11)),
            Verdict::Exceeded { first: true }
        );
    }
}
