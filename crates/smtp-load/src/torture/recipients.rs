//! 200 recipients the way Python's smtplib sends them (issue 15 finding 3): every RCPT, one at
//! a time, before DATA, then DATA if any was accepted. With the default limit of 100
//! recipients, the rest get `452 4.5.3` without ending the session, and the message reaches the
//! accepted ones.

use std::collections::BTreeMap;

use super::client::{Client, Failure, data_wire};
use super::mail::{self, Letter};
use super::{Ctx, Outcome};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let n = ctx.opts.counts.recipients;
    let name = "recipients (smtplib)";
    let expectation = format!(
        "{n} RCPTs then DATA, default limits (100 recipients, 20 errors): 250 for the first 100, 452 for the rest, no 421; 250 for the message, whole in every accepted mailbox"
    );
    let server = match ctx.server("recipients", |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken(name, expectation, e)],
    };
    let maildir = ctx.dir("recipients").join("maildir");
    let letter = Letter::new("many-rcpts", 2000, "many recipients");
    let mut codes: BTreeMap<u16, u32> = BTreeMap::new();
    let mut accepted = Vec::new();
    let result = async {
        let (mut client, _) = Client::greeted(server.addr).await?;
        client.command("EHLO smtplib.test").await?;
        client.command("MAIL FROM:<sender@smtplib.test>").await?;
        for i in 0..n {
            let r = client.command(&format!("RCPT TO:<r{i}@rcpt.test>")).await?;
            *codes.entry(r.code).or_default() += 1;
            if r.code == 250 {
                accepted.push(format!("r{i}"));
            }
            if r.code == 421 {
                return Err(Failure::Closed);
            }
        }
        let data = client.command("DATA").await?;
        if data.code != 354 {
            return Ok(data);
        }
        client.send(&data_wire(&letter.bytes)).await?;
        let end = client.reply().await;
        let _ = client.command("QUIT").await;
        end
    }
    .await;
    let delivered = accepted
        .iter()
        .filter(|user| {
            mail::new_files(&maildir, "rcpt.test", user)
                .iter()
                .any(|p| std::fs::read(p).is_ok_and(|b| letter.is_whole_in(&b)))
        })
        .count();
    let replies: Vec<String> = codes.iter().map(|(c, k)| format!("{k}x {c}")).collect();
    let end = match &result {
        Ok(r) => r.last_line().to_owned(),
        Err(e) => format!("session ended: {e}"),
    };
    let ok = result.as_ref().is_ok_and(|r| r.code == 250)
        && codes.get(&250) == Some(&100.min(n))
        && codes.get(&452).copied().unwrap_or(0) == n.saturating_sub(100)
        && delivered == accepted.len();
    vec![Outcome::check(
        name,
        expectation,
        format!(
            "RCPT: {}; message: {end}; in {delivered}/{} mailboxes",
            replies.join(", "),
            accepted.len()
        ),
        ok,
    )]
}
