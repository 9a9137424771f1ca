//! A deliberately simple SMTP client for the torture scenarios: it sends exactly the bytes it is
//! given (partial lines, control characters, no reading at all) and reads whole replies with
//! their text, every wait bounded by a deadline.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any single reply may take before the scenario gives up on it: long enough for a
/// loaded 2-core machine running Argon2, short enough that a hung server fails a run quickly.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A reply longer than this is not SMTP (RFC 5321 4.5.3.1.5 allows 512 octets per line, and no
/// server sends hundreds of lines).
const MAX_REPLY: usize = 64 * 1024;

/// One complete (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    /// Every line without its CRLF, code included.
    pub(crate) text: String,
}

impl Reply {
    /// The last line, which is what people quote.
    pub(crate) fn last_line(&self) -> &str {
        self.text.lines().last().unwrap_or_default()
    }
}

/// Why a conversation step did not give a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the deadline.
    Timeout,
    /// Another IO error.
    Io(io::ErrorKind),
    /// Bytes that are not an SMTP reply.
    Garbage,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed"),
            Self::Timeout => f.write_str("timeout"),
            Self::Io(kind) => write!(f, "io: {kind}"),
            Self::Garbage => f.write_str("not an SMTP reply"),
        }
    }
}

fn io_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionAborted => Failure::Closed,
        kind => Failure::Io(kind),
    }
}

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed TLS handshake the socket is gone.
    Gone,
}

/// A connection with a read buffer that keeps the bytes of later (pipelined) replies.
#[derive(Debug)]
pub(crate) struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `target`, from `source` when given (any 127.0.0.0/8 address works on Linux,
    /// which lets one machine look like many clients to per-IP limits).
    pub(crate) async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<Self, Failure> {
        let connect = async {
            let socket = if target.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = source {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.connect(target).await
        };
        let tcp = timeout(REPLY_TIMEOUT, connect)
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| Failure::Io(e.kind()))?;
        tcp.set_nodelay(true).map_err(|e| Failure::Io(e.kind()))?;
        Ok(Self {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(1024),
        })
    }

    /// Connects and reads the greeting.
    pub(crate) async fn greeted(target: SocketAddr) -> Result<(Self, Reply), Failure> {
        let mut client = Self::connect(target, None).await?;
        let greeting = client.reply().await?;
        Ok((client, greeting))
    }

    /// Writes `bytes` as they are, within [`REPLY_TIMEOUT`].
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(bytes).await,
                Stream::Tls(s) => {
                    s.write_all(bytes).await?;
                    s.flush().await
                }
                Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        timeout(REPLY_TIMEOUT, write)
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| io_failure(&e))
    }

    /// Reads one reply within [`REPLY_TIMEOUT`].
    pub(crate) async fn reply(&mut self) -> Result<Reply, Failure> {
        self.reply_by(Instant::now() + REPLY_TIMEOUT).await
    }

    /// Sends a command line and reads its reply.
    pub(crate) async fn command(&mut self, line: &str) -> Result<Reply, Failure> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Reads one reply, waiting until `deadline` at most.
    pub(crate) async fn reply_by(&mut self, deadline: Instant) -> Result<Reply, Failure> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(Failure::Garbage);
            }
            let mut chunk = [0u8; 4096];
            let n = timeout_at(deadline, self.read(&mut chunk))
                .await
                .map_err(|_| Failure::Timeout)??;
            if n == 0 {
                return Err(Failure::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read(&mut self, chunk: &mut [u8]) -> Result<usize, Failure> {
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(chunk).await,
            Stream::Tls(s) => s.read(chunk).await,
            Stream::Gone => return Err(Failure::Closed),
        };
        n.map_err(|e| io_failure(&e))
    }

    /// Reads and discards everything until the server closes the connection or `deadline`
    /// passes; returns the bytes read and whether the server closed. Used by clients that never
    /// read during the attack and want to know afterwards whether the server hung up on them.
    pub(crate) async fn drain_until_closed(&mut self, deadline: Instant) -> (u64, bool) {
        let mut total = self.buf.len() as u64;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match timeout_at(deadline, self.read(&mut chunk)).await {
                Err(_) => return (total, false),
                Ok(Ok(0) | Err(_)) => return (total, true),
                Ok(Ok(n)) => total += n as u64,
            }
        }
    }

    /// Runs the TLS handshake after a `220` to STARTTLS.
    pub(crate) async fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), Failure> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(Failure::Garbage);
        };
        let tls = timeout(REPLY_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| io_failure(&e))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }
}

/// Parses one complete reply at the start of `buf`: `Ok(None)` asks for more bytes.
fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, Failure> {
    let mut start = 0;
    let mut code = None;
    while let Some(pos) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + pos];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += pos + 1;
        let digits = line.get(..3).ok_or(Failure::Garbage)?;
        let this: u16 = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or(Failure::Garbage)?;
        if code.is_some_and(|c| c != this) {
            return Err(Failure::Garbage);
        }
        code = Some(this);
        match line.get(3) {
            None | Some(b' ') => {
                let text = String::from_utf8_lossy(&buf[..start]);
                let text = text.trim_end_matches(['\r', '\n']).replace("\r\n", "\n");
                return Ok(Some((Reply { code: this, text }, start)));
            }
            Some(b'-') => {}
            Some(_) => return Err(Failure::Garbage),
        }
    }
    Ok(None)
}

/// Dot-stuffs `message` and appends the end-of-data marker (RFC 5321 4.5.2).
pub(crate) fn data_wire(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        at_line_start = b == b'\n';
    }
    if !message.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multi_line_replies() {
        assert_eq!(parse_reply(b"250 ok\r"), Ok(None));
        let (r, used) = parse_reply(b"250-a\r\n250 b\r\n354 go\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.code, r.text.as_str(), used), (250, "250-a\n250 b", 14));
        assert_eq!(r.last_line(), "250 b");
        assert_eq!(parse_reply(b"250-a\r\n251 b\r\n"), Err(Failure::Garbage));
        assert_eq!(parse_reply(b"hello\r\n"), Err(Failure::Garbage));
        assert_eq!(parse_reply(b"199 x\r\n"), Err(Failure::Garbage));
    }

    #[test]
    fn stuffs_dots_and_terminates() {
        assert_eq!(data_wire(b".a\r\nb\r\n..c"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(data_wire(b"x\r\n"), b"x\r\n.\r\n");
    }
}
