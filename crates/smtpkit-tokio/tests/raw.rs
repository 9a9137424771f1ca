//! Raw-socket tests: pipelining, STARTTLS injection, slow and stuck clients, aborts, load,
//! limits, shutdown and the PROXY protocol.

mod common;

use std::time::Duration;

use common::{Raw, T, eventually, pki, settings, start};
use smtpkit_tokio::{ListenerKind, ProxySettings};
use tokio::io::AsyncWriteExt;

const ENVELOPE: &str = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";

#[tokio::test]
async fn pipelined_burst() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut c = Raw::greeted(s.addr(0)).await;
    let mut burst = String::from("EHLO c\r\n");
    for i in 0..5 {
        burst.push_str(ENVELOPE);
        burst.push_str(&format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n"));
    }
    burst.push_str("QUIT\r\n");
    c.send(burst).await;
    c.expect("250-mx.test").await;
    for _ in 0..5 {
        c.expect("250 2.1.0").await;
        c.expect("250 2.1.5").await;
        c.expect("354 ").await;
        c.expect("250 2.0.0").await;
    }
    c.expect("221 ").await;
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 5);
    assert_eq!(store.messages[3].body, b"Subject: 3\r\n\r\nbody 3\r\n");
}

#[tokio::test]
async fn smtputf8_address_and_big_body_byte_exact() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut c = Raw::greeted(s.addr(0)).await;
    c.send("EHLO c\r\n").await;
    let ehlo = c.expect("250-").await;
    assert!(ehlo.contains("SMTPUTF8") && ehlo.contains("8BITMIME"));
    c.send("MAIL FROM:<jös@bücher.test> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<δοκιμή@παράδειγμα.test>\r\nDATA\r\n").await;
    c.expect("250 ").await;
    c.expect("250 ").await;
    c.expect("354 ").await;
    // 20 MB of lines, some starting with a dot, with 8-bit bytes.
    let mut body = Vec::with_capacity(21_000_000);
    let mut i = 0u32;
    while body.len() < 20_000_000 {
        if i.is_multiple_of(7) {
            body.push(b'.');
        }
        body.extend_from_slice(format!("line {i} ünïcödé \u{2603}").as_bytes());
        body.extend_from_slice(b"\r\n");
        i += 1;
    }
    let mut wire = Vec::with_capacity(body.len() + body.len() / 50);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    c.send(&wire).await;
    c.expect("250 2.0.0").await;
    let store = s.rec.store();
    assert_eq!(store.messages[0].from, "<jös@bücher.test>");
    assert_eq!(store.messages[0].to, ["<δοκιμή@παράδειγμα.test>"]);
    assert!(store.messages[0].body == body, "20 MB body differs");
}

#[test]
fn starttls_injection_is_dropped() {
    // The server runs on the runtime's workers; the test thread is a blocking client.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = pki();
    let s = rt.block_on(start(
        settings(),
        &[ListenerKind::Smtp],
        Some(pki.server.clone()),
    ));
    let mut c = smtp_test::support::blocking::Raw::greeted(s.addr(0));
    c.send("EHLO c\r\n");
    assert!(c.expect("250-").contains("STARTTLS"));
    // The MAIL after STARTTLS, in the same packet, must not survive the upgrade.
    c.send("STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n");
    c.expect("220 ");
    c.upgrade(pki.client.clone());
    c.send("EHLO c\r\nRCPT TO:<b@y.test>\r\nQUIT\r\n");
    let out = c.rest();
    assert!(
        out.contains("503 5.5.1"),
        "RCPT must find no transaction: {out}"
    );
    assert!(!out.contains("STARTTLS"), "{out}");
}

#[tokio::test]
async fn slow_drip() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut c = Raw::greeted(s.addr(0)).await;
    let script = format!("HELO c\r\n{ENVELOPE}Subject: drip\r\n\r\nslow\r\n.\r\nQUIT\r\n");
    for b in script.as_bytes() {
        c.send([*b]).await;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let out = c.rest().await;
    assert!(
        out.ends_with("250 2.0.0 Message accepted\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(
        s.rec.store().messages[0].body,
        b"Subject: drip\r\n\r\nslow\r\n"
    );
}

#[tokio::test]
async fn client_that_never_reads_is_dropped() {
    let mut cfg = settings();
    cfg.timeouts.command = Duration::from_secs(1);
    let s = start(cfg, &[ListenerKind::Smtp], None).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut tcp = tokio::time::timeout(T, sock.connect(s.addr(0)))
        .await
        .unwrap()
        .unwrap();
    // EHLO replies are large; the client never reads them. Write until the server stops
    // reading (our writes block) or closes (our writes fail), at most 4 MB.
    let chunk = "EHLO c\r\n".repeat(1024);
    let writer = async {
        for _ in 0..512 {
            if tcp.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), writer).await;
    // The write timeout (the command timeout, 1 s) ends the session.
    let h = s.handle.clone();
    eventually(|| h.metrics().snapshot().connections_open == 0).await;
    assert_eq!(s.rec.store().closes.len(), 1);
}

#[tokio::test]
async fn disconnect_mid_data_aborts() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut c = Raw::greeted(s.addr(0)).await;
    c.send(format!("EHLO c\r\n{ENVELOPE}")).await;
    c.expect("250-").await;
    c.expect("250 ").await;
    c.expect("250 ").await;
    c.expect("354 ").await;
    c.send("Subject: cut\r\n\r\nhalf a bo").await;
    drop(c);
    let rec = s.rec.clone();
    eventually(|| rec.store().aborted == 1).await;
    assert!(s.rec.store().messages.is_empty());
}

#[tokio::test]
async fn concurrent_sessions_each_message_once() {
    const SESSIONS: usize = 500;
    const MESSAGES: usize = 20;
    let mut cfg = settings();
    cfg.max_connections = 1000;
    let s = start(cfg, &[ListenerKind::Smtp], None).await;
    let addr = s.addr(0);
    let mut tasks = tokio::task::JoinSet::new();
    for session in 0..SESSIONS {
        tasks.spawn(async move {
            let mut c = Raw::greeted(addr).await;
            c.send("EHLO c\r\n").await;
            c.expect("250-").await;
            for m in 0..MESSAGES {
                // Pipeline the envelope and body; read the four replies.
                c.send(format!(
                    "{ENVELOPE}Message-ID: <{session}.{m}@t>\r\n\r\nx\r\n.\r\n"
                ))
                .await;
                for prefix in ["250 ", "250 ", "354 ", "250 "] {
                    c.expect(prefix).await;
                }
            }
            c.send("QUIT\r\n").await;
            c.expect("221 ").await;
        });
    }
    tokio::time::timeout(Duration::from_secs(25), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("sessions did not finish in time");
    let store = s.rec.store();
    let mut ids: Vec<_> = store.messages.iter().map(|m| m.body.clone()).collect();
    ids.sort();
    ids.dedup();
    let total = (SESSIONS * MESSAGES) as u64;
    assert_eq!(store.messages.len() as u64, total);
    assert_eq!(ids.len() as u64, total, "a message arrived twice");
    assert_eq!(s.handle.metrics().snapshot().messages_accepted, total);
}

#[tokio::test]
async fn connection_limit() {
    let mut cfg = settings();
    cfg.max_connections = 1;
    let s = start(cfg, &[ListenerKind::Smtp], None).await;
    let _first = Raw::greeted(s.addr(0)).await;
    let mut second = Raw::connect(s.addr(0)).await;
    second.expect("421 4.7.0").await;
    assert!(second.closed().await);
    assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
}

#[tokio::test]
async fn graceful_shutdown() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut busy = Raw::greeted(s.addr(0)).await;
    busy.send(format!("EHLO c\r\n{ENVELOPE}Subject: late\r\n\r\n"))
        .await;
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        busy.expect(prefix).await;
    }
    let mut idle = Raw::greeted(s.addr(0)).await;
    let h = s.handle.clone();
    let shutdown = tokio::spawn(async move { h.shutdown(Duration::from_secs(5)).await });
    idle.expect("421 4.3.2").await;
    assert!(idle.closed().await);
    // The listener closed before any session heard of the shutdown: a client told 421 cannot
    // connect again.
    assert!(std::net::TcpStream::connect(s.addr(0)).is_err());
    busy.send("body\r\n.\r\n").await;
    busy.expect("250 2.0.0").await;
    busy.expect("421 4.3.2").await;
    tokio::time::timeout(T, shutdown).await.unwrap().unwrap();
    assert!(s.handle.is_stopped());
    assert_eq!(s.rec.store().messages.len(), 1);
}

#[tokio::test]
async fn shutdown_grace_expires() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let mut busy = Raw::greeted(s.addr(0)).await;
    busy.send(format!("EHLO c\r\n{ENVELOPE}")).await;
    for prefix in ["250-", "250 ", "250 ", "354 "] {
        busy.expect(prefix).await;
    }
    tokio::time::timeout(T, s.handle.shutdown(Duration::from_millis(200)))
        .await
        .unwrap();
    busy.expect("421 4.3.2").await;
    assert_eq!(s.rec.store().aborted, 1);
}

/// An SMTP listener that trusts PROXY headers from `trusted`.
fn proxy_listener(trusted: &str) -> smtpkit_tokio::ListenerSettings {
    let mut p = ProxySettings::new(trusted.parse().unwrap());
    p.timeout = Duration::from_secs(2);
    smtpkit_tokio::ListenerSettings::new(ListenerKind::Smtp).proxy(p)
}

#[tokio::test]
async fn proxy_protocol() {
    let s = start(settings(), &[proxy_listener("127.0.0.0/8")], None).await;
    // v1, with the first command in the same packet.
    let mut c = Raw::connect(s.addr(0)).await;
    c.send("PROXY TCP4 192.0.2.7 198.51.100.1 4242 25\r\nEHLO c\r\n")
        .await;
    c.expect("220 ").await;
    c.expect("250-").await;
    // v2 over IPv6.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0x10, 0x00, 0x00, 0x19]);
    let mut c2 = Raw::connect(s.addr(0)).await;
    c2.send(&v2).await;
    c2.expect("220 ").await;
    let peers = s.rec.store().peers.clone();
    assert_eq!(peers[0].to_string(), "192.0.2.7:4242");
    assert_eq!(peers[1].to_string(), "[2001:db8::9]:4096");
    // Malformed, oversize, and no header at all: closed without a greeting.
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(200));
    for bad in ["PROXY TCP4 1.2.3.4\r\n", long.as_str(), "EHLO c\r\n"] {
        let mut c = Raw::connect(s.addr(0)).await;
        c.send(bad).await;
        assert_eq!(c.reply().await, "", "{bad:?}");
    }
    assert_eq!(s.rec.store().peers.len(), 2);

    // An untrusted source is closed at once, whatever it sends.
    let s = start(settings(), &[proxy_listener("10.0.0.0/8")], None).await;
    let mut c = Raw::connect(s.addr(0)).await;
    assert_eq!(c.reply().await, "");
    assert!(s.rec.store().peers.is_empty());
    assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
}
