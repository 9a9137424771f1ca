//! Two-instance relay tests: instance A takes alice's submission and relays it through its
//! queue; the pieces `relay.rs` and `tls_policy.rs` both need.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Client, Reply, files_under};

/// `AUTH PLAIN` for alice / pw: base64 of `\0alice\0pw`.
pub(crate) const ALICE: &str = "AGFsaWNlAHB3";

/// How long a message may take to cross from A to B (one runner round is immediate; a retry
/// waits for first_retry = 1 s and the next poll, 5 s).
pub(crate) const CROSSING: Duration = Duration::from_secs(20);

/// Instance A's configuration up to its queue schedule: an MX listener on `mx`, submission
/// (AUTH without TLS: loopback only) on `submission`, local domain a.test with alice (whose
/// password hash is `hash`), relay on with `relay` added to `[relay]`, alice allowed to send as
/// alice@a.test, and a retry after 1 s. The caller appends its `[dns]` and `[delivery]`.
pub(crate) fn sender_config(mx: u16, submission: u16, hash: &str, relay: &str) -> String {
    format!(
        r#"hostname = "mx.a.test"
allow_insecure_auth = true

[[listener]]
address = "127.0.0.1:{mx}"
kind = "smtp"

[[listener]]
address = "127.0.0.1:{submission}"
kind = "submission"

[[domain]]
name = "a.test"
mailboxes = ["alice"]

[[user]]
name = "alice"
password_hash = "{hash}"

[storage]
maildir = "md"

[relay]
enabled = true
{relay}

[relay.senders]
alice = ["alice@a.test"]

[queue]
directory = "queue"

[queue.schedule]
first_retry = 1
max_retry = 2
"#
    )
}

/// Submits one message as alice on A's submission port: `content` (without the terminating
/// dot) from `from` to each of `to`; the reply to the end of data.
pub(crate) fn submit(port: u16, from: &str, to: &[&str], content: &str) -> Reply {
    let mut c = Client::connect(port);
    c.expect("EHLO laptop.test", 250);
    c.expect(&format!("AUTH PLAIN {ALICE}"), 235);
    c.expect(&format!("MAIL FROM:<{from}>"), 250);
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    c.expect("DATA", 354);
    let reply = c.cmd(&format!("{content}\r\n."));
    c.expect("QUIT", 221);
    reply
}

/// The messages in every `new/` directory under `dir`, read whole.
pub(crate) fn new_messages(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|p: &PathBuf| p.parent().is_some_and(|d| d.ends_with("new")))
        .map(|f| fs::read_to_string(f).expect("read message"))
        .collect()
}

/// [`new_messages`] under `maildir`, waiting up to [`CROSSING`] for `n` of them.
pub(crate) fn wait_messages(maildir: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + CROSSING;
    loop {
        let messages = new_messages(maildir);
        if messages.len() >= n {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{} message(s) in {}, wanted {n}",
            messages.len(),
            maildir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
