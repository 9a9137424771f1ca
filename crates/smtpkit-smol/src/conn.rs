//! One connection: PROXY header, limits, implicit TLS, then the core's run loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use smol::channel;
use smtpkit_proto::{InBuf, Server, ServerConfig};
use smtpkit_server::proxy::{MAX_V2_HEADER, ProxyHeader, parse_proxy_header};
use smtpkit_server::{Dispatcher, Handler, ListenerKind, SessionInfo};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::stream::{Rewind, Stream};
use crate::{Shared, State};

/// The input buffer starts at 4 KiB, enough for a pipelined envelope, so idle sessions stay
/// small; it grows to 64 KiB for bulk content.
const INBUF_INITIAL: usize = 4 * 1024;
const INBUF_MAX: usize = 64 * 1024;
/// After an abort, the last reply gets this long to leave before the socket is dropped.
const ABORT_FLUSH: Duration = Duration::from_secs(1);

fn now() -> Instant {
    Instant::now()
}

/// A deadline passed before the operation finished.
#[derive(Debug)]
struct Elapsed;

/// Runs `fut` for at most `limit`, like `tokio::time::timeout`.
///
/// The timer is polled only when `fut` is pending, so an operation that completes at once never
/// registers a timer with the reactor.
async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, Elapsed> {
    future::or(async { Ok(fut.await) }, async {
        Timer::after(limit).await;
        Err(Elapsed)
    })
    .await
}

/// Decrements the open-connection gauge however the task ends.
struct OpenGauge<H: Handler>(Arc<Shared<H>>);

impl<H: Handler> Drop for OpenGauge<H> {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// Serves one accepted TCP connection to its end. `_alive` is dropped when it returns, which
/// tells shutdown this connection is gone.
pub(crate) async fn serve<H: Handler>(
    shared: Arc<Shared<H>>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    config: Arc<ServerConfig>,
    _alive: channel::Sender<()>,
) {
    shared.metrics.connection_opened();
    let _gauge = OpenGauge(Arc::clone(&shared));
    // Replies are small and latency-bound; do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(peer);

    let (io, peer, local) = match &shared.settings.proxy {
        None => (Rewind::new(tcp, Vec::new()), peer, local),
        Some(proxy) if !proxy.trusted.contains(peer.ip()) => {
            debug!(%peer, "PROXY protocol: untrusted source, closing");
            shared.metrics.connection_refused();
            return;
        }
        Some(proxy) => {
            let mut tcp = tcp;
            match timeout(proxy.timeout, read_proxy_header(&mut tcp)).await {
                Ok(Ok((header, rest))) => {
                    let (p, l) = match header {
                        ProxyHeader::Proxied {
                            source,
                            destination,
                            ..
                        } => (source, destination),
                        _ => (peer, local),
                    };
                    (Rewind::new(tcp, rest), p, l)
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "PROXY protocol: bad header, closing");
                    shared.metrics.connection_refused();
                    return;
                }
                Err(Elapsed) => {
                    debug!(%peer, "PROXY protocol: header timeout, closing");
                    shared.metrics.connection_refused();
                    return;
                }
            }
        }
    };

    let _guard = match shared.limiter.try_acquire(peer.ip()) {
        Ok(guard) => guard,
        Err(e) => {
            info!(%peer, reason = %e, "connection refused");
            shared.metrics.connection_refused();
            // An implicit TLS client cannot read a plaintext reply; it just sees the close.
            if !kind.implicit_tls() {
                refuse_over_limit(io, &e.reply_bytes(&shared.settings.hostname)).await;
            }
            return;
        }
    };

    let stream = if kind.implicit_tls() {
        let Some(acceptor) = &shared.tls else {
            // `build` refuses implicit TLS listeners without a certificate.
            return;
        };
        match timeout(shared.settings.tls_handshake_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                shared.metrics.tls_handshake_failed();
                return;
            }
            Err(Elapsed) => {
                debug!(%peer, "TLS handshake timed out");
                shared.metrics.tls_handshake_failed();
                return;
            }
        }
    } else {
        Stream::Plain(io)
    };

    let info = SessionInfo::new(peer, local, kind).with_tls(kind.implicit_tls());
    let span = info_span!("smtp", id = %info.id, %peer, listener = %kind);
    run_session(shared, stream, info, config)
        .instrument(span)
        .await;
}

/// Reads a PROXY header; returns it with the bytes read past it.
async fn read_proxy_header(tcp: &mut TcpStream) -> io::Result<(ProxyHeader, Vec<u8>)> {
    let mut buf = [0u8; MAX_V2_HEADER];
    let mut len = 0;
    // Every header is decided within MAX_V2_HEADER octets, so this ends in as many reads.
    while len < buf.len() {
        let n = tcp.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        match parse_proxy_header(&buf[..len]) {
            Ok(Some((header, used))) => return Ok((header, buf[used..len].to_vec())),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        smtpkit_server::ProxyError::TooLong,
    ))
}

/// `421 4.7.0` straight on the socket: no core session is started for a refused connection.
async fn refuse_over_limit(mut io: Rewind<TcpStream>, line: &[u8]) {
    let _ = timeout(ABORT_FLUSH, async {
        io.write_all(line).await?;
        io.close().await
    })
    .await;
}

/// What ended one wait of the run loop.
enum Wake {
    /// The server's lifecycle state changed.
    State,
    /// A read finished.
    Read(io::Result<usize>),
    /// The core's deadline passed.
    Timeout,
}

/// The core's run loop (see the `smtpkit_proto` crate docs) over `stream`.
async fn run_session<H: Handler>(
    shared: Arc<Shared<H>>,
    mut stream: Stream,
    info: SessionInfo,
    config: Arc<ServerConfig>,
) {
    let started = now();
    let mut server = Server::new(config, now());
    if info.tls {
        server.handle_tls_established(now());
    }
    let mut dispatcher = Dispatcher::connect(
        &*shared.handler,
        &mut server,
        info,
        Some(Arc::clone(&shared.metrics)),
        now,
    )
    .await;
    let lifecycle = &shared.lifecycle;
    // Listen before reading the state, so a change in between still wakes us.
    let mut changes = lifecycle.listen();
    let mut seen = lifecycle.state();
    let mut inbuf = InBuf::new(INBUF_INITIAL, INBUF_MAX);
    let write_timeout = server.config().options().timeouts.command;
    let decision_limit = server.config().options().timeouts.decision;
    let mut aborted = false;
    let mut watching = seen != State::Abort;
    let mut error: Option<io::Error> = None;
    // One timer for the whole session, moved only when the core's deadline moves.
    let mut timer = Timer::never();
    let mut timer_at: Option<Instant> = None;
    apply_state(&mut server, seen, &mut aborted);

    // Each round reads, times out, or changes state; every one of those moves the session
    // towards its end, and the core's deadlines bound the whole.
    loop {
        // 2. Handle every event the buffered input yields.
        loop {
            let progress = server.handle_input(now(), inbuf.data());
            let Some(event) = progress.event else {
                inbuf.consume(progress.consumed);
                break;
            };
            // A handler that never answers must not hold the session (or a shutdown) forever:
            // past the core's decision deadline the session gets 421 4.4.2 and closes.
            if timeout(decision_limit, dispatcher.handle(&mut server, event, now))
                .await
                .is_err()
            {
                warn!("handler did not answer within the decision timeout");
                server.handle_timeout(now() + decision_limit);
                inbuf.consume(inbuf.data().len());
                break;
            }
            inbuf.consume(progress.consumed);
        }
        // 4. Write everything out before blocking on a read.
        let limit = if aborted { ABORT_FLUSH } else { write_timeout };
        if let Err(e) = flush(&mut stream, &mut server, limit).await {
            error = Some(e);
            break;
        }
        // 5. STARTTLS: the core has dropped any plaintext pipelined after the command.
        if server.wants_tls_handshake() {
            inbuf.consume(inbuf.data().len());
            stream = upgrade(&shared, stream, &mut server).await;
            continue;
        }
        if server.is_closed() {
            break;
        }
        // 1. Wait for input (if the core wants it), the next deadline, or a shutdown.
        let deadline = server.poll_timeout();
        // `or` favours the read, so a peer that keeps input flowing would never let the timer
        // win: check the deadline here too.
        if deadline.is_some_and(|at| at <= now()) {
            server.handle_timeout(now());
            continue;
        }
        // The idle deadline moves forward with every command; re-arming the reactor's timer
        // each time costs more than the session's own work. So the timer only moves earlier:
        // if it fires before the real deadline, `handle_timeout` does nothing and it is re-armed.
        if let Some(at) = deadline
            && timer_at.is_none_or(|armed| at < armed)
        {
            timer.set_at(at);
            timer_at = Some(at);
        }
        let wants_input = server.wants_input();
        let state_changed = async {
            if watching {
                (&mut changes).await;
                Wake::State
            } else {
                future::pending().await
            }
        };
        let read = async {
            if wants_input {
                Wake::Read(stream.read(inbuf.spare()).await)
            } else {
                future::pending().await
            }
        };
        let timed_out = async {
            (&mut timer).await;
            Wake::Timeout
        };
        // `or` polls in order: a ready read never touches the timer.
        match future::or(state_changed, future::or(read, timed_out)).await {
            Wake::State => {
                changes = lifecycle.listen();
                let state = lifecycle.state();
                if state != seen {
                    seen = state;
                    apply_state(&mut server, state, &mut aborted);
                }
                // Abort is final: nothing else can change.
                watching = state != State::Abort;
            }
            Wake::Read(read) => match read {
                Ok(0) => server.handle_eof(now()),
                Ok(n) => inbuf.commit(n),
                Err(e) if is_disconnect(&e) => server.handle_eof(now()),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            },
            Wake::Timeout => {
                // A fired timer stays idle until it is set again.
                timer_at = None;
                server.handle_timeout(now());
            }
        }
    }

    // Last gasp: whatever is queued (a 421, say) goes out, then the socket closes.
    if error.is_none() {
        let _ = flush(&mut stream, &mut server, ABORT_FLUSH).await;
        let _ = timeout(ABORT_FLUSH, stream.close()).await;
    }
    drop(stream);
    let reason = server.close_reason();
    match &error {
        Some(e) => info!(
            error = %e,
            duration_ms = started.elapsed().as_millis() as u64,
            "session ended"
        ),
        None => info!(
            reason = %reason.map_or("connection lost".into(), |r| r.to_string()),
            duration_ms = started.elapsed().as_millis() as u64,
            "session ended"
        ),
    }
    dispatcher.close(&server).await;
}

fn apply_state(server: &mut Server, state: State, aborted: &mut bool) {
    match state {
        State::Running => {}
        State::Draining => server.handle_shutdown(now()),
        State::Abort => {
            *aborted = true;
            server.handle_abort(now());
        }
    }
}

/// Writes all of `poll_transmit`; each write may take at most `limit`, so a client that
/// never reads cannot hold the session.
async fn flush(stream: &mut Stream, server: &mut Server, limit: Duration) -> io::Result<()> {
    while !server.poll_transmit().is_empty() {
        let n = match timeout(limit, stream.write(server.poll_transmit())).await {
            Ok(r) => r?,
            Err(Elapsed) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        server.advance_transmit(n);
    }
    match timeout(limit, stream.flush()).await {
        Ok(r) => r,
        Err(Elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "flush timed out")),
    }
}

/// Runs the STARTTLS handshake and reports it to the core.
async fn upgrade<H: Handler>(shared: &Shared<H>, stream: Stream, server: &mut Server) -> Stream {
    let (Some(acceptor), Stream::Plain(io)) = (&shared.tls, stream) else {
        // STARTTLS is only offered with a certificate, and only once.
        warn!("STARTTLS accepted without a plain stream or a certificate");
        server.handle_tls_failed(now());
        return Stream::Closed;
    };
    match timeout(shared.settings.tls_handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => {
            debug!("STARTTLS handshake done");
            server.handle_tls_established(now());
            Stream::Tls(Box::new(tls))
        }
        Ok(Err(e)) => {
            debug!(error = %e, "STARTTLS handshake failed");
            shared.metrics.tls_handshake_failed();
            server.handle_tls_failed(now());
            Stream::Closed
        }
        Err(Elapsed) => {
            debug!("STARTTLS handshake timed out");
            shared.metrics.tls_handshake_failed();
            server.handle_tls_failed(now());
            Stream::Closed
        }
    }
}

/// A peer that vanishes, with or without TLS close_notify, is an ordinary end of session.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
