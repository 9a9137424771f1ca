//! The server under test: an `smtpd` process with a generated configuration, its log in a file,
//! started, killed with SIGKILL and restarted on the same port.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a release `smtpd` may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// `smtpd`'s exit code when a listener cannot bind: the probed port was taken meanwhile.
const EXIT_BIND: i32 = 3;

/// The parts of `smtpd`'s TOML configuration the scenarios vary (see
/// `crates/smtpd/config/example.toml`); everything else keeps smtpd's defaults, so the suite
/// checks what an operator gets out of the box.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// Maildir root.
    pub(crate) maildir: PathBuf,
    pub(crate) message_size: u64,
    pub(crate) connections: u32,
    pub(crate) connections_per_ip: u32,
    /// `[limits.timeouts] command`, seconds.
    pub(crate) command_timeout: u64,
    /// `[limits.timeouts] data_block`, seconds.
    pub(crate) data_timeout: u64,
    /// `[limits.timeouts] storage`, seconds: how long one message's write and fsync may take
    /// (smtpd requires it below `data_block`).
    pub(crate) storage_timeout: u64,
    /// A submission listener with STARTTLS and its accounts, for the AUTH storm.
    pub(crate) submission: Option<Submission>,
}

/// TLS files and accounts (all with one password hash) for a submission listener.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) users: Vec<String>,
    pub(crate) password_hash: String,
}

impl Setup {
    /// Defaults for the scenarios: wildcard routing, short timeouts (so a trickle that resets
    /// the timer is obviously not cut by it), generous connection limits.
    pub(crate) fn new(maildir: PathBuf) -> Self {
        Self {
            maildir,
            message_size: 4 << 20,
            connections: 1000,
            connections_per_ip: 50,
            command_timeout: 5,
            data_timeout: 10,
            // Far above a loaded disk's fsync time, so only a stalled store meets it.
            storage_timeout: 8,
            submission: None,
        }
    }

    /// The configuration file's text for listeners at `smtp` (and `submission`).
    fn toml(&self, smtp: SocketAddr, submission: Option<SocketAddr>) -> String {
        let mut t = String::new();
        let q = |p: &Path| toml_string(&p.to_string_lossy());
        let _ = writeln!(t, "hostname = \"mx.torture.test\"\nlog_format = \"text\"");
        let _ = writeln!(t, "[[listener]]\naddress = \"{smtp}\"\nkind = \"smtp\"");
        if let (Some(sub), Some(addr)) = (&self.submission, submission) {
            let _ = writeln!(
                t,
                "[[listener]]\naddress = \"{addr}\"\nkind = \"submission\"\ntls = true\n\
                 [tls]\ncert = {}\nkey = {}",
                q(&sub.cert),
                q(&sub.key),
            );
            for user in &sub.users {
                let _ = writeln!(
                    t,
                    "[[user]]\nname = {}\npassword_hash = {}",
                    toml_string(user),
                    toml_string(&sub.password_hash)
                );
            }
        }
        let _ = writeln!(t, "[routing]\nwildcard = true");
        let _ = writeln!(t, "[storage]\nmaildir = {}\nfsync = true", q(&self.maildir));
        let _ = writeln!(
            t,
            "[limits]\nmessage_size = {}\nconnections = {}\nconnections_per_ip = {}",
            self.message_size, self.connections, self.connections_per_ip
        );
        let _ = writeln!(
            t,
            "[limits.timeouts]\ncommand = {}\ndata_block = {}\nstorage = {}",
            self.command_timeout, self.data_timeout, self.storage_timeout
        );
        t
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running `smtpd`; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Smtpd {
    exe: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// The plain SMTP listener.
    pub(crate) addr: SocketAddr,
    /// The submission listener, when the setup has one.
    pub(crate) submission: Option<SocketAddr>,
    config: PathBuf,
    log: PathBuf,
}

impl Smtpd {
    /// Writes the configuration into `dir` and starts the server there on free loopback ports.
    pub(crate) fn start(exe: &Path, dir: &Path, setup: &Setup) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let ports = free_ports(if setup.submission.is_some() { 2 } else { 1 })?;
            let addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
            let submission = ports.get(1).map(|&p| SocketAddr::from(([127, 0, 0, 1], p)));
            let config = dir.join("smtpd.toml");
            fs::write(&config, setup.toml(addr, submission))
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let mut server = Self {
                exe: exe.to_owned(),
                dir: dir.to_owned(),
                child: None,
                addr,
                submission,
                config,
                log: dir.join("smtpd.log"),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(Started::PortTaken) => last = "port taken".into(),
                Err(Started::Failed(e)) => return Err(e),
            }
        }
        Err(format!(
            "smtpd could not bind a free port five times: {last}"
        ))
    }

    /// Starts the process (again) with the same configuration and ports, appending to its log.
    fn spawn(&mut self) -> Result<(), Started> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Started::Failed(format!("{}: {e}", self.log.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| Started::Failed(e.to_string()))?;
        let child = Command::new(&self.exe)
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .env_remove("SMTPD_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Started::Failed(format!("{}: {e}", self.exe.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let targets: Vec<SocketAddr> = std::iter::once(self.addr).chain(self.submission).collect();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(if status.code() == Some(EXIT_BIND) {
                    Started::PortTaken
                } else {
                    Started::Failed(format!(
                        "smtpd exited at start ({status}): {}",
                        self.log_tail(20)
                    ))
                });
            }
            if targets
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Started::Failed(format!(
                    "smtpd did not listen within {START_TIMEOUT:?}: {}",
                    self.log_tail(20)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts after [`Self::kill9`], on the same ports.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old listener's port can linger for a moment after SIGKILL.
                Err(Started::PortTaken) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Started::PortTaken) => return Err("port still taken after restart".into()),
                Err(Started::Failed(e)) => return Err(e),
            }
        }
    }

    /// SIGKILL: no shutdown, no flush, exactly like a crash or the OOM killer.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (10 s at most, then SIGKILL) for a graceful exit, which also flushes
    /// the log writer: checks on the log run after this.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // `kill(1)`: sending a signal from Rust would need `unsafe` or another dependency.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The process id, for /proc.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The whole log so far (stdout and stderr of every start).
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        self.kill9();
    }
}

enum Started {
    PortTaken,
    Failed(String),
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    // Hold every probe at once so the kernel cannot hand out the same port twice.
    let probes = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot probe a free port: {e}"))?;
    probes
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// Hashes `password` with the binary's own `hash-password`, so the storm checks exactly the
/// Argon2 parameters the server uses.
pub(crate) fn hash_password(exe: &Path, password: &str) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = Command::new(exe)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "smtpd hash-password failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\u{7}"), r#""x\u0007""#);
    }

    #[test]
    fn config_has_listeners_and_limits() {
        let mut setup = Setup::new("/tmp/m d".into());
        setup.submission = Some(Submission {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
            users: vec!["u@x".into(), "v@x".into()],
            password_hash: "$argon2id$x".into(),
        });
        let text = setup.toml(
            "127.0.0.1:25".parse().unwrap(),
            Some("127.0.0.1:587".parse().unwrap()),
        );
        for want in [
            "address = \"127.0.0.1:25\"",
            "kind = \"submission\"",
            "maildir = \"/tmp/m d\"",
            "command = 5",
            "storage = 8",
            "password_hash = \"$argon2id$x\"",
            "name = \"v@x\"",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
