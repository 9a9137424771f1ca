//! The SMTP side of smtpd: a [`Handler`] whose sessions route recipients, stream each message
//! into the store with `Return-Path:` and `Received:` prepended, and answer 250 only once every
//! copy is durable.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use smtpkit_proto::address::DomainPart;
use smtpkit_server::{
    CloseReason, Credentials, Decision, EnhancedCode, ForwardPath, Handler, ListenerKind,
    Parameters, Reply, ReplyCode, ReversePath, Session, SessionInfo,
};
use tracing::{info, warn};

use crate::maildir::{MessageWriter, Store};
use crate::password::Credentials as Accounts;
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
}

/// The server-wide handler; holds the current [`State`].
#[derive(Debug, Clone)]
pub struct Receiver {
    state: Arc<std::sync::RwLock<Arc<State>>>,
}

impl Receiver {
    /// A handler serving `state`.
    pub fn new(state: State) -> Self {
        Self {
            state: Arc::new(std::sync::RwLock::new(Arc::new(state))),
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
        info!(session = %info.id, peer = %info.peer, listener = %info.listener, tls = info.tls, "connect");
        Ok(Conversation {
            state: self.current(),
            txn: None,
            messages: 0,
            rejected: 0,
        })
    }
}

/// One connection.
#[derive(Debug)]
pub struct Conversation {
    state: Arc<State>,
    txn: Option<Transaction>,
    messages: u32,
    rejected: u32,
}

#[derive(Debug, Default)]
struct Transaction {
    from: String,
    /// Envelope recipients as given, for logs and the `for` clause.
    rcpts: Vec<String>,
    /// Mailboxes to deliver to, deduplicated.
    mailboxes: Vec<MailboxPath>,
    writer: Option<MessageWriter>,
    /// The first bytes of the content, to find the Subject for the log line.
    head: Vec<u8>,
    failed: Option<String>,
}

/// How much of the content is kept to find the Subject header.
const HEAD_BYTES: usize = 8 * 1024;

/// A refusal, through smtpkit-server's one reply builder (which never panics: unusable parts
/// become 451 4.3.0).
fn reply(code: ReplyCode, enhanced: EnhancedCode, text: &str) -> Decision {
    Decision::reply(code.get(), enhanced, text)
}

impl Conversation {
    fn abort(&mut self) {
        if let Some(writer) = self.txn.as_mut().and_then(|t| t.writer.take()) {
            writer.abort();
        }
    }

    /// Commits the message; the one place that decides the reply to the end of data.
    async fn finish(&mut self, info: &SessionInfo) -> Decision {
        let Some(mut txn) = self.txn.take() else {
            return reply(
                ReplyCode::LOCAL_ERROR,
                EnhancedCode::SYSTEM_TRANSIENT,
                "Local error in processing",
            );
        };
        let subject = subject(&txn.head);
        let size = txn.writer.as_ref().map_or(0, MessageWriter::size);
        let is_sink = matches!(self.state.store, Store::Sink(_));
        let outcome = match (txn.writer.take(), txn.failed.take()) {
            (Some(writer), None) => {
                blocking(is_sink, || writer.commit()).map_err(|e| e.to_string())
            }
            (Some(writer), Some(e)) => {
                writer.abort();
                Err(e)
            }
            (None, e) => Err(e.unwrap_or_else(|| "no message writer".into())),
        };
        match outcome {
            Ok(receipt) => {
                self.messages += 1;
                info!(
                    session = %info.id, peer = %info.peer, ehlo = info.ehlo.as_deref().unwrap_or(""),
                    from = %txn.from, to = %txn.rcpts.join(","), subject = %subject, size,
                    id = %receipt.id, outcome = "stored", "message"
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
                    session = %info.id, peer = %info.peer, from = %txn.from, to = %txn.rcpts.join(","),
                    subject = %subject, size, %error, outcome = "failed", "message"
                );
                reply(
                    ReplyCode::LOCAL_ERROR,
                    EnhancedCode::SYSTEM_TRANSIENT,
                    "Local error in processing; try again later",
                )
            }
        }
    }
}

impl Session for Conversation {
    async fn auth(&mut self, info: &SessionInfo, creds: &Credentials) -> Decision {
        let accounts = Arc::clone(&self.state);
        let user = creds.authcid.clone();
        let password = creds.password.expose().clone();
        // Argon2 takes tens of milliseconds by design: keep it off the async threads.
        let ok = tokio::task::spawn_blocking(move || accounts.accounts.verify(&user, password))
            .await
            .unwrap_or(false);
        if ok {
            info!(session = %info.id, user = %creds.authcid, "authenticated");
            Decision::Accept
        } else {
            warn!(session = %info.id, peer = %info.peer, user = %creds.authcid, "authentication failed");
            reply(
                ReplyCode::AUTH_FAILED,
                EnhancedCode::AUTH_FAILED,
                "Authentication credentials invalid",
            )
        }
    }

    async fn mail_from(
        &mut self,
        _info: &SessionInfo,
        from: &ReversePath<'_>,
        _params: &Parameters<'_>,
    ) -> Decision {
        self.abort();
        self.txn = Some(Transaction {
            from: from.to_string(),
            ..Transaction::default()
        });
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
                txn.rcpts.push(to.to_string());
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
        let Some(txn) = self.txn.as_mut() else {
            return reply(
                ReplyCode::BAD_SEQUENCE,
                EnhancedCode::INVALID_COMMAND,
                "Send MAIL first",
            );
        };
        let prepend = trace_headers(&self.state.hostname, info, &txn.from, &txn.rcpts);
        let store = self.state.store.clone();
        let mailboxes = txn.mailboxes.clone();
        match blocking(matches!(store, Store::Sink(_)), || {
            store.begin(prepend.as_bytes(), &mailboxes)
        }) {
            Ok(writer) => {
                txn.writer = Some(writer);
                Decision::Accept
            }
            Err(error) => {
                warn!(session = %info.id, %error, "cannot start delivery");
                reply(
                    ReplyCode::LOCAL_ERROR,
                    EnhancedCode::SYSTEM_TRANSIENT,
                    "Local error in processing; try again later",
                )
            }
        }
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
        if txn.failed.is_some() {
            return Ok(());
        }
        if let Some(writer) = txn.writer.as_mut()
            && let Err(e) = writer.write_chunk(chunk)
        {
            // Keep reading the body; the error answers the end of data.
            txn.failed = Some(e.to_string());
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
            info!(session = %info.id, from = %txn.from, to = %txn.rcpts.join(","), outcome = "aborted", "message");
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
            session = %info.id, peer = %info.peer, ehlo = info.ehlo.as_deref().unwrap_or(""),
            tls = info.tls, user = info.authenticated.as_deref().unwrap_or(""),
            messages = self.messages, failed = self.rejected, %reason, "session"
        );
    }
}

/// Runs file-system work (create, write, fsync, rename) where it may block: on this worker,
/// after telling tokio to move the other tasks away. The sink does no IO, so it runs inline.
fn blocking<T>(inline: bool, f: impl FnOnce() -> T) -> T {
    if inline {
        f()
    } else {
        tokio::task::block_in_place(f)
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
    let ehlo = info.ehlo.as_deref().unwrap_or("unknown");
    let mut h = String::with_capacity(256);
    let _ = write!(
        h,
        "Return-Path: {from}\r\nReceived: from {ehlo} ({})\r\n\tby {hostname} with {protocol} id {}",
        info.peer.ip(),
        info.id
    );
    // A single recipient is named; naming several would disclose the Bcc list (RFC 5321 7.2).
    if let [one] = rcpts {
        let _ = write!(h, "\r\n\tfor {one}");
    }
    let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(SystemTime::now()));
    h
}

/// `date-time` in UTC (RFC 5322 3.3), e.g. `Sun, 29 Nov 2026 03:14:07 +0000`.
fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The Subject header from the start of a message, unfolded, for logs.
fn subject(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n").take_while(|l| !l.is_empty()).peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case("subject:") {
            let mut value = line[8..].trim().to_owned();
            while let Some(cont) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(cont.trim());
            }
            return value;
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn subjects() {
        assert_eq!(subject(b"From: a\r\nSubject: hello\r\n\r\nbody"), "hello");
        assert_eq!(
            subject(b"SUBJECT:  folded\r\n\tline\r\nX: y\r\n\r\n"),
            "folded line"
        );
        assert_eq!(subject(b"From: a\r\n\r\nSubject: in body\r\n"), "");
    }
}
