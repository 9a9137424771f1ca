//! The protocol transcript at TRACE level, captured with a test subscriber over a real
//! loopback session: every command and reply line once, in the session's span, with AUTH
//! secrets redacted and message content summarized by size.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Raw, Recorder, T, eventually, settings};
use smtpkit_proto::auth::encode_base64;
use smtpkit_server::blocking::Blocking;
use smtpkit_tokio::{ListenerKind, SmtpServer};

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn transcript_at_trace() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(log.clone())
        .finish();
    // Global, and this binary's only test: tracing caches each log site's interest process-wide,
    // so a thread-local subscriber beside other tests' threads can miss events.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let mut s = settings();
    s.allow_insecure_auth = true;
    let b = SmtpServer::builder(Blocking(Recorder::default()));
    let server = smtp_test::support::configure(b, s, &[ListenerKind::Submission], None);
    let handle = server.build().await.unwrap().spawn();
    let user = encode_base64(b"user");
    let password = encode_base64(b"secret");
    let body = "Subject: private words\r\n\r\nhello\r\n";
    let mut c = Raw::greeted(handle.local_addrs()[0]).await;
    c.send("EHLO c.test\r\n").await;
    c.expect("250-").await;
    c.send("AUTH LOGIN\r\n").await;
    c.expect("334 ").await;
    c.send(format!("{user}\r\n")).await;
    c.expect("334 ").await;
    c.send(format!("{password}\r\n")).await;
    c.expect("235 ").await;
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("250 ").await;
    c.send("RCPT TO:<b@y.test>\r\n").await;
    c.expect("250 ").await;
    c.send("DATA\r\n").await;
    c.expect("354 ").await;
    c.send(format!("{body}.\r\n")).await;
    c.expect("250 ").await;
    c.send("QUIT\r\n").await;
    c.expect("221 ").await;
    eventually(|| log.text().contains("session ended")).await;
    handle.shutdown(T).await;

    let text = log.text();
    for expected in [
        "C: EHLO c.test",
        "S: 250-mx.test",
        "C: AUTH LOGIN",
        "C: <redacted>",
        "S: 235 2.7.0",
        "C: MAIL FROM:<a@x.test>",
        "S: 250 2.1.5",
        "C: DATA",
        "S: 354 ",
        &format!("C: <message content, {} octets>", body.len()),
        "S: 221 ",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    for secret in [user.as_str(), password.as_str(), "private words"] {
        assert!(!text.contains(secret), "{secret:?} leaked into {text}");
    }
    // Each line is in the session's span.
    let line = text.lines().find(|l| l.contains("C: EHLO")).unwrap();
    assert!(line.contains("smtp{id="), "{line}");
    // Once per line, not once per adapter layer.
    assert_eq!(text.matches("C: MAIL FROM:<a@x.test>").count(), 1);
}
