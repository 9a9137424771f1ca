//! Black-box tests of `[checks]`: the `smtpd` binary resolves through an authoritative DNS
//! server the test runs on 127.0.0.1 (zones written here), receives messages signed at test
//! time, and each case asserts the reply, the stored header and the JSON log line.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;
use std::path::Path;

use common::{Client, Server, Stored, addr, assert_contains, files_in, runtime};
use smtp_test::dns::{SilentDns, TestDns, txt};
use smtp_test::mailauth::Keys;

/// The client's address as the server sees it.
const CLIENT: &str = "127.0.0.1";

fn zone(keys: &Keys) -> String {
    let mut z = String::new();
    let pass = format!("v=spf1 ip4:{CLIENT} -all");
    z += &txt("client.test.", &pass);
    // Reverse DNS of the client (iprev comes from the session's own lookup).
    z += &smtp_test::dns::ptr(CLIENT.parse().unwrap(), "client.test.");
    z += &format!("client.test. 300 IN A {CLIENT}\n");
    z += &txt("sender.test.", &pass);
    z += &txt("hardfail.test.", "v=spf1 -all");
    z += &txt("soft.test.", "v=spf1 ~all");
    z += &txt("neutral.test.", "v=spf1 ?all");
    z += "nospf.test. 300 IN A 198.51.100.1\n";
    let mechanisms: String = (1..=11).map(|i| format!(" a:h{i}.loop.test")).collect();
    z += &txt("loop.test.", &format!("v=spf1{mechanisms} -all"));
    for i in 1..=11 {
        z += &format!("h{i}.loop.test. 300 IN A 198.51.100.{i}\n");
    }
    for domain in ["signed.test", "lax.test", "fwd.test"] {
        z += &keys.records(domain);
    }
    z += &txt("_dmarc.signed.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.sender.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.bank.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.junky.test.", "v=DMARC1; p=quarantine");
    z += &txt("_dmarc.lax.test.", "v=DMARC1; p=none");
    z
}

/// A JSON-logging server on `port` resolving through `dns`, with `[checks]` on (strict.test
/// refusing SPF fails), then `extra`.
fn config(port: u16, dns: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"hostname = "mx.test"
log_format = "json"

[[listener]]
address = "{}"

[storage]
maildir = "md"

[[domain]]
name = "example.test"
mailboxes = ["bob"]

[[domain]]
name = "strict.test"
mailboxes = ["dave"]

[dns]
nameservers = ["{dns}"]
timeout = 1

[checks]

[checks.domain."strict.test"]
spf_fail = "reject"
temperror = "defer"
{extra}"#,
        addr(port)
    )
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: bob@example.test\r\nSubject: {subject}\r\nDate: Wed, 02 Dec 2026 01:00:00 +0000\r\nMessage-ID: <{subject}@test>\r\n\r\n{body}"
    )
    .into_bytes()
}

/// One transaction from `helo` with `mail_from` to `rcpt`: the final reply code and text.
fn send(port: u16, helo: &str, mail_from: &str, rcpt: &str, content: &[u8]) -> (u16, String) {
    let mut client = Client::connect(port);
    client.expect(&format!("EHLO {helo}"), 250);
    let mail = client.cmd(&format!("MAIL FROM:<{mail_from}>"));
    if mail.code != 250 {
        return (mail.code, mail.text().to_owned());
    }
    let rcpt = client.cmd(&format!("RCPT TO:<{rcpt}>"));
    if rcpt.code != 250 {
        return (rcpt.code, rcpt.text().to_owned());
    }
    let reply = client.data(content);
    client.expect("QUIT", 221);
    (reply.code, reply.text().to_owned())
}

/// [`send`] from client.test to bob@example.test.
fn to_bob(port: u16, mail_from: &str, content: &[u8]) -> (u16, String) {
    send(port, "client.test", mail_from, "bob@example.test", content)
}

/// The `message` events of the JSON log whose subject is `subject`, as their fields.
fn logged(server: &Server, subject: &str) -> serde_json::Value {
    // The subject as a JSON field, not a bare substring: "arc" also occurs in `arc=none` of
    // other messages' lines.
    let field = format!("\"subject\":{}", serde_json::Value::from(subject));
    let log = server.wait_log(subject, |log| {
        log.lines()
            .any(|l| l.contains("\"message\":\"message\"") && l.contains(&field))
    });
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .find(|f| f["message"] == "message" && f["subject"] == subject)
        .unwrap_or_else(|| panic!("no message line for {subject}:\n{log}"))
}

/// The `auth` field of the log line for `subject`.
fn auth(server: &Server, subject: &str) -> String {
    let line = logged(server, subject);
    line["auth"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth field: {line}"))
        .to_owned()
}

/// The only file in `mailbox`/new, read whole.
fn stored(mailbox: &Path, subject: &str) -> (Stored, String) {
    let file = files_in(&mailbox.join("new"))
        .into_iter()
        .find(|f| {
            String::from_utf8_lossy(&fs::read(f).unwrap())
                .contains(&format!("Subject: {subject}\r\n"))
        })
        .unwrap_or_else(|| panic!("no message {subject} in {}", mailbox.display()));
    let text = String::from_utf8(fs::read(&file).unwrap()).unwrap();
    (Stored::read(&file), text)
}

#[test]
fn spf_dkim_arc_dmarc_results_policy_and_log_lines() {
    let runtime = runtime();
    let keys = Keys::new();
    let dns = runtime.block_on(TestDns::start(&zone(&keys))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        config(p[0], dns.addr(), "")
    });
    let port = server.port(0);
    let bob = dir.path().join("md/example.test/bob");

    // SPF, each result recorded in Received-SPF, Authentication-Results and the log line.
    for (sender, keyword) in [
        ("a@sender.test", "pass"),
        ("a@hardfail.test", "fail"),
        ("a@soft.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@nospf.test", "none"),
        ("a@loop.test", "permerror"),
    ] {
        let subject = format!("spf-{keyword}");
        let (code, text) = to_bob(port, sender, &message(sender, &subject, "x\r\n"));
        assert_eq!(code, 250, "{sender}: {text}");
        let (stored, _) = stored(&bob, &subject);
        assert_contains(&stored.trace, &format!("Received-SPF: {keyword}"));
        assert_contains(&stored.trace, &format!("spf={keyword}"));
        let line = logged(&server, &subject);
        assert!(
            line["auth"]
                .as_str()
                .unwrap()
                .starts_with(&format!("spf={keyword} ")),
            "{line}"
        );
        assert_eq!(line["outcome"], "stored");
    }

    // SPF fail refused at RCPT for a domain whose policy says so; others still accept.
    let (code, text) = send(
        port,
        "client.test",
        "a@hardfail.test",
        "dave@strict.test",
        &message("a@hardfail.test", "strict", "x\r\n"),
    );
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.23 "), "{text}");

    // DKIM: Ed25519 and RSA pass; DMARC passes through DKIM alone (SPF none, unaligned).
    for (subject, signed) in [
        (
            "dkim-ed25519",
            keys.sign_ed25519(
                "signed.test",
                &message("alice@signed.test", "dkim-ed25519", "hello\r\n"),
            ),
        ),
        (
            "dkim-rsa",
            keys.sign_rsa(
                "signed.test",
                &message("alice@signed.test", "dkim-rsa", "hello\r\n"),
            ),
        ),
    ] {
        let (code, text) = to_bob(port, "bounce@nospf.test", &signed);
        assert_eq!(code, 250, "{subject}: {text}");
        let (stored, whole) = stored(&bob, subject);
        assert!(
            stored
                .trace
                .contains("Authentication-Results: mx.test;\r\n\tdkim=pass header.d=signed.test"),
            "{}",
            stored.trace
        );
        assert_contains(&stored.trace, "dmarc=pass header.from=signed.test");
        // The signed message is stored byte for byte below the trace headers.
        assert!(whole.ends_with(std::str::from_utf8(&signed).unwrap()));
        assert!(
            auth(&server, subject).starts_with("spf=none dkim=pass arc=none dmarc=pass iprev=")
        );
    }

    // A body altered after signing fails DKIM; lax.test's p=none delivers it anyway.
    let mut altered = keys.sign_ed25519(
        "lax.test",
        &message("alice@lax.test", "altered", "the original body\r\n"),
    );
    let at = altered.len() - 6;
    altered[at] = b'X';
    let (code, _) = to_bob(port, "bounce@nospf.test", &altered);
    assert_eq!(code, 250);
    let (stored_altered, _) = stored(&bob, "altered");
    assert!(
        stored_altered
            .trace
            .contains("dkim=fail (body hash did not verify)"),
        "{}",
        stored_altered.trace
    );
    assert_contains(&stored_altered.trace, "dmarc=fail");
    assert_contains(&stored_altered.trace, "policy.dmarc=none");
    assert!(auth(&server, "altered").starts_with("spf=none dkim=fail arc=none dmarc=fail iprev="));

    // DMARC through SPF alignment only.
    let (code, _) = to_bob(
        port,
        "news@sender.test",
        &message("news@sender.test", "dmarc-spf", "x\r\n"),
    );
    assert_eq!(code, 250);
    let (s, _) = stored(&bob, "dmarc-spf");
    assert_contains(
        &s.trace,
        "dmarc=pass header.from=sender.test policy.dmarc=reject",
    );
    assert!(
        auth(&server, "dmarc-spf").starts_with("spf=pass dkim=none arc=none dmarc=pass iprev=")
    );

    // DMARC p=reject: 550 5.7.1 with the reason, nothing stored.
    let (code, text) = to_bob(
        port,
        "a@sender.test",
        &message("ceo@bank.test", "dmarc-reject", "pay\r\n"),
    );
    assert_eq!(code, 550, "{text}");
    assert_eq!(
        text,
        "5.7.1 Message rejected by the DMARC policy of bank.test"
    );
    let line = logged(&server, "dmarc-reject");
    assert_eq!(line["outcome"], "rejected");
    assert!(
        line["auth"].as_str().unwrap().contains("dmarc=fail"),
        "{line}"
    );
    assert!(
        files_in(&bob.join("new"))
            .iter()
            .all(|f| !fs::read_to_string(f).unwrap().contains("dmarc-reject"))
    );

    // DMARC p=quarantine: stored in the recipient's Maildir++ .Junk folder.
    let (code, _) = to_bob(
        port,
        "a@sender.test",
        &message("deals@junky.test", "dmarc-quarantine", "x\r\n"),
    );
    assert_eq!(code, 250);
    let (s, _) = stored(&bob.join(".Junk"), "dmarc-quarantine");
    assert_contains(&s.trace, "policy.dmarc=quarantine");
    let line = logged(&server, "dmarc-quarantine");
    assert_eq!(line["folder"], "Junk");
    assert_eq!(line["outcome"], "stored");

    // No DMARC record: none, delivered.
    let (code, _) = to_bob(
        port,
        "a@nospf.test",
        &message("a@nospf.test", "dmarc-none", "x\r\n"),
    );
    assert_eq!(code, 250);
    let (s, _) = stored(&bob, "dmarc-none");
    assert_contains(&s.trace, "dmarc=none");

    // An ARC chain from a forwarder verifies.
    let forwarded = keys.arc_seal(
        "fwd.test",
        &keys.sign_ed25519(
            "signed.test",
            &message("alice@signed.test", "arc", "list post\r\n"),
        ),
    );
    let (code, _) = to_bob(port, "list@nospf.test", &forwarded);
    assert_eq!(code, 250);
    let (s, _) = stored(&bob, "arc");
    assert_contains(&s.trace, "arc=pass");
    assert!(auth(&server, "arc").contains("arc=pass"));

    // A forged Authentication-Results claiming our name is removed; another's is kept.
    let mut forged = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test; dmarc=pass\r\nAuthentication-Results: other.test; spf=pass\r\n".to_vec();
    forged.extend_from_slice(&message("a@sender.test", "forged", "x\r\n"));
    let (code, _) = to_bob(port, "a@sender.test", &forged);
    assert_eq!(code, 250);
    let (_, whole) = stored(&bob, "forged");
    assert_eq!(
        whole.matches("Authentication-Results: mx.test;").count(),
        1,
        "{whole}"
    );
    assert!(!whole.contains("header.d=bank.test"), "{whole}");
    assert!(
        whole.contains(
            "\r\nAuthentication-Results: other.test; spf=pass\r\nFrom: a@sender.test\r\n"
        ),
        "{whole}"
    );
}

/// Larger than smtpd's 64 KiB stage: the file is started before the results are known, and
/// they are inserted below the trace headers at the end.
#[test]
fn a_large_signed_message_streams_and_gets_its_results() {
    let runtime = runtime();
    let keys = Keys::new();
    let dns = runtime.block_on(TestDns::start(&zone(&keys))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        config(p[0], dns.addr(), "")
    });
    let body = "0123456789 a line of a large message body, repeated\r\n".repeat(4000);
    let signed = keys.sign_rsa("signed.test", &message("alice@signed.test", "large", &body));
    assert!(signed.len() > 200 * 1024);
    let (code, text) = to_bob(server.port(0), "alice@sender.test", &signed);
    assert_eq!(code, 250, "{text}");
    let (s, whole) = stored(&dir.path().join("md/example.test/bob"), "large");
    assert_contains(&s.trace, "dkim=pass");
    assert!(whole.ends_with(std::str::from_utf8(&signed).unwrap()));
    assert!(auth(&server, "large").starts_with("spf=pass dkim=pass arc=none dmarc=pass iprev="));
}

/// A nameserver that never answers: recorded as temperror and accepted by default; deferred
/// with 451 where the domain's policy says so.
#[test]
fn dns_trouble_is_temperror_accepted_or_deferred() {
    let silent = SilentDns::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        config(p[0], silent.addr(), "")
    });
    let port = server.port(0);
    let (code, text) = to_bob(
        port,
        "a@sender.test",
        &message("a@sender.test", "no-dns", "x\r\n"),
    );
    assert_eq!(code, 250, "{text}");
    let (s, _) = stored(&dir.path().join("md/example.test/bob"), "no-dns");
    assert_contains(&s.trace, "Received-SPF: temperror");
    let line = logged(&server, "no-dns");
    assert!(
        line["auth"]
            .as_str()
            .unwrap()
            .starts_with("spf=temperror dkim=none arc=none dmarc=temperror"),
        "{line}"
    );
    let (code, text) = send(
        port,
        "client.test",
        "a@sender.test",
        "dave@strict.test",
        &message("a@sender.test", "deferred", "x\r\n"),
    );
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("4.7.24 "), "{text}");
}

/// Greylisting trusts an SPF pass: the sender's domain vouches for the client, so its first
/// attempt is not delayed; a sender without SPF is (postgrey's and policyd-spf's pairing).
#[test]
fn greylisting_lets_an_spf_pass_through_at_once() {
    let runtime = runtime();
    let keys = Keys::new();
    let dns = runtime.block_on(TestDns::start(&zone(&keys))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Loopback is a trusted network by default, and trusted clients are never greylisted.
    let extra = format!(
        "\n[limits]\ntrusted_networks = []\n\n[greylist]\nenabled = true\nfile = \"{}\"\n",
        dir.path().join("greylist.db").display()
    );
    let server = Server::with_config(dir.path(), "smtpd.toml", 1, |p| {
        config(p[0], dns.addr(), &extra)
    });
    let port = server.port(0);

    let content = message("a@sender.test", "grey-spf-pass", "x\r\n");
    let (code, text) = to_bob(port, "a@sender.test", &content);
    assert_eq!(code, 250, "SPF pass is not greylisted: {text}");

    let content = message("a@nospf.test", "grey-spf-none", "x\r\n");
    let (code, text) = to_bob(port, "a@nospf.test", &content);
    assert_eq!(code, 451, "no SPF: the first attempt is greylisted: {text}");
}
