//! The message as an async reader, for applications written the go-smtp way (`Data(io.Reader)`)
//! or that stream the body somewhere (an HTTP upload, a parser that reads).
//!
//! [`pipe`] makes a bounded in-memory pipe. The session pushes each body chunk into the
//! [`MessageWriter`] (waiting while the pipe is full, so a slow reader slows the client down
//! rather than growing a buffer), and a task of the application reads the [`MessageReader`]
//! (a `futures_io::AsyncRead`; `smtpkit-tokio` wraps it in a tokio `AsyncRead`). The reader sees
//! the end of the message only after [`MessageWriter::finish`]: a message cut short (the client
//! went away, the transaction was aborted) or one past its maximum size is a read error, so no
//! reader can mistake a truncated message for a whole one.
//!
//! ```
//! use futures_lite::{AsyncReadExt, future};
//! use smtpkit_server::reader::pipe;
//!
//! future::block_on(async {
//!     let (mut writer, mut reader) = pipe(8, 1000);
//!     let consumer = async move {
//!         let mut message = Vec::new();
//!         reader.read_to_end(&mut message).await.map(|_| message)
//!     };
//!     let producer = async move {
//!         for chunk in [&b"Subject: hi\r\n"[..], b"\r\n", b"body\r\n"] {
//!             writer.push(chunk).await.unwrap();
//!         }
//!         writer.finish();
//!     };
//!     let (message, ()) = future::zip(consumer, producer).await;
//!     assert_eq!(message.unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
//! });
//! ```

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use smtpkit_proto::{EnhancedCode, Reply, ReplyCode};

use crate::handler::static_reply;

/// How the writer ended, as the reader learns it when the pipe runs dry.
const OPEN: u8 = 0;
const FINISHED: u8 = 1;
const ABORTED: u8 = 2;
const TOO_BIG: u8 = 3;

/// A pipe holding at most `capacity` bytes (at least 1) for a message of at most `max_size`
/// bytes (the configured maximum, or the declared SIZE when smaller, as for
/// [`Collector`](crate::collect::Collector)).
pub fn pipe(capacity: usize, max_size: u64) -> (MessageWriter, MessageReader) {
    let (reader, writer) = piper::pipe(capacity.max(1));
    let state = Arc::new(AtomicU8::new(OPEN));
    (
        MessageWriter {
            inner: Some(writer),
            state: Arc::clone(&state),
            len: 0,
            max_size,
        },
        MessageReader {
            inner: reader,
            state,
        },
    )
}

/// The session's end of a [`pipe`]. Dropping it without [`finish`](Self::finish) aborts the
/// message: the reader gets an error instead of the end.
pub struct MessageWriter {
    // `None` once the message is refused or the reader is gone: chunks are then discarded.
    inner: Option<piper::Writer>,
    state: Arc<AtomicU8>,
    len: u64,
    max_size: u64,
}

impl MessageWriter {
    /// Pushes a chunk, waiting while the pipe is full. Past the maximum size the message is
    /// refused: this returns `552 5.3.4` (now and for every later chunk) and the reader gets an
    /// error of kind [`io::ErrorKind::FileTooLarge`].
    ///
    /// When the reader has been dropped (the application stopped reading, having decided
    /// already), chunks are discarded and this returns `Ok`: the decision is the application's.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.len = self.len.saturating_add(chunk.len() as u64);
        if self.state.load(Ordering::Acquire) == TOO_BIG {
            return Err(too_big());
        }
        if self.len > self.max_size {
            self.close(TOO_BIG);
            return Err(too_big());
        }
        let Some(writer) = &mut self.inner else {
            return Ok(());
        };
        let mut rest = chunk;
        while !rest.is_empty() {
            let n = poll_fn(|cx| writer.poll_fill_bytes(cx, rest)).await;
            if n == 0 {
                self.inner = None;
                break;
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends the message: the reader sees the end after the bytes still in the pipe.
    pub fn finish(mut self) {
        self.close(FINISHED);
    }

    fn close(&mut self, how: u8) {
        // The state is set before the pipe closes, so a reader that sees the close sees it.
        let _ = self
            .state
            .compare_exchange(OPEN, how, Ordering::AcqRel, Ordering::Acquire);
        self.inner = None;
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        self.close(ABORTED);
    }
}

impl fmt::Debug for MessageWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageWriter")
            .field("len", &self.len)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// The application's end of a [`pipe`]: the message's bytes, then the end (`Ok(0)`) if the
/// message was whole, or an error if it was not.
pub struct MessageReader {
    inner: piper::Reader,
    state: Arc<AtomicU8>,
}

impl MessageReader {
    /// Reads into `buf`, as [`futures_io::AsyncRead::poll_read`].
    pub fn poll_read_bytes(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(self.inner.poll_drain_bytes(cx, buf));
        if n > 0 || buf.is_empty() {
            return Poll::Ready(Ok(n));
        }
        Poll::Ready(match self.state.load(Ordering::Acquire) {
            FINISHED => Ok(0),
            TOO_BIG => Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "message exceeds the maximum size",
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message aborted before its end",
            )),
        })
    }
}

impl futures_io::AsyncRead for MessageReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_bytes(cx, buf)
    }
}

impl fmt::Debug for MessageReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader")
            .field("buffered", &self.inner.len())
            .finish_non_exhaustive()
    }
}

fn too_big() -> Reply<'static> {
    static_reply(
        ReplyCode::EXCEEDED_STORAGE,
        EnhancedCode::MESSAGE_TOO_BIG,
        "Message size exceeds fixed maximum message size",
    )
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;

    use futures_lite::{AsyncReadExt, future};

    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Polls up to 100 times: piper yields at random (1 in 100 polls) for fairness, so one
    /// `Pending` does not mean "full".
    fn poll<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..100 {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    }

    #[test]
    fn a_whole_message_arrives_through_a_small_pipe() {
        let data = body(10_000);
        let (mut writer, mut reader) = pipe(64, 10_000);
        let producer = async {
            for chunk in data.chunks(333) {
                writer.push(chunk).await.unwrap();
            }
            writer.finish();
        };
        let consumer = async {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.map(|_| got)
        };
        let ((), got) = future::block_on(future::zip(producer, consumer));
        assert_eq!(got.unwrap(), data);
    }

    #[test]
    fn a_full_pipe_makes_the_writer_wait() {
        let (mut writer, mut reader) = pipe(16, 1000);
        let chunk = [7u8; 40];
        {
            let mut push = pin!(writer.push(&chunk));
            // 16 bytes fit; the rest waits for the reader.
            assert!(poll(push.as_mut()).is_pending());
            assert_eq!(reader.inner.len(), 16);
            let mut buf = [0u8; 16];
            let n = future::block_on(reader.read(&mut buf)).unwrap();
            assert_eq!(n, 16);
            assert!(poll(push.as_mut()).is_pending());
            let n = future::block_on(reader.read(&mut buf)).unwrap();
            assert_eq!(n, 16);
            assert!(poll(push.as_mut()).is_ready());
        }
        assert_eq!(writer.len(), 40);
    }

    #[test]
    fn past_the_maximum_the_writer_refuses_and_the_reader_fails() {
        let (mut writer, mut reader) = pipe(100, 10);
        future::block_on(writer.push(b"0123456789")).unwrap();
        let reply = future::block_on(writer.push(b"x")).unwrap_err();
        assert_eq!(reply.code(), ReplyCode::EXCEEDED_STORAGE);
        assert_eq!(reply.enhanced(), Some(EnhancedCode::MESSAGE_TOO_BIG));
        assert_eq!(future::block_on(writer.push(b"y")).unwrap_err(), reply);
        writer.finish();
        let mut got = Vec::new();
        let err = future::block_on(reader.read_to_end(&mut got)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        // What was accepted before the refusal was readable; nothing after it was.
        assert_eq!(got, b"0123456789");
    }

    #[test]
    fn a_dropped_writer_is_an_error_not_an_end() {
        let (mut writer, mut reader) = pipe(100, 1000);
        future::block_on(writer.push(b"partial")).unwrap();
        drop(writer);
        let mut got = Vec::new();
        let err = future::block_on(reader.read_to_end(&mut got)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"partial");
    }

    #[test]
    fn a_dropped_reader_makes_pushes_discard() {
        let (mut writer, reader) = pipe(4, 1000);
        drop(reader);
        future::block_on(writer.push(&body(100))).unwrap();
        future::block_on(writer.push(&body(100))).unwrap();
        assert_eq!(writer.len(), 200);
        // The maximum still applies.
        assert!(future::block_on(writer.push(&body(900))).is_err());
    }
}
