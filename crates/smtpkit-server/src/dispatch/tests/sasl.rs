//! SASL through the dispatcher: every built-in mechanism as a transcript run whole, one byte
//! at a time and split at every position; a custom mechanism; the step limit.

use smtpkit_proto::Secret;
use smtpkit_proto::auth::{Mechanism, SaslError, Step};

use super::*;

/// The session's wire bytes for `input` after `EHLO c`, on a TLS submission listener
/// offering `mechanisms`, checked to be the same however the input is split.
fn transcript<H: Handler>(
    handler: impl Fn() -> H,
    mechanisms: &[&str],
    custom: &[&str],
    input: &str,
) -> String {
    let cfg = || {
        config(ListenerKind::Submission, |s| {
            s.auth_mechanisms = mechanisms.iter().map(|m| m.to_string()).collect();
            s.custom_mechanisms = custom.iter().map(|m| m.to_string()).collect();
        })
    };
    let input = format!("EHLO c\r\n{input}");
    let bytes = input.as_bytes();
    let (whole, _) = run(cfg(), &handler(), bytes, bytes.len(), true);
    let (per_byte, _) = run(cfg(), &handler(), bytes, 1, true);
    assert_eq!(per_byte, whole, "one byte at a time: {input:?}");
    for cut in 1..bytes.len() {
        let (split, _) = run_with(
            cfg(),
            &handler(),
            bytes,
            |fed| if fed < cut { cut - fed } else { usize::MAX },
            true,
        );
        assert_eq!(split, whole, "split at {cut}: {input:?}");
    }
    whole
}

/// The replies after the EHLO response.
fn after_ehlo(wire: &str) -> &str {
    let end = wire.find("250 ").expect("EHLO answered");
    let rest = &wire[end..];
    &rest[rest.find("\r\n").unwrap() + 2..]
}

const ALL: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

fn xoauth2(user: &str, token: &str) -> String {
    b64(&format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

fn oauthbearer(user: &str, token: &str) -> String {
    b64(&format!(
        "n,a={user},\x01host=mx.test\x01port=587\x01auth=Bearer {token}\x01\x01"
    ))
}

#[test]
fn every_builtin_mechanism_as_a_transcript() {
    let google_error =
        b64(r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#);
    let bearer_error = b64(r#"{"status":"invalid_token","schemes":"bearer"}"#);
    let cases = [
        (
            format!("AUTH PLAIN {}\r\n", b64("\0user\0pass")),
            "235 2.7.0 Authentication successful\r\n".to_owned(),
        ),
        (
            format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64("user"), b64("pass")),
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
                .to_owned(),
        ),
        (
            format!("AUTH XOAUTH2 {}\r\n", xoauth2("user", "good-token")),
            "235 2.7.0 Authentication successful\r\n".to_owned(),
        ),
        (
            format!("AUTH XOAUTH2\r\n{}\r\n", xoauth2("user", "good-token")),
            "334 \r\n235 2.7.0 Authentication successful\r\n".to_owned(),
        ),
        // Refused: Google's error document, the client's empty reply, then the refusal.
        (
            format!("AUTH XOAUTH2 {}\r\n\r\n", xoauth2("user", "expired")),
            format!("334 {google_error}\r\n535 5.7.8 Bad credentials\r\n"),
        ),
        (
            format!("AUTH OAUTHBEARER {}\r\n", oauthbearer("user", "good-token")),
            "235 2.7.0 Authentication successful\r\n".to_owned(),
        ),
        // RFC 7628 3.2.3: the error document, the client's %x01, then the refusal.
        (
            format!(
                "AUTH OAUTHBEARER {}\r\nAQ==\r\n",
                oauthbearer("user", "expired")
            ),
            format!("334 {bearer_error}\r\n535 5.7.8 Bad credentials\r\n"),
        ),
        // `*` after the error document cancels, as anywhere in an exchange.
        (
            format!(
                "AUTH OAUTHBEARER {}\r\n*\r\n",
                oauthbearer("user", "expired")
            ),
            format!("334 {bearer_error}\r\n501 5.0.0 Authentication canceled\r\n"),
        ),
        (
            format!(
                "AUTH OAUTHBEARER {}\r\n",
                b64("p=tls-unique,,\x01auth=Bearer x\x01\x01")
            ),
            "501 5.5.2 Malformed authentication response\r\n".to_owned(),
        ),
        (
            "AUTH XOAUTH2 dXNlcj1=\r\n".to_owned(),
            "501 5.5.2 Malformed authentication response\r\n".to_owned(),
        ),
        (
            "AUTH XOAUTH2\r\n%%%\r\n".to_owned(),
            "334 \r\n501 5.5.2 invalid base64 in AUTH response\r\n".to_owned(),
        ),
    ];
    for (auth, replies) in cases {
        let wire = transcript(handler, &ALL, &[], &format!("{auth}QUIT\r\n"));
        assert!(
            wire.contains("250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"),
            "{wire}"
        );
        let after = after_ehlo(&wire);
        assert_eq!(
            after.strip_suffix("221 2.0.0 Bye\r\n").unwrap_or(after),
            replies,
            "{auth:?}"
        );
    }
}

#[test]
fn a_handler_takes_tokens_and_refuses_passwords() {
    let tokens_only = || RecHandler {
        tokens_only: true,
        ..handler()
    };
    let input = format!(
        "AUTH PLAIN {}\r\nAUTH XOAUTH2 {}\r\nQUIT\r\n",
        b64("\0user\0pass"),
        xoauth2("user", "good-token")
    );
    let h = tokens_only();
    let (wire, metrics) = run(
        config(ListenerKind::Submission, |s| {
            s.auth_mechanisms = ALL.map(str::to_owned).to_vec();
        }),
        &h,
        format!("EHLO c\r\n{input}").as_bytes(),
        9,
        true,
    );
    assert!(
        wire.contains("535 5.7.8 Bad credentials\r\n235 2.7.0"),
        "{wire}"
    );
    let log = h.log.lock().unwrap();
    assert!(log.contains(&"auth PLAIN user".to_owned()), "{log:?}");
    assert!(log.contains(&"auth XOAUTH2 user".to_owned()), "{log:?}");
    assert_eq!(metrics.auth_failures, 1);
}

/// `X-TWO-STEP`: asks `first?` and `second?`, and presents `first:second` as a password of
/// user `first`. `X-ENDLESS` never stops asking.
struct Custom {
    log: Log,
}

#[derive(Default)]
struct TwoStep {
    answers: Vec<String>,
}

impl Mechanism for TwoStep {
    fn step(&mut self, response: Option<&[u8]>) -> Step {
        if let Some(r) = response {
            match String::from_utf8(r.to_vec()) {
                Ok(t) => self.answers.push(t),
                Err(_) => return Step::Failed(SaslError::Utf8),
            }
        }
        match self.answers.len() {
            0 => Step::Challenge(b"first?".to_vec()),
            1 => Step::Challenge(b"second?".to_vec()),
            _ => Step::Done(Credentials::Password {
                authzid: None,
                user: self.answers[0].clone(),
                password: Secret::new(self.answers[1].clone()),
            }),
        }
    }
}

struct Endless;

impl Mechanism for Endless {
    fn step(&mut self, _: Option<&[u8]>) -> Step {
        Step::Challenge(b"more".to_vec())
    }
}

impl Session for Custom {
    fn mechanism(&mut self, _: &SessionInfo, mechanism: &str) -> Option<Box<dyn Mechanism>> {
        match mechanism {
            "X-TWO-STEP" => Some(Box::new(TwoStep::default())),
            "X-ENDLESS" => Some(Box::new(Endless)),
            _ => None,
        }
    }

    async fn auth(&mut self, _: &SessionInfo, mechanism: &str, creds: &Credentials) -> Decision {
        self.log
            .lock()
            .unwrap()
            .push(format!("auth {mechanism} {}", creds.user()));
        match creds {
            Credentials::Password { password, .. } if password.expose() == "s3" => Decision::Accept,
            _ => Decision::reply(535, EnhancedCode::AUTH_FAILED, "No"),
        }
    }
}

struct CustomHandler(Log);

impl Handler for CustomHandler {
    type Session = Custom;
    async fn connect(&self, _: &SessionInfo) -> Result<Custom, Reply<'static>> {
        Ok(Custom {
            log: self.0.clone(),
        })
    }
}

#[test]
fn a_custom_mechanism_is_advertised_and_driven() {
    let log = Log::default();
    let offered = ["X-TWO-STEP", "X-ENDLESS", "PLAIN"];
    let custom = ["X-TWO-STEP", "X-ENDLESS"];
    let input = format!(
        "AUTH X-TWO-STEP\r\n{}\r\n{}\r\nQUIT\r\n",
        b64("me"),
        b64("s3")
    );
    let wire = transcript(|| CustomHandler(log.clone()), &offered, &custom, &input);
    assert!(
        wire.contains("250 AUTH X-TWO-STEP X-ENDLESS PLAIN\r\n"),
        "{wire}"
    );
    assert_eq!(
        after_ehlo(&wire),
        format!(
            "334 {}\r\n334 {}\r\n235 2.7.0 Authentication successful\r\n221 2.0.0 Bye\r\n",
            b64("first?"),
            b64("second?")
        )
    );
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|l| l == "auth X-TWO-STEP me")
    );

    // The step limit is the dispatcher's, whatever the mechanism does.
    let answers = "=\r\n".repeat(MAX_AUTH_STEPS + 1);
    let wire = transcript(
        || CustomHandler(log.clone()),
        &offered,
        &custom,
        &format!("AUTH X-ENDLESS\r\n{answers}QUIT\r\n"),
    );
    let after = after_ehlo(&wire);
    assert_eq!(
        after.matches("334 bW9yZQ==\r\n").count(),
        MAX_AUTH_STEPS,
        "{after}"
    );
    assert!(
        after.contains("334 bW9yZQ==\r\n535 5.7.8 Authentication exchange too long\r\n"),
        "{after}"
    );

    // PLAIN is offered but this session does not run it: answered like an unknown mechanism.
    let wire = transcript(
        || CustomHandler(log.clone()),
        &offered,
        &custom,
        &format!("AUTH PLAIN {}\r\nQUIT\r\n", b64("\0me\0s3")),
    );
    assert!(
        after_ehlo(&wire).starts_with("504 5.5.4 Unrecognized authentication type\r\n"),
        "{wire}"
    );

    // A custom name must be declared before it is offered.
    let s = ServerSettings {
        auth_mechanisms: vec!["X-TWO-STEP".into()],
        ..Default::default()
    };
    assert_eq!(
        s.server_config(ListenerKind::Submission, true).unwrap_err(),
        ConfigError::UnsupportedMechanism("X-TWO-STEP".into())
    );
}
