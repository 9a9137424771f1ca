//! Slow senders (issue 15): a body or command line dripped a byte at a time must be cut long
//! before the session timeout, while a sender at the minimum data rate is never cut. Driven
//! by a fake clock: the core only knows the time it is given.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smtpkit_proto::{CloseReason, Server, ServerConfig, ServerOptions};

const OPEN: &[u8] = b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n";

struct Drip {
    out: String,
    /// Time from the end of the prefix to the close, if the session closed.
    closed_after: Option<Duration>,
    close: Option<CloseReason>,
}

/// Feeds `prefix` at once, then `drip` in pieces of `per_step` bytes, one piece every `step`,
/// firing timers as the fake clock passes them; accepts every decision.
fn drip(prefix: &[u8], drip: &[u8], step: Duration, per_step: usize) -> Drip {
    let start = Instant::now();
    let mut now = start;
    let config = Arc::new(ServerConfig::new(ServerOptions::default()).unwrap());
    let mut server = Server::new(config, now);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut feed = |server: &mut Server, buf: &mut Vec<u8>, now: Instant| {
        for _ in 0..10_000 {
            let p = server.handle_input(now, buf);
            let consumed = p.consumed;
            let more = p.event.is_some();
            if server.awaiting_decision() {
                server.accept(now).unwrap();
            }
            buf.drain(..consumed);
            out.extend_from_slice(server.poll_transmit());
            server.advance_transmit(server.poll_transmit().len());
            if !more {
                return;
            }
        }
        panic!("no progress");
    };
    buf.extend_from_slice(prefix);
    feed(&mut server, &mut buf, now);
    let begun = now;
    let mut closed_after = None;
    for piece in drip.chunks(per_step) {
        now += step;
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        if server.is_closed() {
            closed_after = Some(now - begun);
            break;
        }
        buf.extend_from_slice(piece);
        feed(&mut server, &mut buf, now);
    }
    out.extend_from_slice(server.poll_transmit());
    Drip {
        out: String::from_utf8(out).unwrap(),
        closed_after,
        close: server.close_reason(),
    }
}

fn data_prefix() -> Vec<u8> {
    [OPEN, b"DATA\r\n"].concat()
}

#[test]
fn data_trickle_is_cut_after_the_data_block_timeout() {
    // One byte every 5 s: each resets the 180 s block timer, so before the minimum data rate
    // only the 3600 s session timeout ended it.
    let body = b"x".repeat(2_000);
    let d = drip(&data_prefix(), &body, Duration::from_secs(5), 1);
    assert_eq!(d.close, Some(CloseReason::Timeout), "{}", d.out);
    let after = d.closed_after.expect("closed");
    // 180 s of budget plus 2 ms per byte received, checked every 5 s.
    assert!(after <= Duration::from_secs(190), "{after:?}");
    assert!(
        d.out
            .ends_with("421 4.4.2 Timeout exceeded, closing connection\r\n"),
        "{}",
        d.out
    );
}

#[test]
fn data_at_the_minimum_rate_is_never_cut() {
    // 600 octets a second (the default minimum is 500) for 400 s, longer than the 180 s
    // budget: the credit keeps the deadline ahead.
    let mut body = b"y".repeat(600 * 400);
    body.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    let d = drip(&data_prefix(), &body, Duration::from_secs(1), 600);
    assert_eq!(d.close, Some(CloseReason::Quit), "{}", d.out);
    assert!(
        d.out.contains("250 2.0.0 Message accepted\r\n"),
        "{}",
        d.out
    );
}

#[test]
fn bdat_trickle_is_cut_after_the_data_block_timeout() {
    let prefix = [OPEN, b"BDAT 100000 LAST\r\n"].concat();
    let d = drip(&prefix, &b"z".repeat(2_000), Duration::from_secs(5), 1);
    assert_eq!(d.close, Some(CloseReason::Timeout), "{}", d.out);
    assert!(d.closed_after.expect("closed") <= Duration::from_secs(190));
}

#[test]
fn command_line_trickle_is_cut_after_the_command_timeout() {
    // A partial line never re-arms the command timer: the whole line must arrive within the
    // 300 s command timeout of the previous reply.
    let line = format!("MAIL FROM:<{}@example.org>\r\n", "a".repeat(200));
    let d = drip(
        b"EHLO a.example\r\n",
        line.as_bytes(),
        Duration::from_secs(10),
        1,
    );
    assert_eq!(d.close, Some(CloseReason::Timeout), "{}", d.out);
    assert!(d.closed_after.expect("closed") <= Duration::from_secs(310));
    assert!(!d.out.contains("Sender OK"), "{}", d.out);
}
