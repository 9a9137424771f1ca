//! The message collector behind a real server on loopback: a session that collects each
//! message keeps a small one in memory, spills a larger one to a temporary file, and refuses
//! one that outgrows the SIZE its client declared with `552 5.3.4`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtpkit_proto::extension::Parameter;
use smtpkit_server::collect::{Collector, Message};
use smtpkit_server::{
    Decision, Handler, ListenerKind, Parameters, Reply, ReversePath, ServerSettings, Session,
    SessionInfo,
};
use smtpkit_tokio::SmtpServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every exchange finishes well within this, or the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);
/// Bytes a session keeps in memory before spilling.
const MEMORY_LIMIT: usize = 1024;

/// An accepted message: whether it had spilled to a file, and its bytes.
type Kept = (bool, Vec<u8>);

/// What the sessions collected.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Kept>>>);

struct Collecting {
    collected: Collected,
    temp_dir: Arc<tempfile::TempDir>,
}

struct Conn {
    collected: Collected,
    temp_dir: Arc<tempfile::TempDir>,
    declared: Option<u64>,
    collector: Option<Collector>,
}

impl Handler for Collecting {
    type Session = Conn;

    async fn connect(&self, _info: &SessionInfo) -> Result<Conn, Reply<'static>> {
        Ok(Conn {
            collected: self.collected.clone(),
            temp_dir: Arc::clone(&self.temp_dir),
            declared: None,
            collector: None,
        })
    }
}

impl Session for Conn {
    async fn mail_from(
        &mut self,
        _info: &SessionInfo,
        _from: &ReversePath<'_>,
        params: &Parameters<'_>,
    ) -> Decision {
        self.declared = params.iter().find_map(|p| match p {
            Parameter::Size(n) => Some(n),
            _ => None,
        });
        Decision::Accept
    }

    async fn data_start(&mut self, _info: &SessionInfo) -> Decision {
        let collector = Collector::new(MEMORY_LIMIT, 1 << 20)
            .with_declared_size(self.declared)
            .with_temp_dir(self.temp_dir.path());
        self.collector = Some(collector);
        Decision::Accept
    }

    async fn data_chunk(
        &mut self,
        _info: &SessionInfo,
        chunk: &[u8],
    ) -> Result<(), Reply<'static>> {
        match &mut self.collector {
            Some(collector) => collector.push(chunk),
            None => Ok(()),
        }
    }

    async fn data_end(&mut self, _info: &SessionInfo) -> Decision {
        let Some(collector) = self.collector.take() else {
            return Decision::Accept;
        };
        let message = match collector.finish() {
            Ok(message) => message,
            Err(reply) => return Decision::Reply(reply),
        };
        let spilled = matches!(message, Message::File(_));
        // A real application would make the message durable before accepting it; the test
        // keeps it in memory to compare.
        let bytes = message.into_bytes().expect("read back the message");
        self.collected.0.lock().unwrap().push((spilled, bytes));
        Decision::Accept
    }

    async fn reset(&mut self, _info: &SessionInfo) {
        self.declared = None;
        self.collector = None;
    }
}

async fn start(temp_dir: Arc<tempfile::TempDir>) -> (SocketAddr, Collected) {
    let collected = Collected::default();
    let handler = Collecting {
        collected: collected.clone(),
        temp_dir,
    };
    let settings = ServerSettings {
        hostname: "mx.test".into(),
        ..Default::default()
    };
    let server = SmtpServer::builder(handler)
        .settings(settings)
        .listener(
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
            ListenerKind::Smtp,
        )
        .build()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    server.spawn();
    (addr, collected)
}

/// A line client: sends a line, reads one whole (possibly multi-line) reply.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let io = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut c = Self { io };
        assert!(c.reply().await.starts_with("220 "));
        c
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(BOUND, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> String {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.reply().await
    }

    /// One transaction with a body of `size` bytes, declaring `declared` as SIZE if given;
    /// returns the reply to the end of data.
    async fn transaction(&mut self, body: &[u8], declared: Option<u64>) -> String {
        let mail = match declared {
            Some(n) => format!("MAIL FROM:<a@example.test> SIZE={n}\r\n"),
            None => "MAIL FROM:<a@example.test>\r\n".to_owned(),
        };
        assert!(self.send(mail.as_bytes()).await.starts_with("250 "));
        assert!(
            self.send(b"RCPT TO:<b@example.test>\r\n")
                .await
                .starts_with("250 ")
        );
        assert!(self.send(b"DATA\r\n").await.starts_with("354 "));
        self.io.get_mut().write_all(body).await.unwrap();
        self.send(b".\r\n").await
    }
}

/// `n` bytes of CRLF-terminated lines, none starting with a dot.
fn body(n: usize) -> Vec<u8> {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let mut b: Vec<u8> = line.iter().copied().cycle().take(n - 2).collect();
    b.extend_from_slice(b"\r\n");
    b
}

#[tokio::test]
async fn collector_keeps_small_messages_in_memory_spills_large_ones_and_refuses_past_size() {
    let temp_dir = Arc::new(tempfile::tempdir().unwrap());
    let (addr, collected) = start(Arc::clone(&temp_dir)).await;
    let mut c = Client::connect(addr).await;
    let ehlo = c.send(b"EHLO client.test\r\n").await;
    assert!(
        ehlo.contains("250-SIZE") || ehlo.contains("250 SIZE"),
        "{ehlo}"
    );

    let small = body(MEMORY_LIMIT);
    let reply = c.transaction(&small, None).await;
    assert!(reply.starts_with("250 "), "{reply}");

    let large = body(20 * MEMORY_LIMIT);
    let reply = c.transaction(&large, Some(large.len() as u64)).await;
    assert!(reply.starts_with("250 "), "{reply}");

    // The client declared less than it sent: refused, and nothing was kept.
    let reply = c.transaction(&body(2000), Some(1000)).await;
    assert_eq!(
        reply,
        "552 5.3.4 Message exceeds the SIZE declared in MAIL FROM\r\n"
    );

    // The session goes on after a refusal.
    let reply = c.transaction(&small, Some(small.len() as u64)).await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(c.send(b"QUIT\r\n").await.starts_with("221 "));

    let got = collected.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (false, small.clone()));
    assert_eq!(got[1], (true, large));
    assert_eq!(got[2], (false, small));
    // Spilled and refused messages leave no temporary file behind.
    assert_eq!(std::fs::read_dir(temp_dir.path()).unwrap().count(), 0);
}
