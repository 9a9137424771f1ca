//! Black-box tests of running `smtpd` in production: the Prometheus endpoint, the switch from
//! root after binding, and systemd socket activation.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Client, IO_TIMEOUT, START_TIMEOUT, Server, addr, assert_contains, files_in, files_under,
};

/// One plain HTTP/1.1 GET, as a scraper sends it; the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), IO_TIMEOUT)
            .expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head:?}"));
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status, body.to_owned())
}

/// The value of the sample `series` (name with labels, exactly as exposed), if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Sends one message on a new session; returns the final reply code.
fn send(port: u16, body: &[u8]) -> u16 {
    let mut c = Client::connect(port);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@client.test>", 250);
    c.expect("RCPT TO:<b@example.test>", 250);
    let code = c.data(body).code;
    c.expect("QUIT", 221);
    code
}

fn metrics_config(dir: &Path, ports: &[u16]) -> Vec<String> {
    let path = dir.join("smtpd.toml");
    fs::write(
        &path,
        format!(
            "hostname = \"mx.test\"\nlog_format = \"json\"\n\n[[listener]]\naddress = \"{}\"\n\n\
             [storage]\nmaildir = \"md\"\n\n[metrics]\nlisten = \"{}\"\n",
            addr(ports[0]),
            addr(ports[1])
        ),
    )
    .expect("write config");
    vec!["--config".into(), path.display().to_string()]
}

/// The endpoint's counters match what was sent: three stored messages, one refused (bare LF),
/// their octets, four sessions with their durations, and a storage latency per decided message.
/// On SIGTERM the JSON log's last line carries the same counts as fields.
#[test]
fn metrics_endpoint_counts_what_was_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 2, |ports| metrics_config(dir.path(), ports));
    let (smtp, http) = (server.port(0), server.port(1));

    let (status, before) = http_get(http, "/metrics");
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        sample(&before, "smtp_messages_total{outcome=\"accepted\"}"),
        None,
        "nothing counted before the first message:\n{before}"
    );
    let body = b"Subject: m\r\n\r\nhello\r\n";
    for _ in 0..3 {
        assert_eq!(send(smtp, body), 250);
    }
    let refused = send(smtp, b"Subject: bare\r\n\r\na\nb\r\n");
    assert!((500..600).contains(&refused), "bare LF refused: {refused}");

    // Session ends are recorded as the server closes them, a moment after QUIT's reply.
    let deadline = Instant::now() + IO_TIMEOUT;
    let text = loop {
        let (_, text) = http_get(http, "/metrics");
        if sample(&text, "smtp_session_duration_seconds_count") == Some(4.0)
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    };
    expect("smtp_messages_total{outcome=\"accepted\"}", 3.0);
    expect("smtp_messages_total{outcome=\"rejected\"}", 1.0);
    expect("smtp_connections_total", 4.0);
    expect("smtp_sessions_total", 4.0);
    expect("smtp_connections_open", 0.0);
    expect("smtp_session_duration_seconds_count", 4.0);
    // Only messages the application answered have a storage latency: the bare LF is the core's.
    expect("smtp_message_decision_seconds_count", 3.0);
    let bytes = sample(&text, "smtp_received_bytes_total").expect("bytes counted");
    assert!(
        bytes >= 3.0 * body.len() as f64,
        "at least the three bodies: {bytes}"
    );
    assert!(
        text.contains("# TYPE smtp_message_decision_seconds histogram")
            && text.contains("smtp_message_decision_seconds_bucket{le=\"+Inf\"} 3"),
        "a real histogram with buckets:\n{text}"
    );
    assert!(
        text.contains("# HELP smtp_sessions_total"),
        "described:\n{text}"
    );
    assert_eq!(http_get(http, "/other").0, 404);

    let mut server = server;
    server.signal("TERM");
    assert!(server.wait_exit(START_TIMEOUT).success());
    let log = server.log();
    let stopped: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "stopped")
        .unwrap_or_else(|| panic!("no stopped line:\n{log}"));
    let fields = &stopped["fields"];
    assert_eq!(fields["messages_accepted"], 3, "{stopped}");
    assert_eq!(fields["messages_rejected"], 1, "{stopped}");
    assert_eq!(fields["sessions"], 4, "{stopped}");
    assert_eq!(fields["tls_handshakes"], 0, "{stopped}");
}

/// The `Uid:`/`Gid:`/`Groups:` lines of `/proc/PID/status`.
fn ids(pid: u32) -> (String, String, String) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {key} in {status}"))
    };
    (line("Uid:"), line("Gid:"), line("Groups:"))
}

/// Started as root with `[privileges] user = "nobody"`, smtpd binds, then runs as nobody (real,
/// effective, saved and filesystem ids) with no supplementary groups, and the mail it stores
/// belongs to nobody.
#[test]
fn started_as_root_it_runs_as_the_configured_user() {
    let uid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|v| v.split_whitespace().nth(1).unwrap_or("").to_owned())
    });
    if uid.as_deref() != Some("0") {
        eprintln!("skipped: the privilege drop needs root (effective uid {uid:?})");
        return;
    }
    let Some(nobody) = fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines()
            .find(|l| l.starts_with("nobody:"))
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
    }) else {
        eprintln!("skipped: no `nobody` account on this machine");
        return;
    };
    let (nobody_uid, nobody_gid) = (nobody[2].clone(), nobody[3].clone());
    let dir = tempfile::tempdir().expect("temp dir");
    // The temporary directory is root's (0700); nobody must reach the Maildir root in it.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let maildir = dir.path().join("md");
    fs::create_dir(&maildir).expect("maildir");
    fs::set_permissions(&maildir, fs::Permissions::from_mode(0o777)).expect("chmod md");
    let server = Server::start(dir.path(), 1, |ports| {
        let path = dir.path().join("smtpd.toml");
        fs::write(
            &path,
            format!(
                "hostname = \"mx.test\"\n\n[[listener]]\naddress = \"{}\"\n\n[storage]\n\
                 maildir = \"md\"\n\n[privileges]\nuser = \"nobody\"\n",
                addr(ports[0])
            ),
        )
        .expect("write config");
        vec!["--config".into(), path.display().to_string()]
    });
    let (uids, gids, groups) = ids(server.pid());
    let all = |id: &str| [id; 4].join(" ");
    assert_eq!(uids, all(&nobody_uid), "Uid: real effective saved fs");
    assert_eq!(gids, all(&nobody_gid), "Gid: real effective saved fs");
    assert_eq!(groups, nobody_gid, "supplementary groups: the one group");
    assert!(
        server.log().contains("switched from root"),
        "{}",
        server.log()
    );

    assert_eq!(send(server.port(0), b"Subject: owned\r\n\r\nhi\r\n"), 250);
    let stored = files_in(&maildir.join("example.test/b/new"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(&stored[0]).expect("stat").uid();
    assert_eq!(owner.to_string(), nobody_uid, "the stored file is nobody's");
}

/// A child started the way systemd starts a socket-activated service: the listening socket
/// as file descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid and `LISTEN_FDNAMES`.
/// Python does the fd plumbing and then execs smtpd in place (the same pid), because the
/// tests forbid `unsafe` and std cannot place a descriptor at 3.
struct Activated {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn activate(dir: &Path, port: u16, fd_name: &str, config: &Path) -> Option<Activated> {
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 is not installed");
        return None;
    }
    let script = r#"
import os, socket, sys
exe, port, name, config = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=name)
os.execv(exe, [exe, "--config", config])
"#;
    let log = dir.join("activated.log");
    let child = Command::new("python3")
        .args([
            "-c",
            script,
            env!("CARGO_BIN_EXE_smtpd"),
            &port.to_string(),
            fd_name,
        ])
        .arg(config)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn python3");
    Some(Activated { child, log })
}

/// The inherited socket named `smtp` serves the listener named `smtp`, whatever address the
/// configuration gives it; an inherited socket no listener claims stops the start (exit 3).
#[test]
fn socket_activation_serves_the_inherited_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // The configured address is a port nobody uses: smtpd must not bind it but take fd 3.
    let config = dir.path().join("smtpd.toml");
    fs::write(
        &config,
        "hostname = \"mx.test\"\n\n[[listener]]\naddress = \"127.0.0.1:1\"\nname = \"smtp\"\n\n\
         [storage]\nmaildir = \"md\"\n",
    )
    .expect("write config");
    let Some(mut activated) = activate(dir.path(), port, "smtp", &config) else {
        return;
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while !fs::read_to_string(&activated.log)
        .unwrap_or_default()
        .contains("smtpd ready")
    {
        if let Some(status) = activated.child.try_wait().expect("poll") {
            panic!(
                "smtpd exited ({status}):\n{}",
                fs::read_to_string(&activated.log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "smtpd never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = fs::read_to_string(&activated.log).unwrap_or_default();
    assert!(log.contains(&format!("addr={}", addr(port))), "{log}");
    assert!(
        !log.contains("127.0.0.1:1 "),
        "the configured address is not bound: {log}"
    );
    assert_eq!(send(port, b"Subject: activated\r\n\r\nhi\r\n"), 250);
    assert_eq!(files_in(&dir.path().join("md/example.test/b/new")).len(), 1);
    drop(activated);

    // A socket the configuration does not know is refused, naming it.
    let Some(mut stray) = activate(dir.path(), port, "stray", &config) else {
        return;
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = stray.child.try_wait().expect("poll") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "smtpd did not refuse the stray socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = fs::read_to_string(&stray.log).unwrap_or_default();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("`stray`"), "{log}");
}

/// The socket unit and the service it activates pass `systemd-analyze verify` together, and
/// the socket unit's addresses are the example configuration's listeners, so the example
/// works under socket activation as it is.
#[test]
fn socket_unit_verifies_and_matches_the_example_listeners() {
    let contrib = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/systemd");
    let socket = fs::read_to_string(format!("{contrib}/smtpd.socket")).expect("read socket");
    let service = fs::read_to_string(format!("{contrib}/smtpd.service")).expect("read service");
    let example = smtpd::config::Config::from_str(include_str!("../config/example.toml"))
        .expect("example parses");
    let inherited: Vec<&str> = socket
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .collect();
    assert!(!inherited.is_empty());
    for address in &inherited {
        let address: SocketAddr = address.parse().expect("an ip:port ListenStream");
        assert!(
            example
                .listeners
                .iter()
                .any(|l| l.address.tcp() == Some(address)),
            "{address} is no listener of config/example.toml"
        );
    }
    let verify = Command::new("systemd-analyze").arg("--version").output();
    if !verify.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: systemd-analyze not found; the unit files were not verified");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("smtpd.socket"), &socket).expect("write socket");
    fs::write(
        dir.path().join("smtpd.service"),
        service.replace("/usr/local/bin/smtpd", env!("CARGO_BIN_EXE_smtpd")),
    )
    .expect("write service");
    let out = common::run_bounded(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("smtpd.socket"))
            .arg(dir.path().join("smtpd.service")),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    // It exits 0 on unknown settings too, and says so on stderr.
    assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
}

/// A throw-away Dovecot instance (no listeners, its sockets in a temporary directory), stopped
/// when dropped so nothing keeps running after the test.
struct Dovecot {
    config: std::path::PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = common::run_bounded(
            Command::new("doveadm")
                .arg("-c")
                .arg(&self.config)
                .arg("stop"),
            None,
        );
    }
}

/// Whether `dovecot` and `doveadm` are on PATH at all (doveadm has no --version: any exit
/// status will do); says why the test is skipped when they are not.
fn dovecot_installed() -> bool {
    let present = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let installed = present("dovecot") && present("doveadm");
    if !installed {
        eprintln!("skipped: Dovecot is not installed (apt-get install dovecot-core)");
    }
    installed
}

/// Dovecot reads what smtpd's Maildir writer stored: `doveadm fetch` finds the message, its
/// Subject and its body, with `mail_location` pointing at one of smtpd's mailboxes as
/// `contrib/dovecot/smtpd.conf` describes.
#[test]
fn dovecot_reads_a_message_smtpd_stored() {
    if !dovecot_installed() {
        return;
    }
    let root = fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !root {
        eprintln!("skipped: the Dovecot check runs Dovecot's master, which needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 1, |ports| {
        vec![
            "--listen".into(),
            addr(ports[0]),
            "--maildir".into(),
            "md".into(),
        ]
    });
    let body = b"Subject: read by dovecot\r\n\r\nstored by smtpd\r\n";
    assert_eq!(send(server.port(0), body), 250);
    let mailbox = dir.path().join("md/example.test/b");
    assert_eq!(files_in(&mailbox.join("new")).len(), 1);
    // Dovecot's mail processes refuse uid 0: the mailbox (and the private directories above
    // it) are nobody's for the test.
    for entry in [
        dir.path().join("md"),
        dir.path().join("md/example.test"),
        mailbox.clone(),
        mailbox.join("new"),
        mailbox.join("cur"),
        mailbox.join("tmp"),
    ]
    .into_iter()
    .chain(files_in(&mailbox.join("new")))
    {
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).expect("chown");
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.path().join("dovecot.conf");
    fs::write(
        &config,
        format!(
            "base_dir = {d}/dovecot-run\nstate_dir = {d}/dovecot-state\n\
             log_path = {d}/dovecot.log\nprotocols =\nssl = no\n\
             mail_location = maildir:{m}\n\
             userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={m}\n}}\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n",
            d = dir.path().display(),
            m = mailbox.display()
        ),
    )
    .expect("write dovecot.conf");
    let started = common::run_bounded(Command::new("dovecot").arg("-c").arg(&config), None);
    assert!(started.status.success(), "dovecot: {}", started.stderr);
    let _dovecot = Dovecot {
        config: config.clone(),
    };
    let fetched = common::run_bounded(
        Command::new("doveadm").arg("-c").arg(&config).args([
            "fetch",
            "-u",
            "smtpd-test",
            "hdr.subject body",
            "all",
        ]),
        None,
    );
    assert!(
        fetched.status.success(),
        "{}\n{}",
        fetched.stderr,
        fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default()
    );
    assert_contains(&fetched.stdout, "hdr.subject: read by dovecot");
    assert_contains(&fetched.stdout, "stored by smtpd");
}

/// Dovecot's LMTP service takes what smtpd hands it: smtpd delivers over Dovecot's LMTP Unix
/// socket (`[storage] lmtp`), `doveadm fetch` reads the message back from the user's Maildir
/// with smtpd's trace headers, and nothing went to smtpd's own Maildir.
#[test]
fn dovecot_reads_a_message_smtpd_delivered_over_lmtp() {
    if !dovecot_installed() {
        return;
    }
    if !Path::new("/usr/lib/dovecot/lmtp").exists() {
        eprintln!(
            "skipped: Dovecot's LMTP service is not installed (apt-get install dovecot-lmtpd)"
        );
        return;
    }
    let root = fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !root {
        eprintln!("skipped: the Dovecot check runs Dovecot's master, which needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    // Dovecot's mail processes refuse uid 0: the users' homes are nobody's.
    let homes = dir.path().join("mail");
    fs::create_dir(&homes).expect("mkdir");
    std::os::unix::fs::chown(&homes, Some(65534), Some(65534)).expect("chown");
    let run = dir.path().join("dovecot-run");
    let config = dir.path().join("dovecot.conf");
    fs::write(
        &config,
        format!(
            "base_dir = {r}\nstate_dir = {d}/dovecot-state\n\
             log_path = {d}/dovecot.log\nprotocols = lmtp\nssl = no\n\
             mail_location = maildir:~/Maildir\nmail_save_crlf = yes\n\
             userdb {{\n  driver = static\n  \
             args = uid=65534 gid=65534 home={h}/%d/%n allow_all_users=yes\n}}\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             service lmtp {{\n  unix_listener lmtp {{\n    mode = 0666\n  }}\n}}\n",
            r = run.display(),
            d = dir.path().display(),
            h = homes.display()
        ),
    )
    .expect("write dovecot.conf");
    let started = common::run_bounded(Command::new("dovecot").arg("-c").arg(&config), None);
    assert!(started.status.success(), "dovecot: {}", started.stderr);
    let _dovecot = Dovecot {
        config: config.clone(),
    };
    let socket = run.join("lmtp");
    let deadline = Instant::now() + START_TIMEOUT;
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let smtpd_config = dir.path().join("smtpd.toml");
    let server = Server::start(dir.path(), 1, |ports| {
        fs::write(
            &smtpd_config,
            format!(
                "hostname = \"mx.test\"\n\n[[listener]]\naddress = \"{}\"\n\n\
                 [storage]\nmaildir = \"md\"\nlmtp = \"unix:{}\"\n",
                addr(ports[0]),
                socket.display()
            ),
        )
        .expect("write config");
        vec!["--config".into(), smtpd_config.display().to_string()]
    });
    let body = b"Subject: delivered by lmtp\r\n\r\nhanded to dovecot\r\n";
    let mut c = Client::connect(server.port(0));
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@client.test>", 250);
    c.expect("RCPT TO:<b+news@example.test>", 250);
    let reply = c.data(body);
    c.expect("QUIT", 221);
    let dovecot_log = || fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default();
    assert_eq!(
        reply.code,
        250,
        "{reply:?}\n{}\n{}",
        server.log(),
        dovecot_log()
    );
    assert!(
        files_under(&dir.path().join("md")).is_empty(),
        "smtpd's Maildir stays empty"
    );
    let fetched = common::run_bounded(
        Command::new("doveadm").arg("-c").arg(&config).args([
            "fetch",
            "-u",
            "b@example.test",
            "hdr body",
            "all",
        ]),
        None,
    );
    assert!(
        fetched.status.success(),
        "{}\n{}",
        fetched.stderr,
        dovecot_log()
    );
    for part in [
        "Subject: delivered by lmtp",
        "handed to dovecot",
        "Return-Path: <a@client.test>",
        "by mx.test with ESMTP id",
    ] {
        assert!(fetched.stdout.contains(part), "{part}:\n{}", fetched.stdout);
    }
}

/// `check-config` reports every routing error of the file in one run, not the first only.
#[test]
fn check_config_reports_every_routing_error_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    fs::write(
        &path,
        "hostname = \"mx.test\"\n\n[storage]\nmaildir = \"md\"\n\n\
         [[domain]]\nname = \"a.test\"\nmailboxes = [\"x\"]\ncatch_all = \"ghost\"\n\n\
         [domain.aliases]\nteam = [\"x@elsewhere.test\"]\n\n\
         [[domain]]\nname = \"b.test\"\nmailboxes = [\"y\"]\n\n\
         [domain.aliases]\nsales = [\"nobody\"]\n",
    )
    .expect("write config");
    let out = common::run_bounded(
        common::smtpd()
            .current_dir(dir.path())
            .arg("check-config")
            .arg(&path),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    for part in [
        "3 routing errors",
        "`catch_all of a.test` points at `ghost@a.test`",
        "`team@a.test` points at `x@elsewhere.test`",
        "`sales@b.test` points at `nobody@b.test`",
    ] {
        assert!(out.stderr.contains(part), "{part}:\n{}", out.stderr);
    }
}
