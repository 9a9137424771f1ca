//! Client transcript tests: `tests/client_transcripts/*.smtp` drive a [`Client`] with no
//! sockets and a fake clock, and compare every command byte and every event.
//!
//! Format, one directive per line:
//! - `# ...` comment; `! key[=value]` config (see [`options`]);
//! - `S: text` server line (CRLF added); `S< raw` server bytes with escapes;
//! - `C: text` / `C< raw`: expected client output;
//! - `E: event`: the next expected event, as [`render`] writes it (`error ...` for an action
//!   the client refused);
//! - `>: action`: what the application does once the server bytes before it are handled:
//!   `mail <from> <to>... [size=N] [body=8bitmime|binarymime] [smtputf8] [requiretls]
//!   [ret=full|hdrs] [envid=X] [notify=success,failure] [orcpt=rfc822;X]`, `data <raw>`,
//!   `end`, `starttls`, `tls`, `tls-failed`, `auth plain|login|xoauth2 <user> <secret>`,
//!   `noop`, `quit`, `eof`;
//! - `T: +Ns`: advance the clock, then `handle_timeout`;
//! - `X: reason`: the expected close reason at the end (`open` if still open).
//!
//! Every transcript runs with the server's bytes whole, one byte at a time, split in two at
//! every position, and at random chunkings; output and events must be identical.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use smtpkit_proto::Reply;
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{
    Client, ClientConfig, ClientOptions, Envelope, Event, Recipient, Sasl,
};
use smtpkit_proto::extension::{BodyType, Notify, Ret, XText};
use smtpkit_proto::server::Protocol;

#[derive(Debug, Clone)]
enum Seg {
    Input(Vec<u8>),
    Action(String),
    Time(Duration),
}

#[derive(Debug, Clone)]
struct Transcript {
    name: String,
    options: ClientOptions,
    segments: Vec<Seg>,
    expected_out: Vec<u8>,
    expected_events: Vec<String>,
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
fn options(o: &mut ClientOptions, key: &str, value: &str) {
    match key {
        "hostname" => o.hostname = value.into(),
        "lmtp" => o.protocol = Protocol::Lmtp,
        "pipelining" => o.pipelining = value == "on",
        "chunking" => o.chunking = value == "on",
        "insecure_auth" => o.allow_insecure_auth = true,
        other => panic!("unknown option {other}"),
    }
}

fn parse(name: &str, text: &str) -> Transcript {
    let mut options_ = ClientOptions {
        hostname: "client.example".into(),
        ..Default::default()
    };
    let mut segments = Vec::new();
    let mut expected_out = Vec::new();
    let mut expected_events = Vec::new();
    let mut expected_close = None;
    let input = |segments: &mut Vec<Seg>, bytes: &[u8]| {
        if let Some(Seg::Input(v)) = segments.last_mut() {
            v.extend_from_slice(bytes);
        } else {
            segments.push(Seg::Input(bytes.to_vec()));
        }
    };
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (tag, rest) = line.split_at(2.min(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match tag {
            "! " | "!" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                options(&mut options_, k.trim(), v.trim());
            }
            "S:" => input(&mut segments, &[rest.as_bytes(), b"\r\n"].concat()),
            "S<" => input(&mut segments, &unescape(rest)),
            "C:" => {
                expected_out.extend_from_slice(rest.as_bytes());
                expected_out.extend_from_slice(b"\r\n");
            }
            "C<" => expected_out.extend_from_slice(&unescape(rest)),
            "E:" => expected_events.push(rest.to_owned()),
            ">:" => segments.push(Seg::Action(rest.to_owned())),
            "T:" => {
                let secs: u64 = rest
                    .trim_start_matches('+')
                    .trim_end_matches('s')
                    .parse()
                    .unwrap();
                segments.push(Seg::Time(Duration::from_secs(secs)));
            }
            "X:" => expected_close = Some(rest.to_owned()),
            _ => panic!("{name}:{}: unknown directive {line:?}", n + 1),
        }
    }
    Transcript {
        name: name.into(),
        options: options_,
        segments,
        expected_out,
        expected_events,
        expected_close,
    }
}

fn code(r: &Reply<'_>) -> String {
    match r.enhanced() {
        Some(e) => format!("{} {e}", r.code()),
        None => r.code().to_string(),
    }
}

/// One line per event, as `E:` lines spell them.
fn render(event: &Event<'_>) -> String {
    match event {
        Event::Greeting(r) => format!("greeting {}", code(r)),
        Event::Ready => "ready".into(),
        Event::HelloRefused(r) => format!("hello-refused {}", code(r)),
        Event::StartTlsResult(r) => format!("starttls {}", code(r)),
        Event::AuthResult(r) => format!("auth {}", code(r)),
        Event::SenderResult(r) => format!("mail {}", code(r)),
        Event::RecipientResult { index, reply } => format!("rcpt {index} {}", code(reply)),
        Event::ReadyForData => "ready-for-data".into(),
        Event::MessageResult { recipient, reply } => match recipient {
            Some(i) => format!("message {i} {}", code(reply)),
            None => format!("message - {}", code(reply)),
        },
        Event::MessageAborted { reply } => match reply {
            Some(r) => format!("aborted {}", code(r)),
            None => "aborted -".into(),
        },
        Event::NoopResult(r) => format!("noop {}", code(r)),
        Event::Unsolicited(r) => format!("unsolicited {}", code(r)),
        Event::Malformed(e) => format!("malformed {e:?}"),
        other => format!("{other:?}"),
    }
}

fn mailbox(s: &str) -> Mailbox<'_> {
    Mailbox::parse(s.trim_start_matches('<').trim_end_matches('>')).unwrap()
}

/// Applies one `>:` action.
fn act(client: &mut Client, now: Instant, action: &str, events: &mut Vec<String>) {
    let (verb, args) = action.split_once(' ').unwrap_or((action, ""));
    let result = match verb {
        "mail" => {
            let words: Vec<&str> = args.split(' ').collect();
            let paths: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| w.starts_with('<'))
                .collect();
            let from = match paths[0] {
                "<>" => ReversePath::Null,
                p => ReversePath::Mailbox(mailbox(p)),
            };
            let mut notify = None;
            let mut orcpt = None;
            for w in &words {
                if let Some(v) = w.strip_prefix("notify=") {
                    notify = Some(Notify {
                        success: v.contains("success"),
                        failure: v.contains("failure"),
                        delay: v.contains("delay"),
                    });
                }
                if let Some(v) = w.strip_prefix("orcpt=") {
                    let (t, a) = v.split_once(';').unwrap();
                    orcpt = Some((t, XText::parse(a).unwrap()));
                }
            }
            let to: Vec<Recipient<'_>> = paths[1..]
                .iter()
                .map(|p| Recipient {
                    forward_path: if p.eq_ignore_ascii_case("<postmaster>") {
                        ForwardPath::Postmaster
                    } else {
                        ForwardPath::Mailbox(mailbox(p))
                    },
                    notify,
                    orcpt,
                })
                .collect();
            let mut envelope = Envelope::new(from, &to);
            for w in &words {
                match w.split_once('=').unwrap_or((w, "")) {
                    ("size", n) => envelope.size = Some(n.parse().unwrap()),
                    ("body", "8bitmime") => envelope.body = BodyType::EightBitMime,
                    ("body", "binarymime") => envelope.body = BodyType::BinaryMime,
                    ("smtputf8", _) => envelope.smtputf8 = true,
                    ("requiretls", _) => envelope.requiretls = true,
                    ("ret", "full") => envelope.ret = Some(Ret::Full),
                    ("ret", "hdrs") => envelope.ret = Some(Ret::Hdrs),
                    ("envid", v) => envelope.envid = Some(XText::parse(v).unwrap()),
                    _ => {}
                }
            }
            client.send_mail(now, &envelope)
        }
        "data" => client.send_data(now, &unescape(args)),
        "end" => client.finish_data(now),
        "starttls" => client.starttls(now),
        "tls" => {
            client.handle_tls_established(now);
            Ok(())
        }
        "tls-failed" => {
            client.handle_tls_failed(now);
            Ok(())
        }
        "auth" => {
            let w: Vec<&str> = args.split(' ').collect();
            let sasl = match w[0] {
                "plain" => Sasl::Plain {
                    user: w[1],
                    password: w[2],
                },
                "login" => Sasl::Login {
                    user: w[1],
                    password: w[2],
                },
                "xoauth2" => Sasl::XOAuth2 {
                    user: w[1],
                    token: w[2],
                },
                other => panic!("unknown mechanism {other}"),
            };
            client.auth(now, &sasl)
        }
        "noop" => client.noop(now),
        "quit" => client.quit(now),
        "eof" => {
            client.handle_eof(now);
            Ok(())
        }
        other => panic!("unknown action {other}"),
    };
    if let Err(e) = result {
        events.push(format!("error {e:?}"));
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    events: Vec<String>,
    close: String,
}

/// Feeds `buf` until the client stops, recording events and output.
fn drive(
    client: &mut Client,
    now: Instant,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    events: &mut Vec<String>,
) {
    // Bounded: every call consumes a reply or stops.
    for _ in 0..100_000 {
        let progress = client.handle_input(now, buf);
        if let Some(event) = &progress.event {
            events.push(render(event));
        }
        let more = progress.event.is_some();
        buf.drain(..progress.consumed);
        out.extend_from_slice(client.poll_transmit());
        client.advance_transmit(client.poll_transmit().len());
        if !more {
            return;
        }
    }
    panic!("no progress");
}

fn run(t: &Transcript, chunks: &dyn Fn(usize) -> Vec<usize>) -> Outcome {
    let config = Arc::new(ClientConfig::new(t.options.clone()).expect("valid config"));
    let mut now = Instant::now();
    let mut client = Client::new(config, now);
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut buf = Vec::new();
    for seg in &t.segments {
        match seg {
            Seg::Input(bytes) => {
                let mut last = 0;
                let mut cuts = chunks(bytes.len());
                cuts.push(bytes.len());
                for cut in cuts {
                    let cut = cut.clamp(last, bytes.len());
                    buf.extend_from_slice(&bytes[last..cut]);
                    last = cut;
                    drive(&mut client, now, &mut buf, &mut out, &mut events);
                }
            }
            Seg::Action(a) => {
                act(&mut client, now, a, &mut events);
                drive(&mut client, now, &mut buf, &mut out, &mut events);
            }
            Seg::Time(d) => {
                now += *d;
                client.handle_timeout(now);
                drive(&mut client, now, &mut buf, &mut out, &mut events);
            }
        }
    }
    let close = client
        .close_reason()
        .map_or("open".to_owned(), |r| r.to_string());
    Outcome { out, events, close }
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
    assert_eq!(got.events, t.expected_events, "{} ({how}): events", t.name);
    if let Some(close) = &t.expected_close {
        assert_eq!(&got.close, close, "{} ({how}): close reason", t.name);
    }
}

fn transcripts() -> Vec<Transcript> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client_transcripts");
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
        all.len() >= 12,
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
    for t in transcripts() {
        check(&t, &run(&t, &|len| (1..len).collect()), "1-byte chunks");
    }
}

#[test]
fn split_at_every_position() {
    for t in transcripts() {
        let longest = t
            .segments
            .iter()
            .map(|s| if let Seg::Input(b) = s { b.len() } else { 0 })
            .max()
            .unwrap_or(0);
        for k in 1..longest {
            check(&t, &run(&t, &|_| vec![k]), &format!("split at {k}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_chunkings(cuts in proptest::collection::vec(0usize..400, 0..24)) {
        for t in transcripts() {
            let mut cuts = cuts.clone();
            cuts.sort_unstable();
            let got = run(&t, &|_| cuts.clone());
            check(&t, &got, &format!("cuts {cuts:?}"));
        }
    }
}
