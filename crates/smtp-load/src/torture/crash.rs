//! SIGKILL under concurrent senders, several rounds: after each restart, every message that got
//! `250` must be whole in `new/`, and `new/` must hold nothing partial.

use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio::time::sleep;

use super::client::Client;
use super::mail::Letter;
use super::storage::check_new;
use super::{Ctx, Outcome, send_letter, still_serves};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let counts = &ctx.opts.counts;
    let name = "kill -9 under load";
    let expectation = format!(
        "{} rounds of SIGKILL after {:.1} s of {} concurrent senders: every 250'd message whole in new/ after restart, nothing partial",
        counts.crash_rounds,
        counts.crash_after.as_secs_f64(),
        counts.crash_senders
    );
    let mut server = match ctx.server("crash", |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken(name, expectation, e)],
    };
    let maildir = ctx.dir("crash").join("maildir");
    let acked: Arc<Mutex<Vec<Letter>>> = Arc::default();
    let mut refused = 0u64;
    for round in 0..counts.crash_rounds {
        let mut senders = JoinSet::new();
        for s in 0..counts.crash_senders {
            let (target, acked) = (server.addr, acked.clone());
            senders.spawn(async move { send_until_dead(target, round, s, &acked).await });
        }
        sleep(counts.crash_after).await;
        server.kill9();
        while let Some(joined) = senders.join_next().await {
            refused += joined.unwrap_or(0);
        }
        if let Err(e) = server.restart() {
            return vec![Outcome::broken(
                name,
                expectation,
                format!("restart after round {round}: {e}"),
            )];
        }
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let refs: Vec<&Letter> = acked.iter().collect();
    let (whole, partial) = check_new(&maildir, &refs);
    let leftovers = super::mail::files(&maildir, "tmp").len();
    let alive = still_serves(&server, &maildir, "crash").await;
    let measured = format!(
        "{} acknowledged, {whole} whole in new/, {partial} partial in new/, {refused} refused, {leftovers} stale in tmp/; after: {}",
        acked.len(),
        alive
            .as_ref()
            .map_or_else(Clone::clone, |()| "serves mail".into())
    );
    vec![Outcome::check(
        name,
        expectation,
        measured,
        !acked.is_empty() && whole == acked.len() && partial == 0 && alive.is_ok(),
    )]
}

/// Sends messages on one connection until it dies; records each one answered `250`. Returns how
/// many were refused (any other reply).
async fn send_until_dead(
    target: std::net::SocketAddr,
    round: u32,
    sender: u32,
    acked: &Mutex<Vec<Letter>>,
) -> u64 {
    let mut refused = 0;
    let Ok((mut client, _)) = Client::greeted(target).await else {
        return refused;
    };
    if client.command("EHLO crash.test").await.is_err() {
        return refused;
    }
    // The server dies within seconds; the bound only guards against a server that never does.
    for n in 0..10_000u32 {
        let letter = Letter::new(
            &format!("r{round}s{sender}m{n}"),
            1024 + (n as usize % 8) * 8192,
            "crash",
        );
        let rcpt = format!("s{sender}@crash.test");
        match send_letter(&mut client, &[rcpt], &letter).await {
            Ok(r) if r.code == 250 => {
                if let Ok(mut a) = acked.lock() {
                    a.push(letter);
                }
            }
            Ok(_) => refused += 1,
            Err(_) => break,
        }
    }
    refused
}
