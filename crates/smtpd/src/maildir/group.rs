//! Group commit: concurrent deliveries share one journal write and one `fdatasync`.
//!
//! Delivered alone, a message pays an fsync of its file and one of each `new/` directory before
//! its 250. Here the work of every message that is ready is shared:
//!
//! 1. **journal** (`maildir-journal`, this module): takes every message waiting (at most
//!    [`MAX_BATCH`], about [`CYCLE_BYTES`]) and appends them whole, content, recipients and
//!    unique name, to the active journal segment with one write, then one `fdatasync` of that
//!    segment (the `journal` module: preallocated, so the sync writes this cycle's data and
//!    nothing else, whatever else is dirty on the file system). The messages are durable now.
//! 2. **materialize** (`maildir-materialize`, (cores - 1) / 2 threads, at most four; on two
//!    cores the journal thread itself, after each sync: the `materialize` module): each takes a
//!    share of a cycle's messages, writes each into an anonymous file
//!    (`O_TMPFILE`) of its first recipient's `tmp/`, links it into every recipient's `new/` and
//!    answers: the 250 goes out when the message is durable (journal) and visible (Maildir). No
//!    sync here: with threads, this runs while the journal thread syncs the next cycle. A
//!    message that cannot
//!    be placed (disk full, quota) or whose client gave up has its record *refused* (one octet
//!    rewritten and synced) before its 4xx goes out, so recovery never delivers it.
//! 3. **checkpoint** (`maildir-checkpoint`, the `checkpoint` module): every
//!    [`CHECKPOINT_AFTER`](checkpoint::CHECKPOINT_AFTER) or so, one `syncfs` of each file
//!    system holding the `new/` directories written since the last checkpoint (it waits for
//!    other processes' dirty pages too, but no 250 waits for it); then every closed segment
//!    whose records are all durable in their Maildirs or refused is retired (its header marked
//!    and synced) and kept for reuse. A
//!    segment is closed for new records when full or [`SEGMENT_AGE`] after its first record, so
//!    records retire within about a second of their 250.
//!
//! Messages too large for the journal ([`RECORD_MAX`]), messages the server already streamed
//! into a `tmp/` file, and every message while the journal cannot be used take the per-file
//! path in the journal thread's cycle: `fdatasync` of each file (side by side), links into
//! `new/`, one `fsync` per distinct `new/` directory of the cycle, then the 250. The journal
//! cannot be used when no segment can be made (a file system full or smaller than a segment,
//! a quota, any error) or its write or sync failed; it is tried again [`JOURNAL_RETRY`] later,
//! or as soon as the checkpoint retires a segment for reuse. So a full disk costs the messages
//! that do not fit a 4xx and nothing else, and once space is freed mail is stored again.
//!
//! # Crash points
//!
//! At startup, before its first cycle, the journal thread runs recovery (`journal` module) on
//! the segments no live process holds. What it finds, by where the crash landed:
//!
//! - **Before or during the journal write or its sync**: no 250 was sent. A record torn or
//!   not written fails its checksum and ends the scan; one that reached the disk whole is
//!   replayed: the client retries and the message may arrive twice, the safe way to lose the
//!   race. (A SIGKILL loses nothing written; only a power loss can tear the tail.)
//! - **After the sync, before or during materialization** (250 not sent yet, or sent for the
//!   messages already linked): every record is intact; recovery writes each message into each
//!   `new/` that lacks it. A `new/<id>,S=<size>` of the right size, or a
//!   `cur/<id>,S=<size>:2,...` a reader made of it, is the link already made: each mailbox
//!   gets the message exactly once (names are unique). An anonymous file not linked yet
//!   vanishes with the process.
//! - **After a refusal**: the record's state octet says refused and was synced before the 4xx
//!   went out; recovery skips it.
//! - **After the 250, before the checkpoint's syncs completed** (power loss): the links or
//!   the files' data may be gone, never the records. Missing copies are written again; a copy
//!   of the wrong size (a link that survived without its data) is replaced whole. Recovery
//!   writes through `tmp/`, syncs the file, then links or renames, and syncs the directories
//!   before it retires the segments: nothing partial is left in `new/`.
//! - **During retirement**: a segment whose retired mark did not reach the disk is replayed;
//!   every copy is found present.
//! - **Per-file path**: a file is linked only after its `fdatasync`, and answered after the
//!   `fsync` of its `new/` directories, as delivery without group commit does. A `tmp/` file
//!   cut short by a crash is removed by the `tmp/` sweeper after 36 hours.
//!
//! At least once, at the edges: a client that gives up on a message (the storage time limit)
//! after its record was synced and before a materializer looked at it gets a 4xx while the
//! record is live; a crash in that window delivers it. A message a user deletes (or a reader
//! renames beyond the `<name>:2,` convention) in the second or so between its 250 and its
//! segment's retirement comes back if the machine crashes in that second: recovery cannot tell
//! a deleted copy from one never made. Postfix's queue has the same edge (a message delivered
//! but not yet removed from the queue when it crashes is delivered again).

mod checkpoint;
mod materialize;

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::journal::{self, CYCLE_BYTES, RECORD_MAX, RecordMark, Segment};
use super::{DeliveryReceipt, MaildirStore, MaildirWriter, at, check_abandoned, sync_dir, undo};
use crate::routing::MailboxPath;
use checkpoint::ToCheckpoint;

/// Messages taken into one cycle at most, so one burst cannot delay the acknowledgement of the
/// messages already written for long.
const MAX_BATCH: usize = 512;

/// A segment is closed for new records this long after its first one, so that its records
/// retire soon after their messages are durable in the Maildirs.
const SEGMENT_AGE: Duration = Duration::from_millis(500);

/// After the journal could not be used, messages take the per-file path this long before a
/// segment is made again (unless a retired one comes back first).
const JOURNAL_RETRY: Duration = Duration::from_secs(1);

/// Threads that write journaled messages into their Maildirs: (cores - 1) / 2, at most four;
/// with two cores or fewer, none: the journal thread does it after each sync. They compete
/// with the sessions for the cores, and with each other for the locks of the directories they
/// link into: on two cores, under 50 sessions storing into one mailbox, four of them cost 115 µs
/// of system time per message where one costs 58, at the same rate, and handing each cycle to
/// a thread cost two `futex` calls per cycle of about one message.
fn materializers() -> usize {
    std::thread::available_parallelism().map_or(0, |n| (n.get().saturating_sub(1) / 2).min(4))
}

/// A cycle's messages are shared among the materializers in parts of at least this many, so
/// a small cycle wakes one thread, not all of them.
const MIN_SHARE: usize = 4;

/// Threads the per-file path syncs a cycle's files from; they wait on the disk, not the CPU.
const SYNC_THREADS: usize = 16;

/// Parts waiting for a materializer, and settled parts waiting for the checkpoint; beyond it
/// the earlier thread waits, and with it the 250s: a disk slower than the mail stream slows the
/// senders instead of filling memory.
const PIPELINE_DEPTH: usize = 64;

type Done = oneshot::Sender<io::Result<DeliveryReceipt>>;

/// What the committer is asked to do.
enum Job {
    /// A message held whole in memory: journal it, then materialize it.
    Whole {
        content: Vec<u8>,
        recipients: Vec<MailboxPath>,
        abandoned: Arc<AtomicBool>,
        done: Done,
    },
    /// A message already written to its `tmp/` file: sync and link it.
    Written {
        writer: MaildirWriter,
        abandoned: Arc<AtomicBool>,
        done: Done,
    },
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Self::Whole { content, .. } => content.len(),
            Self::Written { .. } => 0,
        }
    }
}

/// A message on the per-file path whose file waits for its sync.
struct Written {
    writer: MaildirWriter,
    file: File,
    abandoned: Arc<AtomicBool>,
    done: Done,
}

/// A whole message on its way through the journal into its Maildirs.
struct Journaled {
    id: String,
    /// Relative to the root, deduplicated.
    maildirs: Vec<PathBuf>,
    /// For the per-file path, should the journal fail it.
    recipients: Vec<MailboxPath>,
    content: Vec<u8>,
    abandoned: Arc<AtomicBool>,
    done: Done,
    /// Its record, once written (none without fsync: nothing is journaled then).
    mark: Option<RecordMark>,
}

/// Part of a cycle's messages for one materializer.
struct Share {
    /// The segment generation holding their records (none without fsync).
    generation: Option<u64>,
    messages: Vec<Journaled>,
}

/// Retired segments ready for reuse, shared by the journal and checkpoint threads, and when a
/// new one may be made after one could not.
#[derive(Default)]
struct Pool {
    spares: Vec<Segment>,
    retry_at: Option<Instant>,
}

type Spares = Arc<Mutex<Pool>>;

impl Pool {
    fn lock(spares: &Spares) -> std::sync::MutexGuard<'_, Self> {
        spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether making a segment is worth trying now.
    fn may_create(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// A segment could not be made: the journal rests for [`JOURNAL_RETRY`].
    fn failed(&mut self) {
        self.retry_at = Some(Instant::now() + JOURNAL_RETRY);
    }
}

/// The handle to a store's committer threads; they end when the last handle is dropped, after
/// making everything durable.
#[derive(Debug)]
pub(super) struct GroupCommitter {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the committer for `store` (a store without a committer of its own).
    pub(super) fn start(store: MaildirStore) -> io::Result<Self> {
        Self::start_with(store, materializers())
    }

    /// [`start`](Self::start) with `threads` materializer threads (none: the journal thread
    /// materializes).
    fn start_with(store: MaildirStore, threads: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let (to_materializers, shares) = mpsc::sync_channel(PIPELINE_DEPTH);
        let (to_checkpoint, settled) = mpsc::sync_channel(PIPELINE_DEPTH);
        let spares: Spares = Arc::default();
        let thread = |name: &str| std::thread::Builder::new().name(name.to_owned());
        {
            let (store, spares) = (store.clone(), Arc::clone(&spares));
            thread("maildir-checkpoint")
                .spawn(move || checkpoint::run(&store, &settled, &spares))?;
        }
        let shares = Arc::new(Mutex::new(shares));
        let to_materializers = ToMaterializers {
            queue: to_materializers,
            threads,
        };
        for _ in 0..to_materializers.threads {
            let (store, shares, to_checkpoint) =
                (store.clone(), Arc::clone(&shares), to_checkpoint.clone());
            thread("maildir-materialize")
                .spawn(move || materialize::run(&store, &shares, &to_checkpoint))?;
        }
        thread("maildir-journal").spawn(move || {
            run(&store, &queue, &to_materializers, &to_checkpoint, &spares);
        })?;
        Ok(Self { jobs })
    }

    pub(super) fn deliver(
        &self,
        content: Vec<u8>,
        recipients: Vec<MailboxPath>,
        abandoned: Arc<AtomicBool>,
    ) -> PendingCommit {
        let (done, receipt) = oneshot::channel();
        self.submit(
            Job::Whole {
                content,
                recipients,
                abandoned,
                done,
            },
            receipt,
        )
    }

    pub(super) fn commit(
        &self,
        writer: MaildirWriter,
        abandoned: Arc<AtomicBool>,
    ) -> PendingCommit {
        let (done, receipt) = oneshot::channel();
        self.submit(
            Job::Written {
                writer,
                abandoned,
                done,
            },
            receipt,
        )
    }

    fn submit(
        &self,
        job: Job,
        receipt: oneshot::Receiver<io::Result<DeliveryReceipt>>,
    ) -> PendingCommit {
        // A send fails only if the thread is gone; the dropped `done` then fails the wait.
        let _ = self.jobs.send(job);
        PendingCommit(receipt)
    }
}

/// A commit in progress; await it for the outcome.
#[derive(Debug)]
pub struct PendingCommit(oneshot::Receiver<io::Result<DeliveryReceipt>>);

impl PendingCommit {
    /// Waits until the message is durable in every mailbox, or failed.
    pub async fn wait(self) -> io::Result<DeliveryReceipt> {
        self.0
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the Maildir committer stopped")))
    }
}

/// The segment taking this cycle's records.
struct Active {
    segment: Segment,
    /// When its first record was written.
    since: Instant,
    /// Records handed to the materializers; the checkpoint retires the segment once as many
    /// are settled.
    records: usize,
}

/// The journal thread's state.
struct Journal<'a> {
    store: &'a MaildirStore,
    active: Option<Active>,
    /// The cycle's encoded records, reused.
    records: Vec<u8>,
    to_checkpoint: &'a mpsc::SyncSender<ToCheckpoint>,
    spares: &'a Spares,
}

/// The journal thread.
fn run(
    store: &MaildirStore,
    queue: &mpsc::Receiver<Job>,
    to_materializers: &ToMaterializers,
    to_checkpoint: &mpsc::SyncSender<ToCheckpoint>,
    spares: &Spares,
) {
    recover(store, spares);
    let mut journal = Journal {
        store,
        active: None,
        records: Vec::new(),
        to_checkpoint,
        spares,
    };
    loop {
        let first = match &journal.active {
            Some(a) => match queue.recv_timeout(SEGMENT_AGE.saturating_sub(a.since.elapsed())) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match queue.recv() {
                Ok(job) => Some(job),
                Err(mpsc::RecvError) => break,
            },
        };
        if journal
            .active
            .as_ref()
            .is_some_and(|a| a.since.elapsed() >= SEGMENT_AGE)
        {
            journal.close();
        }
        let Some(first) = first else { continue };
        let mut bytes = first.len();
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH && bytes < CYCLE_BYTES {
            match queue.try_recv() {
                Ok(job) => {
                    bytes += job.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        journal.cycle(jobs, to_materializers);
    }
    journal.close();
}

/// Recovery of what earlier processes left; their segments become spares.
fn recover(store: &MaildirStore, spares: &Spares) {
    let root = &store.inner.root;
    match journal::recover(root, store.inner.fsync) {
        Ok((recovery, segments)) => {
            if recovery.segments > 0 {
                info!(
                    root = %root.display(), segments = recovery.segments,
                    records = recovery.records, replayed = recovery.replayed,
                    repaired = recovery.repaired, present = recovery.present, "maildir recovery"
                );
            }
            let mut pool = Pool::lock(spares);
            for segment in segments {
                if pool.spares.len() < checkpoint::SPARE_SEGMENTS {
                    pool.spares.push(segment);
                } else {
                    segment.delete();
                }
            }
        }
        // The segments stay for the next start; new mail does not depend on them.
        Err(e) => error!(root = %root.display(), error = %e, "maildir recovery failed"),
    }
}

impl Journal<'_> {
    fn close(&mut self) {
        if let Some(a) = self.active.take() {
            // The checkpoint is gone only when the store is; the segment then stays for
            // recovery.
            let _ = self.to_checkpoint.send(ToCheckpoint::Closed {
                segment: a.segment,
                records: a.records,
            });
        }
    }

    /// One cycle: journal and per-file messages made durable, per-file ones linked and
    /// answered, journaled ones handed to the materializers.
    fn cycle(&mut self, jobs: Vec<Job>, to_materializers: &ToMaterializers) {
        let store = self.store;
        let fsync = store.inner.fsync;
        let mut whole: Vec<Journaled> = Vec::with_capacity(jobs.len());
        let mut written: Vec<Written> = Vec::new();
        for job in jobs {
            match job {
                Job::Whole {
                    content,
                    recipients,
                    abandoned,
                    done,
                } => {
                    // The last point of no return: once journaled, a crash may deliver it.
                    if let Err(e) = check_abandoned(&abandoned) {
                        let _ = done.send(Err(e));
                    } else if content.len() > RECORD_MAX || recipients.is_empty() {
                        written.extend(per_file(store, &content, &recipients, abandoned, done));
                    } else {
                        whole.push(Journaled {
                            id: store.unique_name(),
                            maildirs: maildirs(&recipients),
                            recipients,
                            content,
                            abandoned,
                            done,
                            mark: None,
                        });
                    }
                }
                Job::Written {
                    writer,
                    abandoned,
                    done,
                } => {
                    written.extend(finish(writer, abandoned, done));
                }
            }
        }

        let (journaled, generation) = if fsync && !whole.is_empty() {
            let (journaled, refused) = self.append(whole);
            for j in refused {
                written.extend(j.per_file(store));
            }
            let generation = self.active.as_ref().map(|a| a.segment.generation());
            (journaled, generation)
        } else {
            (whole, None)
        };
        // The per-file path's data syncs while the journal's write is in flight, side by side.
        let written = if fsync {
            sync_written(written)
        } else {
            written
        };
        let synced = match (&self.active, generation) {
            (Some(a), Some(_)) if !journaled.is_empty() => a.segment.sync(),
            _ => Ok(()),
        };
        let journaled = match synced {
            Ok(()) => journaled,
            Err(e) => {
                // Delivered file by file instead, now.
                let late = self.refuse(journaled, &e);
                link_written(sync_written(late), fsync);
                Vec::new()
            }
        };
        if !journaled.is_empty() {
            if let Some(a) = self.active.as_mut().filter(|_| generation.is_some()) {
                a.records += journaled.len();
            }
            to_materializers.share(journaled, generation, store, self.to_checkpoint);
        }
        link_written(written, fsync);
    }

    /// Writes the records of `whole` into the active segment (not synced), making one if needed.
    /// Returns the messages written, and those to deliver file by file: all of them when the
    /// journal cannot be used, and any that cannot be encoded.
    fn append(&mut self, mut whole: Vec<Journaled>) -> (Vec<Journaled>, Vec<Journaled>) {
        let len: usize = whole
            .iter()
            .map(|j| journal::encoded_len(&j.id, &j.maildirs, j.content.len()))
            .sum();
        if let Err(e) = self.ready(len) {
            // Logged where it is new: when a segment could not be made (once per retry).
            if e.kind() != io::ErrorKind::WouldBlock {
                warn!(error = %e, "maildir journal unavailable; storing file by file");
            }
            return (Vec::new(), whole);
        }
        let Some(a) = self.active.as_mut() else {
            return (Vec::new(), whole);
        };
        self.records.clear();
        let generation = a.segment.generation();
        let mut kept = Vec::with_capacity(whole.len());
        let mut refused = Vec::new();
        let mut offsets = Vec::with_capacity(whole.len());
        for j in whole.drain(..) {
            let offset = self.records.len() as u64;
            match journal::encode(
                &mut self.records,
                generation,
                &j.id,
                &j.maildirs,
                &j.content,
            ) {
                Ok(()) => {
                    offsets.push(offset);
                    kept.push(j);
                }
                Err(_) => refused.push(j),
            }
        }
        match a.segment.append(&self.records) {
            Ok(start) => {
                for (j, offset) in kept.iter_mut().zip(offsets) {
                    j.mark = Some(a.segment.mark(start + offset));
                }
                (kept, refused)
            }
            Err(e) => {
                error!(error = %e, "maildir journal write failed; storing file by file");
                // What reached the segment is retired with it; nothing of it is answered yet.
                Pool::lock(self.spares).failed();
                self.close();
                refused.extend(kept);
                (Vec::new(), refused)
            }
        }
    }

    /// An active segment with room for `len` more bytes of records.
    fn ready(&mut self, len: usize) -> io::Result<()> {
        if self.active.as_ref().is_some_and(|a| !a.segment.fits(len)) {
            self.close();
        }
        if self.active.is_some() {
            return Ok(());
        }
        let spare = {
            let mut pool = Pool::lock(self.spares);
            match pool.spares.pop() {
                Some(segment) => Some(segment),
                None if pool.may_create() => None,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the journal is resting",
                    ));
                }
            }
        };
        let mut segment = match spare {
            Some(segment) => segment,
            // No spare yet (the first message, or the checkpoint fell behind): made here, once.
            None => {
                Segment::create(&self.store.inner.root.join(journal::DIR)).inspect_err(|_| {
                    Pool::lock(self.spares).failed();
                })?
            }
        };
        if !segment.fits(len) {
            // Only a cycle of many messages near the record limit: file by file, this once.
            Pool::lock(self.spares).spares.push(segment);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "records larger than a segment",
            ));
        }
        segment.activate();
        self.active = Some(Active {
            segment,
            since: Instant::now(),
            records: 0,
        });
        Ok(())
    }

    /// The journal's sync failed: each record of the cycle is refused, so that no recovery
    /// delivers it, and the messages go file by file. A message whose record cannot be refused
    /// either (the disk is failing) is answered with the error.
    fn refuse(&mut self, journaled: Vec<Journaled>, e: &io::Error) -> Vec<Written> {
        error!(error = %e, "maildir journal sync failed; storing file by file");
        Pool::lock(self.spares).failed();
        self.close();
        let mut late = Vec::new();
        for j in journaled {
            match j.mark.as_ref().map_or(Ok(()), RecordMark::refuse) {
                Ok(()) => late.extend(j.per_file(self.store)),
                Err(_) => {
                    let _ = j.done.send(Err(copy_error(e)));
                }
            }
        }
        late
    }
}

impl Journaled {
    /// Starts this message on the per-file path.
    fn per_file(self, store: &MaildirStore) -> Option<Written> {
        per_file(
            store,
            &self.content,
            &self.recipients,
            self.abandoned,
            self.done,
        )
    }
}

/// The way to the materializer threads.
struct ToMaterializers {
    queue: mpsc::SyncSender<Share>,
    threads: usize,
}

impl ToMaterializers {
    fn share(
        &self,
        mut journaled: Vec<Journaled>,
        generation: Option<u64>,
        store: &MaildirStore,
        to_checkpoint: &mpsc::SyncSender<ToCheckpoint>,
    ) {
        if self.threads == 0 {
            let messages = journaled;
            return materialize::settle(
                store,
                Share {
                    generation,
                    messages,
                },
                to_checkpoint,
            );
        }
        let parts = journaled.len().div_ceil(MIN_SHARE).clamp(1, self.threads);
        let size = journaled.len().div_ceil(parts);
        while !journaled.is_empty() {
            let rest = journaled.split_off(size.min(journaled.len()));
            // Sent only if a materializer is alive, which they are as long as this thread.
            let _ = self.queue.send(Share {
                generation,
                messages: journaled,
            });
            journaled = rest;
        }
    }
}

/// The recipients' Maildirs, relative to the root, each once.
fn maildirs(recipients: &[MailboxPath]) -> Vec<PathBuf> {
    let mut maildirs: Vec<PathBuf> = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let path = recipient.relative_path();
        if !maildirs.contains(&path) {
            maildirs.push(path);
        }
    }
    maildirs
}

/// A whole message started on the per-file path: written to its `tmp/` file; `None` when
/// that failed (and was answered).
fn per_file(
    store: &MaildirStore,
    content: &[u8],
    recipients: &[MailboxPath],
    abandoned: Arc<AtomicBool>,
    done: Done,
) -> Option<Written> {
    match store.begin_writer(content, recipients) {
        Ok(writer) => finish(writer, abandoned, done),
        Err(e) => {
            let _ = done.send(Err(e));
            None
        }
    }
}

/// Flushes a per-file message's buffer; `None` when that failed (and was answered).
fn finish(mut writer: MaildirWriter, abandoned: Arc<AtomicBool>, done: Done) -> Option<Written> {
    match writer.finish_file() {
        Ok(file) => Some(Written {
            writer,
            file,
            abandoned,
            done,
        }),
        Err(e) => {
            drop(writer);
            let _ = done.send(Err(e));
            None
        }
    }
}

/// Syncs the per-file messages' data; those whose sync failed are answered and dropped.
fn sync_written(written: Vec<Written>) -> Vec<Written> {
    let files: Vec<&File> = written.iter().map(|w| &w.file).collect();
    if sync_files(&files).is_ok() {
        return written;
    }
    // Which one failed: the others are synced already, so this costs little.
    written
        .into_iter()
        .filter_map(|w| match w.file.sync_data() {
            Ok(()) => Some(w),
            Err(e) => {
                let _ = w.done.send(Err(at(&w.writer.tmp_path, e)));
                None
            }
        })
        .collect()
}

/// `fdatasync` of every file, from [`SYNC_THREADS`] threads at once: one after the other, each
/// sync of a new file costs a file-system journal commit and a device cache flush of its own
/// (about 0.5 ms here, which capped the rate at ~2,000 files/s); concurrent ones share them.
fn sync_files(files: &[&File]) -> io::Result<()> {
    if files.len() < 2 {
        return files.iter().try_for_each(|f| f.sync_data());
    }
    let chunk = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let syncs: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(|f| f.sync_data())))
            .collect();
        syncs.into_iter().try_for_each(|s| {
            s.join()
                .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")))
        })
    })
}

/// Links the synced per-file messages into their `new/` directories, syncs each directory
/// once, then answers them.
fn link_written(written: Vec<Written>, fsync: bool) {
    let mut linked = Vec::with_capacity(written.len());
    for w in written {
        match check_abandoned(&w.abandoned).and_then(|()| w.writer.link_all()) {
            Ok(delivered) => linked.push((w, delivered)),
            Err(e) => {
                drop(w.writer);
                let _ = w.done.send(Err(e));
            }
        }
    }
    let mut failed: Option<(PathBuf, io::Error)> = None;
    if fsync {
        let mut synced: HashSet<&Path> = HashSet::new();
        for dir in linked
            .iter()
            .flat_map(|(_, delivered)| delivered.iter().filter_map(|p| p.parent()))
        {
            if synced.insert(dir)
                && let Err(e) = sync_dir(dir)
            {
                failed = Some((dir.to_owned(), e));
                break;
            }
        }
    }
    for (w, delivered) in linked {
        let failed_here = failed
            .as_ref()
            .filter(|(dir, _)| delivered.iter().any(|p| p.parent() == Some(dir.as_path())));
        match failed_here {
            Some((_, e)) => {
                undo(&delivered);
                drop(w.writer);
                let _ = w.done.send(Err(copy_error(e)));
            }
            None => {
                drop(w.file);
                let _ = w.done.send(Ok(w.writer.settle(delivered)));
            }
        }
    }
}

/// The same error for every message of a failed cycle (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mailbox(domain: &str, local: &str) -> MailboxPath {
        MailboxPath::new(domain, local).expect("short names encode")
    }

    fn store(root: &Path) -> MaildirStore {
        MaildirStore::new(root)
            .with_hostname("mx.test")
            .with_group_commit()
            .unwrap()
    }

    fn in_new(root: &Path, maildir: &str) -> usize {
        fs::read_dir(root.join(maildir).join("new")).map_or(0, Iterator::count)
    }

    /// The live records of every segment on disk, as recovery would read them after a crash.
    fn live_records(root: &Path) -> Vec<journal::Record> {
        let Ok(entries) = fs::read_dir(root.join(journal::DIR)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .flat_map(|e| journal::scan(&fs::read(e.path()).unwrap()))
            .collect()
    }

    /// With materializer threads (machines of more than two cores), as on two cores without:
    /// each message once, whole, in each mailbox, and nothing left in `tmp/`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn materializer_threads_deliver_each_message_once_whole() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let plain = MaildirStore::new(root).with_hostname("mx.test");
        let mut store = plain.clone();
        store.committer = Some(Arc::new(GroupCommitter::start_with(plain, 3).unwrap()));
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let recipients = vec![mailbox("a.test", "x"), mailbox("b.test", "y")];
                let content = format!("X-N: {i}\r\n\r\nbody {i}\r\n").into_bytes();
                let receipt = store
                    .deliver(content.clone(), recipients, Arc::default())
                    .await
                    .unwrap();
                (content, receipt)
            }));
        }
        for t in tasks {
            let (content, receipt) = t.await.unwrap();
            assert_eq!(receipt.paths.len(), 2);
            for path in &receipt.paths {
                assert_eq!(fs::read(path).unwrap(), content);
            }
        }
        assert_eq!(in_new(root, "a.test/x"), 100);
        assert_eq!(in_new(root, "b.test/y"), 100);
        assert!(
            fs::read_dir(root.join("a.test/x/tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// No segment can be made (the journal's directory is taken by a file, as a full or tiny
    /// file system would refuse one): messages are stored file by file, and once the way is
    /// free the journal is used again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_journal_messages_are_stored_file_by_file() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::write(root.join(journal::DIR), b"not a directory").unwrap();
        let store = store(root);
        for i in 0..3 {
            let content = format!("X-N: {i}\r\n\r\nbody\r\n").into_bytes();
            let receipt = store
                .deliver(
                    content.clone(),
                    vec![mailbox("a.test", "x")],
                    Arc::default(),
                )
                .await
                .unwrap();
            assert_eq!(fs::read(&receipt.paths[0]).unwrap(), content);
        }
        assert_eq!(in_new(root, "a.test/x"), 3);
        assert!(
            fs::read_dir(root.join("a.test/x/tmp"))
                .unwrap()
                .next()
                .is_none()
        );

        fs::remove_file(root.join(journal::DIR)).unwrap();
        tokio::time::sleep(JOURNAL_RETRY + Duration::from_millis(100)).await;
        store
            .deliver(
                b"X: 1\r\n\r\n".to_vec(),
                vec![mailbox("a.test", "x")],
                Arc::default(),
            )
            .await
            .unwrap();
        assert_eq!(in_new(root, "a.test/x"), 4);
        let segments = fs::read_dir(root.join(journal::DIR)).unwrap().count();
        assert!(segments >= 1, "the journal is in use again");
    }

    /// A message journaled whose materialization fails (its mailbox cannot be made) is
    /// answered with the error, and by then its record is refused: a crash now, and recovery
    /// would not deliver it. A message journaled beside it stays live until its checkpoint,
    /// which shows the scan reads a segment not retired yet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_message_leaves_no_live_record() {
        // A segment retires about half a second after its first record; a machine slow enough
        // to get there between the two deliveries gets another try.
        for _ in 0..5 {
            let root = tempfile::tempdir().unwrap();
            let root = root.path();
            fs::write(root.join("bad.test"), b"a file where a domain would be").unwrap();
            let store = store(root);
            let bad = mailbox("bad.test", "x");
            let refused = store
                .deliver(
                    b"X: bad\r\n\r\n".to_vec(),
                    vec![bad.clone()],
                    Arc::default(),
                )
                .await;
            assert!(refused.is_err());
            let good = store
                .deliver(
                    b"X: good\r\n\r\n".to_vec(),
                    vec![mailbox("a.test", "x")],
                    Arc::default(),
                )
                .await
                .unwrap();
            let live = live_records(root);
            assert!(
                live.iter().all(|r| r.maildirs != [bad.relative_path()]),
                "the refused message's record is live"
            );
            if live.iter().any(|r| r.id == good.id) {
                return;
            }
        }
        panic!("every segment retired before it could be read");
    }
}
