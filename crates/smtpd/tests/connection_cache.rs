//! The delivery transport keeps sessions open between messages to one destination
//! (`smtpd::connection_cache`), against a scripted SMTP server on loopback that counts its
//! connections, messages and QUITs.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smtpd::config::Delivery;
use smtpd::delivery::SmtpTransport;
use smtpkit_queue::mx::{LookupError, MxResolver};
use smtpkit_queue::{Attempt, Outcome, Transport};

/// Every domain's MX is `mx.b.test` at 127.0.0.1.
#[derive(Debug, Clone)]
struct Loopback;

impl MxResolver for Loopback {
    async fn mx(&self, _domain: &str) -> Result<Vec<(u16, String)>, LookupError> {
        Ok(vec![(10, "mx.b.test".to_owned())])
    }
    async fn addresses(&self, _host: &str) -> Result<Vec<IpAddr>, LookupError> {
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

#[derive(Debug, Default)]
struct Counts {
    connections: AtomicUsize,
    messages: AtomicUsize,
    quits: AtomicUsize,
    closed: AtomicUsize,
}

impl Counts {
    fn get(&self) -> [usize; 4] {
        [
            self.connections.load(Ordering::SeqCst),
            self.messages.load(Ordering::SeqCst),
            self.quits.load(Ordering::SeqCst),
            self.closed.load(Ordering::SeqCst),
        ]
    }
}

/// A server on 127.0.0.1 that takes every message; with `idle`, it says `421` and closes a
/// session that sends nothing for that long after a message. Its threads end with the test
/// process.
fn peer(idle: Option<Duration>) -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let counts = Arc::new(Counts::default());
    let shared = Arc::clone(&counts);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let counts = Arc::clone(&shared);
            std::thread::spawn(move || {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let _ = session(stream, &counts, idle);
                counts.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, counts)
}

fn session(stream: TcpStream, counts: &Counts, idle: Option<Duration>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream.try_clone()?);
    out.write_all(b"220 mx.b.test ESMTP\r\n")?;
    let mut between_messages = false;
    loop {
        let limit = if between_messages { idle } else { None };
        stream.set_read_timeout(Some(limit.unwrap_or(Duration::from_secs(30))))?;
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return out.write_all(b"421 4.4.2 mx.b.test idle too long\r\n");
            }
            Err(e) => return Err(e),
        }
        between_messages = false;
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => out.write_all(b"250-mx.b.test\r\n250 8BITMIME\r\n")?,
            "MAIL" | "RCPT" | "RSET" | "NOOP" => out.write_all(b"250 2.0.0 ok\r\n")?,
            "DATA" => {
                out.write_all(b"354 go on\r\n")?;
                loop {
                    let mut content = String::new();
                    if lines.read_line(&mut content)? == 0 {
                        return Ok(());
                    }
                    if content == ".\r\n" {
                        break;
                    }
                }
                counts.messages.fetch_add(1, Ordering::SeqCst);
                out.write_all(b"250 2.0.0 queued\r\n")?;
                between_messages = true;
            }
            "QUIT" => {
                counts.quits.fetch_add(1, Ordering::SeqCst);
                return out.write_all(b"221 2.0.0 bye\r\n");
            }
            _ => out.write_all(b"500 5.5.2 what\r\n")?,
        }
    }
}

fn transport(port: u16, cache_time: u64) -> SmtpTransport<Loopback> {
    let delivery = Delivery {
        port,
        connection_cache_time: cache_time,
        tls_report: false,
        ..Delivery::default()
    };
    SmtpTransport::new(Loopback, "mx.a.test", &delivery).expect("transport")
}

async fn send(transport: &SmtpTransport<Loopback>, n: usize) -> Vec<Outcome> {
    let recipients = vec![format!("bob{n}@b.test")];
    let content = format!("Subject: {n}\r\n\r\nHello {n}\r\n");
    transport
        .deliver(Attempt {
            domain: "b.test",
            sender: Some("alice@a.test"),
            recipients: &recipients,
            content: content.as_bytes(),
        })
        .await
}

fn delivered(outcomes: &[Outcome]) -> bool {
    matches!(outcomes, [Outcome::Delivered { .. }])
}

/// Waits until `counts` reach `want` (connections, messages, quits, closed), at most 10 s.
async fn settle(counts: &Counts, want: [usize; 4]) -> [usize; 4] {
    let until = Instant::now() + Duration::from_secs(10);
    while counts.get() != want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counts.get()
}

#[tokio::test]
async fn messages_to_one_destination_share_a_session_until_it_idles_out() {
    let (port, counts) = peer(None);
    // Long enough that a busy machine does not idle the session out between two messages.
    let transport = transport(port, 3);
    for n in 0..5 {
        let outcomes = send(&transport, n).await;
        assert!(delivered(&outcomes), "message {n}: {outcomes:?}");
    }
    assert_eq!(
        counts.get()[..3],
        [1, 5, 0],
        "five messages, one connection, no QUIT yet"
    );
    // After the cache time, the kept session gets its QUIT.
    assert_eq!(settle(&counts, [1, 5, 1, 1]).await, [1, 5, 1, 1]);
    // The next message opens a new session.
    assert!(delivered(&send(&transport, 5).await));
    assert_eq!(counts.get()[..2], [2, 6]);
}

#[tokio::test]
async fn a_kept_session_the_server_closed_is_replaced_and_the_message_delivered() {
    let (port, counts) = peer(Some(Duration::from_millis(100)));
    let transport = transport(port, 30);
    assert!(delivered(&send(&transport, 0).await));
    // The server hangs up on the kept session; the transport does not notice until it uses it.
    assert_eq!(settle(&counts, [1, 1, 0, 1]).await, [1, 1, 0, 1]);
    let outcomes = send(&transport, 1).await;
    assert!(delivered(&outcomes), "{outcomes:?}");
    assert_eq!(counts.get()[..2], [2, 2], "a second session carried it");
}

#[tokio::test]
async fn with_the_cache_off_every_message_has_its_own_session() {
    let (port, counts) = peer(None);
    let transport = transport(port, 0);
    for n in 0..3 {
        assert!(delivered(&send(&transport, n).await));
    }
    assert_eq!(settle(&counts, [3, 3, 3, 3]).await, [3, 3, 3, 3]);
}

#[tokio::test]
async fn no_session_is_opened_for_a_message_with_no_valid_recipient() {
    let (port, counts) = peer(None);
    let transport = transport(port, 1);
    let recipients = vec!["not an address".to_owned()];
    let outcomes = transport
        .deliver(Attempt {
            domain: "b.test",
            sender: Some("alice@a.test"),
            recipients: &recipients,
            content: b"Subject: x\r\n\r\nx\r\n",
        })
        .await;
    assert!(
        matches!(&outcomes[..], [Outcome::Permanent { reply, .. }] if reply.starts_with("553 5.1.3")),
        "{outcomes:?}"
    );
    assert_eq!(counts.get(), [0, 0, 0, 0]);
}
