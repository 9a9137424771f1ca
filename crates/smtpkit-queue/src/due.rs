//! [`DueIndex`]: the file store's in-memory order of entries by due time, so a claim reads the
//! few entries it takes instead of every entry in the queue.
//!
//! The files stay the truth. Several processes may change one queue directory (a server and
//! `smtpd queue`, or instances sharing it), so every change of any entry, by anyone, bumps a
//! counter in `<root>/changes` (under its own `flock`, after the change is on disk). An index
//! that saw every bump since it was built is current; one that missed a bump (someone else
//! changed the queue) is rebuilt from the directory before it is used.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::entry::Entry;
use crate::id::QueueId;

/// Due order of the entries that have pending recipients.
#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    /// The change count the index reflects; `None` until it is built, or after a change it
    /// could not follow.
    seen: Option<u64>,
    /// `(next_attempt, created, id)`: the order claims take entries in.
    order: BTreeSet<(u64, u64, QueueId)>,
    slots: HashMap<QueueId, Slot>,
}

/// What, besides the due time, can keep an entry from being claimed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    next_attempt: u64,
    created: u64,
    held: bool,
    lease_expires: Option<u64>,
}

/// A change the index applies, recorded after the files are written.
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// The entry was written as it is now.
    Put(&'a Entry),
    /// The entry is gone.
    Remove(&'a QueueId),
}

impl DueIndex {
    /// Whether the index reflects change count `count`.
    pub(crate) fn is_current(&self, count: u64) -> bool {
        self.seen == Some(count)
    }

    /// Replaces the contents with `entries`, as of change count `count`.
    pub(crate) fn rebuild(&mut self, entries: &[Entry], count: u64) {
        self.order.clear();
        self.slots.clear();
        for e in entries {
            self.put(e);
        }
        self.seen = Some(count);
    }

    /// Ids of entries that may be claimable at `now`, in claim order: due, not held, no live
    /// lease (as far as the index knows; the caller checks the file).
    pub(crate) fn candidates(&self, now: u64) -> impl Iterator<Item = &QueueId> {
        self.order
            .iter()
            .take_while(move |(next, _, _)| *next <= now)
            .filter(move |(_, _, id)| {
                self.slots
                    .get(id)
                    .is_some_and(|s| !s.held && s.lease_expires.is_none_or(|e| e <= now))
            })
            .map(|(_, _, id)| id)
    }

    /// Entries the index holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Applies changes made by this process, which bumped the count from `before`. If the
    /// index missed an earlier change it is marked stale instead, to be rebuilt.
    pub(crate) fn apply(&mut self, before: u64, changes: &[Change<'_>]) {
        if self.seen != Some(before) {
            self.seen = None;
            return;
        }
        for change in changes {
            match change {
                Change::Put(e) => self.put(e),
                Change::Remove(id) => self.remove(id),
            }
        }
        self.seen = Some(before + 1);
    }

    fn put(&mut self, e: &Entry) {
        self.remove(&e.id);
        if e.is_done() {
            return;
        }
        let slot = Slot {
            next_attempt: e.next_attempt,
            created: e.created,
            held: e.held,
            lease_expires: e.lease.as_ref().map(|l| l.expires),
        };
        self.order
            .insert((slot.next_attempt, slot.created, e.id.clone()));
        self.slots.insert(e.id.clone(), slot);
    }

    fn remove(&mut self, id: &QueueId) {
        if let Some(old) = self.slots.remove(id) {
            self.order
                .remove(&(old.next_attempt, old.created, id.clone()));
        }
    }
}

/// The queue's change counter: eight bytes at the start of `<root>/changes`.
#[derive(Debug)]
pub(crate) struct Changes(pub(crate) File);

impl Changes {
    /// Runs `f` with the current count while holding the counter's lock; with `bump`, the
    /// count goes up by one afterwards (a change was made). Returns `f`'s result and the count
    /// `f` saw.
    pub(crate) fn with<T>(
        &self,
        bump: bool,
        f: impl FnOnce(u64) -> io::Result<T>,
    ) -> io::Result<T> {
        self.0.lock()?;
        let result = self.read().and_then(|count| {
            let value = f(count)?;
            if bump {
                self.0
                    .write_all_at(&(count.wrapping_add(1)).to_le_bytes(), 0)?;
            }
            Ok(value)
        });
        let unlocked = self.0.unlock();
        let value = result?;
        unlocked?;
        Ok(value)
    }

    fn read(&self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        match self.0.read_exact_at(&mut bytes, 0) {
            Ok(()) => Ok(u64::from_le_bytes(bytes)),
            // A new queue (or one a crash left with a short file): counting starts over, and
            // every process's index is rebuilt when it next sees a count it did not expect.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Kind, Lease, Recipient, RecipientState};

    fn entry(n: u32, next: u64) -> Entry {
        Entry {
            id: format!("id-{n}").parse().unwrap(),
            kind: Kind::Message,
            sender: None,
            recipients: vec![Recipient::new("a@b.test")],
            size: 1,
            created: 100,
            attempts: 0,
            next_attempt: next,
            held: false,
            delay_notified: false,
            lease: None,
        }
    }

    #[test]
    fn candidates_come_in_due_order_and_skip_held_and_leased() {
        let mut index = DueIndex::default();
        let (late, early, held, leased, done) = (
            entry(1, 50),
            entry(2, 10),
            entry(3, 5),
            entry(4, 6),
            entry(5, 1),
        );
        let held = Entry { held: true, ..held };
        let leased = Entry {
            lease: Some(Lease {
                owner: "a/1".into(),
                expires: 40,
            }),
            ..leased
        };
        let mut done = done;
        done.recipients[0].state = RecipientState::Delivered;
        index.rebuild(
            &[late.clone(), early.clone(), held, leased.clone(), done],
            7,
        );
        assert_eq!(index.len(), 4, "a done entry is not indexed");
        assert!(index.is_current(7));
        let at = |now| index.candidates(now).cloned().collect::<Vec<_>>();
        assert_eq!(at(30), std::slice::from_ref(&early.id));
        assert_eq!(at(45), [leased.id.clone(), early.id.clone()]);
        assert_eq!(
            at(60),
            [leased.id.clone(), early.id.clone(), late.id.clone()]
        );
    }

    #[test]
    fn a_missed_change_makes_the_index_stale() {
        let mut index = DueIndex::default();
        let e = entry(1, 10);
        index.rebuild(&[], 3);
        index.apply(3, &[Change::Put(&e)]);
        assert!(index.is_current(4));
        assert_eq!(index.candidates(10).count(), 1);
        index.apply(4, &[Change::Remove(&e.id)]);
        assert_eq!(index.candidates(10).count(), 0);
        // Someone else bumped the count to 6: our change from 6 cannot be applied on top.
        index.apply(6, &[Change::Put(&e)]);
        assert!(!index.is_current(7));
        assert!(!index.is_current(5));
    }

    #[test]
    fn the_counter_counts_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes");
        let open = || {
            Changes(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap(),
            )
        };
        let (a, b) = (open(), open());
        assert_eq!(a.with(true, Ok).unwrap(), 0);
        assert_eq!(b.with(true, Ok).unwrap(), 1);
        assert_eq!(a.with(false, Ok).unwrap(), 2);
        assert_eq!(a.with(false, Ok).unwrap(), 2);
    }
}
