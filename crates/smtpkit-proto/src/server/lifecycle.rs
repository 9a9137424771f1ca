//! The session's life outside commands: TLS, end of input, shutdown, close.

use std::time::Instant;

use super::{Mode, Server};
use crate::error::CloseReason;
use crate::reply::{EnhancedCode, ReplyCode};

impl Server {
    /// The client closed its side of the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        self.close(CloseReason::PeerEof);
    }

    /// The TLS handshake finished: after STARTTLS, or at once for implicit TLS (RFC 8314),
    /// which may be reported before the first input. After STARTTLS everything learned in
    /// plaintext is forgotten (RFC 3207 4.2): the client must send EHLO again.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.tls = true;
        if self.mode == Mode::TlsHandshake {
            self.hello = None;
            self.drop_transaction();
            self.authenticated = false;
            self.mode = Mode::Command;
            self.arm_idle(now);
        }
    }

    /// The TLS handshake failed; the session is over.
    pub fn handle_tls_failed(&mut self, _now: Instant) {
        self.close(CloseReason::TlsFailed);
    }

    /// Graceful shutdown: a session with an open transaction may finish it; otherwise, and
    /// right after it, `421 4.3.2` is queued and the session closes.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        if self.closed.is_some() {
            return;
        }
        self.draining = true;
        self.maybe_drain();
    }

    /// Immediate shutdown: queue `421 4.3.2` and close, transaction or not.
    pub fn handle_abort(&mut self, _now: Instant) {
        if self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SYSTEM_SHUTDOWN,
                "Server shutting down",
            );
            self.close(CloseReason::Shutdown);
        }
    }

    pub(super) fn maybe_drain(&mut self) {
        let idle = self.txn.is_none()
            && self.pending.is_none()
            && matches!(
                self.mode,
                Mode::Command | Mode::Connect | Mode::GreetingDelay
            );
        if self.draining && idle && self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SYSTEM_SHUTDOWN,
                "Server shutting down",
            );
            self.close(CloseReason::Shutdown);
        }
    }

    pub(super) fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        self.mode = Mode::Closed;
        self.pending = None;
        self.timers.clear();
    }
}
