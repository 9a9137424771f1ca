//! Group commit: concurrent deliveries share their syncs.
//!
//! Delivered alone, a message pays an fsync of its file and one of each `new/` directory before
//! its 250. Here one thread, the committer, takes every message that is ready and cycles:
//!
//! 1. write the messages that arrived whole (most mail fits in one staged piece);
//! 2. one `syncfs(2)` per file system involved: it makes durable, at once, the content of the
//!    messages written since the last cycle *and* the `new/` entries linked in the last cycle;
//! 3. answer the messages whose links that sync covered (their 250 may go out now);
//! 4. link the messages whose content that sync covered into each recipient's `new/`.
//!
//! A message is linked into `new/` only after its content is durable, and acknowledged only after
//! its links are: the guarantee of the one-message path ("250 only once every copy survives a
//! power loss; nothing partial is ever visible in `new/`") holds, at one sync per cycle for any
//! number of messages. The cycle runs back to back while work arrives and sleeps when none does:
//! there is no timer, so a lone message waits for two syncs and nothing else.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{DeliveryReceipt, MaildirStore, MaildirWriter, check_abandoned, undo};
use crate::routing::MailboxPath;

/// Messages taken into one cycle at most, so one burst cannot delay the acknowledgement of the
/// messages already linked for long.
const MAX_BATCH: usize = 512;

type Done = oneshot::Sender<io::Result<DeliveryReceipt>>;

/// What the committer is asked to do.
enum Job {
    /// A message held whole in memory: write it, then commit it.
    Whole {
        content: Vec<u8>,
        recipients: Vec<MailboxPath>,
        abandoned: Arc<AtomicBool>,
        done: Done,
    },
    /// A message already written to its `tmp/` file: commit it.
    Written {
        writer: MaildirWriter,
        abandoned: Arc<AtomicBool>,
        done: Done,
    },
}

/// A message whose content waits for a sync.
struct Written {
    writer: MaildirWriter,
    file: File,
    dev: u64,
    abandoned: Arc<AtomicBool>,
    done: Done,
}

/// A message in `new/` whose directory entries wait for a sync.
struct Linked {
    writer: MaildirWriter,
    file: File,
    dev: u64,
    delivered: Vec<PathBuf>,
    done: Done,
}

/// The handle to a store's committer thread; the thread ends when the last handle is dropped.
#[derive(Debug)]
pub(super) struct GroupCommitter {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts the committer for `store` (a store without a committer of its own).
    pub(super) fn start(store: MaildirStore) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("maildir-commit".to_owned())
            .spawn(move || run(&store, &queue))?;
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

fn run(store: &MaildirStore, queue: &mpsc::Receiver<Job>) {
    let mut linked: Vec<Linked> = Vec::new();
    loop {
        let mut jobs = Vec::new();
        if linked.is_empty() {
            // Nothing in flight: sleep until work arrives, or end with the store.
            match queue.recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::RecvError) => return,
            }
        }
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let written: Vec<Written> = jobs.into_iter().filter_map(|j| write(store, j)).collect();

        // Each failure below drops the writer (removing its `tmp/` file) before it answers, so
        // whoever waits sees the store as it will stay.
        if let Err(e) = sync(store, &written, &linked) {
            for Linked {
                writer,
                delivered,
                done,
                ..
            } in linked.drain(..)
            {
                undo(&delivered);
                drop(writer);
                let _ = done.send(Err(copy_error(&e)));
            }
            for Written { writer, done, .. } in written {
                drop(writer);
                let _ = done.send(Err(copy_error(&e)));
            }
            continue;
        }
        for l in linked.drain(..) {
            drop(l.file);
            let _ = l.done.send(Ok(l.writer.settle(l.delivered)));
        }
        for Written {
            writer,
            file,
            dev,
            abandoned,
            done,
        } in written
        {
            match check_abandoned(&abandoned).and_then(|()| writer.link_all()) {
                Ok(delivered) => linked.push(Linked {
                    writer,
                    file,
                    dev,
                    delivered,
                    done,
                }),
                Err(e) => {
                    drop((writer, file));
                    let _ = done.send(Err(e));
                }
            }
        }
        if !store.inner.fsync {
            // Nothing to wait for: the links are as durable as they will get.
            for l in linked.drain(..) {
                let _ = l.done.send(Ok(l.writer.settle(l.delivered)));
            }
        }
    }
}

/// Writes a whole message, or finishes a written one; `None` when it failed (and was answered).
fn write(store: &MaildirStore, job: Job) -> Option<Written> {
    let (writer, abandoned, done) = match job {
        Job::Whole {
            content,
            recipients,
            abandoned,
            done,
        } => {
            let begun = store.begin_writer(&content, &recipients);
            match begun {
                Ok(writer) => (writer, abandoned, done),
                Err(e) => {
                    let _ = done.send(Err(e));
                    return None;
                }
            }
        }
        Job::Written {
            writer,
            abandoned,
            done,
        } => (writer, abandoned, done),
    };
    let mut writer = writer;
    let finished = writer.finish_file().and_then(|file| {
        let dev = file.metadata()?.dev();
        Ok((file, dev))
    });
    match finished {
        Ok((file, dev)) => Some(Written {
            writer,
            file,
            dev,
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

/// One `syncfs` per file system the cycle's files live on (hard links share their file's file
/// system, so this covers the `new/` entries too).
fn sync(store: &MaildirStore, written: &[Written], linked: &[Linked]) -> io::Result<()> {
    if !store.inner.fsync {
        return Ok(());
    }
    let mut synced: Vec<u64> = Vec::new();
    let files = written
        .iter()
        .map(|w| (w.dev, &w.file))
        .chain(linked.iter().map(|l| (l.dev, &l.file)));
    for (dev, file) in files {
        if synced.contains(&dev) {
            continue;
        }
        rustix::fs::syncfs(file).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("syncfs under {}: {e}", store.inner.root.display()),
            )
        })?;
        synced.push(dev);
    }
    Ok(())
}

/// The same error for every message of a failed cycle (`io::Error` is not `Clone`).
fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}
