//! [`FileStore`]: the queue in a directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::due::{Change, Changes, DueIndex};
use crate::entry::{Entry, Lease, NewMessage, Recipient, Update, unix};
use crate::id::QueueId;
use crate::store::{QueueStore, StoreError};

/// The queue in a directory, durable through atomic renames and fsync.
///
/// ```text
/// <root>/lock              flock(2) taken by every state change (server and `smtpd queue` alike)
/// <root>/changes           a counter bumped after every change of an entry, by anyone
/// <root>/tmp/              files being written
/// <root>/content/<id>      the message, immutable once queued
/// <root>/entry/<id>.json   its envelope, recipients' states, schedule and lease
/// ```
///
/// An entry file is the message's existence: it is renamed into `entry/` only after the
/// content is durable in `content/`, and removed before the content. Every rewrite of an entry
/// goes through `tmp/`, an fsync and a rename, so a crash at any point leaves either the old or
/// the new record, never a torn one. A lease written before a crash lapses by itself, or at
/// once when the restarted instance calls [`QueueStore::release_leases`](crate::QueueStore::release_leases).
///
/// A claim costs what it takes, not the size of the queue: each handle keeps the due order of
/// the entries in memory (clones share it), built from the directory on first use and again
/// whenever `changes` shows that another process changed the queue.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    due: Arc<Mutex<Due>>,
}

/// The index and the counter it follows, locked together: `flock` does not exclude other
/// threads using the same file, the mutex does.
#[derive(Debug)]
struct Due {
    index: DueIndex,
    changes: Changes,
}

impl FileStore {
    /// Opens (creating if needed) the queue directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for dir in ["tmp", "content", "entry"] {
            fs::create_dir_all(root.join(dir))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("lock"))?;
        let changes = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(root.join("changes"))?;
        sync_dir(&root)?;
        Ok(Self {
            root,
            due: Arc::new(Mutex::new(Due {
                index: DueIndex::default(),
                changes: Changes(changes),
            })),
        })
    }

    fn due(&self) -> MutexGuard<'_, Due> {
        self.due
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a change already on disk, and applies it to this handle's index.
    fn changed(&self, changes: &[Change<'_>]) -> io::Result<()> {
        let mut due = self.due();
        let Due {
            index,
            changes: counter,
        } = &mut *due;
        counter.with(true, |before| {
            index.apply(before, changes);
            Ok(())
        })
    }

    /// The queue directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn content_path(&self, id: &QueueId) -> PathBuf {
        self.root.join("content").join(id.as_str())
    }

    fn entry_path(&self, id: &QueueId) -> PathBuf {
        self.root.join("entry").join(format!("{id}.json"))
    }

    /// Takes the queue's lock until the guard is dropped: one state change at a time across
    /// every process using this directory.
    fn lock(&self) -> io::Result<File> {
        let file = File::open(self.root.join("lock"))?;
        file.lock()?;
        Ok(file)
    }

    fn read_entry(&self, id: &QueueId) -> Result<Entry, StoreError> {
        let bytes = match fs::read(self.entry_path(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
            id: id.clone(),
            reason: e.to_string(),
        })
    }

    /// Replaces an entry atomically: a reader sees the old record or the new one. `durable`
    /// also syncs the directory, so the new record survives a power loss.
    fn write_entry(&self, entry: &Entry, durable: bool) -> io::Result<()> {
        let tmp = self.root.join("tmp").join(format!("{}.entry", entry.id));
        let bytes = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, self.entry_path(&entry.id))?;
        if durable {
            sync_dir(&self.root.join("entry"))?;
        }
        Ok(())
    }

    fn remove(&self, id: &QueueId) -> io::Result<()> {
        // The entry goes first: content without an entry is an orphan the sweeper removes,
        // an entry without content would be a message that cannot be delivered.
        remove_if_present(&self.entry_path(id))?;
        sync_dir(&self.root.join("entry"))?;
        remove_if_present(&self.content_path(id))
    }

    fn ids(&self) -> io::Result<Vec<QueueId>> {
        let mut ids = Vec::new();
        for item in fs::read_dir(self.root.join("entry"))? {
            let name = item?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(id) = stem.parse() {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for id in self.ids()? {
            match self.read_entry(&id) {
                Ok(e) => entries.push(e),
                // Delivered or deleted between the listing and the read.
                Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Io(e)) => return Err(e),
                Err(e) => warn!(%id, error = %e, "skipping a damaged queue entry"),
            }
        }
        Ok(entries)
    }

    /// Removes what a crash can leave behind: files in `tmp/` and content without an entry,
    /// both older than `age` (younger ones may belong to an enqueue in progress).
    pub fn sweep(&self, now: SystemTime, age: Duration) -> io::Result<usize> {
        let _lock = self.lock()?;
        let mut removed = 0;
        let old = |path: &Path| -> bool {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age))
        };
        for item in fs::read_dir(self.root.join("tmp"))? {
            let path = item?.path();
            if old(&path) {
                remove_if_present(&path)?;
                removed += 1;
            }
        }
        for item in fs::read_dir(self.root.join("content"))? {
            let item = item?;
            let Some(id) = item.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if !self.entry_path(&id).exists() && old(&item.path()) {
                remove_if_present(&item.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl QueueStore for FileStore {
    fn enqueue(&self, message: NewMessage<'_>, now: SystemTime) -> Result<QueueId, StoreError> {
        let id = QueueId::generate(now);
        let entry = Entry {
            id: id.clone(),
            kind: message.kind,
            sender: message.sender.map(str::to_owned),
            recipients: message.recipients.iter().map(Recipient::new).collect(),
            size: message.content.len() as u64,
            created: unix(now),
            attempts: 0,
            next_attempt: unix(now),
            held: false,
            delay_notified: false,
            lease: None,
        };
        let tmp_content = self.root.join("tmp").join(format!("{id}.content"));
        write_synced(&tmp_content, message.content)?;
        fs::rename(&tmp_content, self.content_path(&id))?;
        sync_dir(&self.root.join("content"))?;
        self.write_entry(&entry, true)?;
        self.changed(&[Change::Put(&entry)])?;
        Ok(id)
    }

    fn claim(
        &self,
        owner: &str,
        now: SystemTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let _lock = self.lock()?;
        let now_s = unix(now);
        let mut due = Vec::new();
        let mut stale = Vec::new();
        {
            let mut guard = self.due();
            let Due { index, changes } = &mut *guard;
            changes.with(false, |count| {
                if !index.is_current(count) {
                    // Someone else changed the queue: start again from the files.
                    index.rebuild(&self.entries()?, count);
                }
                Ok(())
            })?;
            for id in index.candidates(now_s) {
                if due.len() >= max {
                    break;
                }
                // The file is the truth: the index only says which few files to read.
                match self.read_entry(id) {
                    Ok(e) if e.is_claimable(now_s) => due.push(e),
                    Ok(e) => stale.push(Ok(e)),
                    Err(StoreError::NotFound(_)) => stale.push(Err(id.clone())),
                    Err(StoreError::Io(e)) => return Err(e.into()),
                    Err(e) => warn!(%id, error = %e, "skipping a damaged queue entry"),
                }
            }
        }
        for entry in &mut due {
            entry.lease = Some(Lease {
                owner: owner.to_owned(),
                expires: now_s.saturating_add(lease.as_secs().max(1)),
            });
            // Not synced to the directory: a lease lost in a crash only makes the entry due
            // again, which is what a lease of a dead owner should do anyway.
            self.write_entry(entry, false)?;
        }
        let mut changes: Vec<Change<'_>> = due.iter().map(Change::Put).collect();
        changes.extend(stale.iter().map(|s| match s {
            Ok(e) => Change::Put(e),
            Err(id) => Change::Remove(id),
        }));
        self.changed(&changes)?;
        Ok(due)
    }

    fn content(&self, id: &QueueId) -> Result<Vec<u8>, StoreError> {
        fs::read(self.content_path(id)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(id.clone()),
            _ => e.into(),
        })
    }

    fn finish(&self, owner: &str, update: &Update) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut entry = self.read_entry(&update.id)?;
        if entry.lease.as_ref().is_none_or(|l| l.owner != owner) {
            return Err(StoreError::LeaseLost(update.id.clone()));
        }
        entry.recipients.clone_from(&update.recipients);
        entry.attempts = update.attempts;
        entry.next_attempt = update.next_attempt;
        entry.delay_notified = update.delay_notified;
        entry.lease = None;
        if entry.is_done() {
            self.remove(&entry.id)?;
            self.changed(&[Change::Remove(&entry.id)])?;
        } else {
            self.write_entry(&entry, true)?;
            self.changed(&[Change::Put(&entry)])?;
        }
        Ok(())
    }

    fn release_leases(&self, prefix: &str) -> Result<usize, StoreError> {
        let _lock = self.lock()?;
        let mut released = Vec::new();
        for mut entry in self.entries()? {
            if entry
                .lease
                .as_ref()
                .is_some_and(|l| l.owner.starts_with(prefix))
            {
                entry.lease = None;
                self.write_entry(&entry, false)?;
                released.push(entry);
            }
        }
        if !released.is_empty() {
            sync_dir(&self.root.join("entry"))?;
            self.changed(&released.iter().map(Change::Put).collect::<Vec<_>>())?;
        }
        Ok(released.len())
    }

    fn set_held(&self, id: &QueueId, held: bool) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut entry = self.read_entry(id)?;
        entry.held = held;
        self.write_entry(&entry, true)?;
        self.changed(&[Change::Put(&entry)])?;
        Ok(())
    }

    fn retry(&self, id: Option<&QueueId>, now: SystemTime) -> Result<usize, StoreError> {
        let _lock = self.lock()?;
        let entries = match id {
            Some(id) => vec![self.read_entry(id)?],
            None => self.entries()?,
        };
        let mut retried = Vec::new();
        for mut entry in entries {
            if !entry.held && !entry.is_done() {
                entry.next_attempt = entry.next_attempt.min(unix(now));
                self.write_entry(&entry, false)?;
                retried.push(entry);
            }
        }
        sync_dir(&self.root.join("entry"))?;
        self.changed(&retried.iter().map(Change::Put).collect::<Vec<_>>())?;
        Ok(retried.len())
    }

    fn delete(&self, id: &QueueId) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        if !self.entry_path(id).exists() {
            return Err(StoreError::NotFound(id.clone()));
        }
        self.remove(id)?;
        self.changed(&[Change::Remove(id)])?;
        Ok(())
    }

    fn show(&self, id: &QueueId) -> Result<Entry, StoreError> {
        self.read_entry(id)
    }

    fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut entries = self.entries()?;
        entries.sort_by_key(|e| (e.created, e.id.clone()));
        Ok(entries)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
