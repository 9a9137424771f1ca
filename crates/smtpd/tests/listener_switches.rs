//! Per-listener switches through smtpd's TOML (`disabled_commands`, `hidden_extensions` in a
//! `[[listener]]`): on the wire of the real binary, in `check-config`, and refused when they
//! name nothing the server knows.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;

use common::{Client, Server, addr, assert_contains, run_bounded, smtpd};

fn config(ports: &[u16]) -> String {
    format!(
        "hostname = \"mx.test\"\n\n\
         [[listener]]\naddress = \"{}\"\n\n\
         [[listener]]\naddress = \"{}\"\n\
         disabled_commands = [\"VRFY\", \"help\"]\n\
         hidden_extensions = [\"PIPELINING\", \"size\"]\n\n\
         [storage]\nmaildir = \"md\"\n\n[dns]\nreverse_lookup = false\n",
        addr(ports[0]),
        addr(ports[1])
    )
}

#[test]
fn switches_apply_to_their_listener_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    let server = Server::start(dir.path(), 2, |p| {
        fs::write(&path, config(p)).expect("write the config");
        vec!["--config".into(), path.display().to_string()]
    });

    let mut plain = Client::connect(server.port(0));
    let ehlo = plain.expect("EHLO c.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");
    assert!(
        ehlo.lines.iter().any(|l| l.starts_with("SIZE ")),
        "{ehlo:?}"
    );
    plain.expect("HELP", 214);

    let mut switched = Client::connect(server.port(1));
    let ehlo = switched.expect("EHLO c.test", 250);
    assert!(
        !ehlo
            .lines
            .iter()
            .any(|l| l == "PIPELINING" || l.starts_with("SIZE")),
        "{ehlo:?}"
    );
    let reply = switched.expect("VRFY postmaster", 502);
    assert_eq!(reply.text(), "5.5.1 Command not implemented");
    switched.expect("HELP", 502);
    switched.expect("MAIL FROM:<a@example.org> SIZE=100", 555);
    switched.expect("MAIL FROM:<a@example.org>", 250);
    switched.expect("QUIT", 221);
}

#[test]
fn check_config_prints_the_switches_and_refuses_unknown_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smtpd.toml");
    fs::write(&path, config(&[2525, 2526])).expect("write the config");
    let out = run_bounded(smtpd().arg("check-config").arg(&path), None);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let effective: toml::Table = toml::from_str(&out.stdout).expect("TOML");
    let listener = &effective["listener"][1];
    assert_eq!(
        listener["disabled_commands"].as_array().unwrap().len(),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(
        listener["hidden_extensions"][1].as_str(),
        Some("size"),
        "{}",
        out.stdout
    );

    for (bad, named) in [
        ("disabled_commands = [\"QUIT\"]", "QUIT"),
        ("hidden_extensions = [\"XYZZY\"]", "XYZZY"),
    ] {
        let text =
            format!("hostname = \"mx.test\"\n[[listener]]\naddress = \"127.0.0.1:2525\"\n{bad}\n");
        fs::write(&path, text).expect("write the config");
        let out = run_bounded(smtpd().arg("check-config").arg(&path), None);
        assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
        assert_contains(&out.stderr, named);
    }
}
