//! Group commit: concurrent deliveries share one journal write and one `fdatasync`.
//!
//! Delivered alone, a message pays an fsync of its file and one of each `new/` directory before
//! its 250. Here three threads share the work of every message that is ready:
//!
//! 1. **journal** (`maildir-journal`): takes every message waiting (at most [`MAX_BATCH`], about
//!    [`CYCLE_BYTES`]) and appends them whole, content, recipients and unique name, to the
//!    active journal segment with one write, then one `fdatasync` of that segment (the
//!    `journal` module: preallocated, so the sync writes this cycle's data and nothing else,
//!    whatever else is dirty on the file system). The messages are durable now.
//! 2. **materialize** (`maildir-materialize`): writes each message into its first recipient's
//!    `tmp/`, links it into every recipient's `new/`, removes the `tmp/` name and answers: the
//!    250 goes out when the message is durable (journal) and visible (Maildir). No sync here:
//!    this runs while the journal thread syncs the next cycle.
//! 3. **checkpoint** (`maildir-checkpoint`): every [`CHECKPOINT_AFTER`] or [`CHECKPOINT_FILES`]
//!    files, `fdatasync` of each file materialized since the last checkpoint and `fsync` of each
//!    `new/` directory they were linked into (never `syncfs`); then every journal segment whose
//!    messages are all covered is retired (its header marked and synced) and kept for reuse. A
//!    segment is closed for new records when full or [`SEGMENT_AGE`] after its first record,
//!    so records retire within about a second of their 250.
//!
//! Messages too large for the journal ([`RECORD_MAX`]) and messages the server already
//! streamed into a `tmp/` file take the per-file path in the journal thread's cycle:
//! `fdatasync` of each file, links into `new/`, one `fsync` per distinct `new/` directory of
//! the cycle, then the 250.
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
//!   messages of the cycle already linked): every record is intact; recovery writes each
//!   message into each `new/` that lacks it. A `new/<id>,S=<size>` of the right size, or a
//!   `cur/<id>,S=<size>:2,...` a reader made of it, is the link already made: each mailbox
//!   gets the message exactly once (names are unique). The materializer's `tmp/<id>` file,
//!   maybe cut short, is removed.
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
//! At least once, at the edges: a message whose link failed after its record was synced is
//! answered 4xx, and a crash before its segment retires delivers it anyway. A message a user
//! deletes (or a reader renames beyond the `<name>:2,` convention) in the second or so between
//! its 250 and its segment's retirement comes back if the machine crashes in that second:
//! recovery cannot tell a deleted copy from one never made. Postfix's queue has the same edge
//! (a message delivered but not yet removed from the queue when it crashes is delivered again).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info};

use super::journal::{self, CYCLE_BYTES, RECORD_MAX, Segment};
use super::{
    DeliveryReceipt, MaildirStore, MaildirWriter, at, check_abandoned, create_maildir,
    create_new_file, place, sync_dir, undo,
};
use crate::routing::MailboxPath;

/// Messages taken into one cycle at most, so one burst cannot delay the acknowledgement of the
/// messages already written for long.
const MAX_BATCH: usize = 512;

/// A segment is closed for new records this long after its first one, so that its records
/// retire soon after their messages are durable in the Maildirs.
const SEGMENT_AGE: Duration = Duration::from_millis(500);

/// A checkpoint runs once this many files wait for it (each holds a descriptor) ...
const CHECKPOINT_FILES: usize = 1024;

/// ... or this long after the first of them arrived.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// Threads a checkpoint syncs files from; they wait on the disk, not the CPU.
const SYNC_THREADS: usize = 16;

/// Retired segments kept for reuse (each is [`journal::SEGMENT_BYTES`] on disk); more are
/// deleted.
const SPARE_SEGMENTS: usize = 4;

/// Batches waiting between two threads; beyond it the earlier thread waits, and with it the
/// 250s: a disk slower than the mail stream slows the senders instead of filling memory.
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

/// A journaled message on its way into its Maildirs.
struct Journaled {
    id: String,
    /// Relative to the root, deduplicated.
    maildirs: Vec<PathBuf>,
    content: Vec<u8>,
    done: Done,
}

enum ToMaterializer {
    Batch(Vec<Journaled>),
    /// A segment that takes no more records; it retires after the checkpoint covering the
    /// batches sent before it.
    Closed(Segment),
}

enum ToCheckpoint {
    Files {
        files: Vec<File>,
        dirs: Vec<PathBuf>,
    },
    Closed(Segment),
}

/// Retired segments ready for reuse, shared by the journal and checkpoint threads.
type Spares = Arc<Mutex<Vec<Segment>>>;

/// The handle to a store's committer threads; they end when the last handle is dropped, after
/// making everything durable.
#[derive(Debug)]
pub(super) struct GroupCommitter {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the committer for `store` (a store without a committer of its own).
    pub(super) fn start(store: MaildirStore) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let (to_materializer, batches) = mpsc::sync_channel(PIPELINE_DEPTH);
        let (to_checkpoint, settled) = mpsc::sync_channel(PIPELINE_DEPTH);
        let spares: Spares = Arc::default();
        let thread = |name: &str| std::thread::Builder::new().name(name.to_owned());
        {
            let (store, spares) = (store.clone(), Arc::clone(&spares));
            thread("maildir-checkpoint").spawn(move || checkpoint(&store, &settled, &spares))?;
        }
        {
            let store = store.clone();
            thread("maildir-materialize")
                .spawn(move || materialize(&store, &batches, &to_checkpoint))?;
        }
        thread("maildir-journal").spawn(move || run(&store, &queue, &to_materializer, &spares))?;
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
}

/// The journal thread.
fn run(
    store: &MaildirStore,
    queue: &mpsc::Receiver<Job>,
    to_materializer: &mpsc::SyncSender<ToMaterializer>,
    spares: &Spares,
) {
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
            let mut kept = spares.lock().unwrap_or_else(PoisonError::into_inner);
            for segment in segments {
                if kept.len() < SPARE_SEGMENTS {
                    kept.push(segment);
                } else {
                    segment.delete();
                }
            }
        }
        // The segments stay for the next start; new mail does not depend on them.
        Err(e) => error!(root = %root.display(), error = %e, "maildir recovery failed"),
    }
    let mut active: Option<Active> = None;
    let mut records = Vec::new();
    loop {
        let first = match &active {
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
        if active
            .as_ref()
            .is_some_and(|a| a.since.elapsed() >= SEGMENT_AGE)
        {
            close(&mut active, to_materializer);
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
        cycle(
            store,
            jobs,
            &mut active,
            &mut records,
            to_materializer,
            spares,
        );
    }
    close(&mut active, to_materializer);
}

fn close(active: &mut Option<Active>, to_materializer: &mpsc::SyncSender<ToMaterializer>) {
    if let Some(a) = active.take() {
        // The materializer is gone only when the store is; the segment then stays for recovery.
        let _ = to_materializer.send(ToMaterializer::Closed(a.segment));
    }
}

/// One cycle of the journal thread: journal and per-file messages made durable, per-file ones
/// linked and answered, journaled ones handed to the materializer.
fn cycle(
    store: &MaildirStore,
    jobs: Vec<Job>,
    active: &mut Option<Active>,
    records: &mut Vec<u8>,
    to_materializer: &mpsc::SyncSender<ToMaterializer>,
    spares: &Spares,
) {
    let fsync = store.inner.fsync;
    let mut journaled: Vec<Journaled> = Vec::with_capacity(jobs.len());
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
                } else if content.len() > RECORD_MAX {
                    match store.begin_writer(&content, &recipients) {
                        Ok(writer) => written.extend(finish(writer, abandoned, done)),
                        Err(e) => {
                            let _ = done.send(Err(e));
                        }
                    }
                } else {
                    match journal_entry(store, content, &recipients, done) {
                        Ok(entry) => journaled.push(entry),
                        Err((e, done)) => {
                            let _ = done.send(Err(e));
                        }
                    }
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

    let journal_result = if fsync && !journaled.is_empty() {
        write_records(
            store,
            &mut journaled,
            active,
            records,
            to_materializer,
            spares,
        )
    } else {
        Ok(())
    };
    // The per-file path's data syncs while the journal's write is in flight, side by side.
    let written = if fsync {
        sync_written(written)
    } else {
        written
    };
    let journal_result = journal_result.and_then(|()| match active {
        Some(a) if fsync && !journaled.is_empty() => a.segment.sync(),
        _ => Ok(()),
    });
    match journal_result {
        Ok(()) => {
            if !journaled.is_empty() {
                // Sent only if the materializer is alive, which it is as long as this thread.
                let _ = to_materializer.send(ToMaterializer::Batch(journaled));
            }
        }
        Err(e) => {
            error!(error = %e, "maildir journal write failed");
            for j in journaled {
                let _ = j.done.send(Err(copy_error(&e)));
            }
            // Whatever of this cycle reached the segment may be replayed after a crash: the
            // clients were told to retry, so that is a duplicate, never a loss.
            close(active, to_materializer);
        }
    }
    link_written(written, fsync);
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

/// A whole message ready for the journal, or the error to answer it with.
fn journal_entry(
    store: &MaildirStore,
    content: Vec<u8>,
    recipients: &[MailboxPath],
    done: Done,
) -> Result<Journaled, (io::Error, Done)> {
    let mut maildirs: Vec<PathBuf> = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let path = recipient.relative_path();
        if !maildirs.contains(&path) {
            maildirs.push(path);
        }
    }
    if maildirs.is_empty() {
        return Err((
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a message needs at least one recipient",
            ),
            done,
        ));
    }
    Ok(Journaled {
        id: store.unique_name(),
        maildirs,
        content,
        done,
    })
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

/// Encodes the cycle's records and writes them into the active segment (not synced). A
/// message that cannot be encoded is answered and dropped from `journaled`.
fn write_records(
    store: &MaildirStore,
    journaled: &mut Vec<Journaled>,
    active: &mut Option<Active>,
    records: &mut Vec<u8>,
    to_materializer: &mpsc::SyncSender<ToMaterializer>,
    spares: &Spares,
) -> io::Result<()> {
    let len: usize = journaled
        .iter()
        .map(|j| journal::encoded_len(&j.id, &j.maildirs, j.content.len()))
        .sum();
    if active.as_ref().is_some_and(|a| !a.segment.fits(len)) {
        close(active, to_materializer);
    }
    if active.is_none() {
        let spare = spares.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut segment = match spare {
            Some(segment) => segment,
            // No spare yet (the first message, or the checkpoint fell behind): made here, once.
            None => Segment::create(&store.inner.root.join(journal::DIR))?,
        };
        segment.activate();
        *active = Some(Active {
            segment,
            since: Instant::now(),
        });
    }
    let Some(a) = active.as_mut() else {
        return Err(io::Error::other("no journal segment"));
    };
    records.clear();
    let generation = a.segment.generation();
    let mut kept = Vec::with_capacity(journaled.len());
    for j in journaled.drain(..) {
        match journal::encode(records, generation, &j.id, &j.maildirs, &j.content) {
            Ok(()) => kept.push(j),
            Err(e) => {
                let _ = j.done.send(Err(e));
            }
        }
    }
    *journaled = kept;
    a.segment.append(records)
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

/// The materialize thread: journaled messages into their Maildirs, then answered.
fn materialize(
    store: &MaildirStore,
    batches: &mpsc::Receiver<ToMaterializer>,
    to_checkpoint: &mpsc::SyncSender<ToCheckpoint>,
) {
    let root = &store.inner.root;
    let fsync = store.inner.fsync;
    for batch in batches {
        match batch {
            ToMaterializer::Batch(batch) => {
                let mut files = Vec::with_capacity(batch.len());
                let mut dirs: Vec<PathBuf> = Vec::new();
                for j in batch {
                    match place_all(root, &j.id, &j.maildirs, &j.content, fsync) {
                        Ok((file, paths)) => {
                            for dir in paths.iter().filter_map(|p| p.parent()) {
                                if !dirs.iter().any(|d| d == dir) {
                                    dirs.push(dir.to_owned());
                                }
                            }
                            files.push(file);
                            let _ = j.done.send(Ok(DeliveryReceipt {
                                id: j.id,
                                size: j.content.len() as u64,
                                paths,
                            }));
                        }
                        Err(e) => {
                            let _ = j.done.send(Err(e));
                        }
                    }
                }
                if fsync {
                    let _ = to_checkpoint.send(ToCheckpoint::Files { files, dirs });
                }
            }
            ToMaterializer::Closed(segment) => {
                let _ = to_checkpoint.send(ToCheckpoint::Closed(segment));
            }
        }
    }
}

/// Writes `content` into the first Maildir's `tmp/` as `id`, links it into each Maildir's
/// `new/` and removes the `tmp/` name. Returns the file (for the checkpoint's sync) and the
/// `new/` paths; on error nothing is left.
fn place_all(
    root: &Path,
    id: &str,
    maildirs: &[PathBuf],
    content: &[u8],
    fsync: bool,
) -> io::Result<(File, Vec<PathBuf>)> {
    let first = root.join(&maildirs[0]);
    let tmp = first.join("tmp").join(id);
    let mut file = match create_new_file(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_maildir(&first)?;
            create_new_file(&tmp)
        }
        other => other,
    }
    .map_err(|e| at(&tmp, e))?;
    let name = format!("{id},S={}", content.len());
    let mut delivered = Vec::with_capacity(maildirs.len());
    let result = file
        .write_all(content)
        .map_err(|e| at(&tmp, e))
        .and_then(|()| {
            for maildir in maildirs {
                let maildir = root.join(maildir);
                let target = maildir.join("new").join(&name);
                place(&tmp, id, &maildir, &target, fsync).map_err(|e| at(&target, e))?;
                delivered.push(target);
            }
            Ok(())
        });
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok((file, delivered)),
        Err(e) => {
            undo(&delivered);
            Err(e)
        }
    }
}

/// The checkpoint thread: materialized files and their directories made durable, then the
/// segments that named them retired.
fn checkpoint(store: &MaildirStore, settled: &mpsc::Receiver<ToCheckpoint>, spares: &Spares) {
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
        while pending.files.len() < CHECKPOINT_FILES {
            match settled.try_recv() {
                Ok(message) => pending.add(message),
                Err(_) => break,
            }
        }
        if pending.files.len() >= CHECKPOINT_FILES
            || oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_AFTER)
        {
            pending.checkpoint(spares, &dir);
            oldest = None;
        }
    }
    pending.checkpoint(spares, &dir);
    // A clean stop: every message is durable in its Maildirs, the journal holds nothing.
    for segment in spares
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        segment.delete();
    }
}

#[derive(Default)]
struct Pending {
    files: Vec<File>,
    dirs: HashSet<PathBuf>,
    closed: Vec<Segment>,
    /// Segments a failed checkpoint could not retire: held (locked) so that no recovery
    /// touches them while this process runs, recovered at the next start.
    stuck: Vec<Segment>,
}

impl Pending {
    fn add(&mut self, message: ToCheckpoint) {
        match message {
            ToCheckpoint::Files { files, dirs } => {
                self.files.extend(files);
                self.dirs.extend(dirs);
            }
            ToCheckpoint::Closed(segment) => self.closed.push(segment),
        }
    }

    fn checkpoint(&mut self, spares: &Spares, dir: &Path) {
        let files: Vec<&File> = self.files.iter().collect();
        let synced =
            sync_files(&files).and_then(|()| self.dirs.iter().try_for_each(|d| sync_dir(d)));
        self.files.clear();
        self.dirs.clear();
        if let Err(e) = synced {
            error!(error = %e, "maildir checkpoint failed; the journal keeps the messages");
            self.stuck.append(&mut self.closed);
            return;
        }
        for mut segment in self.closed.drain(..) {
            if let Err(e) = segment.retire() {
                error!(error = %e, "maildir journal segment not retired");
                self.stuck.push(segment);
                continue;
            }
            let mut spares = spares.lock().unwrap_or_else(PoisonError::into_inner);
            if spares.len() < SPARE_SEGMENTS {
                spares.push(segment);
            } else {
                segment.delete();
            }
        }
        // The journal thread finds a spare ready instead of zero-filling one before a 250
        // (made outside the lock, which the journal thread may be waiting for).
        if spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            match Segment::create(dir) {
                Ok(segment) => spares
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(segment),
                Err(e) => error!(error = %e, "maildir journal segment not created"),
            }
        }
    }
}

/// `fdatasync` of every file, from [`SYNC_THREADS`] threads at once: one after the other, each
/// sync of a new file costs a file-system journal commit and a device cache flush of its own
/// (about 0.5 ms here, which capped the checkpoint at ~2,000 files/s); concurrent ones share
/// them.
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

/// The same error for every message of a failed cycle (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}
