//! Slow and stalled clients, all at once against one server: command lines dripped a byte at a
//! time, bodies dripped a byte at a time (each byte resets the server's 5 s command and 10 s
//! data timers), and clients
//! that pipeline commands without ever reading a reply. Each must be cut well before the
//! 1800 s session limit, and ordinary clients must be served meanwhile.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use super::client::{Client, Failure};
use super::{Ctx, Outcome, rss_mib, secs, still_serves};

/// How a dripping client ended.
#[derive(Debug)]
struct Cut {
    /// Seconds from the first dripped byte to the server hanging up; `None`: still open.
    after: Option<Duration>,
    /// The last reply before the hang-up, if any (`421 4.4.2` is what the issue asks for).
    reply: Option<String>,
}

/// What a dripping client sends before the drip.
#[derive(Debug, Clone, Copy)]
enum Drip {
    /// `EHLO ` then one letter at a time, never the CRLF.
    CommandLine,
    /// A whole transaction up to `354`, then the body one byte at a time.
    Body,
}

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let counts = &ctx.opts.counts;
    let expect = &ctx.opts.expect;
    let limit = expect.slow_cut;
    // Every client here comes from 127.0.0.1: the per-IP limit (50 by default) must not be
    // what refuses the ordinary client in the middle of the attack.
    let server = match ctx.server("slow", |s| s.connections_per_ip = s.connections) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken("slowloris", "server starts", e)],
    };
    let pid = server.pid().unwrap_or_default();
    let idle_rss = rss_mib(pid).unwrap_or_default();
    let mut drips = JoinSet::new();
    for i in 0..counts.slow_clients * 2 {
        let kind = if i % 2 == 0 {
            Drip::CommandLine
        } else {
            Drip::Body
        };
        let (target, every) = (server.addr, expect.trickle_interval);
        // A little past the limit, so a cut right at the limit is still seen.
        let give_up = limit + Duration::from_secs(2);
        drips.spawn(async move { (kind, drip(target, kind, every, give_up).await) });
    }
    let mut readers = JoinSet::new();
    for _ in 0..counts.never_readers {
        let target = server.addr;
        readers.spawn(async move { never_read(target, limit).await });
    }
    // Meanwhile, ordinary clients must still get through, more than once.
    let mut served = Vec::new();
    let maildir = ctx.dir("slow").join("maildir");
    let mut peak_rss = idle_rss;
    for round in 0..3 {
        sleep(limit / 4).await;
        let started = Instant::now();
        let ok = timeout(
            Duration::from_secs(5),
            still_serves(&server, &maildir, &format!("slow{round}")),
        )
        .await
        .map_err(|_| "no answer within 5 s".to_owned())
        .and_then(|r| r);
        served.push(ok.map(|()| started.elapsed()));
        peak_rss = peak_rss.max(rss_mib(pid).unwrap_or_default());
    }

    let mut line_cuts = Vec::new();
    let mut body_cuts = Vec::new();
    while let Some(joined) = drips.join_next().await {
        match joined {
            Ok((Drip::CommandLine, cut)) => line_cuts.push(cut),
            Ok((Drip::Body, cut)) => body_cuts.push(cut),
            Err(e) => line_cuts.push(Cut {
                after: None,
                reply: Some(format!("task: {e}")),
            }),
        }
    }
    let mut reader_results = Vec::new();
    while let Some(joined) = readers.join_next().await {
        reader_results.push(joined.unwrap_or(ReaderEnd {
            sent: 0,
            closed_after: None,
        }));
    }
    peak_rss = peak_rss.max(rss_mib(pid).unwrap_or_default());

    let cut_expectation = |what: &str| {
        format!(
            "{} clients dripping {what} 1 byte/{}: each cut (421 4.4.2 or close) within {} (command/data timeouts 5/10 s, session 1800 s)",
            counts.slow_clients,
            secs(expect.trickle_interval),
            secs(limit)
        )
    };
    let mut rows = vec![
        cut_row(
            "slowloris: command line",
            cut_expectation("a command line"),
            &line_cuts,
            limit,
        ),
        cut_row(
            "slowloris: body",
            cut_expectation("a DATA body"),
            &body_cuts,
            limit,
        ),
    ];

    let cut_readers = reader_results
        .iter()
        .filter(|r| {
            r.closed_after
                .is_some_and(|t| t <= limit + Duration::from_secs(2))
        })
        .count();
    let sent: u64 = reader_results.iter().map(|r| r.sent).sum();
    let growth = peak_rss - idle_rss;
    let all_served = served.iter().all(Result::is_ok);
    let served_text: Vec<String> = served
        .iter()
        .map(|r| match r {
            Ok(t) => format!("{:.2} s", t.as_secs_f64()),
            Err(e) => e.clone(),
        })
        .collect();
    rows.push(Outcome::check(
        "never-reading clients",
        format!(
            "{} clients pipeline EHLO without reading: others served meanwhile (<5 s), RSS +<32 MiB, each cut within {}",
            counts.never_readers,
            secs(limit)
        ),
        format!(
            "others served in [{}]; {:.1} MiB sent by readers; RSS {idle_rss:.1} -> {peak_rss:.1} MiB; {cut_readers}/{} cut",
            served_text.join(", "),
            sent as f64 / (1 << 20) as f64,
            reader_results.len()
        ),
        all_served && growth < 32.0 && cut_readers == reader_results.len(),
    ));
    rows
}

fn cut_row(scenario: &'static str, expectation: String, cuts: &[Cut], limit: Duration) -> Outcome {
    let cut: Vec<Duration> = cuts.iter().filter_map(|c| c.after).collect();
    let slowest = cut.iter().max().copied();
    let replies: Vec<&str> = cuts.iter().filter_map(|c| c.reply.as_deref()).collect();
    let measured = format!(
        "{}/{} cut{}; replies: {}",
        cut.len(),
        cuts.len(),
        slowest.map_or_else(String::new, |s| format!(", slowest after {}", secs(s))),
        if replies.is_empty() {
            "none".to_owned()
        } else {
            dedup(&replies)
        }
    );
    let ok = !cuts.is_empty() && cut.len() == cuts.len() && slowest.is_some_and(|s| s <= limit);
    Outcome::check(scenario, expectation, measured, ok)
}

fn dedup(items: &[&str]) -> String {
    let mut v: Vec<&str> = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v.join("; ")
}

/// Connects, gets to the drip, and drips until the server hangs up or `give_up` passes.
async fn drip(target: std::net::SocketAddr, kind: Drip, every: Duration, give_up: Duration) -> Cut {
    let failed = |e: Failure| Cut {
        after: None,
        reply: Some(format!("setup: {e}")),
    };
    let (mut client, _) = match Client::greeted(target).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    if let Err(e) = client.command("EHLO slow.test").await {
        return failed(e);
    }
    let payload: &[u8] = match kind {
        Drip::CommandLine => {
            if let Err(e) = client.send(b"EHLO ").await {
                return failed(e);
            }
            b"abcdefghijklmnopqrstuvwxyz"
        }
        Drip::Body => {
            for (cmd, want) in [
                ("MAIL FROM:<slow@client.test>", 250),
                ("RCPT TO:<drip@slow.test>", 250),
                ("DATA", 354),
            ] {
                match client.command(cmd).await {
                    Ok(r) if r.code == want => {}
                    Ok(r) => {
                        return Cut {
                            after: None,
                            reply: Some(format!("setup: {}", r.last_line())),
                        };
                    }
                    Err(e) => return failed(e),
                }
            }
            b"Subject: drip\r\n\r\nOne byte at a time, never ending.\r\n"
        }
    };
    let started = Instant::now();
    let mut reply = None;
    for &byte in payload.iter().cycle() {
        if started.elapsed() > give_up {
            return Cut { after: None, reply };
        }
        if client.send(&[byte]).await.is_err() {
            return Cut {
                after: Some(started.elapsed()),
                reply,
            };
        }
        // Read while waiting for the next byte's turn: a reply here is the server giving up.
        match client.reply_by(Instant::now() + every).await {
            Err(Failure::Timeout) => {}
            Ok(r) => reply = Some(r.last_line().to_owned()),
            Err(_) => {
                return Cut {
                    after: Some(started.elapsed()),
                    reply,
                };
            }
        }
    }
    unreachable!("cycle() never ends")
}

/// How a never-reading client ended.
#[derive(Debug)]
struct ReaderEnd {
    /// Octets written before the server stopped taking them.
    sent: u64,
    /// When the server hung up, measured from the first write; `None`: still open.
    closed_after: Option<Duration>,
}

/// Pipelines EHLO commands without reading anything until the server stops taking them, keeps
/// not reading until `limit`, then finds out whether the server hung up.
async fn never_read(target: std::net::SocketAddr, limit: Duration) -> ReaderEnd {
    let Ok(mut client) = Client::connect(target, None).await else {
        return ReaderEnd {
            sent: 0,
            closed_after: None,
        };
    };
    let batch = b"EHLO never-reads.test\r\n".repeat(2048);
    let started = Instant::now();
    let mut sent = 0;
    let deadline = started + limit;
    // Writes stall once the server's and the kernel's buffers are full; stop there.
    while Instant::now() < deadline {
        match timeout(Duration::from_secs(1), client.send(&batch)).await {
            Ok(Ok(())) => sent += batch.len() as u64,
            Ok(Err(_)) => {
                return ReaderEnd {
                    sent,
                    closed_after: Some(started.elapsed()),
                };
            }
            Err(_) => break,
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    sleep(remaining).await;
    // Now read: a server that hung up has sent its FIN after whatever replies it had written.
    let (_, closed) = client
        .drain_until_closed(Instant::now() + Duration::from_secs(2))
        .await;
    ReaderEnd {
        sent,
        closed_after: closed.then(|| started.elapsed()),
    }
}
