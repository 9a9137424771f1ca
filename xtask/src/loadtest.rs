//! `cargo xtask loadtest`: start each server on 127.0.0.1, run `smtp-load` against it, and
//! print one markdown table.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xshell::{Shell, cmd};

use crate::Result;
use crate::flags::LoadtestOptions;

/// How to build and start one server under test.
#[derive(Debug)]
struct Server {
    name: &'static str,
    package: &'static str,
    /// `bin` or `example` name.
    target: Target,
    /// Arguments; `{addr}` is replaced by the listen address.
    args: &'static [&'static str],
    /// A file that exists once the server has been written, relative to the workspace root.
    marker: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Bin(&'static str),
    Example(&'static str),
}

const SERVERS: &[Server] = &[
    Server {
        name: "baseline",
        package: "smtp-load",
        target: Target::Bin("smtp-load"),
        args: &["baseline-server", "--listen", "{addr}"],
        marker: "crates/smtp-load/src/main.rs",
    },
    Server {
        name: "tokio",
        package: "smtpkit-tokio",
        target: Target::Example("tokio_sink"),
        args: &["--listen", "{addr}"],
        marker: "crates/smtpkit-tokio/examples/tokio_sink.rs",
    },
    Server {
        name: "smol",
        package: "smtpkit-smol",
        target: Target::Example("smol_sink"),
        args: &["--listen", "{addr}"],
        marker: "crates/smtpkit-smol/examples/smol_sink.rs",
    },
    Server {
        name: "mio",
        package: "smtpkit-mio",
        target: Target::Example("mio_sink"),
        args: &["--listen", "{addr}"],
        marker: "crates/smtpkit-mio/examples/mio_sink.rs",
    },
    Server {
        name: "smtpd-sink",
        package: "smtpd",
        target: Target::Bin("smtpd"),
        args: &["--sink", "--listen", "{addr}"],
        marker: "crates/smtpd/src/main.rs",
    },
    Server {
        name: "smtpd",
        package: "smtpd",
        target: Target::Bin("smtpd"),
        args: &["--listen", "{addr}"],
        marker: "crates/smtpd/src/main.rs",
    },
    // The same server without [checks] (SPF, DKIM, ARC, DMARC), the baseline of the row above.
    Server {
        name: "smtpd-nochecks",
        package: "smtpd",
        target: Target::Bin("smtpd"),
        args: &["--no-checks", "--listen", "{addr}"],
        marker: "crates/smtpd/src/main.rs",
    },
];

/// One finished run, as printed in the table.
#[derive(Debug, Default, PartialEq)]
struct Row {
    name: String,
    msgs_per_sec: Option<f64>,
    mb_per_sec: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_per_1000: Option<f64>,
    peak_rss_kib: Option<f64>,
    note: String,
}

pub(crate) fn run(sh: &Shell, opts: &LoadtestOptions) -> Result<()> {
    let root = crate::project_root();
    let mut selected = Vec::new();
    for name in &opts.adapters {
        let server = SERVERS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no server definition for `{name}`"))?;
        if root.join(server.marker).exists() {
            selected.push(server);
        } else {
            println!(
                "--> skipping {}: {} does not exist yet",
                server.name, server.marker
            );
        }
    }
    if selected.is_empty() {
        return Err("no server to test".into());
    }
    cmd!(sh, "cargo build --release -p smtp-load --bin smtp-load").run()?;
    let bin_dir = target_dir(&root).join("release");
    let mut rows = Vec::new();
    for server in selected {
        let package = server.package;
        match server.target {
            Target::Bin(bin) => cmd!(sh, "cargo build --release -p {package} --bin {bin}").run()?,
            Target::Example(ex) => {
                cmd!(sh, "cargo build --release -p {package} --example {ex}").run()?;
            }
        }
        let exe = match server.target {
            Target::Bin(bin) => bin_dir.join(bin),
            Target::Example(ex) => bin_dir.join("examples").join(ex),
        };
        rows.push(run_one(server, &exe, &bin_dir.join("smtp-load"), opts)?);
    }
    println!("\n{}", table(&rows, opts));
    Ok(())
}

/// Kills the server when dropped, so an error on the way never leaves one running.
#[derive(Debug)]
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_one(server: &Server, exe: &Path, load: &Path, opts: &LoadtestOptions) -> Result<Row> {
    let addr = free_port()?;
    let args: Vec<String> = server
        .args
        .iter()
        .map(|a| a.replace("{addr}", &addr.to_string()))
        .collect();
    println!("--> {}: {} {}", server.name, exe.display(), args.join(" "));
    let mut child = Running(
        Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Servers log a line per message; a terminal would measure itself, not the server.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?,
    );
    wait_for_port(&mut child, addr)?;
    let output = Command::new(load)
        .args(["run", "--target", &addr.to_string()])
        .args(["--sessions", &opts.sessions.to_string()])
        .args(["--messages", &opts.messages.to_string()])
        .args(["--size", &opts.size])
        .args(["--pipelining", "--json", "--no-progress"])
        .args(
            opts.per_connection
                .map(|k| vec!["--per-connection".to_owned(), k.to_string()])
                .unwrap_or_default(),
        )
        .args(["--server-pid", &child.0.id().to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    drop(child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("smtp-load printed no JSON report for {}", server.name))?;
    let mut row = row_from_json(server.name, json);
    if !output.status.success() {
        row.note = "some messages failed".into();
    }
    Ok(row)
}

/// A port that was free a moment ago; the server binds it right after.
pub(crate) fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

pub(crate) fn wait_for_port(child: &mut Running, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait()? {
            return Err(format!("server exited before listening on {addr}: {status}").into());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("server did not listen on {addr} within 15 s").into())
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root.join("target"),
    }
}

fn row_from_json(name: &str, json: &str) -> Row {
    Row {
        name: name.to_owned(),
        msgs_per_sec: json_number(json, "messages_per_sec"),
        mb_per_sec: json_number(json, "mb_per_sec"),
        p50_ms: json_number(json, "p50_ms"),
        p99_ms: json_number(json, "p99_ms"),
        cpu_per_1000: json_number(json, "cpu_secs_per_1000_messages"),
        peak_rss_kib: json_number(json, "peak_rss_kib"),
        note: String::new(),
    }
}

/// The number after `"key":` in a JSON text; `None` for `null` or a missing key. The report's
/// keys are unique, so no JSON parser is needed.
pub(crate) fn json_number(json: &str, key: &str) -> Option<f64> {
    let pattern = format!("\"{key}\":");
    let start = json.find(&pattern)? + pattern.len();
    let rest = json[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn table(rows: &[Row], opts: &LoadtestOptions) -> String {
    let mut out = format!(
        "{} sessions, {} messages of {}, {}, pipelining\n\n\
         | target | msgs/s | MB/s | p50 | p99 | server CPU s / 1000 msgs | peak RSS | note |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        opts.sessions,
        opts.messages,
        opts.size,
        opts.per_connection
            .map_or("all on one connection per session".to_owned(), |k| format!(
                "{k} per connection"
            )),
    );
    let f = |v: Option<f64>, digits: usize, unit: &str| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}{unit}"))
    };
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            f(r.msgs_per_sec, 0, ""),
            f(r.mb_per_sec, 2, ""),
            f(r.p50_ms, 2, " ms"),
            f(r.p99_ms, 2, " ms"),
            f(r.cpu_per_1000, 4, ""),
            f(r.peak_rss_kib.map(|k| k / 1024.0), 1, " MiB"),
            r.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"target":"127.0.0.1:1","messages_per_sec":1234.5,"mb_per_sec":1.25,"latency":{"p50_ms":0.4,"p90_ms":1.0,"p99_ms":2.5,"max_ms":9.0,"mean_ms":0.5},"server":{"pid":7,"cpu_secs":1.0,"cpu_secs_per_1000_messages":null,"rss_kib":2048,"peak_rss_kib":4096}}"#;

    #[test]
    fn reads_report_fields() {
        let row = row_from_json("baseline", REPORT);
        assert_eq!(row.msgs_per_sec, Some(1234.5));
        assert_eq!(row.mb_per_sec, Some(1.25));
        assert_eq!((row.p50_ms, row.p99_ms), (Some(0.4), Some(2.5)));
        assert_eq!(row.cpu_per_1000, None);
        assert_eq!(row.peak_rss_kib, Some(4096.0));
        assert_eq!(json_number(REPORT, "missing"), None);
    }

    #[test]
    fn prints_a_markdown_table() {
        let opts = LoadtestOptions {
            adapters: vec!["baseline".into()],
            sessions: 2,
            messages: 10,
            size: "1k".into(),
            per_connection: None,
        };
        let t = table(&[row_from_json("baseline", REPORT)], &opts);
        assert!(
            t.contains("| baseline | 1234 | 1.25 | 0.40 ms | 2.50 ms | n/a | 4.0 MiB |  |"),
            "{t}"
        );
    }

    #[test]
    fn every_adapter_has_a_server() {
        for name in crate::flags::ADAPTERS {
            assert!(SERVERS.iter().any(|s| s.name == *name), "{name}");
        }
    }
}
