//! The application the adapters' own tests use: it accepts everything (AUTH only for
//! `user`/`secret`) and stores what it receives.

#![allow(missing_docs)]

use std::sync::{Arc, Mutex};

use smtpkit_server::blocking::{BlockingHandler, BlockingSession};
use smtpkit_server::{
    CloseReason, Credentials, Decision, EnhancedCode, ForwardPath, Parameters, Reply, ReversePath,
    SessionInfo,
};

/// A received message.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub from: String,
    pub to: Vec<String>,
    pub body: Vec<u8>,
    pub user: Option<String>,
    pub tls: bool,
}

/// What a [`Recorder`] has seen.
#[derive(Debug, Default)]
pub struct Store {
    pub messages: Vec<Message>,
    pub aborted: usize,
    pub peers: Vec<smtpkit_server::Endpoint>,
    pub closes: Vec<CloseReason>,
}

/// A blocking application that records what it receives; wrap it in
/// [`Blocking`](smtpkit_server::blocking::Blocking) for an async adapter.
#[derive(Clone, Debug, Default)]
pub struct Recorder(pub Arc<Mutex<Store>>);

impl Recorder {
    /// The record, locked.
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap()
    }
}

/// The session of a [`Recorder`].
#[derive(Debug)]
pub struct Conn {
    store: Recorder,
    current: Message,
}

impl BlockingHandler for Recorder {
    type Session = Conn;
    fn connect(&self, info: &SessionInfo) -> Result<Conn, Reply<'static>> {
        self.store().peers.push(info.peer.clone());
        Ok(Conn {
            store: self.clone(),
            current: Message::default(),
        })
    }
}

impl BlockingSession for Conn {
    fn auth(&mut self, _: &SessionInfo, _: &str, creds: &Credentials) -> Decision {
        let accepted = match creds {
            Credentials::Password { user, password, .. } => {
                user == "user" && password.expose() == "secret"
            }
            Credentials::Token { user, token } => user == "user" && token.expose() == "ya29.token",
            _ => false,
        };
        if accepted {
            Decision::Accept
        } else {
            Decision::reply(535, EnhancedCode::new(5, 7, 8).unwrap(), "Bad credentials")
        }
    }
    fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.current.from = from.to_string();
        self.current.user = info.authenticated.clone();
        self.current.tls = info.tls;
        Decision::Accept
    }
    fn rcpt_to(&mut self, _: &SessionInfo, to: &ForwardPath<'_>, _: &Parameters<'_>) -> Decision {
        self.current.to.push(to.to_string());
        Decision::Accept
    }
    fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.current.body.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, _: &SessionInfo) -> Decision {
        let m = std::mem::take(&mut self.current);
        self.store.store().messages.push(m);
        Decision::Accept
    }
    fn data_aborted(&mut self, _: &SessionInfo) {
        self.store.store().aborted += 1;
    }
    fn reset(&mut self, _: &SessionInfo) {
        self.current = Message::default();
    }
    fn close(&mut self, _: &SessionInfo, reason: CloseReason) {
        self.store.store().closes.push(reason);
    }
}
