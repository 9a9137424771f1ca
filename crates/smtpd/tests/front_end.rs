//! XCLIENT and XFORWARD through smtpd's `[proxy] xclient_networks` / `xforward_networks`: the
//! forwarded client is what the `Received:` header and the log show, and a client outside the
//! networks gets `550 5.7.0`.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;
use std::path::Path;

use common::{Client, Server, addr};

fn start(dir: &Path, networks: &str) -> Server {
    let path = dir.join("smtpd.toml");
    Server::start(dir, 1, |p| {
        let text = format!(
            "hostname = \"mx.test\"\n\n\
             [[listener]]\naddress = \"{}\"\n\n\
             [storage]\nmaildir = \"md\"\n\n\
             [proxy]\nxclient_networks = [{networks}]\nxforward_networks = [{networks}]\n\n\
             [dns]\nreverse_lookup = false\n",
            addr(p[0])
        );
        fs::write(&path, text).expect("write the config");
        vec!["--config".into(), path.display().to_string()]
    })
}

fn message_in(dir: &Path, mailbox: &str) -> String {
    let new = dir.join("md/example.test").join(mailbox).join("new");
    let file = fs::read_dir(&new)
        .expect("the mailbox")
        .next()
        .expect("a message")
        .unwrap();
    fs::read_to_string(file.path()).unwrap()
}

#[test]
fn xclient_and_xforward_name_the_client_in_received_and_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path(), "\"127.0.0.1\"");

    let mut c = Client::connect(server.port(0));
    let ehlo = c.expect("EHLO proxy.test", 250);
    assert!(
        ehlo.lines
            .iter()
            .any(|l| l.starts_with("XCLIENT NAME ADDR")),
        "{ehlo:?}"
    );
    let greeting = c.expect(
        "XCLIENT NAME=client.example.net ADDR=192.0.2.1 PORT=4242 HELO=client.example.net",
        220,
    );
    assert_eq!(greeting.lines, ["mx.test ESMTP"]);
    c.expect("EHLO client.example.net", 250);
    c.expect("MAIL FROM:<a@example.org>", 250);
    c.expect("RCPT TO:<first@example.test>", 250);
    assert_eq!(c.data(b"Subject: one\r\n\r\nx\r\n").code, 250);

    c.expect(
        "XFORWARD NAME=orig.example.net ADDR=198.51.100.2 HELO=orig.example.net",
        250,
    );
    c.expect("MAIL FROM:<a@example.org>", 250);
    c.expect("RCPT TO:<second@example.test>", 250);
    assert_eq!(c.data(b"Subject: two\r\n\r\ny\r\n").code, 250);
    c.expect("QUIT", 221);

    let first = message_in(dir.path(), "first");
    assert!(
        first.contains("Received: from client.example.net (client.example.net [192.0.2.1])\r\n"),
        "{first}"
    );
    let second = message_in(dir.path(), "second");
    assert!(
        second.contains("Received: from orig.example.net (orig.example.net [198.51.100.2])\r\n"),
        "{second}"
    );
    let log = server.wait_log("the session line", |log| {
        log.contains("smtpd::receiver: session ")
    });
    let session = log
        .lines()
        .find(|l| l.contains("smtpd::receiver: session "))
        .unwrap();
    assert!(
        session.contains("peer=192.0.2.1:4242") && session.contains("front_end=127.0.0.1:"),
        "{session}"
    );
    assert!(
        log.lines().any(|l| l.contains("smtpd::receiver: message ")
            && l.contains("forwarded=198.51.100.2 orig.example.net")),
        "{log}"
    );
}

#[test]
fn a_client_outside_the_networks_gets_550() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path(), "\"192.0.2.0/24\"");
    let mut c = Client::connect(server.port(0));
    let ehlo = c.expect("EHLO c.test", 250);
    assert!(
        !ehlo
            .lines
            .iter()
            .any(|l| l.starts_with("XCLIENT") || l.starts_with("XFORWARD")),
        "{ehlo:?}"
    );
    let reply = c.expect("XCLIENT ADDR=192.0.2.1", 550);
    assert_eq!(reply.text(), "5.7.0 Insufficient authorization");
    c.expect("XFORWARD ADDR=192.0.2.1", 550);
    c.expect("QUIT", 221);
}
