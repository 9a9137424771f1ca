//! Raw-socket tests: byte-exact content, pipelining, slow and stuck clients, aborts, load,
//! limits, shutdown and the PROXY protocol.

mod common;

use std::time::Duration;

use common::{Raw, T, eventually, run, settings, sleep, start, timeout};
use futures_lite::AsyncWriteExt;
use smtpkit_smol::{ListenerKind, ProxySettings};

const ENVELOPE: &str = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";

#[test]
fn plain_message_byte_exact() {
    run(Duration::from_secs(60), async {
        let s = start(settings(), &[ListenerKind::Smtp], None).await;
        let mut c = Raw::greeted(s.addr(0)).await;
        c.send("EHLO c\r\n").await;
        let ehlo = c.expect("250-mx.test").await;
        assert!(ehlo.contains("SMTPUTF8") && ehlo.contains("8BITMIME"));
        c.send("MAIL FROM:<jös@bücher.test> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<δοκιμή@παράδειγμα.test>\r\nDATA\r\n").await;
        c.expect("250 ").await;
        c.expect("250 ").await;
        c.expect("354 ").await;
        // 5 MB of lines, some starting with a dot, with 8-bit bytes; a last line without a
        // dot so the terminator follows ordinary content.
        let mut body = Vec::with_capacity(5_500_000);
        let mut i = 0u32;
        while body.len() < 5_000_000 {
            if i.is_multiple_of(7) {
                body.push(b'.');
            }
            body.extend_from_slice(format!("line {i} ünïcödé \u{2603}").as_bytes());
            body.extend_from_slice(b"\r\n");
            i += 1;
        }
        body.extend_from_slice(b"..\r\n.x\r\nend\r\n");
        let mut wire = Vec::with_capacity(body.len() + body.len() / 50);
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
        }
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        c.send(&wire).await;
        c.expect("250 2.0.0").await;
        c.expect("221 ").await;
        let store = s.rec.store();
        assert_eq!(store.messages.len(), 1);
        assert_eq!(store.messages[0].from, "<jös@bücher.test>");
        assert_eq!(store.messages[0].to, ["<δοκιμή@παράδειγμα.test>"]);
        assert!(!store.messages[0].tls);
        assert!(store.messages[0].body == body, "5 MB body differs");
        assert_eq!(
            s.handle.metrics().snapshot().bytes_received,
            body.len() as u64
        );
    });
}

#[test]
fn pipelined_burst() {
    run(T, async {
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
        assert!(c.closed().await);
        let store = s.rec.store();
        assert_eq!(store.messages.len(), 5);
        assert_eq!(store.messages[3].body, b"Subject: 3\r\n\r\nbody 3\r\n");
    });
}

#[test]
fn slow_drip() {
    run(Duration::from_secs(30), async {
        let s = start(settings(), &[ListenerKind::Smtp], None).await;
        let mut c = Raw::greeted(s.addr(0)).await;
        let script = format!("HELO c\r\n{ENVELOPE}Subject: drip\r\n\r\nslow\r\n.\r\nQUIT\r\n");
        for b in script.as_bytes() {
            c.send([*b]).await;
            sleep(Duration::from_micros(200)).await;
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
    });
}

#[test]
fn client_that_never_reads_is_dropped() {
    run(Duration::from_secs(30), async {
        let mut cfg = settings();
        cfg.timeouts.command = Duration::from_secs(1);
        let s = start(cfg, &[ListenerKind::Smtp], None).await;
        let mut tcp = timeout(T, async_net::TcpStream::connect(s.addr(0)))
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
        let _ = timeout(Duration::from_secs(8), writer).await;
        // The write timeout (the command timeout, 1 s) ends the session.
        let h = s.handle.clone();
        eventually(|| h.metrics().snapshot().connections_open == 0).await;
        assert_eq!(s.rec.store().closes.len(), 1);
    });
}

#[test]
fn disconnect_mid_data_aborts() {
    run(T, async {
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
    });
}

#[test]
fn concurrent_sessions_each_message_once() {
    run(Duration::from_secs(60), async {
        let mut cfg = settings();
        cfg.max_connections = 1000;
        let s = start(cfg, &[ListenerKind::Smtp], None).await;
        let addr = s.addr(0);
        let tasks: Vec<_> = (0..100)
            .map(|session| {
                smol::spawn(async move {
                    let mut c = Raw::greeted(addr).await;
                    c.send("EHLO c\r\n").await;
                    c.expect("250-").await;
                    for m in 0..10 {
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
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let store = s.rec.store();
        let mut ids: Vec<_> = store.messages.iter().map(|m| m.body.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(store.messages.len(), 1000);
        assert_eq!(ids.len(), 1000);
        assert_eq!(s.handle.metrics().snapshot().messages_accepted, 1000);
    });
}

#[test]
fn connection_limit() {
    run(T, async {
        let mut cfg = settings();
        cfg.max_connections = 1;
        let s = start(cfg, &[ListenerKind::Smtp], None).await;
        let _first = Raw::greeted(s.addr(0)).await;
        let mut second = Raw::connect(s.addr(0)).await;
        second.expect("421 4.7.0").await;
        assert!(second.closed().await);
        assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
    });
}

#[test]
fn per_ip_limit() {
    run(T, async {
        let mut cfg = settings();
        cfg.max_per_ip = 2;
        // Loopback is exempt by default; this test is about the limit itself.
        cfg.trusted_networks = Default::default();
        let s = start(cfg, &[ListenerKind::Smtp], None).await;
        let _a = Raw::greeted(s.addr(0)).await;
        let _b = Raw::greeted(s.addr(0)).await;
        let mut third = Raw::connect(s.addr(0)).await;
        third.expect("421 4.7.0").await;
        assert!(third.closed().await);
        drop(_a);
        // The freed place is taken by the next connection.
        let h = s.handle.clone();
        eventually(|| h.metrics().snapshot().connections_open == 1).await;
        let _c = Raw::greeted(s.addr(0)).await;
    });
}

#[test]
fn graceful_shutdown() {
    run(Duration::from_secs(20), async {
        let s = start(settings(), &[ListenerKind::Smtp], None).await;
        let mut busy = Raw::greeted(s.addr(0)).await;
        busy.send(format!("EHLO c\r\n{ENVELOPE}Subject: late\r\n\r\n"))
            .await;
        for prefix in ["250-", "250 ", "250 ", "354 "] {
            busy.expect(prefix).await;
        }
        let mut idle = Raw::greeted(s.addr(0)).await;
        let h = s.handle.clone();
        let shutdown = smol::spawn(async move { h.shutdown(Duration::from_secs(5)).await });
        idle.expect("421 4.3.2").await;
        assert!(idle.closed().await);
        // The listener closed before any session heard of the shutdown: a client told 421
        // cannot connect again.
        assert!(std::net::TcpStream::connect(s.addr(0)).is_err());
        assert!(!s.handle.is_stopped(), "the busy session is still open");
        busy.send("body\r\n.\r\n").await;
        busy.expect("250 2.0.0").await;
        busy.expect("421 4.3.2").await;
        timeout(T, shutdown).await.unwrap();
        assert!(s.handle.is_stopped());
        assert_eq!(s.rec.store().messages.len(), 1);
        assert_eq!(s.rec.store().aborted, 0);
    });
}

#[test]
fn shutdown_grace_expires() {
    run(T, async {
        let s = start(settings(), &[ListenerKind::Smtp], None).await;
        let mut busy = Raw::greeted(s.addr(0)).await;
        busy.send(format!("EHLO c\r\n{ENVELOPE}")).await;
        for prefix in ["250-", "250 ", "250 ", "354 "] {
            busy.expect(prefix).await;
        }
        timeout(T, s.handle.shutdown(Duration::from_millis(200)))
            .await
            .unwrap();
        assert!(s.handle.is_stopped());
        busy.expect("421 4.3.2").await;
        assert_eq!(s.rec.store().aborted, 1);
    });
}

/// An SMTP listener that trusts PROXY headers from `trusted`.
fn proxy_listener(trusted: &str) -> smtpkit_smol::ListenerSettings {
    let mut p = ProxySettings::new(trusted.parse().unwrap());
    p.timeout = Duration::from_secs(2);
    smtpkit_smol::ListenerSettings::new(ListenerKind::Smtp).proxy(p)
}

#[test]
fn proxy_protocol() {
    run(Duration::from_secs(30), async {
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
        // A trusted peer that sends nothing is closed after the PROXY timeout (2 s).
        let mut silent = Raw::connect(s.addr(0)).await;
        assert_eq!(silent.reply().await, "");
        assert_eq!(s.rec.store().peers.len(), 2);
        assert_eq!(s.handle.metrics().snapshot().connections_refused, 4);

        // An untrusted source is closed at once, whatever it sends.
        let s = start(settings(), &[proxy_listener("10.0.0.0/8")], None).await;
        let mut c = Raw::connect(s.addr(0)).await;
        assert_eq!(c.reply().await, "");
        assert!(s.rec.store().peers.is_empty());
        assert_eq!(s.handle.metrics().snapshot().connections_refused, 1);
    });
}

#[test]
fn build_errors() {
    run(T, async {
        let err = smtpkit_smol::SmtpServer::builder(smtpkit_server::blocking::Blocking(
            common::Recorder::default(),
        ))
        .build()
        .await
        .unwrap_err();
        assert!(matches!(err, smtpkit_smol::Error::NoListener));
        let err = smtpkit_smol::SmtpServer::builder(smtpkit_server::blocking::Blocking(
            common::Recorder::default(),
        ))
        .listener(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
            ListenerKind::Smtps,
        )
        .build()
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            smtpkit_smol::Error::MissingTls(ListenerKind::Smtps)
        ));
    });
}

#[test]
fn runs_on_the_applications_executor() {
    let ex = std::sync::Arc::new(smol::Executor::new());
    // The test thread drives the executor: the server's tasks run only inside `ex.run`.
    smol::block_on(ex.run(async {
        timeout(T, async {
            let rec = common::Recorder::default();
            let server =
                smtpkit_smol::SmtpServer::builder(smtpkit_server::blocking::Blocking(rec.clone()))
                    .settings(settings())
                    .executor(ex.clone())
                    .listener(
                        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
                        ListenerKind::Smtp,
                    )
                    .build()
                    .await
                    .unwrap();
            let handle = server.spawn();
            let mut c = Raw::greeted(handle.local_addrs()[0]).await;
            c.send(format!("HELO c\r\n{ENVELOPE}hi\r\n.\r\nQUIT\r\n"))
                .await;
            for prefix in ["250 ", "250 ", "250 ", "354 ", "250 2.0.0", "221 "] {
                c.expect(prefix).await;
            }
            handle.shutdown(Duration::from_secs(1)).await;
            assert!(handle.is_stopped());
            assert_eq!(rec.store().messages[0].body, b"hi\r\n");
        })
        .await
        .expect("test timed out");
    }));
}
