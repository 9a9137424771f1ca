//! Log and header injection (issue 15 finding 5): ESC/BEL bytes, a C1 control (U+0085) and
//! fake `key=value` fields in the EHLO argument and the Subject. The text log must not carry
//! the control bytes raw nor let the Subject forge a field, and `Received:` must carry only a
//! sanitized HELO.

use super::client::{Client, Failure, Reply};
use super::mail::{self, Letter};
use super::{Ctx, Outcome, send_letter};

/// EHLO arguments from most to least hostile; the first one the server accepts is the one its
/// `Received:` header and log lines are checked for.
const EHLOS: &[&str] = &[
    "evil\u{1b}[2J\u{7}.test outcome=stored",
    "evil\u{1b}[31m\u{7}.test",
    "evil\u{85}.test",
    "évil.test",
    "client.test",
];

/// The Subject: clears a terminal, rings its bell, and imitates a log line's fields.
const SUBJECT: &str =
    "\u{1b}[2J\u{1b}[31mFAKE\u{7} INFO smtpd::receiver: message outcome=\"stored\" id=forged";

pub(crate) async fn run(ctx: &Ctx<'_>) -> Vec<Outcome> {
    let mut server = match ctx.server("injection", |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![Outcome::broken("log injection", "server starts", e)],
    };
    let maildir = ctx.dir("injection").join("maildir");
    let letter = Letter::new("inject", 800, SUBJECT);
    let result = async {
        let (mut client, _) = Client::greeted(server.addr).await?;
        let mut used = None;
        for ehlo in EHLOS {
            if client.command(&format!("EHLO {ehlo}")).await?.code == 250 {
                used = Some(*ehlo);
                break;
            }
        }
        let reply = send_letter(&mut client, &["victim@inject.test".to_owned()], &letter).await?;
        let _ = client.command("QUIT").await;
        Ok::<(Option<&str>, Reply), Failure>((used, reply))
    }
    .await;
    let (ehlo, reply) = match result {
        Ok(r) => r,
        Err(e) => return vec![Outcome::broken("log injection", "a session completes", e)],
    };
    // A graceful stop flushes the log writer.
    server.stop();
    let log = std::fs::read(ctx.dir("injection").join("smtpd.log")).unwrap_or_default();
    let ehlo_text = ehlo.map_or_else(|| "none accepted".to_owned(), |e| format!("{e:?}"));

    // The log: no raw control bytes anywhere, and the message line has one real `outcome=` and
    // no forged `id=`.
    let controls = control_bytes(&log);
    let text = String::from_utf8_lossy(&log);
    let line = text
        .lines()
        .find(|l| l.contains("FAKE") || l.contains("forged"));
    let forged = line.map(|l| {
        let fields = fields(l);
        let outcomes = fields.iter().filter(|f| f.starts_with("outcome=")).count();
        let fake_id = fields.contains(&"id=forged");
        outcomes != 1 || fake_id
    });
    let log_row = Outcome::check(
        "log injection",
        "ESC/BEL/U+0085 and fake key=value in Subject and EHLO: text log has no raw control bytes, one real outcome= field, no forged id=",
        format!(
            "EHLO accepted: {ehlo_text}; message: {}; {controls} raw control bytes in the log; fields forged: {}",
            reply.last_line(),
            forged.map_or("message line not found".to_owned(), |f| f.to_string())
        ),
        reply.code == 250 && controls == 0 && forged == Some(false),
    );

    // The stored message's Received: header.
    let stored = mail::new_files(&maildir, "inject.test", "victim");
    let received = stored
        .first()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| received_header(&b));
    let header_row = match received {
        Some(h) => {
            let bad = h
                .iter()
                .filter(|&&b| {
                    !(b == b'\t' || b == b'\r' || b == b'\n' || (0x20..0x7f).contains(&b))
                })
                .count();
            Outcome::check(
                "header injection",
                "Received: carries a sanitized HELO: printable ASCII only (no ESC/BEL, no U+0085, no 8-bit without SMTPUTF8)",
                format!(
                    "EHLO accepted: {ehlo_text}; {bad} bad bytes in {:?}",
                    String::from_utf8_lossy(&h).replace("\r\n", " ")
                ),
                bad == 0,
            )
        }
        None => Outcome::check(
            "header injection",
            "Received: carries a sanitized HELO",
            "message not stored",
            false,
        ),
    };
    vec![log_row, header_row]
}

/// C0 controls other than TAB/LF/CR, DEL, and C1 controls encoded in UTF-8 (`C2 80`..`C2 9F`).
fn control_bytes(log: &[u8]) -> usize {
    let c0 = log
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
        .count();
    let c1 = log
        .windows(2)
        .filter(|w| w[0] == 0xc2 && (0x80..0xa0).contains(&w[1]))
        .count();
    c0 + c1
}

/// Splits a text log line into space-separated words, keeping double-quoted parts (with
/// backslash escapes) whole: how a log parser would find its `key=value` fields.
fn fields(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if let Some(s) = start.take() {
                    out.push(&line[s..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

/// The `Received:` header with its continuation lines, from a stored message.
fn received_header(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" {
            break;
        }
        if line.starts_with(b"Received:") {
            inside = true;
        } else if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            if inside {
                break;
            }
            continue;
        }
        if inside {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_quoted_values_whole() {
        assert_eq!(
            fields(r#"INFO m: message subject="a outcome=\"x\" b" outcome="stored""#),
            [
                "INFO",
                "m:",
                "message",
                r#"subject="a outcome=\"x\" b""#,
                r#"outcome="stored""#
            ]
        );
        assert_eq!(fields("a  b"), ["a", "b"]);
    }

    #[test]
    fn counts_control_bytes() {
        assert_eq!(control_bytes(b"ok\tline\r\n"), 0);
        assert_eq!(control_bytes(b"\x1b[2J\x07"), 2);
        assert_eq!(control_bytes("x\u{85}y".as_bytes()), 1);
        assert_eq!(control_bytes("é".as_bytes()), 0);
    }

    #[test]
    fn finds_received_with_continuations() {
        let m = b"Return-Path: <a@b>\r\nReceived: from x\r\n\tby y\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(received_header(m), b"Received: from x\r\n\tby y\r\n");
    }
}
