//! Storage that fails under the server: a disk that fills up (a 2 MiB tmpfs, root only) and a
//! Maildir the server cannot write. Both must get temporary failures (4xx), never a 250 for
//! mail that was not stored, never a partial file in `new/`, and the server must go on.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::client::Client;
use super::mail::{self, Letter};
use super::{Ctx, Outcome, deliver, is_root};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    vec![disk_full(ctx).await, unwritable(ctx).await]
}

/// A tmpfs mounted for one scenario, unmounted (lazily, so a straggler cannot block it) when
/// dropped.
#[derive(Debug)]
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_owned()))
        } else {
            Err(format!(
                "mount -t tmpfs -o {options}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

async fn disk_full(ctx: &Ctx<'_>) -> Outcome {
    let name = "disk full";
    let expectation = "2 MiB tmpfs, 12 x 300 KiB messages: each 250 (and whole in new/) or 4xx, at least one 4xx, nothing partial in new/, tmp/ empty, server serves again once space is freed";
    if !is_root() {
        return Outcome::skip(name, expectation, "mounting a tmpfs needs root");
    }
    let maildir = ctx.dir("disk-full").join("maildir");
    let _mount = match Mount::tmpfs(&maildir, "size=2m,mode=0700") {
        Ok(m) => m,
        Err(e) => return Outcome::skip(name, expectation, e),
    };
    let server = match ctx.server("disk-full", |_| {}) {
        Ok(s) => s,
        Err(e) => return Outcome::broken(name, expectation, e),
    };
    let mut codes = Vec::new();
    let mut letters = Vec::new();
    for i in 0..12 {
        let letter = Letter::new(&format!("full{i}"), 300 << 10, "full");
        let reply = deliver(server.addr, &format!("user{i}@full.test"), &letter).await;
        // Code and enhanced code only: the rest of a 250 is a queue id, different every time.
        codes.push(reply.as_ref().map_or_else(
            |e| e.to_string(),
            |r| {
                r.last_line()
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ));
        let code = reply.map_or(0, |r| r.code);
        letters.push((letter, code));
    }
    let acked: Vec<&Letter> = letters
        .iter()
        .filter(|(_, c)| *c == 250)
        .map(|(l, _)| l)
        .collect();
    let temporary = letters
        .iter()
        .filter(|(_, c)| (400..500).contains(c))
        .count();
    let other = letters.len() - acked.len() - temporary;
    let (whole_acked, partial) = check_new(&maildir, &acked);
    let leftovers = mail::files(&maildir, "tmp").len();
    // Free the space and try again: the server must not be stuck in a failed state.
    for f in mail::files(&maildir, "new") {
        let _ = std::fs::remove_file(f);
    }
    let recovered = deliver(
        server.addr,
        "again@full.test",
        &Letter::new("again", 1000, "again"),
    )
    .await
    .map_or_else(
        |e| e.to_string(),
        |r| {
            r.last_line()
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    let measured = format!(
        "{} x 250 ({whole_acked} whole), {temporary} x 4xx, {other} other (replies: {}); {partial} partial in new/, {leftovers} in tmp/; after freeing: {recovered}",
        acked.len(),
        dedup(&codes)
    );
    let ok = other == 0
        && temporary > 0
        && whole_acked == acked.len()
        && partial == 0
        && leftovers == 0
        && recovered.starts_with("250");
    Outcome::check(name, expectation, measured, ok)
}

async fn unwritable(ctx: &Ctx<'_>) -> Outcome {
    let name = "unwritable Maildir";
    let maildir = ctx.dir("unwritable").join("maildir");
    // Root ignores file modes, so as root the Maildir is a read-only mount instead.
    let (how, _mount) = if is_root() {
        match Mount::tmpfs(&maildir, "size=1m,ro") {
            Ok(m) => ("read-only tmpfs", Some(m)),
            Err(e) => return Outcome::skip(name, "4xx for an unwritable Maildir", e),
        }
    } else {
        if let Err(e) = std::fs::create_dir_all(&maildir).and_then(|()| set_mode(&maildir, 0o500)) {
            return Outcome::broken(name, "4xx for an unwritable Maildir", e);
        }
        ("mode 0500", None)
    };
    let expectation = format!(
        "Maildir root on a {how}: 451 4.3.0 (4xx), session usable (NOOP 250), log names the path"
    );
    let mut server = match ctx.server("unwritable", |_| {}) {
        Ok(s) => s,
        Err(e) => return Outcome::broken(name, expectation, e),
    };
    let letter = Letter::new("unwritable", 2000, "unwritable");
    let result = async {
        let (mut client, _) = Client::greeted(server.addr).await?;
        client.command("EHLO client.test").await?;
        let reply = super::send_letter(&mut client, &["u@ro.test".to_owned()], &letter).await?;
        let noop = client.command("NOOP").await?;
        Ok::<_, super::client::Failure>((reply, noop))
    }
    .await;
    // A graceful stop flushes the log writer.
    server.stop();
    let names_path = server
        .log()
        .lines()
        .any(|l| l.contains("failed") && l.contains(&*maildir.to_string_lossy()));
    if !is_root() {
        let _ = set_mode(&maildir, 0o700);
    }
    match result {
        Ok((reply, noop)) => Outcome::check(
            name,
            expectation,
            format!(
                "{}; NOOP: {}; log names the path: {names_path}",
                reply.last_line(),
                noop.last_line()
            ),
            (400..500).contains(&reply.code) && noop.code == 250 && names_path,
        ),
        Err(e) => Outcome::check(name, expectation, e.to_string(), false),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// How many of `acked` are whole in `new/`, and how many files in `new/` are not a whole
/// message of ours.
pub(crate) fn check_new(maildir: &Path, acked: &[&Letter]) -> (usize, usize) {
    let mut whole = 0;
    let mut partial = 0;
    let wanted: std::collections::HashMap<&str, &Letter> =
        acked.iter().map(|l| (l.token.as_str(), *l)).collect();
    let mut found = std::collections::HashSet::new();
    for file in mail::files(maildir, "new") {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let Some(token) = mail::token_of(&bytes) else {
            partial += 1;
            continue;
        };
        match wanted.get(token.as_str()) {
            Some(letter) if letter.is_whole_in(&bytes) => {
                found.insert(token);
            }
            Some(_) => partial += 1,
            // Stored but not acknowledged (the reply was lost or refused): fine if whole.
            None if bytes.ends_with(format!("END {token}\r\n").as_bytes()) => {}
            None => partial += 1,
        }
    }
    whole += found.len();
    (whole, partial)
}

fn dedup(items: &[String]) -> String {
    let mut v: Vec<&str> = items.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v.join("; ")
}
