//! The message as a tokio [`AsyncRead`]: [`smtpkit_server::reader`]'s bounded pipe, with the
//! reading end wrapped for tokio's IO traits.
//!
//! The session pushes chunks into the [`MessageWriter`] from `data_chunk`, and a task of the
//! application reads the [`MessageReader`] (go-smtp's `Data(io.Reader)`):
//!
//! ```
//! use tokio::io::AsyncReadExt;
//! use smtpkit_tokio::reader::pipe;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // data_start: at most 64 KiB in flight, at most 10 MB in all.
//! let (mut writer, mut reader) = pipe(64 * 1024, 10_000_000);
//! let consumer = tokio::spawn(async move {
//!     let mut message = Vec::new();
//!     reader.read_to_end(&mut message).await.map(|_| message)
//! });
//! // data_chunk, for each chunk: a refusal (552 past the maximum) is the chunk's answer.
//! writer.push(b"Subject: hi\r\n\r\nbody\r\n").await.unwrap();
//! // data_end: the reader sees the end only now; the consumer's result is the decision.
//! writer.finish();
//! assert_eq!(consumer.await.unwrap().unwrap(), b"Subject: hi\r\n\r\nbody\r\n");
//! # });
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

pub use smtpkit_server::reader::MessageWriter;

/// A pipe holding at most `capacity` bytes for a message of at most `max_size` bytes; see
/// [`smtpkit_server::reader::pipe`].
pub fn pipe(capacity: usize, max_size: u64) -> (MessageWriter, MessageReader) {
    let (writer, reader) = smtpkit_server::reader::pipe(capacity, max_size);
    (writer, MessageReader { inner: reader })
}

/// The application's end of a [`pipe`], as a tokio [`AsyncRead`]: the message's bytes, then the
/// end if the message was whole, or an error if it was cut short or refused.
#[derive(Debug)]
pub struct MessageReader {
    inner: smtpkit_server::reader::MessageReader,
}

impl MessageReader {
    /// The runtime-independent reader (a `futures_io::AsyncRead`).
    pub fn into_inner(self) -> smtpkit_server::reader::MessageReader {
        self.inner
    }
}

impl AsyncRead for MessageReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(
            self.get_mut()
                .inner
                .poll_read_bytes(cx, buf.initialize_unfilled())
        )?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn reads_a_message_pushed_in_chunks_through_a_small_pipe() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let (mut writer, mut reader) = pipe(1024, 50_000);
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.map(|_| got)
        });
        for chunk in data.chunks(777) {
            writer.push(chunk).await.unwrap();
        }
        writer.finish();
        assert_eq!(consumer.await.unwrap().unwrap(), data);
    }

    #[tokio::test]
    async fn a_refused_message_is_a_read_error() {
        let (mut writer, mut reader) = pipe(1024, 100);
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await
        });
        writer.push(&[b'a'; 100]).await.unwrap();
        let reply = writer.push(b"b").await.unwrap_err();
        assert_eq!(reply.code().get(), 552);
        drop(writer);
        let err = consumer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }
}
