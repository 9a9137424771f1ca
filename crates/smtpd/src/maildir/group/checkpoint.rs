//! The checkpoint: materialized files and their directories made durable, then the segments
//! whose records are all settled retired for reuse.
//!
//! One `syncfs` per file system per checkpoint makes them durable. It waits for every dirty
//! page of the file system, other processes' too, which is why no 250 waits for it: only the
//! retirement of segments does, which can wait. Against an `fdatasync` of each file (and a
//! thread to share the file system's journal commits among them) and an `fsync` of each `new/`
//! directory, it costs a message no syscall at all, and the materializers close each file as
//! soon as it is linked. Every materialized file is linked into one of the `new/` directories
//! the checkpoint is given, and a link is on its file's file system, so syncing the file
//! systems of those directories covers the files; a copy made across file systems was synced
//! before its rename into `new/`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::error;

use super::super::journal::{self, Segment};
use super::super::{MaildirStore, at};
use super::{Pool, Spares};

/// A checkpoint runs once this many records wait for it ...
const CHECKPOINT_RECORDS: usize = 4096;

/// ... or this long after the first of them arrived.
pub(super) const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// Retired segments kept for reuse (each is [`journal::SEGMENT_BYTES`] on disk); more are
/// deleted.
pub(super) const SPARE_SEGMENTS: usize = 4;

pub(super) enum ToCheckpoint {
    /// A materializer's share: `records` of segment `generation` settled (placed or refused),
    /// and the `new/` directories the placed ones were linked into.
    Settled {
        generation: u64,
        records: usize,
        dirs: Vec<PathBuf>,
    },
    /// A segment that takes no more records; it retires once `records` of it are settled
    /// and synced.
    Closed { segment: Segment, records: usize },
}

/// The checkpoint thread.
pub(super) fn run(store: &MaildirStore, settled: &mpsc::Receiver<ToCheckpoint>, spares: &Spares) {
    let dir = store.inner.root.join(journal::DIR);
    let mut pending = Pending::default();
    let mut oldest: Option<Instant> = None;
    loop {
        let next = match oldest {
            None => settled
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(t) => settled.recv_timeout(CHECKPOINT_AFTER.saturating_sub(t.elapsed())),
        };
        match next {
            Ok(message) => {
                pending.add(message);
                oldest.get_or_insert_with(Instant::now);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while pending.records < CHECKPOINT_RECORDS {
            match settled.try_recv() {
                Ok(message) => pending.add(message),
                Err(_) => break,
            }
        }
        if pending.records >= CHECKPOINT_RECORDS
            || oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_AFTER)
        {
            pending.checkpoint(spares, &dir);
            oldest = None;
        }
    }
    pending.checkpoint(spares, &dir);
    // A clean stop: every message is durable in its Maildirs, the journal holds nothing.
    for segment in Pool::lock(spares).spares.drain(..) {
        segment.delete();
    }
}

#[derive(Default)]
struct Pending {
    /// Records settled since the last checkpoint.
    records: usize,
    dirs: HashSet<PathBuf>,
    /// Records settled whose files wait for this checkpoint, by generation.
    waiting: HashMap<u64, usize>,
    /// Records settled and durable, by generation (until their segment retires).
    durable: HashMap<u64, usize>,
    /// Closed segments and their record counts, until all are durable. A segment some of
    /// whose files a checkpoint failed to sync never retires: held (locked) so that no recovery
    /// touches it while this process runs, recovered at the next start.
    closed: Vec<(Segment, usize)>,
}

impl Pending {
    fn add(&mut self, message: ToCheckpoint) {
        match message {
            ToCheckpoint::Settled {
                generation,
                records,
                dirs,
            } => {
                self.records += records;
                self.dirs.extend(dirs);
                *self.waiting.entry(generation).or_default() += records;
            }
            ToCheckpoint::Closed { segment, records } => self.closed.push((segment, records)),
        }
    }

    fn checkpoint(&mut self, spares: &Spares, dir: &Path) {
        let synced = sync_file_systems(&self.dirs);
        self.records = 0;
        self.dirs.clear();
        match synced {
            Ok(()) => {
                for (generation, records) in self.waiting.drain() {
                    *self.durable.entry(generation).or_default() += records;
                }
            }
            Err(e) => {
                self.waiting.clear();
                error!(error = %e, "maildir checkpoint failed; the journal keeps the messages");
            }
        }
        let durable = &mut self.durable;
        let (done, open): (Vec<_>, Vec<_>) =
            self.closed.drain(..).partition(|(segment, records)| {
                durable.get(&segment.generation()).copied().unwrap_or(0) >= *records
            });
        self.closed = open;
        for (mut segment, _) in done {
            self.durable.remove(&segment.generation());
            if let Err(e) = segment.retire() {
                error!(error = %e, "maildir journal segment not retired");
                // Never retired now: a count it can no longer reach.
                self.closed.push((segment, usize::MAX));
                continue;
            }
            let mut pool = Pool::lock(spares);
            if pool.spares.len() < SPARE_SEGMENTS {
                pool.spares.push(segment);
                // A retired segment is room the journal can use again at once.
                pool.retry_at = None;
            } else {
                segment.delete();
            }
        }
        // The journal thread finds a spare ready instead of zero-filling one before a 250
        // (made outside the lock, which the journal thread may be waiting for).
        let wanted = {
            let pool = Pool::lock(spares);
            pool.spares.is_empty() && pool.may_create()
        };
        if wanted {
            match Segment::create(dir) {
                Ok(segment) => Pool::lock(spares).spares.push(segment),
                Err(e) => {
                    Pool::lock(spares).failed();
                    error!(error = %e, "maildir journal segment not created");
                }
            }
        }
    }
}

/// One `syncfs` per file system holding any of `dirs`.
fn sync_file_systems(dirs: &HashSet<PathBuf>) -> io::Result<()> {
    let mut synced: Vec<u64> = Vec::new();
    for dir in dirs {
        let dev = std::fs::metadata(dir).map_err(|e| at(dir, e))?.dev();
        if synced.contains(&dev) {
            continue;
        }
        let handle = File::open(dir).map_err(|e| at(dir, e))?;
        rustix::fs::syncfs(&handle).map_err(|e| at(dir, e.into()))?;
        synced.push(dev);
    }
    Ok(())
}
