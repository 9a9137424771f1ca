//! The client's steady state allocates nothing: once its buffers have grown, sending a
//! message (envelope, replies, stuffed content, results) does not touch the heap. Counted with
//! dhat's testing mode, for DATA and for BDAT.

use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{Client, ClientConfig, ClientOptions, Envelope, Event, Recipient};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const BODY: &[u8] = b"Subject: steady state\r\n\r\nA line of body text.\r\n.A stuffed line.\r\n";

/// The server's replies to one pipelined message: MAIL, three RCPTs (one refused), DATA or not,
/// and the end of content.
fn replies(bdat: bool) -> Vec<u8> {
    let mut r =
        b"250 2.1.0 Sender OK\r\n250 2.1.5 OK\r\n550 5.1.1 No such user\r\n250 2.1.5 OK\r\n"
            .to_vec();
    if !bdat {
        r.extend_from_slice(b"354 Go ahead\r\n");
    } else {
        // Two chunks: the body goes out in two pieces.
        r.extend_from_slice(b"250 2.0.0 20 octets received\r\n250 2.0.0 OK\r\n");
    }
    r.extend_from_slice(b"250 2.0.0 Message accepted\r\n");
    r
}

/// Sends one message, feeding the replies 7 bytes at a time; returns (events, output bytes).
fn run_message(
    client: &mut Client,
    now: Instant,
    envelope: &Envelope<'_>,
    replies: &[u8],
    inbuf: &mut Vec<u8>,
) -> (usize, usize) {
    client.send_mail(now, envelope).expect("ready");
    let mut events = 0;
    let mut written = client.poll_transmit().len();
    client.advance_transmit(written);
    for piece in replies.chunks(7) {
        inbuf.extend_from_slice(piece);
        loop {
            let p = client.handle_input(now, inbuf);
            let Some(event) = p.event else {
                inbuf.drain(..p.consumed);
                break;
            };
            events += 1;
            if event == Event::ReadyForData {
                client.send_data(now, &BODY[..20]).unwrap();
                client.send_data(now, &BODY[20..]).unwrap();
                client.finish_data(now).unwrap();
            }
            inbuf.drain(..p.consumed);
        }
        let n = client.poll_transmit().len();
        written += n;
        client.advance_transmit(n);
    }
    assert!(!client.in_transaction(), "the message ended");
    (events, written)
}

fn steady_state(chunking: bool) {
    let now = Instant::now();
    let options = ClientOptions {
        chunking,
        ..ClientOptions::default()
    };
    let mut client = Client::new(Arc::new(ClientConfig::new(options).unwrap()), now);
    let mut inbuf = Vec::with_capacity(4096);
    let ehlo = b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 1000000\r\n";
    inbuf.extend_from_slice(ehlo);
    // Bounded: the greeting and EHLO reply give two events.
    for _ in 0..4 {
        let p = client.handle_input(now, &inbuf);
        let (consumed, more) = (p.consumed, p.event.is_some());
        inbuf.drain(..consumed);
        if !more {
            break;
        }
    }
    assert!(client.is_ready());
    client.advance_transmit(client.poll_transmit().len());
    let from = ReversePath::Mailbox(Mailbox::parse("sender@example.org").unwrap());
    let to = [
        Recipient::new(ForwardPath::Mailbox(
            Mailbox::parse("one@example.net").unwrap(),
        )),
        Recipient::new(ForwardPath::Mailbox(
            Mailbox::parse("\"two words\"@example.net").unwrap(),
        )),
        Recipient::new(ForwardPath::Postmaster),
    ];
    let envelope = Envelope::new(from, &to).with_size(BODY.len() as u64);
    let replies = replies(chunking);

    // Warm-up: the first message grows the buffers and queues to their working size.
    let first = run_message(&mut client, now, &envelope, &replies, &mut inbuf);
    assert_eq!(first.0, 6, "sender, three recipients, ready, result");

    let before = dhat::HeapStats::get();
    let mut total = (0, 0);
    for _ in 0..100 {
        let (events, written) = run_message(&mut client, now, &envelope, &replies, &mut inbuf);
        total.0 += events;
        total.1 += written;
    }
    let after = dhat::HeapStats::get();
    assert_eq!(
        total,
        (first.0 * 100, first.1 * 100),
        "every run did the same"
    );
    dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
}

/// Run without the libtest harness (see Cargo.toml): its threads allocate now and then.
fn main() {
    steady_state_allocates_nothing();
    println!("test steady_state_allocates_nothing ... ok");
}

fn steady_state_allocates_nothing() {
    // One profiler per process: both transfer modes run under it in turn.
    let _profiler = dhat::Profiler::builder().testing().build();
    steady_state(false);
    steady_state(true);
}
