//! Connection limits must not refuse legitimate load: clients that reconnect as soon as they
//! have read `221` find their place free, because a session's place in the per-address
//! limit is released when the session ends, before its socket's last write and close.
//!
//! Loopback is exempt from the per-address limit by default; the exemption is turned off here
//! so the limit really applies.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use smtp_test::adapters::{Mio, Smol, Tokio};
use smtp_test::{Adapter, Call, ListenerKind, ListenerSettings, RecordingHandler, ServerSpec};

/// Concurrent clients, and the per-address limit.
const CLIENTS: usize = 8;
/// Messages in all, one per connection.
const MESSAGES: usize = 10_000;
/// Every socket operation is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client saw.
#[derive(Debug, Default)]
struct Outcome {
    refused: usize,
    delivered: usize,
}

fn read_reply(r: &mut BufReader<TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read a reply");
        assert!(n > 0, "the server closed mid-reply: {reply:?}");
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// One connection, one message, QUIT; returns whether the greeting was a refusal.
fn one_message(addr: SocketAddr) -> bool {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    let greeting = read_reply(&mut r);
    if greeting.starts_with("421") {
        return true;
    }
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    w.write_all(b"EHLO c.test\r\n").unwrap();
    assert!(read_reply(&mut r).starts_with("250"));
    w.write_all(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        .unwrap();
    for code in ["250", "250", "354"] {
        let reply = read_reply(&mut r);
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
    }
    w.write_all(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        .unwrap();
    for code in ["250", "221"] {
        let reply = read_reply(&mut r);
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
    }
    // Reconnect at once: the socket is dropped without waiting for the server's close.
    false
}

fn reconnect_storm<A: Adapter>() {
    let mut settings = smtp_test::base_settings();
    settings.max_per_ip = CLIENTS;
    settings.trusted_networks = Default::default();
    let handler = RecordingHandler::new();
    let mut running = A::start(ServerSpec::new(
        settings,
        vec![ListenerSettings::new(ListenerKind::Smtp)],
        None,
        handler.clone(),
    ));
    let addr = running.addrs[0];
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let next = Arc::clone(&next);
            thread::spawn(move || {
                let mut outcome = Outcome::default();
                while next.fetch_add(1, Ordering::Relaxed) < MESSAGES {
                    if one_message(addr) {
                        outcome.refused += 1;
                    } else {
                        outcome.delivered += 1;
                    }
                }
                outcome
            })
        })
        .collect();
    let (mut refused, mut delivered) = (0, 0);
    for c in clients {
        let o = c.join().expect("a client panicked");
        refused += o.refused;
        delivered += o.delivered;
    }
    running.shutdown(Duration::from_secs(5));
    assert_eq!(refused, 0, "[{}] connections refused", A::NAME);
    assert_eq!(delivered, MESSAGES);
    let stored = handler
        .record()
        .sessions
        .iter()
        .flatten()
        .filter(|c| matches!(c, Call::DataEnd(_)))
        .count();
    assert_eq!(
        stored,
        MESSAGES,
        "[{}] messages the application got",
        A::NAME
    );
}

#[test]
fn tokio_reconnecting_clients_are_never_refused() {
    reconnect_storm::<Tokio>();
}

#[test]
fn smol_reconnecting_clients_are_never_refused() {
    reconnect_storm::<Smol>();
}

#[test]
fn mio_reconnecting_clients_are_never_refused() {
    reconnect_storm::<Mio>();
}
