//! Connection flood: thousands of connections at once, all held open. Every one must be
//! answered, with a greeting or a `421` over the limit, never dropped silently or left hanging,
//! and the server must still serve mail afterwards.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::client::{Client, Failure};
use super::{Ctx, Outcome, still_serves};

/// Connections per source address: under the default per-IP limit of 50, so the total limit is
/// what the flood meets (unless loopback is exempt, which is fine too).
const PER_SOURCE: u32 = 25;

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let n = ctx.opts.counts.flood_connections;
    let expectation = format!(
        "{n} connections at once: each gets 220 or 421 (limit {}), none silent or hanging; server serves mail after",
        n / 2
    );
    let server = match ctx.server("flood", |s| s.connections = (n / 2).max(1)) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken("connection flood", expectation, e)],
    };
    let (release, hold) = watch::channel(false);
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let target = server.addr;
        let mut hold = hold.clone();
        let answer_tx = answer_tx.clone();
        // 127.0.0.2 onwards: every address in 127.0.0.0/8 is local on Linux.
        let source = IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i / PER_SOURCE,
        ));
        tasks.spawn(async move {
            let result = async {
                let mut client = Client::connect(target, Some(source)).await?;
                let greeting = client.reply().await?;
                Ok::<_, Failure>((client, greeting.code))
            }
            .await;
            let key = match &result {
                Ok((_, code)) => code.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = answer_tx.send((key, started.elapsed()));
            // The collector stops when every sender is gone, before the release.
            drop(answer_tx);
            if let Ok((mut client, code)) = result {
                // Every connection stays open until every client has its answer.
                let _ = hold.wait_for(|&go| go).await;
                if code == 220 {
                    let _ = client.command("QUIT").await;
                }
            }
        });
    }
    drop(answer_tx);
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut seen = 0;
    // Each task answers once, and every wait inside it is bounded, so this loop ends.
    while let Some((key, waited)) = answer_rx.recv().await {
        seen += 1;
        slowest = slowest.max(waited);
        *answers.entry(key).or_default() += 1;
    }
    let _ = release.send(true);
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            *answers.entry(format!("task: {e}")).or_default() += 1;
        }
    }
    let answered =
        answers.get("220").copied().unwrap_or(0) + answers.get("421").copied().unwrap_or(0);
    let alive = still_serves(&server, &ctx.dir("flood").join("maildir"), "flood").await;
    let summary: Vec<String> = answers.iter().map(|(k, v)| format!("{v}x {k}")).collect();
    let measured = format!(
        "{} of {seen}; slowest answer {:.1} s; after: {}",
        summary.join(", "),
        slowest.as_secs_f64(),
        alive
            .as_ref()
            .map_or_else(Clone::clone, |()| "serves mail".into())
    );
    vec![Outcome::check(
        "connection flood",
        expectation,
        measured,
        answered == n && alive.is_ok(),
    )]
}
