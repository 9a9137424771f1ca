//! The steady state allocates nothing: once buffers have grown, a session handles commands,
//! decisions and body chunks without touching the heap. Counted with dhat's testing mode.

use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::{Event, InBuf, Server, ServerConfig, ServerOptions};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const TRANSACTION: &[u8] = b"EHLO client.example\r\n\
MAIL FROM:<sender@example.org> SIZE=1000 BODY=8BITMIME\r\n\
RCPT TO:<one@example.net>\r\n\
RCPT TO:<\"two words\"@example.net> \r\n\
RCPT TO:<three@[192.0.2.7]>\r\n\
DATA\r\n\
Subject: steady state\r\n\
\r\n\
A line of body text that is long enough to matter.\r\n\
..A stuffed line.\r\n\
.\r\n\
NOOP\r\n\
RSET\r\n\
MAIL FROM:<> \r\n\
RCPT TO:<Postmaster>\r\n\
BDAT 12 LAST\r\n\
Hello world!\
VRFY someone\r\n";

/// Runs one transaction through the session, 5 bytes at a time, accepting everything.
fn run_transaction(server: &mut Server, inbuf: &mut InBuf, now: Instant) -> (usize, usize) {
    let mut events = 0;
    let mut body = 0;
    for piece in TRANSACTION.chunks(5) {
        inbuf.spare()[..piece.len()].copy_from_slice(piece);
        inbuf.commit(piece.len());
        loop {
            let progress = server.handle_input(now, inbuf.data());
            let Some(event) = progress.event else {
                inbuf.consume(progress.consumed);
                break;
            };
            events += 1;
            if let Event::DataChunk(chunk) = event {
                body += chunk.len();
            }
            if server.awaiting_decision() {
                server.accept(now).expect("accept");
            }
            inbuf.consume(progress.consumed);
        }
        let n = server.poll_transmit().len();
        if std::env::var("ALLOC_DEBUG").is_ok() {
            eprint!("{}", String::from_utf8_lossy(server.poll_transmit()));
        }
        server.advance_transmit(n);
    }
    (events, body)
}

fn main() {
    steady_state_allocates_nothing();
    println!("test steady_state_allocates_nothing ... ok");
}

fn steady_state_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut options = ServerOptions::default();
    // NOOP, RSET and VRFY count as junk; 101 runs would hit the default limit of 100.
    options.limits.junk_commands = u32::MAX;
    let config = Arc::new(ServerConfig::new(options).unwrap());
    let now = Instant::now();
    let mut server = Server::new(config, now);
    let mut inbuf = InBuf::new(4096, 4096);
    // Warm-up: the greeting and first transaction grow the output buffer to its working size.
    let first = run_transaction(&mut server, &mut inbuf, now);
    assert!(
        first.0 > 20 && first.1 > 50,
        "the transaction really ran: {first:?}"
    );

    let before = dhat::HeapStats::get();
    let mut total = (0, 0);
    for _ in 0..100 {
        let (events, body) = run_transaction(&mut server, &mut inbuf, now);
        total.0 += events;
        total.1 += body;
    }
    let after = dhat::HeapStats::get();
    assert!(!server.is_closed());
    // The first run also reported the connection.
    assert_eq!(
        total.0,
        (first.0 - 1) * 100,
        "every run produced the same events"
    );
    dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
}
