//! The client's two deadlines: the oldest outstanding reply, and content the server does not
//! take (RFC 5321 4.5.3.2).

use std::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timers {
    /// When the reply at the head of the queue is overdue.
    pub(crate) reply: Option<Instant>,
    /// When content output that has not moved is overdue (4.5.3.2.5).
    pub(crate) block: Option<Instant>,
}

impl Timers {
    pub(crate) fn next(&self) -> Option<Instant> {
        match (self.reply, self.block) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}
