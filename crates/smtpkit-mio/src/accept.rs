//! The accept thread: takes connections from every listener and deals them out round-robin
//! to the event loops.

use std::io;
use std::sync::{Arc, mpsc};

use mio::{Events, Interest, Poll, Token, Waker};
use smtpkit_server::driver::{ACCEPT_BACKOFF, ListenerConfig};
use smtpkit_server::{Endpoint, ListenerGuard, State};
use tracing::{info, warn};

use crate::control::Control;
use crate::socket::{ListenSocket, Socket};

const WAKER: Token = Token(usize::MAX);

pub(crate) struct Listener {
    pub(crate) listener: ListenSocket,
    pub(crate) addr: Endpoint,
    pub(crate) config: Arc<ListenerConfig>,
}

/// A connection on its way to an event loop.
pub(crate) struct Accepted {
    pub(crate) socket: Socket,
    pub(crate) peer: Endpoint,
    pub(crate) local: Endpoint,
    pub(crate) listener: Arc<ListenerConfig>,
}

/// Where to send a connection: an event loop's channel and its waker.
pub(crate) type Inbox = (mpsc::Sender<Accepted>, Arc<Waker>);

pub(crate) struct Acceptor {
    poll: Poll,
    listeners: Vec<Listener>,
    inboxes: Vec<Inbox>,
    control: Arc<Control>,
    /// Holds the server in [`State::Closing`] until the listeners are closed.
    open: ListenerGuard,
}

impl Acceptor {
    pub(crate) fn new(
        mut listeners: Vec<Listener>,
        inboxes: Vec<Inbox>,
        control: Arc<Control>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut l.listener, Token(i), Interest::READABLE)?;
        }
        control.add_waker(Arc::new(Waker::new(poll.registry(), WAKER)?));
        let open = control.lifecycle().listener();
        Ok(Self {
            poll,
            listeners,
            inboxes,
            control,
            open,
        })
    }

    pub(crate) fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Accepts until the server stops running, then closes the listeners and tells the loops
    /// no more connections will come.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut next = 0usize;
        let mut backoff = None;
        while self.control.state() == State::Running {
            if let Err(e) = self.poll.poll(&mut events, backoff) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "accept poll failed");
                break;
            }
            if self.control.state() != State::Running {
                break;
            }
            backoff = None;
            // Edge-triggered: every listener is drained until WouldBlock (a few listeners, so
            // trying all of them on any wake-up is cheap and also covers retries after errors).
            for l in &self.listeners {
                loop {
                    match l.listener.accept() {
                        Ok((socket, peer, local)) => {
                            let (tx, waker) = &self.inboxes[next % self.inboxes.len()];
                            next = next.wrapping_add(1);
                            let accepted = Accepted {
                                socket,
                                peer,
                                local,
                                listener: Arc::clone(&l.config),
                            };
                            // A loop only hangs up after this thread has; a failure means it
                            // died, and dropping the connection is all that is left to do.
                            if tx.send(accepted).is_ok()
                                && let Err(e) = waker.wake()
                            {
                                warn!(error = %e, "cannot wake an event loop");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn!(error = %e, addr = %l.addr, "accept failed");
                            backoff = Some(ACCEPT_BACKOFF);
                            break;
                        }
                    }
                }
            }
        }
        for l in &self.listeners {
            info!(addr = %l.addr, "listener closed");
        }
        drop(self.listeners);
        // Sessions hear of the shutdown now, when the loops wake up below.
        drop(self.open);
        // Hanging up tells each loop that the channel is drained for good.
        let wakers: Vec<_> = self.inboxes.into_iter().map(|(_, w)| w).collect();
        for w in wakers {
            let _ = w.wake();
        }
    }
}
