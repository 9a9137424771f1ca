//! The log's writer thread: sessions append their lines to one buffer, and a thread writes it
//! out in batches, so no session waits on a slow terminal, pipe or journal, and a busy server
//! pays one `write` (and one wake-up of the thread) per batch instead of per line.
//!
//! Nothing is dropped: when [`MAX_PENDING`] octets wait, the next line waits for room. The
//! [`Flusher`] writes what is left when it is dropped (at the end of `main`).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread lets lines gather after the first one of a batch arrives. A line
/// reaches the log at most this late; a busy server writes that many milliseconds of lines at
/// once.
pub const BATCH_DELAY: Duration = Duration::from_millis(2);

/// Octets that may wait to be written before a logging session waits for room.
pub const MAX_PENDING: usize = 1 << 20;

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// The thread sleeps on `Shared::ready` and must be woken.
    idle: bool,
    /// Sessions wait on `Shared::room`.
    full: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves whole lines behind: carry on with them.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go: an [`io::Write`] for `tracing_subscriber`'s `with_writer` (cheap to
/// clone; every clone feeds the same thread).
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every line.
#[derive(Debug)]
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread named `name` writing to `out`.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn(
    name: &str,
    out: impl Write + Send + 'static,
    delay: Duration,
) -> io::Result<(LogWriter, Flusher)> {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&shared, out, delay))?
    };
    Ok((
        LogWriter {
            shared: Arc::clone(&shared),
        },
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run(shared: &Shared, mut out: impl Write, delay: Duration) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.closed {
            pending.idle = true;
            pending = shared
                .ready
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.lines.is_empty() {
            // Closed, and everything is written.
            return;
        }
        // Let more lines gather, unless the buffer fills or the log closes first.
        pending = shared
            .ready
            .wait_timeout_while(pending, delay, |p| !p.closed && !p.full)
            .map_or_else(|e| e.into_inner().0, |(p, _)| p);
        std::mem::swap(&mut batch, &mut pending.lines);
        if std::mem::take(&mut pending.full) {
            shared.room.notify_all();
        }
        drop(pending);
        // Nowhere to report a failed log write but the log itself: the lines are dropped,
        // as the standard error stream would lose them.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > MAX_PENDING {
            batch = Vec::new();
        }
    }
}

impl Write for LogWriter {
    /// Queues `buf` (one formatted line) whole.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.lines.len() >= MAX_PENDING && !pending.closed {
            pending.full = true;
            // The thread may be letting lines gather: no need to wait for that.
            self.shared.ready.notify_one();
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending.lines.extend_from_slice(buf);
        // One wake-up per batch: later lines find the thread awake (or about to take them).
        if std::mem::take(&mut pending.idle) {
            self.shared.ready.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared byte sink that counts the writes it gets.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            inner.0.extend_from_slice(buf);
            inner.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_in_batches() {
        let sink = Sink::default();
        let (writer, flusher) = spawn("test-log", sink.clone(), Duration::from_millis(20)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flusher);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}'s lines");
        }
        assert!(writes < 2000, "{writes} writes for 2000 lines: not batched");
    }

    #[test]
    fn a_full_buffer_makes_the_writer_wait_not_drop() {
        let sink = Sink::default();
        // A long delay: the first batch waits, so the buffer fills and the writer must wait
        // for room instead of dropping lines.
        let (mut writer, flusher) =
            spawn("test-log", sink.clone(), Duration::from_millis(100)).unwrap();
        let line = vec![b'x'; 4096];
        let lines = 2 * MAX_PENDING / line.len() + 3;
        for _ in 0..lines {
            writer.write_all(&line).unwrap();
        }
        drop(flusher);
        assert_eq!(sink.0.lock().unwrap().0.len(), lines * line.len());
    }

    #[test]
    fn dropping_the_flusher_writes_what_is_left() {
        let sink = Sink::default();
        let (mut writer, flusher) =
            spawn("test-log", sink.clone(), Duration::from_secs(5)).unwrap();
        writer.write_all(b"last words\n").unwrap();
        let started = std::time::Instant::now();
        drop(flusher);
        assert_eq!(sink.0.lock().unwrap().0, b"last words\n");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the flush waited out the batch delay"
        );
    }
}
