//! Message storage: streaming Maildir delivery, and a sink for load tests.
//!
//! # Maildir delivery
//!
//! Each mailbox is a Maildir (`<root>/<domain>/<local part>/{tmp,new,cur}`) as Dovecot and
//! other IMAP servers read it. One message for several recipients is written once and
//! hard-linked into each mailbox:
//!
//! 1. [`MaildirStore::begin`] creates a uniquely named file in the first recipient's `tmp/`
//!    (`<secs>.M<usecs>P<pid>Q<counter>.<host>`, the name format of the Maildir specification)
//!    and writes the prepended header lines.
//! 2. [`MessageWriter::write_chunk`] appends body chunks as they arrive, through a 64 KiB
//!    buffer: the message is never held in memory whole.
//! 3. [`MessageWriter::commit`] fsyncs the file, links it into every recipient's `new/` as
//!    `<unique>,S=<size>` (copying through that mailbox's `tmp/` when a link is impossible, for
//!    example across file systems), fsyncs every `new/` directory, then removes the `tmp/` name.
//!
//! `commit` returns `Ok` only when every copy is durable, so the server may then answer `250`.
//! On any error it removes what it had already put in `new/` and returns the error (answer
//! `451 4.3.0`): a mailbox never sees a half-written message, and a retried message is not
//! delivered twice to some recipients. A writer that is dropped or aborted removes its `tmp/`
//! file.
//!
//! Everything here is blocking file IO. An async server should call `begin`, `commit` and
//! `abort` from a blocking thread (`tokio::task::spawn_blocking` or `block_in_place`);
//! `write_chunk` only copies into the buffer until 64 KiB have accumulated, then writes them.
//!
//! # Sink
//!
//! [`SinkStore`] accepts and counts messages and writes nothing, for `--sink` load tests.
//! [`Store`] holds either, so the server uses one type.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config;
use crate::routing::MailboxPath;

mod group;
mod journal;

use group::GroupCommitter;
pub use group::PendingCommit;

/// Size of the write buffer: large enough that a typical message takes a few `write` calls, small
/// enough that thousands of concurrent deliveries stay cheap.
const WRITE_BUFFER: usize = 64 * 1024;

/// Attempts at finding an unused file name in `tmp/`. A clash needs another process with our
/// PID on the same host name in the same microsecond, so a second attempt always suffices in
/// practice; the bound only turns a broken clock or file system into an error instead of a loop.
const NAME_ATTEMPTS: usize = 8;

/// Per-process delivery counter, the `Q` part of unique names. Shared by all stores so that two
/// stores in one process cannot produce the same name.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a successful delivery produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryReceipt {
    /// The message's unique name (without the `,S=` size), usable as a queue ID in logs.
    pub id: String,
    /// Bytes stored: prepended headers plus body.
    pub size: u64,
    /// The file in each recipient's `new/`, in recipient order. Empty for the sink.
    pub paths: Vec<PathBuf>,
}

/// Where accepted messages go: Maildirs or the sink.
#[derive(Debug, Clone)]
pub enum Store {
    /// Deliver into Maildirs.
    Maildir(MaildirStore),
    /// Count and discard.
    Sink(SinkStore),
}

impl Store {
    /// The store described by `[storage]`. `hostname` goes into Maildir file names.
    #[must_use]
    pub fn from_config(storage: &config::Storage, hostname: &str) -> Self {
        if storage.sink {
            Self::Sink(SinkStore::new())
        } else {
            let store = MaildirStore::new(&storage.maildir)
                .with_hostname(hostname)
                .with_fsync(storage.fsync);
            // Without a thread (the process is out of them) every message commits on its own:
            // slower, equally safe.
            Self::Maildir(store.clone().with_group_commit().unwrap_or(store))
        }
    }

    /// Starts a message for `recipients`, writing `prepend` (for example `Received:` and
    /// `Return-Path:` header lines, CRLF-terminated) first.
    pub fn begin(&self, prepend: &[u8], recipients: &[MailboxPath]) -> io::Result<MessageWriter> {
        match self {
            Self::Maildir(store) => store.begin(prepend, recipients),
            Self::Sink(store) => Ok(store.begin(prepend)),
        }
    }
}

/// Maildir delivery under one root directory; see the [module documentation](self).
///
/// Cloning is cheap and clones share their settings.
#[derive(Debug, Clone)]
pub struct MaildirStore {
    inner: Arc<StoreSettings>,
    /// Set by [`with_group_commit`](Self::with_group_commit).
    committer: Option<Arc<GroupCommitter>>,
}

struct StoreSettings {
    root: PathBuf,
    /// Already escaped for use in file names.
    hostname: String,
    fsync: bool,
    /// Runs before every write: lets tests stall the store as a frozen file system would.
    #[cfg(test)]
    write_hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("root", &self.root)
            .field("hostname", &self.hostname)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl MaildirStore {
    /// A store with mailboxes under `root`, fsync on, and the machine's host name
    /// ([`config::detect_hostname`]) in file names.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(StoreSettings {
                root: root.into(),
                hostname: escape_hostname(&config::detect_hostname()),
                fsync: true,
                #[cfg(test)]
                write_hook: None,
            }),
            committer: None,
        }
    }

    /// Starts the committer threads so that concurrent messages share their syncs (the `group`
    /// module explains the cycle): before its 250, a message [`deliver`](Self::deliver)ed whole
    /// then costs a share of one journal write and `fdatasync` per cycle, and one streamed
    /// through [`MessageWriter::commit_grouped`] the `fdatasync` of its file and a share of its
    /// `new/` directories' fsyncs. Call it last: the other `with_*` settings stop the committer.
    pub fn with_group_commit(mut self) -> io::Result<Self> {
        let plain = Self {
            inner: Arc::clone(&self.inner),
            committer: None,
        };
        self.committer = Some(Arc::new(GroupCommitter::start(plain)?));
        Ok(self)
    }

    /// Delivers a message held whole in memory, `content` including any prepended header lines.
    /// With group commit the committer thread writes and syncs it; without, it is written and
    /// committed on tokio's blocking pool. Either way no async worker blocks.
    pub async fn deliver(
        &self,
        content: Vec<u8>,
        recipients: Vec<MailboxPath>,
        abandoned: Arc<AtomicBool>,
    ) -> io::Result<DeliveryReceipt> {
        match &self.committer {
            Some(committer) => {
                committer
                    .deliver(content, recipients, abandoned)
                    .wait()
                    .await
            }
            None => {
                let store = self.clone();
                tokio::task::spawn_blocking(move || {
                    store
                        .begin_writer(&content, &recipients)?
                        .commit(&abandoned)
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        }
    }

    /// Uses `hostname` in file names (escaped as the Maildir specification asks).
    #[must_use]
    pub fn with_hostname(self, hostname: &str) -> Self {
        self.with_settings(|s| s.hostname = escape_hostname(hostname))
    }

    /// Turns fsync of files and directories on or off. Off means a crash can lose mail that was
    /// acknowledged; use it only for benchmarks.
    #[must_use]
    pub fn with_fsync(self, fsync: bool) -> Self {
        self.with_settings(|s| s.fsync = fsync)
    }

    fn with_settings(self, change: impl FnOnce(&mut StoreSettings)) -> Self {
        let mut settings = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| StoreSettings {
            root: shared.root.clone(),
            hostname: shared.hostname.clone(),
            fsync: shared.fsync,
            #[cfg(test)]
            write_hook: shared.write_hook.clone(),
        });
        change(&mut settings);
        Self {
            inner: Arc::new(settings),
            committer: None,
        }
    }

    /// Calls `hook` before every write (tests: a store that stalls).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_write_hook(self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.with_settings(|s| s.write_hook = Some(Arc::new(hook)))
    }

    /// Removes files older than `age` from every Maildir's `tmp/` under the root: the leftovers
    /// of deliveries cut short by a crash. The Maildir specification has readers clean `tmp/`
    /// after 36 hours; a server that writes into `tmp/` does it too, since nothing else may.
    /// Returns how many files were removed. Blocking: call it from a blocking thread.
    pub fn clean_tmp(&self, age: std::time::Duration) -> io::Result<usize> {
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        // <root>/<domain>/<local part>/tmp: the layout routing produces, and nothing deeper.
        for domain in read_dirs(&self.inner.root)? {
            for mailbox in read_dirs(&domain)? {
                let tmp = mailbox.join("tmp");
                let Ok(entries) = fs::read_dir(&tmp) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    let old = meta.modified().is_ok_and(|m| m < cutoff);
                    if meta.is_file() && old && fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The directory holding all mailboxes.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The Maildir of `mailbox`.
    #[must_use]
    pub fn maildir(&self, mailbox: &MailboxPath) -> PathBuf {
        self.inner.root.join(mailbox.relative_path())
    }

    /// Starts a message for `recipients` (duplicates are delivered once), writing `prepend`
    /// first. Creates the first recipient's Maildir if it does not exist yet.
    pub fn begin(&self, prepend: &[u8], recipients: &[MailboxPath]) -> io::Result<MessageWriter> {
        Ok(MessageWriter {
            inner: WriterKind::Maildir(self.begin_writer(prepend, recipients)?),
            committer: self.committer.clone(),
        })
    }

    fn begin_writer(
        &self,
        prepend: &[u8],
        recipients: &[MailboxPath],
    ) -> io::Result<MaildirWriter> {
        let mut unique_recipients: Vec<MailboxPath> = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            if !unique_recipients.contains(recipient) {
                unique_recipients.push(recipient.clone());
            }
        }
        let Some(first) = unique_recipients.first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a message needs at least one recipient",
            ));
        };
        let maildir = self.maildir(first);
        let (id, tmp_path, file) = self.create_unique(&maildir)?;
        let mut writer = MaildirWriter {
            store: Arc::clone(&self.inner),
            recipients: unique_recipients,
            id,
            tmp_path,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            size: 0,
            poisoned: false,
        };
        writer.write(prepend)?;
        Ok(writer)
    }

    /// Creates a new file in `maildir/tmp/` under a fresh unique name, creating the Maildir
    /// if needed.
    fn create_unique(&self, maildir: &Path) -> io::Result<(String, PathBuf, File)> {
        let tmp_dir = maildir.join("tmp");
        let mut created_maildir = false;
        let mut last_error = None;
        for _ in 0..NAME_ATTEMPTS {
            let id = self.unique_name();
            let path = tmp_dir.join(&id);
            match create_new_file(&path) {
                Ok(file) => return Ok((id, path, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_maildir => {
                    create_maildir(maildir)?;
                    created_maildir = true;
                    last_error = Some(e);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(at(&path, e)),
            }
        }
        Err(at(
            &tmp_dir,
            last_error.unwrap_or_else(|| io::Error::other("no unique file name found")),
        ))
    }

    /// `<secs>.M<usecs>P<pid>Q<counter>.<hostname>`: unique per host as long as the clock does
    /// not go back by more than the counter's spread within one PID's lifetime.
    fn unique_name(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            pid(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.inner.hostname
        )
    }
}

/// The subdirectories of `dir` (not following symlinks); none when `dir` does not exist.
fn read_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(at(dir, e)),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// This process's id, asked of the kernel once (a `getpid` per message showed in `strace -c`).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Escapes a host name for Maildir file names: `/` and `:` as the Maildir specification asks
/// (`\057`, `\072`), and `,` (`\054`), which would end the name for Maildir++ readers that parse
/// `,S=`. `\` is escaped too (`\134`) so the escaping stays unambiguous.
fn escape_hostname(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            '\\' => out.push_str("\\134"),
            c if c.is_control() => out.push('_'),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        "localhost".to_owned()
    } else {
        out
    }
}

/// Creates `maildir/{tmp,new,cur}` and missing parents with mode 0700: mail is private.
fn create_maildir(maildir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    for sub in ["tmp", "new", "cur"] {
        let dir = maildir.join(sub);
        builder.create(&dir).map_err(|e| at(&dir, e))?;
    }
    Ok(())
}

/// Opens a new file for writing, failing if it exists, with mode 0600.
fn create_new_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| at(dir, e))
}

/// `e` with `path` in its message, so a log line says which file or directory failed. The kind
/// is kept: callers branch on `NotFound`/`AlreadyExists`.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Streams one message into a store; see [`MaildirStore::begin`] and [`Store::begin`].
///
/// Dropping a writer without [`commit`](Self::commit) aborts the message.
#[derive(Debug)]
pub struct MessageWriter {
    inner: WriterKind,
    committer: Option<Arc<GroupCommitter>>,
}

#[derive(Debug)]
enum WriterKind {
    Maildir(MaildirWriter),
    Sink(SinkWriter),
}

impl MessageWriter {
    /// Appends a chunk of the message. After an error the message can only be aborted:
    /// [`commit`](Self::commit) will fail.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            WriterKind::Maildir(writer) => writer.write(chunk),
            WriterKind::Sink(writer) => {
                writer.size += chunk.len() as u64;
                Ok(())
            }
        }
    }

    /// Bytes written so far, prepended headers included.
    #[must_use]
    pub fn size(&self) -> u64 {
        match &self.inner {
            WriterKind::Maildir(writer) => writer.size,
            WriterKind::Sink(writer) => writer.size,
        }
    }

    /// Makes the message durable in every recipient's mailbox. `Ok` means every copy is on
    /// disk; `Err` means no mailbox has it.
    pub fn commit(self) -> io::Result<DeliveryReceipt> {
        self.commit_unless(&AtomicBool::new(false))
    }

    /// [`commit`](Self::commit), unless `abandoned` is set by the time the file is durable
    /// and about to be linked into `new/`: then the message is removed and the call fails. The
    /// server sets it when it stopped waiting (and answered 451), so a store that was only
    /// slow does not deliver a message the client was told to retry. Past that point the race is
    /// lost the safe way: a duplicate, never a loss.
    pub fn commit_unless(self, abandoned: &AtomicBool) -> io::Result<DeliveryReceipt> {
        match self.inner {
            WriterKind::Maildir(writer) => writer.commit(abandoned),
            WriterKind::Sink(writer) => Ok(writer.commit()),
        }
    }

    /// [`commit_unless`](Self::commit_unless) through the store's group committer when it has
    /// one, otherwise on tokio's blocking pool. Either way no async worker blocks.
    pub async fn commit_grouped(self, abandoned: Arc<AtomicBool>) -> io::Result<DeliveryReceipt> {
        match (self.inner, self.committer) {
            (WriterKind::Maildir(writer), Some(committer)) => {
                committer.commit(writer, abandoned).wait().await
            }
            (inner, _) => {
                let writer = Self {
                    inner,
                    committer: None,
                };
                tokio::task::spawn_blocking(move || writer.commit_unless(&abandoned))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        }
    }

    /// Inserts `header` (CRLF-terminated header lines) at `offset` of what was written so far:
    /// for header fields known only at the end of the message (`Authentication-Results:`). The
    /// content is copied once into a new `tmp/` file around `header` (`copy_file_range` on
    /// Linux: the kernel copies, no buffer here), which then takes the old file's name. Blocks:
    /// call it on the blocking pool.
    pub fn insert(&mut self, offset: u64, header: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            WriterKind::Maildir(writer) => writer.insert(offset, header),
            WriterKind::Sink(writer) => {
                writer.size += header.len() as u64;
                Ok(())
            }
        }
    }

    /// Delivers to `recipients` instead of the mailboxes given to `begin` (for example their
    /// junk folders). They must be in the same Maildir tree, as folders of the same mailboxes
    /// are.
    pub fn redirect(&mut self, recipients: Vec<MailboxPath>) {
        if let WriterKind::Maildir(writer) = &mut self.inner {
            let mut unique: Vec<MailboxPath> = Vec::with_capacity(recipients.len());
            for r in recipients {
                if !unique.contains(&r) {
                    unique.push(r);
                }
            }
            writer.recipients = unique;
        }
    }

    /// Discards the message, removing its temporary file.
    pub fn abort(self) {
        // Dropping does the work; this method names the intent at the call site.
        drop(self);
    }
}

#[derive(Debug)]
struct MaildirWriter {
    store: Arc<StoreSettings>,
    recipients: Vec<MailboxPath>,
    id: String,
    tmp_path: PathBuf,
    /// `None` once the file has been handed to `commit`.
    file: Option<BufWriter<File>>,
    size: u64,
    /// Set when a write failed: the file's content is then unknown.
    poisoned: bool,
}

impl MaildirWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.poisoned {
            return Err(poisoned());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("message already committed"));
        };
        #[cfg(test)]
        if let Some(hook) = &self.store.write_hook {
            hook();
        }
        if let Err(e) = file.write_all(chunk) {
            self.poisoned = true;
            return Err(at(&self.tmp_path, e));
        }
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn insert(&mut self, offset: u64, header: &[u8]) -> io::Result<()> {
        use std::io::Read as _;
        let old = self.finish_file()?;
        drop(old);
        let new_path = self.tmp_path.with_file_name(format!("{}.insert", self.id));
        let result = (|| {
            let mut new = create_new_file(&new_path)?;
            let mut old = File::open(&self.tmp_path)?;
            io::copy(&mut (&mut old).take(offset), &mut new)?;
            new.write_all(header)?;
            io::copy(&mut old, &mut new)?;
            fs::rename(&new_path, &self.tmp_path)?;
            Ok(new)
        })();
        match result {
            Ok(new) => {
                self.file = Some(BufWriter::with_capacity(WRITE_BUFFER, new));
                self.size += header.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&new_path);
                self.poisoned = true;
                Err(at(&self.tmp_path, e))
            }
        }
    }

    fn commit(mut self, abandoned: &AtomicBool) -> io::Result<DeliveryReceipt> {
        let file = self.finish_file()?;
        if self.store.fsync {
            file.sync_all().map_err(|e| at(&self.tmp_path, e))?;
        }
        drop(file);
        check_abandoned(abandoned)?;
        let delivered = self.link_all()?;
        if self.store.fsync {
            let mut synced: Vec<&Path> = Vec::with_capacity(delivered.len());
            for dir in delivered.iter().filter_map(|p| p.parent()) {
                if synced.contains(&dir) {
                    continue;
                }
                if let Err(e) = sync_dir(dir) {
                    undo(&delivered);
                    return Err(e);
                }
                synced.push(dir);
            }
        }
        Ok(self.settle(delivered))
    }

    /// Flushes the buffer and hands back the file, complete but not yet synced.
    fn finish_file(&mut self) -> io::Result<File> {
        if self.poisoned {
            return Err(poisoned());
        }
        let Some(buffered) = self.file.take() else {
            return Err(io::Error::other("message already committed"));
        };
        buffered
            .into_inner()
            .map_err(|e| at(&self.tmp_path, e.into_error()))
    }

    /// The message's name in `new/`: the unique name and the size (Maildir++ `,S=`).
    fn final_name(&self) -> String {
        format!("{},S={}", self.id, self.size)
    }

    /// Puts the complete, durable file into each recipient's `new/` and returns the paths.
    /// Directory entries are not synced here, except for copies made across file systems (a
    /// file-system-wide sync of the `tmp/` file's file system would not cover them). On error,
    /// what was placed is removed again.
    fn link_all(&self) -> io::Result<Vec<PathBuf>> {
        let final_name = self.final_name();
        let mut delivered = Vec::with_capacity(self.recipients.len());
        for recipient in &self.recipients {
            let maildir = self.store.root.join(recipient.relative_path());
            let target = maildir.join("new").join(&final_name);
            let placed = self.place(&maildir, &target).and_then(|copied| {
                match (copied && self.store.fsync, target.parent()) {
                    (true, Some(dir)) => sync_dir(dir),
                    _ => Ok(()),
                }
            });
            if let Err(e) = placed {
                undo(&delivered);
                return Err(at(&target, e));
            }
            delivered.push(target);
        }
        Ok(delivered)
    }

    /// The message is durable in every `new/`: the `tmp/` name is garbage now. A failure to
    /// remove it leaves a stray file that the `tmp/` sweeper removes after 36 hours.
    fn settle(mut self, delivered: Vec<PathBuf>) -> DeliveryReceipt {
        let _ = fs::remove_file(&self.tmp_path);
        self.tmp_path = PathBuf::new();
        DeliveryReceipt {
            id: std::mem::take(&mut self.id),
            size: self.size,
            paths: delivered,
        }
    }

    /// Hard-links the `tmp/` file to `target`, creating the Maildir or falling back to a copy
    /// as needed.
    /// Returns whether it had to copy.
    fn place(&self, maildir: &Path, target: &Path) -> io::Result<bool> {
        place(&self.tmp_path, &self.id, maildir, target, self.store.fsync)
    }

    #[cfg(test)]
    fn copy_into(&self, maildir: &Path, target: &Path) -> io::Result<()> {
        copy_into(&self.tmp_path, &self.id, maildir, target, self.store.fsync)
    }
}

/// Hard-links the complete file `source` (named `id`) to `target` in `maildir`, creating the
/// Maildir or falling back to a copy as needed. Returns whether it had to copy.
fn place(source: &Path, id: &str, maildir: &Path, target: &Path, fsync: bool) -> io::Result<bool> {
    match fs::hard_link(source, target) {
        Ok(()) => return Ok(false),
        // The name is unique, so this is a bug or tampering: never overwrite.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_maildir(maildir)?;
            if fs::hard_link(source, target).is_ok() {
                return Ok(false);
            }
        }
        // EXDEV (another file system), EPERM/ENOTSUP (no hard links): copy instead.
        Err(_) => {}
    }
    copy_into(source, id, maildir, target, fsync).map(|()| true)
}

/// Copies `source` into `maildir/tmp/`, fsyncs it, then renames it to `target`, so that `new/`
/// only ever holds complete files.
fn copy_into(
    source: &Path,
    id: &str,
    maildir: &Path,
    target: &Path,
    fsync: bool,
) -> io::Result<()> {
    create_maildir(maildir)?;
    let copy_path = maildir.join("tmp").join(id);
    let result = (|| {
        let mut copy = create_new_file(&copy_path)?;
        io::copy(&mut File::open(source)?, &mut copy)?;
        if fsync {
            copy.sync_all()?;
        }
        fs::rename(&copy_path, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&copy_path);
    }
    result
}

impl Drop for MaildirWriter {
    fn drop(&mut self) {
        // Empty after a successful commit; otherwise the message was aborted or failed.
        if !self.tmp_path.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Removes placed copies after a failure. Best effort: the error being returned matters more
/// than a failed cleanup, and the file is complete, so a survivor is a duplicate, not a corrupt
/// message.
fn undo(delivered: &[PathBuf]) {
    for path in delivered {
        let _ = fs::remove_file(path);
    }
}

/// Fails when the server stopped waiting for this message: the last point of no return before
/// it becomes visible in `new/`.
fn check_abandoned(abandoned: &AtomicBool) -> io::Result<()> {
    if abandoned.load(Ordering::Acquire) {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the session stopped waiting for the store",
        ));
    }
    Ok(())
}

fn poisoned() -> io::Error {
    io::Error::other("an earlier write to this message failed")
}

/// Accepts messages without storing them, counting messages and bytes.
///
/// Cloning is cheap and clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct SinkStore {
    counters: Arc<SinkCounters>,
}

#[derive(Debug, Default)]
struct SinkCounters {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl SinkStore {
    /// A sink with zeroed counters.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a message; `prepend` counts towards its size.
    #[must_use]
    pub fn begin(&self, prepend: &[u8]) -> MessageWriter {
        MessageWriter {
            inner: WriterKind::Sink(SinkWriter {
                counters: Arc::clone(&self.counters),
                id: COUNTER.fetch_add(1, Ordering::Relaxed),
                size: prepend.len() as u64,
            }),
            committer: None,
        }
    }

    /// Messages committed so far.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.counters.messages.load(Ordering::Relaxed)
    }

    /// Bytes in committed messages so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct SinkWriter {
    counters: Arc<SinkCounters>,
    id: u64,
    size: u64,
}

impl SinkWriter {
    fn commit(self) -> DeliveryReceipt {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(self.size, Ordering::Relaxed);
        DeliveryReceipt {
            id: format!("sink-{}", self.id),
            size: self.size,
            paths: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(domain: &str, local: &str) -> MailboxPath {
        MailboxPath::new(domain, local).expect("short names encode")
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        match fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.expect("readable entry").path()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", dir.display()),
        }
    }

    fn store(root: &Path) -> MaildirStore {
        MaildirStore::new(root).with_hostname("mx.test")
    }

    #[test]
    fn committed_message_is_in_each_new_dir_once_with_exact_bytes() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let recipients = [
            mailbox("a.test", "alice"),
            mailbox("b.test", "bob"),
            mailbox("a.test", "alice"),
        ];
        let mut writer = store.begin(b"Received: test\r\n", &recipients).unwrap();
        let mut expected = b"Received: test\r\n".to_vec();
        // More than the write buffer, in uneven chunks, so several buffer flushes happen.
        for i in 0..300_u32 {
            let chunk = format!("line {i:05} {}\r\n", "x".repeat((i % 7) as usize * 100));
            writer.write_chunk(chunk.as_bytes()).unwrap();
            expected.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(writer.size(), expected.len() as u64);
        let receipt = writer.commit().unwrap();
        assert_eq!(receipt.size, expected.len() as u64);
        assert_eq!(receipt.paths.len(), 2, "duplicate recipients get one copy");

        for (recipient, path) in [mailbox("a.test", "alice"), mailbox("b.test", "bob")]
            .iter()
            .zip(&receipt.paths)
        {
            let maildir = store.maildir(recipient);
            let new = files_in(&maildir.join("new"));
            assert_eq!(new, std::slice::from_ref(path));
            assert_eq!(fs::read(path).unwrap(), expected);
            assert!(files_in(&maildir.join("tmp")).is_empty());
            assert!(maildir.join("cur").is_dir());
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(name, format!("{},S={}", receipt.id, expected.len()));
            assert!(receipt.id.ends_with(".mx.test"), "{}", receipt.id);
        }
    }

    #[cfg(unix)]
    #[test]
    fn copies_are_hard_links_and_maildirs_are_private() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let mut writer = store
            .begin(b"", &[mailbox("a.test", "one"), mailbox("a.test", "two")])
            .unwrap();
        writer.write_chunk(b"body\r\n").unwrap();
        let receipt = writer.commit().unwrap();
        let first = fs::metadata(&receipt.paths[0]).unwrap();
        let second = fs::metadata(&receipt.paths[1]).unwrap();
        assert_eq!(first.ino(), second.ino());
        assert_eq!(
            first.nlink(),
            2,
            "the tmp name is gone, two new/ names remain"
        );
        assert_eq!(first.permissions().mode() & 0o777, 0o600);
        let maildir = store.maildir(&mailbox("a.test", "one"));
        for dir in [
            maildir.join("new"),
            maildir.clone(),
            maildir.parent().unwrap().to_owned(),
        ] {
            assert_eq!(
                fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700,
                "{}",
                dir.display()
            );
        }
    }

    #[test]
    fn abort_and_drop_leave_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let alice = mailbox("a.test", "alice");
        let maildir = store.maildir(&alice);

        let mut writer = store
            .begin(b"X: 1\r\n", std::slice::from_ref(&alice))
            .unwrap();
        writer.write_chunk(&[b'x'; 100_000]).unwrap();
        assert_eq!(
            files_in(&maildir.join("tmp")).len(),
            1,
            "the message is being written in tmp/"
        );
        writer.abort();
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("new")).is_empty());

        let mut writer = store
            .begin(b"X: 1\r\n", std::slice::from_ref(&alice))
            .unwrap();
        writer.write_chunk(b"partial").unwrap();
        drop(writer);
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("new")).is_empty());
    }

    #[test]
    fn failure_for_one_recipient_removes_every_delivered_copy() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let good = mailbox("a.test", "good");
        let bad = mailbox("a.test", "bad");
        // A regular file where the second Maildir should be: neither link nor copy can work.
        fs::create_dir_all(store.maildir(&bad).parent().unwrap()).unwrap();
        fs::write(store.maildir(&bad), b"not a directory").unwrap();

        let mut writer = store.begin(b"", &[good.clone(), bad]).unwrap();
        writer.write_chunk(b"body\r\n").unwrap();
        assert!(writer.commit().is_err());
        let maildir = store.maildir(&good);
        assert!(
            files_in(&maildir.join("new")).is_empty(),
            "the first copy was rolled back"
        );
        assert!(files_in(&maildir.join("tmp")).is_empty());
    }

    #[test]
    fn begin_needs_a_recipient_and_reports_unwritable_roots() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let err = store.begin(b"", &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let file_root = root.path().join("file");
        fs::write(&file_root, b"").unwrap();
        let err = MaildirStore::new(&file_root)
            .begin(b"", &[mailbox("a.test", "x")])
            .unwrap_err();
        // The operator learns which path failed.
        assert!(
            err.to_string().contains(&*file_root.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn stale_tmp_files_are_cleaned_and_fresh_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let mut writer = store.begin(b"X: y\r\n", &[mailbox("a.test", "x")]).unwrap();
        writer.write_chunk(b"in progress").unwrap();
        let tmp = root.path().join("a.test/x/tmp");
        let stale = tmp.join("1.M1P1Q1.old");
        fs::write(&stale, b"partial").unwrap();
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(40 * 3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let removed = store
            .clean_tmp(std::time::Duration::from_secs(36 * 3600))
            .unwrap();
        assert_eq!(removed, 1);
        assert!(!stale.exists());
        // The delivery in progress is untouched and still commits.
        assert_eq!(files_in(&tmp).len(), 1);
        let receipt = writer.commit().unwrap();
        assert_eq!(fs::read(&receipt.paths[0]).unwrap(), b"X: y\r\nin progress");
        // A root that does not exist yet has nothing to clean.
        assert_eq!(
            MaildirStore::new(root.path().join("none"))
                .clean_tmp(std::time::Duration::ZERO)
                .unwrap(),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_delivers_each_message_once_whole() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path()).with_group_commit().unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let recipients = vec![
                    mailbox("a.test", "x"),
                    mailbox("b.test", &format!("y{}", i % 3)),
                ];
                let content = format!("X-N: {i}\r\n\r\nbody {i}\r\n").into_bytes();
                let abandoned = Arc::new(AtomicBool::new(false));
                let receipt = if i % 2 == 0 {
                    store.deliver(content.clone(), recipients, abandoned).await
                } else {
                    // Streamed: written here, committed by the group.
                    let mut w = store.begin(&content[..5], &recipients).unwrap();
                    w.write_chunk(&content[5..]).unwrap();
                    w.commit_grouped(abandoned).await
                }
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
        assert_eq!(files_in(&root.path().join("a.test/x/new")).len(), 200);
        assert!(files_in(&root.path().join("a.test/x/tmp")).is_empty());
        // Abandoned before its content was synced: nothing delivered, nothing left.
        let receipt = store
            .deliver(
                b"X: 1\r\n\r\n".to_vec(),
                vec![mailbox("c.test", "z")],
                Arc::new(AtomicBool::new(true)),
            )
            .await;
        assert_eq!(receipt.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(files_in(&root.path().join("c.test/z/new")).is_empty());
        assert!(files_in(&root.path().join("c.test/z/tmp")).is_empty());
        // Errors reach the caller: a root that is a file.
        let file_root = root.path().join("file");
        fs::write(&file_root, b"").unwrap();
        let bad = MaildirStore::new(&file_root).with_group_commit().unwrap();
        assert!(
            bad.deliver(b"x".to_vec(), vec![mailbox("a.test", "x")], Arc::default())
                .await
                .is_err()
        );
    }

    #[test]
    fn an_abandoned_commit_delivers_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let writer = store.begin(b"X: y\r\n", &[mailbox("a.test", "x")]).unwrap();
        let err = writer.commit_unless(&AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(files_in(&root.path().join("a.test/x/new")).is_empty());
        assert!(files_in(&root.path().join("a.test/x/tmp")).is_empty());
    }

    #[test]
    fn copy_fallback_produces_the_same_result_as_a_link() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path()).with_fsync(false);
        let mut writer = store.begin(b"H: v\r\n", &[mailbox("a.test", "x")]).unwrap();
        writer.write_chunk(b"body\r\n").unwrap();
        let WriterKind::Maildir(inner) = &mut writer.inner else {
            panic!("maildir writer expected");
        };
        inner.file.as_mut().unwrap().flush().unwrap();
        // Exercise the path taken when hard links fail (EXDEV) directly.
        let other = store.maildir(&mailbox("b.test", "y"));
        let target = other.join("new").join("copied,S=12");
        inner.copy_into(&other, &target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"H: v\r\nbody\r\n");
        assert!(files_in(&other.join("tmp")).is_empty());
        writer.abort();
    }

    /// Delivery across file systems: one domain directory is a symlink into a tmpfs, when the
    /// machine has one on another device, so `link(2)` fails with EXDEV and the copy is used.
    #[cfg(target_os = "linux")]
    #[test]
    fn delivery_across_file_systems() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let shm = Path::new("/dev/shm");
        let other_fs = if shm.is_dir() {
            tempfile::tempdir_in(shm).ok()
        } else {
            None
        };
        let other_dir = match &other_fs {
            Some(dir) => dir.path().to_owned(),
            None => root.path().join("elsewhere"),
        };
        fs::create_dir_all(&other_dir).unwrap();
        std::os::unix::fs::symlink(&other_dir, root.path().join("b.test")).unwrap();

        let store = store(root.path());
        let mut writer = store
            .begin(
                b"H: v\r\n",
                &[mailbox("a.test", "x"), mailbox("b.test", "y")],
            )
            .unwrap();
        writer.write_chunk(b"body\r\n").unwrap();
        let receipt = writer.commit().unwrap();
        for path in &receipt.paths {
            assert_eq!(fs::read(path).unwrap(), b"H: v\r\nbody\r\n");
        }
        let (first, second) = (
            fs::metadata(&receipt.paths[0]).unwrap(),
            fs::metadata(&receipt.paths[1]).unwrap(),
        );
        if first.dev() != second.dev() {
            assert_ne!(first.ino(), second.ino(), "a copy, not a link");
            assert_eq!(second.nlink(), 1);
        }
        assert!(files_in(&other_dir.join("y").join("tmp")).is_empty());
        assert!(files_in(&store.maildir(&mailbox("a.test", "x")).join("tmp")).is_empty());
    }

    #[test]
    fn unique_names_follow_the_maildir_format() {
        let root = tempfile::tempdir().unwrap();
        let store = MaildirStore::new(root.path()).with_hostname("host/with:odd,chars");
        let a = store.unique_name();
        let b = store.unique_name();
        assert_ne!(a, b);
        let (time, rest) = a.split_once('.').unwrap();
        assert!(time.bytes().all(|c| c.is_ascii_digit()), "{a}");
        assert!(
            rest.starts_with('M') && rest.contains('P') && rest.contains('Q'),
            "{a}"
        );
        assert!(a.ends_with(".host\\057with\\072odd\\054chars"), "{a}");
        assert!(!a.contains('/') && !a.contains(':') && !a.contains(','));
    }

    #[test]
    fn many_messages_do_not_collide() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path()).with_fsync(false);
        let alice = mailbox("a.test", "alice");
        for i in 0..200_u32 {
            let mut writer = store.begin(b"", std::slice::from_ref(&alice)).unwrap();
            writer.write_chunk(i.to_string().as_bytes()).unwrap();
            writer.commit().unwrap();
        }
        assert_eq!(files_in(&store.maildir(&alice).join("new")).len(), 200);
    }

    #[test]
    fn sink_counts_and_stores_nothing() {
        let sink = SinkStore::new();
        let store = Store::Sink(sink.clone());
        for _ in 0..3 {
            let mut writer = store.begin(b"ab", &[]).unwrap();
            writer.write_chunk(b"cde").unwrap();
            let receipt = writer.commit().unwrap();
            assert_eq!(receipt.size, 5);
            assert!(receipt.paths.is_empty());
        }
        let aborted = store.begin(b"zz", &[]).unwrap();
        aborted.abort();
        assert_eq!((sink.messages(), sink.bytes()), (3, 15));
    }

    #[test]
    fn store_from_config_picks_the_backend() {
        let mut storage = config::Storage::default();
        assert!(matches!(
            Store::from_config(&storage, "h"),
            Store::Maildir(_)
        ));
        storage.sink = true;
        assert!(matches!(Store::from_config(&storage, "h"), Store::Sink(_)));
    }
}
