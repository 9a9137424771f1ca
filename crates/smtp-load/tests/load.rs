//! End-to-end runs of the load generator against the baseline server and small fake servers, all on
//! 127.0.0.1.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use smtp_load::tls::{self, Verification};
use smtp_load::{Report, RunOptions, SizeDist, StartTls};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

async fn start_baseline() -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, tokio::spawn(smtp_load::baseline_server(listener)))
}

fn small_run(target: SocketAddr) -> RunOptions {
    RunOptions {
        sessions: 4,
        messages: 80,
        sizes: "1k:2,8k:1,70k:1".parse().expect("valid"),
        read_timeout: Duration::from_secs(10),
        duration_limit: Some(Duration::from_secs(60)),
        ..RunOptions::new(target)
    }
}

fn assert_all_accepted(report: &Report) {
    assert!(
        report.errors.is_empty(),
        "errors: {:?}\n{report}",
        report.errors
    );
    assert_eq!(
        report.messages_accepted, report.messages_requested,
        "{report}"
    );
    assert_eq!(report.messages_failed, 0);
    assert!(!report.duration_limit_hit);
    assert!(report.body_bytes >= 80 * 1024, "{report}");
    assert!(report.latency.max_ms > 0.0 && report.latency.p50_ms <= report.latency.max_ms);
}

#[tokio::test]
async fn baseline_accepts_every_message_in_every_mode() {
    let (addr, server) = start_baseline().await;
    let modes = [
        ("lockstep DATA", false, false, None),
        ("pipelined DATA", true, false, None),
        ("lockstep BDAT", false, true, None),
        ("pipelined BDAT", true, true, None),
        (
            "one message per connection",
            true,
            false,
            NonZeroU64::new(1),
        ),
        (
            "three per connection, BDAT",
            false,
            true,
            NonZeroU64::new(3),
        ),
    ];
    for (name, pipelining, bdat, per_connection) in modes {
        let report = smtp_load::run(RunOptions {
            pipelining,
            bdat,
            per_connection,
            ..small_run(addr)
        })
        .await;
        assert_all_accepted(&report);
        let expected_connections = match per_connection {
            None => 4,
            Some(n) => 80u64.div_ceil(n.get()),
        };
        // Sessions claim messages dynamically, so with N per connection a few connections may carry
        // fewer than N; the count lies between the ideal and one extra per session.
        assert!(
            (expected_connections..=expected_connections + 4).contains(&report.connections),
            "{name}: {} connections\n{report}",
            report.connections
        );
        assert_eq!(report.mode.pipelining, pipelining, "{name}");
    }
    server.abort();
}

#[tokio::test]
async fn json_report_has_the_fields_xtask_reads() {
    let (addr, server) = start_baseline().await;
    let report = smtp_load::run(RunOptions {
        messages: 10,
        server_pid: Some(std::process::id()),
        ..small_run(addr)
    })
    .await;
    let json: serde_json::Value = serde_json::to_value(&report).expect("serialize");
    assert_eq!(json["messages_accepted"], 10);
    assert!(json["messages_per_sec"].as_f64().is_some_and(|v| v > 0.0));
    assert!(json["latency"]["p99_ms"].as_f64().is_some());
    let server_usage = &json["server"];
    assert_eq!(server_usage["pid"], std::process::id());
    assert!(server_usage["peak_rss_kib"].as_u64().is_some_and(|v| v > 0));
    server.abort();
}

/// How the fake server answers RCPT.
#[derive(Clone, Copy)]
enum Rcpt {
    Accept,
    TempFail,
}

/// A line-based fake SMTP server, optionally with STARTTLS.
async fn start_fake(rcpt: Rcpt, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                stream.write_all(b"220 fake ESMTP\r\n").await?;
                let mut reader = BufReader::new(stream);
                let upgraded = converse(&mut reader, rcpt, tls.is_some()).await?;
                if let (true, Some(acceptor)) = (upgraded, tls) {
                    let tls_stream = acceptor.accept(reader.into_inner()).await?;
                    converse(&mut BufReader::new(tls_stream), rcpt, false).await?;
                }
                std::io::Result::Ok(())
            });
        }
    });
    addr
}

/// Serves commands until QUIT, EOF, or STARTTLS (returns `true` for the latter).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    rcpt: Rcpt,
    offer_tls: bool,
) -> std::io::Result<bool> {
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_tls => b"250-fake\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            "EHLO" => b"250-fake\r\n250 PIPELINING\r\n",
            "STAR" => {
                stream.write_all(b"220 2.0.0 Ready\r\n").await?;
                return Ok(true);
            }
            "RCPT" => match rcpt {
                Rcpt::Accept => b"250 OK\r\n",
                Rcpt::TempFail => b"451 4.3.0 Try again later\r\n",
            },
            "DATA" => match rcpt {
                Rcpt::Accept => {
                    stream.write_all(b"354 Go\r\n").await?;
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await? == 0 {
                            return Ok(false);
                        }
                        if line == ".\r\n" {
                            break;
                        }
                    }
                    b"250 Queued\r\n"
                }
                Rcpt::TempFail => b"554 5.5.1 No valid recipients\r\n",
            },
            "QUIT" => {
                stream.write_all(b"221 Bye\r\n").await?;
                return Ok(false);
            }
            _ => b"250 OK\r\n",
        };
        stream.write_all(reply).await?;
    }
}

#[tokio::test]
async fn refused_recipients_are_counted_by_reply_code() {
    let addr = start_fake(Rcpt::TempFail, None).await;
    for pipelining in [false, true] {
        let report = smtp_load::run(RunOptions {
            sessions: 2,
            messages: 20,
            pipelining,
            ..small_run(addr)
        })
        .await;
        assert_eq!(report.messages_accepted, 0, "{report}");
        assert_eq!(report.messages_failed, 20, "{report}");
        // With pipelining the DATA refusal (554) follows, but the first refusal is the one counted.
        assert_eq!(report.errors.len(), 1, "{report}");
        assert_eq!(report.errors.get("451"), Some(&20), "{report}");
        assert_eq!(
            report.error_samples.get("451").map(String::as_str),
            Some("451 4.3.0 Try again later")
        );
        // Refusals keep the connection: one per session.
        assert_eq!(report.connections, 2, "{report}");
        assert!(report.to_string().contains("451: 20"), "{report}");
    }
}

#[tokio::test]
async fn connection_refused_is_counted_and_bounded() {
    // Bind then drop to get a port that nothing listens on.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let report = smtp_load::run(RunOptions {
        messages: 12,
        ..small_run(addr)
    })
    .await;
    assert_eq!(report.messages_failed, 12, "{report}");
    assert_eq!(report.connections, 0);
    assert_eq!(
        report.errors.get("connect: connection refused"),
        Some(&12),
        "{report}"
    );
}

#[tokio::test]
async fn duration_limit_stops_a_stalled_run() {
    // A server that greets and then never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.write_all(b"220 slow\r\n").await.expect("greet");
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let report = smtp_load::run(RunOptions {
        sessions: 2,
        messages: 10,
        duration_limit: Some(Duration::from_millis(300)),
        ..small_run(addr)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "{report}");
    assert!(report.duration_limit_hit, "{report}");
    assert_eq!(report.messages_interrupted, 2, "{report}");
    assert_eq!(report.messages_not_started, 8, "{report}");
    assert!(report.errors.is_empty(), "{report}");
    server.abort();
}

fn test_tls() -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

#[tokio::test]
async fn starttls_with_ca_and_insecure_verification() {
    let (acceptor, ca_pem) = test_tls();
    let addr = start_fake(Rcpt::Accept, Some(acceptor)).await;
    let dir = std::env::temp_dir().join(format!("smtp-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_pem).expect("write CA");

    let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    for verification in [Verification::CaFile(&ca_path), Verification::Insecure] {
        let starttls = StartTls {
            config: tls::client_config(verification).expect("client config"),
            server_name: server_name.clone(),
        };
        let report = smtp_load::run(RunOptions {
            sessions: 2,
            messages: 10,
            sizes: SizeDist::fixed(4096),
            pipelining: true,
            starttls: Some(starttls),
            ..small_run(addr)
        })
        .await;
        assert!(report.errors.is_empty(), "{report}");
        assert_eq!(report.messages_accepted, 10, "{report}");
        assert!(report.mode.starttls);
    }

    // A CA that did not sign the server's certificate must fail the handshake.
    let (_, other_ca) = test_tls();
    std::fs::write(&ca_path, other_ca).expect("write CA");
    let report = smtp_load::run(RunOptions {
        sessions: 1,
        messages: 2,
        starttls: Some(StartTls {
            config: tls::client_config(Verification::CaFile(&ca_path)).expect("client config"),
            server_name,
        }),
        ..small_run(addr)
    })
    .await;
    assert_eq!(report.messages_accepted, 0, "{report}");
    assert!(
        report.errors.keys().all(|k| k.starts_with("tls: ")),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn idle_holds_connections_and_measures_rss() {
    let (addr, server) = start_baseline().await;
    let report = smtp_load::idle(smtp_load::IdleOptions {
        connections: 50,
        hold: Duration::from_millis(10),
        server_pid: Some(std::process::id()),
        read_timeout: Duration::from_secs(10),
        ..smtp_load::IdleOptions::new(addr)
    })
    .await;
    assert_eq!(report.connections_established, 50, "{report}");
    assert!(report.errors.is_empty(), "{report}");
    assert!(report.server_rss_after_kib.is_some() && report.rss_per_connection_bytes.is_some());
    server.abort();
}
