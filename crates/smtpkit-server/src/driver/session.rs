//! [`SessionCore`]: one SMTP session's runtime-free half of the run loop, shared by the async
//! driver and the mio event loop: the core, the dispatcher, the input buffer, the connection's
//! place in the limits, and the rules for deadlines, lifecycle changes and the session's end.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use smtpkit_proto::{InBuf, Server, ServerConfig};
use tracing::{info, warn};

use crate::dispatch::Dispatcher;
use crate::handler::{Handler, Session, SessionInfo};
use crate::lifecycle::State;
use crate::limit::ConnectionGuard;
use crate::metrics::Metrics;

use super::Runtime;
use super::transcript::{self, Transcript};
use crate::tls_info::TlsInfo;

/// The input buffer starts at 4 KiB, enough for a pipelined envelope, so idle sessions stay
/// small; it grows to 64 KiB for bulk content.
const INBUF_INITIAL: usize = 4 * 1024;
const INBUF_MAX: usize = 64 * 1024;
/// After an abort, the last reply gets this long to leave before the socket is dropped.
pub const ABORT_FLUSH: Duration = Duration::from_secs(1);
/// Input buffers a thread keeps for the next session that reads: without a pool, a client
/// that waits for each reply (no pipelining) costs an allocation, zeroing and free of 4 KiB on
/// every command. At most this many, so idle connections still hold no buffer.
const POOLED_INBUFS: usize = 16;

thread_local! {
    static INBUF_POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Runs `fut` until the core's deadline `at`; `Err(())` if the deadline came first.
///
/// The timer is polled only when `fut` is pending, so an operation that completes at once
/// never registers a timer with the runtime.
pub(crate) async fn until<R: Runtime, T>(
    at: Option<Instant>,
    fut: impl Future<Output = T>,
) -> Result<T, ()> {
    let Some(at) = at else {
        return Ok(fut.await);
    };
    let fut = pin!(fut);
    let timer = R::timer(at);
    future::or(async { Ok(fut.await) }, async {
        timer.await;
        Err(())
    })
    .await
}

/// One session: the core [`Server`], the [`Dispatcher`] that calls the application, the
/// input buffer, and the connection's place in the limits.
#[derive(Debug)]
pub struct SessionCore<S> {
    /// The protocol core.
    pub server: Server,
    dispatcher: Dispatcher<S>,
    /// Input read but not yet consumed by the core.
    pub inbuf: InBuf,
    guard: Option<ConnectionGuard>,
    seen: State,
    aborted: bool,
    started: Instant,
    transcript: Transcript,
    metrics: Arc<Metrics>,
}

impl<S: Session> SessionCore<S> {
    /// Starts a session: the core with `config`, the application's `connect`, the lifecycle
    /// `state` the server is in. `guard` is the connection's place in the limits; it is
    /// released as soon as the session ends.
    pub async fn start<H: Handler<Session = S>>(
        handler: &H,
        metrics: &Arc<Metrics>,
        config: Arc<ServerConfig>,
        info: SessionInfo,
        guard: Option<ConnectionGuard>,
        state: State,
    ) -> Self {
        let started = now();
        let mut server = Server::new(config, started);
        metrics.session_started();
        if info.tls {
            server.handle_tls_established(now());
            metrics.tls_handshake_succeeded();
        }
        let dispatcher =
            Dispatcher::connect(handler, &mut server, info, Some(Arc::clone(metrics)), now).await;
        let transcript = Transcript::default();
        if transcript::enabled() {
            transcript.server(server.poll_transmit());
        }
        let mut this = Self {
            server,
            dispatcher,
            inbuf: InBuf::new(INBUF_INITIAL, INBUF_MAX),
            guard,
            seen: State::Running,
            aborted: false,
            started,
            transcript,
            metrics: Arc::clone(metrics),
        };
        this.apply_state(state);
        this
    }

    /// Step 2 of the run loop: hands every event the buffered input yields to the application.
    ///
    /// Each handler call is bounded by the deadline the core itself set for that event (the
    /// decision timeout for a decision, the data-block timeout for a body chunk): a handler
    /// that does not answer in time gets the session `421 4.4.2` from the core's own
    /// timeout, and the session is over: the dispatcher is only ever asked to close after that.
    pub async fn handle_input<R: Runtime>(&mut self) {
        let tracing = transcript::enabled();
        loop {
            let mark = self.server.poll_transmit().len();
            let progress = self.server.handle_input(now(), self.inbuf.data());
            let Some(event) = progress.event else {
                if tracing {
                    self.transcript.server(&self.server.poll_transmit()[mark..]);
                }
                self.inbuf.consume(progress.consumed);
                break;
            };
            if tracing {
                let input = &self.inbuf.data()[..progress.consumed];
                let in_auth = self.dispatcher.in_auth_exchange();
                self.transcript.client(&event, input, in_auth);
            }
            let deadline = self.server.poll_timeout();
            // Boxed: the handler's future is the largest state of a session's task, and
            // kept inline it would be paid for by every idle connection, not only by those
            // inside a handler call.
            let call = Box::pin(self.dispatcher.handle(&mut self.server, event, now));
            if until::<R, _>(deadline, call).await.is_err() {
                warn!("handler did not answer within the core's deadline");
                // The runtime's timer fired for the core's deadline; a timer wheel may round
                // down by a tick, so the core is told no earlier than its own deadline.
                self.server
                    .handle_timeout(now().max(deadline.unwrap_or_else(now)));
                let all = self.inbuf.data().len();
                self.inbuf.consume(all);
                if tracing {
                    self.transcript.server(&self.server.poll_transmit()[mark..]);
                }
                break;
            }
            if tracing {
                self.transcript.server(&self.server.poll_transmit()[mark..]);
            }
            self.inbuf.consume(progress.consumed);
        }
        self.release_if_closed();
    }

    /// The STARTTLS handshake has finished with `tls`: the core and the application hear of it.
    pub async fn secured(&mut self, tls: TlsInfo) {
        self.server.handle_tls_established(now());
        self.metrics.tls_handshake_succeeded();
        tracing::debug!(
            version = tls.version_name(),
            sni = tls.sni.as_deref().unwrap_or(""),
            "STARTTLS handshake done"
        );
        self.dispatcher.secured(&self.server, tls).await;
    }

    /// Free space to read into (see [`InBuf::spare`]), in a pooled allocation when the
    /// buffer had given its own back.
    pub fn read_buffer(&mut self) -> &mut [u8] {
        if self.inbuf.capacity() == 0
            && let Some(pooled) = INBUF_POOL.with_borrow_mut(Vec::pop)
        {
            // An empty buffer takes it: nothing comes back.
            let _ = self.inbuf.reuse(pooled);
        }
        self.inbuf.spare()
    }

    /// A read would block: the input buffer goes back to the thread's pool if it holds no
    /// input, so a connection waiting for its client holds none (see [`InBuf::release_if_empty`]).
    pub fn release_read_buffer(&mut self) {
        if let Some(buf) = self.inbuf.release_if_empty()
            && buf.len() == INBUF_INITIAL
        {
            INBUF_POOL.with_borrow_mut(|pool| {
                if pool.len() < POOLED_INBUFS {
                    pool.push(buf);
                }
            });
        }
    }

    /// The session's info as the application last saw it.
    pub fn info(&self) -> &SessionInfo {
        self.dispatcher.info()
    }

    /// Runs `step` on the core and logs the replies it queued.
    fn traced(&mut self, step: impl FnOnce(&mut Self)) {
        let mark = self.server.poll_transmit().len();
        step(self);
        if transcript::enabled() {
            self.transcript.server(&self.server.poll_transmit()[mark..]);
        }
    }

    /// Passes a lifecycle change to the core (once per state).
    pub fn apply_state(&mut self, state: State) {
        if state > self.seen {
            self.seen = state;
            self.traced(|this| this.aborted |= state.apply(&mut this.server, now()));
            self.release_if_closed();
        }
    }

    /// The lifecycle state last applied.
    pub fn seen_state(&self) -> State {
        self.seen
    }

    /// Tells the core a deadline may have passed.
    pub fn handle_timeout(&mut self) {
        self.traced(|this| this.server.handle_timeout(now()));
        self.release_if_closed();
    }

    /// Tells the core the client has gone.
    pub fn handle_eof(&mut self) {
        self.traced(|this| this.server.handle_eof(now()));
        self.release_if_closed();
    }

    /// How long one write may block: the command timeout, so a client that never reads
    /// cannot hold the session; after an abort only [`ABORT_FLUSH`].
    pub fn write_limit(&self) -> Duration {
        if self.aborted {
            ABORT_FLUSH
        } else {
            self.server.config().options().timeouts.command
        }
    }

    /// Frees the connection's place in the limits once the core has closed, before the last
    /// reply is written: a client that reconnects as soon as it reads `221` must find its
    /// place free.
    fn release_if_closed(&mut self) {
        if self.server.is_closed() {
            self.guard = None;
        }
    }

    /// Ends the session: logs why and tells the application. `error` is the IO error that
    /// ended it, if any.
    pub async fn end(mut self, error: Option<&(dyn fmt::Display + Sync)>) {
        self.guard = None;
        let duration = self.started.elapsed();
        self.metrics.session_ended(duration);
        let duration_ms = duration.as_millis() as u64;
        match error {
            Some(e) => info!(error = %e, duration_ms, "session ended"),
            None => info!(
                reason = %self
                    .server
                    .close_reason()
                    .map_or("connection lost".into(), |r| r.to_string()),
                duration_ms,
                "session ended"
            ),
        }
        self.dispatcher.close(&self.server).await;
    }
}
