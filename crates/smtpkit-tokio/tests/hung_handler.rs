//! A handler that never answers cannot hold a session, or a shutdown, forever: past the core's
//! decision deadline the client gets 421 4.4.2 and the session closes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Raw, T, eventually, settings};
use smtpkit_tokio::{
    CloseReason, Decision, ForwardPath, Handler, ListenerKind, Parameters, Reply, Session,
    SessionInfo, SmtpServer,
};

#[derive(Clone, Default)]
struct Hangs {
    closed: Arc<AtomicUsize>,
}

struct Stuck(Arc<AtomicUsize>);

impl Handler for Hangs {
    type Session = Stuck;
    async fn connect(&self, _: &SessionInfo) -> Result<Stuck, Reply<'static>> {
        Ok(Stuck(Arc::clone(&self.closed)))
    }
}

impl Session for Stuck {
    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        _: &ForwardPath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        std::future::pending().await
    }
    async fn close(&mut self, _: &SessionInfo, _: CloseReason) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn hung_handler_gets_421_at_the_decision_deadline() {
    let mut cfg = settings();
    cfg.timeouts.decision = Duration::from_millis(300);
    let handler = Hangs::default();
    let server = SmtpServer::builder(handler.clone())
        .settings(cfg)
        .listener(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
            ListenerKind::Smtp,
        )
        .build()
        .await
        .unwrap()
        .spawn();
    let mut c = Raw::greeted(server.local_addrs()[0]).await;
    c.send("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
        .await;
    c.expect("250-mx.test").await;
    c.expect("250 2.1.0").await;
    c.expect("421 4.4.2").await;
    assert_eq!(c.reply().await, "", "the session closes after the 421");
    let closed = Arc::clone(&handler.closed);
    eventually(move || closed.load(Ordering::SeqCst) == 1).await;
    tokio::time::timeout(T, server.shutdown(Duration::from_millis(100)))
        .await
        .expect("shutdown is not held by the hung handler");
}
