//! Black-box tests with lettre as the client: plain, STARTTLS, implicit TLS, AUTH.

mod common;

use std::time::Duration;

use common::{T, pki, settings, start};
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use smtpkit_tokio::ListenerKind;

fn message(subject: &str, body: &str) -> Message {
    Message::builder()
        .from("Alice <alice@example.org>".parse::<Mailbox>().unwrap())
        .to("bob@example.net".parse::<Mailbox>().unwrap())
        .subject(subject)
        .singlepart(
            SinglePart::builder()
                .header(ContentTransferEncoding::EightBit)
                .body(body.to_owned()),
        )
        .unwrap()
}

fn tls_params(ca_pem: &str) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

async fn send(t: &AsyncSmtpTransport<Tokio1Executor>, m: Message) -> Result<(), String> {
    tokio::time::timeout(T, t.send(m))
        .await
        .expect("send timed out")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn plain_8bitmime_byte_exact() {
    let s = start(settings(), &[ListenerKind::Smtp], None).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.addr(0).port())
        .tls(Tls::None)
        .build();
    let m = message("Grüße", "Hällo wörld\r\n.leading dot\r\n");
    let raw = m.formatted();
    send(&t, m).await.unwrap();
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    let got = &store.messages[0];
    // lettre always sends CRLF "." CRLF after the content, so a message ending in CRLF gains one.
    let mut expected = raw;
    expected.extend_from_slice(b"\r\n");
    assert_eq!(got.body, expected, "body must arrive byte-exact");
    assert_eq!(got.from, "<alice@example.org>");
    assert_eq!(got.to, ["<bob@example.net>"]);
    assert!(!got.tls);
}

#[tokio::test]
async fn starttls_with_auth_plain_and_login() {
    let pki = pki();
    let s = start(
        settings(),
        &[ListenerKind::Submission],
        Some(pki.server.clone()),
    )
    .await;
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(s.addr(0).port())
            .tls(Tls::Required(tls_params(&pki.ca_pem)))
            .credentials(Credentials::new("user".into(), "secret".into()))
            .authentication(vec![mechanism])
            .build();
        send(&t, message("tls", "over STARTTLS")).await.unwrap();
    }
    // Wrong password: refused, nothing stored.
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.addr(0).port())
        .tls(Tls::Required(tls_params(&pki.ca_pem)))
        .credentials(Credentials::new("user".into(), "wrong".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let err = send(&t, message("x", "y")).await.unwrap_err();
    assert!(
        err.contains("535") || err.to_lowercase().contains("credentials"),
        "{err}"
    );
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 2);
    assert!(
        store
            .messages
            .iter()
            .all(|m| m.tls && m.user.as_deref() == Some("user"))
    );
    assert!(s.handle.metrics().snapshot().auth_failures >= 1);
}

#[tokio::test]
async fn xoauth2_token_accepted_and_refused() {
    let pki = pki();
    let mut cfg = settings();
    cfg.auth_mechanisms = smtpkit_tokio::AUTH_MECHANISMS.map(str::to_owned).to_vec();
    let s = start(cfg, &[ListenerKind::Submission], Some(pki.server.clone())).await;
    let transport = |token: &str| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(s.addr(0).port())
            .tls(Tls::Required(tls_params(&pki.ca_pem)))
            .credentials(Credentials::new("user".into(), token.into()))
            .authentication(vec![Mechanism::Xoauth2])
            .build()
    };
    send(&transport("ya29.token"), message("oauth", "with a token"))
        .await
        .unwrap();
    // lettre does not answer XOAUTH2's error challenge; either way nothing is delivered.
    let err = send(&transport("expired"), message("x", "y"))
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    assert_eq!(store.messages[0].user.as_deref(), Some("user"));
}

#[tokio::test]
async fn implicit_tls() {
    let pki = pki();
    let mut cfg = settings();
    cfg.auth_optional = true;
    let s = start(cfg, &[ListenerKind::Smtps], Some(pki.server.clone())).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.addr(0).port())
        .tls(Tls::Wrapper(tls_params(&pki.ca_pem)))
        .timeout(Some(Duration::from_secs(5)))
        .build();
    send(&t, message("implicit", "wrapped")).await.unwrap();
    let store = s.rec.store();
    assert_eq!(store.messages.len(), 1);
    assert!(store.messages[0].tls);
}

#[tokio::test]
async fn auth_refused_without_tls() {
    let s = start(settings(), &[ListenerKind::Submission], None).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.addr(0).port())
        .tls(Tls::None)
        .credentials(Credentials::new("user".into(), "secret".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    // AUTH is not offered in plaintext, so lettre cannot authenticate and MAIL needs AUTH.
    assert!(send(&t, message("x", "y")).await.is_err());
    assert!(s.rec.store().messages.is_empty());

    let mut insecure = settings();
    insecure.allow_insecure_auth = true;
    let s = start(insecure, &[ListenerKind::Submission], None).await;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.addr(0).port())
        .tls(Tls::None)
        .credentials(Credentials::new("user".into(), "secret".into()))
        .authentication(vec![Mechanism::Login])
        .build();
    send(&t, message("x", "y")).await.unwrap();
    assert_eq!(s.rec.store().messages[0].user.as_deref(), Some("user"));
}
