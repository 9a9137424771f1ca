//! Runs a [`Conversation`] against an [`Adapter`] and keeps the transcript.

use std::fmt;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{Client, IO_TIMEOUT};
use crate::conversation::{CONVERSATIONS, Calls, Conversation, Step, base_settings};
use crate::handler::{RecordingHandler, escape};
use crate::pki::Pki;
use crate::{Adapter, ServerSpec};

/// The pause after each byte of [`Step::Drip`]: long enough that every byte is its own read.
const DRIP_PAUSE: Duration = Duration::from_micros(500);
/// How long a flooding write may block before the client stops writing.
const FLOOD_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the last step, how long sessions get to report their close.
const SETTLE: Duration = Duration::from_secs(10);
/// How long a shutdown may take once started.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// At most this many bytes are read while waiting for the end of a connection.
const EOF_READ_CAP: usize = 1 << 20;

/// What one adapter did in one conversation: comparable across adapters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// The conversation.
    pub conversation: &'static str,
    /// Every byte each connection read, in connection order.
    pub received: Vec<Vec<u8>>,
    /// The application's calls, rendered, when the conversation fixes them exactly
    /// (`None` for [`Calls::Check`] conversations, whose calls depend on timing).
    pub calls: Option<Vec<Vec<String>>>,
    /// The first expectation that failed, if any.
    pub failure: Option<String>,
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conversation {}", self.conversation)?;
        for (i, bytes) in self.received.iter().enumerate() {
            writeln!(f, "  connection {i} read {}", escape(bytes))?;
        }
        if let Some(calls) = &self.calls {
            for (i, s) in calls.iter().enumerate() {
                writeln!(f, "  session {i} calls {s:?}")?;
            }
        }
        if let Some(failure) = &self.failure {
            writeln!(f, "  FAILED: {failure}")?;
        }
        Ok(())
    }
}

/// Looks a conversation up by name.
///
/// # Panics
///
/// If there is none by that name.
pub fn conversation(name: &str) -> &'static Conversation {
    CONVERSATIONS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conversation named {name}"))
}

/// Runs the conversation `name` against `A` and panics with the transcript if any
/// expectation fails. This is what each generated test calls.
pub fn run<A: Adapter>(name: &str) -> Transcript {
    let conv = conversation(name);
    let transcript = execute::<A>(conv);
    if let Some(failure) = &transcript.failure {
        panic!("[{}] {}\n{failure}\n{transcript}", A::NAME, conv.about);
    }
    transcript
}

/// Runs every conversation against `A` and `B` and lists the conversations whose
/// transcripts differ (or that failed), with both transcripts.
pub fn compare<A: Adapter, B: Adapter>() -> Vec<String> {
    let mut differences = Vec::new();
    for conv in CONVERSATIONS {
        let a = execute::<A>(conv);
        let b = execute::<B>(conv);
        if a != b || a.failure.is_some() {
            differences.push(format!("{}:\n{}{a}{}{b}", conv.name, A::NAME, B::NAME));
        }
    }
    differences
}

/// Runs one conversation against `A`; never panics on a mismatch, which is recorded in
/// [`Transcript::failure`] instead.
pub fn execute<A: Adapter>(conv: &Conversation) -> Transcript {
    let pki = Pki::get();
    let mut settings = base_settings();
    (conv.settings)(&mut settings);
    let handler = RecordingHandler::new();
    // Unix sockets live in a directory of this run's own, removed at the end.
    let dir = tempfile::Builder::new()
        .prefix("smtp-test-unix-")
        .tempdir()
        .expect("temporary directory");
    let unix: Vec<_> = (conv.listeners.iter().enumerate())
        .map(|(i, l)| l.unix.then(|| dir.path().join(format!("listener{i}.sock"))))
        .collect();
    let mut spec = ServerSpec::new(
        settings,
        conv.listeners.iter().map(|l| l.settings()).collect(),
        conv.tls.then(|| std::sync::Arc::clone(&pki.server)),
        handler.clone(),
    );
    spec.unix.clone_from(&unix);
    let mut running = A::start(spec);
    let mut run = Run {
        endpoints: running.endpoints.clone(),
        pki,
        handler: &handler,
        clients: Vec::new(),
        current: 0,
        shutdown: None,
        running: &mut running,
    };
    let mut failure = run.steps(conv.steps).err();
    let received: Vec<Vec<u8>> = run
        .clients
        .iter_mut()
        .map(|c| std::mem::take(&mut c.received))
        .collect();
    // Clients that are still open leave now; every session must then end on its own.
    for c in &mut run.clients {
        c.disconnect();
    }
    let pending_shutdown = run.shutdown.take();
    drop(run);
    if failure.is_none() {
        failure = settle(&handler).err();
    }
    if let Some(t) = pending_shutdown {
        let _ = t.join();
    }
    running.shutdown(Duration::ZERO);
    // A stopped server leaves no socket file behind.
    if let Some(path) = unix.iter().flatten().find(|p| p.exists())
        && failure.is_none()
    {
        failure = Some(format!("{} still exists after shutdown", path.display()));
    }
    let record = handler.record();
    let calls = match conv.calls {
        Calls::Exact(expected) => {
            let got = record.render();
            if failure.is_none() && got != expected {
                failure = Some(format!(
                    "application calls differ\n  expected {expected:#?}\n  got {got:#?}"
                ));
            }
            Some(got)
        }
        Calls::Check(check) => {
            if failure.is_none() {
                failure = check(&record).err();
            }
            None
        }
    };
    Transcript {
        conversation: conv.name,
        received,
        calls,
        failure,
    }
}

/// Waits until every session the handler saw has closed.
fn settle(handler: &RecordingHandler) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let record = handler.record();
        if record.closed() == record.sessions.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "sessions still open {SETTLE:?} after the conversation: {:?}",
                record.render()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

struct Run<'a> {
    endpoints: Vec<crate::Endpoint>,
    pki: &'static Pki,
    handler: &'a RecordingHandler,
    clients: Vec<Client>,
    current: usize,
    shutdown: Option<JoinHandle<()>>,
    running: &'a mut crate::Running,
}

impl Run<'_> {
    fn steps(&mut self, steps: &[Step]) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            self.step(step)
                .map_err(|e| format!("step {i} {step:?} on connection {}: {e}", self.current))?;
        }
        Ok(())
    }

    fn client(&mut self) -> Result<&mut Client, String> {
        self.clients
            .get_mut(self.current)
            .ok_or_else(|| "no connection".to_owned())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Connect => self.step(&Step::ConnectTo(0))?,
            Step::ConnectTo(n) => {
                let addr = self.endpoints.get(n).ok_or(format!("no listener {n}"))?;
                let c = Client::connect(addr).map_err(|e| format!("connect: {e}"))?;
                self.clients.push(c);
                self.current = self.clients.len() - 1;
            }
            Step::Use(n) => {
                if n >= self.clients.len() {
                    return Err(format!("no connection {n}"));
                }
                self.current = n;
            }
            Step::Send(bytes) => self.client()?.send(bytes).map_err(|e| e.to_string())?,
            Step::Fill(byte, count) => self
                .client()?
                .send(&vec![byte; count])
                .map_err(|e| e.to_string())?,
            Step::Drip(bytes) => {
                let c = self.client()?;
                for b in bytes {
                    c.send(std::slice::from_ref(b)).map_err(|e| e.to_string())?;
                    thread::sleep(DRIP_PAUSE);
                }
            }
            Step::Pause(ms) => thread::sleep(Duration::from_millis(ms)),
            Step::Expect(expected) => {
                let deadline = Instant::now() + IO_TIMEOUT;
                let got = self
                    .client()?
                    .read_up_to(expected.len(), deadline)
                    .map_err(|e| format!("read: {e}"))?;
                if got != expected {
                    return Err(format!(
                        "expected {}\n       got {}",
                        escape(expected),
                        escape(got)
                    ));
                }
            }
            Step::ExpectClose => {
                let (extra, eof) = self
                    .client()?
                    .read_to_end(EOF_READ_CAP, Instant::now() + IO_TIMEOUT);
                if !extra.is_empty() {
                    return Err(format!("expected the end, got {}", escape(&extra)));
                }
                if !eof {
                    return Err(format!("the server did not close within {IO_TIMEOUT:?}"));
                }
            }
            Step::StartTls => {
                let pki = self.pki;
                self.client()?
                    .start_tls(pki)
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            }
            Step::Disconnect => self.client()?.disconnect(),
            Step::Flood { chunk, max } => {
                let written = self.client()?.flood(chunk, max, FLOOD_WRITE_TIMEOUT);
                if written == 0 {
                    return Err("could not write anything".into());
                }
            }
            Step::Shutdown(grace_ms) => {
                let shutdown = self
                    .running
                    .take_shutdown()
                    .ok_or("the server is already shutting down")?;
                let grace = Duration::from_millis(grace_ms);
                self.shutdown = Some(thread::spawn(move || shutdown(grace)));
            }
            Step::AwaitShutdown => {
                let t = self.shutdown.take().ok_or("no shutdown was started")?;
                let deadline = Instant::now() + SHUTDOWN_LIMIT;
                while !t.is_finished() {
                    if Instant::now() >= deadline {
                        return Err(format!("shutdown took over {SHUTDOWN_LIMIT:?}"));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                t.join().map_err(|_| "shutdown panicked")?;
            }
            Step::ExpectRefused => {
                for addr in &self.endpoints {
                    if Client::connect(addr).is_ok() {
                        return Err(format!("a new connection to {addr} was accepted"));
                    }
                }
            }
            Step::AwaitClosed {
                sessions,
                within_ms,
            } => {
                let deadline = Instant::now() + Duration::from_millis(within_ms);
                loop {
                    let closed = self.handler.record().closed();
                    if closed >= sessions {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{closed} of {sessions} sessions closed after {within_ms} ms: {:?}",
                            self.handler.record().render()
                        ));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }
            Step::Group(steps) => self.steps(steps)?,
        }
        Ok(())
    }
}
