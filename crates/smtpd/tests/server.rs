//! Black-box tests of the `smtpd` binary: each test starts the real process on free loopback
//! ports in a temporary working directory and talks to it with lettre, Python's smtplib or a
//! raw socket, then inspects the Maildirs and the log it wrote.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Client, Pki, START_TIMEOUT, Server, Stored, addr, assert_contains, assert_size_in_name,
    escaped, files_in, files_under, hash_password, lettre_send, run_bounded, smtpd,
};
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, Message, Tokio1Executor};

fn message(from: &str, to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from(from.parse::<Mailbox>().expect("from"))
        .to(to.parse::<Mailbox>().expect("to"))
        .subject(subject)
        .singlepart(
            SinglePart::builder()
                .header(ContentTransferEncoding::EightBit)
                .body(body.to_owned()),
        )
        .expect("message")
}

/// What the server stores for a lettre message: lettre ends the data with CRLF "." CRLF
/// whatever the content ends with, and that CRLF belongs to the content (RFC 5321 4.1.1.4).
fn lettre_content(message: &Message) -> Vec<u8> {
    let mut bytes = message.formatted();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn plain_transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::None)
        .timeout(Some(common::IO_TIMEOUT))
        .build()
}

/// The single file in `mailbox/new/`, after checking `tmp/` is empty.
fn only_message(mailbox: &Path) -> std::path::PathBuf {
    let new = files_in(&mailbox.join("new"));
    assert_eq!(new.len(), 1, "{}: {new:?}", mailbox.display());
    assert_eq!(
        files_in(&mailbox.join("tmp")),
        Vec::<std::path::PathBuf>::new()
    );
    new.into_iter().next().expect("one file")
}

fn assert_body(stored: &Stored, expected: &[u8]) {
    assert!(
        stored.body == expected,
        "stored content differs:\n--- stored\n{}\n--- sent\n{}",
        escaped(&stored.body),
        escaped(expected)
    );
}

/// Log lines of one smtpd event (`session` or `message`) in the text format, for one session.
fn text_events<'a>(log: &'a str, event: &str, session: &str) -> Vec<&'a str> {
    let target = format!("smtpd::receiver: {event} ");
    let id = format!("session={session} ");
    log.lines()
        .filter(|l| l.contains(&target) && l.contains(&id))
        .collect()
}

#[test]
fn default_config_stores_byte_exact_and_logs_session_and_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 1, |p| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    });
    let m = message(
        "Alice <alice@sender.test>",
        "bob@example.test",
        "Quarterly report",
        "Grüße aus Köln\r\n.a line starting with a dot\r\n..two dots\r\n\r\nbye\r\n",
    );
    let expected = lettre_content(&m);
    let response = lettre_send(&plain_transport(server.port(0)), m).expect("send");
    assert_eq!(response.code().to_string(), "250");

    let file = only_message(&dir.path().join("md/example.test/bob"));
    let stored = Stored::read(&file);
    assert_body(&stored, &expected);
    assert!(
        stored.trace.starts_with(
            "Return-Path: <alice@sender.test>\r\nDelivered-To: bob@example.test\r\nReceived: from "
        ),
        "{}",
        stored.trace
    );
    assert!(
        stored.trace.contains("with ESMTP id ") && stored.trace.contains("for <bob@example.test>;"),
        "{}",
        stored.trace
    );
    let size = assert_size_in_name(&file);
    let session = stored.session_id().to_owned();

    // The session line is written when the connection closes, after lettre's QUIT.
    let log = server.wait_log("the session line", |log| {
        !text_events(log, "session", &session).is_empty()
    });
    assert!(
        !log.contains('\x1b'),
        "no colour codes in a log file:\n{log}"
    );
    let sessions = text_events(&log, "session", &session);
    assert_eq!(sessions.len(), 1, "{log}");
    assert_contains(sessions[0], "messages=1");
    let messages = text_events(&log, "message", &session);
    assert_eq!(messages.len(), 1, "{log}");
    for needle in [
        "from=\"<alice@sender.test>\"".to_owned(),
        "to=\"<bob@example.test>\"".to_owned(),
        "subject=\"Quarterly report\"".to_owned(),
        format!("size={size}"),
        "outcome=\"stored\"".to_owned(),
    ] {
        assert!(messages[0].contains(&needle), "{needle} in {}", messages[0]);
    }
}

/// Text from the network never reaches the log or a header raw: a Subject with terminal escapes
/// and a forged `key=value`, and an EHLO name with a C1 control character.
#[test]
fn log_and_header_injection_is_neutralized() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 1, |p| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    });
    let mut c = Client::connect(server.port(0));
    c.send("EHLO ex\u{85}ample.test\r\n".as_bytes()).unwrap();
    let ehlo = c.reply().unwrap();
    let ehlo_accepted = ehlo.code == 250;
    if !ehlo_accepted {
        c.send(b"EHLO client.test\r\n").unwrap();
        assert_eq!(c.reply().unwrap().code, 250);
    }
    c.send(b"MAIL FROM:<a@sender.test>\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.send(b"RCPT TO:<b@example.test>\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.send(b"DATA\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 354);
    c.send(b"Subject: \x1b[2J\x1b[31mFAKE\x07 INFO smtpd::receiver: message outcome=stored\r\n\r\nhi\r\n.\r\n")
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.send(b"QUIT\r\n").unwrap();
    let _ = c.reply();

    let stored = Stored::read(&only_message(&dir.path().join("md/example.test/b")));
    let session = stored.session_id().to_owned();
    assert!(
        stored
            .trace
            .contains("Received: from [127.0.0.1] (unknown [127.0.0.1])")
            || (!ehlo_accepted
                && stored
                    .trace
                    .contains("Received: from client.test (unknown [127.0.0.1])")),
        "{}",
        stored.trace
    );
    assert!(!stored.trace.contains('\u{85}'), "{}", stored.trace);
    let log = server.wait_log("the session line", |log| {
        !text_events(log, "session", &session).is_empty()
    });
    assert!(
        !log.contains('\x1b') && !log.contains('\x07') && !log.contains('\u{85}'),
        "{log}"
    );
    let messages = text_events(&log, "message", &session);
    assert_eq!(messages.len(), 1, "{log}");
    assert_contains(
        messages[0],
        r#"subject="\u{1b}[2J\u{1b}[31mFAKE\u{7} INFO smtpd::receiver: message outcome=stored""#,
    );
    // The forged field is inside the quoted subject; the real one comes after it, once.
    assert_eq!(
        messages[0].matches("outcome=\"stored\"").count(),
        1,
        "{}",
        messages[0]
    );
}

/// A JSON-logging server on `port` with example.test (alice, bob, alias team) and catch.test
/// (catch-all inbox), then `extra`.
fn domains_config(port: u16, extra: &str) -> String {
    format!(
        r#"hostname = "mx.test"
log_format = "json"

[[listener]]
address = "{}"

[storage]
maildir = "md"

[[domain]]
name = "example.test"
mailboxes = ["alice", "bob"]

[domain.aliases]
team = ["alice", "bob"]

[[domain]]
name = "catch.test"
mailboxes = ["inbox"]
catch_all = "inbox"
{extra}"#,
        addr(port)
    )
}

/// The `message` events of a JSON log, as their `fields` objects.
fn json_messages(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["target"] == "smtpd::receiver" && v["fields"]["message"] == "message")
        .map(|v| v["fields"].clone())
        .collect()
}

#[test]
fn domains_aliases_catch_all_postmaster_and_relay_refusal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| domains_config(p[0], ""));
    let mut c = Client::connect(server.port(0));
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<sender@sender.test>", 250);
    c.expect("RCPT TO:<Alice@Example.TEST>", 250);
    // An alias for two mailboxes, one of them already a recipient: one copy each.
    c.expect("RCPT TO:<team@example.test>", 250);
    let unknown = c.expect("RCPT TO:<nobody@example.test>", 550);
    assert!(unknown.text().starts_with("5.1.1 "), "{unknown:?}");
    let relay = c.expect("RCPT TO:<someone@elsewhere.test>", 550);
    assert!(relay.text().starts_with("5.7.1 "), "{relay:?}");
    let first = b"Subject: to the team\r\n\r\nhello team\r\n.dot\r\n".as_slice();
    assert_eq!(c.data(first).code, 250);

    c.expect("MAIL FROM:<>", 250);
    c.expect("RCPT TO:<whoever@CATCH.test>", 250);
    // No postmaster is configured for example.test: it still works (RFC 5321 4.5.1).
    c.expect("RCPT TO:<postmaster@example.test>", 250);
    // The bare form, although the host name mx.test is not a local domain: the first domain's
    // postmaster, the same mailbox, so still one copy.
    c.expect("RCPT TO:<Postmaster>", 250);
    let second = b"Subject: second\r\n\r\nfor the catch-all and the postmaster\r\n".as_slice();
    assert_eq!(c.data(second).code, 250);
    c.expect("QUIT", 221);

    let md = dir.path().join("md");
    for (mailbox, body) in [
        ("example.test/alice", first),
        ("example.test/bob", first),
        ("catch.test/inbox", second),
        ("example.test/postmaster", second),
    ] {
        let stored = Stored::read(&only_message(&md.join(mailbox)));
        assert_body(&stored, body);
    }
    assert!(!md.join("example.test/nobody").exists());
    assert!(!md.join("elsewhere.test").exists());
    // Nothing else was delivered anywhere.
    let delivered: Vec<_> = files_under(&md)
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("new")))
        .collect();
    assert_eq!(delivered.len(), 4, "{delivered:?}");

    let log = server.wait_log("two message lines", |log| json_messages(log).len() == 2);
    let messages = json_messages(&log);
    assert_eq!(messages[0]["from"], "<sender@sender.test>");
    assert_eq!(
        messages[0]["to"],
        "<Alice@Example.TEST>,<team@example.test>"
    );
    assert_eq!(messages[0]["subject"], "to the team");
    assert_eq!(messages[1]["from"], "<>");
    assert_eq!(messages[1]["subject"], "second");
    assert_eq!(messages[0]["session"], messages[1]["session"]);
}

fn tls_transport(
    port: u16,
    tls: Tls,
    credentials: Option<(&str, &str)>,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .timeout(Some(common::IO_TIMEOUT));
    if let Some((user, password)) = credentials {
        builder = builder
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain]);
    }
    builder.build()
}

#[test]
fn submission_needs_starttls_and_auth_and_smtps_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    let hash = hash_password("correct horse");
    let server = Server::with_config(dir.path(), "smtpd.toml", 2, |p| {
        format!(
            r#"hostname = "mx.test"

[[listener]]
address = "{}"
kind = "submission"

[[listener]]
address = "{}"
kind = "smtps"

[tls]
cert = "cert.pem"
key = "key.pem"

[[user]]
name = "alice@example.test"
password_hash = "{hash}"

[storage]
maildir = "md"
"#,
            addr(p[0]),
            addr(p[1])
        )
    });
    let (submission, smtps) = (server.port(0), server.port(1));

    // Before STARTTLS: TLS offered, AUTH not (RFC 4954 4: no plaintext passwords), no mail.
    let mut c = Client::connect(submission);
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    let mail = c.expect("MAIL FROM:<alice@example.test>", 530);
    assert!(mail.text().starts_with("5.7.0"), "{mail:?}");
    c.expect("QUIT", 221);

    let good = Some(("alice@example.test", "correct horse"));
    let m = message(
        "alice@example.test",
        "bob@example.test",
        "submitted",
        "hi\r\n",
    );
    let expected_starttls = lettre_content(&m);
    let transport = tls_transport(submission, Tls::Required(pki.tls_parameters()), good);
    lettre_send(&transport, m).expect("STARTTLS + AUTH PLAIN");

    let wrong = tls_transport(
        submission,
        Tls::Required(pki.tls_parameters()),
        Some(("alice@example.test", "wrong horse")),
    );
    let error = lettre_send(
        &wrong,
        message("alice@example.test", "bob@example.test", "x", "x"),
    )
    .expect_err("wrong password");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("535"),
        "{error}"
    );

    let anonymous = tls_transport(submission, Tls::Required(pki.tls_parameters()), None);
    let error = lettre_send(
        &anonymous,
        message("alice@example.test", "bob@example.test", "x", "x"),
    )
    .expect_err("MAIL without AUTH");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("530"),
        "{error}"
    );

    let m = message(
        "alice@example.test",
        "bob@example.test",
        "implicit",
        "tls\r\n",
    );
    let expected_smtps = lettre_content(&m);
    let transport = tls_transport(smtps, Tls::Wrapper(pki.tls_parameters()), good);
    lettre_send(&transport, m).expect("implicit TLS + AUTH PLAIN");

    let mailbox = dir.path().join("md/example.test/bob");
    let stored: Vec<Stored> = files_in(&mailbox.join("new"))
        .iter()
        .map(|p| Stored::read(p))
        .collect();
    assert_eq!(stored.len(), 2, "exactly the two authenticated messages");
    for expected in [&expected_starttls, &expected_smtps] {
        let found = stored
            .iter()
            .find(|s| s.body == *expected)
            .unwrap_or_else(|| panic!("not stored:\n{}", escaped(expected)));
        assert_contains(&found.trace, "with ESMTPSA id ");
        // RFC 5321 4.4 allows comments in the trace: the TLS facts, as Postfix writes them.
        assert!(
            found
                .trace
                .contains("\r\n\t(using TLSv1.3 with cipher TLS13_"),
            "{}",
            found.trace
        );
    }
    assert!(files_in(&mailbox.join("tmp")).is_empty());
}

#[test]
fn python_smtplib_dot_unstuffing_is_byte_exact() {
    if run_bounded(Command::new("python3").arg("--version"), None)
        .status
        .code()
        != Some(0)
    {
        eprintln!("python3 not found; skipping the smtplib test");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 1, |p| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    });
    let body: &[u8] = b"From: py@sender.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nmiddle . dot\r\n...\r\nend\r\n";
    let body_file = dir.path().join("body.eml");
    fs::write(&body_file, body).expect("write body");
    let script = r"
import smtplib, sys
port, path = int(sys.argv[1]), sys.argv[2]
with open(path, 'rb') as f:
    body = f.read()
with smtplib.SMTP('127.0.0.1', port, local_hostname='python.test', timeout=10) as s:
    refused = s.sendmail('py@sender.test', ['carol@example.test'], body)
    assert not refused, refused
";
    let out = run_bounded(
        Command::new("python3").args([
            "-c",
            script,
            &server.port(0).to_string(),
            &body_file.display().to_string(),
        ]),
        None,
    );
    assert!(out.status.success(), "smtplib failed: {}", out.stderr);
    let stored = Stored::read(&only_message(&dir.path().join("md/example.test/carol")));
    assert_body(&stored, body);
    assert_contains(&stored.trace, "from python.test ");
}

/// One message of the durability test: unique Message-ID, sizes that vary from message to
/// message, no line starting with a dot.
fn durable_body(n: usize) -> Vec<u8> {
    let mut body = format!("Message-ID: <durable-{n}@sender.test>\r\nSubject: durable {n}\r\n\r\n")
        .into_bytes();
    for line in 0..(5 + n * 7 % 120) {
        body.extend_from_slice(
            format!("message {n} line {line} {}\r\n", "x".repeat(line % 60)).as_bytes(),
        );
    }
    body
}

fn message_id(body: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?;
    text.strip_prefix("Message-ID: <durable-")?
        .split_once('@')?
        .0
        .parse()
        .ok()
}

/// What the durability client knows after a crash.
#[derive(Debug, Default)]
struct Ledger {
    /// Every message sent or started, by number.
    bodies: BTreeMap<usize, Vec<u8>>,
    /// Messages that got a 250 after their data: these must survive.
    acked: BTreeSet<usize>,
    /// Messages whose data was only partly sent: these must never appear.
    partial: BTreeSet<usize>,
}

/// Sends messages back to back until `stop` says so, then starts one more and returns when the
/// server must be killed. With `complete_last`, the last message is sent whole (the kill races
/// the server's commit); otherwise only half of its content is sent.
fn send_until_killed(
    port: u16,
    ledger: &mut Ledger,
    stop: impl Fn(usize, Instant) -> bool,
    complete_last: bool,
) {
    let start = Instant::now();
    let mut c = Client::connect(port);
    c.expect("EHLO durable.test", 250);
    let mut sent = 0;
    loop {
        let n = ledger.bodies.len();
        let body = durable_body(n);
        ledger.bodies.insert(n, body.clone());
        // Pipelined envelope (RFC 2920), one round trip.
        c.send(b"MAIL FROM:<load@sender.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n")
            .expect("send envelope");
        for code in [250, 250, 354] {
            let reply = c.reply().expect("envelope reply");
            assert_eq!(reply.code, code, "message {n}: {reply:?}");
        }
        if stop(sent, start) {
            if complete_last {
                c.send(&body).expect("send content");
                c.send(b".\r\n").expect("send terminator");
            } else {
                c.send(&body[..body.len() / 2])
                    .expect("send half the content");
                ledger.partial.insert(n);
            }
            return;
        }
        c.send(&body).expect("send content");
        c.send(b".\r\n").expect("send terminator");
        let reply = c.reply().expect("end of data reply");
        assert_eq!(reply.code, 250, "message {n}: {reply:?}");
        ledger.acked.insert(n);
        sent += 1;
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = |p: &[u16]| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    };
    let mut ledger = Ledger::default();
    let began = Instant::now();

    // Round 1: the kill races the commit of a message whose data was sent whole. At least 20
    // acknowledged first, however slow the disk's syncs are (on a shared machine one took
    // 100 ms, and 1.2 s gave 11); the 30 s bound only keeps a broken server from hanging here.
    let mut server = Server::start(dir.path(), 1, args);
    send_until_killed(
        server.port(0),
        &mut ledger,
        |sent, start| {
            let elapsed = start.elapsed();
            sent >= 60
                || (sent >= 20 && elapsed >= Duration::from_millis(1200))
                || elapsed >= Duration::from_secs(30)
        },
        true,
    );
    server.kill();
    let round1 = ledger.acked.len();

    // Round 2, on the same Maildir: the kill lands in the middle of a DATA.
    let mut server = Server::start(dir.path(), 1, args);
    send_until_killed(
        server.port(0),
        &mut ledger,
        |sent, start| sent >= 40 || start.elapsed() >= Duration::from_millis(800),
        false,
    );
    // Give the server time to take in the partial content before it dies.
    std::thread::sleep(Duration::from_millis(50));
    server.kill();
    eprintln!(
        "durability: {} + {} messages acknowledged in {:?}",
        round1,
        ledger.acked.len() - round1,
        began.elapsed()
    );
    assert!(
        ledger.acked.len() >= 20,
        "too few messages to mean anything"
    );

    // Restart on the same Maildir: it must come up and keep delivering.
    let server = Server::start(dir.path(), 1, args);
    let mut c = Client::connect(server.port(0));
    c.expect("EHLO after.test", 250);
    c.expect("MAIL FROM:<load@sender.test>", 250);
    c.expect("RCPT TO:<sink@example.test>", 250);
    let after = ledger.bodies.len();
    let body = durable_body(after);
    assert_eq!(c.data(&body).code, 250);
    ledger.bodies.insert(after, body);
    ledger.acked.insert(after);
    c.expect("QUIT", 221);

    let mailbox = dir.path().join("md/example.test/sink");
    let mut seen = BTreeSet::new();
    for file in files_in(&mailbox.join("new")) {
        assert_size_in_name(&file);
        let stored = Stored::read(&file);
        let n = message_id(&stored.body)
            .unwrap_or_else(|| panic!("unknown message {}", file.display()));
        let sent = ledger
            .bodies
            .get(&n)
            .unwrap_or_else(|| panic!("message {n} was never sent"));
        assert_body(&stored, sent);
        assert!(seen.insert(n), "message {n} delivered twice");
        assert!(
            !ledger.partial.contains(&n),
            "partial message {n} delivered"
        );
    }
    let lost: Vec<_> = ledger.acked.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    eprintln!(
        "durability: {} files in new/, {} left in tmp/",
        seen.len(),
        files_in(&mailbox.join("tmp")).len()
    );
}

/// The group commit under a crash: 50 senders at once (some messages past the 64 KiB staging
/// size, so both the journaled and the per-file paths commit in groups), SIGKILL, restart.
/// Every message that got 250 is whole in `new/` exactly once; nothing partial is visible; a
/// message in flight at the kill is there once or not at all. Rounds repeat (at most `ROUNDS`)
/// until the restart's recovery has replayed a message from the journal: a kill between a
/// cycle's journal write and its materialization leaves one, and the test proves recovery
/// made it whole, once. Where the kills land is up to the machine: a run in which none left a
/// message to replay still checks every round, and says so; the journal's unit tests
/// (`recovery_finishes_each_crash_point`) put a crash at each point on purpose.
#[test]
fn sigkill_under_50_concurrent_senders_loses_nothing_acknowledged() {
    const SENDERS: usize = 50;
    // A kill leaves recovery a message to replay only when it lands between a cycle's journal
    // sync and the link of its last message, well under a millisecond per cycle: not every
    // round does. Most runs stop after a few; the bound keeps a run that never does finite.
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let args = |p: &[u16]| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    };
    let mailbox = dir.path().join("md/example.test/sink");
    let ledger = std::sync::Arc::new(std::sync::Mutex::new(Ledger::default()));
    let mut server = Server::start(dir.path(), 1, args);
    let mut replayed = 0;
    for round in 0..ROUNDS {
        let port = server.port(0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked_before = ledger.lock().unwrap().acked.len();
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let (ledger, stop) = (ledger.clone(), stop.clone());
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect_raw(port) else { return };
                    if c.reply().map(|r| r.code).ok() != Some(220) {
                        return;
                    }
                    let _ = c.send(b"EHLO durable.test\r\n");
                    if c.reply().map(|r| r.code).ok() != Some(250) {
                        return;
                    }
                    // Bounded: the kill ends every loop within a few seconds anyway.
                    for k in 0..10_000 {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        let n = round * 1_000_000 + t * 10_000 + k;
                        let mut body = durable_body(n);
                        if k % 7 == 3 {
                            // Past the staging size: streamed to tmp/, then committed in a group.
                            body.extend(std::iter::repeat_n(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n".as_slice(), 1200).flatten());
                        }
                        ledger.lock().unwrap().bodies.insert(n, body.clone());
                        let sent = c
                            .send(b"MAIL FROM:<load@sender.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n")
                            .and_then(|()| c.send(&body))
                            .and_then(|()| c.send(b".\r\n"));
                        if sent.is_err() {
                            return;
                        }
                        let codes: Vec<_> =
                            (0..4).map(|_| c.reply().map(|r| r.code).ok()).collect();
                        match codes.as_slice() {
                            [Some(250), Some(250), Some(354), Some(250)] => {
                                ledger.lock().unwrap().acked.insert(n);
                            }
                            // The kill: whatever happened to this message, it was not acknowledged.
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Let the senders get going, then kill while deliveries are in flight.
        let began = Instant::now();
        while ledger.lock().unwrap().acked.len() < acked_before + 150
            && began.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in senders {
            s.join().expect("sender thread");
        }
        let mut ledger = ledger.lock().unwrap();
        let acked = ledger.acked.len() - acked_before;
        assert!(acked >= 50, "too few messages ({acked}) to mean anything");

        // Restart on the same Maildir: recovery runs before the committer's first cycle, so
        // once the restarted server has stored a message, its recovery is in the log.
        server = Server::start(dir.path(), 1, args);
        let mut c = Client::connect(server.port(0));
        c.expect("EHLO after.test", 250);
        c.expect("MAIL FROM:<load@sender.test>", 250);
        c.expect("RCPT TO:<sink@example.test>", 250);
        let marker = 999_000_000 + round;
        let body = durable_body(marker);
        assert_eq!(c.data(&body).code, 250);
        ledger.bodies.insert(marker, body);
        ledger.acked.insert(marker);
        c.expect("QUIT", 221);
        let log = server.wait_log("the stored message", |log| {
            log.contains("outcome=\"stored\"")
        });
        let this_round: usize = log
            .lines()
            .filter(|l| l.contains("maildir recovery"))
            .filter_map(|l| l.split("replayed=").nth(1))
            .filter_map(|v| v.split(' ').next()?.parse::<usize>().ok())
            .sum();
        replayed += this_round;

        let mut seen = BTreeSet::new();
        for file in files_in(&mailbox.join("new")) {
            assert_size_in_name(&file);
            let stored = Stored::read(&file);
            let n = message_id(&stored.body)
                .unwrap_or_else(|| panic!("unknown message {}", file.display()));
            let sent = ledger
                .bodies
                .get(&n)
                .unwrap_or_else(|| panic!("message {n} was never sent"));
            assert_body(&stored, sent);
            assert!(seen.insert(n), "message {n} delivered twice");
        }
        let lost: Vec<_> = ledger.acked.difference(&seen).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
        eprintln!(
            "group commit crash, round {round}: {acked} acknowledged, {} in new/ ({} in flight at the kills made it), recovery replayed {this_round}",
            seen.len(),
            seen.len() - ledger.acked.len(),
        );
        if replayed > 0 {
            break;
        }
    }
    if replayed == 0 {
        eprintln!("in {ROUNDS} rounds no kill left recovery a message to replay");
    }
}

fn bad_config(text: &str) -> common::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    fs::write(&path, text).expect("write config");
    run_bounded(
        smtpd()
            .current_dir(dir.path())
            .args(["--config", path.to_str().expect("UTF-8 path")]),
        None,
    )
}

#[test]
fn unknown_field_exits_2_naming_field_and_line() {
    let out = bad_config("hostname = \"mx.test\"\n\n[storage]\nmaildir = \"md\"\nfsnyc = false\n");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_contains(&out.stderr, "fsnyc");
    assert_contains(&out.stderr, "line 5");
}

#[test]
fn smtps_without_tls_exits_2_naming_the_problem() {
    let out = bad_config(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nkind = \"smtps\"\n\n[[user]]\nname = \"a\"\n\
         password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$J+puvmgQCTYTHw1+RN3U2A$W9XPO5Lu08n6ubgjsvr+YeKvCtNVokidij2fQ4klFSU\"\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("listener[0]") && out.stderr.contains("[tls]"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    fs::write(
        &path,
        "hostname = \"mx.test\"\n[[domain]]\nname = \"example.test\"\nmailboxes = [\"alice\"]\n",
    )
    .expect("write config");
    let out = run_bounded(smtpd().arg("check-config").arg(&path), None);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let effective: toml::Table = toml::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check-config output is not TOML: {e}\n{}", out.stdout));
    assert_eq!(effective["hostname"].as_str(), Some("mx.test"));
    // Defaults are filled in: the default listener, the limits, and wildcard switched off by
    // the [[domain]] section.
    assert_eq!(
        effective["listener"][0]["address"].as_str(),
        Some("127.0.0.1:2525")
    );
    assert_eq!(
        effective["limits"]["message_size"].as_integer(),
        Some(26_214_400)
    );
    assert_eq!(effective["routing"]["wildcard"].as_bool(), Some(false));
    assert_eq!(
        effective["domain"][0]["mailboxes"][0].as_str(),
        Some("alice")
    );

    // The same command on a bad file fails with the parse error.
    fs::write(&path, "bogus = 1\n").expect("write config");
    let out = run_bounded(smtpd().arg("check-config").arg(&path), None);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert_contains(&out.stderr, "bogus");
}

#[test]
fn port_in_use_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let out = run_bounded(
        smtpd()
            .current_dir(dir.path())
            .args(["--listen", &addr(port), "--maildir", "md"]),
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert_contains(&out.stderr, "cannot listen");
    // It says which address.
    assert_contains(&out.stderr, &format!("cannot listen: {}: ", addr(port)));
}

#[test]
fn unreadable_certificate_exits_4() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    fs::write(
        &path,
        "[tls]\ncert = \"missing/cert.pem\"\nkey = \"missing/key.pem\"\n[storage]\nmaildir = \"md\"\n",
    )
    .expect("write config");
    // The port is never bound: the certificate is loaded first.
    let out = run_bounded(
        smtpd().current_dir(dir.path()).args([
            "--config",
            path.to_str().expect("UTF-8 path"),
            "--listen",
            "127.0.0.1:1",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    assert_contains(&out.stderr, "missing/cert.pem");
}

#[test]
fn sink_accepts_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), 1, |p| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
            "--sink".into(),
        ]
    });
    let transport = plain_transport(server.port(0));
    for i in 0..3 {
        let m = message(
            "a@sender.test",
            "b@example.test",
            &format!("sink {i}"),
            "x\r\n",
        );
        let response = lettre_send(&transport, m).expect("send");
        assert_eq!(response.code().to_string(), "250");
    }
    let files = files_under(&dir.path().join("md"));
    assert!(files.is_empty(), "the sink wrote {files:?}");
    let log = server.log();
    assert!(log.contains("sink (messages are discarded)"), "{log}");
}

#[test]
fn sigterm_sends_421_to_idle_sessions_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), 1, |p| {
        vec![
            "--listen".into(),
            addr(p[0]),
            "--maildir".into(),
            "md".into(),
        ]
    });
    let mut idle = Client::connect(server.port(0));
    idle.expect("EHLO idle.test", 250);
    let began = Instant::now();
    server.signal("TERM");
    let reply = idle.reply().expect("a reply to the idle session");
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().starts_with("4.3.2 "), "{reply:?}");
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    eprintln!("SIGTERM to exit: {:?}", began.elapsed());
    // The server closed the connection after the 421.
    assert!(matches!(
        idle.reply(),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof
    ));
}

#[test]
fn sighup_reloads_domains_and_mailboxes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| domains_config(p[0], ""));
    let rcpt = |to: &str| {
        let mut c = Client::connect(server.port(0));
        c.expect("EHLO reload.test", 250);
        c.expect("MAIL FROM:<a@sender.test>", 250);
        let reply = c.cmd(&format!("RCPT TO:<{to}>"));
        c.expect("QUIT", 221);
        reply
    };
    assert_eq!(rcpt("carol@example.test").code, 550);
    assert_eq!(rcpt("dave@new.test").code, 550);

    // Add carol by rewriting the mailbox list too.
    let path = dir.path().join("smtpd.toml");
    let text = domains_config(
        server.port(0),
        "\n[[domain]]\nname = \"new.test\"\nmailboxes = [\"dave\"]\n",
    )
    .replace(r#"["alice", "bob"]"#, r#"["alice", "bob", "carol"]"#);
    fs::write(&path, text).expect("write config");
    server.signal("HUP");
    server.wait_log("the reload", |log| log.contains("configuration reloaded"));

    assert_eq!(rcpt("carol@example.test").code, 250);
    assert_eq!(rcpt("dave@new.test").code, 250);
    assert_eq!(rcpt("alice@example.test").code, 250);
    assert_eq!(rcpt("nobody@example.test").code, 550);

    let mut c = Client::connect(server.port(0));
    c.expect("EHLO reload.test", 250);
    c.expect("MAIL FROM:<a@sender.test>", 250);
    c.expect("RCPT TO:<dave@new.test>", 250);
    let body = b"Subject: after reload\r\n\r\nnew domain\r\n".as_slice();
    assert_eq!(c.data(body).code, 250);
    c.expect("QUIT", 221);
    assert_body(
        &Stored::read(&only_message(&dir.path().join("md/new.test/dave"))),
        body,
    );
}

/// `smtpd example-config` prints the documented example, and it is a valid configuration.
#[test]
fn example_config_is_printed_and_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_bounded(smtpd().arg("example-config"), None);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let file = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
        .expect("read example");
    assert_eq!(out.stdout, file);
    let path = dir.path().join("example.toml");
    fs::write(&path, &out.stdout).expect("write");
    // Valid, but on this machine its certificate does not exist: check-config opens it and
    // names the file.
    let checked = run_bounded(
        smtpd()
            .current_dir(dir.path())
            .arg("check-config")
            .arg(&path),
        None,
    );
    assert_eq!(checked.status.code(), Some(2), "{}", checked.stderr);
    assert_contains(&checked.stderr, "[tls] cannot load certificate");
    assert!(
        !checked.stdout.is_empty(),
        "the effective configuration is still printed"
    );
}

/// A reload reads the file again but keeps what the command line overrode: `--maildir` still
/// decides where mail goes after SIGHUP.
#[test]
fn sighup_keeps_command_line_overrides() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("smtpd.toml");
    let server = Server::start(dir.path(), 1, |p| {
        fs::write(&config, domains_config(p[0], "")).expect("write config");
        vec![
            "--config".into(),
            config.display().to_string(),
            "--maildir".into(),
            "md_cli".into(),
        ]
    });
    let send = |subject: &str| {
        let mut c = Client::connect(server.port(0));
        c.expect("EHLO reload.test", 250);
        c.expect("MAIL FROM:<a@sender.test>", 250);
        c.expect("RCPT TO:<alice@example.test>", 250);
        assert_eq!(
            c.data(format!("Subject: {subject}\r\n\r\nx\r\n").as_bytes())
                .code,
            250
        );
        c.expect("QUIT", 221);
    };
    send("before");
    server.signal("HUP");
    server.wait_log("the reload", |log| log.contains("configuration reloaded"));
    send("after");
    let mailbox = dir.path().join("md_cli/example.test/alice/new");
    assert_eq!(files_in(&mailbox).len(), 2, "both messages under --maildir");
    assert!(
        !dir.path().join("md").exists(),
        "the file's maildir was never used"
    );
}

/// An SMTP listener on `p[0]` with `[tls]` (the files [`Pki::write`] makes) and a `kind`
/// listener on `p[1]` with `tls = false`, then `extra`.
fn tls_and_plain_listeners(p: &[u16], kind: &str, extra: &str) -> String {
    format!(
        r#"hostname = "mx.test"

[[listener]]
address = "{}"
kind = "smtp"

[[listener]]
address = "{}"
kind = "{kind}"
tls = false

[tls]
cert = "cert.pem"
key = "key.pem"

[storage]
maildir = "md"
{extra}"#,
        addr(p[0]),
        addr(p[1])
    )
}

/// `tls = false` on a listener keeps STARTTLS off there even when `[tls]` exists, while a
/// listener without the setting offers it.
#[test]
fn listener_tls_false_offers_no_starttls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _pki = Pki::write(dir.path());
    let server = Server::with_config(dir.path(), "smtpd.toml", 2, |p| {
        tls_and_plain_listeners(p, "lmtp", "")
    });
    let mut smtp = Client::connect(server.port(0));
    let ehlo = smtp.expect("EHLO client.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    smtp.expect("QUIT", 221);
    let mut lmtp = Client::connect(server.port(1));
    let lhlo = lmtp.expect("LHLO client.test", 250);
    assert!(!lhlo.lines.iter().any(|l| l == "STARTTLS"), "{lhlo:?}");
    lmtp.expect("QUIT", 221);
}

/// LMTP (RFC 2033): LHLO, and after the message one reply per accepted recipient, each
/// recipient's copy stored.
#[test]
fn lmtp_listener_delivers_with_one_reply_per_recipient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        format!(
            r#"hostname = "mx.test"

[[listener]]
address = "{}"
kind = "lmtp"

[storage]
maildir = "md"

[[domain]]
name = "example.test"
mailboxes = ["alice", "bob"]
"#,
            addr(p[0])
        )
    });
    let mut c = Client::connect(server.port(0));
    // RFC 2033 4.1: LMTP has no EHLO.
    c.expect("EHLO client.test", 500);
    c.expect("LHLO client.test", 250);
    c.expect("MAIL FROM:<sender@sender.test>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("RCPT TO:<nobody@example.test>", 550);
    c.expect("RCPT TO:<bob@example.test>", 250);
    let body = b"Subject: over lmtp\r\n\r\nhello\r\n".as_slice();
    // One reply for alice, one for bob (RFC 2033 4.2); the refused recipient gets none.
    assert_eq!(c.data(body).code, 250);
    assert_eq!(c.reply().expect("second recipient's reply").code, 250);
    c.expect("QUIT", 221);
    let md = dir.path().join("md");
    for mailbox in ["example.test/alice", "example.test/bob"] {
        let stored = Stored::read(&only_message(&md.join(mailbox)));
        assert_body(&stored, body);
        assert_contains(&stored.trace, "with LMTP");
    }
}

/// LMTP on a Unix-domain socket, as a local MTA delivers (Postfix `lmtp:unix:`): the socket
/// file gets its configured mode, `check-config` prints the address, each recipient gets its
/// own reply after the message and only the known one's Maildir holds it, and the file is
/// removed when the server stops.
#[test]
fn lmtp_over_a_unix_socket_delivers_per_recipient() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let socket = root.join("lmtp.sock");
    let config = root.join("smtpd.toml");
    // One TCP listener, so the harness has a port to wait for; the Unix one is under test.
    let text = |port: u16| {
        format!(
            r#"hostname = "mx.test"

[[listener]]
address = "{}"
kind = "smtp"

[[listener]]
address = "unix:{}"
mode = "0660"
kind = "lmtp"

[storage]
maildir = "md"

[[domain]]
name = "example.test"
mailboxes = ["alice"]
"#,
            addr(port),
            socket.display()
        )
    };
    fs::write(&config, text(25)).expect("write config");
    let out = run_bounded(smtpd().arg("check-config").arg(&config), None);
    assert!(out.status.success(), "{}", out.stderr);
    assert_contains(
        &out.stdout,
        &format!("address = \"unix:{}\"", socket.display()),
    );
    assert_contains(&out.stdout, "mode = \"0660\"");

    let mut server = Server::start(dir.path(), 1, |p| {
        fs::write(&config, text(p[0])).expect("write config");
        vec!["--config".into(), config.display().to_string()]
    });
    let mode = fs::metadata(&socket)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let mut c = Client::connect_unix(&socket);
    c.expect("LHLO client.test", 250);
    c.expect("MAIL FROM:<sender@sender.test>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("RCPT TO:<nobody@example.test>", 550);
    let body = b"Subject: over a unix socket\r\n\r\nhello\r\n".as_slice();
    // One reply, for the one accepted recipient (RFC 2033 4.2).
    assert_eq!(c.data(body).code, 250);
    c.expect("QUIT", 221);
    let md = dir.path().join("md");
    let stored = Stored::read(&only_message(&md.join("example.test/alice")));
    assert_body(&stored, body);
    // No address to write: the Received line says where the message came from instead.
    assert_contains(&stored.trace, "(unix socket)");
    assert!(!md.join("example.test/nobody").exists());

    server.signal("TERM");
    assert!(
        server.wait_exit(START_TIMEOUT).success(),
        "{}",
        server.log()
    );
    assert!(!socket.exists(), "the socket file outlived the server");
}

/// `client_ca` with `client_auth = "required"` (Node `requestCert` + `rejectUnauthorized`):
/// after STARTTLS a client whose certificate the CA signed is served, a self-signed stranger
/// and a client without a certificate are refused in the handshake.
#[test]
fn listener_client_ca_required_refuses_strangers() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let client_ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    fs::write(dir.path().join("client-ca.pem"), client_ca.pem()).unwrap();
    let identity = |signed: bool| {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["client.test".into()]).unwrap();
        let cert = if signed {
            params.signed_by(&key, &client_ca).unwrap()
        } else {
            params.self_signed(&key).unwrap()
        };
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (vec![cert.der().clone()], key)
    };
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        format!(
            r#"hostname = "mx.test"

[[listener]]
address = "{}"
kind = "smtp"
tls = true
client_ca = "client-ca.pem"
client_auth = "required"

[tls]
cert = "cert.pem"
key = "key.pem"

[storage]
maildir = "md"
"#,
            addr(p[0])
        )
    });
    let served = |identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>| {
        let mut c = Client::connect(server.port(0));
        c.expect("EHLO client.test", 250);
        c.expect("STARTTLS", 220);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, c.into_stream());
        if tls.write_all(b"EHLO client.test\r\n").is_err() {
            return false;
        }
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).is_ok() && &got == b"250-"
    };
    assert!(served(Some(identity(true))));
    assert!(!served(Some(identity(false))));
    assert!(!served(None));
}

/// The systemd unit in `contrib/` is valid for `systemd-analyze verify` (with this build's
/// binary in its command lines), and the binary sends `READY=1` to `$NOTIFY_SOCKET` once it
/// listens, as its `Type=notify` expects.
#[test]
fn systemd_unit_verifies_and_readiness_is_notified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/systemd/smtpd.service"
    ))
    .expect("read the unit");
    assert!(unit.contains("Type=notify") && unit.contains("ReadWritePaths=/var/mail/smtpd"));
    let verify = run_bounded(Command::new("systemd-analyze").arg("--version"), None);
    if verify.status.code() == Some(0) {
        let path = dir.path().join("smtpd.service");
        fs::write(
            &path,
            unit.replace("/usr/local/bin/smtpd", env!("CARGO_BIN_EXE_smtpd")),
        )
        .expect("write unit");
        let out = run_bounded(
            Command::new("systemd-analyze").arg("verify").arg(&path),
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        // It exits 0 on unknown settings too, and says so on stderr.
        assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
    } else {
        eprintln!("systemd-analyze not found; skipping the unit check");
    }

    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = smtpd()
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--maildir", "md"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start smtpd");
    let mut buf = [0; 64];
    let received = socket.recv(&mut buf);
    // Ready means listening: a connection gets the greeting.
    let greeted = received.is_ok() && {
        let mut c = Client::connect(port);
        c.expect("QUIT", 221);
        true
    };
    let _ = child.kill();
    let _ = child.wait();
    let n = received.expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(greeted);
}

/// Every listener belongs to one server, so `limits.connections` counts connections across
/// all of them (issue 15, finding 4), whatever their TLS setting; a place is free again as soon
/// as QUIT is answered.
#[test]
fn connection_limit_spans_listeners_with_and_without_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _pki = Pki::write(dir.path());
    let server = Server::with_config(dir.path(), "smtpd.toml", 2, |p| {
        tls_and_plain_listeners(
            p,
            "smtp",
            "\n[limits]\nconnections = 1\nconnections_per_ip = 1\n",
        )
    });
    let mut first = Client::connect(server.port(0));
    let mut second = Client::connect_raw(server.port(1)).expect("connect");
    let refused = second.reply().expect("a reply");
    assert_eq!(refused.code, 421, "{refused:?}");
    assert!(refused.text().starts_with("4.7.0"), "{refused:?}");
    first.expect("QUIT", 221);
    // The place is free as soon as QUIT is answered, on either listener.
    let mut again = Client::connect(server.port(1));
    let ehlo = again.expect("EHLO client.test", 250);
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    again.expect("QUIT", 221);
}
