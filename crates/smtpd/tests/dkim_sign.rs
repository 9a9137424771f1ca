//! The keys `dns-records` makes sign with mail-auth (as outbound signing will), and the records
//! it prints verify those signatures: sign with both keys of the key directory, publish the
//! printed DKIM records in an authoritative DNS server, verify with mail-auth.

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
use smtpd::dkim_key::{Algorithm, KeyStore};
use smtpd::dns_records::DomainRecords;

const MESSAGE: &str = "From: Alice <alice@example.test>\r\n\
To: Bob <bob@elsewhere.test>\r\n\
Subject: signed with the key directory\r\n\
\r\n\
Hello.\r\n";

#[tokio::test]
async fn keys_sign_and_the_printed_records_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = KeyStore::load(dir.path()).unwrap();
    let keys: Vec<_> = store
        .ensure("example.test", SystemTime::now())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
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
