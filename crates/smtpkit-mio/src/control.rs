//! [`Control`]: the server's threads, their wakers and the lifecycle they follow, shared by
//! every [`ServerHandle`].
//!
//! [`ServerHandle`]: crate::ServerHandle

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smtpkit_server::{Lifecycle, State};
use tracing::warn;

/// Shared lifecycle state, the wakers of every thread, and the threads to join.
#[derive(Debug)]
pub(crate) struct Control {
    lifecycle: Arc<Lifecycle>,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// Server threads still running.
    live: Mutex<usize>,
    stopped: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single step, so a panic cannot leave them torn.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Control {
    pub(crate) fn new(lifecycle: Arc<Lifecycle>) -> Self {
        Self {
            lifecycle,
            wakers: Mutex::new(Vec::new()),
            live: Mutex::new(0),
            stopped: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.lifecycle.state()
    }

    /// Moves the lifecycle forward to `state` (never back) and wakes every thread.
    pub(crate) fn set_state(&self, state: State) {
        self.lifecycle.advance(state);
        self.wake_all();
    }

    /// Stops accepting ([`Lifecycle::close`]) and wakes every thread: the accept thread
    /// closes the listeners, and the loops then hear of the shutdown.
    pub(crate) fn close(&self) {
        self.lifecycle.close();
        self.wake_all();
    }

    pub(crate) fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    pub(crate) fn add_waker(&self, waker: Arc<mio::Waker>) {
        lock(&self.wakers).push(waker);
    }

    pub(crate) fn wake_all(&self) {
        for w in lock(&self.wakers).iter() {
            if let Err(e) = w.wake() {
                warn!(error = %e, "cannot wake an event loop");
            }
        }
    }

    /// Spawns a server thread; it counts as live until `f` returns (or panics).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        struct Live(Arc<Control>);
        impl Drop for Live {
            fn drop(&mut self) {
                *lock(&self.0.live) -= 1;
                self.0.stopped.notify_all();
            }
        }
        *lock(&self.live) += 1;
        let live = Live(Arc::clone(self));
        match thread::Builder::new().name(name).spawn(move || {
            let _live = live;
            f();
        }) {
            Ok(handle) => {
                lock(&self.threads).push(handle);
                Ok(())
            }
            // The closure, and with it the `Live` guard, was dropped: the count is right.
            Err(e) => Err(e),
        }
    }

    /// Waits until no server thread runs, for at most `limit`; returns whether they all ended.
    pub(crate) fn wait_stopped(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|d| Instant::now() + d);
        let mut live = lock(&self.live);
        while *live > 0 {
            match deadline {
                None => {
                    live = self
                        .stopped
                        .wait(live)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    live = self
                        .stopped
                        .wait_timeout(live, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        true
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *lock(&self.live) == 0
    }

    /// Joins the threads that have not been joined yet.
    pub(crate) fn join(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let name = t.thread().name().unwrap_or("?").to_owned();
            if t.join().is_err() {
                warn!(thread = %name, "server thread panicked");
            }
        }
    }
}
