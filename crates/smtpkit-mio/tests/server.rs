//! End-to-end tests over 127.0.0.1 with std clients: messages, pipelining, TLS, AUTH, slow
//! and stuck clients, aborts, load, limits, shutdown and the PROXY protocol.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Raw, T, eventually, pki, settings, start};
use smtpkit_mio::{CloseReason, ListenerKind, ProxySettings};

const ENVELOPE: &str = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";

#[test]
fn plain_message_byte_exact() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut c = Raw::greeted(s.addr(0));
    c.send("EHLO c\r\n");
    let ehlo = c.expect("250-mx.test");
    assert!(
        ehlo.contains("PIPELINING") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.send("MAIL FROM:<a@x.test>\r\n");
    c.expect("250 2.1.0");
    c.send("RCPT TO:<b@y.test>\r\n");
    c.expect("250 2.1.5");
    c.send("DATA\r\n");
    c.expect("354 ");
    // Dot-stuffed lines, 8-bit bytes, a bare "." only at the end.
    c.send("Subject: hi\r\n\r\n..leading dot\r\nünïcödé\r\n.\r\n");
    c.expect("250 2.0.0");
    c.send("QUIT\r\n");
    c.expect("221 ");
    assert_eq!(c.reply(), "");
    eventually(|| s.rec.store().closes == [CloseReason::Quit]);
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    let m = &store.messages[0];
    assert_eq!(m.from, "<a@x.test>");
    assert_eq!(m.to, ["<b@y.test>"]);
    assert_eq!(
        m.body,
        "Subject: hi\r\n\r\n.leading dot\r\nünïcödé\r\n".as_bytes()
    );
    assert!(!m.tls);
}

#[test]
fn big_body_byte_exact() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut c = Raw::greeted(s.addr(0));
    c.send(format!("EHLO c\r\n{ENVELOPE}"));
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        c.expect(prefix);
    }
    // 4 MB of lines, every seventh starting with a dot.
    let mut body = Vec::with_capacity(4_200_000);
    let mut i = 0u32;
    while body.len() < 4_000_000 {
        if i.is_multiple_of(7) {
            body.push(b'.');
        }
        body.extend_from_slice(format!("line {i} \u{2603}\r\n").as_bytes());
        i += 1;
    }
    let mut wire = Vec::with_capacity(body.len() + body.len() / 40);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    c.send(&wire);
    c.expect("250 2.0.0");
    assert!(s.rec.store().messages[0].body == body, "4 MB body differs");
}

#[test]
fn pipelined_burst() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut c = Raw::greeted(s.addr(0));
    let mut burst = String::from("EHLO c\r\n");
    for i in 0..5 {
        burst.push_str(ENVELOPE);
        burst.push_str(&format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n"));
    }
    burst.push_str("QUIT\r\n");
    c.send(burst);
    c.expect("250-mx.test");
    for _ in 0..5 {
        c.expect("250 2.1.0");
        c.expect("250 2.1.5");
        c.expect("354 ");
        c.expect("250 2.0.0");
    }
    c.expect("221 ");
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 5);
    assert_eq!(store.messages[3].body, b"Subject: 3\r\n\r\nbody 3\r\n");
}

#[test]
fn starttls_and_injection_dropped() {
    let pki = pki();
    let s = start(settings(), &[ListenerKind::Smtp], Some(pki.server.clone()));
    let mut c = Raw::greeted(s.addr(0));
    c.send("EHLO c\r\n");
    assert!(c.expect("250-").contains("STARTTLS"));
    // The MAIL after STARTTLS, in the same packet, must not survive the upgrade.
    c.send("STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n");
    c.expect("220 ");
    c.upgrade(pki.client.clone());
    c.send("EHLO c\r\nRCPT TO:<b@y.test>\r\n");
    let ehlo = c.expect("250-");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("503 5.5.1");
    c.send(format!(
        "{ENVELOPE}Subject: secret\r\n\r\nover tls\r\n.\r\nQUIT\r\n"
    ));
    for prefix in ["250 ", "250 ", "354 ", "250 2.0.0", "221 "] {
        c.expect(prefix);
    }
    eventually(|| s.rec.store().closes.len() == 1);
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    assert!(store.messages[0].tls);
    assert_eq!(store.messages[0].from, "<a@x.test>");
}

#[test]
fn implicit_tls_and_auth() {
    let pki = pki();
    let s = start(
        settings(),
        &[ListenerKind::Smtps, ListenerKind::Submission],
        Some(pki.server.clone()),
    );
    // Submission in plaintext: no AUTH offered, AUTH refused, MAIL needs AUTH.
    let mut plain = Raw::greeted(s.addr(1));
    plain.send("EHLO c\r\n");
    let ehlo = plain.expect("250-");
    assert!(
        !ehlo.contains("AUTH") && ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    plain.send("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    let refused = plain.reply();
    assert!(refused.starts_with('5'), "{refused}");
    plain.send("MAIL FROM:<a@x.test>\r\n");
    plain.expect("530 ");

    // SMTPS: the handshake first, then AUTH is offered and works.
    let mut c = Raw::connect(s.addr(0));
    c.upgrade(pki.client.clone());
    c.expect("220 ");
    c.send("EHLO c\r\n");
    let ehlo = c.expect("250-");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    // user / wrong, then user / secret.
    c.send("AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n");
    c.expect("535 ");
    c.send("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    c.expect("235 ");
    c.send(format!("{ENVELOPE}Subject: s\r\n\r\nx\r\n.\r\nQUIT\r\n"));
    for prefix in ["250 ", "250 ", "354 ", "250 2.0.0", "221 "] {
        c.expect(prefix);
    }
    let store = s.rec.store();
    assert_eq!(store.messages[0].user.as_deref(), Some("user"));
    assert!(store.messages[0].tls);
    assert_eq!(s.handle.metrics().snapshot().auth_failures, 1);
}

#[test]
fn tls_handshake_failure_is_counted() {
    let pki = pki();
    let s = start(settings(), &[ListenerKind::Smtps], Some(pki.server.clone()));
    let mut c = Raw::connect(s.addr(0));
    // Not a ClientHello.
    c.send("EHLO plaintext\r\n\r\n\r\n");
    let rest = c.rest();
    assert!(!rest.contains("220"), "{rest:?}");
    let h = s.handle.clone();
    eventually(|| h.metrics().snapshot().tls_handshake_failures == 1);
    // The server is still serving.
    let mut ok = Raw::connect(s.addr(0));
    ok.upgrade(pki.client.clone());
    ok.expect("220 ");
}

#[test]
fn slow_drip() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut c = Raw::greeted(s.addr(0));
    let script = format!("HELO c\r\n{ENVELOPE}Subject: drip\r\n\r\nslow\r\n.\r\nQUIT\r\n");
    for b in script.as_bytes() {
        c.send([*b]);
        thread::sleep(Duration::from_micros(200));
    }
    let out = c.rest();
    assert!(
        out.ends_with("250 2.0.0 Message accepted\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(
        s.rec.store().messages[0].body,
        b"Subject: drip\r\n\r\nslow\r\n"
    );
}

#[test]
fn client_that_never_reads_is_dropped() {
    let mut cfg = settings();
    cfg.timeouts.command = Duration::from_secs(1);
    let s = start(cfg, &[ListenerKind::Smtp], None);
    let mut tcp = TcpStream::connect_timeout(&s.addr(0), T).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // EHLO replies are large; the client never reads them. Write until the server stops
    // reading (our write times out) or closes (our write fails), at most 4 MB.
    let chunk = "EHLO c\r\n".repeat(1024);
    for _ in 0..512 {
        if tcp.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    // The write timeout (the command timeout, 1 s) ends the session.
    let h = s.handle.clone();
    eventually(|| h.metrics().snapshot().connections_open == 0);
    assert_eq!(s.rec.store().closes.len(), 1);
}

#[test]
fn disconnect_mid_data_aborts() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut c = Raw::greeted(s.addr(0));
    c.send(format!("EHLO c\r\n{ENVELOPE}"));
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        c.expect(prefix);
    }
    c.send("Subject: cut\r\n\r\nhalf a bo");
    drop(c);
    let rec = s.rec.clone();
    eventually(|| rec.store().aborted == 1);
    assert!(s.rec.store().messages.is_empty());
    eventually(|| rec.store().closes == [CloseReason::PeerEof]);
}

#[test]
fn concurrent_sessions_each_message_once() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let addr = s.addr(0);
    let clients: Vec<_> = (0..100)
        .map(|session| {
            thread::spawn(move || {
                let mut c = Raw::greeted(addr);
                c.send("EHLO c\r\n");
                c.expect("250-");
                for m in 0..10 {
                    // Pipeline the envelope and body; read the four replies.
                    c.send(format!(
                        "{ENVELOPE}Message-ID: <{session}.{m}@t>\r\n\r\nx\r\n.\r\n"
                    ));
                    for prefix in ["250 ", "250 ", "354 ", "250 "] {
                        c.expect(prefix);
                    }
                }
                c.send("QUIT\r\n");
                c.expect("221 ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let store = s.rec.store();
    let mut ids: Vec<_> = store.messages.iter().map(|m| m.body.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(store.messages.len(), 1000);
    assert_eq!(ids.len(), 1000);
    assert_eq!(s.handle.metrics().snapshot().messages_accepted, 1000);
}

#[test]
fn connection_limit() {
    let mut cfg = settings();
    cfg.max_connections = 1;
    let s = start(cfg, &[ListenerKind::Smtp], None);
    let _first = Raw::greeted(s.addr(0));
    let mut second = Raw::connect(s.addr(0));
    second.expect("421 4.7.0");
    assert_eq!(second.reply(), "");
    assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
}

#[test]
fn graceful_shutdown() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut busy = Raw::greeted(s.addr(0));
    busy.send(format!("EHLO c\r\n{ENVELOPE}Subject: late\r\n\r\n"));
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        busy.expect(prefix);
    }
    let mut idle = Raw::greeted(s.addr(0));
    let h = s.handle.clone();
    let shutdown = thread::spawn(move || h.shutdown(Duration::from_secs(5)));
    idle.expect("421 4.3.2");
    assert_eq!(idle.reply(), "");
    // The listener closed before any session heard of the shutdown: a client told 421 cannot
    // connect again.
    assert!(TcpStream::connect(s.addr(0)).is_err());
    busy.send("body\r\n.\r\n");
    busy.expect("250 2.0.0");
    busy.expect("421 4.3.2");
    shutdown.join().unwrap();
    assert!(s.handle.is_stopped());
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    assert_eq!(store.messages[0].body, b"Subject: late\r\n\r\nbody\r\n");
    assert_eq!(store.closes, [CloseReason::Shutdown, CloseReason::Shutdown]);
}

#[test]
fn shutdown_grace_expires() {
    let s = start(settings(), &[ListenerKind::Smtp], None);
    let mut busy = Raw::greeted(s.addr(0));
    busy.send(format!("EHLO c\r\n{ENVELOPE}"));
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        busy.expect(prefix);
    }
    s.handle.shutdown(Duration::from_millis(200));
    assert!(s.handle.is_stopped());
    busy.expect("421 4.3.2");
    assert_eq!(s.rec.store().aborted, 1);
}

/// An SMTP listener that trusts PROXY headers from `trusted`.
fn proxy_listener(trusted: &str) -> smtpkit_mio::ListenerSettings {
    let mut p = ProxySettings::new(trusted.parse().unwrap());
    p.timeout = Duration::from_secs(1);
    smtpkit_mio::ListenerSettings::new(ListenerKind::Smtp).proxy(p)
}

#[test]
fn proxy_protocol() {
    let s = start(settings(), &[proxy_listener("127.0.0.0/8")], None);
    // v1, with the first command in the same packet.
    let mut c = Raw::connect(s.addr(0));
    c.send("PROXY TCP4 192.0.2.7 198.51.100.1 4242 25\r\nEHLO c\r\n");
    c.expect("220 ");
    c.expect("250-");
    assert_eq!(s.rec.store().peers[0].to_string(), "192.0.2.7:4242");
    // Malformed, and no header at all (closed after the header timeout): no greeting.
    for bad in ["PROXY TCP4 1.2.3.4\r\n", "EHLO c\r\n"] {
        let mut c = Raw::connect(s.addr(0));
        c.send(bad);
        assert_eq!(c.reply(), "", "{bad:?}");
    }
    assert_eq!(s.rec.store().peers.len(), 1);
    assert_eq!(s.handle.metrics().snapshot().connections_refused, 2);

    // An untrusted source is closed at once, whatever it sends.
    let s = start(settings(), &[proxy_listener("10.0.0.0/8")], None);
    let mut c = Raw::connect(s.addr(0));
    assert_eq!(c.reply(), "");
    assert!(s.rec.store().peers.is_empty());
    assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
}
