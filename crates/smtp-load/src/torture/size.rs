//! Message size: one message over the limit (DATA and BDAT) is refused with `552` after it is
//! read, the session goes on, and nothing is stored; many large messages at once are streamed
//! to disk, not held in memory.

use tokio::task::JoinSet;

use super::client::{Client, Failure, Reply, data_wire};
use super::mail::{self, Letter};
use super::{Ctx, Outcome, deliver};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let server = match ctx.server("size", |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken("oversize message", "server starts", e)],
    };
    let maildir = ctx.dir("size").join("maildir");
    let pid = server.pid().unwrap_or_default();
    vec![
        concurrent(ctx, server.addr, pid, &maildir).await,
        oversize(server.addr, &maildir).await,
    ]
}

/// N concurrent senders of large messages: all stored whole, peak RSS well below their sum.
async fn concurrent(
    ctx: &Ctx<'_>,
    target: std::net::SocketAddr,
    pid: u32,
    maildir: &std::path::Path,
) -> Outcome {
    let n = ctx.opts.counts.large_messages;
    let size = ctx.opts.counts.large_size;
    let total_mib = (n as usize * size) as f64 / (1 << 20) as f64;
    let bound = (total_mib / 2.0).max(8.0);
    let expectation = format!(
        "{n} x {:.0} MiB at once: all 250 and whole in new/; peak RSS growth < {bound:.0} MiB (half their sum: streamed, not buffered)",
        size as f64 / (1 << 20) as f64
    );
    let before = crate::procfs::memory(Some(pid));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let letter = Letter::new(&format!("large{i}"), size, "large");
        tasks.spawn(async move {
            let reply = deliver(target, &format!("large{i}@size.test"), &letter).await;
            (letter, i, reply)
        });
    }
    let mut accepted = 0;
    let mut whole = 0;
    let mut other = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((letter, i, reply)) = joined else {
            other.push("task panicked".to_owned());
            continue;
        };
        match reply {
            Ok(r) if r.code == 250 => {
                accepted += 1;
                let files = mail::new_files(maildir, "size.test", &format!("large{i}"));
                if files
                    .iter()
                    .any(|p| std::fs::read(p).is_ok_and(|b| letter.is_whole_in(&b)))
                {
                    whole += 1;
                }
            }
            Ok(r) => other.push(r.last_line().to_owned()),
            Err(e) => other.push(e.to_string()),
        }
    }
    let after = crate::procfs::memory(Some(pid));
    let growth = match (before, after) {
        (Some(b), Some(a)) => Some((a.peak_rss_kib.saturating_sub(b.rss_kib)) as f64 / 1024.0),
        _ => None,
    };
    let measured = format!(
        "{accepted} x 250, {whole} whole{}; peak RSS growth {}",
        if other.is_empty() {
            String::new()
        } else {
            format!(", other: {}", other.join("; "))
        },
        growth.map_or("unknown".into(), |g| format!("{g:.1} MiB"))
    );
    Outcome::check(
        "concurrent large messages",
        expectation,
        measured,
        accepted == n && whole == n && growth.is_some_and(|g| g < bound),
    )
}

/// A message one MiB over the 4 MiB limit, by DATA and by BDAT.
async fn oversize(target: std::net::SocketAddr, maildir: &std::path::Path) -> Outcome {
    let expectation = "5 MiB over a 4 MiB SIZE limit, by DATA and BDAT: 552 after the data, session usable (NOOP 250), nothing in new/ or tmp/";
    let result = async {
        let (mut client, _) = Client::greeted(target).await?;
        client.command("EHLO client.test").await?;
        let letter = Letter::new("oversize", 5 << 20, "oversize");
        let mut got = Vec::new();
        // DATA: the size is only known at the end.
        let mut steps: Vec<Reply> = Vec::new();
        steps.push(client.command("MAIL FROM:<big@client.test>").await?);
        steps.push(client.command("RCPT TO:<over@size.test>").await?);
        steps.push(client.command("DATA").await?);
        if steps.iter().map(|r| r.code).eq([250, 250, 354]) {
            client.send(&data_wire(&letter.bytes)).await?;
            got.push(("DATA", client.reply().await?));
        } else {
            got.push(("DATA", steps.pop().expect("three steps")));
        }
        got.push(("NOOP", client.command("NOOP").await?));
        // BDAT: the whole chunk is read, then refused.
        client.command("MAIL FROM:<big@client.test>").await?;
        client.command("RCPT TO:<over@size.test>").await?;
        client
            .send(format!("BDAT {} LAST\r\n", letter.bytes.len()).as_bytes())
            .await?;
        client.send(&letter.bytes).await?;
        got.push(("BDAT", client.reply().await?));
        got.push(("NOOP", client.command("NOOP").await?));
        Ok::<_, Failure>(got)
    }
    .await;
    let stored = mail::new_files(maildir, "size.test", "over").len();
    let leftovers = mail::files(maildir, "tmp").len();
    match result {
        Ok(got) => {
            let codes: Vec<u16> = got.iter().map(|(_, r)| r.code).collect();
            let text: Vec<String> = got
                .iter()
                .map(|(what, r)| format!("{what}: {}", r.last_line()))
                .collect();
            Outcome::check(
                "oversize message",
                expectation,
                format!("{}; {stored} in new/, {leftovers} in tmp/", text.join("; ")),
                codes == [552, 250, 552, 250] && stored == 0 && leftovers == 0,
            )
        }
        Err(e) => Outcome::check(
            "oversize message",
            expectation,
            format!("{e}; {stored} in new/"),
            false,
        ),
    }
}
