//! `[dns]`: smtpd looks its clients up in the nameservers the configuration names, and the
//! `Received:` header and the session log line carry the forward-confirmed name.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;

use common::{Client, Server, addr};
use smtp_test::dns::{TestDns, ptr};

/// The client, as a PROXY header tells smtpd: hickory answers the reverse lookup of a
/// loopback address itself (`localhost`), so the test's own address would never reach the
/// test's nameserver.
const CLIENT: &str = "192.0.2.1";

/// Sends one message over a connection that starts with a PROXY header for `CLIENT`.
fn send_as_client(port: u16) {
    let mut client = Client::connect_raw(port).expect("connect");
    client
        .send(format!("PROXY TCP4 {CLIENT} 127.0.0.1 40000 25\r\n").as_bytes())
        .unwrap();
    assert_eq!(client.reply().expect("greeting").code, 220);
    for (command, code) in [
        ("EHLO client.example.test\r\n", 250),
        ("MAIL FROM:<a@example.org>\r\n", 250),
        ("RCPT TO:<bob@example.test>\r\n", 250),
        ("DATA\r\n", 354),
        ("Subject: hi\r\n\r\nbody\r\n.\r\n", 250),
        ("QUIT\r\n", 221),
    ] {
        client.send(command.as_bytes()).unwrap();
        let reply = client.reply().expect("a reply");
        assert_eq!(reply.code, code, "{command:?}: {reply:?}");
    }
}

#[test]
fn received_header_and_session_line_carry_the_confirmed_name() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let records = format!(
        "{}client.example.test. 300 IN A {CLIENT}\n",
        ptr(CLIENT.parse().unwrap(), "client.example.test.")
    );
    let dns = rt
        .block_on(TestDns::start(&records))
        .expect("start the nameserver");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("smtpd.toml");
    let server = Server::start(dir.path(), 1, |p| {
        let text = format!(
            "hostname = \"mx.test\"\n\n\
             [[listener]]\naddress = \"{}\"\nproxy_protocol = true\n\n\
             [proxy]\ntrusted = [\"127.0.0.1\"]\n\n\
             [storage]\nmaildir = \"md\"\n\n\
             [dns]\nnameservers = [\"{}\"]\ntimeout = 5\n",
            addr(p[0]),
            dns.addr()
        );
        fs::write(&config, text).expect("write the config");
        vec!["--config".into(), config.display().to_string()]
    });
    send_as_client(server.port(0));

    let mailbox = dir.path().join("md/example.test/bob/new");
    let file = fs::read_dir(&mailbox)
        .expect("the mailbox")
        .next()
        .expect("a message")
        .unwrap();
    let message = fs::read_to_string(file.path()).unwrap();
    assert!(
        message
            .contains("Received: from client.example.test (client.example.test [192.0.2.1])\r\n"),
        "{message}"
    );
    let log = server.wait_log("the session line", |log| {
        log.lines().any(|l| l.contains("smtpd::receiver: session "))
    });
    let session = log
        .lines()
        .find(|l| l.contains("smtpd::receiver: session "))
        .unwrap();
    assert!(
        session.contains("peer=192.0.2.1:40000") && session.contains("client=client.example.test"),
        "{session}"
    );
}
