//! Harness for black-box tests of the `smtpd` binary: start it on free loopback ports, talk to
//! it over raw sockets or lettre, read its log, and always kill it when the test ends.
//!
//! Every wait is bounded: socket operations by [`IO_TIMEOUT`], process starts and exits by
//! [`START_TIMEOUT`] / explicit deadlines, polling loops by a deadline and a sleep.

pub(crate) mod relay;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Timeout for every socket read and write, and for one lettre send.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to accept connections, or a one-shot command to exit.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at starting on freshly picked ports: another process may grab a port between our
/// probe and the server's bind, which the server reports with exit code 3.
const START_ATTEMPTS: usize = 5;

/// The exit code `smtpd` uses when a listener cannot bind.
pub(crate) const EXIT_BIND: i32 = 3;

/// The binary under test.
pub(crate) fn smtpd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smtpd"));
    // The tests read the default log level; a RUST_LOG from the caller's shell must not change it.
    command.env_remove("RUST_LOG").env_remove("SMTPD_CONFIG");
    command
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    // Hold all probes at once so the kernel cannot hand out the same port twice.
    let probes: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a probe port"))
        .collect();
    probes
        .iter()
        .map(|l| l.local_addr().expect("probe address").port())
        .collect()
}

/// `127.0.0.1:<port>`.
pub(crate) fn addr(port: u16) -> String {
    SocketAddr::from(([127, 0, 0, 1], port)).to_string()
}

/// A running `smtpd`, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    /// The ports the server listens on, in the order the test asked for them.
    pub(crate) ports: Vec<u16>,
    log: PathBuf,
}

/// Distinguishes the log files of several servers (or restarts) in one working directory.
static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Starts `smtpd` in `dir` (its working directory) with the arguments `args` returns for
    /// `ports` fresh ports, and waits until every port accepts connections. Retries on new ports
    /// when one was taken in the meantime; panics (with the server's log) on any other failure.
    pub(crate) fn start(dir: &Path, ports: usize, args: impl Fn(&[u16]) -> Vec<String>) -> Self {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports(ports);
            let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
            let log = dir.join(format!("smtpd-{n}.log"));
            let child = smtpd()
                .args(args(&ports))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("create the log file"))
                .spawn()
                .expect("spawn smtpd");
            let mut server = Self { child, ports, log };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(Some(code)) if code == EXIT_BIND => last_log = server.log(),
                Err(code) => panic!("smtpd did not start (exit {code:?}):\n{}", server.log()),
            }
        }
        panic!("smtpd could not bind in {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// `Ok` once the server logs that it is ready (every listener bound); `Err(exit code)` if
    /// the process ended first. It does not probe the ports: a probe connection would hold a
    /// connection slot until the server noticed it closed, and tests of the limits would race it.
    fn wait_ready(&mut self) -> Result<(), Option<i32>> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll smtpd") {
                return Err(status.code());
            }
            if self.log().contains("smtpd ready") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(None)
    }

    /// [`Server::start`] with `--config DIR/FILE`, where the file holds what `text` returns for
    /// the ports: the configuration is written before each attempt, since it names the ports.
    pub(crate) fn with_config(
        dir: &Path,
        file: &str,
        ports: usize,
        text: impl Fn(&[u16]) -> String,
    ) -> Self {
        let config = dir.join(file);
        Self::start(dir, ports, |p| {
            fs::write(&config, text(p)).expect("write config");
            vec!["--config".into(), config.display().to_string()]
        })
    }

    /// The `i`th port.
    pub(crate) fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// The process ID, for `kill`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name such as `TERM` or `HUP`) with kill(1): the tests forbid `unsafe`,
    /// and std can only send SIGKILL.
    pub(crate) fn signal(&self, signal: &str) {
        let status = run_bounded(
            Command::new("kill").args([format!("-{signal}"), self.pid().to_string()]),
            None,
        )
        .status;
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL smtpd");
        self.child.wait().expect("reap smtpd");
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll smtpd") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "smtpd still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server has logged so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to [`IO_TIMEOUT`] until the log satisfies `done`, and returns it.
    pub(crate) fn wait_log(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {what}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors only mean it has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a one-shot command produced.
#[derive(Debug)]
pub(crate) struct Output {
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// Its standard output.
    pub(crate) stdout: String,
    /// Its standard error.
    pub(crate) stderr: String,
}

/// Runs `command` to completion, feeding it `stdin`, and kills it if it takes longer than
/// [`START_TIMEOUT`]. Output goes through temporary files so a chatty child cannot block on a
/// full pipe.
pub(crate) fn run_bounded(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write stdin");
        // Dropping the pipe sends EOF.
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read_to_string(out).unwrap_or_default(),
        stderr: fs::read_to_string(err).unwrap_or_default(),
    }
}

/// `smtpd hash-password` of `password`, for `[[user]] password_hash`.
pub(crate) fn hash_password(password: &str) -> String {
    let out = run_bounded(
        smtpd().arg("hash-password"),
        Some(format!("{password}\n").as_bytes()),
    );
    assert!(out.status.success(), "hash-password: {}", out.stderr);
    let hash = out.stdout.trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Runs `smtpd --config CONFIG ARGS` (a one-shot command such as `queue list`) in `dir`;
/// asserts it succeeds and returns its standard output.
pub(crate) fn config_command(dir: &Path, config: &str, args: &[&str]) -> String {
    let out = run_bounded(
        smtpd()
            .current_dir(dir)
            .args(["--config", config])
            .args(args),
        None,
    );
    assert!(out.status.success(), "{args:?}: {}", out.stderr);
    out.stdout
}

/// A tokio runtime with one worker, for the in-process servers (DNS, HTTPS) a test runs beside
/// the binary.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// The text of each line, after the code and separator.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// The text of the first line (where the enhanced status code is).
    pub(crate) fn text(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }
}

/// A blocking socket: TCP or Unix-domain.
pub(crate) trait Socket: Read + Write + std::fmt::Debug + Send {}
impl<T: Read + Write + std::fmt::Debug + Send> Socket for T {}

/// A plain-text SMTP client on a blocking socket with timeouts.
#[derive(Debug)]
pub(crate) struct Client {
    stream: Box<dyn Socket>,
    buf: Vec<u8>,
}

impl Client {
    /// Connects and reads the greeting, which must be 220.
    pub(crate) fn connect(port: u16) -> Self {
        let mut client = Self::connect_raw(port).expect("connect");
        let greeting = client.reply().expect("greeting");
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client
    }

    /// Connects without reading anything.
    pub(crate) fn connect_raw(port: u16) -> io::Result<Self> {
        let stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: Box::new(stream),
            buf: Vec::new(),
        })
    }

    /// Connects to the Unix-domain socket at `path` and reads the greeting, which must be 220.
    pub(crate) fn connect_unix(path: &Path) -> Self {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut client = Self {
            stream: Box::new(stream),
            buf: Vec::new(),
        };
        let greeting = client.reply().expect("greeting");
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client
    }

    /// The socket, for a TLS handshake after `220` to STARTTLS (nothing may be buffered).
    pub(crate) fn into_stream(self) -> Box<dyn Socket> {
        assert!(self.buf.is_empty(), "bytes after the STARTTLS reply");
        self.stream
    }

    /// Sends raw bytes.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply; `UnexpectedEof` if the server closed first.
    pub(crate) fn reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            let malformed = || io::Error::new(io::ErrorKind::InvalidData, line.clone());
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(malformed)?;
            let last = match line.as_bytes().get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(malformed()),
            };
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if last {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub(crate) fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line}: {e}"));
        self.reply()
            .unwrap_or_else(|e| panic!("reply to {line}: {e}"))
    }

    /// Sends a command and asserts the reply code.
    pub(crate) fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line);
        assert_eq!(reply.code, code, "{line} -> {reply:?}");
        reply
    }

    /// Sends `DATA`, the dot-stuffed `body` (which must end in CRLF) and the terminator, and
    /// returns the final reply.
    pub(crate) fn data(&mut self, body: &[u8]) -> Reply {
        self.expect("DATA", 354);
        self.send(&dot_stuff(body)).expect("send body");
        self.send(b".\r\n").expect("send terminator");
        self.reply().expect("reply to the end of data")
    }
}

/// Doubles every dot at the start of a line (RFC 5321 4.5.2).
pub(crate) fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// The regular files directly in `dir`, sorted; empty when `dir` does not exist.
pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every regular file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// A stored message split into the trace headers smtpd prepends (`Return-Path:` and a folded
/// `Received:`) and the content exactly as the client sent it.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The prepended header lines.
    pub(crate) trace: String,
    /// Everything after them.
    pub(crate) body: Vec<u8>,
}

impl Stored {
    /// Reads and splits a Maildir file; panics if the trace headers (`Return-Path:`, an optional
    /// `Delivered-To:`, `Received:`, then any `Authentication-Results:` and `Received-SPF:`) are
    /// not there.
    pub(crate) fn read(path: &Path) -> Self {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self::split(&bytes).unwrap_or_else(|| {
            panic!(
                "{} does not start with Return-Path: and Received: headers:\n{}",
                path.display(),
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    fn split(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let take_line = |rest: &mut &[u8]| -> Option<Vec<u8>> {
            let end = rest.windows(2).position(|w| w == b"\r\n")? + 2;
            let line = rest[..end].to_vec();
            *rest = &rest[end..];
            Some(line)
        };
        let mut trace = take_line(&mut rest)?;
        if !trace.starts_with(b"Return-Path: ") {
            return None;
        }
        if rest.starts_with(b"Delivered-To: ") {
            trace.extend_from_slice(&take_line(&mut rest)?);
        }
        let received = take_line(&mut rest)?;
        if !received.starts_with(b"Received: ") {
            return None;
        }
        trace.extend_from_slice(&received);
        while rest.starts_with(b"\t") || rest.starts_with(b" ") {
            trace.extend_from_slice(&take_line(&mut rest)?);
        }
        // The mail authentication results ([checks]) follow smtpd's Received:.
        while rest.starts_with(b"Authentication-Results: ") || rest.starts_with(b"Received-SPF: ") {
            trace.extend_from_slice(&take_line(&mut rest)?);
            while rest.starts_with(b"\t") || rest.starts_with(b" ") {
                trace.extend_from_slice(&take_line(&mut rest)?);
            }
        }
        Some(Self {
            trace: String::from_utf8(trace).ok()?,
            body: rest.to_vec(),
        })
    }

    /// The session ID from `Received: ... with <protocol> id <session>`.
    pub(crate) fn session_id(&self) -> &str {
        let after = self
            .trace
            .split(" id ")
            .nth(1)
            .unwrap_or_else(|| panic!("no id in {}", self.trace));
        after
            .split([';', '\r', ' '])
            .next()
            .expect("split yields one item")
    }
}

/// Asserts a Maildir file name ends in `,S=<size>` with the file's real size, and returns it.
pub(crate) fn assert_size_in_name(path: &Path) -> u64 {
    let name = path.file_name().expect("file name").to_string_lossy();
    let size: u64 = name
        .rsplit_once(",S=")
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or_else(|| panic!("no ,S=<size> in {name}"));
    let real = fs::metadata(path).expect("metadata").len();
    assert_eq!(size, real, "{name}");
    size
}

/// A test CA and a certificate for `localhost` it signed, written as PEM files.
#[derive(Debug)]
pub(crate) struct Pki {
    /// The CA certificate, PEM, for the client's trust store.
    pub(crate) ca_pem: String,
}

impl Pki {
    /// Writes `cert.pem` (the leaf) and `key.pem` into `dir`.
    pub(crate) fn write(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        fs::write(dir.join("cert.pem"), leaf.pem()).expect("write cert.pem");
        fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write key.pem");
        Self { ca_pem: ca.pem() }
    }

    /// lettre TLS parameters trusting only this CA, for the name `localhost`.
    pub(crate) fn tls_parameters(&self) -> TlsParameters {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(
                Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA certificate PEM"),
            )
            .build_rustls()
            .expect("TLS parameters")
    }
}

/// Sends `message` with lettre on a private single-threaded runtime, bounded by [`IO_TIMEOUT`].
pub(crate) fn lettre_send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
) -> Result<Response, lettre::transport::smtp::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(IO_TIMEOUT, transport.send(message))
            .await
            .expect("lettre send timed out")
    })
}

/// Asserts `text` contains `needle`, showing all of `text` otherwise.
#[track_caller]
pub(crate) fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{text}");
}

/// Shows bytes with CR and LF visible, for assertion messages.
pub(crate) fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n\n"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}
