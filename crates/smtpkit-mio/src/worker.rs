//! An event loop: one `mio::Poll`, a slab of connections and a deadline heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use slab::Slab;
use smtpkit_server::Handler;
use tracing::{error, warn};

use crate::Shared;
use crate::accept::{Accepted, Inbox};
use crate::conn::{Conn, Drive};
use crate::control::Control;
use smtpkit_server::State;

const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per `poll` call.
const EVENTS: usize = 1024;

/// A deadline entry: (when, slab key, generation). Entries are never removed early; a stale
/// one (the connection is gone, or has an earlier entry) is skipped when it comes up.
type Deadline = Reverse<(Instant, usize, u64)>;

pub(crate) struct Worker<H: Handler> {
    shared: Arc<Shared<H>>,
    control: Arc<Control>,
    index: usize,
    poll: Poll,
    waker: Arc<Waker>,
    tx: mpsc::Sender<Accepted>,
    rx: mpsc::Receiver<Accepted>,
    conns: Slab<Conn<H::Session>>,
    heap: BinaryHeap<Deadline>,
    next_generation: u64,
    state: State,
    /// The accept thread has hung up: no more connections will come.
    acceptor_gone: bool,
    /// Connections to drive again without waiting for an event.
    again: Vec<(usize, u64)>,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        shared: Arc<Shared<H>>,
        control: Arc<Control>,
        index: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        control.add_waker(Arc::clone(&waker));
        let (tx, rx) = mpsc::channel();
        Ok(Self {
            shared,
            control,
            index,
            poll,
            waker,
            tx,
            rx,
            conns: Slab::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            state: State::Running,
            acceptor_gone: false,
            again: Vec::new(),
        })
    }

    /// Where the accept thread sends this loop's connections.
    pub(crate) fn inbox(&self) -> Inbox {
        (self.tx.clone(), Arc::clone(&self.waker))
    }

    /// Serves connections until the server stops and the last one has closed.
    pub(crate) fn run(mut self) {
        // Only the accept thread may keep the channel open, so that its hang-up is seen.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, dead));
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = if self.again.is_empty() {
                self.heap
                    .peek()
                    .map(|Reverse((t, ..))| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!(error = %e, loop_index = self.index, "event loop poll failed");
                break;
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    woken = true;
                    continue;
                }
                let key = ev.token().0;
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    conn.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    conn.writable = true;
                }
                let generation = conn.generation;
                self.run_conn(key, generation, false);
            }
            for (key, generation) in std::mem::take(&mut self.again) {
                self.run_conn(key, generation, false);
            }
            if woken {
                self.take_new();
                self.check_state();
            }
            self.fire_timers();
            if self.state != State::Running && self.acceptor_gone && self.conns.is_empty() {
                break;
            }
        }
        // Only after a poll failure: nothing more can be served.
        for conn in self.conns.drain() {
            conn.finish();
        }
    }

    fn take_new(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(accepted) => {
                    let generation = self.next_generation;
                    self.next_generation += 1;
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let conn = entry.insert(Conn::new(&self.shared, accepted, generation));
                    let shared = &self.shared;
                    let drive = catch_unwind(AssertUnwindSafe(|| conn.start(shared)));
                    self.after(key, drive);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.acceptor_gone = true;
                    break;
                }
            }
        }
    }

    /// Passes a lifecycle change on to every connection.
    fn check_state(&mut self) {
        let state = self.control.state();
        if state == self.state {
            return;
        }
        self.state = state;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            let generation = conn.generation;
            match conn.apply_state(state) {
                Drive::Close => self.after(key, Ok(Drive::Close)),
                Drive::Keep { .. } => self.run_conn(key, generation, false),
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(&Reverse((t, key, generation))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            due.push((t, key, generation));
        }
        for (t, key, generation) in due {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation || conn.queued != Some(t) {
                continue;
            }
            conn.queued = None;
            if conn.deadline().is_some_and(|d| d <= now) {
                self.run_conn(key, generation, true);
            } else {
                self.schedule(key);
            }
        }
    }

    /// Drives one connection; a panicking handler closes its connection, not the loop.
    fn run_conn(&mut self, key: usize, generation: u64, timeout: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        let shared = &self.shared;
        let drive = catch_unwind(AssertUnwindSafe(|| {
            if timeout {
                conn.on_timeout(shared)
            } else {
                conn.drive(shared)
            }
        }));
        self.after(key, drive);
    }

    fn after(&mut self, key: usize, drive: std::thread::Result<Drive>) {
        match drive {
            Ok(Drive::Keep { again }) => {
                let conn = &mut self.conns[key];
                let wanted = conn.wanted_interest();
                if conn.interest != Some(wanted) {
                    let registry = self.poll.registry();
                    let token = Token(key);
                    let result = if conn.interest.is_some() {
                        registry.reregister(conn.socket_mut(), token, wanted)
                    } else {
                        registry.register(conn.socket_mut(), token, wanted)
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "cannot register a connection");
                        self.remove(key);
                        return;
                    }
                    conn.interest = Some(wanted);
                }
                if again {
                    self.again.push((key, conn.generation));
                }
                self.schedule(key);
            }
            Ok(Drive::Close) => self.remove(key),
            Err(_) => {
                error!("session panicked; closing its connection");
                let mut conn = self.conns.remove(key);
                let _ = self.poll.registry().deregister(conn.socket_mut());
            }
        }
    }

    /// Makes sure the heap has an entry no later than the connection's deadline.
    fn schedule(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Some(d) = conn.deadline()
            && conn.queued.is_none_or(|q| d < q)
        {
            self.heap.push(Reverse((d, key, conn.generation)));
            conn.queued = Some(d);
        }
    }

    fn remove(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        if conn.interest.is_some() {
            let _ = self.poll.registry().deregister(conn.socket_mut());
        }
        if catch_unwind(AssertUnwindSafe(|| conn.finish())).is_err() {
            error!("session panicked while closing");
        }
    }
}
