//! Transcript tests: `tests/transcripts/*.smtp` drive a [`Server`] with no sockets and a fake
//! clock, and compare every reply byte.
//!
//! Format, one directive per line:
//! - `# ...` comment; `! key[=value]` config (see [`options`]);
//! - `C: text` client line (CRLF added); `C< raw` client bytes with escapes, no CRLF added;
//! - `S: text` / `S< raw` expected server output;
//! - `A: accept` or `A: <code> [x.y.z] text`: the application's answer to the decision the
//!   previous `C:` line causes (several `A:` lines answer several decisions, as in LMTP);
//!   `A:` lines before any `C:` answer the connection. Unanswered decisions are accepted.
//! - `D: text` / `D< raw`: expected message content as the application received it;
//! - `T: +Ns`: advance the clock, then `handle_timeout`; `E: tls`: the TLS handshake completes;
//!   `E: eof`: the client closes; `E: shutdown`: graceful shutdown; `E: wait`: the client
//!   waits for the replies. Each of these ends a segment (one burst of client input).
//! - `X: reason`: the expected close reason at the end (`open` if still open).
//!
//! Every transcript runs with its input whole, one byte at a time, split in two at every
//! position, and at random chunkings; the output must be identical (unless `! nosplit`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use smtpkit_proto::data::BareLineEnding;
use smtpkit_proto::server::Protocol;
use smtpkit_proto::{EnhancedCode, Event, Reply, ReplyCode, Server, ServerConfig, ServerOptions};

type Decision = Option<(u16, Option<(u8, u16, u16)>, String)>;

/// A client line: its byte range in the segment and the answers to the decisions it causes.
#[derive(Debug, Clone)]
struct Line {
    start: usize,
    end: usize,
    answers: Vec<Decision>,
}

#[derive(Debug, Clone)]
enum Seg {
    Input(Vec<u8>, Vec<Line>),
    Time(Duration),
    Tls,
    Eof,
    Shutdown,
    /// The client waits for the replies before sending more.
    Wait,
}

#[derive(Debug, Clone)]
struct Transcript {
    name: String,
    options: ServerOptions,
    split: bool,
    /// `! front_end=xclient xforward`: the client may send these.
    front_end: (bool, bool),
    segments: Vec<Seg>,
    connect_answers: Vec<Decision>,
    expected_out: Vec<u8>,
    expected_body: Option<Vec<u8>>,
    expected_close: Option<String>,
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Applies a `! key=value` directive.
fn options(o: &mut ServerOptions, split: &mut bool, key: &str, value: &str) {
    let secs = |v: &str| Duration::from_secs(v.trim_end_matches('s').parse().unwrap());
    match key {
        "hostname" => o.hostname = value.into(),
        "enhanced" => o.extensions.enhanced_status_codes = value == "on",
        "lmtp" => o.protocol = Protocol::Lmtp,
        "bare_lf" => {
            o.bare_line_ending = if value == "reject" {
                BareLineEnding::Reject
            } else {
                BareLineEnding::Normalize
            }
        }
        "sync_check" => o.pipelining_sync_check = true,
        "starttls" => o.extensions.starttls = true,
        "auth" => o.extensions.auth_mechanisms = value.split(' ').map(str::to_owned).collect(),
        "insecure_auth" => o.allow_insecure_auth = true,
        "require_auth" => o.require_auth = true,
        "require_tls" => o.require_tls = true,
        "dsn" => o.extensions.dsn = true,
        "chunking" => {
            o.extensions.chunking = value == "on";
            o.extensions.binary_mime = value == "on";
        }
        "pipelining" => o.extensions.pipelining = value == "on",
        "recipients" => o.limits.recipients = value.parse().unwrap(),
        "overshoot" => o.limits.recipient_overshoot = value.parse().unwrap(),
        "message_size" => o.limits.message_size = value.parse().unwrap(),
        "errors" => o.limits.errors = value.parse().unwrap(),
        "junk" => o.limits.junk_commands = value.parse().unwrap(),
        "auth_failures" => o.limits.auth_failures = value.parse().unwrap(),
        "messages" => o.limits.messages_per_session = value.parse().unwrap(),
        "output_buffer" => o.limits.output_buffer = value.parse().unwrap(),
        "command_timeout" => o.timeouts.command = secs(value),
        "data_timeout" => o.timeouts.data_block = secs(value),
        "greeting_delay" => o.timeouts.greeting_delay = Some(secs(value)),
        "mail_param" => o.extra_mail_params.push(value.into()),
        "disable" => o.disabled_commands.push(value.into()),
        "hide" => o.extensions.hide(value).unwrap(),
        "nosplit" => *split = false,
        other => panic!("unknown option {other}"),
    }
}

fn parse(name: &str, text: &str) -> Transcript {
    let mut options_ = ServerOptions {
        hostname: "mx.example".into(),
        banner: "ESMTP".into(),
        ..Default::default()
    };
    let mut split = true;
    let mut front_end = (false, false);
    let mut segments = vec![Seg::Input(Vec::new(), Vec::new())];
    let mut connect_answers = Vec::new();
    let mut last_line: Option<(usize, usize)> = None;
    let mut expected_out = Vec::new();
    let mut expected_body: Option<Vec<u8>> = None;
    let mut expected_close = None;
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (tag, rest) = line.split_at(2.min(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let mut push_input = |segments: &mut Vec<Seg>, bytes: &[u8]| {
            if !matches!(segments.last(), Some(Seg::Input(..))) {
                segments.push(Seg::Input(Vec::new(), Vec::new()));
            }
            let seg = segments.len() - 1;
            let Some(Seg::Input(v, lines)) = segments.last_mut() else {
                unreachable!()
            };
            lines.push(Line {
                start: v.len(),
                end: v.len() + bytes.len(),
                answers: Vec::new(),
            });
            v.extend_from_slice(bytes);
            last_line = Some((seg, lines.len() - 1));
        };
        match tag {
            "! " | "!" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                if k.trim() == "front_end" {
                    front_end = (v.contains("xclient"), v.contains("xforward"));
                } else {
                    options(&mut options_, &mut split, k.trim(), v.trim());
                }
            }
            "C:" => push_input(&mut segments, &[rest.as_bytes(), b"\r\n"].concat()),
            "C<" => push_input(&mut segments, &unescape(rest)),
            "S:" => {
                expected_out.extend_from_slice(rest.as_bytes());
                expected_out.extend_from_slice(b"\r\n");
            }
            "S<" => expected_out.extend_from_slice(&unescape(rest)),
            "D:" => {
                let b = expected_body.get_or_insert_with(Vec::new);
                b.extend_from_slice(rest.as_bytes());
                b.extend_from_slice(b"\r\n");
            }
            "D<" => expected_body
                .get_or_insert_with(Vec::new)
                .extend_from_slice(&unescape(rest)),
            "A:" => {
                let answer = if rest == "accept" {
                    None
                } else {
                    let code: u16 = rest[..3].parse().unwrap();
                    let text = rest[3..].trim_start();
                    let (enh, text) = match text.split_once(' ') {
                        Some((e, t))
                            if e.split('.').count() == 3
                                && e.chars().all(|c| c.is_ascii_digit() || c == '.') =>
                        {
                            let p: Vec<u16> = e.split('.').map(|x| x.parse().unwrap()).collect();
                            (Some((p[0] as u8, p[1], p[2])), t)
                        }
                        _ => (None, text),
                    };
                    Some((code, enh, text.to_owned()))
                };
                match last_line {
                    None => connect_answers.push(answer),
                    Some((seg, line)) => {
                        let Seg::Input(_, lines) = &mut segments[seg] else {
                            unreachable!()
                        };
                        lines[line].answers.push(answer);
                    }
                }
            }
            "T:" => {
                let secs: u64 = rest
                    .trim_start_matches('+')
                    .trim_end_matches('s')
                    .parse()
                    .unwrap();
                segments.push(Seg::Time(Duration::from_secs(secs)));
            }
            "E:" => segments.push(match rest {
                "tls" => Seg::Tls,
                "eof" => Seg::Eof,
                "shutdown" => Seg::Shutdown,
                "wait" => Seg::Wait,
                other => panic!("{name}:{}: unknown event {other}", n + 1),
            }),
            "X:" => expected_close = Some(rest.to_owned()),
            _ => panic!("{name}:{}: unknown directive {line:?}", n + 1),
        }
    }
    Transcript {
        front_end,
        name: name.into(),
        options: options_,
        split,
        segments,
        connect_answers,
        expected_out,
        expected_body,
        expected_close,
    }
}

/// What running a transcript produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    body: Vec<u8>,
    close: String,
}

fn answer(server: &mut Server, now: Instant, decision: Decision) {
    match decision {
        None => server.accept(now).expect("accept"),
        Some((code, enh, text)) => {
            let mut reply = Reply::new(ReplyCode::new(code).unwrap(), text).unwrap();
            if let Some((c, s, d)) = enh {
                reply = reply.with_enhanced(EnhancedCode::new(c, s, d).unwrap());
            }
            server
                .reply(now, &reply)
                .expect("valid reply for the state");
        }
    }
}

/// Feeds `buf` (which starts at offset `base` of the segment) until the server stops, answering
/// each decision with the answers of the line that caused it.
#[allow(clippy::too_many_arguments)] // The runner's whole state, passed explicitly.
fn drive(
    server: &mut Server,
    now: Instant,
    buf: &mut Vec<u8>,
    base: &mut usize,
    lines: &mut [Line],
    connect: &mut Vec<Decision>,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) {
    // Bounded: every call consumes input, answers a decision, or stops.
    for _ in 0..100_000 {
        let progress = server.handle_input(now, buf);
        let consumed = progress.consumed;
        let Some(event) = progress.event else {
            buf.drain(..consumed);
            *base += consumed;
            out.extend_from_slice(server.poll_transmit());
            server.advance_transmit(server.poll_transmit().len());
            if consumed == 0 {
                return;
            }
            continue;
        };
        if let Event::DataChunk(c) = event {
            body.extend_from_slice(c);
        }
        if server.awaiting_decision() {
            let end = *base + consumed;
            let queue = match lines.iter_mut().find(|l| l.start < end && end <= l.end) {
                Some(line) if !matches!(event, Event::Connect) => &mut line.answers,
                _ => &mut *connect,
            };
            // LMTP leaves the end of data pending until every recipient is answered.
            while server.awaiting_decision() {
                let decision = if queue.is_empty() {
                    None
                } else {
                    queue.remove(0)
                };
                answer(server, now, decision);
            }
        }
        buf.drain(..consumed);
        *base += consumed;
        out.extend_from_slice(server.poll_transmit());
        server.advance_transmit(server.poll_transmit().len());
    }
    panic!("no progress");
}

fn run(t: &Transcript, chunks: &dyn Fn(usize) -> Vec<usize>) -> Outcome {
    let config = Arc::new(ServerConfig::new(t.options.clone()).expect("valid config"));
    let mut now = Instant::now();
    let mut server = Server::new(config, now);
    server.allow_front_end(t.front_end.0, t.front_end.1);
    let mut connect = t.connect_answers.clone();
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut base = 0;
    drive(
        &mut server,
        now,
        &mut buf,
        &mut base,
        &mut [],
        &mut connect,
        &mut out,
        &mut body,
    );
    for seg in &t.segments {
        match seg {
            Seg::Input(bytes, lines) => {
                let mut lines = lines.clone();
                buf.clear();
                base = 0;
                let mut last = 0;
                let mut cuts = chunks(bytes.len());
                cuts.push(bytes.len());
                for cut in cuts {
                    let cut = cut.clamp(last, bytes.len());
                    buf.extend_from_slice(&bytes[last..cut]);
                    last = cut;
                    drive(
                        &mut server,
                        now,
                        &mut buf,
                        &mut base,
                        &mut lines,
                        &mut connect,
                        &mut out,
                        &mut body,
                    );
                }
                continue;
            }
            Seg::Time(d) => {
                now += *d;
                server.handle_timeout(now);
            }
            Seg::Tls => server.handle_tls_established(now),
            Seg::Eof => server.handle_eof(now),
            Seg::Shutdown => server.handle_shutdown(now),
            Seg::Wait => {}
        }
        drive(
            &mut server,
            now,
            &mut buf,
            &mut base,
            &mut [],
            &mut connect,
            &mut out,
            &mut body,
        );
    }
    let close = server
        .close_reason()
        .map_or("open".to_owned(), |r| r.to_string());
    Outcome { out, body, close }
}

fn escaped(b: &[u8]) -> String {
    let mut s = String::new();
    for line in b.split_inclusive(|&c| c == b'\n') {
        let _ = writeln!(s, "    {}", line.escape_ascii());
    }
    s
}

fn check(t: &Transcript, got: &Outcome, how: &str) {
    if got.out != t.expected_out {
        panic!(
            "{} ({how}): output differs\n--- expected\n{}--- got\n{}",
            t.name,
            escaped(&t.expected_out),
            escaped(&got.out)
        );
    }
    if let Some(body) = &t.expected_body {
        assert_eq!(
            got.body.escape_ascii().to_string(),
            body.escape_ascii().to_string(),
            "{} ({how}): body",
            t.name
        );
    }
    if let Some(close) = &t.expected_close {
        assert_eq!(&got.close, close, "{} ({how}): close reason", t.name);
    }
}

fn transcripts() -> Vec<Transcript> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let all: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "smtp"))
        .map(|p| {
            parse(
                &p.file_name().unwrap().to_string_lossy(),
                &std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    assert!(
        all.len() >= 20,
        "transcripts missing from {}",
        dir.display()
    );
    all
}

#[test]
fn whole_input() {
    for t in transcripts() {
        check(&t, &run(&t, &|_| Vec::new()), "whole");
    }
}

#[test]
fn one_byte_at_a_time() {
    for t in transcripts().iter().filter(|t| t.split) {
        check(t, &run(t, &|len| (1..len).collect()), "1-byte chunks");
    }
}

#[test]
fn split_at_every_position() {
    for t in transcripts().iter().filter(|t| t.split) {
        let longest = t
            .segments
            .iter()
            .map(|s| if let Seg::Input(b, _) = s { b.len() } else { 0 })
            .max()
            .unwrap_or(0);
        for k in 1..longest {
            check(t, &run(t, &|_| vec![k]), &format!("split at {k}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_chunkings(cuts in proptest::collection::vec(0usize..400, 0..24)) {
        for t in transcripts().iter().filter(|t| t.split) {
            let mut cuts = cuts.clone();
            cuts.sort_unstable();
            let got = run(t, &|_| cuts.clone());
            check(t, &got, &format!("cuts {cuts:?}"));
        }
    }
}
