//! The SMTP side of smtpd: a [`Handler`] whose sessions route recipients, stream each message
//! into the store with `Return-Path:` and `Received:` prepended, and answer 250 only once every
//! copy is durable.
//!
//! Nothing here blocks an async worker. File IO (create, write, fsync, link) runs on the
//! blocking pool, at most [`STORAGE_CONCURRENCY`] operations at once, each bounded by the
//! storage timeout: a store that stalls (a frozen or dying disk) costs the sessions that use it
//! a `451 4.3.0`, never the greeting of the next client. Content is staged in memory up to
//! [`STAGE_BYTES`] and handed over in one piece, so a small message costs one trip to the pool.
//! Password checks go through a bounded [`CheckPool`], behind per-client and per-user failure
//! limits that hold across sessions.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use smtpkit_proto::address::DomainPart;
use smtpkit_server::rdns::ReverseName;
use smtpkit_server::{
    CloseReason, Credentials, Decision, EnhancedCode, FailureLimiter, ForwardPath, Handler,
    ListenerKind, Parameters, Reply, ReplyCode, ReversePath, Session, SessionInfo, Verdict,
};
use tracing::{debug, info, warn};

use crate::checks::{self, Action, Checker, Iprev, MessageStream, Policy, SessionFacts, Spf};
use crate::config::Config;
use crate::lmtp::{self, Lmtp, Spool};
use crate::maildir::{DeliveryReceipt, MessageWriter, Store};
use crate::password::{Accounts, CheckPool};
use crate::rcpt_policy::{Rcpt, RcptPolicy, SessionPolicy};
use crate::relay::{self, Outbound};
use crate::routing::{MailboxPath, Resolution, Router};

/// What a running server consults; swapped as a whole on reload (SIGHUP).
#[derive(Debug)]
pub struct State {
    /// The name in `Received:` headers.
    pub hostname: String,
    /// Recipient routing.
    pub router: Router,
    /// Where messages go.
    pub store: Store,
    /// AUTH accounts.
    pub accounts: Accounts,
    /// The queue for authenticated users' mail to other domains; `None`: never relay.
    pub outbound: Option<Outbound>,
    /// DNSBL and greylisting at RCPT.
    pub rcpt_policy: RcptPolicy,
    /// Mail authentication (`[checks]`); `None` when off.
    pub checks: Option<Arc<Checker>>,
    /// Local mail goes to this LMTP server instead of `store` (`[storage] lmtp`).
    pub lmtp: Option<Lmtp>,
}

/// Storage operations running at once on the blocking pool. Enough for every session of a
/// busy server to have a write or a commit in flight, and a bound on the threads a stalled disk
/// can pin (tokio's own bound is 512).
pub const STORAGE_CONCURRENCY: usize = 64;

/// Content staged in memory before it is handed to the store in one write: most mail fits, so
/// it costs a single trip to the blocking pool; larger mail streams in pieces of this size.
pub const STAGE_BYTES: usize = 64 * 1024;

/// What outlives a configuration reload: the password-check pool, the failure counts and the
/// storage bounds.
#[derive(Debug)]
pub struct Guards {
    checks: CheckPool,
    by_ip: FailureLimiter<IpAddr>,
    by_user: FailureLimiter<String>,
    storage: Arc<tokio::sync::Semaphore>,
    storage_timeout: Duration,
}

impl Guards {
    /// The bounds `[auth]` and `[limits.timeouts]` describe.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let window = Duration::from_secs(config.auth.window);
        Self {
            checks: CheckPool::new(config.auth.checks as usize),
            by_ip: FailureLimiter::new(config.auth.failures_per_ip, window),
            by_user: FailureLimiter::new(config.auth.failures_per_user, window),
            storage: Arc::new(tokio::sync::Semaphore::new(STORAGE_CONCURRENCY)),
            storage_timeout: config.limits.timeouts.storage(),
        }
    }

    /// Runs `work` on the blocking pool, at most [`STORAGE_CONCURRENCY`] at once (a task keeps
    /// its permit until it ends, even when nobody waits for it any more). `None` if it panicked.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = Arc::clone(&self.storage).acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .ok()
    }

    /// [`blocking`](Self::blocking) within the storage timeout; `None` when it did not finish
    /// in time (it may still be running).
    async fn store<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        tokio::time::timeout(self.storage_timeout, self.blocking(work))
            .await
            .ok()
            .flatten()
    }
}

/// The server-wide handler; holds the current [`State`].
#[derive(Debug, Clone)]
pub struct Receiver {
    state: Arc<std::sync::RwLock<Arc<State>>>,
    guards: Arc<Guards>,
}

impl Receiver {
    /// A handler serving `state` within `guards`.
    pub fn new(state: State, guards: Guards) -> Self {
        Self {
            state: Arc::new(std::sync::RwLock::new(Arc::new(state))),
            guards: Arc::new(guards),
        }
    }

    /// Replaces the state for sessions that start from now on.
    pub fn replace(&self, state: State) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(state);
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(
            &self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Handler for Receiver {
    type Session = Conversation;

    async fn connect(&self, info: &SessionInfo) -> Result<Conversation, Reply<'static>> {
        // At debug: the session line at the end says all of it, and a line per connection is
        // CPU that one-message-per-connection load pays on every message.
        debug!(session = %info.id, peer = %info.peer, listener = %info.listener, tls = info.tls, "connect");
        Ok(Conversation {
            state: self.current(),
            guards: Arc::clone(&self.guards),
            txn: None,
            messages: 0,
            rejected: 0,
            policy: SessionPolicy::default(),
            iprev: None,
        })
    }
}

/// One connection.
#[derive(Debug)]
pub struct Conversation {
    state: Arc<State>,
    guards: Arc<Guards>,
    txn: Option<Transaction>,
    messages: u32,
    rejected: u32,
    policy: SessionPolicy,
    /// The client's reverse DNS, looked up with the first checked MAIL FROM.
    iprev: Option<Iprev>,
}

#[derive(Debug, Default)]
struct Transaction {
    from: String,
    /// Envelope recipients as given, for logs and the `for` clause.
    rcpts: Vec<String>,
    /// Mailboxes to deliver to, deduplicated.
    mailboxes: Vec<MailboxPath>,
    /// Recipients in other domains (relayed for an authenticated user), `local@domain`.
    remote: Vec<String>,
    /// The whole message for the queue, when `remote` is not empty.
    outbound: Option<Vec<u8>>,
    /// The DKIM body hash of `outbound`'s content, when it may be signed.
    body_hash: Option<crate::dkim_sign::BodyHash>,
    /// The store's writer, once the first staged piece went out (the sink's from the start).
    writer: Option<MessageWriter>,
    /// Content not yet handed to the store, trace headers first.
    staged: Vec<u8>,
    /// Octets of the message so far, trace headers included.
    size: u64,
    /// The first bytes of the content, to find the Subject for the log line.
    head: Vec<u8>,
    failed: Option<String>,
    /// Set when the session stopped waiting for the store, so a late commit delivers nothing.
    abandoned: Arc<AtomicBool>,
    /// The sink counts inline; nothing is staged.
    sink: bool,
    /// The MAIL FROM address without angle brackets (empty for the null sender).
    sender: String,
    /// SPF from MAIL FROM time; `None` when the session is not checked.
    spf: Option<Spf>,
    /// The strictest policy of the recipients' domains.
    policy: Option<Policy>,
    /// The content on its way through the checks.
    stream: Option<MessageStream>,
    /// Octets of smtpd's own trace headers at the start of the message: the checks' results go
    /// right after them, below our `Received:` (they were made after it), above the message's.
    trace_len: usize,
    /// With LMTP delivery, the content past the memory stage.
    spool: Option<Spool>,
}

/// Hands `chunk` through the checks' stream (when there is one) and appends what may be stored.
fn stage(staged: &mut Vec<u8>, stream: Option<&mut MessageStream>, chunk: &[u8]) {
    match stream {
        Some(stream) => {
            let passed = stream.write(chunk);
            staged.extend_from_slice(passed.header.unwrap_or_default());
            staged.extend_from_slice(passed.body);
        }
        None => staged.extend_from_slice(chunk),
    }
}

/// How much of the content is kept to find the Subject header.
const HEAD_BYTES: usize = 8 * 1024;

/// A refusal, through smtpkit-server's one reply builder (which never panics: unusable parts
/// become 451 4.3.0).
fn reply(code: ReplyCode, enhanced: EnhancedCode, text: &str) -> Decision {
    Decision::reply(code.get(), enhanced, text)
}

fn try_again_later() -> Decision {
    reply(
        ReplyCode::LOCAL_ERROR,
        EnhancedCode::SYSTEM_TRANSIENT,
        "Local error in processing; try again later",
    )
}

impl Conversation {
    fn is_sink(&self) -> bool {
        matches!(self.state.store, Store::Sink(_))
    }

    fn abort(&mut self) {
        if let Some(txn) = self.txn.as_mut() {
            txn.abandoned.store(true, Ordering::Release);
            if let Some(writer) = txn.writer.take() {
                // Removing the tmp/ file is file IO too: off the async worker, unbounded by the
                // storage permits (it must happen even when they are exhausted) but detached.
                if self.is_sink() {
                    writer.abort();
                } else {
                    tokio::task::spawn_blocking(move || writer.abort());
                }
            }
        }
    }

    /// Drops a transaction that was already taken out of the session, with its file.
    fn abort_with(&mut self, txn: Transaction) {
        self.txn = Some(txn);
        self.abort();
        self.txn = None;
    }

    /// Hands the staged content to the store, starting the message file first if needed.
    async fn write_staged(&mut self) {
        if self.state.lmtp.is_some() {
            return self.spool_staged().await;
        }
        let store = self.state.store.clone();
        let storage_timeout = self.guards.storage_timeout;
        let Some(txn) = self.txn.as_mut() else { return };
        let writer = txn.writer.take();
        let mailboxes = if writer.is_none() {
            txn.mailboxes.clone()
        } else {
            Vec::new()
        };
        let mut staged = std::mem::take(&mut txn.staged);
        let cancelled = AbandonOnDrop(Some(Arc::clone(&txn.abandoned)));
        let written = self
            .guards
            .store(move || {
                let result = match writer {
                    Some(writer) => Ok(writer),
                    None => store.begin(b"", &mailboxes),
                }
                .and_then(|mut writer| writer.write_chunk(&staged).map(|()| writer));
                staged.clear();
                (result, staged)
            })
            .await;
        cancelled.disarm();
        match written {
            Some((Ok(writer), staged)) => {
                txn.writer = Some(writer);
                txn.staged = staged;
            }
            Some((Err(e), _)) => txn.failed = Some(e.to_string()),
            None => {
                txn.abandoned.store(true, Ordering::Release);
                txn.failed = Some(stalled(storage_timeout));
            }
        }
    }

    /// LMTP delivery: moves the staged content to the spool file, on the blocking pool.
    async fn spool_staged(&mut self) {
        let storage_timeout = self.guards.storage_timeout;
        let Some(txn) = self.txn.as_mut() else { return };
        let spool = txn.spool.take();
        let staged = std::mem::take(&mut txn.staged);
        let trace_len = txn.trace_len;
        match self
            .guards
            .store(move || Spool::append(spool, staged, trace_len))
            .await
        {
            Some(Ok((spool, staged))) => {
                txn.spool = Some(spool);
                txn.staged = staged;
            }
            Some(Err(e)) => txn.failed = Some(format!("spooling for LMTP: {e}")),
            None => txn.failed = Some(stalled(storage_timeout)),
        }
    }

    /// Hands a finished message to the LMTP server; its replies decide the reply to DATA.
    async fn deliver_lmtp(
        &mut self,
        info: &SessionInfo,
        lmtp: Lmtp,
        mut txn: Transaction,
        results: String,
        auth: &str,
    ) -> Decision {
        let subject = subject(&txn.head);
        let ehlo = info.ehlo.as_deref().unwrap_or("");
        let to = txn.rcpts.join(",");
        let staged = std::mem::take(&mut txn.staged);
        let message = match (txn.failed.take(), txn.spool.take()) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(lmtp::in_memory(staged, txn.trace_len, results.as_bytes())),
            (None, Some(spool)) => self
                .guards
                .store(move || spool.into_message(results.as_bytes(), staged))
                .await
                .unwrap_or_else(|| Err(io::Error::other("the spool did not answer")))
                .map_err(|e| format!("spooling for LMTP: {e}")),
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                self.rejected += 1;
                warn!(session = %info.id, peer = %info.peer, ehlo, from = txn.from.as_str(), to = to.as_str(), subject = subject.as_str(), size = txn.size, error = error.as_str(), auth, outcome = "failed", "message");
                return try_again_later();
            }
        };
        let delivery = lmtp.deliver(&txn.sender, &txn.mailboxes, message).await;
        let addresses: Vec<String> = txn.mailboxes.iter().map(lmtp::mailbox_address).collect();
        let (code, enhanced, text) = lmtp::reply_to_data(&addresses, &delivery);
        let lmtp_address = lmtp.address().to_string();
        if code.is_positive() {
            self.messages += 1;
            info!(
                session = %info.id, peer = %info.peer, forwarded = %Forwarded(info), ehlo,
                from = txn.from.as_str(), to = to.as_str(), subject = subject.as_str(),
                size = txn.size, lmtp = lmtp_address.as_str(), auth, outcome = "delivered", "message"
            );
        } else {
            self.rejected += 1;
            let outcome = if code.class() == 4 {
                "failed"
            } else {
                "rejected"
            };
            warn!(
                session = %info.id, peer = %info.peer, ehlo, from = txn.from.as_str(),
                to = to.as_str(), subject = subject.as_str(), size = txn.size,
                lmtp = lmtp_address.as_str(), error = text.as_str(), auth, outcome, "message"
            );
        }
        Decision::reply(code.get(), enhanced, &text)
    }

    /// Checks a relayed message, completes its headers and queues it durably for its remote
    /// recipients; `Err` is the reply to the end of data.
    async fn enqueue(
        &self,
        info: &SessionInfo,
        txn: &Transaction,
        content: Vec<u8>,
        body_hash: Option<crate::dkim_sign::BodyHash>,
    ) -> Result<smtpkit_queue::QueueId, Decision> {
        let Some(outbound) = self.state.outbound.clone() else {
            return Err(try_again_later());
        };
        let user = info.authenticated.clone().unwrap_or_default();
        let now = SystemTime::now();
        let id = info.id.to_string();
        // The Received: line we prepended ends at the first line not starting with a tab.
        let body_start = content
            .windows(2)
            .enumerate()
            .position(|(i, w)| w == b"\r\n" && content.get(i + 2) != Some(&b'\t'))
            .map_or(0, |i| i + 2);
        let completed = match relay::check_and_complete(
            &outbound.relay,
            &user,
            &content[body_start..],
            &self.state.hostname,
            &id,
            now,
        ) {
            Ok(completed) => completed,
            Err(relay::Refusal::From(address)) => {
                warn!(session = %info.id, user = user.as_str(), from = address.as_str(), "refused: From: address not owned by the user");
                return Err(reply(
                    ReplyCode::MAILBOX_UNAVAILABLE,
                    EnhancedCode::NOT_AUTHORIZED,
                    "From: address not owned by user",
                ));
            }
        };
        // Signed on the blocking pool with the write: an RSA signature is a millisecond of CPU.
        let signing = body_hash
            .filter(|_| {
                completed
                    .from_domain
                    .as_deref()
                    .is_some_and(|d| outbound.signer.signs(d))
            })
            .map(|hash| (Arc::clone(&outbound.signer), hash.finish()));
        let dkim = if signing.is_some() {
            completed.from_domain.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let sender = txn
            .from
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned();
        let recipients = txn.remote.clone();
        let store = Arc::clone(&outbound.store);
        let queued = self
            .guards
            .store(move || {
                use smtpkit_queue::QueueStore as _;
                let (message, sign_error) = relay::assemble(
                    &content[..body_start],
                    &completed,
                    &content[body_start..],
                    signing.as_ref().map(|(s, h)| (&**s, h.as_slice())),
                    now,
                );
                let queued = store.enqueue(
                    smtpkit_queue::NewMessage {
                        kind: smtpkit_queue::Kind::Message,
                        sender: (!sender.is_empty()).then_some(sender.as_str()),
                        recipients: &recipients,
                        content: &message,
                    },
                    now,
                );
                (queued, sign_error)
            })
            .await;
        let queued = queued.map(|(queued, sign_error)| {
            if let Some(e) = sign_error {
                warn!(session = %info.id, domain = dkim.as_str(), error = %e, "DKIM signing failed; queued unsigned");
            }
            queued
        });
        match queued {
            Some(Ok(id)) => {
                outbound.wake.notify_one();
                outbound.rate.count_message(&user, Instant::now());
                let to = txn.remote.join(",");
                info!(session = %info.id, user = user.as_str(), from = txn.from.as_str(), to = to.as_str(), queue_id = %id, dkim = dkim.as_str(), outcome = "queued", "message");
                Ok(id)
            }
            Some(Err(e)) => {
                warn!(session = %info.id, error = %e, outcome = "failed", "queueing a relayed message failed");
                Err(try_again_later())
            }
            None => {
                warn!(session = %info.id, outcome = "failed", "the queue did not answer in time");
                Err(try_again_later())
            }
        }
    }

    /// Commits the message; the one place that decides the reply to the end of data.
    async fn finish(&mut self, info: &SessionInfo) -> Decision {
        let store = self.state.store.clone();
        let storage_timeout = self.guards.storage_timeout;
        let Some(mut txn) = self.txn.take() else {
            return try_again_later();
        };
        let mut queued = None;
        if let Some(content) = txn.outbound.take() {
            let body_hash = txn.body_hash.take();
            // Boxed, as every rare large wait here: the reply future of each common command
            // would otherwise be as large as the largest one (kilobytes), and the driver moves
            // it into a box on every command.
            match Box::pin(self.enqueue(info, &txn, content, body_hash)).await {
                Ok(id) => queued = Some(id),
                Err(decision) => {
                    self.rejected += 1;
                    return decision;
                }
            }
        }
        if txn.mailboxes.is_empty()
            && let Some(id) = queued
        {
            self.messages += 1;
            return reply(
                ReplyCode::OK,
                EnhancedCode::OK,
                &format!("Ok: queued as {id}"),
            );
        }
        let subject = subject(&txn.head);
        let ehlo = info.ehlo.as_deref().unwrap_or("");
        let to = txn.rcpts.join(",");
        // The checks' results: prepended to the message, and in its log line.
        let mut results = String::new();
        let mut auth_summary: Option<String> = None;
        let mut folder = "INBOX";
        // Checks run only for clients with an address (`Checker::applies_to`).
        if let (Some(checker), Some(mut stream), Some(spf), Some(ip)) = (
            self.state.checks.clone(),
            txn.stream.take(),
            txn.spf.take(),
            info.peer.ip(),
        ) {
            let rest = stream.end();
            if let Some(header) = rest.header {
                if txn.sink {
                    if let Some(Err(e)) = txn.writer.as_mut().map(|w| w.write_chunk(header)) {
                        txn.failed = Some(e.to_string());
                    }
                } else {
                    txn.staged.extend_from_slice(header);
                }
            }
            if stream.is_oversized() {
                let txn_from = std::mem::take(&mut txn.from);
                self.abort_with(txn);
                self.rejected += 1;
                warn!(session = %info.id, peer = %info.peer, ehlo, from = txn_from.as_str(), to = to.as_str(), outcome = "rejected", error = "header too large to check", "message");
                return reply(
                    ReplyCode::EXCEEDED_STORAGE,
                    EnhancedCode::MESSAGE_TOO_BIG,
                    "Message header too large",
                );
            }
            let facts = SessionFacts {
                ip: ip.to_canonical(),
                helo: ehlo,
                mail_from: &txn.sender,
            };
            let iprev = self.iprev.clone().unwrap_or(Iprev::None);
            let checked = Box::pin(checker.verify(&stream, facts, &spf, &iprev)).await;
            let policy = txn.policy.unwrap_or_else(|| checker.policy());
            let verdict = checks::message_verdict(&checked, policy);
            let verdict_junk = verdict == Action::Junk;
            let report = checked;
            let summary = report.summary();
            match verdict {
                Action::Deliver => {}
                Action::Junk => {
                    txn.mailboxes = txn.mailboxes.iter().map(|m| m.junk()).collect();
                    if let Some(writer) = txn.writer.as_mut() {
                        writer.redirect(txn.mailboxes.clone());
                    }
                }
                Action::Reject(text) => {
                    let txn_from = std::mem::take(&mut txn.from);
                    self.abort_with(txn);
                    self.rejected += 1;
                    info!(session = %info.id, peer = %info.peer, ehlo, from = txn_from.as_str(), to = to.as_str(), subject = subject.as_str(), auth = summary.as_str(), outcome = "rejected", "message");
                    return reply(
                        ReplyCode::MAILBOX_UNAVAILABLE,
                        EnhancedCode::NOT_AUTHORIZED,
                        &text,
                    );
                }
                Action::Defer(text) => {
                    let txn_from = std::mem::take(&mut txn.from);
                    self.abort_with(txn);
                    self.rejected += 1;
                    info!(session = %info.id, peer = %info.peer, ehlo, from = txn_from.as_str(), to = to.as_str(), subject = subject.as_str(), auth = summary.as_str(), outcome = "deferred", "message");
                    return reply(
                        ReplyCode::LOCAL_ERROR,
                        EnhancedCode::SECURITY_TRANSIENT,
                        text,
                    );
                }
            }
            if verdict_junk {
                folder = "Junk";
            }
            results.push_str(report.authentication_results());
            results.push_str(report.received_spf());
            txn.size += results.len() as u64;
            auth_summary = Some(summary);
        }
        // Unchecked (authenticated, exempt, or checks off): said so rather than left blank.
        if let Some(lmtp) = self.state.lmtp.clone() {
            let auth = auth_summary.as_deref().unwrap_or("none");
            return Box::pin(self.deliver_lmtp(info, lmtp, txn, results, auth)).await;
        }
        let outcome: Result<DeliveryReceipt, String> = match (txn.failed.take(), &store) {
            (Some(e), _) => Err(e),
            (None, Store::Sink(_)) => match txn.writer.take() {
                Some(mut writer) => writer
                    .insert(txn.trace_len as u64, results.as_bytes())
                    .and_then(|()| writer.commit())
                    .map_err(|e| e.to_string()),
                None => Err("no message writer".to_owned()),
            },
            (None, Store::Maildir(maildir)) => {
                let writer = txn.writer.take();
                let mut staged = std::mem::take(&mut txn.staged);
                let results = std::mem::take(&mut results).into_bytes();
                let trace_len = txn.trace_len as u64;
                if writer.is_none() && !results.is_empty() {
                    let at = txn.trace_len.min(staged.len());
                    staged.splice(at..at, results.iter().copied());
                }
                let mailboxes = std::mem::take(&mut txn.mailboxes);
                let abandoned = Arc::clone(&txn.abandoned);
                // The driver drops a handler that overruns the core's deadline mid-await: then
                // nobody will answer this message, and a commit still in flight must not deliver it.
                let cancelled = AbandonOnDrop(Some(Arc::clone(&txn.abandoned)));
                let guards = Arc::clone(&self.guards);
                let commit = async move {
                    match writer {
                        // Most mail: written and synced by the group committer in one go.
                        None => maildir.deliver(staged, mailboxes, abandoned).await,
                        Some(mut writer) => {
                            let rest = guards
                                .blocking(move || {
                                    writer.write_chunk(&staged)?;
                                    if !results.is_empty() {
                                        writer.insert(trace_len, &results)?;
                                    }
                                    Ok::<_, io::Error>(writer)
                                })
                                .await
                                .ok_or_else(|| io::Error::other("storage write failed"))??;
                            rest.commit_grouped(abandoned).await
                        }
                    }
                };
                let committed = tokio::time::timeout(storage_timeout, Box::pin(commit)).await;
                cancelled.disarm();
                match committed {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => {
                        txn.abandoned.store(true, Ordering::Release);
                        Err(stalled(storage_timeout))
                    }
                }
            }
        };
        // Unchecked (authenticated, exempt, or checks off): said so rather than left blank.
        let auth = auth_summary.as_deref().unwrap_or("none");
        match outcome {
            Ok(receipt) => {
                self.messages += 1;
                // Strings from the network are recorded as `&str`: the text log quotes and
                // escapes them (no raw control characters, no forged `key=value`), JSON
                // escapes them its own way.
                info!(
                    session = %info.id, peer = %info.peer, forwarded = %Forwarded(info), ehlo,
                    from = txn.from.as_str(),
                    to = to.as_str(), subject = subject.as_str(), size = receipt.size,
                    id = receipt.id.as_str(), auth, folder, outcome = "stored", "message"
                );
                reply(
                    ReplyCode::OK,
                    EnhancedCode::OK,
                    &format!("Ok: queued as {}", receipt.id),
                )
            }
            Err(error) => {
                self.rejected += 1;
                warn!(
                    session = %info.id, peer = %info.peer, ehlo, from = txn.from.as_str(),
                    to = to.as_str(), subject = subject.as_str(), size = txn.size,
                    error = error.as_str(), auth, outcome = "failed", "message"
                );
                try_again_later()
            }
        }
    }
}

/// The reply to a MAIL FROM or RCPT TO refused by SPF (RFC 7372 3: X.7.23 failed, X.7.24
/// could not be checked).
fn spf_refusal(verdict: &Action) -> Decision {
    match verdict {
        Action::Defer(text) => reply(
            ReplyCode::LOCAL_ERROR,
            EnhancedCode::new(4, 7, 24).unwrap_or(EnhancedCode::SECURITY_TRANSIENT),
            text,
        ),
        Action::Reject(text) => reply(
            ReplyCode::MAILBOX_UNAVAILABLE,
            EnhancedCode::new(5, 7, 23).unwrap_or(EnhancedCode::NOT_AUTHORIZED),
            text,
        ),
        Action::Deliver | Action::Junk => Decision::Accept,
    }
}

/// Sets the flag when dropped unless disarmed: a future cut mid-await (cancelled) abandons its
/// message, so a store that finishes later removes it instead of delivering it.
struct AbandonOnDrop(Option<Arc<AtomicBool>>);

impl AbandonOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

fn stalled(timeout: Duration) -> String {
    format!(
        "the store did not answer within {} s",
        timeout.as_secs_f32()
    )
}

impl Session for Conversation {
    async fn auth(&mut self, info: &SessionInfo, mechanism: &str, creds: &Credentials) -> Decision {
        let now = Instant::now();
        let ip = info.peer.ip();
        // smtpd checks passwords against its password file; it has no token verifier, so its
        // configuration never offers XOAUTH2 or OAUTHBEARER.
        let Credentials::Password {
            authzid,
            user: name,
            password,
        } = creds
        else {
            warn!(session = %info.id, peer = %info.peer, mechanism, "refused: not a password");
            return reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            );
        };
        let user = name.as_str();
        // RFC 4616 2: the server decides whether the authentication identity may act as another
        // authorization identity. Here a user acts only as itself.
        if authzid.as_deref().is_some_and(|z| z != user) {
            warn!(session = %info.id, peer = %info.peer, user, authzid = authzid.as_deref().unwrap_or(""), "refused: may not act as another user");
            return reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            );
        }
        // A Unix-socket client has no address; its failures count against the user only.
        if let Some(ip) = ip
            && let Verdict::Exceeded { first } = self.guards.by_ip.check(&ip, now)
        {
            if first {
                warn!(session = %info.id, peer = %info.peer, user, "too many authentication failures from this address; refusing AUTH for the rest of the window");
            }
            return reply(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Too many authentication failures; try again later",
            );
        }
        if let Verdict::Exceeded { first } = self.guards.by_user.check(name, now) {
            if first {
                warn!(session = %info.id, peer = %info.peer, user, "too many authentication failures for this user; refusing AUTH for the rest of the window");
            }
            return reply(
                ReplyCode::TLS_UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Too many authentication failures; try again later",
            );
        }
        let state = Arc::clone(&self.state);
        let name = name.clone();
        let password = password.expose().clone();
        // Boxed: the check pool's future is large and AUTH is rare (see `finish`).
        let ok = Box::pin(
            self.guards
                .checks
                .check(move |memory| state.accounts.verify_in(&name, password.as_bytes(), memory)),
        )
        .await;
        if ok {
            info!(session = %info.id, user, "authenticated");
            Decision::Accept
        } else {
            let now = Instant::now();
            if let Some(ip) = ip {
                self.guards.by_ip.record_failure(ip, now);
            }
            self.guards
                .by_user
                .record_failure(creds.user().to_owned(), now);
            warn!(session = %info.id, peer = %info.peer, user, "authentication failed");
            reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            )
        }
    }

    async fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        _params: &Parameters<'_>,
    ) -> Decision {
        self.abort();
        // RFC 6409 6.1: a submission server may check that the sender is the user's own.
        if let (Some(outbound), Some(user), ReversePath::Mailbox(m)) =
            (&self.state.outbound, info.authenticated.as_deref(), from)
            && !outbound.relay.owns(user, &mailbox_address(m))
        {
            warn!(session = %info.id, user, from = %from, "refused: sender address not owned by the user");
            return reply(
                ReplyCode::MAILBOX_UNAVAILABLE,
                EnhancedCode::NOT_AUTHORIZED,
                "Sender address not owned by user",
            );
        }
        // `<local@domain>` or `<>`: formatted once, the bare address is its inside.
        let from_text = from.to_string();
        let sender = from_text[1..from_text.len() - 1].to_owned();
        let mut txn = Transaction {
            from: from_text,
            sender,
            ..Transaction::default()
        };
        if let Some(checker) = self.state.checks.clone().filter(|c| c.applies_to(info))
            && let Some(ip) = info.peer.ip().map(|ip| ip.to_canonical())
        {
            let helo = info.ehlo.as_deref().unwrap_or("");
            // The driver's reverse lookup (smtpd [dns] reverse_lookup) is the iprev result when
            // there is one; otherwise mail-auth looks it up once per session.
            if self.iprev.is_none() {
                self.iprev = info.reverse_name.as_ref().map(Iprev::from);
            }
            let look_up_iprev = self.iprev.is_none();
            // Boxed: DNS lookups are large futures (see `finish`).
            let (spf, iprev) = Box::pin(async {
                let spf = checker.spf(ip, helo, &txn.sender);
                if look_up_iprev {
                    let (spf, iprev) = tokio::join!(spf, checker.authenticator().check_iprev(ip));
                    (spf, Some(iprev))
                } else {
                    (spf.await, None)
                }
            })
            .await;
            if iprev.is_some() {
                self.iprev = iprev;
            }
            let verdict = checks::spf_verdict(&spf, checker.policy());
            txn.spf = Some(spf);
            if let Some(verdict) = verdict {
                warn!(session = %info.id, peer = %info.peer, from = txn.from.as_str(), spf = txn.spf.as_ref().map_or("", Spf::keyword), "sender refused by SPF");
                return spf_refusal(&verdict);
            }
        }
        self.txn = Some(txn);
        Decision::Accept
    }

    async fn rcpt_to(
        &mut self,
        info: &SessionInfo,
        to: &ForwardPath<'_>,
        _params: &Parameters<'_>,
    ) -> Decision {
        let resolution = match to {
            // RFC 5321 4.5.1: the bare <Postmaster> is this server's postmaster.
            ForwardPath::Postmaster => self.state.router.resolve_postmaster(&self.state.hostname),
            ForwardPath::Mailbox(m) => match m.domain() {
                DomainPart::Domain(d) => self
                    .state
                    .router
                    .resolve(&m.local_part().unescaped(), d.as_str()),
                // Mail to this server's own address (`user@[192.0.2.1]`) is local: it is for
                // this host, whose name stands in for the literal (RFC 5321 4.1.3).
                DomainPart::Literal(literal) if is_own_address(&literal, info) => self
                    .state
                    .router
                    .resolve(&m.local_part().unescaped(), &self.state.hostname),
                DomainPart::Literal(_) => Resolution::NotLocal,
            },
        };
        let Some(txn) = self.txn.as_mut() else {
            return reply(
                ReplyCode::BAD_SEQUENCE,
                EnhancedCode::INVALID_COMMAND,
                "Send MAIL first",
            );
        };
        match resolution {
            Resolution::Local(paths) => {
                if let (Some(checker), Some(spf)) = (&self.state.checks, &txn.spf) {
                    let domain = match to {
                        ForwardPath::Mailbox(m) => match m.domain() {
                            DomainPart::Domain(d) => d.as_str().to_owned(),
                            DomainPart::Literal(_) => self.state.hostname.clone(),
                        },
                        ForwardPath::Postmaster => self.state.hostname.clone(),
                    };
                    let policy = checker.policy_for(&domain);
                    if let Some(verdict) = checks::spf_verdict(spf, policy) {
                        return spf_refusal(&verdict);
                    }
                    txn.policy = Some(txn.policy.map_or(policy, |p| p.strictest(policy)));
                }
                let recipient = to.to_string();
                let policy = &self.state.rcpt_policy;
                if policy.dnsbl.is_some() || policy.greylist.is_some() {
                    let rcpt = Rcpt {
                        sender: &txn.from,
                        recipient: &recipient,
                        // Unknown (`None`) when the checks are off or the session is exempt.
                        spf_pass: txn.spf.as_ref().map(smtpkit_mailauth::Spf::is_pass),
                    };
                    // Boxed: DNS lookups are large futures (see `finish`).
                    let check = policy.check(info, &mut self.policy, rcpt, SystemTime::now());
                    if let Some(refusal) = Box::pin(check).await {
                        return refusal;
                    }
                }
                txn.rcpts.push(recipient);
                for p in paths {
                    if !txn.mailboxes.contains(&p) {
                        txn.mailboxes.push(p);
                    }
                }
                Decision::Accept
            }
            Resolution::UnknownMailbox => reply(
                ReplyCode::MAILBOX_UNAVAILABLE,
                EnhancedCode::MAILBOX_UNKNOWN,
                "Mailbox unavailable",
            ),
            Resolution::NotLocal => {
                let submitter = info.authenticated.is_some()
                    && matches!(
                        info.listener,
                        ListenerKind::Submission | ListenerKind::Smtps
                    );
                if submitter
                    && let Some(outbound) = self.state.outbound.as_ref()
                    && let ForwardPath::Mailbox(m) = to
                {
                    let user = info.authenticated.as_deref().unwrap_or_default();
                    let now = Instant::now();
                    if let Err(exceeded) = outbound.rate.check(user, now) {
                        let (limit, first) = match exceeded {
                            relay::Exceeded::Messages { first } => ("rate", first),
                            relay::Exceeded::Recipients { first } => ("recipient_rate", first),
                        };
                        if first {
                            warn!(session = %info.id, user, limit, "relay rate limit reached; refusing this user's relayed mail for the rest of the window");
                        }
                        return Decision::reply(
                            450,
                            EnhancedCode::new(4, 7, 1).unwrap_or(EnhancedCode::SECURITY_TRANSIENT),
                            "Sending rate limit exceeded; try again later",
                        );
                    }
                    outbound.rate.count_recipient(user, now);
                    txn.remote.push(mailbox_address(m));
                    return Decision::Accept;
                }
                let text = if submitter {
                    "Relaying not enabled"
                } else {
                    "Relaying denied"
                };
                reply(
                    ReplyCode::MAILBOX_UNAVAILABLE,
                    EnhancedCode::NOT_AUTHORIZED,
                    text,
                )
            }
        }
    }

    async fn data_start(&mut self, info: &SessionInfo) -> Decision {
        let sink = self.is_sink();
        let Some(txn) = self.txn.as_mut() else {
            return reply(
                ReplyCode::BAD_SEQUENCE,
                EnhancedCode::INVALID_COMMAND,
                "Send MAIL first",
            );
        };
        if !txn.remote.is_empty() {
            txn.outbound = Some(relay::received(&self.state.hostname, info).into_bytes());
            if let Some(outbound) = self.state.outbound.as_ref()
                && !outbound.signer.is_empty()
            {
                txn.body_hash = Some(crate::dkim_sign::BodyHash::new());
            }
        }
        let prepend = trace_headers(&self.state.hostname, info, &txn.from, &txn.rcpts);
        txn.size = prepend.len() as u64;
        txn.trace_len = prepend.len();
        txn.sink = sink;
        if txn.spf.is_some() {
            txn.stream = self.state.checks.as_ref().map(|c| c.message());
        }
        if sink {
            match self.state.store.begin(prepend.as_bytes(), &txn.mailboxes) {
                Ok(writer) => txn.writer = Some(writer),
                Err(e) => txn.failed = Some(e.to_string()),
            }
        } else {
            // The file is created with the first staged piece: most messages then cost one
            // trip to the blocking pool in all. A store that cannot take the message answers
            // the end of data with 451.
            txn.staged = Vec::with_capacity(STAGE_BYTES.min(prepend.len() + 4096));
            txn.staged.extend_from_slice(prepend.as_bytes());
        }
        Decision::Accept
    }

    async fn data_chunk(
        &mut self,
        _info: &SessionInfo,
        chunk: &[u8],
    ) -> Result<(), Reply<'static>> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        if txn.head.len() < HEAD_BYTES {
            let take = chunk.len().min(HEAD_BYTES - txn.head.len());
            txn.head.extend_from_slice(&chunk[..take]);
        }
        txn.size += chunk.len() as u64;
        if let Some(outbound) = txn.outbound.as_mut() {
            outbound.extend_from_slice(chunk);
            if let Some(hash) = txn.body_hash.as_mut() {
                hash.write(chunk);
            }
        }
        if txn.failed.is_some() || (txn.mailboxes.is_empty() && txn.outbound.is_some()) {
            return Ok(());
        }
        if txn.sink {
            let mut passed = Vec::new();
            let chunk = if txn.stream.is_some() {
                stage(&mut passed, txn.stream.as_mut(), chunk);
                &passed[..]
            } else {
                chunk
            };
            if let Some(Err(e)) = txn.writer.as_mut().map(|w| w.write_chunk(chunk)) {
                txn.failed = Some(e.to_string());
            }
            return Ok(());
        }
        stage(&mut txn.staged, txn.stream.as_mut(), chunk);
        if txn.staged.len() >= STAGE_BYTES {
            // Keep reading the body whatever happens; a failure answers the end of data.
            Box::pin(self.write_staged()).await;
        }
        Ok(())
    }

    async fn data_end(&mut self, info: &SessionInfo) -> Decision {
        self.finish(info).await
    }

    async fn data_end_lmtp(&mut self, info: &SessionInfo, recipients: usize) -> Vec<Decision> {
        // One file, hard-linked into every mailbox: every recipient gets the same outcome.
        let decision = self.finish(info).await;
        vec![decision; recipients]
    }

    async fn data_aborted(&mut self, info: &SessionInfo) {
        if let Some(txn) = &self.txn {
            let to = txn.rcpts.join(",");
            info!(session = %info.id, from = txn.from.as_str(), to = to.as_str(), outcome = "aborted", "message");
        }
        self.abort();
    }

    async fn reset(&mut self, _info: &SessionInfo) {
        self.abort();
        self.txn = None;
    }

    async fn close(&mut self, info: &SessionInfo, reason: CloseReason) {
        self.abort();
        info!(
            session = %info.id, peer = %info.peer, client = %ClientName(info),
            front_end = %info.front_end.as_ref().map_or_else(String::new, ToString::to_string),
            ehlo = info.ehlo.as_deref().unwrap_or(""), tls = info.tls, user = info.authenticated.as_deref().unwrap_or(""),
            messages = self.messages, failed = self.rejected, %reason, "session"
        );
    }
}

/// The client's reverse name for the log: the confirmed name, `unknown`, `unknown
/// (temporary failure)`, or empty when names are not looked up.
struct ClientName<'a>(&'a SessionInfo);

impl std::fmt::Display for ClientName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.reverse_name {
            None => Ok(()),
            Some(ReverseName::TempError) => f.write_str("unknown (temporary failure)"),
            Some(name) => name.fmt(f),
        }
    }
}

/// The original client XFORWARD named for this message, `address` or `address name`; empty
/// without XFORWARD.
struct Forwarded<'a>(&'a SessionInfo);

impl std::fmt::Display for Forwarded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(fwd) = self.0.xforward.as_deref() else {
            return Ok(());
        };
        if let Some(addr) = fwd.addr {
            write!(f, "{addr}")?;
        }
        if let Some(name) = &fwd.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// `Return-Path:` (RFC 5321 4.4) and `Received:` (RFC 5321 4.4, RFC 3848 protocol names).
fn trace_headers(hostname: &str, info: &SessionInfo, from: &str, rcpts: &[String]) -> String {
    let protocol = match (info.listener, info.tls, info.authenticated.is_some()) {
        (ListenerKind::Lmtp, false, _) => "LMTP",
        (ListenerKind::Lmtp, true, _) => "LMTPS",
        (_, false, false) => "ESMTP",
        (_, true, false) => "ESMTPS",
        (_, false, true) => "ESMTPA",
        (_, true, true) => "ESMTPSA",
    };
    // XFORWARD from a trusted content filter or relay names the message's original client
    // (Postfix writes it in the Received header the same way); XCLIENT has already replaced
    // the session's own facts.
    let forwarded = info.xforward.as_deref().filter(|f| f.addr.is_some());
    let (ip, ehlo, reverse_name) = match forwarded {
        Some(f) => (
            f.addr.or(info.peer.ip()),
            f.helo.as_deref(),
            Some(f.name.clone().unwrap_or(ReverseName::NotFound)),
        ),
        None => (
            info.peer.ip(),
            info.ehlo.as_deref(),
            info.reverse_name.clone(),
        ),
    };
    // A Unix-socket client has no address: the socket stands where the literal would.
    let literal = ip.map_or_else(|| "unix socket".to_owned(), address_literal);
    // RFC 5321 4.4 Extended-Domain: the client's name as it gave it, then the address literal
    // that TCP says. A name that is not a plain domain or address literal (control characters,
    // non-ASCII without SMTPUTF8, spaces) is never copied into the header: the literal stands in.
    let helo = ehlo.filter(|h| is_plain_helo(h)).unwrap_or(&literal);
    // Plain copies rather than `write!`: the header is built for every message, and the
    // formatting machinery cost more than the copies (the Display parts stay `write!`).
    let mut h = String::with_capacity(256);
    push_all(&mut h, &["Return-Path: ", from, "\r\n"]);
    // `Delivered-To:` names the envelope recipient as given, extension included (`user+tag@`),
    // for filters and loop detection, where Postfix's local delivery puts it. One file is linked
    // into every mailbox, so it is written only when the message has one recipient: the others
    // would see a stranger's address.
    if let [one] = rcpts {
        let address = one.trim_start_matches('<').trim_end_matches('>');
        push_all(&mut h, &["Delivered-To: ", address, "\r\n"]);
    }
    // TCP-info (RFC 5321 4.4): the forward-confirmed name before the literal when the client
    // was looked up, `unknown` when it has none we can trust (Postfix's word).
    match &reverse_name {
        Some(name) => {
            push_all(&mut h, &["Received: from ", helo, " ("]);
            let _ = write!(h, "{name}");
            push_all(&mut h, &[" ", &literal, ")\r\n"]);
        }
        None => push_all(&mut h, &["Received: from ", helo, " (", &literal, ")\r\n"]),
    }
    // The TLS facts as Postfix writes them (a comment between `from` and `by`): what a reader
    // of the message needs to judge how it travelled.
    if let Some(tls) = &info.tls_info {
        let _ = write!(h, "\t(using {}", tls.version_name());
        if let Some(cipher) = tls.cipher_suite {
            let _ = write!(h, " with cipher {cipher:?}");
        }
        let _ = write!(h, ")\r\n");
    }
    push_all(&mut h, &["\tby ", hostname, " with ", protocol, " id "]);
    let _ = write!(h, "{}", info.id);
    // A single recipient is named; naming several would disclose the Bcc list (RFC 5321 7.2).
    if let [one] = rcpts {
        push_all(&mut h, &["\r\n\tfor ", one]);
    }
    h.push_str(";\r\n\t");
    with_date(SystemTime::now(), |date| h.push_str(date));
    h.push_str("\r\n");
    h
}

fn push_all(text: &mut String, parts: &[&str]) {
    for part in parts {
        text.push_str(part);
    }
}

/// Calls `f` with `now` as an RFC 5322 date: formatted once per second and thread, since
/// every message of that second carries the same one.
fn with_date(now: SystemTime, f: impl FnOnce(&str)) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second {
            *date = rfc5322_date(now);
            *cached = second;
        }
        f(date);
    });
}

/// `local@domain` of a mailbox, without angle brackets.
fn mailbox_address(m: &smtpkit_proto::address::Mailbox<'_>) -> String {
    let text = m.to_string();
    text.trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// Whether an address literal names the address the client connected to.
fn is_own_address(
    literal: &smtpkit_proto::address::AddressLiteral<'_>,
    info: &SessionInfo,
) -> bool {
    use smtpkit_proto::address::AddressLiteral;
    let ip = match literal {
        AddressLiteral::Ipv4(v4) => IpAddr::V4(*v4),
        AddressLiteral::Ipv6(v6) => IpAddr::V6(*v6),
        AddressLiteral::General { .. } => return false,
    };
    info.local
        .ip()
        .is_some_and(|own| ip.to_canonical() == own.to_canonical())
}

/// RFC 5321 4.1.3 address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        // Every message's Received: line has one: the octets copied, not formatted.
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(17);
            text.push('[');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text.push(']');
            text
        }
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// Whether a HELO/EHLO argument can go into a header as it is: an ASCII domain (letters,
/// digits, `-`, `.`) or an address literal of printable ASCII, at most 255 octets.
fn is_plain_helo(helo: &str) -> bool {
    let literal = helo.len() > 2
        && helo.starts_with('[')
        && helo.ends_with(']')
        && helo[1..helo.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'\\'));
    let domain = !helo.is_empty()
        && helo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    helo.len() <= 255 && (literal || domain)
}

// `date-time` in UTC (RFC 5322 3.3): the queue's bounces and our `Received:` use one writer.
use smtpkit_queue::dsn::rfc5322_date;

/// The Subject header from the start of a message, unfolded, for logs.
///
/// Only the Subject's own lines are decoded (lossily, as UTF-8): the header block is split on
/// CRLF as bytes, which no multi-octet character contains.
fn subject(head: &[u8]) -> String {
    let mut lines = CrlfLines(head).take_while(|l| !l.is_empty()).peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            let mut value = String::from_utf8_lossy(&line[8..]).trim().to_owned();
            while let Some(cont) = lines.next_if(|l| l.starts_with(b" ") || l.starts_with(b"\t")) {
                value.push(' ');
                value.push_str(String::from_utf8_lossy(cont).trim());
            }
            return value;
        }
    }
    String::new()
}

/// The pieces of a byte string between CRLFs (the last one may be cut short).
struct CrlfLines<'a>(&'a [u8]);

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let end = self.0.windows(2).position(|w| w == b"\r\n");
        let (line, rest) = match end {
            Some(i) => (&self.0[..i], &self.0[i + 2..]),
            None => (self.0, &self.0[self.0.len()..]),
        };
        self.0 = rest;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildir::MaildirStore;
    use smtpkit_proto::Secret;
    use smtpkit_proto::address::Mailbox;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::mpsc;

    fn code(d: &Decision) -> (u16, String) {
        match d {
            Decision::Accept => (0, String::new()),
            Decision::Reply(r) => (
                r.code().get(),
                format!(
                    "{} {}",
                    r.enhanced().map(|e| e.to_string()).unwrap_or_default(),
                    r.text()
                ),
            ),
        }
    }

    fn info(peer: &str) -> SessionInfo {
        let peer: SocketAddr = peer.parse().unwrap();
        SessionInfo::new(
            peer,
            "127.0.0.1:25".parse::<std::net::SocketAddr>().unwrap(),
            ListenerKind::Smtp,
        )
    }

    fn receiver(config: &Config, store: Store, users: &[crate::config::User]) -> Receiver {
        let state = State {
            hostname: "mx.test".to_owned(),
            router: Router::from_config(config).unwrap(),
            store,
            accounts: Accounts::new(users),
            outbound: None,
            rcpt_policy: RcptPolicy::default(),
            checks: None,
            lmtp: None,
        };
        Receiver::new(state, Guards::from_config(config))
    }

    /// A frozen file system stand-in: every write waits until the test releases it (or 20 s).
    /// Other sessions must go on meanwhile, and the stalled one gets 451 when the storage
    /// timeout expires. Run on a single-threaded runtime: a write on the async thread would
    /// freeze everything, as it did before the store moved to the blocking pool.
    #[test]
    fn a_stalled_store_gets_451_and_never_holds_other_sessions() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let store = MaildirStore::new(root.path()).with_write_hook(move || {
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(20));
        });
        let mut config = Config::default_embedded();
        config.limits.timeouts.storage = 1;
        let receiver = receiver(&config, Store::Maildir(store), &[]);
        runtime.block_on(async {
            let stalled_info = info("192.0.2.1:1000");
            let mut stalled = receiver.connect(&stalled_info).await.unwrap();
            let from = ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap());
            let to = ForwardPath::Mailbox(Mailbox::parse("b@example.com").unwrap());
            stalled
                .mail_from(&stalled_info, &from, &Parameters::EMPTY)
                .await;
            assert_eq!(
                code(
                    &stalled
                        .rcpt_to(&stalled_info, &to, &Parameters::EMPTY)
                        .await
                )
                .0,
                0
            );
            assert_eq!(code(&stalled.data_start(&stalled_info).await).0, 0);
            let started = Instant::now();
            let body = vec![b'x'; STAGE_BYTES];
            let chunk_and_end = async {
                // The staged piece goes to the store and stalls there.
                stalled.data_chunk(&stalled_info, &body).await.unwrap();
                stalled.data_end(&stalled_info).await
            };
            let others = async {
                // Meanwhile other clients connect and are served, many times over.
                for i in 0..20 {
                    let other = info(&format!("192.0.2.2:{}", 2000 + i));
                    let mut s = receiver.connect(&other).await.unwrap();
                    s.mail_from(&other, &from, &Parameters::EMPTY).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                started.elapsed()
            };
            let (end, others_done) = tokio::join!(chunk_and_end, others);
            assert!(
                others_done < Duration::from_secs(1),
                "other sessions waited {others_done:?} on the stalled store"
            );
            let (n, text) = code(&end);
            assert_eq!(n, 451, "{text}");
            assert!(text.contains("4.3.0"), "{text}");
            assert!(started.elapsed() >= Duration::from_secs(1));
        });
        // Thaw: every waiting write goes on (a closed channel ends each wait at once).
        drop(release);
        drop(runtime);
        // Nothing was delivered: the client was told to retry.
        let new = root.path().join("example.com/b/new");
        assert!(std::fs::read_dir(&new).map_or(true, |d| d.count() == 0));
    }

    #[test]
    fn small_messages_are_stored_in_one_piece_with_clean_trace_headers() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let config = Config::default_embedded();
        let receiver = receiver(
            &config,
            Store::Maildir(MaildirStore::new(root.path()).with_hostname("mx.test")),
            &[],
        );
        runtime.block_on(async {
            let mut i = info("[2001:db8::7]:1000");
            i.ehlo = Some("evil\u{85}\x1b[2J.example".to_owned());
            let mut s = receiver.connect(&i).await.unwrap();
            let from = ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap());
            let to = ForwardPath::Mailbox(Mailbox::parse("b@example.com").unwrap());
            s.mail_from(&i, &from, &Parameters::EMPTY).await;
            s.rcpt_to(&i, &to, &Parameters::EMPTY).await;
            s.data_start(&i).await;
            s.data_chunk(&i, b"Subject: hi\r\n\r\nbody\r\n")
                .await
                .unwrap();
            let (n, text) = code(&s.data_end(&i).await);
            assert_eq!(n, 250, "{text}");
        });
        let new = root.path().join("example.com/b/new");
        let file = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
        let message = String::from_utf8(std::fs::read(file.path()).unwrap()).unwrap();
        assert!(
            message.contains("Received: from [IPv6:2001:db8::7] ([IPv6:2001:db8::7])\r\n\tby mx.test with ESMTP id "),
            "{message}"
        );
        assert!(!message.contains("evil"), "{message}");
        assert!(
            message.contains("\r\nDelivered-To: b@example.com\r\n"),
            "{message}"
        );
        assert!(
            message.ends_with("Subject: hi\r\n\r\nbody\r\n"),
            "{message}"
        );
    }

    #[test]
    fn received_names_the_client_as_reverse_dns_found_it() {
        let i = info("192.0.2.9:1000");
        let received = |i: &SessionInfo| {
            let h = trace_headers("mx.test", i, "<>", &[]);
            h.lines()
                .find(|l| l.starts_with("Received:"))
                .unwrap()
                .to_owned()
        };
        assert_eq!(received(&i), "Received: from [192.0.2.9] ([192.0.2.9])");
        let confirmed = i
            .clone()
            .with_reverse_name(ReverseName::Confirmed("mail.example.org".into()));
        assert_eq!(
            received(&confirmed),
            "Received: from [192.0.2.9] (mail.example.org [192.0.2.9])"
        );
        assert_eq!(format!("{}", ClientName(&confirmed)), "mail.example.org");
        // A name that does not resolve back is whatever the address's owner claims.
        let liar = i
            .clone()
            .with_reverse_name(ReverseName::Unconfirmed("mail.bank.example".into()));
        assert_eq!(
            received(&liar),
            "Received: from [192.0.2.9] (unknown [192.0.2.9])"
        );
        let failed = i.clone().with_reverse_name(ReverseName::TempError);
        assert_eq!(
            format!("{}", ClientName(&failed)),
            "unknown (temporary failure)"
        );

        // XFORWARD names the message's original client instead.
        let mut fwd = smtpkit_server::Forwarded::default();
        let attrs = smtpkit_proto::command::front_end::Attributes::parse(
            "NAME=orig.example.net ADDR=198.51.100.2 HELO=orig.example.net",
            smtpkit_proto::command::front_end::FrontEnd::Xforward,
        )
        .unwrap();
        fwd.merge(&attrs);
        let mut forwarded = i;
        forwarded.xforward = Some(Arc::new(fwd));
        assert_eq!(
            received(&forwarded),
            "Received: from orig.example.net (orig.example.net [198.51.100.2])"
        );
        assert_eq!(
            format!("{}", Forwarded(&forwarded)),
            "198.51.100.2 orig.example.net"
        );
    }

    #[test]
    fn own_address_literals_are_local_and_others_relaying() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let config = Config::default_embedded();
        let receiver = receiver(&config, Store::Maildir(MaildirStore::new(root.path())), &[]);
        runtime.block_on(async {
            // `info` connects to 127.0.0.1:25.
            let i = info("192.0.2.9:1000");
            let mut s = receiver.connect(&i).await.unwrap();
            let from = ReversePath::Null;
            s.mail_from(&i, &from, &Parameters::EMPTY).await;
            let own = Mailbox::parse("user+tag@[127.0.0.1]").unwrap();
            assert_eq!(
                code(
                    &s.rcpt_to(&i, &ForwardPath::Mailbox(own), &Parameters::EMPTY)
                        .await
                )
                .0,
                0
            );
            let other = Mailbox::parse("user@[192.0.2.50]").unwrap();
            let (n, text) = code(
                &s.rcpt_to(&i, &ForwardPath::Mailbox(other), &Parameters::EMPTY)
                    .await,
            );
            assert_eq!(n, 550, "{text}");
            s.data_start(&i).await;
            s.data_chunk(&i, b"\r\nx\r\n").await.unwrap();
            assert_eq!(code(&s.data_end(&i).await).0, 250);
        });
        // Delivered to this host's name, extension stripped, full address in Delivered-To.
        let new = root.path().join("mx.test/user/new");
        let file = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
        let message = String::from_utf8(std::fs::read(file.path()).unwrap()).unwrap();
        assert!(
            message.contains("Delivered-To: user+tag@[127.0.0.1]\r\n"),
            "{message}"
        );
    }

    #[test]
    fn a_cancelled_wait_abandons_the_message() {
        let flag = Arc::new(AtomicBool::new(false));
        drop(AbandonOnDrop(Some(Arc::clone(&flag))));
        assert!(flag.load(Ordering::Acquire));
        let flag = Arc::new(AtomicBool::new(false));
        AbandonOnDrop(Some(Arc::clone(&flag))).disarm();
        assert!(!flag.load(Ordering::Acquire));
    }

    #[test]
    fn helo_names_in_headers() {
        assert!(is_plain_helo("mail.example.org"));
        assert!(is_plain_helo("[192.0.2.1]"));
        assert!(is_plain_helo("[IPv6:2001:db8::1]"));
        for bad in [
            "",
            "a b",
            "ex\u{85}ample",
            "caf\u{e9}.fr",
            "x\r\nX-Injected: 1",
            "[]",
            "[a]b]",
            "x\x1b[2J",
        ] {
            assert!(!is_plain_helo(bad), "{bad:?}");
        }
        assert_eq!(address_literal("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        for v4 in [
            "0.0.0.0",
            "10.0.100.255",
            "255.255.255.255",
            "127.0.0.1",
            "9.99.100.1",
        ] {
            assert_eq!(address_literal(v4.parse().unwrap()), format!("[{v4}]"));
        }
        assert_eq!(
            address_literal("::ffff:192.0.2.1".parse().unwrap()),
            "[192.0.2.1]"
        );
        assert_eq!(
            address_literal("2001:db8::1".parse().unwrap()),
            "[IPv6:2001:db8::1]"
        );
    }

    fn creds(user: &str, password: &str, authzid: Option<&str>) -> Credentials {
        Credentials::Password {
            authzid: authzid.map(str::to_owned),
            user: user.to_owned(),
            password: Secret::new(password.to_owned()),
        }
    }

    #[test]
    fn authentication_failures_are_limited_per_client_and_per_user() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let phc =
            crate::password::hash_password_with("right", crate::password::test_params()).unwrap();
        let users = [crate::config::User {
            name: "alice".to_owned(),
            password_hash: phc,
        }];
        let mut config = Config::default_embedded();
        config.auth.failures_per_ip = 3;
        config.auth.failures_per_user = 5;
        let receiver = receiver(
            &config,
            Store::from_config(&config.storage, "mx.test"),
            &users,
        );
        runtime.block_on(async {
            let a = info("192.0.2.1:1000");
            let mut s = receiver.connect(&a).await.unwrap();
            assert_eq!(
                code(&s.auth(&a, "PLAIN", &creds("alice", "right", None)).await).0,
                0
            );
            // smtpd verifies no tokens: a token is refused whatever it holds.
            let token = Credentials::Token {
                user: "alice".into(),
                token: Secret::new("right".into()),
            };
            assert_eq!(code(&s.auth(&a, "XOAUTH2", &token).await).0, 535);
            // Acting as somebody else is refused, with the right password too.
            assert_eq!(
                code(
                    &s.auth(&a, "PLAIN", &creds("alice", "right", Some("bob")))
                        .await
                )
                .0,
                535
            );
            assert_eq!(
                code(
                    &s.auth(&a, "PLAIN", &creds("alice", "right", Some("alice")))
                        .await
                )
                .0,
                0
            );
            for _ in 0..3 {
                assert_eq!(
                    code(&s.auth(&a, "PLAIN", &creds("alice", "wrong", None)).await).0,
                    535
                );
            }
            // The limit holds across sessions of the same address, even for the right password.
            let mut s2 = receiver.connect(&a).await.unwrap();
            let (n, text) = code(&s2.auth(&a, "PLAIN", &creds("alice", "right", None)).await);
            assert_eq!(n, 421, "{text}");
            assert!(text.contains("4.7.0"), "{text}");
            // Another address may still try, until the user's own limit (5) is reached.
            let b = info("192.0.2.2:1000");
            let mut s3 = receiver.connect(&b).await.unwrap();
            assert_eq!(
                code(&s3.auth(&b, "PLAIN", &creds("alice", "wrong", None)).await).0,
                535
            );
            assert_eq!(
                code(&s3.auth(&b, "PLAIN", &creds("alice", "wrong", None)).await).0,
                535
            );
            let (n, text) = code(&s3.auth(&b, "PLAIN", &creds("alice", "right", None)).await);
            assert_eq!(n, 454, "{text}");
            assert!(text.contains("4.7.0"), "{text}");
            // Other users from that address are unaffected.
            assert_eq!(
                code(&s3.auth(&b, "PLAIN", &creds("carol", "x", None)).await).0,
                535
            );
        });
    }

    #[test]
    fn dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_922_047);
        assert_eq!(rfc5322_date(t), "Sun, 29 Nov 2026 03:14:07 +0000");
        assert_eq!(
            rfc5322_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    /// The driver moves the future of every command's handler call into a box: the common
    /// ones must stay small, which holds only while every rare large wait in them (DNS
    /// checks, the store, the queue, LMTP) is boxed on its own.
    #[test]
    fn command_futures_stay_small() {
        let config = Config::default_embedded();
        let receiver = receiver(&config, Store::from_config(&config.storage, "mx.test"), &[]);
        let i = info("192.0.2.1:1000");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut s = runtime.block_on(receiver.connect(&i)).unwrap();
        let from = ReversePath::Null;
        let to = ForwardPath::Postmaster;
        let creds = creds("a", "b", None);
        let sizes = [
            ("mail_from", {
                let f = s.mail_from(&i, &from, &Parameters::EMPTY);
                size_of_val(&f)
            }),
            ("rcpt_to", {
                let f = s.rcpt_to(&i, &to, &Parameters::EMPTY);
                size_of_val(&f)
            }),
            ("data_start", {
                let f = s.data_start(&i);
                size_of_val(&f)
            }),
            ("data_chunk", {
                let f = s.data_chunk(&i, b"x");
                size_of_val(&f)
            }),
            ("data_end", {
                let f = s.data_end(&i);
                size_of_val(&f)
            }),
            ("auth", {
                let f = s.auth(&i, "PLAIN", &creds);
                size_of_val(&f)
            }),
        ];
        for (name, size) in sizes {
            assert!(size <= 2048, "{name}: a future of {size} octets");
        }
    }

    #[test]
    fn dates_are_formatted_once_per_second() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_922_047);
        let mut seen = Vec::new();
        for at in [
            t,
            t + Duration::from_millis(999),
            t + Duration::from_secs(1),
            t,
        ] {
            with_date(at, |d| seen.push(d.to_owned()));
        }
        assert_eq!(
            seen,
            [
                "Sun, 29 Nov 2026 03:14:07 +0000",
                "Sun, 29 Nov 2026 03:14:07 +0000",
                "Sun, 29 Nov 2026 03:14:08 +0000",
                "Sun, 29 Nov 2026 03:14:07 +0000",
            ]
        );
    }

    #[test]
    fn subjects() {
        assert_eq!(subject(b"From: a\r\nSubject: hello\r\n\r\nbody"), "hello");
        assert_eq!(subject(b"Subject: caf\xc3\xa9\r\n\r\n"), "caf\u{e9}");
        // Invalid UTF-8 and a character cut by the end of the head: replaced, not dropped.
        assert_eq!(subject(b"Subject: a\xff b\r\n\r\n"), "a\u{fffd} b");
        assert_eq!(subject(b"Subject: caf\xc3"), "caf\u{fffd}");
        // Only CRLF ends a line.
        assert_eq!(subject(b"Subject: a\nb\r\n\r\n"), "a\nb");
        assert_eq!(subject(b"X: 1\r\nSubject:"), "");
        assert_eq!(subject(b""), "");
        assert_eq!(
            subject(b"SUBJECT:  folded\r\n\tline\r\nX: y\r\n\r\n"),
            "folded line"
        );
        assert_eq!(subject(b"From: a\r\n\r\nSubject: in body\r\n"), "");
    }
}
