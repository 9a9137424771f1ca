//! The write-ahead journal of the group committer: whole messages (content, recipients' Maildirs,
//! unique name) appended to a preallocated segment file with one write and one `fdatasync` per
//! cycle, and the recovery that finishes at startup what a crash left.
//!
//! # Segments
//!
//! A segment is a file of [`SEGMENT_BYTES`] under `<root>/.journal/` (a leading `.` is never an
//! encoded domain), allocated (`fallocate`: a file system without room says so at once) and
//! filled with zeros once when it is created, and reused ever after, so that an
//! `fdatasync` of a write into it writes data and nothing else: no block allocation, no size
//! change, no file-system journal commit that would wait for other files' dirty pages. Its first
//! [`HEADER_BYTES`] hold a header (magic, state, generation, CRC-32); records follow:
//!
//! ```text
//! "SJR" | state u8 | payload length u32 | generation u64 | CRC-32 u32 | payload
//! payload = id length u16 | id | Maildir count u16 | (length u16 | Maildir)... | content
//! ```
//!
//! all little-endian, the CRC over everything after the magic and state but itself. A Maildir is
//! the recipient's Maildir relative to the root. The state is `1` when written and `0` once the
//! message was *refused* after it was journaled (its materialization failed, or its client gave
//! up on it): that one octet is rewritten and synced before the refusal is answered, so that
//! recovery never delivers a message its client was told to retry (one octet cannot tear, and
//! the CRC does not cover it). Each use of a segment gets a new generation, higher than any
//! before it in the process and than any a recovered segment's header names, written in its header with its first records; a segment
//! is *retired* (header rewritten and synced) once every message in it is durable in its
//! Maildirs. A scan reads records until the first one that is torn, damaged or of an older
//! generation: the end of what this generation wrote.
//!
//! A process holds an exclusive `flock` on each of its segment files for as long as it uses
//! them: recovery (of this process or another one started on the same root) skips locked
//! segments, which belong to a live committer.
//!
//! # Recovery
//!
//! [`recover`] reads every unlocked segment whose header says active and, for each intact record,
//! makes sure each recipient's Maildir holds the message whole exactly once: a file of the right
//! size under `new/<id>,S=<size>` or `cur/<id>,S=<size>:...` (a reader may have moved it) counts
//! as done; a file of the wrong size (a power loss before the checkpoint synced its data) is
//! replaced; a missing one is written, synced and linked (`EEXIST` = done). Then the touched
//! directories are synced, the materializer's leftover `tmp/<id>` files removed and the segments
//! retired and handed to the new committer for reuse.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{at, create_maildir, create_new_file, pid, sync_dir};

/// The journal directory under the root.
pub(super) const DIR: &str = ".journal";

/// Size of a segment. A cycle writes at most [`CYCLE_BYTES`] plus one record, so a segment
/// takes at least one cycle; at 1 KiB messages it holds about 3,000.
pub(super) const SEGMENT_BYTES: u64 = 4 << 20;

/// Bytes of records a cycle collects before it writes (it may exceed this by one record).
pub(super) const CYCLE_BYTES: usize = 1 << 20;

/// The largest content journaled; bigger messages are written to their own file and synced
/// there (writing them twice would cost more than the sync it saves).
pub(super) const RECORD_MAX: usize = 1 << 20;

/// The header's room at the start of a segment: one page, so a header write never shares a page
/// with records.
const HEADER_BYTES: u64 = 4096;

const SEGMENT_MAGIC: [u8; 4] = *b"SJS1";
const RECORD_MAGIC: [u8; 3] = *b"SJR";
/// The state octet of a record, after its magic.
const LIVE: u8 = b'1';
const REFUSED: u8 = b'0';
const RECORD_HEAD: usize = 20;
const ACTIVE: u8 = 1;
const RETIRED: u8 = 2;

/// Generations handed out in this process: each use of a segment gets a higher one.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A segment file, locked by this process.
#[derive(Debug)]
pub(super) struct Segment {
    /// Shared with the [`RecordMark`]s of its records.
    file: Arc<File>,
    path: Arc<Path>,
    generation: u64,
    /// Where the next record goes; 0 until the first write of a generation (which writes the
    /// header too).
    end: u64,
}

impl Segment {
    /// Creates a zero-filled segment in `dir` (created if needed), durable with its name.
    pub(super) fn create(dir: &Path) -> io::Result<Self> {
        create_private_dir(dir)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = dir.join(format!(
            "segment.{nanos}P{}Q{}",
            pid(),
            super::COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = create_new_file(&path).map_err(|e| at(&path, e))?;
        let made = (|| {
            lock(&file)?;
            // Room first: on a full or small file system this fails at once (ENOSPC, EFBIG,
            // EDQUOT) instead of after writing megabytes. The zeros still follow, so that a
            // later write overwrites written blocks, not unwritten extents.
            match rustix::fs::fallocate(
                &file,
                rustix::fs::FallocateFlags::empty(),
                0,
                SEGMENT_BYTES,
            ) {
                Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
            let zeros = vec![0; 1 << 20];
            let mut written = 0;
            while written < SEGMENT_BYTES {
                file.write_all_at(&zeros, written)?;
                written += zeros.len() as u64;
            }
            file.sync_all()?;
            sync_dir(dir)
        })();
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(at(&path, e));
        }
        Ok(Self {
            file: Arc::new(file),
            path: path.into(),
            generation: 0,
            end: 0,
        })
    }

    /// Opens a segment another process left; `None` when a live process holds it.
    fn open_unlocked(path: &Path) -> io::Result<Option<Self>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        match lock(&file) {
            Ok(()) => Ok(Some(Self {
                file: Arc::new(file),
                path: path.into(),
                generation: 0,
                end: 0,
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts a new generation: the next [`append`](Self::append) writes from the start.
    pub(super) fn activate(&mut self) {
        self.generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        self.end = 0;
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `len` more bytes of records fit.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.end.max(HEADER_BYTES) + len as u64 <= SEGMENT_BYTES
    }

    /// Writes `records` (encoded for this generation) after the last ones; not yet durable.
    /// Returns the offset they start at (see [`mark`](Self::mark)).
    pub(super) fn append(&mut self, records: &[u8]) -> io::Result<u64> {
        if self.end == 0 {
            self.file
                .write_all_at(&header(ACTIVE, self.generation), 0)
                .map_err(|e| at(&self.path, e))?;
            self.end = HEADER_BYTES;
        }
        let start = self.end;
        // Past a failed write the end is unknown: the segment takes no more records.
        self.end = SEGMENT_BYTES;
        self.file
            .write_all_at(records, start)
            .map_err(|e| at(&self.path, e))?;
        self.end = start + records.len() as u64;
        Ok(start)
    }

    /// The handle that refuses the record written at `offset` by [`append`](Self::append).
    pub(super) fn mark(&self, offset: u64) -> RecordMark {
        RecordMark {
            file: Arc::clone(&self.file),
            path: Arc::clone(&self.path),
            offset,
        }
    }

    /// Makes what was appended durable: data only, the file's size and blocks never change.
    pub(super) fn sync(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&*self.file).map_err(|e| at(&self.path, e.into()))
    }

    /// Every message of this generation is durable in its Maildirs: marks the segment so that
    /// recovery ignores its records, and syncs the mark.
    pub(super) fn retire(&mut self) -> io::Result<()> {
        self.file
            .write_all_at(&header(RETIRED, self.generation), 0)
            .and_then(|()| self.sync())
            .map_err(|e| at(&self.path, e))?;
        self.end = 0;
        Ok(())
    }

    /// Removes a retired segment (a clean shutdown, or more spares than needed).
    pub(super) fn delete(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// One journaled record, for refusing it: any thread may, while its segment is not retired
/// (a segment retires only after each of its records was materialized or refused).
#[derive(Debug)]
pub(super) struct RecordMark {
    file: Arc<File>,
    path: Arc<Path>,
    offset: u64,
}

impl RecordMark {
    /// Rewrites the record's state octet as refused and syncs it: from now on no recovery
    /// delivers it. Call it before the refusal is answered.
    pub(super) fn refuse(&self) -> io::Result<()> {
        self.file
            .write_all_at(&[REFUSED], self.offset + RECORD_MAGIC.len() as u64)
            .and_then(|()| rustix::fs::fdatasync(&*self.file).map_err(io::Error::from))
            .map_err(|e| at(&self.path, e))
    }
}

fn lock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

fn header(state: u8, generation: u64) -> [u8; 20] {
    let mut h = [0; 20];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4] = state;
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The state and generation a header says; `None` for a damaged or never written one.
fn read_header(bytes: &[u8]) -> Option<(u8, u64)> {
    let h = bytes.get(..20)?;
    if h[..4] != SEGMENT_MAGIC
        || u32::from_le_bytes(h[16..20].try_into().ok()?) != crc32fast::hash(&h[..16])
    {
        return None;
    }
    Some((h[4], u64::from_le_bytes(h[8..16].try_into().ok()?)))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| at(dir, e))
}

/// The bytes [`encode`] appends for a message.
pub(super) fn encoded_len(id: &str, maildirs: &[PathBuf], content: usize) -> usize {
    let paths: usize = maildirs.iter().map(|m| 2 + m.as_os_str().len()).sum();
    RECORD_HEAD + 2 + id.len() + 2 + paths + content
}

/// Appends one record to `out`. `maildirs` are relative to the root.
pub(super) fn encode(
    out: &mut Vec<u8>,
    generation: u64,
    id: &str,
    maildirs: &[PathBuf],
    content: &[u8],
) -> io::Result<()> {
    let too_long = || io::Error::other(format!("message {id} cannot be journaled"));
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(LIVE);
    out.extend_from_slice(&[0; RECORD_HEAD - 4]);
    let field = |out: &mut Vec<u8>, bytes: &[u8]| -> io::Result<()> {
        let len = u16::try_from(bytes.len()).map_err(|_| too_long())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    let encoded = (|| {
        field(out, id.as_bytes())?;
        let count = u16::try_from(maildirs.len()).map_err(|_| too_long())?;
        out.extend_from_slice(&count.to_le_bytes());
        for maildir in maildirs {
            field(out, maildir.as_os_str().as_bytes())?;
        }
        out.extend_from_slice(content);
        u32::try_from(out.len() - start - RECORD_HEAD).map_err(|_| too_long())
    })();
    let len = match encoded {
        Ok(len) => len,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&generation.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 4..start + 16]);
    crc.update(&out[start + RECORD_HEAD..]);
    let crc = crc.finalize();
    out[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One message read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) id: String,
    /// Relative to the root; checked to stay inside it.
    pub(super) maildirs: Vec<PathBuf>,
    pub(super) content: Vec<u8>,
    /// Not refused.
    pub(super) live: bool,
}

/// The intact, live records of a segment's active generation: none when it is retired or was
/// never used, none past the first torn, damaged or stale record, and none refused.
pub(super) fn scan(bytes: &[u8]) -> Vec<Record> {
    let Some((ACTIVE, generation)) = read_header(bytes) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    let mut at = HEADER_BYTES as usize;
    while let Some((record, next)) = decode(bytes, at, generation) {
        if record.live {
            records.push(record);
        }
        at = next;
    }
    records
}

/// The record at `at` and where the next one starts.
fn decode(bytes: &[u8], at: usize, generation: u64) -> Option<(Record, usize)> {
    let head = bytes.get(at..at.checked_add(RECORD_HEAD)?)?;
    if head[..3] != RECORD_MAGIC
        || !matches!(head[3], LIVE | REFUSED)
        || u64::from_le_bytes(head[8..16].try_into().ok()?) != generation
    {
        return None;
    }
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    let end = at.checked_add(RECORD_HEAD)?.checked_add(len)?;
    let payload = bytes.get(at + RECORD_HEAD..end)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[4..16]);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(head[16..20].try_into().ok()?) {
        return None;
    }
    let mut rest = payload;
    let id = std::str::from_utf8(take_field(&mut rest)?).ok()?.to_owned();
    let count = take_u16(&mut rest)?;
    let mut maildirs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        maildirs.push(PathBuf::from(std::ffi::OsStr::from_bytes(take_field(
            &mut rest,
        )?)));
    }
    // A damaged or forged record must not reach outside the root.
    if id.is_empty()
        || id.contains(['/', ':'])
        || maildirs.is_empty()
        || !maildirs.iter().all(|m| inside(m))
    {
        return None;
    }
    Some((
        Record {
            id,
            maildirs,
            content: rest.to_vec(),
            live: head[3] == LIVE,
        },
        end,
    ))
}

fn take_u16(rest: &mut &[u8]) -> Option<u16> {
    let value = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?);
    *rest = &rest[2..];
    Some(value)
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(take_u16(rest)?);
    let value = rest.get(..len)?;
    *rest = &rest[len..];
    Some(value)
}

fn inside(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Recovery {
    /// Segments of earlier processes that were read.
    pub(super) segments: usize,
    /// Intact records in them.
    pub(super) records: usize,
    /// Copies written into a `new/` that did not have them.
    pub(super) replayed: usize,
    /// Copies of the wrong size (data lost before a checkpoint) replaced.
    pub(super) repaired: usize,
    /// Copies found whole in `new/` or `cur/`.
    pub(super) present: usize,
}

/// Finishes what crashed committers left under `root` (see the module documentation) and
/// returns the segments, retired, for reuse.
pub(super) fn recover(root: &Path, fsync: bool) -> io::Result<(Recovery, Vec<Segment>)> {
    let dir = root.join(DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(at(&dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| at(&dir, e))?.path();
        if let Some(segment) = Segment::open_unlocked(&path).map_err(|e| at(&path, e))? {
            segments.push(segment);
        }
    }
    let mut recovery = Recovery::default();
    let mut replay = Replay {
        root,
        fsync,
        cur: HashMap::new(),
        dirs: HashSet::new(),
        leftovers: Vec::new(),
    };
    for segment in &segments {
        let bytes = fs::read(&segment.path).map_err(|e| at(&segment.path, e))?;
        // A reused segment's old records must never pass for a later generation's.
        if let Some((_, generation)) = read_header(&bytes) {
            GENERATION.fetch_max(generation.saturating_add(1), Ordering::Relaxed);
        }
        recovery.segments += 1;
        for record in scan(&bytes) {
            recovery.records += 1;
            replay.record(&record, &mut recovery)?;
        }
    }
    if fsync {
        for dir in &replay.dirs {
            sync_dir(dir)?;
        }
    }
    for leftover in &replay.leftovers {
        let _ = fs::remove_file(leftover);
    }
    for segment in &mut segments {
        segment.retire()?;
    }
    Ok((recovery, segments))
}

struct Replay<'a> {
    root: &'a Path,
    fsync: bool,
    /// Per Maildir, the names in `cur/` without their `:2,` flags.
    cur: HashMap<PathBuf, HashSet<String>>,
    /// Directories whose entries changed.
    dirs: HashSet<PathBuf>,
    /// `tmp/` files the materializer may have left.
    leftovers: Vec<PathBuf>,
}

impl Replay<'_> {
    fn record(&mut self, record: &Record, recovery: &mut Recovery) -> io::Result<()> {
        let name = format!("{},S={}", record.id, record.content.len());
        self.leftovers.push(
            self.root
                .join(&record.maildirs[0])
                .join("tmp")
                .join(&record.id),
        );
        for maildir in &record.maildirs {
            let maildir = self.root.join(maildir);
            let target = maildir.join("new").join(&name);
            match fs::symlink_metadata(&target) {
                Ok(meta) if meta.len() == record.content.len() as u64 => {
                    recovery.present += 1;
                    continue;
                }
                Ok(_) => {
                    self.write(&maildir, &record.id, &record.content, &target, true)?;
                    recovery.repaired += 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&target, e)),
            }
            if let Some(moved) = self.in_cur(&maildir, &name) {
                match fs::symlink_metadata(&moved) {
                    Ok(meta) if meta.len() == record.content.len() as u64 => {
                        recovery.present += 1;
                    }
                    _ => {
                        self.write(&maildir, &record.id, &record.content, &moved, true)?;
                        recovery.repaired += 1;
                    }
                }
                continue;
            }
            self.write(&maildir, &record.id, &record.content, &target, false)?;
            recovery.replayed += 1;
        }
        Ok(())
    }

    /// The file in `cur/` a reader made of `name`, if any.
    fn in_cur(&mut self, maildir: &Path, name: &str) -> Option<PathBuf> {
        let cur = maildir.join("cur");
        let names = self.cur.entry(maildir.to_owned()).or_insert_with(|| {
            fs::read_dir(&cur)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        });
        let prefix = format!("{name}:");
        names
            .iter()
            .find(|n| *n == name || n.starts_with(&prefix))
            .map(|n| cur.join(n))
    }

    /// Writes `content` whole and durable into `maildir/tmp/`, then links it as `target`, or
    /// renames it over `target` when `replace`.
    fn write(
        &mut self,
        maildir: &Path,
        id: &str,
        content: &[u8],
        target: &Path,
        replace: bool,
    ) -> io::Result<()> {
        create_maildir(maildir)?;
        let tmp = maildir.join("tmp").join(format!("{id}.recovered"));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut file = create_new_file(&tmp)?;
            file.write_all(content)?;
            if self.fsync {
                file.sync_all()?;
            }
            if replace {
                fs::rename(&tmp, target)
            } else {
                match fs::hard_link(&tmp, target) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                    _ => Ok(()),
                }
            }
        })();
        let _ = fs::remove_file(&tmp);
        result.map_err(|e| at(target, e))?;
        if let Some(dir) = target.parent() {
            self.dirs.insert(dir.to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn maildirs(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    /// A segment as a crashed process leaves it: records of one generation written, the lock
    /// released (the process is gone).
    fn crashed(root: &Path, records: &[(&str, &[&str], &[u8])], torn_tail: bool) -> PathBuf {
        let mut segment = Segment::create(&root.join(DIR)).unwrap();
        segment.activate();
        let mut buf = Vec::new();
        for (id, to, content) in records {
            encode(&mut buf, segment.generation(), id, &maildirs(to), content).unwrap();
        }
        if torn_tail {
            let whole = buf.len();
            let to = maildirs(&["a.test/x"]);
            encode(&mut buf, segment.generation(), "9.M9P9Q9.mx", &to, b"torn").unwrap();
            buf.truncate(buf.len() - (buf.len() - whole) / 2);
        }
        segment.append(&buf).unwrap();
        segment.sync().unwrap();
        segment.path.to_path_buf()
    }

    #[test]
    fn records_round_trip_and_damage_ends_the_scan() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            7,
            "1.M1P1Q1.mx",
            &maildirs(&["a.test/x", "b.test/y/.Junk"]),
            b"one\r\n",
        )
        .unwrap();
        let first = buf.len();
        encode(
            &mut buf,
            7,
            "1.M1P1Q2.mx",
            &maildirs(&["a.test/x"]),
            b"two\r\n",
        )
        .unwrap();
        let (record, next) = decode(&buf, 0, 7).unwrap();
        assert_eq!(next, first);
        assert_eq!(record.id, "1.M1P1Q1.mx");
        assert_eq!(record.maildirs, maildirs(&["a.test/x", "b.test/y/.Junk"]));
        assert_eq!(record.content, b"one\r\n");
        assert_eq!(decode(&buf, first, 7).unwrap().0.content, b"two\r\n");
        // Another generation (a reused segment's old records) is not this one's.
        assert_eq!(decode(&buf, 0, 8), None);
        // Torn anywhere, or any byte changed: refused.
        for cut in 0..first {
            assert_eq!(decode(&buf[..cut], 0, 7), None, "cut at {cut}");
        }
        for i in 0..first {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x20;
            assert_eq!(decode(&damaged, 0, 7), None, "byte {i}");
        }
        // Paths that leave the root are refused even with a correct checksum.
        for bad in ["/etc/x", "../x", "a/../../x"] {
            let mut forged = Vec::new();
            encode(&mut forged, 7, "1.M1P1Q3.mx", &maildirs(&[bad]), b"x").unwrap();
            assert_eq!(decode(&forged, 0, 7), None, "{bad}");
        }
    }

    /// Each crash point at once: acknowledged but not materialized (one mailbox does not exist
    /// yet), linked into one of two mailboxes, moved to `cur/` by a reader, a copy whose data a
    /// power loss cut short, and a torn last record (never acknowledged).
    #[test]
    fn recovery_finishes_each_crash_point() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        crashed(
            root,
            &[
                (
                    "1.M1P9Q1.mx",
                    &["a.test/x", "b.test/y"],
                    b"unmaterialized\r\n",
                ),
                (
                    "1.M1P9Q2.mx",
                    &["a.test/x", "b.test/y"],
                    b"partly linked\r\n",
                ),
                ("1.M1P9Q3.mx", &["a.test/x"], b"read already\r\n"),
                ("1.M1P9Q4.mx", &["a.test/x"], b"data lost\r\n"),
            ],
            true,
        );
        let x = root.join("a.test/x");
        create_maildir(&x).unwrap();
        fs::write(x.join("new/1.M1P9Q2.mx,S=15"), b"partly linked\r\n").unwrap();
        fs::write(x.join("cur/1.M1P9Q3.mx,S=14:2,S"), b"read already\r\n").unwrap();
        fs::write(x.join("new/1.M1P9Q4.mx,S=11"), b"").unwrap();
        // The materializer's file of the first message, cut short in tmp/.
        fs::write(x.join("tmp/1.M1P9Q1.mx"), b"unmat").unwrap();

        let (recovery, segments) = recover(root, true).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                segments: 1,
                records: 4,
                replayed: 3,
                repaired: 1,
                present: 2,
            }
        );
        assert_eq!(
            files_in(&x.join("new")),
            ["1.M1P9Q1.mx,S=16", "1.M1P9Q2.mx,S=15", "1.M1P9Q4.mx,S=11"]
        );
        assert_eq!(
            files_in(&root.join("b.test/y/new")),
            ["1.M1P9Q1.mx,S=16", "1.M1P9Q2.mx,S=15"]
        );
        assert_eq!(
            fs::read(x.join("new/1.M1P9Q1.mx,S=16")).unwrap(),
            b"unmaterialized\r\n"
        );
        assert_eq!(
            fs::read(x.join("new/1.M1P9Q4.mx,S=11")).unwrap(),
            b"data lost\r\n"
        );
        assert_eq!(files_in(&x.join("cur")), ["1.M1P9Q3.mx,S=14:2,S"]);
        assert!(files_in(&x.join("tmp")).is_empty());
        assert!(files_in(&root.join("b.test/y/tmp")).is_empty());

        // The segments are retired and ours now: a second recovery finds nothing to do, and
        // one that runs while we hold them does not even read them.
        assert_eq!(segments.len(), 1);
        assert_eq!(recover(root, true).unwrap().0.segments, 0);
        drop(segments);
        let (again, _) = recover(root, true).unwrap();
        assert_eq!((again.segments, again.records), (1, 0));
    }

    /// A record refused after it was synced (its materialization failed and its client got a
    /// 4xx) is never delivered by recovery, and the records after it still are.
    #[test]
    fn a_refused_record_is_not_recovered() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut segment = Segment::create(&root.join(DIR)).unwrap();
        segment.activate();
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for (i, content) in [&b"kept\r\n"[..], b"refused\r\n", b"after\r\n"]
            .iter()
            .enumerate()
        {
            offsets.push(buf.len() as u64);
            let id = format!("1.M1P9Q{i}.mx");
            encode(
                &mut buf,
                segment.generation(),
                &id,
                &maildirs(&["a.test/x"]),
                content,
            )
            .unwrap();
        }
        let start = segment.append(&buf).unwrap();
        segment.sync().unwrap();
        segment.mark(start + offsets[1]).refuse().unwrap();
        // The crash: the process is gone, its lock with it.
        drop(segment);
        let (recovery, _) = recover(root, true).unwrap();
        assert_eq!((recovery.records, recovery.replayed), (2, 2));
        assert_eq!(
            files_in(&root.join("a.test/x/new")),
            ["1.M1P9Q0.mx,S=6", "1.M1P9Q2.mx,S=7"]
        );
    }

    /// A segment reused for a new generation ends where the new generation's records end, even
    /// though the old generation's records follow.
    #[test]
    fn a_reused_segment_replays_only_its_last_generation() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut segment = Segment::create(&root.join(DIR)).unwrap();
        segment.activate();
        let mut buf = Vec::new();
        for i in 0..3 {
            encode(
                &mut buf,
                segment.generation(),
                &format!("1.M1P9Q{i}.mx"),
                &maildirs(&["a.test/x"]),
                b"old generation\r\n",
            )
            .unwrap();
        }
        segment.append(&buf).unwrap();
        segment.retire().unwrap();
        segment.activate();
        let mut buf = Vec::new();
        encode(
            &mut buf,
            segment.generation(),
            "2.M1P9Q9.mx",
            &maildirs(&["a.test/x"]),
            b"new\r\n",
        )
        .unwrap();
        segment.append(&buf).unwrap();
        segment.sync().unwrap();
        drop(segment);
        let (recovery, _) = recover(root, false).unwrap();
        assert_eq!((recovery.records, recovery.replayed), (1, 1));
        assert_eq!(files_in(&root.join("a.test/x/new")), ["2.M1P9Q9.mx,S=5"]);
    }
}
