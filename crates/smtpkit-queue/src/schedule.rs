//! When to try again, when to give up, when to warn: pure functions of an entry, the results
//! of an attempt and the time, so every rule is tested without a clock or a network.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Kind, Recipient, RecipientState, Update, unix};

/// The queue's timing and concurrency rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The wait after the first failed attempt, in seconds; doubled after each further one.
    /// 300 s is Postfix's `minimal_backoff_time`.
    pub first_retry: u64,
    /// The longest wait between attempts, in seconds (Postfix's `maximal_backoff_time`, 4000 s).
    pub max_retry: u64,
    /// Each wait is spread by up to this fraction either way, so messages deferred together
    /// do not all come back in the same second.
    pub jitter: f64,
    /// How long a message is tried before it is returned to its sender, in seconds: 5 days,
    /// Postfix's `maximal_queue_lifetime` (RFC 5321 4.5.4.1 suggests at least 4–5 days).
    pub expiry: u64,
    /// When the sender is told once that a message is still not delivered, in seconds after
    /// it was queued (4 h, sendmail's `Timeout.queuewarn`); 0 turns the notice off.
    pub delay_notice: u64,
    /// Deliveries to one destination domain at once (Postfix's
    /// `default_destination_concurrency_limit`, 20).
    pub per_domain: usize,
    /// How long a claim on a message lasts, in seconds: longer than any one delivery attempt
    /// (connect, TLS, a large body at a slow rate). An owner that dies frees its messages
    /// after this, or at once when it restarts under the same instance name.
    pub lease: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first_retry: 300,
            max_retry: 4000,
            jitter: 0.2,
            expiry: 5 * 86_400,
            delay_notice: 4 * 3600,
            per_domain: 20,
            lease: 1800,
        }
    }
}

impl Policy {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones (at least one).
    /// `sample` in `[0, 1)` picks the jitter.
    #[must_use]
    pub fn backoff(&self, attempts: u32, sample: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        let base = self
            .first_retry
            .saturating_mul(1u64 << doublings)
            .min(self.max_retry)
            .max(1) as f64;
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - spread + 2.0 * spread * sample.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * factor).max(1.0))
    }
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop accepted it (its reply).
    Delivered {
        /// The reply text, e.g. `250 2.0.0 Ok: queued as X`.
        reply: String,
        /// The host that answered.
        remote: Option<String>,
    },
    /// Try again later: a 4xx, a timeout, a refused connection, a DNS failure.
    Temporary {
        /// The reply or the error.
        reply: String,
        /// The host that answered, if one did.
        remote: Option<String>,
    },
    /// Refused for good: a 5xx, a null MX, a domain that does not exist.
    Permanent {
        /// The reply or the error.
        reply: String,
        /// The host that answered, if one did.
        remote: Option<String>,
    },
}

/// The result of [`plan`]: what to record, and whom to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the store records.
    pub update: Update,
    /// Recipients that failed in this attempt (refused or expired).
    pub failed: Vec<Recipient>,
    /// Recipients still pending when the delay notice falls due (once per message).
    pub delayed: Vec<Recipient>,
    /// Whether `failed` and `delayed` are to be reported to the sender: only for a
    /// [`Kind::Message`] with a sender. A notice's own failures are dropped (no loops), and
    /// nothing ever goes to `<>`.
    pub notify: bool,
}

/// Applies an attempt's `outcomes` (recipient index, outcome) to a claimed `entry` at `now`.
/// Recipients without an outcome stay as they were. `sample` in `[0, 1)` picks the jitter.
#[must_use]
pub fn plan(
    entry: &Entry,
    outcomes: &[(usize, Outcome)],
    now: SystemTime,
    policy: &Policy,
    sample: f64,
) -> Plan {
    let now_s = unix(now);
    let mut recipients = entry.recipients.clone();
    let mut failed = Vec::new();
    for (index, outcome) in outcomes {
        let Some(r) = recipients.get_mut(*index) else {
            continue;
        };
        if r.state != RecipientState::Pending {
            continue;
        }
        let (state, reply, remote) = match outcome {
            Outcome::Delivered { reply, remote } => (RecipientState::Delivered, reply, remote),
            Outcome::Temporary { reply, remote } => (RecipientState::Pending, reply, remote),
            Outcome::Permanent { reply, remote } => (RecipientState::Failed, reply, remote),
        };
        r.state = state;
        r.last_reply = Some(reply.clone());
        r.remote.clone_from(remote);
        if state == RecipientState::Failed {
            failed.push(r.clone());
        }
    }
    let expired = now_s >= entry.created.saturating_add(policy.expiry);
    if expired {
        for r in &mut recipients {
            if r.state == RecipientState::Pending {
                r.state = RecipientState::Failed;
                let last = r.last_reply.take().unwrap_or_default();
                r.last_reply = Some(format!(
                    "message expired after {} days in the queue; last error: {last}",
                    policy.expiry / 86_400
                ));
                failed.push(r.clone());
            }
        }
    }
    let pending: Vec<Recipient> = recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .cloned()
        .collect();
    let mut delay_notified = entry.delay_notified;
    let mut delayed = Vec::new();
    if !delay_notified
        && !pending.is_empty()
        && policy.delay_notice > 0
        && now_s >= entry.created.saturating_add(policy.delay_notice)
    {
        delay_notified = true;
        delayed = pending.clone();
    }
    let attempts = entry.attempts.saturating_add(1);
    let next_attempt = if pending.is_empty() {
        now_s
    } else {
        now_s.saturating_add(policy.backoff(attempts, sample).as_secs().max(1))
    };
    Plan {
        update: Update {
            id: entry.id.clone(),
            recipients,
            attempts,
            next_attempt,
            delay_notified,
        },
        failed,
        delayed,
        notify: entry.kind == Kind::Message && entry.sender.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::from_unix;
    use crate::id::QueueId;
    use proptest::prelude::*;

    fn entry(n: usize, created: u64) -> Entry {
        Entry {
            id: QueueId::generate(from_unix(created)),
            kind: Kind::Message,
            sender: Some("a@example.org".into()),
            recipients: (0..n)
                .map(|i| Recipient::new(format!("r{i}@example.com")))
                .collect(),
            size: 10,
            created,
            attempts: 0,
            next_attempt: created,
            held: false,
            delay_notified: false,
            lease: None,
        }
    }

    fn outcome(kind: u8) -> Outcome {
        let reply = format!("{kind}");
        match kind % 3 {
            0 => Outcome::Delivered {
                reply,
                remote: None,
            },
            1 => Outcome::Temporary {
                reply,
                remote: None,
            },
            _ => Outcome::Permanent {
                reply,
                remote: None,
            },
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = Policy::default();
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(300));
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(600));
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(1200));
        assert_eq!(p.backoff(40, 0.5), Duration::from_secs(4000));
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(240));
        assert!(p.backoff(1, 0.999) <= Duration::from_secs(360));
    }

    #[test]
    fn expiry_fails_what_is_pending_and_the_delay_notice_goes_once() {
        let p = Policy::default();
        let e = entry(2, 1000);
        let temp = [(0, outcome(1)), (1, outcome(1))];
        // Before the notice time: nothing to tell.
        let early = plan(&e, &temp, from_unix(1000 + 60), &p, 0.5);
        assert!(early.delayed.is_empty() && early.failed.is_empty());
        // Past it: both recipients, once.
        let late = plan(&e, &temp, from_unix(1000 + p.delay_notice), &p, 0.5);
        assert_eq!(late.delayed.len(), 2);
        assert!(late.update.delay_notified);
        let mut again = e.clone();
        again.delay_notified = true;
        assert!(
            plan(
                &again,
                &temp,
                from_unix(1000 + p.delay_notice + 10),
                &p,
                0.5
            )
            .delayed
            .is_empty()
        );
        // Past expiry: failed, with the last error in the text.
        let gone = plan(&e, &temp, from_unix(1000 + p.expiry), &p, 0.5);
        assert_eq!(gone.failed.len(), 2);
        assert!(
            gone.update
                .recipients
                .iter()
                .all(|r| r.state == RecipientState::Failed)
        );
        assert!(
            gone.failed[0]
                .last_reply
                .as_deref()
                .unwrap()
                .contains("expired")
        );
    }

    #[test]
    fn notices_never_go_to_the_null_sender_nor_about_notices() {
        let p = Policy::default();
        let mut e = entry(1, 0);
        e.sender = None;
        assert!(!plan(&e, &[(0, outcome(2))], from_unix(1), &p, 0.5).notify);
        let mut n = entry(1, 0);
        n.kind = Kind::Notice;
        assert!(!plan(&n, &[(0, outcome(2))], from_unix(1), &p, 0.5).notify);
        assert!(plan(&entry(1, 0), &[(0, outcome(2))], from_unix(1), &p, 0.5).notify);
    }

    proptest! {
        /// The state machine of recipients: final states stay final, outcomes land where they
        /// belong, a message with pending recipients is always scheduled in the future and
        /// within the policy's bounds, and failures are reported exactly once.
        #[test]
        fn transitions(
            n in 1usize..6,
            prior in proptest::collection::vec(0u8..3, 6),
            outcomes in proptest::collection::vec((0usize..8, 0u8..3), 0..10),
            age in 0u64..(6 * 86_400),
            notified in any::<bool>(),
            sample in 0.0f64..1.0,
        ) {
            let p = Policy::default();
            let mut e = entry(n, 10_000);
            e.delay_notified = notified;
            for (r, s) in e.recipients.iter_mut().zip(&prior) {
                r.state = [RecipientState::Pending, RecipientState::Delivered, RecipientState::Failed][*s as usize];
            }
            let outcomes: Vec<_> = outcomes.into_iter().map(|(i, k)| (i, outcome(k))).collect();
            let now = 10_000 + age;
            let result = plan(&e, &outcomes, from_unix(now), &p, sample);
            let after = &result.update.recipients;
            prop_assert_eq!(after.len(), n);
            for (i, (before, after)) in e.recipients.iter().zip(after).enumerate() {
                prop_assert_eq!(&before.address, &after.address);
                if before.state != RecipientState::Pending {
                    prop_assert_eq!(before, after, "a final state changed");
                    continue;
                }
                // Temporary outcomes leave a recipient pending, so a later outcome may still
                // settle it in the same attempt.
                let settled = outcomes
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, o)| o)
                    .find(|o| !matches!(o, Outcome::Temporary { .. }));
                match settled {
                    Some(Outcome::Delivered { .. }) => prop_assert_eq!(after.state, RecipientState::Delivered),
                    Some(Outcome::Permanent { .. }) => prop_assert_eq!(after.state, RecipientState::Failed),
                    _ if age >= p.expiry => prop_assert_eq!(after.state, RecipientState::Failed),
                    _ => prop_assert_eq!(after.state, RecipientState::Pending),
                }
            }
            let newly_failed = e.recipients.iter().zip(after)
                .filter(|(b, a)| b.state == RecipientState::Pending && a.state == RecipientState::Failed)
                .count();
            prop_assert_eq!(result.failed.len(), newly_failed);
            let pending = after.iter().filter(|r| r.state == RecipientState::Pending).count();
            if pending > 0 {
                prop_assert!(result.update.next_attempt > now);
                prop_assert!(result.update.next_attempt <= now + (p.max_retry as f64 * (1.0 + p.jitter)) as u64 + 1);
            }
            prop_assert!(result.delayed.is_empty() || (!notified && result.update.delay_notified));
            prop_assert!(result.update.delay_notified || !notified);
            prop_assert_eq!(result.update.attempts, 1);
        }
    }
}
