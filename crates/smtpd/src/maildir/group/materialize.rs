//! The materializers: journaled messages written into their Maildirs and answered.
//!
//! Each message is written into an anonymous file (`O_TMPFILE`) of its first recipient's
//! `tmp/` and linked straight into `new/`: no name is made in `tmp/` and none removed, so a
//! message costs one `openat`, one `write`, one `linkat` per recipient and one `close`. Where the file system has no anonymous files, the named `tmp/` file of the
//! per-file path is used instead. No sync here: the journal holds the message until the
//! checkpoint has synced the file systems of its `new/` directories.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use tracing::error;

use super::super::{
    DeliveryReceipt, MaildirStore, at, check_abandoned, create_maildir, create_new_file, place,
    undo,
};
use super::checkpoint::ToCheckpoint;
use super::{Journaled, Share};

/// Set once anonymous files failed in a way that will not change (no `O_TMPFILE` support, no
/// `/proc` to link them through): the named path from then on, without trying each time.
static NO_ANONYMOUS: AtomicBool = AtomicBool::new(false);

/// A materializer thread: shares of journaled messages until the journal thread is gone.
pub(super) fn run(
    store: &MaildirStore,
    shares: &Mutex<mpsc::Receiver<Share>>,
    to_checkpoint: &mpsc::SyncSender<ToCheckpoint>,
) {
    loop {
        // The lock is held while waiting: one thread waits for the queue, the others for it.
        let next = shares.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(share) = next else {
            return;
        };
        settle(store, share, to_checkpoint);
    }
}

/// Places or refuses each message of `share`, answers it, and tells the checkpoint.
pub(super) fn settle(
    store: &MaildirStore,
    share: Share,
    to_checkpoint: &mpsc::SyncSender<ToCheckpoint>,
) {
    let root = &store.inner.root;
    let fsync = store.inner.fsync;
    let Share {
        generation,
        messages,
    } = share;
    {
        let records = messages.len();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for j in messages {
            match place_one(root, &j, fsync) {
                Ok(paths) => {
                    for dir in paths.iter().filter_map(|p| p.parent()) {
                        if !dirs.iter().any(|d| d == dir) {
                            dirs.push(dir.to_owned());
                        }
                    }
                    let _ = j.done.send(Ok(DeliveryReceipt {
                        id: j.id,
                        size: j.content.len() as u64,
                        paths,
                    }));
                }
                Err(e) => refuse(j, e),
            }
        }
        if let Some(generation) = generation {
            // The checkpoint is gone only when the store is; the segment then stays for
            // recovery.
            let _ = to_checkpoint.send(ToCheckpoint::Settled {
                generation,
                records,
                dirs,
            });
        }
    }
}

/// Places `j` unless its client gave up on it.
fn place_one(root: &Path, j: &Journaled, fsync: bool) -> io::Result<Vec<PathBuf>> {
    check_abandoned(&j.abandoned)?;
    place_all(root, &j.id, &j.maildirs, &j.content, fsync)
}

/// Answers a message that could not be placed, after refusing its record: once the client has
/// its 4xx and retries, a recovery that delivered this record would make a duplicate.
fn refuse(j: Journaled, e: io::Error) {
    if let Some(mark) = &j.mark
        && let Err(m) = mark.refuse()
    {
        // The journal's disk is failing as well; nothing better is left than saying so.
        error!(id = j.id.as_str(), error = %m, "maildir journal record not refused; a crash now would deliver it");
    }
    let _ = j.done.send(Err(e));
}

/// Writes `content` as `id` into the first Maildir, links it into each Maildir's `new/` and
/// returns the `new/` paths; on error nothing is left.
pub(super) fn place_all(
    root: &Path,
    id: &str,
    maildirs: &[PathBuf],
    content: &[u8],
    fsync: bool,
) -> io::Result<Vec<PathBuf>> {
    let Some(first) = maildirs.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message needs at least one recipient",
        ));
    };
    let first = root.join(first);
    let name = format!("{id},S={}", content.len());
    let source = first.join("new").join(&name);
    match anonymous(&first, content, &source)? {
        Some(()) => {}
        None => named(&first, &first.join("tmp").join(id), content, &source)?,
    }
    let mut delivered = Vec::with_capacity(maildirs.len());
    delivered.push(source.clone());
    let result = maildirs[1..].iter().try_for_each(|maildir| {
        let maildir = root.join(maildir);
        let target = maildir.join("new").join(&name);
        place(&source, id, &maildir, &target, fsync).map_err(|e| at(&target, e))?;
        delivered.push(target);
        Ok(())
    });
    match result {
        Ok(()) => Ok(delivered),
        Err(e) => {
            undo(&delivered);
            Err(e)
        }
    }
}

/// Writes `content` into a new named file `tmp` of `maildir`, creating the Maildir if needed,
/// and renames it to `target` (never over an existing file).
fn named(maildir: &Path, tmp: &Path, content: &[u8], target: &Path) -> io::Result<()> {
    let mut file = match create_new_file(tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_maildir(maildir)?;
            create_new_file(tmp)
        }
        other => other,
    }
    .map_err(|e| at(tmp, e))?;
    let placed = file
        .write_all(content)
        .map_err(|e| at(tmp, e))
        .and_then(|()| {
            use rustix::fs::{CWD, RenameFlags};
            match rustix::fs::renameat_with(CWD, tmp, CWD, target, RenameFlags::NOREPLACE) {
                Ok(()) => Ok(()),
                // No RENAME_NOREPLACE on this file system: a link refuses a taken name too.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    std::fs::hard_link(tmp, target).map_err(|e| at(target, e))?;
                    let _ = std::fs::remove_file(tmp);
                    Ok(())
                }
                Err(e) => Err(at(target, e.into())),
            }
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    placed
}

/// Writes `content` into an anonymous file in `maildir/tmp/` and links it as `target`.
/// `None` when this system cannot (the caller takes the named path).
fn anonymous(maildir: &Path, content: &[u8], target: &Path) -> io::Result<Option<()>> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    use rustix::io::Errno;
    if NO_ANONYMOUS.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let tmp = maildir.join("tmp");
    let open = || {
        rustix::fs::openat(
            CWD,
            &tmp,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            create_maildir(maildir)?;
            open().map_err(|e| at(&tmp, e.into()))?
        }
        // No O_TMPFILE here (EOPNOTSUPP from the file system, EISDIR or EINVAL from an older
        // kernel).
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
            NO_ANONYMOUS.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Err(e) => return Err(at(&tmp, e.into())),
    };
    let mut file = File::from(fd);
    file.write_all(content).map_err(|e| at(&tmp, e))?;
    // Through /proc: linkat(AT_EMPTY_PATH) on a descriptor needs CAP_DAC_READ_SEARCH.
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let link = || rustix::fs::linkat(CWD, &proc_path, CWD, target, AtFlags::SYMLINK_FOLLOW);
    match link() {
        Ok(()) => {}
        Err(Errno::NOENT) if !Path::new("/proc/self/fd").is_dir() => {
            NO_ANONYMOUS.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Err(Errno::NOENT) => {
            // `new/` was removed under us.
            create_maildir(maildir)?;
            link().map_err(|e| at(target, e.into()))?;
        }
        Err(e) => return Err(at(target, e.into())),
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn placed_messages_are_whole_in_each_new_and_nothing_is_left_in_tmp() {
        let root = tempfile::tempdir().unwrap();
        let maildirs = [PathBuf::from("a.test/x"), PathBuf::from("b.test/y")];
        let paths = place_all(
            root.path(),
            "1.M1P1Q1.h",
            &maildirs,
            b"H: v\r\n\r\nb\r\n",
            true,
        )
        .unwrap();
        assert_eq!(paths.len(), 2);
        for (path, maildir) in paths.iter().zip(&maildirs) {
            assert_eq!(path, &root.path().join(maildir).join("new/1.M1P1Q1.h,S=11"));
            assert_eq!(fs::read(path).unwrap(), b"H: v\r\n\r\nb\r\n");
            assert_eq!(
                fs::read_dir(root.path().join(maildir).join("tmp"))
                    .unwrap()
                    .count(),
                0
            );
        }
        // A name already taken is never overwritten, and nothing of the message stays.
        let err = place_all(
            root.path(),
            "1.M1P1Q1.h",
            &maildirs[1..],
            b"H: v\r\n\r\nb\r\n",
            true,
        );
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&paths[1]).unwrap(), b"H: v\r\n\r\nb\r\n");
        assert_eq!(
            fs::read_dir(root.path().join("b.test/y/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
