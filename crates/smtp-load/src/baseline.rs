//! The trivial baseline server: the fastest an SMTP server can possibly be on this machine.
//!
//! It reads the socket in 64 KiB buffers and answers fixed replies, parsing only what it needs to stay
//! in step: the first four letters of each command, the end of DATA (`CRLF.CRLF`, found with
//! `memchr::memmem`), and the size of each BDAT chunk. All replies produced by one read go out in one
//! write. It stores nothing and checks nothing, so measuring it shows the ceiling of the load generator
//! and of the kernel's loopback path, against which real servers are compared.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read buffer per connection. It is zero-initialised lazily by the allocator (calloc), so idle
/// connections do not make it resident.
const READ_BUF: usize = 64 * 1024;

const GREETING: &[u8] = b"220 baseline ESMTP smtp-load\r\n";
const EHLO_REPLY: &[u8] =
    b"250-baseline\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-CHUNKING\r\n250 SIZE\r\n";
const OK: &[u8] = b"250 2.0.0 OK\r\n";
const GO_AHEAD: &[u8] = b"354 Go ahead\r\n";
const QUEUED: &[u8] = b"250 2.0.0 Queued\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const UNKNOWN: &[u8] = b"500 5.5.1 Unknown command\r\n";
const BAD_BDAT: &[u8] = b"501 5.5.4 Bad BDAT size\r\n";

/// Messages the server has answered `250 Queued` to, and a count to wait for: what a queue
/// benchmark watches to know when everything it submitted has arrived.
#[derive(Debug)]
pub struct Tally {
    received: AtomicU64,
    expect: u64,
    reached: tokio::sync::Notify,
}

impl Tally {
    /// A tally that is complete after `expect` messages.
    #[must_use]
    pub fn new(expect: u64) -> Self {
        Self {
            received: AtomicU64::new(0),
            expect,
            reached: tokio::sync::Notify::new(),
        }
    }

    /// Messages received so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expect` messages have been received (at once if they have).
    pub async fn complete(&self) {
        let reached = self.reached.notified();
        if self.received() >= self.expect {
            return;
        }
        reached.await;
    }

    fn add(&self) {
        if self.received.fetch_add(1, Ordering::Relaxed) + 1 == self.expect {
            // notify_one keeps a permit for a waiter that has not started waiting yet.
            self.reached.notify_one();
        }
    }
}

/// Accepts connections on `listener` forever, serving each on its own task.
///
/// Returns only if `accept` fails with an error other than a transient one (e.g. too many open files
/// is transient: the server keeps going once connections close).
pub async fn baseline_server(listener: TcpListener) -> io::Result<()> {
    counting_server(listener, None).await
}

/// [`baseline_server`], counting every message it accepts in `tally`.
pub async fn counting_server(listener: TcpListener, tally: Option<Arc<Tally>>) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) if is_transient_accept_error(&e) => {
                // Back off briefly instead of spinning while the descriptor table is full.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let tally = tally.clone();
        tokio::spawn(async move {
            // A client that vanishes mid-session is normal under load; there is nobody to tell.
            let _ = serve(stream, tally.as_deref()).await;
        });
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    /// Inside DATA; `scan_from` is where the search for `CRLF.CRLF` resumes.
    Data {
        scan_from: usize,
    },
    /// Inside a BDAT chunk with this many bytes left; `last` ends the message.
    Bdat {
        remaining: u64,
        last: bool,
    },
}

async fn serve(mut stream: TcpStream, tally: Option<&Tally>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(GREETING).await?;
    let finder = Finder::new(b"\r\n.\r\n");
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::with_capacity(1024);
    let (mut start, mut end) = (0usize, 0usize);
    let mut state = State::Command;
    loop {
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
        let mut quit = false;
        // Process everything this read made complete, collecting replies in `out`.
        loop {
            match state {
                State::Command => {
                    let Some(lf) = memchr::memchr(b'\n', &buf[start..end]) else {
                        break;
                    };
                    let line = &buf[start..start + lf];
                    let line_end = start + lf + 1;
                    let verb = line.get(..4).unwrap_or(line);
                    start = line_end;
                    if verb.eq_ignore_ascii_case(b"EHLO") {
                        out.extend_from_slice(EHLO_REPLY);
                    } else if verb.eq_ignore_ascii_case(b"DATA") {
                        out.extend_from_slice(GO_AHEAD);
                        // The CRLF ending the DATA line may begin the terminator of an empty message.
                        state = State::Data {
                            scan_from: line_end.saturating_sub(2),
                        };
                    } else if verb.eq_ignore_ascii_case(b"BDAT") {
                        match parse_bdat_size(line) {
                            Some((remaining, last)) => state = State::Bdat { remaining, last },
                            None => out.extend_from_slice(BAD_BDAT),
                        }
                    } else if verb.eq_ignore_ascii_case(b"QUIT") {
                        out.extend_from_slice(BYE);
                        quit = true;
                        break;
                    } else if [&b"MAIL"[..], b"RCPT", b"RSET", b"NOOP", b"HELO"]
                        .iter()
                        .any(|v| verb.eq_ignore_ascii_case(v))
                    {
                        out.extend_from_slice(OK);
                    } else {
                        out.extend_from_slice(UNKNOWN);
                    }
                }
                State::Data { scan_from } => match finder.find(&buf[scan_from..end]) {
                    Some(pos) => {
                        start = scan_from + pos + 5;
                        out.extend_from_slice(QUEUED);
                        tally.inspect(|t| t.add());
                        state = State::Command;
                    }
                    None => {
                        // Keep only the bytes that might start a terminator split across reads.
                        start = end.saturating_sub(4).max(scan_from);
                        state = State::Data { scan_from: start };
                        break;
                    }
                },
                State::Bdat { remaining, last } => {
                    let available = (end - start) as u64;
                    if available < remaining {
                        start = end;
                        state = State::Bdat {
                            remaining: remaining - available,
                            last,
                        };
                        break;
                    }
                    start += remaining as usize;
                    out.extend_from_slice(QUEUED);
                    if last {
                        tally.inspect(|t| t.add());
                    }
                    state = State::Command;
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if quit {
            return Ok(());
        }
        // Move the unprocessed tail to the front so the next read has room.
        if start == end {
            (start, end) = (0, 0);
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            if let State::Data { scan_from } = &mut state {
                *scan_from -= start;
            }
            start = 0;
        }
        if end == buf.len() {
            // A command line longer than the whole buffer: no client in sync sends one.
            stream.write_all(b"500 5.5.2 Line too long\r\n").await?;
            return Ok(());
        }
    }
}

/// `BDAT <size> [LAST]`: the size and whether it is the last chunk, or `None` if the size is
/// missing or not a number.
fn parse_bdat_size(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty()).skip(1);
    let size = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    let last = words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"LAST"));
    Some((size, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdat_sizes() {
        assert_eq!(parse_bdat_size(b"BDAT 1024 LAST\r"), Some((1024, true)));
        assert_eq!(parse_bdat_size(b"BDAT  7"), Some((7, false)));
        assert_eq!(parse_bdat_size(b"BDAT 7 last"), Some((7, true)));
        assert_eq!(parse_bdat_size(b"BDAT"), None);
        assert_eq!(parse_bdat_size(b"BDAT x LAST"), None);
    }

    /// Feeds a transcript byte by byte and checks the replies, so split terminators and split BDAT
    /// chunks are covered.
    #[tokio::test]
    async fn replies_stay_in_step_with_one_byte_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tally = Arc::new(Tally::new(3));
        let server = tokio::spawn(counting_server(listener, Some(Arc::clone(&tally))));
        let client = TcpStream::connect(addr).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        let input: &[u8] = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n\
            MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nline\r\n..dot\r\n.\r\n\
            BDAT 5 LAST\r\n\r\n.\r\nNOOP\r\nQUIT\r\n";
        let expected = [
            GREETING, EHLO_REPLY, OK, OK, GO_AHEAD, QUEUED, OK, OK, GO_AHEAD, QUEUED, QUEUED, OK,
            BYE,
        ]
        .concat();
        let reader = {
            let (mut rd, mut wr) = client.into_split();
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.expect("read");
                got
            });
            for byte in input {
                wr.write_all(std::slice::from_ref(byte))
                    .await
                    .expect("write");
            }
            reader
        };
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("server closes after QUIT")
            .expect("join");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
        // Two messages by DATA, one by BDAT LAST.
        assert_eq!(tally.received(), 3);
        tokio::time::timeout(std::time::Duration::from_secs(1), tally.complete())
            .await
            .expect("the tally is complete");
        server.abort();
    }
}
