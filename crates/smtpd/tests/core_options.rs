//! Black-box: every core option turned on through smtpd's TOML, seen on the wire of the real
//! binary (EHLO keywords, DSN parameters accepted, the sync-check 554, REQUIRETLS over
//! STARTTLS, recipient overshoot, extra MAIL parameters).

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;

use common::{Client, IO_TIMEOUT, Pki, Server, addr};

/// A config with every switch away from its default, on one STARTTLS-capable smtp listener.
fn start(dir: &Path) -> (Server, Pki) {
    let pki = Pki::write(dir);
    let server = Server::with_config(dir, "smtpd.toml", 1, |p| {
        format!(
            r#"hostname = "mx.test"
pipelining_sync_check = true
extra_mail_params = ["XFOO"]

[[listener]]
address = "{}"
kind = "smtp"

[tls]
cert = "cert.pem"
key = "key.pem"

[extensions]
dsn = true
requiretls = true
chunking = false
binary_mime = false
smtputf8 = false

[limits]
recipients = 2

[storage]
maildir = "md"
"#,
            addr(p[0])
        )
    });
    (server, pki)
}

#[test]
fn core_options_from_toml_reach_the_wire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, pki) = start(dir.path());

    let mut c = Client::connect(server.port(0));
    let ehlo = c.expect("EHLO client.test", 250);
    for on in [
        "PIPELINING",
        "8BITMIME",
        "DSN",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.lines.iter().any(|l| l == on), "{on}: {ehlo:?}");
    }
    for off in ["CHUNKING", "BINARYMIME", "SMTPUTF8", "REQUIRETLS"] {
        assert!(!ehlo.lines.iter().any(|l| l == off), "{off}: {ehlo:?}");
    }
    // DSN parameters and the declared extra parameter are accepted.
    c.expect("MAIL FROM:<a@sender.test> RET=HDRS ENVID=abc XFOO=1", 250);
    c.expect(
        "RCPT TO:<r1@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1@example.test",
        250,
    );
    c.expect("RCPT TO:<r2@example.test>", 250);
    // Over the limit of 2: 452 without counting as errors (20 would close the session).
    for i in 3..=30 {
        let reply = c.expect(&format!("RCPT TO:<r{i}@example.test>"), 452);
        assert!(reply.text().starts_with("4.5.3"), "{reply:?}");
    }
    assert_eq!(c.data(b"Subject: many\r\n\r\nhi\r\n").code, 250);
    // CHUNKING off: 502, and the chunk's octet is still read as content, never a command.
    c.expect("BDAT 1 LAST", 502);
    c.send(b"x").expect("send the chunk");
    c.expect("QUIT", 221);

    // The sync check: a command after EHLO in the same packet.
    let mut c = Client::connect(server.port(0));
    c.send(b"EHLO client.test\r\nNOOP\r\n").expect("send");
    let reply = c.reply().expect("reply");
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(reply.text().starts_with("5.5.0"), "{reply:?}");

    // REQUIRETLS is offered, and accepted, once TLS is up.
    let (ehlo, mail) = starttls_then(server.port(0), &pki, "MAIL FROM:<a@sender.test> REQUIRETLS");
    assert!(
        ehlo.iter()
            .any(|l| l == "250-REQUIRETLS" || l == "250 REQUIRETLS"),
        "{ehlo:?}"
    );
    assert!(mail.starts_with("250 2.1.0"), "{mail}");
}

/// STARTTLS on a raw socket, then EHLO and `command` over TLS: the EHLO reply lines and the
/// command's reply line.
fn starttls_then(port: u16, pki: &Pki, command: &str) -> (Vec<String>, String) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut plain = BufReader::new(tcp);
    let mut line = String::new();
    plain.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("220 "), "{line}");
    plain.get_mut().write_all(b"STARTTLS\r\n").expect("send");
    line.clear();
    plain.read_line(&mut line).expect("starttls reply");
    assert!(line.starts_with("220 "), "{line}");
    assert!(
        plain.buffer().is_empty(),
        "nothing may follow 220 before the handshake"
    );
    let tcp = plain.into_inner();

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let read_reply =
        |tls: &mut BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>| {
            let mut lines = Vec::new();
            // A reply has at most a few dozen lines; the bound keeps a broken server from hanging us.
            for _ in 0..64 {
                let mut line = String::new();
                tls.read_line(&mut line).expect("read over TLS");
                let line = line.trim_end().to_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    break;
                }
            }
            lines
        };
    tls.get_mut()
        .write_all(b"EHLO client.test\r\n")
        .expect("send EHLO");
    let ehlo = read_reply(&mut tls);
    tls.get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("send command");
    let reply = read_reply(&mut tls).join("\n");
    let _ = tls.get_mut().write_all(b"QUIT\r\n");
    (ehlo, reply)
}
