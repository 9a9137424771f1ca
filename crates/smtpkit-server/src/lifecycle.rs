//! [`Lifecycle`]: a server's running → draining → abort state, watched by its accept loops and
//! sessions, and the count of tasks that still serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use event_listener::{Event, EventListener};
use smtpkit_proto::Server;

/// Where a server is in its life; it only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// Accepting and serving.
    Running = 0,
    /// Not accepting; sessions may finish their transaction, then get `421 4.3.2`.
    Draining = 1,
    /// The grace period is over: every session gets `421 4.3.2` now.
    Abort = 2,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Draining,
            _ => Self::Abort,
        }
    }

    /// Tells a session's core about this state; returns whether the session was aborted
    /// (its last reply then gets only a short time to leave).
    pub fn apply(self, server: &mut Server, now: std::time::Instant) -> bool {
        match self {
            Self::Running => false,
            Self::Draining => {
                server.handle_shutdown(now);
                false
            }
            Self::Abort => {
                server.handle_abort(now);
                true
            }
        }
    }
}

/// The lifecycle [`State`] every task of a server watches, and the tasks still alive.
///
/// Runtime-free: waiting uses [`event_listener`], which works under any executor.
#[derive(Debug)]
pub struct Lifecycle {
    state: AtomicU8,
    changed: Event,
    tasks: AtomicUsize,
    idle: Event,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A running server with no tasks.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(State::Running as u8),
            changed: Event::new(),
            tasks: AtomicUsize::new(0),
            idle: Event::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// A listener that fires on the next change. Create it before reading the state, so a
    /// change in between is not missed.
    pub fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// Moves the state forward to `to` (never back) and wakes every watcher; returns whether
    /// it changed.
    pub fn advance(&self, to: State) -> bool {
        let before = self.state.fetch_max(to as u8, Ordering::AcqRel);
        let changed = before < to as u8;
        if changed {
            self.changed.notify(usize::MAX);
        }
        changed
    }

    /// Resolves once the state is no longer `Running`.
    pub async fn stopped(&self) {
        loop {
            if self.state() != State::Running {
                return;
            }
            let listener = self.listen();
            if self.state() != State::Running {
                return;
            }
            listener.await;
        }
    }

    /// Counts a task (an accept loop, a connection) as alive until the guard drops.
    pub fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(Arc::clone(self))
    }

    /// Whether the server has stopped: no longer running, and every task has ended.
    pub fn is_stopped(&self) -> bool {
        self.state() != State::Running && self.tasks.load(Ordering::Acquire) == 0
    }

    /// Resolves once no task is alive.
    pub async fn idle(&self) {
        loop {
            if self.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            let listener = self.idle.listen();
            if self.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// A live task of a server; see [`Lifecycle::task`].
#[derive(Debug)]
#[must_use = "the task counts as alive only while the guard lives"]
pub struct TaskGuard(Arc<Lifecycle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_only_and_stopped_once_idle() {
        let l = Arc::new(Lifecycle::new());
        let task = l.task();
        assert!(l.advance(State::Draining));
        assert!(!l.advance(State::Running));
        assert_eq!(l.state(), State::Draining);
        assert!(!l.is_stopped());
        drop(task);
        assert!(l.is_stopped());
        assert!(l.advance(State::Abort));
        assert!(!l.advance(State::Draining));
        assert_eq!(l.state(), State::Abort);
    }
}
