//! Outputs: reply bytes to write, the next deadline, and the core's own replies.

use std::time::Instant;

use super::Server;
use crate::reply::encode::{write_reply, write_u64};
use crate::reply::{EnhancedCode, ReplyCode};

impl Server {
    /// Reply bytes waiting to be written.
    #[must_use]
    pub fn poll_transmit(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `written` bytes of [`poll_transmit`](Self::poll_transmit) reached the socket.
    pub fn advance_transmit(&mut self, written: usize) {
        self.sent = (self.sent + written).min(self.out.len());
        if self.sent == self.out.len() {
            // Keep the capacity: the output buffer is reused for the whole session.
            self.out.clear();
            self.sent = 0;
        }
    }

    /// The next deadline; call [`handle_timeout`](Self::handle_timeout) when it passes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Writes a reply the core makes itself.
    pub(super) fn send(&mut self, code: ReplyCode, enhanced: EnhancedCode, text: &str) {
        let e = self.config.enhanced() && code.class() != 3;
        write_reply(&mut self.out, code, e.then_some(enhanced), text);
    }

    /// `250 2.0.0 <n> octets received` (RFC 3030 2 example), written without allocating.
    pub(super) fn send_octets_received(&mut self, size: u64) {
        self.out.extend_from_slice(b"250 ");
        if self.config.enhanced() {
            self.out.extend_from_slice(b"2.0.0 ");
        }
        write_u64(&mut self.out, size);
        self.out.extend_from_slice(b" octets received\r\n");
    }
}
