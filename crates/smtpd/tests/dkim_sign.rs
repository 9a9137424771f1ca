//! The keys `dns-records` makes sign with mail-auth and with smtpd's relay signer
//! (`smtpd::dkim_sign`), and the records it prints verify those signatures: sign with both keys
//! of the key directory, publish the printed DKIM records in an authoritative DNS server,
//! verify with mail-auth; then alter the signed message and see the signatures fail.

use std::time::{Duration, SystemTime};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimSigner;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use smtp_test::dns::TestDns;
use smtpd::dkim_key::{Algorithm, Key, KeyStore};
use smtpd::dkim_sign::{BodyHash, Signer};
use smtpd::dns_records::DomainRecords;

const MESSAGE: &str = "From: Alice <alice@example.test>\r\n\
To: Bob <bob@elsewhere.test>\r\n\
Subject: signed with the key directory\r\n\
\r\n\
Hello.\r\n";

/// A key directory in `dir` with example.test's keys made: the store and the keys.
fn example_keys(dir: &std::path::Path) -> (KeyStore, Vec<Key>) {
    let mut store = KeyStore::load(dir).unwrap();
    let keys = store
        .ensure("example.test", SystemTime::now())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    (store, keys)
}

#[tokio::test]
async fn keys_sign_and_the_printed_records_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = example_keys(dir.path());
    // What the signer will do: load the directory, take the domain's keys.
    let store = KeyStore::load(dir.path()).unwrap();
    let signing: Vec<_> = store.signing_keys("example.test").collect();
    assert_eq!(signing.len(), 2);

    let mut headers = String::new();
    for key in &signing {
        let signature = match key.algorithm {
            Algorithm::Ed25519 => {
                DkimSigner::from_key(Ed25519Key::from_pkcs8_der(key.pkcs8_der()).unwrap())
                    .domain(key.domain.as_str())
                    .selector(key.selector.as_str())
                    .headers(["From", "To", "Subject"])
                    .sign(MESSAGE.as_bytes())
            }
            Algorithm::Rsa => DkimSigner::from_key(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    key.pkcs8_der(),
                )))
                .unwrap(),
            )
            .domain(key.domain.as_str())
            .selector(key.selector.as_str())
            .headers(["From", "To", "Subject"])
            .sign(MESSAGE.as_bytes()),
        }
        .unwrap();
        headers.push_str(&signature.to_header());
    }

    let (_dns, auth) = publish(keys).await;

    let signed = format!("{headers}{MESSAGE}");
    let message = AuthenticatedMessage::parse(signed.as_bytes()).unwrap();
    let results = auth.verify_dkim(&message).await;
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.result(), &DkimResult::Pass, "{results:?}");
    }

    // The same signatures over an altered body do not pass (mail-auth reports a body hash
    // mismatch as neutral): the signatures really cover the message.
    let altered = signed.replace("Hello.", "Hullo.");
    let message = AuthenticatedMessage::parse(altered.as_bytes()).unwrap();
    let results = auth.verify_dkim(&message).await;
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_ne!(r.result(), &DkimResult::Pass, "{results:?}");
        assert!(
            format!("{:?}", r.result()).contains("FailedBodyHashMatch"),
            "{results:?}"
        );
    }
}

/// The records `dns-records` prints for `keys`, served by an in-process authoritative server,
/// and a verifier that asks it (keep the server alive while verifying).
async fn publish(keys: Vec<Key>) -> (TestDns, MessageAuthenticator) {
    let records = DomainRecords {
        domain: "example.test".to_owned(),
        mx_host: "mx.example.test".to_owned(),
        addresses: vec!["192.0.2.10".parse().unwrap()],
        keys,
        sts_id: "1".to_owned(),
    };
    let zone: String = records
        .records()
        .iter()
        .map(|r| r.zone_line() + "\n")
        .collect();
    let dns = TestDns::start(&zone).await.unwrap();
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.addr().port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.addr().port();
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    let auth = MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            dns.addr().ip(),
            true,
            vec![udp, tcp],
        )]),
        opts,
    )
    .unwrap();

    (dns, auth)
}

/// smtpd's relay signer: the body hashed in pieces as it streams, the header fields the relay
/// adds signed with the message's own, both signatures pass; any change to the body, to a signed
/// field, or a second `From:` added above the first, and they fail.
#[tokio::test]
async fn the_relay_signer_passes_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (store, keys) = example_keys(dir.path());
    let signer = Signer::from_store(&store).unwrap();
    assert!(signer.signs("EXAMPLE.test"));
    assert!(!signer.signs("elsewhere.test"));
    let (_dns, auth) = publish(keys).await;

    let added = "Message-ID: <added@mx.example.test>\r\nDate: Wed, 02 Dec 2026 05:00:00 +0000\r\n";
    let message = "From: Alice <alice@example.test>\r\nTo: Bob <bob@elsewhere.test>\r\n\
        Subject: signed as it streamed\r\nMIME-Version: 1.0\r\n\r\n\
        Hello  Bob, \r\n\r\nsecond paragraph\r\n\r\n\r\n";
    let mut hash = BodyHash::new();
    for chunk in message.as_bytes().chunks(5) {
        hash.write(chunk);
    }
    let signatures = signer
        .sign(
            "example.test",
            added.as_bytes(),
            message.as_bytes(),
            &hash.finish(),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        signatures.matches("DKIM-Signature: ").count(),
        2,
        "{signatures}"
    );
    assert!(signatures.contains("a=ed25519-sha256"), "{signatures}");
    assert!(signatures.contains("a=rsa-sha256"), "{signatures}");
    assert!(signatures.contains("c=relaxed/relaxed"), "{signatures}");
    // From over-signed, absent fields signed as absent.
    let unfolded = signatures.replace("\r\n\t", "");
    let h = unfolded
        .split("h=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap();
    assert_eq!(h.matches("From").count(), 2, "{h}");
    for name in ["Message-ID", "Date", "Subject", "Cc", "References"] {
        assert!(h.contains(name), "{name} not in {h}");
    }

    let verify = |text: String| {
        let auth = &auth;
        async move {
            let message = AuthenticatedMessage::parse(text.as_bytes()).unwrap();
            auth.verify_dkim(&message)
                .await
                .into_iter()
                .map(|r| r.result().clone())
                .collect::<Vec<_>>()
        }
    };
    let sent = format!("Received: by mx.example.test\r\n{signatures}{added}{message}");
    assert_eq!(
        verify(sent.clone()).await,
        [DkimResult::Pass, DkimResult::Pass]
    );
    // Relaxed canonicalization: whitespace changes on the way are not tampering.
    let rewrapped = sent.replace("Subject: signed", "Subject:  signed");
    assert_eq!(
        verify(rewrapped).await,
        [DkimResult::Pass, DkimResult::Pass]
    );

    for (what, altered) in [
        (
            "the body",
            sent.replace("second paragraph", "second Paragraph"),
        ),
        (
            "a signed field",
            sent.replace("as it streamed", "as it was"),
        ),
        ("an added field", sent.replace("<added@", "<other@")),
        (
            "a second From",
            sent.replace("From: Alice", "From: Mallory <m@evil.test>\r\nFrom: Alice"),
        ),
    ] {
        let results = verify(altered).await;
        assert_eq!(results.len(), 2, "{what}");
        assert!(
            results.iter().all(|r| *r != DkimResult::Pass),
            "{what}: {results:?}"
        );
    }
}
