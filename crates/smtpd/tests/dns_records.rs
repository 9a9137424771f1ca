//! `smtpd dns-records` then `smtpd dns-check`, black box: the records printed, loaded into an
//! authoritative DNS server, check green; each broken record is named by the check.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use smtp_test::dns::TestDns;

/// A one-shot command's deadline: key generation and a dozen lookups take well under this.
const DEADLINE: Duration = Duration::from_secs(60);

fn smtpd(config: &Path, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtpd"))
        .env_remove("RUST_LOG")
        .env_remove("SMTPD_CONFIG")
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("smtpd {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(out).unwrap(),
        stderr: fs::read(err).unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `dns-check` against a server holding `zone`; the exit status and the report.
async fn check(config: &Path, zone: &str) -> (bool, String) {
    let dns = TestDns::start(zone).await.unwrap();
    let ns = dns.addr().to_string();
    let config = config.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        smtpd(
            &config,
            &[
                "dns-check",
                "example.test",
                "--ip",
                "192.0.2.10",
                "--nameserver",
                &ns,
            ],
        )
    })
    .await
    .unwrap();
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// The report's lines that are not `ok`.
fn problems(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| {
            ["MISSING", "WRONG", "UNKNOWN"]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_records_check_green_and_a_broken_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let config = dir.path().join("smtpd.toml");
    fs::write(
        &config,
        format!(
            "[storage]\nmaildir = \"{}\"\n[dkim]\nkey_dir = \"{}\"\n",
            dir.path().join("maildir").display(),
            key_dir.display()
        ),
    )
    .unwrap();

    let out = smtpd(
        &config,
        &["dns-records", "example.test", "--ip", "192.0.2.10"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let keys: Vec<_> = fs::read_dir(&key_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        text(&out.stderr).contains("made ed25519 key"),
        "{}",
        text(&out.stderr)
    );

    // The zone-file block is everything before the first blank line, comments included.
    let zone = printed.split("\n\n").next().unwrap().to_owned();
    for line in [
        "example.test. 3600 IN MX 10 mx.example.test.",
        "mx.example.test. 3600 IN A 192.0.2.10",
        "example.test. 3600 IN TXT \"v=spf1 ip4:192.0.2.10 -all\"",
        "_dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test\"",
        "_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@example.test\"",
    ] {
        assert!(zone.lines().any(|l| l == line), "{line} not in\n{zone}");
    }
    let rsa_line = zone.lines().find(|l| l.contains("k=rsa")).unwrap();
    // The RSA record (about 420 octets) is split into quoted strings of at most 255.
    assert_eq!(rsa_line.matches("\" \"").count(), 1, "{rsa_line}");
    assert!(
        printed.contains("mode: testing\nmx: mx.example.test\n"),
        "{printed}"
    );

    // Only a domain name may name key files.
    let bad = smtpd(&config, &["dns-records", "../etc", "--ip", "192.0.2.10"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("not a domain name"),
        "{}",
        text(&bad.stderr)
    );

    // A second run keeps the keys, so the records it prints are the same.
    let again = smtpd(
        &config,
        &["dns-records", "example.test", "--ip", "192.0.2.10"],
    );
    assert!(
        text(&again.stderr).contains("kept rsa key"),
        "{}",
        text(&again.stderr)
    );
    let printed_again = text(&again.stdout);
    let zone_again = printed_again.split("\n\n").next().unwrap();
    let dkim = |z: &str| -> Vec<String> {
        z.lines()
            .filter(|l| l.contains("_domainkey"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(dkim(zone_again), dkim(&zone));

    let (ok, report) = check(&config, &zone).await;
    assert!(ok, "{report}");
    assert!(problems(&report).is_empty(), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok")).count(),
        8,
        "{report}"
    );

    // Each broken record, alone, makes the check fail and is named.
    let ed_line = zone.lines().find(|l| l.contains("k=ed25519")).unwrap();
    let other_key = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let broken = [
        (
            zone.replace("MX 10 mx.example.test.", "MX 10 mx.elsewhere.test."),
            "WRONG   MX       example.test.: points elsewhere: 10 mx.elsewhere.test.",
        ),
        (
            zone.replace("ip4:192.0.2.10", "ip4:192.0.2.99"),
            "WRONG   SPF      example.test.: does not cover our address: 192.0.2.10 gets fail",
        ),
        (
            zone.replace(
                ed_line,
                &format!(
                    "{} IN TXT \"{other_key}\"",
                    ed_line.split(" IN ").next().unwrap()
                ),
            ),
            "WRONG   DKIM",
        ),
        (
            zone.lines()
                .filter(|l| !l.starts_with("_dmarc."))
                .collect::<Vec<_>>()
                .join("\n"),
            "MISSING DMARC    _dmarc.example.test.",
        ),
        (
            zone.replace("IN A 192.0.2.10", "IN A 192.0.2.11"),
            "WRONG   A        mx.example.test.: has 192.0.2.11, not 192.0.2.10",
        ),
    ];
    for (zone, named) in broken {
        let (ok, report) = check(&config, &zone).await;
        assert!(!ok, "{report}");
        let problems = problems(&report);
        assert!(
            problems.iter().any(|l| l.starts_with(named)),
            "{named} not in\n{report}"
        );
        // SPF follows the A record only when it names `mx`; ours lists the address, so
        // each break is the only problem.
        assert_eq!(problems.len(), 1, "{report}");
    }
}

/// A nameserver that never answers: every record is reported as unknown (not missing: the fix
/// is not to publish anything), the check fails, and it ends within a few lookup timeouts.
#[test]
fn a_dead_nameserver_is_reported_as_unknown_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smtpd.toml");
    fs::write(
        &config,
        format!(
            "[dkim]\nkey_dir = \"{}\"\n",
            dir.path().join("keys").display()
        ),
    )
    .unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ns = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let out = smtpd(
        &config,
        &[
            "dns-check",
            "example.test",
            "--ip",
            "192.0.2.10",
            "--nameserver",
            &ns,
        ],
    );
    let report = text(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        start.elapsed() < Duration::from_secs(40),
        "{:?}",
        start.elapsed()
    );
    for record in ["MX", "A", "SPF", "DMARC", "TLS-RPT", "MTA-STS"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("UNKNOWN") && l.split_whitespace().nth(1) == Some(record)),
            "{record} not unknown in\n{report}"
        );
    }
    assert!(!report.contains("MISSING MX"), "{report}");
    // No keys were made for the domain: that is said too.
    assert!(
        report.contains("MISSING DKIM     no key for example.test"),
        "{report}"
    );
}
