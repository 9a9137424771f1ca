//! Sessions with a destination kept open between deliveries (Postfix's connection cache).
//!
//! A delivery that leaves its session usable puts the connection here instead of sending QUIT;
//! the next delivery to the same address, under the same security, takes it and goes straight
//! to MAIL FROM. It skips the TCP handshake, the greeting, EHLO, STARTTLS with its TLS
//! handshake, and AUTH to a smart host: most of the cost of a small message.
//!
//! - A connection waits here at most [`Limits::idle`] (Postfix's
//!   `smtp_connection_cache_time_limit`, 2 s), then gets its QUIT; one that has been open
//!   [`Limits::max_age`] is not kept again (`smtp_connection_reuse_time_limit`, 300 s).
//! - The key is the address, the name TLS checks the certificate against, and how the session
//!   was secured ([`Class`]): a session opened without a certificate check never carries mail
//!   that must have one. Sessions pinned by DANE are not kept: their trust comes from one
//!   lookup's TLSA records.
//! - A kept connection may have died meanwhile (the server's idle timeout). The caller then
//!   opens a new one and sends again ([`crate::delivery`]): nothing was accepted on the dead one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use smtpkit_tokio::client::Connection;

/// How a kept session was secured; part of the [`Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// No STARTTLS.
    Plaintext,
    /// STARTTLS when offered, any certificate.
    Opportunistic,
    /// STARTTLS with the certificate checked for the host name.
    Verified,
    /// The smart host, with its own TLS settings and AUTH.
    SmartHost,
}

/// Which deliveries may share a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The server's address.
    pub addr: SocketAddr,
    /// The host name: the MX name, or the smart host's.
    pub host: String,
    /// How the session was secured.
    pub class: Class,
}

/// How long connections are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long an unused connection waits for the next delivery.
    pub idle: Duration,
    /// How long after it was opened a connection may still be kept.
    pub max_age: Duration,
}

/// A session taken from the cache, or one to put in it.
#[derive(Debug)]
pub struct Session {
    /// The connection, between transactions.
    pub conn: Connection,
    /// When it was opened.
    pub opened: Instant,
}

#[derive(Debug)]
struct Idle {
    session: Session,
    /// Tells this connection's idle timer whether it is still the one it was started for.
    serial: u64,
}

#[derive(Debug, Default)]
struct Kept {
    by_key: HashMap<Key, Vec<Idle>>,
    next_serial: u64,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    kept: Mutex<Kept>,
}

/// The sessions kept for reuse; cheap to clone, every clone shares them. Needs a tokio runtime:
/// each kept connection has a timer task, and a closed one gets its QUIT from a task.
#[derive(Debug, Clone)]
pub struct ConnectionCache {
    inner: Arc<Inner>,
}

impl ConnectionCache {
    /// An empty cache keeping connections within `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                kept: Mutex::new(Kept::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Nothing panics while holding the lock; if something did, the map is still whole.
        self.inner
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept session for `key`, the most recently used first.
    pub fn take(&self, key: &Key) -> Option<Session> {
        let mut kept = self.lock();
        let sessions = kept.by_key.get_mut(key)?;
        let session = sessions.pop().map(|idle| idle.session);
        if sessions.is_empty() {
            kept.by_key.remove(key);
        }
        session
    }

    /// Keeps `session` for the next delivery to `key`, or closes it when it cannot take another
    /// message or has been open long enough.
    pub fn put(&self, key: Key, session: Session) {
        let limits = self.inner.limits;
        if !session.conn.is_open() || session.opened.elapsed() >= limits.max_age {
            return quit(session.conn);
        }
        let serial = {
            let mut kept = self.lock();
            let serial = kept.next_serial;
            kept.next_serial += 1;
            kept.by_key
                .entry(key.clone())
                .or_default()
                .push(Idle { session, serial });
            serial
        };
        let cache = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limits.idle).await;
            if let Some(conn) = cache.expire(&key, serial) {
                let _ = conn.quit().await;
            }
        });
    }

    /// Removes the connection kept as `serial`, if no delivery took it meanwhile.
    fn expire(&self, key: &Key, serial: u64) -> Option<Connection> {
        let mut kept = self.lock();
        let sessions = kept.by_key.get_mut(key)?;
        let at = sessions.iter().position(|idle| idle.serial == serial)?;
        let idle = sessions.remove(at);
        if sessions.is_empty() {
            kept.by_key.remove(key);
        }
        Some(idle.session.conn)
    }
}

/// Ends `conn` politely, without making anyone wait for the reply.
fn quit(conn: Connection) {
    if conn.is_open() {
        tokio::spawn(async move {
            let _ = conn.quit().await;
        });
    }
}
