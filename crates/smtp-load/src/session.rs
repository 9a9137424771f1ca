//! One client connection: greeting, EHLO, optional STARTTLS, then mail transactions.
//!
//! The client understands just enough SMTP to stay in step with any server: it reads complete replies
//! (multi-line ones included), checks their codes, and never sends a command a reply has not allowed
//! unless PIPELINING (RFC 2920) was asked for. Every read and write is bounded by the read timeout and by
//! the run's deadline.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Replies are short (RFC 5321 §4.5.3.1.5: 512 octets per line); a buffer this size holds many
/// pipelined replies at once.
const REPLY_BUF: usize = 8 * 1024;

/// Why a message or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server answered with a code the client did not expect; the connection stays usable.
    Reply { code: u16, text: String },
    /// The TCP connection could not be opened.
    Connect(io::ErrorKind),
    /// Reading or writing failed.
    Io(io::ErrorKind),
    /// The server closed the connection in the middle of a conversation.
    Closed,
    /// No reply (or no progress writing) within the read timeout.
    Timeout,
    /// The run's duration limit passed while this was in progress; not counted as an error.
    Interrupted,
    /// The TLS handshake failed.
    Tls(String),
    /// The server's bytes did not make sense as SMTP, or it lacks a required extension.
    Protocol(&'static str),
}

impl Failure {
    /// The key under which the report groups this failure: the bare reply code for replies.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Reply { code, .. } => code.to_string(),
            Self::Connect(kind) => format!("connect: {kind}"),
            Self::Io(kind) => format!("io: {kind}"),
            Self::Closed => "io: connection closed by server".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Interrupted => "interrupted".to_owned(),
            Self::Tls(msg) => format!("tls: {msg}"),
            Self::Protocol(msg) => format!("protocol: {msg}"),
        }
    }

    /// An example of this failure worth showing next to the count (the server's reply text).
    pub(crate) fn sample(&self) -> Option<&str> {
        match self {
            Self::Reply { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether the connection is unusable after this failure.
    pub(crate) fn is_fatal(&self) -> bool {
        !matches!(self, Self::Reply { .. })
    }
}

/// STARTTLS settings for a run.
#[derive(Debug, Clone)]
pub struct StartTls {
    /// The rustls client configuration (see [`crate::tls::client_config`]).
    pub config: Arc<ClientConfig>,
    /// The name the certificate is checked against (and sent as SNI when it is a DNS name).
    pub server_name: ServerName<'static>,
}

/// Everything a connection needs to know, computed once per run and shared by all sessions.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    pub(crate) ehlo: Vec<u8>,
    pub(crate) mail: Vec<u8>,
    pub(crate) rcpts: Vec<Vec<u8>>,
    /// MAIL, every RCPT and DATA, sent in one write when pipelining with DATA.
    pub(crate) pipelined_prefix: Vec<u8>,
    pub(crate) pipelining: bool,
    pub(crate) bdat: bool,
    pub(crate) starttls: Option<StartTls>,
    pub(crate) read_timeout: Duration,
    pub(crate) deadline: Option<Instant>,
    pub(crate) payloads: Vec<Payload>,
}

/// One pre-generated message in the exact form it goes on the wire.
#[derive(Debug)]
pub(crate) struct Payload {
    /// The message size before dot-stuffing: what MB/s counts.
    pub(crate) raw_len: usize,
    /// DATA: the dot-stuffed message with its terminator. BDAT: `BDAT n LAST` and the message, preceded
    /// by MAIL and RCPT when pipelining, so a whole transaction is one write.
    pub(crate) wire: Vec<u8>,
}

impl Plan {
    /// Runs `fut` with the read timeout, cut short by the run's deadline.
    async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Result<T, Failure> {
        let timeout = Instant::now() + self.read_timeout;
        match self.deadline {
            Some(deadline) if deadline <= timeout => timeout_at(deadline, fut)
                .await
                .map_err(|_| Failure::Interrupted),
            _ => timeout_at(timeout, fut).await.map_err(|_| Failure::Timeout),
        }
    }
}

/// A plain or TLS-wrapped TCP stream.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Reads SMTP replies from a stream, keeping any bytes of later (pipelined) replies for the next call.
#[derive(Debug)]
pub(crate) struct ReplyReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The final line of the last reply, kept for error samples without allocating per reply.
    last_line: Vec<u8>,
}

impl ReplyReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; REPLY_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            last_line: Vec::with_capacity(128),
        }
    }

    /// Whether bytes beyond the last reply have arrived.
    pub(crate) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Reads one complete reply and returns its code. `on_line` sees the text of every line (after
    /// the code and separator), which is how EHLO keywords are collected.
    pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<u16, Failure> {
        let mut code = None;
        loop {
            while let Some(pos) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line_start = self.start;
                let line_end = line_start + pos;
                self.start = line_end + 1;
                let line = &self.buf[line_start..line_end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let (this_code, is_last) = parse_reply_line(line)?;
                if code.is_some_and(|c| c != this_code) {
                    return Err(Failure::Protocol(
                        "reply code changed inside a multi-line reply",
                    ));
                }
                code = Some(this_code);
                on_line(line.get(4..).unwrap_or_default());
                if is_last {
                    self.last_line.clear();
                    self.last_line.extend_from_slice(line);
                    return Ok(this_code);
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                return Err(Failure::Protocol("reply line too long"));
            }
            let n = r
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|e| Failure::Io(e.kind()))?;
            if n == 0 {
                return Err(Failure::Closed);
            }
            self.end += n;
        }
    }

    /// A failure for the reply just read.
    fn unexpected(&self, code: u16) -> Failure {
        Failure::Reply {
            code,
            text: String::from_utf8_lossy(&self.last_line).into_owned(),
        }
    }
}

/// Splits `250-text` / `250 text` / `250` into the code and whether this is the reply's last line.
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool), Failure> {
    let malformed = Failure::Protocol("malformed reply line");
    let digits = line.get(..3).ok_or_else(|| malformed.clone())?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return Err(malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(malformed),
    }
}

/// The EHLO keywords this client cares about.
#[derive(Debug, Default, Clone, Copy)]
struct Capabilities {
    pipelining: bool,
    chunking: bool,
    starttls: bool,
}

impl Capabilities {
    fn note(&mut self, line: &[u8]) {
        let keyword = line.split(|&b| b == b' ').next().unwrap_or_default();
        if keyword.eq_ignore_ascii_case(b"PIPELINING") {
            self.pipelining = true;
        } else if keyword.eq_ignore_ascii_case(b"CHUNKING") {
            self.chunking = true;
        } else if keyword.eq_ignore_ascii_case(b"STARTTLS") {
            self.starttls = true;
        }
    }
}

/// An open, greeted connection ready for mail transactions.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Stream,
    replies: ReplyReader,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, and runs STARTTLS if the plan asks for it.
    pub(crate) async fn open(plan: &Plan) -> Result<Self, Failure> {
        let mut tcp = plan
            .bounded(TcpStream::connect(plan.target))
            .await?
            .map_err(|e| Failure::Connect(e.kind()))?;
        // Commands are small writes answered by a reply; Nagle's algorithm would delay each one.
        tcp.set_nodelay(true).map_err(|e| Failure::Io(e.kind()))?;
        let mut replies = ReplyReader::new();
        expect(plan, &mut replies, &mut tcp, 220).await?;
        let mut caps = ehlo(plan, &mut replies, &mut tcp).await?;

        let stream = match &plan.starttls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                if !caps.starttls {
                    return Err(Failure::Protocol("STARTTLS not advertised"));
                }
                write(plan, &mut tcp, b"STARTTLS\r\n").await?;
                expect(plan, &mut replies, &mut tcp, 220).await?;
                if replies.has_buffered() {
                    // Bytes before the handshake would be plaintext injected into the TLS session
                    // (CVE-2011-0411 class); a well-behaved server never sends them.
                    return Err(Failure::Protocol("data after the STARTTLS reply"));
                }
                let connector = TlsConnector::from(tls.config.clone());
                let tls_stream = plan
                    .bounded(connector.connect(tls.server_name.clone(), tcp))
                    .await?
                    .map_err(|e| Failure::Tls(e.to_string()))?;
                let mut stream = Stream::Tls(Box::new(tls_stream));
                caps = ehlo(plan, &mut replies, &mut stream).await?;
                stream
            }
        };
        if plan.pipelining && !caps.pipelining {
            return Err(Failure::Protocol("PIPELINING not advertised"));
        }
        if plan.bdat && !caps.chunking {
            return Err(Failure::Protocol("CHUNKING not advertised"));
        }
        Ok(Self { stream, replies })
    }

    /// Sends one message; on success returns the time from sending MAIL to reading the final reply.
    ///
    /// A refused command leaves the connection usable: the transaction is reset with RSET.
    pub(crate) async fn send_message(
        &mut self,
        plan: &Plan,
        payload: &Payload,
    ) -> Result<Duration, Failure> {
        let started = Instant::now();
        let outcome = if plan.pipelining {
            self.pipelined(plan, payload).await?
        } else {
            self.lockstep(plan, payload).await?
        };
        match outcome {
            Ok(()) => Ok(started.elapsed()),
            Err(refused) => {
                write(plan, &mut self.stream, b"RSET\r\n").await?;
                self.replies.read_reply(&mut self.stream, |_| {}).await?;
                Err(refused)
            }
        }
    }

    /// One command, one reply. The outer `Result` is fatal, the inner one a refusal.
    async fn lockstep(
        &mut self,
        plan: &Plan,
        payload: &Payload,
    ) -> Result<Result<(), Failure>, Failure> {
        write(plan, &mut self.stream, &plan.mail).await?;
        if let Err(refused) = self.reply_in(plan, 200..300).await? {
            return Ok(Err(refused));
        }
        for rcpt in &plan.rcpts {
            write(plan, &mut self.stream, rcpt).await?;
            if let Err(refused) = self.reply_in(plan, 200..300).await? {
                return Ok(Err(refused));
            }
        }
        if !plan.bdat {
            write(plan, &mut self.stream, b"DATA\r\n").await?;
            if let Err(refused) = self.reply_in(plan, 354..355).await? {
                return Ok(Err(refused));
            }
        }
        write(plan, &mut self.stream, &payload.wire).await?;
        self.reply_in(plan, 200..300).await
    }

    /// RFC 2920: the commands go out in one write and the replies are read back in order.
    async fn pipelined(
        &mut self,
        plan: &Plan,
        payload: &Payload,
    ) -> Result<Result<(), Failure>, Failure> {
        let prefix: &[u8] = if plan.bdat {
            &payload.wire
        } else {
            &plan.pipelined_prefix
        };
        write(plan, &mut self.stream, prefix).await?;
        // Every reply must be read to stay in step, but the first refusal is the one to report.
        let mut first_refusal = None;
        let mut note = |r: Result<(), Failure>| {
            if let Err(refused) = r {
                first_refusal.get_or_insert(refused);
            }
        };
        note(self.reply_in(plan, 200..300).await?);
        for _ in &plan.rcpts {
            note(self.reply_in(plan, 200..300).await?);
        }
        if plan.bdat {
            // The BDAT reply was the last one of the batch.
            note(self.reply_in(plan, 200..300).await?);
            return Ok(first_refusal.map_or(Ok(()), Err));
        }
        match self.reply_in(plan, 354..355).await? {
            Ok(()) if first_refusal.is_none() => {
                write(plan, &mut self.stream, &payload.wire).await?;
                self.reply_in(plan, 200..300).await
            }
            Ok(()) => {
                // The server accepted DATA although an earlier command failed; end the (empty)
                // message so the conversation stays in step, and report the earlier refusal.
                write(plan, &mut self.stream, b".\r\n").await?;
                self.replies.read_reply(&mut self.stream, |_| {}).await?;
                Ok(first_refusal.map_or(Ok(()), Err))
            }
            Err(refused) => Ok(Err(first_refusal.unwrap_or(refused))),
        }
    }

    /// Reads a reply; a code outside `ok` is a refusal.
    async fn reply_in(
        &mut self,
        plan: &Plan,
        ok: std::ops::Range<u16>,
    ) -> Result<Result<(), Failure>, Failure> {
        let code = plan
            .bounded(self.replies.read_reply(&mut self.stream, |_| {}))
            .await??;
        Ok(if ok.contains(&code) {
            Ok(())
        } else {
            Err(self.replies.unexpected(code))
        })
    }

    /// Says QUIT and closes; errors no longer matter at this point.
    pub(crate) async fn quit(mut self, plan: &Plan) {
        if write(plan, &mut self.stream, b"QUIT\r\n").await.is_ok() {
            let _ = plan
                .bounded(self.replies.read_reply(&mut self.stream, |_| {}))
                .await;
        }
        let _ = plan.bounded(self.stream.shutdown()).await;
    }
}

/// Reads a reply and requires `code`; used during connection setup, where any refusal is fatal.
async fn expect<S: AsyncRead + Unpin>(
    plan: &Plan,
    replies: &mut ReplyReader,
    stream: &mut S,
    code: u16,
) -> Result<(), Failure> {
    let got = plan.bounded(replies.read_reply(stream, |_| {})).await??;
    if got == code {
        Ok(())
    } else {
        Err(replies.unexpected(got))
    }
}

async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    plan: &Plan,
    replies: &mut ReplyReader,
    stream: &mut S,
) -> Result<Capabilities, Failure> {
    write(plan, stream, &plan.ehlo).await?;
    let mut caps = Capabilities::default();
    let code = plan
        .bounded(replies.read_reply(stream, |line| caps.note(line)))
        .await??;
    if code == 250 {
        Ok(caps)
    } else {
        Err(replies.unexpected(code))
    }
}

async fn write<S: AsyncWrite + Unpin>(
    plan: &Plan,
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), Failure> {
    plan.bounded(stream.write_all(bytes))
        .await?
        .map_err(|e| Failure::Io(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_line_known_answers() {
        assert_eq!(parse_reply_line(b"250 OK"), Ok((250, true)));
        assert_eq!(parse_reply_line(b"250-PIPELINING"), Ok((250, false)));
        assert_eq!(parse_reply_line(b"354"), Ok((354, true)));
        assert!(parse_reply_line(b"25").is_err());
        assert!(parse_reply_line(b"abc def").is_err());
        assert!(parse_reply_line(b"250xOK").is_err());
        assert!(parse_reply_line(b"650 OK").is_err());
    }

    #[tokio::test]
    async fn reads_multiline_and_pipelined_replies_split_anywhere() {
        let wire: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n451 4.3.0 try later\r\n354 go\r\n";
        for split in 1..wire.len() {
            let (mut client, mut server) = tokio::io::duplex(64);
            let (a, b) = wire.split_at(split);
            let writer = tokio::spawn(async move {
                server.write_all(a).await.expect("write");
                tokio::task::yield_now().await;
                server.write_all(b).await.expect("write");
                server
            });
            let mut reader = ReplyReader::new();
            let mut caps = Capabilities::default();
            assert_eq!(
                reader.read_reply(&mut client, |l| caps.note(l)).await,
                Ok(250)
            );
            assert!(caps.pipelining && caps.chunking && !caps.starttls);
            assert_eq!(reader.read_reply(&mut client, |_| {}).await, Ok(451));
            assert_eq!(
                reader.unexpected(451),
                Failure::Reply {
                    code: 451,
                    text: "451 4.3.0 try later".into()
                }
            );
            assert_eq!(reader.read_reply(&mut client, |_| {}).await, Ok(354));
            assert!(!reader.has_buffered());
            drop(writer.await.expect("join"));
            assert_eq!(
                reader.read_reply(&mut client, |_| {}).await,
                Err(Failure::Closed)
            );
        }
    }

    #[tokio::test]
    async fn rejects_code_change_inside_multiline_reply() {
        let mut input: &[u8] = b"250-a\r\n251 b\r\n";
        let mut reader = ReplyReader::new();
        assert!(matches!(
            reader.read_reply(&mut input, |_| {}).await,
            Err(Failure::Protocol(_))
        ));
    }
}
