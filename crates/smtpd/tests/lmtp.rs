//! Black-box tests of LMTP delivery (`[storage] lmtp`): `smtpd` hands local mail to an LMTP
//! server the test runs (smtpkit-tokio's own LMTP listener), over TCP or a Unix socket, and the
//! client's reply to DATA is what the LMTP server's per-recipient replies make of it.

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{Client, Server, addr, files_under};
use smtpkit_tokio::{
    Decision, EnhancedCode, ForwardPath, Handler, ListenerKind, Parameters, Reply, ReversePath,
    Session, SessionInfo, SmtpServer,
};

/// What the LMTP server was given in one transaction.
#[derive(Debug, Clone, Default)]
struct Got {
    from: String,
    /// Accepted recipients, each with the code of its reply after the content.
    to: Vec<(String, u16)>,
    content: Vec<u8>,
}

/// An LMTP server whose users fail in the ways their names say: `ghost` is unknown (550 at
/// RCPT), `full` is over quota for now (452 after the content), `over` for good (552 after the
/// content); anyone else gets the message.
#[derive(Clone, Default)]
struct Lmtpd {
    got: Arc<Mutex<Vec<Got>>>,
}

struct LmtpSession {
    got: Arc<Mutex<Vec<Got>>>,
    current: Got,
}

impl Handler for Lmtpd {
    type Session = LmtpSession;

    async fn connect(&self, _: &SessionInfo) -> Result<LmtpSession, Reply<'static>> {
        Ok(LmtpSession {
            got: Arc::clone(&self.got),
            current: Got::default(),
        })
    }
}

fn refuse(code: u16, enhanced: (u8, u16, u16), text: &str) -> Decision {
    let (c, s, d) = enhanced;
    Decision::reply(code, EnhancedCode::new(c, s, d).expect("valid code"), text)
}

impl Session for LmtpSession {
    async fn mail_from(
        &mut self,
        _: &SessionInfo,
        from: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.current = Got {
            from: from.to_string(),
            ..Got::default()
        };
        Decision::Accept
    }

    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        to: &ForwardPath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        let to = to.to_string();
        if to.starts_with("<ghost@") {
            return refuse(550, (5, 1, 1), "No such user");
        }
        self.current.to.push((to, 0));
        Decision::Accept
    }

    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.current.content.extend_from_slice(chunk);
        Ok(())
    }

    async fn data_end_lmtp(&mut self, _: &SessionInfo, recipients: usize) -> Vec<Decision> {
        assert_eq!(recipients, self.current.to.len());
        let decisions: Vec<(u16, Decision)> = self
            .current
            .to
            .iter()
            .map(|(to, _)| {
                if to.starts_with("<full@") {
                    (452, refuse(452, (4, 2, 2), "Mailbox full, try later"))
                } else if to.starts_with("<over@") {
                    (552, refuse(552, (5, 2, 2), "Quota exceeded"))
                } else {
                    (250, Decision::Accept)
                }
            })
            .collect();
        for ((_, code), (c, _)) in self.current.to.iter_mut().zip(&decisions) {
            *code = *c;
        }
        self.got
            .lock()
            .expect("lock")
            .push(std::mem::take(&mut self.current));
        decisions.into_iter().map(|(_, d)| d).collect()
    }
}

/// The test's LMTP server on its own runtime, stopped with it.
struct LmtpServer {
    runtime: tokio::runtime::Runtime,
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
}

impl LmtpServer {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let handler = Lmtpd::default();
        let got = Arc::clone(&handler.got);
        let port = runtime.block_on(async {
            let server = SmtpServer::builder(handler)
                .listener(
                    "127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"),
                    ListenerKind::Lmtp,
                )
                .build()
                .await
                .expect("bind the LMTP listener");
            let port = server.local_addrs()[0].port();
            server.spawn();
            port
        });
        Self { runtime, port, got }
    }

    /// Forwards connections to a Unix socket at `path` to the TCP listener, so smtpd's Unix
    /// client is what is tested (the listener side of Unix sockets is another crate's).
    fn forward_unix(&self, path: &Path) {
        let listener = {
            let _guard = self.runtime.enter();
            tokio::net::UnixListener::bind(path).expect("bind the Unix socket")
        };
        let port = self.port;
        self.runtime.spawn(async move {
            while let Ok((mut unix, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                    }
                });
            }
        });
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }
}

/// smtpd on one port, every address local (wildcard), delivering over LMTP to `lmtp`.
fn smtpd(dir: &Path, lmtp: &str) -> Server {
    Server::start(dir, 1, |ports| {
        let path = dir.join("smtpd.toml");
        fs::write(
            &path,
            format!(
                "hostname = \"mx.test\"\n\n[[listener]]\naddress = \"{}\"\n\n\
                 [storage]\nmaildir = \"md\"\nlmtp = \"{lmtp}\"\n",
                addr(ports[0])
            ),
        )
        .expect("write config");
        vec!["--config".into(), path.display().to_string()]
    })
}

/// Sends one message to `to`; the reply to DATA.
fn send(port: u16, to: &[&str], body: &[u8]) -> common::Reply {
    let mut c = Client::connect(port);
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@client.test>", 250);
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    let reply = c.data(body);
    c.expect("QUIT", 221);
    reply
}

#[test]
fn one_recipient_gets_the_lmtp_servers_reply_and_the_message_its_trace() {
    let lmtp = LmtpServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = smtpd(dir.path(), &addr(lmtp.port));
    let body = b"Subject: over lmtp\r\n\r\nhello\r\n";
    let reply = send(server.port(0), &["bob+tag@example.test"], body);
    assert_eq!(reply.code, 250, "{reply:?}\n{}", server.log());
    assert!(reply.text().starts_with("2.0.0 "), "{reply:?}");
    let got = lmtp.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from, "<a@client.test>");
    // The address after the delimiter is stripped: the mailbox, as Dovecot's userdb knows it.
    assert_eq!(got[0].to, [("<bob@example.test>".to_owned(), 250)]);
    let content = String::from_utf8_lossy(&got[0].content);
    assert!(
        content.starts_with("Return-Path: <a@client.test>\r\n"),
        "{content}"
    );
    assert!(
        content.contains("Delivered-To: bob+tag@example.test\r\n"),
        "{content}"
    );
    assert!(content.contains("\tby mx.test with ESMTP id "), "{content}");
    assert!(
        content.contains("\tfor <bob+tag@example.test>;"),
        "{content}"
    );
    assert!(
        content.ends_with("\r\nSubject: over lmtp\r\n\r\nhello\r\n"),
        "{content}"
    );
    // Nothing went to the Maildir.
    assert!(files_under(&dir.path().join("md")).is_empty());
    let log = server.wait_log("the message line", |log| log.contains("message"));
    assert!(log.contains("outcome=\"delivered\""), "{log}");
    assert!(
        log.contains(&format!("lmtp=\"127.0.0.1:{}\"", lmtp.port)),
        "{log}"
    );
}

#[test]
fn mixed_results_name_the_failed_recipient_and_deliver_the_rest() {
    let lmtp = LmtpServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = smtpd(dir.path(), &addr(lmtp.port));
    let body = b"Subject: two\r\n\r\nfor two\r\n";

    // One unknown to the LMTP server (550 at its RCPT), one delivered: the client's bounce
    // must say who did not get it, and that the other did.
    let reply = send(
        server.port(0),
        &["ghost@example.test", "ann@example.test"],
        body,
    );
    assert_eq!(reply.code, 550, "{reply:?}");
    assert_eq!(
        reply.text(),
        "5.1.1 Not delivered to <ghost@example.test> (550 5.1.1 No such user); delivered to the other 1"
    );
    let got = lmtp.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, [("<ann@example.test>".to_owned(), 250)]);
    assert!(
        got[0]
            .content
            .ends_with(b"\r\nSubject: two\r\n\r\nfor two\r\n")
    );

    // A permanent failure after the content (552) is the client's reply for one recipient.
    let reply = send(server.port(0), &["over@example.test"], body);
    assert_eq!((reply.code, reply.text()), (552, "5.2.2 Quota exceeded"));

    // A temporary failure is a 4xx, even though another recipient got the message: the client
    // retries (a duplicate for that one, never a loss for the other).
    let reply = send(
        server.port(0),
        &["ann@example.test", "full@example.test"],
        body,
    );
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(
        reply.text().starts_with(
            "4.2.2 Not delivered to <full@example.test> (452 4.2.2 Mailbox full, try later)"
        ),
        "{reply:?}"
    );
    let got = lmtp.got();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2].to,
        [
            ("<ann@example.test>".to_owned(), 250),
            ("<full@example.test>".to_owned(), 452)
        ]
    );
}

#[test]
fn lmtp_server_down_is_a_temporary_failure() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = smtpd(dir.path(), &addr(port));
    let reply = send(
        server.port(0),
        &["bob@example.test"],
        b"Subject: x\r\n\r\ny\r\n",
    );
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(
        reply.text().starts_with("4.3.0 Local delivery failed"),
        "{reply:?}"
    );
    assert!(files_under(&dir.path().join("md")).is_empty());
}

#[test]
fn a_large_message_over_a_unix_socket_arrives_whole() {
    let lmtp = LmtpServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("lmtp.sock");
    lmtp.forward_unix(&socket);
    let server = smtpd(dir.path(), &format!("unix:{}", socket.display()));
    // Past the 64 KiB memory stage, so the spool file carries most of it.
    let mut body = b"Subject: large\r\n\r\n".to_vec();
    for i in 0..6000 {
        body.extend_from_slice(
            format!("line {i:05} of the large message, .dots kept\r\n").as_bytes(),
        );
    }
    let reply = send(server.port(0), &["bob@example.test"], &body);
    assert_eq!(reply.code, 250, "{reply:?}\n{}", server.log());
    let got = lmtp.got();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].content.ends_with(&body),
        "the content arrived byte for byte"
    );
    let head = got[0].content.len() - body.len();
    assert!(
        got[0].content[..head].starts_with(b"Return-Path: <a@client.test>\r\n"),
        "trace headers first"
    );
}
