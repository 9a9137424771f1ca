//! The outbound queue in smtpd: opening it, and the `smtpd queue` commands.
//!
//! The commands work on the queue directory directly, whether or not a server is running:
//! every state change takes the queue's lock (`<queue>/lock`, `flock(2)`), which the running
//! server's runner takes too, so a `hold` or `delete` never interleaves with the recording of
//! a delivery attempt. A message the server is delivering at that moment finishes its attempt;
//! a deleted message's results are then dropped (its lease is gone with it), a held one is
//! kept held. `flush` and `retry` make messages due at once; a running server picks them up
//! at its next look at the queue, within [`smtpkit_queue::POLL`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use smtpkit_queue::mx::HickoryMx;
use smtpkit_queue::{
    Entry, FileStore, Owner, QueueId, QueueStore, RecipientState, Runner, StoreError,
};
use tracing::{info, warn};

use crate::config::Config;
use crate::delivery::SmtpTransport;

/// What `smtpd queue` can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One line per message.
    List,
    /// Everything about one message, and its headers.
    Show(QueueId),
    /// Every message due now.
    Flush,
    /// One message due now.
    Retry(QueueId),
    /// Never delivered until released.
    Hold(QueueId),
    /// Delivered again.
    Release(QueueId),
    /// Removed without notice.
    Delete(QueueId),
}

/// Opens the configured queue directory.
pub fn open(config: &Config) -> std::io::Result<FileStore> {
    FileStore::open(&config.queue.directory)
}

/// Runs `action` on `store` at `now`; the text to print.
pub fn run(store: &FileStore, action: &Action, now: SystemTime) -> Result<String, StoreError> {
    let mut out = String::new();
    match action {
        Action::List => {
            let entries = store.list()?;
            for e in &entries {
                out.push_str(&line(e, now));
                out.push('\n');
            }
            let _ = writeln!(out, "{} message(s)", entries.len());
        }
        Action::Show(id) => {
            let e = store.show(id)?;
            out.push_str(&line(&e, now));
            out.push('\n');
            for r in &e.recipients {
                let state = match r.state {
                    RecipientState::Pending => "pending",
                    RecipientState::Delivered => "delivered",
                    RecipientState::Failed => "failed",
                };
                let _ = writeln!(
                    out,
                    "  {} {state} {}{}",
                    r.address,
                    r.remote
                        .as_deref()
                        .map(|h| format!("({h}) "))
                        .unwrap_or_default(),
                    r.last_reply.as_deref().unwrap_or("")
                );
            }
            let content = store.content(id)?;
            let end = content
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(content.len(), |i| i + 2);
            out.push_str(&String::from_utf8_lossy(&content[..end]).replace("\r\n", "\n"));
        }
        Action::Flush => {
            let n = store.retry(None, now)?;
            let _ = writeln!(out, "{n} message(s) due now");
        }
        Action::Retry(id) => {
            store.retry(Some(id), now)?;
            let _ = writeln!(out, "{id} due now");
        }
        Action::Hold(id) => {
            store.set_held(id, true)?;
            let _ = writeln!(out, "{id} held");
        }
        Action::Release(id) => {
            store.set_held(id, false)?;
            let _ = writeln!(out, "{id} released");
        }
        Action::Delete(id) => {
            store.delete(id)?;
            let _ = writeln!(out, "{id} deleted");
        }
    }
    Ok(out)
}

/// `id size age state attempts sender -> pending recipients`.
fn line(e: &Entry, now: SystemTime) -> String {
    let age = smtpkit_queue::unix(now).saturating_sub(e.created);
    let state = if e.held {
        "held"
    } else if e.lease.is_some() {
        "active"
    } else if e.next_attempt <= smtpkit_queue::unix(now) {
        "due"
    } else {
        "deferred"
    };
    let pending: Vec<&str> = e
        .recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .map(|r| r.address.as_str())
        .collect();
    format!(
        "{} {} bytes {}s {state} attempts={} <{}> -> {}",
        e.id,
        e.size,
        age,
        e.attempts,
        e.sender.as_deref().unwrap_or(""),
        pending.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtpkit_queue::{Kind, NewMessage};

    #[test]
    fn commands_change_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t0 = smtpkit_queue::from_unix(1_800_000_000);
        let id = store
            .enqueue(
                NewMessage {
                    kind: Kind::Message,
                    sender: Some("a@example.org"),
                    recipients: &["b@example.com".to_owned()],
                    content: b"Subject: hi\r\n\r\nsecret\r\n",
                },
                t0,
            )
            .unwrap();
        let list = run(&store, &Action::List, t0).unwrap();
        assert!(
            list.contains(&format!(
                "{id} 23 bytes 0s due attempts=0 <a@example.org> -> b@example.com"
            )),
            "{list}"
        );
        assert!(run(&store, &Action::Hold(id.clone()), t0).is_ok());
        assert!(run(&store, &Action::List, t0).unwrap().contains(" held "));
        assert!(
            store
                .claim("x/1", t0, std::time::Duration::from_secs(60), 10)
                .unwrap()
                .is_empty()
        );
        run(&store, &Action::Release(id.clone()), t0).unwrap();
        let show = run(&store, &Action::Show(id.clone()), t0).unwrap();
        assert!(
            show.contains("b@example.com pending") && show.contains("Subject: hi"),
            "{show}"
        );
        assert!(!show.contains("secret"), "{show}");
        run(&store, &Action::Delete(id.clone()), t0).unwrap();
        assert!(matches!(
            run(&store, &Action::Show(id), t0),
            Err(StoreError::NotFound(_))
        ));
        assert!(
            run(&store, &Action::List, t0)
                .unwrap()
                .ends_with("0 message(s)\n")
        );
    }
}

/// A running queue: what sessions need to queue mail, and the runner's task.
#[derive(Debug)]
pub struct Running {
    /// The store, for the receiver.
    pub store: Arc<FileStore>,
    /// Wakes the runner after a message is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Per-user sending counts (`[relay] rate`): they live as long as the queue, so a reload
    /// does not reset them.
    pub rate: Arc<crate::relay::SendRate>,
    /// Ends the runner (it finishes the round in progress).
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// What the receiver needs, with the current `[relay]` section and DKIM keys.
    #[must_use]
    pub fn outbound(
        &self,
        relay: &crate::config::Relay,
        signer: Arc<crate::dkim_sign::Signer>,
    ) -> crate::relay::Outbound {
        crate::relay::Outbound {
            store: Arc::clone(&self.store),
            wake: Arc::clone(&self.wake),
            relay: relay.clone(),
            signer,
            rate: Arc::clone(&self.rate),
        }
    }

    /// Stops the runner after its current round.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Opens the queue, takes back what an earlier run of this instance was delivering when it
/// stopped, and starts the runner on the current tokio runtime with the SMTP transport.
pub async fn start(config: &Config) -> Result<Running, String> {
    let dir = &config.queue.directory;
    let store = Arc::new(open(config).map_err(|e| format!("queue {}: {e}", dir.display()))?);
    let sweep = Arc::clone(&store);
    // What a crash left half-written; an hour is far longer than any enqueue takes.
    match tokio::task::spawn_blocking(move || {
        sweep.sweep(SystemTime::now(), Duration::from_secs(3600))
    })
    .await
    {
        Ok(Ok(n)) if n > 0 => info!(removed = n, "queue: removed files a crash left behind"),
        Ok(Err(e)) => warn!(error = %e, "queue: sweeping leftovers failed"),
        _ => {}
    }
    let d = &config.delivery;
    let resolver = config
        .dns
        .resolver_config()
        .and_then(|(c, o)| HickoryMx::with_options(c, o))
        .map_err(|e| format!("DNS resolver: {e}"))?;
    let mut transport = SmtpTransport::new(resolver.clone(), &config.hostname, d)?;
    if d.mta_sts.enabled {
        transport =
            transport.with_mta_sts(resolver.resolver().clone(), &d.mta_sts, dir.join("mta-sts"));
    }
    if d.dane {
        // A second resolver: validation changes what every lookup costs, and only TLSA needs it.
        let (c, mut o) = config
            .dns
            .resolver_config()
            .map_err(|e| format!("DNS resolver: {e}"))?;
        o.validate = true;
        let validating =
            HickoryMx::with_options(c, o).map_err(|e| format!("DNSSEC resolver: {e}"))?;
        transport = transport.with_dane(validating.resolver().clone());
    }
    if d.tls_report {
        transport = transport.with_tls_report(crate::tls_report::Recorder::new(dir));
    }
    let runner = Arc::new(Runner::new(
        Arc::clone(&store),
        Arc::new(transport),
        config.queue.schedule.clone(),
        Owner::new(&config.queue.instance),
        &config.hostname,
    ));
    match runner.recover().await {
        Ok(n) if n > 0 => info!(
            messages = n,
            "queue: retrying what the last run was delivering"
        ),
        Ok(_) => {}
        Err(e) => return Err(format!("queue {}: {e}", dir.display())),
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let wake = runner.waker();
    let stopped = Arc::clone(&stop);
    let task = tokio::spawn(async move { runner.run(stopped.notified()).await });
    info!(directory = %dir.display(), instance = config.queue.instance.as_str(), "queue running");
    Ok(Running {
        store,
        wake,
        rate: Arc::new(crate::relay::SendRate::new(&config.relay)),
        stop,
        task,
    })
}
