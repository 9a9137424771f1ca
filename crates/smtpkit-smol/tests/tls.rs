//! TLS tests with a rustls client over futures-rustls: STARTTLS (and the plaintext injection
//! it must drop), implicit TLS, and AUTH only over TLS.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Raw, T, eventually, pki, run, settings, start};
use smtpkit_smol::ListenerKind;

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn starttls_injection_is_dropped() {
    run(T, async {
        let pki = pki();
        let s = start(settings(), &[ListenerKind::Smtp], Some(pki.server.clone())).await;
        let mut c = Raw::greeted(s.addr(0)).await;
        c.send("EHLO c\r\n").await;
        assert!(c.expect("250-").await.contains("STARTTLS"));
        // The MAIL after STARTTLS, in the same packet, must not survive the upgrade.
        c.send("STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n").await;
        c.expect("220 ").await;
        let tls = common::handshake(c.io.into_inner()).await;
        let mut c = Raw::new(tls);
        c.send("EHLO c\r\nRCPT TO:<b@y.test>\r\nQUIT\r\n").await;
        let out = c.rest().await;
        assert!(
            out.contains("503 5.5.1"),
            "RCPT must find no transaction: {out}"
        );
        assert!(!out.contains("STARTTLS"), "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
    });
}

#[test]
fn starttls_message() {
    run(T, async {
        let pki = pki();
        let s = start(settings(), &[ListenerKind::Smtp], Some(pki.server.clone())).await;
        let mut c = Raw::greeted(s.addr(0)).await;
        c.send("EHLO c\r\nSTARTTLS\r\n").await;
        c.expect("250-").await;
        c.expect("220 ").await;
        let tls = common::handshake(c.io.into_inner()).await;
        let mut c = Raw::new(tls);
        c.send("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
            .await;
        for prefix in ["250-", "250 ", "250 ", "354 "] {
            c.expect(prefix).await;
        }
        c.send("Subject: tls\r\n\r\n..dot\r\n.\r\nQUIT\r\n").await;
        c.expect("250 2.0.0").await;
        c.expect("221 ").await;
        let store = s.rec.store();
        assert_eq!(store.messages.len(), 1);
        assert!(store.messages[0].tls);
        assert_eq!(store.messages[0].body, b"Subject: tls\r\n\r\n.dot\r\n");
    });
}

#[test]
fn failed_starttls_handshake_is_counted() {
    run(T, async {
        let pki = pki();
        let s = start(settings(), &[ListenerKind::Smtp], Some(pki.server.clone())).await;
        let mut c = Raw::greeted(s.addr(0)).await;
        c.send("EHLO c\r\nSTARTTLS\r\n").await;
        c.expect("250-").await;
        c.expect("220 ").await;
        // Not a ClientHello: the handshake fails and the session ends.
        c.send("EHLO this is not TLS\r\n").await;
        assert!(c.closed().await);
        let h = s.handle.clone();
        common::eventually(|| h.metrics().snapshot().tls_handshake_failures == 1).await;
        assert!(s.rec.store().messages.is_empty());
    });
}

#[test]
fn implicit_tls() {
    run(T, async {
        let pki = pki();
        let mut cfg = settings();
        cfg.auth_optional = true;
        let s = start(cfg, &[ListenerKind::Smtps], Some(pki.server.clone())).await;
        let tcp = common::timeout(T, async_net::TcpStream::connect(s.addr(0)))
            .await
            .unwrap()
            .unwrap();
        let mut c = Raw::new(common::handshake(tcp).await);
        c.expect("220 mx.test").await;
        c.send("EHLO c\r\n").await;
        let ehlo = c.expect("250-").await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
        c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nwrapped\r\n.\r\nQUIT\r\n")
            .await;
        for prefix in ["250 ", "250 ", "354 ", "250 2.0.0", "221 "] {
            c.expect(prefix).await;
        }
        let store = s.rec.store();
        assert_eq!(store.messages.len(), 1);
        assert!(store.messages[0].tls);
        assert_eq!(store.messages[0].body, b"wrapped\r\n");
    });
}

#[test]
fn implicit_tls_handshake_timeout() {
    run(T, async {
        let pki = pki();
        let mut cfg = settings();
        cfg.tls_handshake_timeout = Duration::from_millis(300);
        let s = start(cfg, &[ListenerKind::Smtps], Some(pki.server.clone())).await;
        // A client that connects and says nothing is closed after the handshake timeout.
        let mut c = Raw::connect(s.addr(0)).await;
        assert!(c.closed().await);
        // The socket closes when the handshake future is dropped, just before the count.
        let metrics = s.handle.metrics().clone();
        eventually(|| metrics.snapshot().tls_handshake_failures == 1).await;
        assert!(s.rec.store().peers.is_empty());
    });
}

#[test]
fn auth_plain_refused_on_plaintext_accepted_over_tls() {
    run(T, async {
        let pki = pki();
        let s = start(
            settings(),
            &[ListenerKind::Submission],
            Some(pki.server.clone()),
        )
        .await;
        let mut c = Raw::greeted(s.addr(0)).await;
        c.send("EHLO c\r\n").await;
        let ehlo = c.expect("250-").await;
        assert!(
            ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
            "{ehlo}"
        );
        // Plaintext: AUTH is refused, and so is MAIL without it.
        c.send(format!("AUTH PLAIN {}\r\n", plain("user", "secret")))
            .await;
        let refused = c.reply().await;
        assert!(refused.starts_with('5'), "{refused}");
        c.send("MAIL FROM:<a@x.test>\r\n").await;
        c.expect("530 5.7.0").await;

        c.send("STARTTLS\r\n").await;
        c.expect("220 ").await;
        let mut c = Raw::new(common::handshake(c.io.into_inner()).await);
        c.send("EHLO c\r\n").await;
        assert!(c.expect("250-").await.contains("AUTH PLAIN LOGIN"));
        c.send(format!("AUTH PLAIN {}\r\n", plain("user", "wrong")))
            .await;
        c.expect("535 5.7.8").await;
        c.send(format!("AUTH PLAIN {}\r\n", plain("user", "secret")))
            .await;
        c.expect("235 ").await;
        c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nsubmitted\r\n.\r\nQUIT\r\n")
            .await;
        for prefix in ["250 ", "250 ", "354 ", "250 2.0.0", "221 "] {
            c.expect(prefix).await;
        }
        let store = s.rec.store();
        assert_eq!(store.messages.len(), 1);
        assert!(store.messages[0].tls);
        assert_eq!(store.messages[0].user.as_deref(), Some("user"));
        assert_eq!(s.handle.metrics().snapshot().auth_failures, 1);
    });
}
