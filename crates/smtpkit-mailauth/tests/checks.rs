//! Every check against an authoritative DNS server on 127.0.0.1 holding the zones written here,
//! with messages signed at test time.

use std::net::IpAddr;
use std::time::Duration;

use smtp_test::dns::{SilentDns, TestDns, txt};
use smtp_test::mailauth::Keys;
use smtpkit_mailauth::hickory_resolver::config::ResolverOpts;
use smtpkit_mailauth::{Authenticator, Disposition, Iprev, Report, SessionFacts, Spf, nameservers};

/// Every test finishes well within this, or fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

const CLIENT: &str = "192.0.2.10";

fn client() -> IpAddr {
    CLIENT.parse().unwrap()
}

fn zone(keys: &Keys) -> String {
    let mut z = String::new();
    let pass = format!("v=spf1 ip4:{CLIENT} -all");
    z += &txt("mail.sender.test.", &pass);
    z += &txt("sender.test.", &pass);
    z += &txt("hardfail.test.", "v=spf1 -all");
    z += &txt("soft.test.", "v=spf1 ~all");
    z += &txt("neutral.test.", "v=spf1 ?all");
    z += "nospf.test. 300 IN A 198.51.100.1\n";
    // RFC 7208 4.6.4: eleven DNS-querying mechanisms, one more than allowed.
    let mechanisms: String = (1..=11).map(|i| format!(" a:h{i}.loop.test")).collect();
    z += &txt("loop.test.", &format!("v=spf1{mechanisms} -all"));
    for i in 1..=11 {
        z += &format!("h{i}.loop.test. 300 IN A 198.51.100.{i}\n");
    }
    z += &keys.records("signed.test");
    z += &txt("_dmarc.signed.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.sender.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.bank.test.", "v=DMARC1; p=reject");
    z += &txt("_dmarc.junky.test.", "v=DMARC1; p=quarantine");
    z += &txt("_dmarc.lax.test.", "v=DMARC1; p=none");
    z += &keys.records("fwd.test");
    z
}

fn authenticator(dns: std::net::SocketAddr) -> Authenticator {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(500);
    opts.attempts = 1;
    Authenticator::new(nameservers(&[dns]), opts, 256, "mx.test").unwrap()
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: rcpt@mx.test\r\nSubject: {subject}\r\nDate: Wed, 02 Dec 2026 01:00:00 +0000\r\n\r\n{body}"
    )
    .into_bytes()
}

/// SPF at MAIL time, then the message in chunks of 7 octets, then the end-of-data checks.
async fn check(
    auth: &Authenticator,
    helo: &str,
    mail_from: &str,
    content: &[u8],
) -> (Report, Vec<u8>) {
    let facts = SessionFacts {
        ip: client(),
        helo,
        mail_from,
    };
    let spf = auth.check_spf(facts).await;
    let mut stream = auth.message();
    let mut stored = Vec::new();
    for chunk in content.chunks(7) {
        let passed = stream.write(chunk);
        stored.extend_from_slice(passed.header.unwrap_or_default());
        stored.extend_from_slice(passed.body);
    }
    let passed = stream.end();
    stored.extend_from_slice(passed.header.unwrap_or_default());
    let report = tokio::time::timeout(BOUND, auth.verify(&stream, facts, &spf, &Iprev::None))
        .await
        .expect("checks hung");
    (report, stored)
}

async fn spf_of(auth: &Authenticator, helo: &str, mail_from: &str) -> Spf {
    let facts = SessionFacts {
        ip: client(),
        helo,
        mail_from,
    };
    tokio::time::timeout(BOUND, auth.check_spf(facts))
        .await
        .expect("spf hung")
}

#[tokio::test]
async fn spf_results() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    for (mail_from, keyword) in [
        ("a@sender.test", "pass"),
        ("a@hardfail.test", "fail"),
        ("a@soft.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@nospf.test", "none"),
        ("a@loop.test", "permerror"),
    ] {
        let spf = spf_of(&auth, "mail.sender.test", mail_from).await;
        assert_eq!(spf.keyword(), keyword, "{mail_from}: {spf:?}");
        assert_eq!(spf.helo.result().to_string(), "Pass");
        assert_eq!(spf.is_fail(), keyword == "fail");
    }
    // The null sender is checked as postmaster@ the HELO name.
    let spf = spf_of(&auth, "hardfail.test", "").await;
    assert_eq!(spf.keyword(), "fail");
    // The results go into Received-SPF and Authentication-Results.
    let (report, _) = check(
        &auth,
        "mail.sender.test",
        "a@soft.test",
        &message("a@soft.test", "x", "y\r\n"),
    )
    .await;
    assert!(
        report.received_spf().starts_with("Received-SPF: softfail"),
        "{}",
        report.received_spf()
    );
    assert!(
        report.received_spf().contains("client-ip=192.0.2.10;"),
        "{}",
        report.received_spf()
    );
    let ar = report.authentication_results();
    assert!(ar.starts_with("Authentication-Results: mx.test;"), "{ar}");
    assert!(ar.contains("spf=softfail"), "{ar}");
    assert!(ar.contains("smtp.mailfrom=a@soft.test"), "{ar}");
    assert!(
        ar.contains("spf=pass") && ar.contains("smtp.helo=mail.sender.test"),
        "{ar}"
    );
}

#[tokio::test]
async fn spf_temperror_when_the_server_does_not_answer() {
    let silent = SilentDns::start().unwrap();
    let auth = authenticator(silent.addr());
    let spf = spf_of(&auth, "mail.sender.test", "a@sender.test").await;
    assert_eq!(spf.keyword(), "temperror", "{spf:?}");
    assert!(spf.is_temporary_error());
    let (report, _) = check(
        &auth,
        "mail.sender.test",
        "a@sender.test",
        &message("a@sender.test", "x", "y\r\n"),
    )
    .await;
    assert!(report.has_temporary_error());
    // A temporary error never rejects.
    assert_eq!(report.disposition(), Disposition::Accept);
    assert!(
        report.summary().starts_with("spf=temperror "),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn dkim_ed25519_and_rsa_pass_and_an_altered_body_fails() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    // A body far larger than a chunk, so the hash really streams.
    let body = "a line of the body\r\n".repeat(5000);
    let original = message("alice@signed.test", "signed", &body);
    for signed in [
        keys.sign_ed25519("signed.test", &original),
        keys.sign_rsa("signed.test", &original),
    ] {
        let (report, stored) = check(&auth, "mail.sender.test", "bounce@nospf.test", &signed).await;
        assert_eq!(stored, signed, "content passes unchanged");
        assert_eq!(report.dkim.len(), 1);
        assert_eq!(report.dkim_keyword(), "pass", "{report:?}");
        assert_eq!(report.dkim[0].domain, "signed.test");
        let ar = report.authentication_results();
        assert!(ar.contains("dkim=pass header.d=signed.test"), "{ar}");
        // DMARC passes through DKIM alone: SPF is none for nospf.test and not aligned anyway.
        assert_eq!(report.dmarc_keyword(), "pass", "{ar}");
        assert_eq!(report.disposition(), Disposition::Accept);

        let mut altered = signed.clone();
        let at = altered.len() - 5;
        altered[at] = b'X';
        let (report, _) = check(&auth, "mail.sender.test", "bounce@nospf.test", &altered).await;
        assert_eq!(report.dkim_keyword(), "fail", "{report:?}");
        let ar = report.authentication_results();
        assert!(ar.contains("dkim=fail (body hash did not verify)"), "{ar}");
        // p=reject on signed.test, and nothing aligned passed.
        assert_eq!(report.dmarc_keyword(), "fail");
        assert_eq!(report.disposition(), Disposition::Reject);
    }
}

#[tokio::test]
async fn dmarc_pass_through_spf_alignment_only() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    let (report, _) = check(
        &auth,
        "mail.sender.test",
        "news@sender.test",
        &message("news@sender.test", "hi", "x\r\n"),
    )
    .await;
    assert_eq!(report.dkim_keyword(), "none");
    assert_eq!(report.spf.keyword(), "pass");
    assert_eq!(report.dmarc_keyword(), "pass");
    let ar = report.authentication_results();
    assert!(ar.contains("dkim=none"), "{ar}");
    assert!(
        ar.contains("dmarc=pass header.from=sender.test policy.dmarc=reject"),
        "{ar}"
    );
    assert_eq!(
        report.summary(),
        "spf=pass dkim=none arc=none dmarc=pass iprev=none"
    );
}

#[tokio::test]
async fn dmarc_reject_quarantine_and_none() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    for (from, disposition, policy) in [
        ("ceo@bank.test", Disposition::Reject, "reject"),
        ("deals@junky.test", Disposition::Quarantine, "quarantine"),
        ("x@lax.test", Disposition::Accept, "none"),
    ] {
        let (report, _) = check(
            &auth,
            "mail.sender.test",
            "a@sender.test",
            &message(from, "forged", "x\r\n"),
        )
        .await;
        assert_eq!(report.dmarc_keyword(), "fail", "{from}");
        assert_eq!(report.disposition(), disposition, "{from}");
        let ar = report.authentication_results();
        assert!(ar.contains(&format!("policy.dmarc={policy}")), "{ar}");
    }
    // No DMARC record at all: none, and delivered.
    let (report, _) = check(
        &auth,
        "mail.sender.test",
        "a@nospf.test",
        &message("a@nospf.test", "x", "y\r\n"),
    )
    .await;
    assert_eq!(report.dmarc_keyword(), "none");
    assert_eq!(report.disposition(), Disposition::Accept);
}

#[tokio::test]
async fn an_arc_chain_from_a_forwarder_verifies() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    let signed = keys.sign_ed25519(
        "signed.test",
        &message("alice@signed.test", "list post", "hello\r\n"),
    );
    let forwarded = keys.arc_seal("fwd.test", &signed);
    let (report, _) = check(&auth, "fwd.test", "list-bounce@fwd.test", &forwarded).await;
    assert_eq!(crate_keyword(&report), "pass", "{report:?}");
    assert!(
        report.authentication_results().contains("arc=pass"),
        "{}",
        report.authentication_results()
    );
}

fn crate_keyword(report: &Report) -> String {
    report
        .summary()
        .split(' ')
        .find_map(|kv| kv.strip_prefix("arc="))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn forged_results_are_removed_and_ours_written() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let auth = authenticator(dns.addr());
    let mut forged = b"Authentication-Results: MX.test; dkim=pass header.d=bank.test;\r\n\tdmarc=pass\r\nAuthentication-Results: elsewhere.test; spf=pass\r\n".to_vec();
    forged.extend_from_slice(&message("ceo@bank.test", "pay now", "x\r\n"));
    let (report, stored) = check(&auth, "mail.sender.test", "a@sender.test", &forged).await;
    let stored = String::from_utf8(stored).unwrap();
    assert!(!stored.contains("MX.test"), "{stored}");
    assert!(
        stored.starts_with(
            "Authentication-Results: elsewhere.test; spf=pass\r\nFrom: ceo@bank.test\r\n"
        ),
        "{stored}"
    );
    assert_eq!(report.disposition(), Disposition::Reject);
}

#[tokio::test]
async fn iprev_is_recorded_from_the_session() {
    let keys = Keys::new();
    let records = format!(
        "{}mail.sender.test. 300 IN A {CLIENT}\n{}",
        zone(&keys),
        smtp_test::dns::ptr(client(), "mail.sender.test.")
    );
    let dns = TestDns::start(&records).await.unwrap();
    let auth = authenticator(dns.addr());
    let iprev = tokio::time::timeout(BOUND, auth.check_iprev(client()))
        .await
        .unwrap();
    assert_eq!(iprev, Iprev::Pass("mail.sender.test".to_owned()));
    let facts = SessionFacts {
        ip: client(),
        helo: "mail.sender.test",
        mail_from: "a@sender.test",
    };
    let spf = auth.check_spf(facts).await;
    let mut stream = auth.message();
    let _ = stream.write(&message("a@sender.test", "x", "y\r\n"));
    let _ = stream.end();
    let name = smtpkit_server::rdns::ReverseName::Unconfirmed("liar.test".into());
    let report = auth.verify(&stream, facts, &spf, &Iprev::from(&name)).await;
    assert!(
        report.authentication_results().contains("iprev=fail"),
        "{}",
        report.authentication_results()
    );
    assert!(report.summary().ends_with("iprev=fail"));
}

#[tokio::test]
async fn a_warm_cache_answers_without_the_server() {
    let keys = Keys::new();
    let dns = TestDns::start(&zone(&keys)).await.unwrap();
    let addr = dns.addr();
    let auth = authenticator(addr);
    let signed = keys.sign_rsa("signed.test", &message("alice@signed.test", "x", "y\r\n"));
    let (first, _) = check(&auth, "mail.sender.test", "a@sender.test", &signed).await;
    assert!(!auth.caches().txt.is_empty());
    drop(dns);
    let (second, _) = check(&auth, "mail.sender.test", "a@sender.test", &signed).await;
    assert_eq!(first.summary(), second.summary());
    assert_eq!(
        second.summary(),
        "spf=pass dkim=pass arc=none dmarc=pass iprev=none"
    );
}

#[tokio::test]
async fn special_use_senders_are_answered_without_dns() {
    // A nameserver that never answers: one query sent for these names would be a temperror.
    let silent = SilentDns::start().unwrap();
    let auth = authenticator(silent.addr());
    for (domain, helo) in [
        ("smtp-load.invalid", "vm"),
        ("mail.localhost", "client.localhost"),
        ("x.onion", "mail.invalid"),
    ] {
        let from = format!("load@{domain}");
        let (report, _) = check(&auth, helo, &from, &message(&from, "x", "y\r\n")).await;
        assert_eq!(
            report.summary(),
            "spf=none dkim=none arc=none dmarc=none iprev=none",
            "{domain}"
        );
        assert_eq!(report.disposition(), Disposition::Accept);
        let ar = report.authentication_results();
        assert!(
            ar.contains(&format!(
                "spf=none (mx.test: no SPF records found for {from}) smtp.mailfrom={from};"
            )),
            "{ar}"
        );
        assert!(
            ar.contains(&format!(
                "dmarc=none header.from={domain} policy.dmarc=none;"
            )),
            "{ar}"
        );
        assert!(
            report.received_spf().starts_with("Received-SPF: none"),
            "{}",
            report.received_spf()
        );
    }
    // Nothing to remember: these answers are not records.
    assert!(auth.caches().txt.is_empty());
}
