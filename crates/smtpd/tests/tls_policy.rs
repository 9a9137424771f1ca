//! Black-box MTA-STS (RFC 8461) and DANE (RFC 7672).
//!
//! MTA-STS: instance A relays to instance B (127.0.0.2), whose certificate
//! a test CA issued for `mx.good.test` only. The in-process DNS publishes `_mta-sts` records and
//! `mta-sts.*.test` on 127.0.0.1, where the test serves the policies over HTTPS (same CA):
//!
//! | domain | policy | expected |
//! | --- | --- | --- |
//! | good.test | enforce, mx.good.test | delivered over verified TLS |
//! | bad.test | enforce, mx.bad.test | certificate names another host: deferred, never plaintext |
//! | unlisted.test | enforce, mx.elsewhere.test | its MX is not listed: deferred |
//! | lax.test | testing, mx.lax.test | certificate mismatch recorded, delivered anyway |
//!
//! Then `smtpd tls-report` shows the sessions as RFC 8460 JSON.
//!
//! DANE: the test zone is not signed (the in-process server cannot sign, and `test.` is no
//! delegation of the root), so hickory's validation of any TLSA answer fails; with
//! `dane = true` that must defer, never fall back. A valid signed chain (delivered with a
//! matching TLSA record) is not covered end to end: `smtpd::dane`'s unit tests check the
//! records against real rustls handshakes instead.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::relay::{CROSSING, new_messages, sender_config, submit};
use common::{Server, config_command, hash_password, run_bounded, runtime, smtpd};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use smtp_test::dns::{TestDns, txt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOMAINS: [&str; 4] = ["good", "bad", "unlisted", "lax"];

fn policy(host: &str) -> Option<&'static str> {
    Some(match host {
        "mta-sts.good.test" => {
            "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmax_age: 86400\r\n"
        }
        "mta-sts.bad.test" => {
            "version: STSv1\r\nmode: enforce\r\nmx: mx.bad.test\r\nmax_age: 86400\r\n"
        }
        "mta-sts.unlisted.test" => {
            "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n"
        }
        "mta-sts.lax.test" => {
            "version: STSv1\r\nmode: testing\r\nmx: *.lax.test\r\nmax_age: 86400\r\n"
        }
        _ => return None,
    })
}

fn zone() -> String {
    let mut zone = String::new();
    for d in DOMAINS {
        zone.push_str(&format!(
            "{d}.test. 60 IN MX 10 mx.{d}.test.\nmx.{d}.test. 60 IN A 127.0.0.2\nmta-sts.{d}.test. 60 IN A 127.0.0.1\n"
        ));
        zone.push_str(&txt(
            &format!("_mta-sts.{d}.test."),
            "v=STSv1; id=20261202T000000;",
        ));
    }
    zone.push_str("mx.a.test. 60 IN A 127.0.0.1\na.test. 60 IN MX 10 mx.a.test.\n");
    zone
}

struct Pki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        Self {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// (certificate PEM, key PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params")
                .signed_by(&key, &self.issuer)
                .expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// The policy server: HTTPS on 127.0.0.1, the policy for the Host header, 404 otherwise.
async fn serve_policies(pki: &Pki) -> (u16, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let names: Vec<String> = DOMAINS
        .iter()
        .map(|d| format!("mta-sts.{d}.test"))
        .collect();
    let (cert, key) = pki.leaf(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let host = request
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or_default()
                    .trim();
                let path_ok = request.starts_with("GET /.well-known/mta-sts.txt ");
                let response = match policy(host).filter(|_| path_ok) {
                    Some(p) => format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{p}",
                        p.len()
                    ),
                    None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, task)
}

/// Instance A: submission for alice, relay through the queue to port `mx` of the MX hosts;
/// `delivery` is more of `[delivery]`.
fn instance_a(
    dir: &Path,
    dns: std::net::SocketAddr,
    https: u16,
    ca_pem: &str,
    delivery: &str,
) -> Server {
    fs::write(dir.join("ca.pem"), ca_pem).expect("ca.pem");
    let hash = hash_password("pw");
    Server::with_config(dir, "a.toml", 2, |p| {
        format!(
            r#"{}
[dns]
nameservers = ["{dns}"]
timeout = 2

[delivery]
port = {mx}
connect_timeout = 2
{delivery}
[delivery.mta_sts]
https_port = {https}
ca = "ca.pem"
fetch_timeout = 5
"#,
            sender_config(p[0], p[1], &hash, ""),
            mx = p[0],
        )
    })
}

/// B on 127.0.0.2:`port`: every test domain, STARTTLS with a certificate for mx.good.test.
fn instance_b(dir: &Path, port: u16, dns: std::net::SocketAddr, pki: &Pki) -> Server {
    let (cert, key) = pki.leaf(&["mx.good.test"]);
    fs::write(dir.join("cert.pem"), cert).expect("cert");
    fs::write(dir.join("key.pem"), key).expect("key");
    let domains: String = DOMAINS
        .iter()
        .map(|d| format!("[[domain]]\nname = \"{d}.test\"\nmailboxes = [\"bob\"]\n\n"))
        .collect();
    Server::with_config(dir, "b.toml", 0, |_| {
        format!(
            r#"hostname = "mx.good.test"

[[listener]]
address = "127.0.0.2:{port}"
kind = "smtp"

[tls]
cert = "cert.pem"
key = "key.pem"

{domains}[storage]
maildir = "md"

[dns]
nameservers = ["{dns}"]
timeout = 2
"#
        )
    })
}

/// Everything a test runs: the DNS and policy servers, A (with `delivery` added to its
/// `[delivery]`) and B. Fields drop in order: the servers first, the runtime last.
struct Scene {
    _b: Server,
    a: Server,
    b_dir: tempfile::TempDir,
    a_dir: tempfile::TempDir,
    policies: tokio::task::JoinHandle<()>,
    _dns: TestDns,
    _runtime: tokio::runtime::Runtime,
}

impl Scene {
    fn new(delivery: &str) -> Self {
        let runtime = runtime();
        let pki = Pki::new();
        let dns = runtime.block_on(TestDns::start(&zone())).expect("test DNS");
        let (https, policies) = runtime.block_on(serve_policies(&pki));
        let a_dir = tempfile::tempdir().expect("dir a");
        let b_dir = tempfile::tempdir().expect("dir b");
        let a = instance_a(a_dir.path(), dns.addr(), https, &pki.ca_pem, delivery);
        let b = instance_b(b_dir.path(), a.port(0), dns.addr(), &pki);
        Self {
            _b: b,
            a,
            b_dir,
            a_dir,
            policies,
            _dns: dns,
            _runtime: runtime,
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.policies.abort();
    }
}

/// Submits one message from alice to bob at each of `domains`; its queue id.
fn submit_to(port: u16, domains: &[&str]) -> String {
    let rcpts: Vec<String> = domains.iter().map(|d| format!("bob@{d}.test")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let r = submit(
        port,
        "alice@a.test",
        &rcpts,
        "From: alice@a.test\r\nSubject: tls\r\n\r\nhello",
    );
    assert_eq!(r.code, 250, "{r:?}");
    r.text().rsplit(' ').next().expect("queue id").to_owned()
}

fn a_command(dir: &Path, args: &[&str]) -> String {
    config_command(dir, "a.toml", args)
}

#[test]
fn enforce_needs_a_listed_mx_with_a_valid_certificate_testing_only_records() {
    let Scene {
        a, a_dir, b_dir, ..
    } = &Scene::new("");
    let id = submit_to(a.port(1), &DOMAINS);

    // good.test over verified TLS; lax.test delivered despite its failure (testing).
    let deadline = Instant::now() + CROSSING;
    let md = b_dir.path().join("md");
    while new_messages(&md.join("good.test")).is_empty()
        || new_messages(&md.join("lax.test")).is_empty()
    {
        assert!(Instant::now() < deadline, "not delivered:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let good = &new_messages(&md.join("good.test"))[0];
    assert!(good.contains("with ESMTPS"), "{good}");

    // bad.test and unlisted.test deferred, with the reason in the queue.
    let show = loop {
        let show = a_command(a_dir.path(), &["queue", "show", &id]);
        if show.contains("bob@bad.test pending (mx.bad.test) MTA-STS")
            && show.contains("bob@unlisted.test pending MTA-STS")
        {
            break show;
        }
        assert!(
            Instant::now() < deadline,
            "no deferral shown:\n{show}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(show.contains("(enforce)"), "{show}");
    assert!(show.contains("not valid for name"), "{show}");
    assert!(
        show.contains("no MX host (mx.unlisted.test) matches its mx: mx.elsewhere.test"),
        "{show}"
    );
    assert!(show.contains("bob@good.test delivered"), "{show}");
    assert!(show.contains("bob@lax.test delivered"), "{show}");
    // The policies are kept for a restart.
    let stored = a_dir.path().join("queue/mta-sts/good.test.json");
    let stored =
        fs::read_to_string(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
    assert!(stored.contains("mx: mx.good.test"), "{stored}");
    // Never sent in plaintext instead.
    assert!(new_messages(&md.join("bad.test")).is_empty());
    assert!(new_messages(&md.join("unlisted.test")).is_empty());

    // The TLS-RPT data, as the RFC 8460 report of each domain.
    let day = smtpd::tls_report::day_of(SystemTime::now());
    let report = |domain: &str| -> serde_json::Value {
        let json = a_command(a_dir.path(), &["tls-report", domain, &day]);
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    };
    let good = report("good.test");
    let p = &good["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts", "{good}");
    assert_eq!(p["policy"]["policy-string"][1], "mode: enforce", "{good}");
    assert_eq!(p["summary"]["total-successful-session-count"], 1, "{good}");
    assert_eq!(p["summary"]["total-failure-session-count"], 0, "{good}");
    let bad = report("bad.test");
    let f = &bad["policies"][0]["failure-details"][0];
    assert_eq!(f["result-type"], "certificate-host-mismatch", "{bad}");
    assert_eq!(f["receiving-mx-hostname"], "mx.bad.test", "{bad}");
    assert_eq!(f["receiving-ip"], "127.0.0.2", "{bad}");
    let lax = report("lax.test");
    assert_eq!(
        lax["policies"][0]["failure-details"][0]["result-type"], "certificate-host-mismatch",
        "{lax}"
    );
    let unlisted = report("unlisted.test");
    assert_eq!(
        unlisted["policies"][0]["failure-details"][0]["result-type"], "validation-failure",
        "{unlisted}"
    );
    let out = run_bounded(
        smtpd().args(["tls-report", "good.test", "02/12/2026"]),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn dane_defers_when_the_tlsa_answer_does_not_validate() {
    let Scene {
        a, a_dir, b_dir, ..
    } = &Scene::new("dane = true");
    // good.test alone would be delivered (its MTA-STS policy and certificate are fine).
    let id = submit_to(a.port(1), &["good"]);

    let deadline = Instant::now() + CROSSING;
    let show = loop {
        let show = a_command(a_dir.path(), &["queue", "show", &id]);
        if show.contains("bob@good.test pending (mx.good.test) DANE: mx.good.test: TLSA") {
            break show;
        }
        assert!(
            Instant::now() < deadline,
            "no DANE deferral:\n{show}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(show.contains("DNSSEC"), "{show}");
    assert!(
        new_messages(&b_dir.path().join("md")).is_empty(),
        "delivered without DANE"
    );
    let day = smtpd::tls_report::day_of(SystemTime::now());
    let json = a_command(a_dir.path(), &["tls-report", "good.test", &day]);
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let p = &report["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "tlsa", "{json}");
    assert_eq!(
        p["failure-details"][0]["result-type"], "dnssec-invalid",
        "{json}"
    );
}
