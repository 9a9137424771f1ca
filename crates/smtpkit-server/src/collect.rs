//! Collecting a message body for an application that wants it whole.
//!
//! The core hands the body out in chunks ([`Session::data_chunk`](crate::Session::data_chunk)),
//! borrowed from the read buffer, so it never holds a message. An application that needs the
//! whole message (to parse it, to scan it, to post it somewhere) feeds those chunks to a
//! [`Collector`]: small messages stay in memory, a message past the memory limit moves to a
//! temporary file, and one past the maximum size is refused with the reply the session should
//! give.
//!
//! ```
//! use smtpkit_server::collect::{Collector, Message};
//!
//! // At most 16 bytes in memory, at most 64 bytes in all.
//! let mut collector = Collector::new(16, 64);
//! collector.push(b"Subject: hi\r\n\r\n").unwrap();
//! assert!(!collector.is_spilled());
//! collector.push(b"a body longer than what stays in memory\r\n").unwrap();
//! assert!(collector.is_spilled());
//! let message = collector.finish().unwrap();
//! assert!(matches!(message, Message::File(_)));
//! assert_eq!(message.into_bytes().unwrap().len(), 56);
//!
//! // The 65th byte is refused with `552 5.3.4`.
//! let mut collector = Collector::new(16, 64);
//! let refusal = collector.push(&[b'x'; 65]).unwrap_err();
//! assert_eq!(refusal.code().get(), 552);
//! ```
//!
//! The collector does blocking file IO once it has spilled. Writes of a few kilobytes go to the
//! page cache and return at once, so an async session can call it directly; keep the memory
//! limit above the typical message size and most messages never touch the disk.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use smtpkit_proto::{EnhancedCode, Reply, ReplyCode};
use tempfile::NamedTempFile;

use crate::handler::static_reply;

/// What a [`Collector`] holds before it spills: 1 MiB keeps most mail (median sizes are tens of
/// kilobytes) off the disk while bounding memory to 1 GiB at a thousand concurrent messages.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 20;

/// Gathers the chunks of one message body, in memory up to a limit and in a temporary file past
/// it, and refuses the message once it grows past its maximum size.
///
/// After a refusal (too big, or the temporary file failed) the collector drops what it held and
/// ignores further chunks, answering each with the same reply, so a session can return it from
/// every later `data_chunk` and from `data_end`.
pub struct Collector {
    memory_limit: usize,
    max_size: u64,
    /// The maximum is the client's declared SIZE, which the refusal then says.
    declared: bool,
    len: u64,
    store: Store,
    temp_dir: Option<PathBuf>,
}

enum Store {
    Memory(Vec<u8>),
    File(NamedTempFile),
    Refused(Reply<'static>),
}

impl Collector {
    /// A collector keeping at most `memory_limit` bytes in memory and accepting at most
    /// `max_size` bytes in all (the server's configured maximum message size).
    #[must_use]
    pub fn new(memory_limit: usize, max_size: u64) -> Self {
        Self {
            memory_limit,
            max_size,
            declared: false,
            len: 0,
            store: Store::Memory(Vec::new()),
            temp_dir: None,
        }
    }

    /// Lowers the maximum to the size the client declared with `MAIL FROM ... SIZE=n`
    /// (RFC 1870), when it declared one below the configured maximum. The declared size counts
    /// the content as the chunks carry it: CRLF line endings, no dot-stuffing, no terminator.
    #[must_use]
    pub fn with_declared_size(mut self, declared: Option<u64>) -> Self {
        if let Some(declared) = declared
            && declared < self.max_size
        {
            self.max_size = declared;
            self.declared = true;
        }
        self
    }

    /// Puts the temporary file in `dir` rather than the system's temporary directory: on the
    /// file system where the message will end up, [`NamedTempFile::persist`] is a rename.
    #[must_use]
    pub fn with_temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// The most bytes this collector accepts.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Bytes received so far (including those of a refused message).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the message has moved to a temporary file.
    pub fn is_spilled(&self) -> bool {
        matches!(self.store, Store::File(_))
    }

    /// Adds a chunk. Returns the reply to give for the message once it is refused:
    /// `552 5.3.4` past the maximum size, `452 4.3.1` when the temporary file cannot be
    /// written (temporary trouble, so the client tries again later).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.len = self.len.saturating_add(chunk.len() as u64);
        if let Store::Refused(reply) = &self.store {
            return Err(reply.clone());
        }
        if self.len > self.max_size {
            let reply = if self.declared {
                static_reply(
                    ReplyCode::EXCEEDED_STORAGE,
                    EnhancedCode::MESSAGE_TOO_BIG,
                    "Message exceeds the SIZE declared in MAIL FROM",
                )
            } else {
                too_big()
            };
            return Err(self.refuse(reply));
        }
        let spill = match &mut self.store {
            Store::Memory(buf) if buf.len() + chunk.len() <= self.memory_limit => {
                // Grow by doubling, as `Vec` does, but never past the limit: the allocation is
                // what the limit bounds, not only the bytes in it.
                let needed = buf.len() + chunk.len();
                if needed > buf.capacity() {
                    let target = needed.max(buf.capacity() * 2).min(self.memory_limit);
                    buf.reserve_exact(target - buf.len());
                }
                buf.extend_from_slice(chunk);
                return Ok(());
            }
            Store::Memory(buf) => std::mem::take(buf),
            Store::File(file) => {
                return match file.write_all(chunk) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self.refuse(storage_failed(&e))),
                };
            }
            Store::Refused(_) => unreachable!("handled above"),
        };
        match self.spill(&spill, chunk) {
            Ok(file) => {
                self.store = Store::File(file);
                Ok(())
            }
            Err(e) => Err(self.refuse(storage_failed(&e))),
        }
    }

    /// The whole message, or the reply a refused message gets. A spilled message comes back as
    /// its temporary file, positioned at the start.
    pub fn finish(self) -> Result<Message, Reply<'static>> {
        match self.store {
            Store::Memory(buf) => Ok(Message::Memory(buf)),
            Store::File(mut file) => match file.flush().and_then(|()| file.rewind()) {
                Ok(()) => Ok(Message::File(file)),
                Err(e) => Err(storage_failed(&e)),
            },
            Store::Refused(reply) => Err(reply),
        }
    }

    fn spill(&self, held: &[u8], chunk: &[u8]) -> io::Result<NamedTempFile> {
        let mut file = match &self.temp_dir {
            Some(dir) => NamedTempFile::new_in(dir)?,
            None => NamedTempFile::new()?,
        };
        file.write_all(held)?;
        file.write_all(chunk)?;
        Ok(file)
    }

    /// Drops what was held (memory, or the temporary file, which deletes it) and latches `reply`.
    fn refuse(&mut self, reply: Reply<'static>) -> Reply<'static> {
        self.store = Store::Refused(reply.clone());
        reply
    }
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &self.store {
            Store::Memory(_) => "memory",
            Store::File(_) => "file",
            Store::Refused(_) => "refused",
        };
        f.debug_struct("Collector")
            .field("len", &self.len)
            .field("max_size", &self.max_size)
            .field("memory_limit", &self.memory_limit)
            .field("store", &store)
            .finish()
    }
}

/// A whole message, as [`Collector::finish`] hands it over.
#[derive(Debug)]
pub enum Message {
    /// A message that fit in the memory limit.
    Memory(Vec<u8>),
    /// A message that did not: its temporary file, positioned at the start. The file is deleted
    /// when dropped unless it is [persisted](NamedTempFile::persist).
    File(NamedTempFile),
}

impl Message {
    /// The message's size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Self::Memory(buf) => Ok(buf.len() as u64),
            Self::File(file) => Ok(file.as_file().metadata()?.len()),
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// The message as bytes, reading the file back if it spilled.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            Self::Memory(buf) => Ok(buf),
            Self::File(mut file) => {
                let mut buf = Vec::new();
                file.seek(SeekFrom::Start(0))?;
                file.read_to_end(&mut buf)?;
                Ok(buf)
            }
        }
    }

    /// The message as text (aiosmtpd's `decode_data=True`): UTF-8, or an `InvalidData` error
    /// naming the first bad byte's offset. 8BITMIME content in another charset is not
    /// UTF-8: use [`into_text_lossy`](Self::into_text_lossy) or the bytes then.
    pub fn into_text(self) -> io::Result<String> {
        String::from_utf8(self.into_bytes()?).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message is not UTF-8 at byte {at}"),
            )
        })
    }

    /// The message as text, each invalid UTF-8 sequence replaced by U+FFFD.
    pub fn into_text_lossy(self) -> io::Result<String> {
        let bytes = self.into_bytes()?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A reader over the message from its start, without loading a spilled one into memory.
    pub fn into_reader(self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Self::Memory(buf) => Ok(Box::new(io::Cursor::new(buf))),
            Self::File(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                Ok(Box::new(file))
            }
        }
    }
}

/// RFC 3463 4.3.1, "Mail system full".
const MAIL_SYSTEM_FULL: EnhancedCode = match EnhancedCode::new(4, 3, 1) {
    Some(code) => code,
    None => panic!("4.3.1 is a valid enhanced code"),
};

fn too_big() -> Reply<'static> {
    static_reply(
        ReplyCode::EXCEEDED_STORAGE,
        EnhancedCode::MESSAGE_TOO_BIG,
        "Message size exceeds fixed maximum message size",
    )
}

fn storage_failed(e: &io::Error) -> Reply<'static> {
    tracing::warn!(error = %e, "message spill to a temporary file failed");
    static_reply(
        ReplyCode::INSUFFICIENT_STORAGE,
        MAIL_SYSTEM_FULL,
        "Insufficient system storage",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(c: &mut Collector, data: &[u8], size: usize) -> Result<(), Reply<'static>> {
        data.chunks(size).try_for_each(|ch| c.push(ch))
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"abcdefghij\r\n"[i % 12]).collect()
    }

    #[test]
    fn text_strict_and_lossy_in_memory_and_spilled() {
        for limit in [1024, 4] {
            let message = |data: &[u8]| {
                let mut c = Collector::new(limit, 1 << 20);
                c.push(data).unwrap();
                c.finish().unwrap()
            };
            let utf8 = "Subject: caf\u{e9}\r\n\r\n\u{2713}\r\n";
            assert_eq!(message(utf8.as_bytes()).into_text().unwrap(), utf8);
            let latin1 = b"Subject: caf\xe9\r\n";
            let err = message(latin1).into_text().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("byte 12"), "{err}");
            assert_eq!(
                message(latin1).into_text_lossy().unwrap(),
                "Subject: caf\u{fffd}\r\n"
            );
        }
    }

    #[test]
    fn stays_in_memory_up_to_the_limit_inclusive() {
        let data = body(100);
        let mut c = Collector::new(100, 1000);
        chunks(&mut c, &data, 7).unwrap();
        assert!(!c.is_spilled());
        assert_eq!(c.len(), 100);
        let Ok(Message::Memory(got)) = c.finish() else {
            panic!("expected an in-memory message")
        };
        assert_eq!(got, data);
    }

    #[test]
    fn memory_allocation_never_exceeds_the_limit() {
        let mut c = Collector::new(1000, 10_000);
        for _ in 0..1000 {
            c.push(b"x").unwrap();
            let Store::Memory(buf) = &c.store else {
                panic!("spilled early")
            };
            assert!(buf.capacity() <= 1000, "capacity {}", buf.capacity());
        }
    }

    #[test]
    fn spills_at_the_first_byte_past_the_limit() {
        let data = body(101);
        let mut c = Collector::new(100, 1000);
        c.push(&data[..100]).unwrap();
        assert!(!c.is_spilled());
        c.push(&data[100..]).unwrap();
        assert!(c.is_spilled());
        let message = c.finish().unwrap();
        assert_eq!(message.len().unwrap(), 101);
        assert_eq!(message.into_bytes().unwrap(), data);
    }

    #[test]
    fn spilled_message_reads_back_whole_from_every_chunking() {
        let data = body(5000);
        for size in [1, 3, 64, 999, 5000] {
            let mut c = Collector::new(512, 10_000);
            chunks(&mut c, &data, size).unwrap();
            let mut got = Vec::new();
            c.finish()
                .unwrap()
                .into_reader()
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, data, "chunk size {size}");
        }
    }

    #[test]
    fn the_temporary_file_lives_in_the_given_dir_and_goes_away_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(4, 100).with_temp_dir(dir.path());
        c.push(b"0123456789").unwrap();
        let Ok(Message::File(file)) = c.finish() else {
            panic!("expected a spilled message")
        };
        let path = file.path().to_owned();
        assert_eq!(path.parent(), Some(dir.path()));
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_past_the_maximum_and_latches_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(4, 10).with_temp_dir(dir.path());
        c.push(b"0123456789").unwrap();
        assert!(c.is_spilled());
        let reply = c.push(b"x").unwrap_err();
        assert_eq!(reply.code(), ReplyCode::EXCEEDED_STORAGE);
        assert_eq!(reply.enhanced(), Some(EnhancedCode::MESSAGE_TOO_BIG));
        // The spilled file is gone as soon as the message is refused.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!c.is_spilled());
        assert_eq!(c.push(b"more").unwrap_err(), reply);
        assert_eq!(c.len(), 15);
        assert_eq!(c.finish().unwrap_err(), reply);
    }

    #[test]
    fn declared_size_lowers_the_maximum_but_never_raises_it() {
        let mut c = Collector::new(100, 1000).with_declared_size(Some(20));
        assert_eq!(c.max_size(), 20);
        c.push(&body(20)).unwrap();
        let reply = c.push(b"!").unwrap_err();
        assert_eq!(reply.code(), ReplyCode::EXCEEDED_STORAGE);
        assert_eq!(
            reply.text(),
            "Message exceeds the SIZE declared in MAIL FROM"
        );

        assert_eq!(
            Collector::new(1, 50)
                .with_declared_size(Some(90))
                .max_size(),
            50
        );
        assert_eq!(
            Collector::new(1, 50).with_declared_size(None).max_size(),
            50
        );
    }

    #[test]
    fn a_temporary_file_that_cannot_be_made_is_a_temporary_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut c = Collector::new(4, 100).with_temp_dir(&missing);
        c.push(b"0123").unwrap();
        let reply = c.push(b"4").unwrap_err();
        assert_eq!(reply.code(), ReplyCode::INSUFFICIENT_STORAGE);
        assert_eq!(reply.enhanced(), Some(MAIL_SYSTEM_FULL));
        assert_eq!(c.finish().unwrap_err(), reply);
    }

    #[test]
    fn an_empty_message_is_empty() {
        let c = Collector::new(0, 0);
        assert!(c.is_empty());
        let message = c.finish().unwrap();
        assert!(message.is_empty().unwrap());
    }
}
