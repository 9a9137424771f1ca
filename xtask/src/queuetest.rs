//! `cargo xtask queuetest`: the outbound queue's throughput beside the inbound rate of the same
//! server in the same run.
//!
//! A release `smtpd` takes submissions with AUTH PLAIN (one password check per connection, 50
//! in a run: negligible) and relays through its queue to a smart host on loopback: `smtp-load
//! baseline-server --expect N`, which prints a line when N messages have arrived. The figure
//! is submitted-and-delivered messages per second, from the start of the submitting `smtp-load
//! run` until the sink has all N. Beside it, the same instance under the same load storing into
//! a local Maildir (the inbound rate), alternated with the queue run, each round twice.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xshell::{Shell, cmd};

use crate::Result;
use crate::flags::QueuetestOptions;
use crate::loadtest::{Running, free_port, json_number, target_dir, wait_for_port};

const USER: &str = "bench";
const PASSWORD: &str = "queuetest";

/// One measured pair: the same load into a Maildir and through the queue.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pair {
    /// Which smtpd: `this` (just built) or `baseline` (`--compare`).
    smtpd: &'static str,
    size: String,
    round: u32,
    /// Messages per second stored in the Maildir (`250` after the fsync).
    inbound: Option<f64>,
    /// Messages per second queued (`250` after the queue's fsync), as smtp-load saw them.
    queued: Option<f64>,
    /// Messages per second from the first submission until the sink had them all.
    delivered: Option<f64>,
    /// smtpd CPU seconds per 1,000 messages stored in the Maildir.
    inbound_cpu: Option<f64>,
    /// smtpd CPU seconds per 1,000 messages queued and delivered.
    queue_cpu: Option<f64>,
    note: String,
}

pub(crate) fn run(sh: &Shell, opts: &QueuetestOptions) -> Result<()> {
    let root = crate::project_root();
    // One build of both: separate builds resolve different features for shared dependencies
    // and rebuild them each time.
    cmd!(
        sh,
        "cargo build --release -p smtp-load --bin smtp-load -p smtpd --bin smtpd"
    )
    .run()?;
    let bins = target_dir(&root).join("release");
    let (smtpd, load) = (bins.join("smtpd"), bins.join("smtp-load"));
    let hash = password_hash(&smtpd)?;
    let mut binaries = vec![("this", smtpd)];
    if let Some(other) = &opts.compare {
        binaries.push(("baseline", fs::canonicalize(other)?));
    }
    let mut pairs = Vec::new();
    for size in &opts.sizes {
        for round in 1..=opts.rounds {
            // Alternated, so neither side always runs on a warmer (or fuller) machine.
            let queue_first = round % 2 == 0;
            if round % 2 == 0 {
                binaries.reverse();
            }
            for (label, smtpd) in &binaries {
                let dir = scratch_dir(size, round)?;
                let result = measure(smtpd, &load, &hash, &dir, size, opts, queue_first);
                let _ = fs::remove_dir_all(&dir);
                let mut pair = result?;
                pair.round = round;
                pair.smtpd = label;
                println!("{}", table(std::slice::from_ref(&pair), opts));
                pairs.push(pair);
            }
            if round % 2 == 0 {
                binaries.reverse();
            }
        }
    }
    println!("\n{}", table(&pairs, opts));
    Ok(())
}

fn scratch_dir(size: &str, round: u32) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "smtpd-queuetest-{}-{size}-{round}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn password_hash(smtpd: &Path) -> Result<String> {
    let mut child = Command::new(smtpd)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err("smtpd hash-password failed".into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The sink, and the moment it said it had every message.
struct Sink {
    _child: Running,
    addr: SocketAddr,
    complete: mpsc::Receiver<Instant>,
}

fn start_sink(load: &Path, expect: u64) -> Result<Sink> {
    let mut child = Running(
        Command::new(load)
            .args(["baseline-server", "--listen", "127.0.0.1:0"])
            .args(["--expect", &expect.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no sink stdout")?;
    let mut lines = BufReader::new(stdout);
    let mut first = String::new();
    lines.read_line(&mut first)?;
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected first line from the sink: {first:?}"))?;
    let (tx, complete) = mpsc::channel();
    std::thread::spawn(move || watch_sink(lines, &tx));
    Ok(Sink {
        _child: child,
        addr,
        complete,
    })
}

/// Timestamps the sink's `received N messages` line as it arrives.
fn watch_sink(lines: BufReader<ChildStdout>, tx: &mpsc::Sender<Instant>) {
    for line in lines.lines() {
        match line {
            Ok(l) if l.starts_with("received ") => {
                let _ = tx.send(Instant::now());
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn config(hash: &str, listen: SocketAddr, sink: SocketAddr) -> String {
    format!(
        r#"hostname = "mx.a.test"
# AUTH in plaintext: loopback benchmark only.
allow_insecure_auth = true

[[listener]]
address = "{listen}"
kind = "submission"

[[domain]]
name = "a.test"
mailboxes = ["{USER}", "sink"]

[[user]]
name = "{USER}"
password_hash = "{hash}"

[storage]
maildir = "md"

[relay]
enabled = true

[relay.senders]
{USER} = ["@a.test"]

[queue]
directory = "queue"

[delivery.smart_host]
address = "{sink}"
tls = "none"
"#
    )
}

fn measure(
    smtpd: &Path,
    load: &Path,
    hash: &str,
    dir: &Path,
    size: &str,
    opts: &QueuetestOptions,
    queue_first: bool,
) -> Result<Pair> {
    let sink = start_sink(load, opts.messages)?;
    let listen = free_port()?;
    let config_path = dir.join("smtpd.toml");
    fs::write(&config_path, config(hash, listen, sink.addr))?;
    println!(
        "--> {size}: smtpd {} (relay to {}), {}",
        listen,
        sink.addr,
        if queue_first {
            "queue, then Maildir"
        } else {
            "Maildir, then queue"
        }
    );
    let mut server = Running(
        Command::new(smtpd)
            .arg("--config")
            .arg(&config_path)
            .arg("--no-checks")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A log line per message; a terminal would measure itself, not the server.
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for_port(&mut server, listen)?;
    let pid = server.0.id();
    let mut pair = Pair {
        size: size.to_owned(),
        ..Pair::default()
    };
    let mut notes = Vec::new();
    for queue in [queue_first, !queue_first] {
        if queue {
            let cpu_before = cpu_seconds(pid);
            let started = Instant::now();
            let (json, ok) = submit(load, listen, pid, size, opts, "sink@remote.test")?;
            pair.queued = json_number(&json, "messages_per_sec");
            if !ok {
                notes.push("some submissions failed");
            }
            // Enough for the slowest plausible queue on a busy machine; a stuck queue ends
            // the run instead of hanging it.
            let limit = Duration::from_secs(60) + Duration::from_millis(opts.messages * 20);
            match sink.complete.recv_timeout(limit) {
                Ok(done) => {
                    let secs = done.duration_since(started).as_secs_f64();
                    pair.delivered = Some(opts.messages as f64 / secs);
                    pair.queue_cpu = per_1000(cpu_before, cpu_seconds(pid), opts.messages);
                }
                Err(_) => notes.push("the sink did not get every message"),
            }
        } else {
            let cpu_before = cpu_seconds(pid);
            let (json, ok) = submit(load, listen, pid, size, opts, "sink@a.test")?;
            pair.inbound = json_number(&json, "messages_per_sec");
            pair.inbound_cpu = per_1000(cpu_before, cpu_seconds(pid), opts.messages);
            if !ok {
                notes.push("some Maildir deliveries failed");
            }
        }
    }
    pair.note = notes.join("; ");
    Ok(pair)
}

/// One `smtp-load run` as the bench user; its JSON report and whether every message got 250.
fn submit(
    load: &Path,
    target: SocketAddr,
    pid: u32,
    size: &str,
    opts: &QueuetestOptions,
    rcpt: &str,
) -> Result<(String, bool)> {
    let output = Command::new(load)
        .args(["run", "--target", &target.to_string()])
        .args(["--sessions", &opts.sessions.to_string()])
        .args(["--messages", &opts.messages.to_string()])
        .args(["--size", size])
        .args(["--auth", &format!("{USER}:{PASSWORD}")])
        .args(["--mail-from", &format!("{USER}@a.test")])
        .args(["--rcpt", rcpt])
        .args(["--pipelining", "--json", "--no-progress"])
        .args(["--server-pid", &pid.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("smtp-load printed no JSON report")?
        .to_owned();
    Ok((json, output.status.success()))
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 14 and 15 (utime, stime), counted after the command name's closing parenthesis;
    // USER_HZ is 100 on every Linux ABI.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn per_1000(before: Option<f64>, after: Option<f64>, messages: u64) -> Option<f64> {
    Some((after? - before?) * 1000.0 / messages.max(1) as f64)
}

fn table(pairs: &[Pair], opts: &QueuetestOptions) -> String {
    let mut out = format!(
        "{} sessions, {} messages per run, pipelining, AUTH PLAIN; queue: relay to a smart host \
         (smtp-load baseline-server) on loopback\n\n\
         | smtpd | size | round | inbound (Maildir) msgs/s | queued msgs/s | submitted-and-delivered msgs/s | delivered / inbound | smtpd CPU s / 1000 (Maildir) | smtpd CPU s / 1000 (queue + delivery) | note |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        opts.sessions, opts.messages,
    );
    let f = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
    };
    for p in pairs {
        let ratio = match (p.delivered, p.inbound) {
            (Some(d), Some(i)) if i > 0.0 => Some(d / i),
            _ => None,
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.smtpd,
            p.size,
            p.round,
            f(p.inbound, 0),
            f(p.queued, 0),
            f(p.delivered, 0),
            ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x")),
            f(p.inbound_cpu, 3),
            f(p.queue_cpu, 3),
            p.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_relays_to_the_sink() {
        let listen: SocketAddr = "127.0.0.1:2587".parse().unwrap();
        let sink: SocketAddr = "127.0.0.1:2525".parse().unwrap();
        let text = config("$argon2id$x", listen, sink);
        assert!(
            text.contains("address = \"127.0.0.1:2525\"\ntls = \"none\""),
            "{text}"
        );
        assert!(text.contains("kind = \"submission\""), "{text}");
        assert!(text.contains("bench = [\"@a.test\"]"), "{text}");
    }

    #[test]
    fn prints_ratio_beside_inbound() {
        let opts = QueuetestOptions {
            sizes: vec!["1k".into()],
            sessions: 50,
            messages: 100,
            rounds: 1,
            compare: None,
        };
        let pair = Pair {
            smtpd: "this",
            size: "1k".into(),
            round: 1,
            inbound: Some(2000.0),
            queued: Some(1800.0),
            delivered: Some(500.0),
            inbound_cpu: Some(0.5),
            queue_cpu: None,
            note: String::new(),
        };
        let t = table(&[pair], &opts);
        assert!(
            t.contains("| this | 1k | 1 | 2000 | 1800 | 500 | 0.25x | 0.500 | n/a |  |"),
            "{t}"
        );
    }

    #[test]
    fn per_1000_needs_both_readings() {
        assert_eq!(per_1000(Some(1.0), Some(3.0), 2000), Some(1.0));
        assert_eq!(per_1000(None, Some(3.0), 2000), None);
    }
}
