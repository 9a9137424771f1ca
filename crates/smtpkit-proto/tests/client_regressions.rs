//! Named client regressions: deadlines that need output held back, hostile replies, and the
//! calls the client must refuse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use smtpkit_proto::CloseReason;
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{
    Client, ClientConfig, ClientError, ClientOptions, Envelope, Event, Recipient,
};
use smtpkit_proto::reply::ReplyParseError;

fn client(options: ClientOptions, now: Instant) -> Client {
    Client::new(Arc::new(ClientConfig::new(options).unwrap()), now)
}

/// Feeds `input` whole; returns the events, rendered with `Debug`.
fn feed(c: &mut Client, now: Instant, input: &[u8]) -> Vec<String> {
    let mut buf = input.to_vec();
    let mut events = Vec::new();
    // Bounded: each call consumes a reply or stops.
    for _ in 0..10_000 {
        let p = c.handle_input(now, &buf);
        let Some(event) = p.event else {
            buf.drain(..p.consumed);
            return events;
        };
        events.push(format!("{event:?}"));
        buf.drain(..p.consumed);
    }
    panic!("no progress");
}

const GREETING: &[u8] = b"220 mx.example ESMTP\r\n250-mx.example\r\n250 PIPELINING\r\n";

fn to() -> [Recipient<'static>; 1] {
    [Recipient::new(ForwardPath::Mailbox(
        Mailbox::parse("b@example.com").unwrap(),
    ))]
}

fn from() -> ReversePath<'static> {
    ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap())
}

/// A client in DATA content, with everything before it written out.
fn in_content(now: Instant) -> Client {
    let mut c = client(ClientOptions::default(), now);
    feed(&mut c, now, GREETING);
    let to = to();
    c.send_mail(now, &Envelope::new(from(), &to)).unwrap();
    let events = feed(&mut c, now, b"250 OK\r\n250 OK\r\n354 Go\r\n");
    assert_eq!(events.last().unwrap(), "ReadyForData");
    c.advance_transmit(c.poll_transmit().len());
    c
}

/// RFC 5321 4.5.3.2.5: content the server does not take for three minutes ends the session.
#[test]
fn data_block_timeout_when_the_server_stops_reading() {
    let now = Instant::now();
    let mut c = in_content(now);
    c.send_data(now, b"content\r\n").unwrap();
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(180));
    c.handle_timeout(deadline - Duration::from_secs(1));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert_eq!(c.close_reason(), Some(CloseReason::Timeout));
}

/// A server that reads slowly but keeps reading is not timed out.
#[test]
fn data_block_deadline_moves_with_progress() {
    let now = Instant::now();
    let mut c = in_content(now);
    c.send_data(now, b"content\r\n").unwrap();
    let first = c.poll_timeout().unwrap();
    c.advance_transmit(3);
    c.handle_timeout(first);
    assert!(!c.is_closed());
    let second = c.poll_timeout().unwrap();
    assert_eq!(second, first + Duration::from_secs(180));
    c.handle_timeout(second);
    assert_eq!(c.close_reason(), Some(CloseReason::Timeout));
}

/// With everything written, the content deadline is dropped, not fired.
#[test]
fn data_block_deadline_ignored_when_output_is_written() {
    let now = Instant::now();
    let mut c = in_content(now);
    c.send_data(now, b"content\r\n").unwrap();
    let deadline = c.poll_timeout().unwrap();
    c.advance_transmit(c.poll_transmit().len());
    c.handle_timeout(deadline);
    assert!(!c.is_closed());
    assert_eq!(c.poll_timeout(), None, "no reply is awaited during content");
}

/// An endless multi-line reply is cut off at 16 KiB instead of growing the input buffer.
#[test]
fn endless_multiline_reply_is_malformed() {
    let now = Instant::now();
    let mut c = client(ClientOptions::default(), now);
    let mut input = b"220-mx.example\r\n".to_vec();
    while input.len() <= 16 * 1024 {
        input.extend_from_slice(b"220-more of the same\r\n");
    }
    let events = feed(&mut c, now, &input);
    assert_eq!(
        events,
        [format!(
            "{:?}",
            Event::Malformed(ReplyParseError::LineTooLong)
        )]
    );
    assert_eq!(c.close_reason(), Some(CloseReason::BadReply));
    assert!(c.poll_transmit().is_empty(), "nothing was sent");
}

/// The client refuses what the session cannot take, and changes nothing.
#[test]
fn calls_out_of_turn_are_refused() {
    let now = Instant::now();
    let mut c = client(ClientOptions::default(), now);
    let to = to();
    let envelope = Envelope::new(from(), &to);
    assert_eq!(c.send_mail(now, &envelope), Err(ClientError::NotReady));
    assert_eq!(c.send_data(now, b"x"), Err(ClientError::NotReady));
    feed(&mut c, now, GREETING);
    c.advance_transmit(c.poll_transmit().len());
    assert_eq!(c.finish_data(now), Err(ClientError::NotReady));
    assert_eq!(
        c.send_mail(now, &Envelope::new(from(), &[])),
        Err(ClientError::NoRecipients)
    );
    c.send_mail(now, &envelope).unwrap();
    assert_eq!(c.send_mail(now, &envelope), Err(ClientError::NotReady));
    assert_eq!(c.send_data(now, b"x"), Err(ClientError::NotReady));
    feed(&mut c, now, b"250 OK\r\n250 OK\r\n354 Go\r\n");
    // QUIT in the middle of DATA content would be content.
    assert_eq!(c.quit(now), Err(ClientError::NotReady));
    assert_eq!(c.noop(now), Err(ClientError::NotReady));
    c.handle_eof(now);
    assert_eq!(c.close_reason(), Some(CloseReason::PeerEof));
    assert_eq!(c.send_data(now, b"x"), Err(ClientError::Closed));
    assert_eq!(c.quit(now), Err(ClientError::Closed));
}

/// Output beyond the cap turns `wants_data` off until it is written.
#[test]
fn wants_data_follows_the_output_cap() {
    let now = Instant::now();
    let mut c = in_content(now);
    assert!(c.wants_data());
    let block = vec![b'x'; 1024];
    let mut sent = 0;
    while c.wants_data() && sent < 1024 * 1024 {
        c.send_data(now, &block).unwrap();
        sent += block.len();
    }
    assert_eq!(sent, 64 * 1024, "the default cap is 64 KiB");
    c.advance_transmit(c.poll_transmit().len());
    assert!(c.wants_data());
}

/// The server closing after QUIT is the normal end of a session, not a lost connection.
#[test]
fn eof_after_quit_is_a_normal_end() {
    let now = Instant::now();
    let mut c = client(ClientOptions::default(), now);
    feed(&mut c, now, GREETING);
    c.quit(now).unwrap();
    assert!(c.poll_transmit().ends_with(b"QUIT\r\n"));
    c.handle_eof(now);
    assert_eq!(c.close_reason(), Some(CloseReason::Quit));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Arbitrary server bytes, in any state, never panic: the client either makes sense of
    /// them or closes, and once closed it consumes and reports nothing more.
    #[test]
    fn arbitrary_replies_never_panic(
        prefix in 0usize..4,
        junk in proptest::collection::vec(
            prop_oneof![
                Just(b"250 OK\r\n".to_vec()),
                Just(b"354 go\r\n".to_vec()),
                Just(b"334 VXNlcm5hbWU6\r\n".to_vec()),
                Just(b"421 bye\r\n".to_vec()),
                Just(b"250-".to_vec()),
                Just(b"\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ],
            0..24,
        ),
        cut in 1usize..16,
    ) {
        let now = Instant::now();
        let mut c = client(ClientOptions { allow_insecure_auth: true, ..Default::default() }, now);
        let states: [&[u8]; 4] = [b"", b"220 mx\r\n", GREETING, GREETING];
        feed(&mut c, now, states[prefix]);
        let to = to();
        if prefix == 3 {
            c.send_mail(now, &Envelope::new(from(), &to)).unwrap();
        }
        let junk = junk.concat();
        let mut buf = Vec::new();
        for piece in junk.chunks(cut) {
            buf.extend_from_slice(piece);
            for _ in 0..1000 {
                let p = c.handle_input(now, &buf);
                let (consumed, event) = (p.consumed, p.event.map(|e| format!("{e:?}")));
                prop_assert!(consumed <= buf.len());
                buf.drain(..consumed);
                if event == Some("ReadyForData".into()) {
                    c.send_data(now, b".x\r\n").unwrap();
                    c.finish_data(now).unwrap();
                }
                if event.is_none() {
                    break;
                }
            }
            c.advance_transmit(c.poll_transmit().len());
        }
        if c.is_closed() {
            let p = c.handle_input(now, b"250 OK\r\n");
            prop_assert!(p.event.is_none());
            prop_assert_eq!(p.consumed, 0);
        }
    }
}
