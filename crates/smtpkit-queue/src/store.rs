//! The storage trait: every state change of the queue is one operation of a [`QueueStore`].
//!
//! The scheduler and the delivery workers know only this trait. A store shared by several
//! front ends (PostgreSQL with `FOR UPDATE SKIP LOCKED`) implements the same operations: the
//! lease, not memory, says who is delivering an entry, and it lapses by itself when its owner
//! dies.

use std::io;
use std::time::{Duration, SystemTime};

use crate::entry::{Entry, NewMessage, Update};
use crate::id::QueueId;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No entry with that id (delivered, deleted, or never queued).
    #[error("no queued message {0}")]
    NotFound(QueueId),
    /// The entry's lease is no longer ours (it lapsed and someone else claimed it, or an
    /// operator deleted it): our results are not recorded.
    #[error("the lease on {0} is held by someone else")]
    LeaseLost(QueueId),
    /// The entry is malformed (a damaged file); it is left where it is for an operator.
    #[error("queued message {id} is damaged: {reason}")]
    Damaged {
        /// The entry.
        id: QueueId,
        /// What is wrong.
        reason: String,
    },
    /// The storage itself failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Durable queue storage. All methods block (file or network IO): async callers run them on a
/// blocking pool.
pub trait QueueStore: Send + Sync + 'static {
    /// Stores a message and its envelope durably and returns its id. When this returns `Ok`,
    /// the message survives a crash or power loss: only then may the submitter be told 250.
    /// The message is due at once.
    fn enqueue(&self, message: NewMessage<'_>, now: SystemTime) -> Result<QueueId, StoreError>;

    /// Claims up to `max` due entries for `owner` until `now + lease`, oldest due first.
    /// An entry is due when it is not held, has pending recipients, its `next_attempt` has
    /// come and it has no live lease. Returns the entries as claimed.
    fn claim(
        &self,
        owner: &str,
        now: SystemTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// A message's content.
    fn content(&self, id: &QueueId) -> Result<Vec<u8>, StoreError>;

    /// Records an attempt's results and ends `owner`'s lease. An entry whose recipients are
    /// all final is removed. The `held` flag set meanwhile by an operator is kept.
    fn finish(&self, owner: &str, update: &Update) -> Result<(), StoreError>;

    /// Ends every lease whose owner starts with `prefix`: an instance that restarts calls it
    /// with its own name, so what it was delivering when it died is retried at once.
    fn release_leases(&self, prefix: &str) -> Result<usize, StoreError>;

    /// Sets or clears the operator's hold.
    fn set_held(&self, id: &QueueId, held: bool) -> Result<(), StoreError>;

    /// Makes entries due at `now` (one, or all with `None`); held entries stay held.
    fn retry(&self, id: Option<&QueueId>, now: SystemTime) -> Result<usize, StoreError>;

    /// Removes an entry without notice.
    fn delete(&self, id: &QueueId) -> Result<(), StoreError>;

    /// One entry.
    fn show(&self, id: &QueueId) -> Result<Entry, StoreError>;

    /// Every entry, oldest first.
    fn list(&self) -> Result<Vec<Entry>, StoreError>;
}
