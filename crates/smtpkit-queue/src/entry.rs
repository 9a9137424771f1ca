//! What the queue knows about a message: its envelope, each recipient's state, its schedule.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::id::QueueId;

/// Seconds since the Unix epoch: what entries store, so every store agrees on time.
#[must_use]
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The inverse of [`unix`].
#[must_use]
pub fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Why a message is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Mail a user or another server handed to us.
    Message,
    /// A delivery status notification we made. Its own failures are dropped, never bounced:
    /// that is what stops bounce loops.
    Notice,
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Not delivered yet; tried again at the entry's `next_attempt`.
    Pending,
    /// Accepted by the next hop (final).
    Delivered,
    /// Refused for good or expired (final); a notice went to the sender, if there is one.
    Failed,
}

/// One envelope recipient and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address, `local@domain`, without angle brackets.
    pub address: String,
    /// Where it stands.
    pub state: RecipientState,
    /// The last reply or error seen for it, for `queue show` and notices.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// The host that gave `last_reply`, for the DSN's `Remote-MTA`.
    #[serde(default)]
    pub remote: Option<String>,
}

impl Recipient {
    /// A pending recipient.
    #[must_use]
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            state: RecipientState::Pending,
            last_reply: None,
            remote: None,
        }
    }

    /// The domain part (after the last `@`), lowercased: what MX resolution and the per-domain
    /// limit go by.
    #[must_use]
    pub fn domain(&self) -> String {
        self.address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase()
    }
}

/// A claim on an entry: while it lasts, only `owner` delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it: `<instance>/<process nonce>` (see [`crate::Owner`]).
    pub owner: String,
    /// When it lapses (Unix seconds); after that anyone may claim the entry again.
    pub expires: u64,
}

/// A queued message's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its id.
    pub id: QueueId,
    /// A message or one of our notices.
    pub kind: Kind,
    /// The envelope sender; `None` for the null reverse path `<>` (never notified).
    pub sender: Option<String>,
    /// The envelope recipients.
    pub recipients: Vec<Recipient>,
    /// Content size in octets.
    pub size: u64,
    /// When it was queued (Unix seconds).
    pub created: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it is due next (Unix seconds).
    pub next_attempt: u64,
    /// Held by an operator: never claimed until released.
    #[serde(default)]
    pub held: bool,
    /// Whether the delay notice went out already (it is sent once).
    #[serde(default)]
    pub delay_notified: bool,
    /// The current claim, if any.
    #[serde(default)]
    pub lease: Option<Lease>,
}

impl Entry {
    /// Whether every recipient is final (delivered or failed): the entry can go.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.state != RecipientState::Pending)
    }

    /// Whether it may be claimed at `now`: due, not held, not done, no live lease.
    #[must_use]
    pub fn is_claimable(&self, now: u64) -> bool {
        !self.held
            && !self.is_done()
            && self.next_attempt <= now
            && self.lease.as_ref().is_none_or(|l| l.expires <= now)
    }
}

/// A message to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// A message or a notice.
    pub kind: Kind,
    /// The envelope sender; `None` for `<>`.
    pub sender: Option<&'a str>,
    /// The envelope recipients (`local@domain`).
    pub recipients: &'a [String],
    /// The whole content, headers and body, CRLF line endings.
    pub content: &'a [u8],
}

/// What a delivery attempt changed, handed to [`crate::QueueStore::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The entry.
    pub id: QueueId,
    /// The recipients after the attempt (same order and addresses as claimed).
    pub recipients: Vec<Recipient>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When it is due next (Unix seconds), if anything is pending.
    pub next_attempt: u64,
    /// Whether the delay notice has gone out.
    pub delay_notified: bool,
}
