//! [`Lifecycle`]: a server's running → closing → draining → abort state, watched by its accept
//! loops and sessions, and the counts of listeners still open and of tasks that still serve.

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
    /// The listeners are closing; sessions carry on as if running. Once the last listener
    /// is closed the server moves on to [`Draining`](Self::Draining), so a client that hears
    /// `421 4.3.2` can no longer connect, and a connection accepted meanwhile hears it too.
    Closing = 1,
    /// Not accepting; sessions may finish their transaction, then get `421 4.3.2`.
    Draining = 2,
    /// The grace period is over: every session gets `421 4.3.2` now.
    Abort = 3,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Closing,
            2 => Self::Draining,
            _ => Self::Abort,
        }
    }

    /// Tells a session's core about this state; returns whether the session was aborted
    /// (its last reply then gets only a short time to leave).
    pub fn apply(self, server: &mut Server, now: std::time::Instant) -> bool {
        match self {
            Self::Running | Self::Closing => false,
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
    /// Listeners not closed yet; see [`State::Closing`].
    listeners: AtomicUsize,
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
            listeners: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            idle: Event::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        // SeqCst, with the stores of `advance` and the listener count: `close` and the last
        // listener's guard each write one and read the other, and one of them must see both.
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// A listener that fires on the next change. Create it before reading the state, so a
    /// change in between is not missed.
    pub fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// Moves the state forward to `to` (never back) and wakes every watcher; returns whether
    /// it changed.
    pub fn advance(&self, to: State) -> bool {
        let before = self.state.fetch_max(to as u8, Ordering::SeqCst);
        let changed = before < to as u8;
        if changed {
            self.changed.notify(usize::MAX);
        }
        changed
    }

    /// Stops the server accepting: [`Closing`](State::Closing) while listeners are open,
    /// [`Draining`](State::Draining) once none is (at once when there are none).
    pub fn close(&self) {
        self.advance(State::Closing);
        if self.listeners.load(Ordering::SeqCst) == 0 {
            self.advance(State::Draining);
        }
    }

    /// Counts a listener as open until the guard drops; drop it once the listening socket
    /// is closed. An accept loop takes one before it starts, and leaves when the state is no
    /// longer `Running`.
    pub fn listener(self: &Arc<Self>) -> ListenerGuard {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        ListenerGuard(Arc::clone(self))
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

/// An open listener of a server; see [`Lifecycle::listener`].
#[derive(Debug)]
#[must_use = "the listener counts as open only while the guard lives"]
pub struct ListenerGuard(Arc<Lifecycle>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let lifecycle = &self.0;
        if lifecycle.listeners.fetch_sub(1, Ordering::SeqCst) == 1
            && lifecycle.state() >= State::Closing
        {
            lifecycle.advance(State::Draining);
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

    #[test]
    fn sessions_hear_of_a_close_once_every_listener_is_closed() {
        let l = Arc::new(Lifecycle::new());
        let (a, b) = (l.listener(), l.listener());
        l.close();
        assert_eq!(l.state(), State::Closing);
        drop(a);
        assert_eq!(l.state(), State::Closing);
        drop(b);
        assert_eq!(l.state(), State::Draining);

        // Listeners that closed before the server did (an accept loop that failed).
        let l = Arc::new(Lifecycle::new());
        drop(l.listener());
        assert_eq!(l.state(), State::Running);
        l.close();
        assert_eq!(l.state(), State::Draining);

        // After an abort, a listener closing late moves nothing back.
        let l = Arc::new(Lifecycle::new());
        let a = l.listener();
        l.close();
        l.advance(State::Abort);
        drop(a);
        assert_eq!(l.state(), State::Abort);
    }

    #[test]
    fn close_racing_the_last_listener_always_reaches_draining() {
        for _ in 0..200 {
            let l = Arc::new(Lifecycle::new());
            let guard = l.listener();
            let closer = {
                let l = Arc::clone(&l);
                std::thread::spawn(move || l.close())
            };
            // The accept loop leaves once it sees the state move, as the driver's does.
            while l.state() == State::Running {
                std::hint::spin_loop();
            }
            drop(guard);
            closer.join().unwrap();
            assert_eq!(l.state(), State::Draining);
        }
    }
}
