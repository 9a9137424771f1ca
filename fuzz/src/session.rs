//! The `session` target: a whole [`Server`] session driven by fuzz input.
//!
//! # Input layout
//!
//! Missing bytes read as zero, so every input is valid.
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | bit 0 LMTP, 1 bare line endings rejected, 2 enhanced status codes, 3 STARTTLS offered, 4 AUTH PLAIN LOGIN offered, 5 insecure AUTH allowed, 6 AUTH required, 7 TLS required |
//! | 1 | bit 0 CHUNKING off, 1 BINARYMIME off, 2 PIPELINING off, 3 SMTPUTF8 off, 4 8BITMIME off, 5 DSN on, 6 REQUIRETLS on, 7 command line limit 1000 |
//! | 2 | message size limit `1 << (b % 24)` |
//! | 3 | recipients `b & 7`, errors `1 + (b >> 3)` |
//! | 4 | junk commands `b & 15`, AUTH failures `1 + (b >> 4 & 3)`, bytes per session (bits 6-7: none, 0, 100, 10000) |
//! | 5 | messages per session `1 + (b & 7)`; bit 3 `XFOO` MAIL parameter, 4 `XBAR` RCPT parameter; at the end of input: bit 5 graceful shutdown, 6 a timeout, 7 abort |
//! | 6 | output buffer cap `1 + 8 * b` |
//! | 7 | graceful shutdown after this many decisions (0: never) |
//! | 8 | number of application answers (`& 31`), then one byte each (see [`Answer`]) |
//! | next | number of cuts (`& 31`), then two bytes (little endian) each: positions in the client input |
//! | rest | client input |

use std::sync::Arc;
use std::time::{Duration, Instant};

use smtpkit_proto::data::BareLineEnding;
use smtpkit_proto::reply::MAX_REPLY_LINE;
use smtpkit_proto::server::Protocol;
use smtpkit_proto::{
    EnhancedCode, Event, Reply, ReplyCode, Server, ServerConfig, ServerOptions, UsageError,
};

use crate::Bytes;

/// `session`: a whole session, fed in fuzzer-chosen pieces, then in one piece.
///
/// Asserts: no panic; the session makes progress (a bounded loop always ends with the session
/// closed); `consumed` never exceeds the input; every output byte is part of a well-formed
/// reply with lines of at most 512 octets; pending output never exceeds the configured cap by
/// more than one burst of replies; refused decisions change nothing; and the output, the
/// events and the message content are the same when the input arrives in one piece.
pub fn session(data: &[u8]) {
    let mut input = Bytes::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    let client = input.rest();
    let now = Instant::now();
    let split = run(&setup, client, &setup.cuts, now);
    let whole = run(&setup, client, &[], now);
    // Replaying by hand (not under libFuzzer): SMTP_FUZZ_TRACE=1 shows what happened.
    #[cfg(not(fuzzing))]
    if std::env::var_os("SMTP_FUZZ_TRACE").is_some() {
        eprintln!(
            "{:#?}\n{}",
            split.log,
            String::from_utf8_lossy(&split.output)
        );
    }
    check_transcript(&split.output);
    assert_eq!(
        split.log, whole.log,
        "events differ when the input is split at {:?}",
        setup.cuts
    );
    assert_eq!(
        split.output,
        whole.output,
        "output differs when the input is split at {:?}:\n{}\n---\n{}",
        setup.cuts,
        String::from_utf8_lossy(&split.output),
        String::from_utf8_lossy(&whole.output)
    );
}

/// What the fuzz header chose.
#[derive(Debug)]
struct Setup {
    config: Arc<ServerConfig>,
    answers: Vec<Answer>,
    cuts: Vec<usize>,
    shutdown_after: u32,
    at_end: u8,
    /// Most output one step may add on top of the cap: see [`burst`].
    burst: usize,
}

impl Setup {
    fn read(input: &mut Bytes<'_>) -> Option<Self> {
        let [a, b, size, counts, junk, session, cap, shutdown_after] =
            core::array::from_fn(|_| input.u8());
        let bit = |byte: u8, n: u8| byte & (1 << n) != 0;
        let mut o = ServerOptions {
            hostname: "mx.fuzz.example".into(),
            ..ServerOptions::default()
        };
        if bit(a, 0) {
            o.protocol = Protocol::Lmtp;
        }
        if bit(a, 1) {
            o.bare_line_ending = BareLineEnding::Reject;
        }
        let e = &mut o.extensions;
        e.enhanced_status_codes = bit(a, 2);
        e.starttls = bit(a, 3);
        if bit(a, 4) {
            e.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
        }
        e.chunking = !bit(b, 0);
        e.binary_mime = e.chunking && !bit(b, 1);
        e.pipelining = !bit(b, 2);
        e.smtputf8 = !bit(b, 3);
        e.eight_bit_mime = !bit(b, 4);
        e.dsn = bit(b, 5);
        e.requiretls = bit(b, 6);
        o.allow_insecure_auth = bit(a, 5);
        o.require_auth = bit(a, 6);
        o.require_tls = bit(a, 7);
        // Replies must not depend on how the input was split, which this check breaks on
        // purpose: it looks at whether more input follows a command.
        o.pipelining_sync_check = false;
        let l = &mut o.limits;
        if bit(b, 7) {
            l.command_line = 1000;
        }
        l.message_size = 1 << (size % 24);
        l.recipients = u32::from(counts & 7);
        l.errors = 1 + u32::from(counts >> 3);
        l.junk_commands = u32::from(junk & 15);
        l.auth_failures = 1 + u32::from(junk >> 4 & 3);
        l.bytes_per_session = [None, Some(0), Some(100), Some(10_000)][usize::from(junk >> 6)];
        l.messages_per_session = 1 + u32::from(session & 7);
        // The core refuses caps below one maximal reply line (512).
        l.output_buffer = 512 + 8 * usize::from(cap);
        if bit(session, 3) {
            o.extra_mail_params = vec!["XFOO".into()];
        }
        if bit(session, 4) {
            o.extra_rcpt_params = vec!["XBAR".into()];
        }
        let answers = (0..input.u8() & 31).map(|_| Answer(input.u8())).collect();
        let cuts = (0..input.u8() & 31)
            .map(|_| usize::from(input.u16()))
            .collect();
        let config = ServerConfig::new(o).ok()?;
        Some(Self {
            burst: burst(&config),
            config: Arc::new(config),
            answers,
            cuts,
            shutdown_after: u32::from(shutdown_after),
            at_end: session >> 5,
        })
    }
}

/// The most output one input step can queue on top of what is pending: the core checks the
/// cap before it reads a command, and that command's answer is at most the longest reply (the
/// EHLO capability list, or LMTP's per-recipient replies to one message, or a 3-line reply of
/// the application) plus a refusal and a 421 that closes.
fn burst(config: &ServerConfig) -> usize {
    let ehlo = 1 + config
        .capabilities(false)
        .len()
        .max(config.capabilities(true).len());
    let lmtp = config.options().limits.recipients as usize + 1;
    MAX_REPLY_LINE * (ehlo.max(lmtp).max(3) + 2)
}

/// One application answer to a decision. The low 3 bits pick the kind, the rest the length
/// of the reply text (`15 * (b >> 3)` octets).
#[derive(Clone, Copy, Debug)]
struct Answer(u8);

/// What a run produced, to compare a split run with a whole one.
#[derive(Debug)]
struct Outcome {
    output: Vec<u8>,
    log: Vec<Logged>,
}

/// An event, with consecutive `DataChunk`s merged: chunk boundaries depend on the split.
#[derive(Debug, PartialEq, Eq)]
enum Logged {
    Event(String),
    Body(Vec<u8>),
}

fn run(setup: &Setup, client: &[u8], cuts: &[usize], now: Instant) -> Outcome {
    let mut server = Server::new(Arc::clone(&setup.config), now);
    let mut pieces = crate::pieces(client, cuts).into_iter();
    let mut buf: Vec<u8> = Vec::new();
    let mut output = Vec::new();
    let mut log = Vec::new();
    let mut answers = setup.answers.iter().copied();
    let mut decisions = 0u32;
    let cap = setup.config.options().limits.output_buffer;
    // Every iteration consumes input, reports an event, drains output or feeds a piece; the
    // events that consume nothing (Connect, line too long, BDAT end) are bounded by the input.
    let limit = 8 * (client.len() + cuts.len() + 32);
    let mut iterations = 0;
    loop {
        iterations += 1;
        assert!(iterations < limit, "no progress after {limit} iterations");
        let progress = server.handle_input(now, &buf);
        let consumed = progress.consumed;
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {} bytes",
            buf.len()
        );
        let had_event = progress.event.is_some();
        if let Some(event) = progress.event {
            record(&mut log, &event);
            if server.awaiting_decision() {
                decide(&mut server, now, &event, &mut answers);
                decisions += 1;
                // LMTP: one answer per accepted recipient.
                while server.awaiting_decision() {
                    decide(&mut server, now, &event, &mut answers);
                }
                if decisions == setup.shutdown_after {
                    server.handle_shutdown(now);
                }
            } else {
                let before = server.poll_transmit().len();
                assert_eq!(server.accept(now), Err(refusal_when_idle(&server)));
                assert_eq!(server.poll_transmit().len(), before);
            }
        }
        buf.drain(..consumed);
        let pending = server.poll_transmit().len();
        assert!(
            pending <= cap + setup.burst,
            "{pending} bytes pending, cap {cap} + burst {}",
            setup.burst
        );
        if had_event || consumed > 0 {
            continue;
        }
        // Stuck: write out replies first (the cap may be what stops it), then read more.
        if pending > 0 {
            output.extend_from_slice(server.poll_transmit());
            server.advance_transmit(pending);
            continue;
        }
        if server.is_closed() {
            break;
        }
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => break,
        }
    }
    match setup.at_end {
        0 => {}
        e if e & 4 != 0 => server.handle_abort(now),
        e if e & 2 != 0 => server.handle_timeout(now + Duration::from_secs(4 * 3600)),
        _ => server.handle_shutdown(now),
    }
    server.handle_eof(now);
    assert!(server.is_closed(), "closed after EOF");
    assert_eq!(server.poll_timeout(), None, "no deadline once closed");
    let after = server.handle_input(now, b"NOOP\r\n");
    assert_eq!(
        (after.consumed, after.event),
        (0, None),
        "a closed session reads nothing"
    );
    output.extend_from_slice(server.poll_transmit());
    drop_unfinished_body(&mut log);
    log.push(Logged::Event(format!(
        "closed: {:?}",
        server.close_reason()
    )));
    Outcome { output, log }
}

/// What `accept` says when no decision is pending.
fn refusal_when_idle(server: &Server) -> UsageError {
    if server.is_closed() {
        UsageError::Closed
    } else {
        UsageError::NothingPending
    }
}

fn record(log: &mut Vec<Logged>, event: &Event<'_>) {
    if !matches!(
        event,
        Event::DataChunk(_) | Event::DataEnd | Event::BdatEnd { .. }
    ) {
        drop_unfinished_body(log);
    }
    match (event, log.last_mut()) {
        (Event::DataChunk(chunk), Some(Logged::Body(body))) => body.extend_from_slice(chunk),
        (Event::DataChunk(chunk), _) => log.push(Logged::Body(chunk.to_vec())),
        (event, _) => log.push(Logged::Event(format!("{event:?}"))),
    }
}

/// Drops content that did not reach the end of a message: a message refused after it was read
/// (too big, bare CR/LF; see `Event::MessageRejected`) or cut off by the end of the session. How
/// much of it was handed out before the limit was crossed depends on the split, and the
/// application throws it away, so only content that reaches `DataEnd`/`BdatEnd` is compared.
fn drop_unfinished_body(log: &mut Vec<Logged>) {
    if matches!(log.last(), Some(Logged::Body(_))) {
        log.pop();
    }
}

/// Answers the pending decision with the next answer (accept once the list runs out).
fn decide(
    server: &mut Server,
    now: Instant,
    event: &Event<'_>,
    answers: &mut impl Iterator<Item = Answer>,
) {
    let answer = answers.next().unwrap_or(Answer(0));
    let text = "x".repeat(15 * usize::from(answer.0 >> 3));
    let reply = match answer.0 & 7 {
        2 => Some(
            reply(451, &format!("Try again later {text}"))
                .with_enhanced(EnhancedCode::SYSTEM_TRANSIENT),
        ),
        3 => {
            Some(reply(550, &format!("No {text}")).with_enhanced(EnhancedCode::SECURITY_PERMANENT))
        }
        4 => Some(match event {
            Event::Auth { .. } | Event::AuthResponse(_) => reply(334, "VXNlcm5hbWU6"),
            Event::DataStart => reply(354, &format!("Go ahead {text}")),
            Event::StartTls | Event::Connect => reply(220, &format!("mx ready {text}")),
            _ => reply(250, &format!("first\nsecond {text}\nthird")),
        }),
        5 => Some(reply(421, "Shutting down").with_enhanced(EnhancedCode::SYSTEM_SHUTDOWN)),
        6 => Some(reply(554, &format!("Refused\n{text}"))),
        _ => None,
    };
    let before = server.poll_transmit().len();
    let answered = match &reply {
        Some(r) => match server.reply(now, r) {
            Ok(()) => true,
            Err(UsageError::UnexpectedReply { code }) => {
                assert_eq!(code, r.code());
                assert!(
                    server.awaiting_decision(),
                    "a refused reply leaves it pending"
                );
                assert_eq!(server.poll_transmit().len(), before, "and sends nothing");
                false
            }
            Err(e) => panic!("reply {r:?} to {event:?}: {e}"),
        },
        None => false,
    };
    if !answered {
        let result = server.accept(now);
        assert_eq!(result, Ok(()), "accept answers {event:?}");
    }
    if server.wants_tls_handshake() {
        if answer.0 & 7 == 7 {
            server.handle_tls_failed(now);
            assert!(server.is_closed(), "a failed handshake ends the session");
        } else {
            server.handle_tls_established(now);
            assert!(server.is_tls());
        }
    }
}

fn reply(code: u16, text: &str) -> Reply<'static> {
    let code = ReplyCode::new(code).expect("a valid reply code");
    Reply::new(code, text.to_owned()).expect("reply text fits one line")
}

/// Every output byte belongs to a complete, well-formed reply with lines of at most 512 octets.
fn check_transcript(mut out: &[u8]) {
    while !out.is_empty() {
        let (_, used) = match Reply::parse(out) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => panic!("truncated reply: {:?}", String::from_utf8_lossy(out)),
            Err(e) => panic!("{e}: {:?}", String::from_utf8_lossy(out)),
        };
        for line in out[..used].split_inclusive(|&b| b == b'\n') {
            assert!(
                line.len() <= MAX_REPLY_LINE,
                "reply line of {} octets",
                line.len()
            );
        }
        out = &out[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain session with a message, through the same harness the fuzzer uses.
    #[test]
    fn plain_session_delivers() {
        let mut input = vec![0b0000_0100, 0, 20, 0xff, 0xff, 0x07, 0xff, 0, 0, 2];
        input.extend_from_slice(&[5, 0, 40, 0]);
        input.extend_from_slice(
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n\
              Hi\r\n.\r\nQUIT\r\n",
        );
        let mut bytes = Bytes::new(&input);
        let setup = Setup::read(&mut bytes).expect("valid setup");
        let client = bytes.rest();
        let out = run(&setup, client, &setup.cuts, Instant::now());
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.starts_with("220 mx.fuzz.example"), "{text}");
        assert!(text.contains("354 "), "{text}");
        assert!(text.ends_with("221 2.0.0 Bye\r\n"), "{text}");
        assert!(out.log.contains(&Logged::Body(b"Hi\r\n".to_vec())));
        session(&input);
    }

    #[test]
    fn answers_refuse_and_close() {
        // Answer 1 (connect) accepts, answer 2 (EHLO) is 421, which closes the session.
        let mut input = vec![0b0000_0100, 0, 20, 0xff, 0xff, 0x07, 0xff, 0, 2, 0, 5, 0];
        input.extend_from_slice(b"EHLO c\r\nNOOP\r\n");
        let mut bytes = Bytes::new(&input);
        let setup = Setup::read(&mut bytes).expect("valid setup");
        let out = run(&setup, bytes.rest(), &[], Instant::now());
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.ends_with("421 4.3.2 Shutting down\r\n"), "{text}");
        assert!(!text.contains("NOOP"));
    }

    #[test]
    fn transcript_check_rejects_garbage() {
        check_transcript(b"220 hi\r\n250-a\r\n250 b\r\n");
        assert!(std::panic::catch_unwind(|| check_transcript(b"220 hi\r\n25")).is_err());
        assert!(std::panic::catch_unwind(|| check_transcript(b"hello\r\n")).is_err());
    }
}
