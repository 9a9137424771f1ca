//! Dispatcher tests: a real core [`Server`] driven in memory with a recording session.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use smtpkit_proto::address::{ForwardPath, ReversePath};
use smtpkit_proto::auth::{Credentials, encode_base64};
use smtpkit_proto::extension::Parameters;
use smtpkit_proto::server::ConfigError;
use smtpkit_proto::{CloseReason, EnhancedCode, InBuf, Reply, ReplyCode, Server, ServerConfig};

use super::harness::block_on;
use super::*;
use crate::endpoint::Endpoint;
use crate::settings::{ListenerKind, ServerSettings};

type Log = Arc<Mutex<Vec<String>>>;

/// Records every call; refuses a few things on purpose.
struct Recorder {
    log: Log,
    body: Arc<Mutex<Vec<u8>>>,
    /// Fail content once this many octets were seen.
    fail_after: Option<usize>,
    seen: usize,
    /// Refuse passwords, take only tokens.
    tokens_only: bool,
}

impl Recorder {
    fn push(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl Session for Recorder {
    async fn ehlo(&mut self, _: &SessionInfo, domain: &str) -> Decision {
        self.push(format!("ehlo {domain}"));
        Decision::Accept
    }

    async fn auth(&mut self, info: &SessionInfo, mechanism: &str, creds: &Credentials) -> Decision {
        assert!(info.authenticated.is_none());
        self.push(format!("auth {mechanism} {}", creds.user()));
        let ok = match creds {
            Credentials::Password { user, password, .. } => {
                !self.tokens_only && user == "user" && password.expose() == "pass"
            }
            Credentials::Token { user, token } => user == "user" && token.expose() == "good-token",
            _ => false,
        };
        if ok {
            Decision::Accept
        } else {
            Decision::reply(535, EnhancedCode::AUTH_FAILED, "Bad credentials")
        }
    }

    async fn mail_from(
        &mut self,
        _: &SessionInfo,
        from: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.push(format!("mail {from}"));
        if from.to_string().starts_with("<weird") {
            // 354 does not answer MAIL: the dispatcher must fall back to 451.
            return Decision::Reply(Reply::new(ReplyCode::START_DATA, "go on").unwrap());
        }
        Decision::Accept
    }

    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        to: &ForwardPath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.push(format!("rcpt {to}"));
        if to.to_string().starts_with("<bad") {
            return Decision::reply(550, EnhancedCode::new(5, 1, 1).unwrap(), "No such user");
        }
        Decision::Accept
    }

    async fn data_start(&mut self, _: &SessionInfo) -> Decision {
        self.push("data_start".into());
        self.seen = 0;
        Decision::Accept
    }

    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.body.lock().unwrap().extend_from_slice(chunk);
        self.seen += chunk.len();
        match self.fail_after {
            Some(n) if self.seen > n => {
                self.push("chunk error".into());
                Err(Reply::new(ReplyCode::TRANSACTION_FAILED, "Content refused").unwrap())
            }
            _ => Ok(()),
        }
    }

    async fn data_end(&mut self, _: &SessionInfo) -> Decision {
        self.push("data_end".into());
        Decision::Accept
    }

    async fn data_end_lmtp(&mut self, _: &SessionInfo, recipients: usize) -> Vec<Decision> {
        self.push(format!("data_end_lmtp {recipients}"));
        // The second recipient's mailbox is full; one decision too few for the third.
        vec![
            Decision::Accept,
            Decision::reply(452, EnhancedCode::new(4, 2, 2).unwrap(), "Mailbox full"),
        ]
    }

    async fn data_aborted(&mut self, _: &SessionInfo) {
        self.push("aborted".into());
    }

    async fn reset(&mut self, _: &SessionInfo) {
        self.push("reset".into());
    }

    async fn close(&mut self, info: &SessionInfo, reason: CloseReason) {
        self.push(format!(
            "close {reason} tls={} ehlo={:?}",
            info.tls, info.ehlo
        ));
    }
}

struct RecHandler {
    log: Log,
    body: Arc<Mutex<Vec<u8>>>,
    fail_after: Option<usize>,
    refuse: Option<Reply<'static>>,
    tokens_only: bool,
}

impl Handler for RecHandler {
    type Session = Recorder;
    async fn connect(&self, info: &SessionInfo) -> Result<Recorder, Reply<'static>> {
        self.log
            .lock()
            .unwrap()
            .push(format!("connect tls={}", info.tls));
        if let Some(r) = &self.refuse {
            return Err(r.clone());
        }
        Ok(Recorder {
            log: self.log.clone(),
            body: self.body.clone(),
            fail_after: self.fail_after,
            seen: 0,
            tokens_only: self.tokens_only,
        })
    }
}

/// A session that keeps every default.
struct Defaults;
impl Session for Defaults {}
struct DefaultHandler;
impl Handler for DefaultHandler {
    type Session = Defaults;
    async fn connect(&self, _: &SessionInfo) -> Result<Defaults, Reply<'static>> {
        Ok(Defaults)
    }
}

struct Outcome {
    wire: String,
    log: Vec<String>,
    body: Vec<u8>,
    metrics: crate::MetricsSnapshot,
}

fn handler() -> RecHandler {
    RecHandler {
        log: Log::default(),
        body: Arc::default(),
        fail_after: None,
        refuse: None,
        tokens_only: false,
    }
}

fn config(kind: ListenerKind, edit: impl FnOnce(&mut ServerSettings)) -> Arc<ServerConfig> {
    let mut s = ServerSettings {
        hostname: "mx.test".into(),
        ..Default::default()
    };
    edit(&mut s);
    s.server_config(kind, true).unwrap()
}

/// Runs `input` through a core session dispatched to `handler`, dripping `step` bytes at a
/// time; TLS handshakes succeed at once. Ends with EOF if the session is still open.
fn run<H: Handler>(
    config: Arc<ServerConfig>,
    handler: &H,
    input: &[u8],
    step: usize,
    tls: bool,
) -> (String, crate::MetricsSnapshot) {
    run_with(config, handler, input, |_| step, tls)
}

/// [`run`] with the size of each read chosen by `next(octets fed so far)`.
fn run_with<H: Handler>(
    config: Arc<ServerConfig>,
    handler: &H,
    input: &[u8],
    mut next: impl FnMut(usize) -> usize,
    tls: bool,
) -> (String, crate::MetricsSnapshot) {
    let now = Instant::now();
    let clock = || now;
    let metrics = Arc::new(crate::Metrics::new());
    let mut server = Server::new(config, now);
    if tls {
        server.handle_tls_established(now);
    }
    let info = SessionInfo::new(
        "192.0.2.1:4000".parse::<Endpoint>().unwrap(),
        "192.0.2.2:25".parse::<Endpoint>().unwrap(),
        ListenerKind::Smtp,
    );
    let mut d = block_on(Dispatcher::connect(
        handler,
        &mut server,
        info,
        Some(metrics.clone()),
        clock,
    ));
    let mut wire = Vec::new();
    let mut inbuf = InBuf::new(64, 65536);
    let mut rest = input;
    // Each round feeds at least one byte or ends, so the loop is bounded by the input length.
    for _ in 0..=input.len() + 1 {
        if server.wants_input() && !rest.is_empty() {
            let n = next(input.len() - rest.len())
                .max(1)
                .min(rest.len())
                .min(inbuf.spare().len());
            inbuf.spare()[..n].copy_from_slice(&rest[..n]);
            inbuf.commit(n);
            rest = &rest[n..];
        }
        loop {
            let progress = server.handle_input(now, inbuf.data());
            let Some(event) = progress.event else {
                inbuf.consume(progress.consumed);
                break;
            };
            block_on(d.handle(&mut server, event, clock));
            inbuf.consume(progress.consumed);
        }
        wire.extend_from_slice(server.poll_transmit());
        let n = server.poll_transmit().len();
        server.advance_transmit(n);
        if server.wants_tls_handshake() {
            server.handle_tls_established(now);
        }
        if server.is_closed() || rest.is_empty() {
            break;
        }
    }
    if !server.is_closed() {
        server.handle_eof(now);
    }
    block_on(d.close(&server));
    (String::from_utf8(wire).unwrap(), metrics.snapshot())
}

fn run_rec(config: Arc<ServerConfig>, h: &RecHandler, input: &str) -> Outcome {
    let (wire, metrics) = run(config, h, input.as_bytes(), 7, false);
    Outcome {
        wire,
        log: h.log.lock().unwrap().clone(),
        body: h.body.lock().unwrap().clone(),
        metrics,
    }
}

fn b64(s: &str) -> String {
    encode_base64(s.as_bytes())
}

#[test]
fn data_transaction() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<bad@y.test>\r\n\
         DATA\r\nSubject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        o.log,
        [
            "connect tls=false",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "rcpt <bad@y.test>",
            "data_start",
            "data_end",
            "reset",
            "close quit tls=false ehlo=Some(\"c.test\")",
        ]
    );
    assert_eq!(o.body, b"Subject: t\r\n\r\n.dot\r\n");
    assert!(o.wire.contains("550 5.1.1 No such user\r\n"), "{}", o.wire);
    assert!(
        o.wire.contains("250 2.0.0 Message accepted\r\n221"),
        "{}",
        o.wire
    );
    assert_eq!(o.metrics.messages_accepted, 1);
    assert_eq!(o.metrics.bytes_received, o.body.len() as u64);
}

#[test]
fn bdat_transaction() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 5\r\nHelloBDAT 6 LAST\r\n WorldQUIT\r\n",
    );
    assert_eq!(o.body, b"Hello World");
    assert_eq!(
        o.log[4..],
        [
            "data_start",
            "data_end",
            "reset",
            "close quit tls=false ehlo=Some(\"c\")"
        ]
    );
    assert!(
        o.wire.contains("250 2.0.0 5 octets received\r\n"),
        "{}",
        o.wire
    );
    assert!(
        o.wire.contains("250 2.0.0 Message accepted\r\n"),
        "{}",
        o.wire
    );
}

#[test]
fn chunk_error_is_latched_and_answers_the_end() {
    for input in [
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n0123456789abcdefghijklmnopqrstuvwxyz\r\n.\r\nNOOP\r\n",
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 20\r\n0123456789abcdefghijBDAT 16 LAST\r\nklmnopqrstuvwxyzNOOP\r\n",
    ] {
        let mut h = handler();
        h.fail_after = Some(10);
        let o = run_rec(config(ListenerKind::Smtp, |_| {}), &h, input);
        // One error, no more chunks to the handler, no data_end; the session goes on.
        assert_eq!(
            o.log.iter().filter(|l| *l == "chunk error").count(),
            1,
            "{:?}",
            o.log
        );
        assert!(!o.log.contains(&"data_end".to_owned()));
        assert!(o.log.contains(&"reset".to_owned()));
        assert!(o.body.len() < 36, "{}", o.body.len());
        assert!(
            o.wire
                .contains("554 5.0.0 Content refused\r\n250 2.0.0 OK\r\n"),
            "{}",
            o.wire
        );
        assert_eq!(o.metrics.messages_rejected, 1);
        assert_eq!(o.metrics.messages_accepted, 0);
    }
}

#[test]
fn auth_plain_and_login() {
    let cfg = || config(ListenerKind::Submission, |_| {});
    let plain = b64("\0user\0pass");
    let cases = [
        (format!("AUTH PLAIN {plain}\r\n"), "235 2.7.0"),
        (format!("AUTH PLAIN =\r\n{plain}\r\n"), "334 \r\n235 2.7.0"),
        (format!("AUTH PLAIN\r\n{plain}\r\n"), "334 \r\n235 2.7.0"),
        (
            format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64("user"), b64("pass")),
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0",
        ),
        (
            format!("AUTH LOGIN {}\r\n{}\r\n", b64("user"), b64("pass")),
            "334 UGFzc3dvcmQ6\r\n235 2.7.0",
        ),
        (
            format!("AUTH PLAIN {}\r\n", b64("\0user\0nope")),
            "535 5.7.8 Bad credentials",
        ),
        (
            format!("AUTH PLAIN {}\r\n", b64("user-only")),
            "501 5.5.2 Malformed",
        ),
        (
            format!("AUTH LOGIN\r\n{}\r\n", encode_base64(b"\xff")),
            "334 VXNlcm5hbWU6\r\n501 5.5.2 Malformed",
        ),
        (
            "AUTH PLAIN\r\n*\r\n".to_owned(),
            "334 \r\n501 5.0.0 Authentication canceled",
        ),
    ];
    for (auth, expected) in cases {
        let h = handler();
        let input = format!("EHLO c\r\n{auth}MAIL FROM:<a@x.test>\r\nQUIT\r\n");
        let (wire, metrics) = run(cfg(), &h, input.as_bytes(), 5, true);
        assert!(wire.contains(expected), "{auth:?}: {wire}");
        let ok = expected.ends_with("235 2.7.0");
        // Submission requires AUTH before MAIL.
        assert_eq!(wire.contains("250 2.1.0"), ok, "{auth:?}: {wire}");
        assert_eq!(wire.contains("530 5.7.0"), !ok, "{auth:?}: {wire}");
        let log = h.log.lock().unwrap();
        assert_eq!(
            log.iter()
                .any(|l| l.starts_with("auth ") && l.ends_with(" user")),
            ok || expected.contains("535")
        );
        let failures = u64::from(!ok && !expected.contains("canceled"));
        assert_eq!(metrics.auth_failures, failures, "{auth:?}");
    }
}

#[test]
fn default_auth_refuses() {
    let input = format!("EHLO c\r\nAUTH PLAIN {}\r\nQUIT\r\n", b64("\0user\0pass"));
    let (wire, _) = run(
        config(ListenerKind::Submission, |_| {}),
        &DefaultHandler,
        input.as_bytes(),
        64,
        true,
    );
    assert!(
        wire.contains("535 5.7.8 Authentication credentials invalid\r\n"),
        "{wire}"
    );
}

#[test]
fn lmtp_per_recipient_replies() {
    for content in ["DATA\r\nhi\r\n.\r\n", "BDAT 2\r\nhiBDAT 2 LAST\r\n\r\n"] {
        let h = handler();
        let o = run_rec(
            config(ListenerKind::Lmtp, |_| {}),
            &h,
            &format!(
                "LHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b1@y.test>\r\nRCPT TO:<bad@y.test>\r\n\
         RCPT TO:<b2@y.test>\r\nRCPT TO:<b3@y.test>\r\n{content}QUIT\r\n"
            ),
        );
        assert_eq!(o.body, b"hi\r\n");
        assert!(o.log.contains(&"data_end_lmtp 3".to_owned()), "{:?}", o.log);
        // Accept, the handler's 452, and 451 for the missing third decision, in order.
        assert!(
        o.wire.contains("250 2.0.0 Message accepted\r\n452 4.2.2 Mailbox full\r\n451 4.3.0 Local error in processing\r\n221"),
        "{}",
        o.wire
    );
        assert_eq!(o.metrics.messages_accepted, 1);
    }
}

#[test]
fn lmtp_all_accepted() {
    let (wire, _) = run(
        config(ListenerKind::Lmtp, |_| {}),
        &DefaultHandler,
        b"LHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b1@y.test>\r\nRCPT TO:<b2@y.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        64,
        false,
    );
    assert_eq!(
        wire.matches("250 2.0.0 Message accepted\r\n").count(),
        2,
        "{wire}"
    );
}

#[test]
fn invalid_handler_reply_falls_back_to_451() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c\r\nMAIL FROM:<weird@x.test>\r\nMAIL FROM:<a@x.test>\r\nQUIT\r\n",
    );
    assert!(
        o.wire
            .contains("451 4.3.0 Local error in processing\r\n250 2.1.0"),
        "{}",
        o.wire
    );
}

#[test]
fn message_rejected_by_core_aborts() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |s| s.limits.message_size = 10),
        &h,
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n0123456789abcdef\r\n.\r\nQUIT\r\n",
    );
    assert!(o.wire.contains("552 5.3.4"), "{}", o.wire);
    let tail: Vec<_> = o
        .log
        .iter()
        .skip_while(|l| *l != "data_start")
        .cloned()
        .collect();
    assert_eq!(tail[..3], ["data_start", "aborted", "reset"]);
    assert!(!o.log.contains(&"data_end".to_owned()));
    assert_eq!(o.metrics.messages_rejected, 1);
}

#[test]
fn eof_mid_data_aborts() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\npartial body",
    );
    assert_eq!(
        o.log[o.log.len() - 2..],
        [
            "aborted",
            "close peer closed the connection tls=false ehlo=Some(\"c\")"
        ]
    );
    assert!(!o.log.contains(&"data_end".to_owned()));
    assert_eq!(o.metrics.messages_accepted, 0);
}

#[test]
fn rset_and_new_ehlo_reset() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRSET\r\nMAIL FROM:<a@x.test>\r\nEHLO d\r\nQUIT\r\n",
    );
    assert_eq!(
        o.log[2..],
        [
            "mail <a@x.test>",
            "reset",
            "mail <a@x.test>",
            "ehlo d",
            "reset",
            "close quit tls=false ehlo=Some(\"d\")",
        ]
    );
}

#[test]
fn refused_connection() {
    let mut h = handler();
    h.refuse = Some(Reply::new(ReplyCode::TRANSACTION_FAILED, "Go away").unwrap());
    let o = run_rec(config(ListenerKind::Smtp, |_| {}), &h, "EHLO c\r\nQUIT\r\n");
    assert_eq!(o.log, ["connect tls=false"]);
    assert!(o.wire.starts_with("554 Go away\r\n503 "), "{}", o.wire);
    assert!(o.wire.ends_with("221 2.0.0 Bye\r\n"), "{}", o.wire);

    // A refusal the core does not take for a connection becomes 421.
    let mut h = handler();
    h.refuse = Some(Reply::new(ReplyCode::OK, "not a refusal").unwrap());
    let o = run_rec(config(ListenerKind::Smtp, |_| {}), &h, "EHLO c\r\n");
    assert_eq!(o.wire, "421 Service not available\r\n");
}

#[test]
fn starttls_clears_ehlo_and_sets_tls() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |_| {}),
        &h,
        "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x.test>\r\n",
    );
    assert!(
        o.wire.contains("220 2.0.0 Ready to start TLS\r\n"),
        "{}",
        o.wire
    );
    // The pipelined plaintext MAIL was dropped by the core and never reached the handler.
    assert!(!o.log.iter().any(|l| l.contains("injected")), "{:?}", o.log);
    assert_eq!(
        o.log.last().unwrap(),
        "close peer closed the connection tls=true ehlo=None"
    );
}

#[test]
fn implicit_tls_connect_sees_tls() {
    let h = handler();
    let (_, _) = run(
        config(ListenerKind::Smtps, |_| {}),
        &h,
        b"QUIT\r\n",
        64,
        true,
    );
    assert_eq!(h.log.lock().unwrap()[0], "connect tls=true");
}

#[test]
fn decision_reply_helper_validates() {
    let Decision::Reply(r) = Decision::reply(250, EnhancedCode::new(5, 0, 0).unwrap(), "x") else {
        panic!()
    };
    assert_eq!(r.code(), ReplyCode::LOCAL_ERROR);
    let Decision::Reply(r) = Decision::reply(550, EnhancedCode::new(5, 7, 1).unwrap(), "Denied")
    else {
        panic!()
    };
    assert_eq!((r.code().get(), r.text()), (550, "Denied"));
}

/// A session that accepts any password and lets `user` act as `admin` only.
struct Proxying {
    log: Log,
}

impl Session for Proxying {
    async fn auth(&mut self, _: &SessionInfo, _: &str, creds: &Credentials) -> Decision {
        self.log
            .lock()
            .unwrap()
            .push(format!("auth {} as {:?}", creds.user(), creds.acting_as()));
        Decision::Accept
    }

    async fn authorize(&mut self, _: &SessionInfo, authcid: &str, authzid: &str) -> bool {
        authcid == "user" && authzid == "admin"
    }

    async fn mail_from(
        &mut self,
        info: &SessionInfo,
        _: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.log
            .lock()
            .unwrap()
            .push(format!("mail as {:?}", info.authenticated));
        Decision::Accept
    }
}

struct ProxyingHandler(Log);

impl Handler for ProxyingHandler {
    type Session = Proxying;
    async fn connect(&self, _: &SessionInfo) -> Result<Proxying, Reply<'static>> {
        Ok(Proxying {
            log: self.0.clone(),
        })
    }
}

#[test]
fn plain_authzid_needs_the_sessions_consent() {
    let cases = [
        // (authzid, authcid, wire, log)
        ("", "user", "235 2.7.0", "mail as Some(\"user\")"),
        ("user", "user", "235 2.7.0", "mail as Some(\"user\")"),
        ("admin", "user", "235 2.7.0", "mail as Some(\"admin\")"),
        ("root", "user", "535 5.7.8", ""),
        ("admin", "other", "535 5.7.8", ""),
    ];
    for (authzid, authcid, wire_has, log_has) in cases {
        let log = Log::default();
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@x.test>\r\nQUIT\r\n",
            b64(&format!("{authzid}\0{authcid}\0pw"))
        );
        let (wire, metrics) = run(
            config(ListenerKind::Submission, |_| {}),
            &ProxyingHandler(log.clone()),
            input.as_bytes(),
            64,
            true,
        );
        assert!(wire.contains(wire_has), "{authzid}/{authcid}: {wire}");
        let log = log.lock().unwrap();
        if wire_has.starts_with("535") {
            // Refused before the password is looked at.
            assert!(log.is_empty(), "{log:?}");
            assert_eq!(metrics.auth_failures, 1);
        } else {
            assert!(log.iter().any(|l| l == log_has), "{log:?}");
        }
    }
    // A session that keeps the default never lets anyone act as someone else.
    let input = format!("EHLO c\r\nAUTH PLAIN {}\r\n", b64("admin\0user\0pass"));
    let h = handler();
    let (wire, _) = run(
        config(ListenerKind::Submission, |_| {}),
        &h,
        input.as_bytes(),
        64,
        true,
    );
    assert!(wire.contains("535 5.7.8"), "{wire}");
    assert!(!h.log.lock().unwrap().iter().any(|l| l.starts_with("auth")));
}

#[test]
fn unimplemented_mechanism_is_refused_by_settings_and_answered_like_the_core() {
    let s = ServerSettings {
        auth_mechanisms: vec!["PLAIN".into(), "CRAM-MD5".into()],
        ..Default::default()
    };
    assert_eq!(
        s.server_config(ListenerKind::Submission, true).unwrap_err(),
        ConfigError::UnsupportedMechanism("CRAM-MD5".into())
    );
    // A raw core config may still offer it: the dispatcher answers as the core answers an
    // unknown mechanism.
    let mut options = ServerSettings::default().server_options(ListenerKind::Submission, true);
    options.extensions.auth_mechanisms = vec!["CRAM-MD5".into()];
    let config = Arc::new(ServerConfig::new(options).unwrap());
    let (wire, _) = run(
        config,
        &handler(),
        b"EHLO c\r\nAUTH CRAM-MD5\r\nAUTH BOGUS\r\n",
        64,
        true,
    );
    let refusal = "504 5.5.4 Unrecognized authentication type\r\n";
    assert_eq!(wire.matches(refusal).count(), 2, "{wire}");
}

#[test]
fn transactions_end_once_whatever_ends_them() {
    let h = handler();
    let o = run_rec(
        config(ListenerKind::Smtp, |s| s.limits.message_size = 10),
        &h,
        // RSET resets even without a transaction; a BDAT refused by the core (over the size
        // limit) after an accepted chunk aborts the message and ends the transaction once.
        "EHLO c\r\nRSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 2\r\nhi\
         BDAT 20 LAST\r\n01234567890123456789QUIT\r\n",
    );
    assert_eq!(
        o.log[1..],
        [
            "ehlo c",
            "reset",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            "aborted",
            "reset",
            "close quit tls=false ehlo=Some(\"c\")",
        ]
    );
    assert!(o.wire.contains("552 5.3.4"), "{}", o.wire);
}

/// Every core option set through [`ServerSettings`], seen on the wire.
mod settings_on_the_wire {
    use super::*;

    fn wire(edit: impl FnOnce(&mut ServerSettings), tls: bool, input: &str) -> String {
        let mut s = ServerSettings {
            hostname: "mx.test".into(),
            ..Default::default()
        };
        edit(&mut s);
        let config = s.server_config(ListenerKind::Smtp, tls).unwrap();
        run(config, &DefaultHandler, input.as_bytes(), 64, tls).0
    }

    fn keywords(wire: &str) -> Vec<&str> {
        wire.lines()
            .filter_map(|l| l.strip_prefix("250-").or_else(|| l.strip_prefix("250 ")))
            .collect()
    }

    #[test]
    fn extension_switches() {
        let on = wire(|_| {}, false, "EHLO c\r\n");
        for k in [
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "ENHANCEDSTATUSCODES",
        ] {
            assert!(keywords(&on).contains(&k), "{k}: {on}");
        }
        assert!(!keywords(&on).contains(&"DSN"), "{on}");
        let off = wire(
            |s| {
                let e = &mut s.extensions;
                e.pipelining = false;
                e.eight_bit_mime = false;
                e.smtputf8 = false;
                e.chunking = false;
                e.binary_mime = false;
                e.enhanced_status_codes = false;
                e.dsn = true;
            },
            false,
            "EHLO c\r\nBDAT 1 LAST\r\nx",
        );
        assert_eq!(keywords(&off), ["mx.test", "SIZE 26214400", "DSN"], "{off}");
        // CHUNKING off: BDAT is not implemented, without an enhanced code.
        assert!(off.contains("502 Command not implemented\r\n"), "{off}");
    }

    #[test]
    fn dsn_parameters() {
        let input = "EHLO c\r\nMAIL FROM:<a@x.test> RET=HDRS ENVID=abc\r\n\
                     RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test\r\n";
        let on = wire(|s| s.extensions.dsn = true, false, input);
        assert!(on.contains("250 2.1.0") && on.contains("250 2.1.5"), "{on}");
        let off = wire(
            |_| {},
            false,
            "EHLO c\r\nMAIL FROM:<a@x.test> RET=HDRS\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test> NOTIFY=NEVER\r\n",
        );
        assert_eq!(off.matches("555 5.5.4").count(), 2, "{off}");
    }

    #[test]
    fn pipelining_sync_check() {
        let input = "EHLO c\r\nNOOP\r\n";
        let on = wire(|s| s.pipelining_sync_check = true, false, input);
        assert!(
            on.ends_with("554 5.5.0 Improper use of SMTP command pipelining\r\n"),
            "{on}"
        );
        let off = wire(|_| {}, false, input);
        assert!(off.ends_with("250 2.0.0 OK\r\n"), "{off}");
    }

    #[test]
    fn requiretls() {
        let input = "EHLO c\r\nMAIL FROM:<a@x.test> REQUIRETLS\r\n";
        let on = wire(|s| s.extensions.requiretls = true, true, input);
        assert!(keywords(&on).contains(&"REQUIRETLS"), "{on}");
        assert!(on.contains("250 2.1.0"), "{on}");
        // Offered only over TLS.
        let plain = wire(|s| s.extensions.requiretls = true, false, input);
        assert!(!keywords(&plain).contains(&"REQUIRETLS"), "{plain}");
        assert!(plain.contains("555 5.5.4"), "{plain}");
    }

    #[test]
    fn require_tls_and_insecure_auth_and_extra_params() {
        let mail = "EHLO c\r\nMAIL FROM:<a@x.test> XFOO=1\r\nRCPT TO:<b@y.test> XBAR\r\n";
        let needs_tls = wire(|s| s.require_tls = true, false, mail);
        assert!(
            needs_tls.contains("530 5.7.0 Must issue a STARTTLS command first"),
            "{needs_tls}"
        );
        let extra = wire(
            |s| {
                s.extra_mail_params = vec!["XFOO".into()];
                s.extra_rcpt_params = vec!["XBAR".into()];
            },
            false,
            mail,
        );
        assert!(
            extra.contains("250 2.1.0") && extra.contains("250 2.1.5"),
            "{extra}"
        );
        let config = |insecure: bool| {
            ServerSettings {
                allow_insecure_auth: insecure,
                ..Default::default()
            }
            .server_config(ListenerKind::Submission, false)
            .unwrap()
        };
        let auth = |insecure| run(config(insecure), &DefaultHandler, b"EHLO c\r\n", 64, false).0;
        assert!(
            auth(true).contains("250 AUTH PLAIN LOGIN\r\n"),
            "{}",
            auth(true)
        );
        assert!(!auth(false).contains("AUTH"), "{}", auth(false));
    }

    #[test]
    fn recipient_overshoot() {
        let mut input = "EHLO c\r\nMAIL FROM:<a@x.test>\r\n".to_owned();
        for i in 0..30 {
            input.push_str(&format!("RCPT TO:<r{i}@y.test>\r\n"));
        }
        input.push_str("DATA\r\nhi\r\n.\r\n");
        let counted = |overshoot| {
            wire(
                |s| {
                    s.limits.recipients = 2;
                    s.limits.recipient_overshoot = overshoot;
                },
                false,
                &input,
            )
        };
        let tolerant = counted(1000);
        assert_eq!(tolerant.matches("452 4.5.3").count(), 28, "{tolerant}");
        assert!(
            tolerant.contains("250 2.0.0 Message accepted"),
            "{tolerant}"
        );
        let strict = counted(0);
        assert!(strict.contains("421 4.7.0 Too many errors"), "{strict}");
    }
}

mod sasl;
