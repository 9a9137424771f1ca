//! A durable outbound mail queue.
//!
//! - [`QueueStore`]: every state change of the queue as one store operation (enqueue durably,
//!   claim due work under a lease, record outcomes, hold, retry, delete, list). [`FileStore`]
//!   is the default; a shared database store can implement the same trait.
//! - [`schedule`]: retries with exponential backoff and jitter, expiry, the delay notice:
//!   pure functions of an entry, an attempt's outcomes and the time.
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`mx`]: RFC 5321 5.1 MX resolution and null MX (RFC 7505), over hickory.
//! - [`Transport`]: how a message leaves; [`Runner`] claims due messages, delivers them through
//!   a transport with a per-domain concurrency limit, records the outcomes and queues notices.
//!
//! Time is always passed in (`now`), so tests move it instead of sleeping.
//!
//! # Guarantees
//!
//! - A message is acknowledged ([`QueueStore::enqueue`] returns) only when it is durable.
//! - A lease that was not finished (the owner crashed) lapses, or is released when the same
//!   instance starts again: the message is delivered again (at-least-once; a duplicate is
//!   possible only for a message in flight at the crash).
//! - No notice is ever sent to the null sender `<>`, and a notice that cannot be delivered is
//!   dropped with a log line: a bounce never bounces.

pub mod dsn;
mod due;
mod entry;
mod file;
mod id;
pub mod mx;
mod runner;
pub mod schedule;
mod store;
mod transport;

pub use entry::{
    Entry, Kind, Lease, NewMessage, Recipient, RecipientState, Update, from_unix, unix,
};
pub use file::FileStore;
pub use id::QueueId;
pub use runner::{BATCH, Owner, POLL, Round, Runner};
pub use schedule::{Outcome, Policy};
pub use store::{QueueStore, StoreError};
pub use transport::{Attempt, Transport, all};
