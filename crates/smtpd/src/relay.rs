//! Submission relay (RFC 6409): what an authenticated user's message to another domain must
//! satisfy, and what is added to it before it is queued.
//!
//! - The envelope sender and every `From:` address must be addresses the user owns
//!   ([`config::Relay::owns`]); otherwise `550 5.7.1`.
//! - A missing `Message-ID` or `Date` is added (RFC 6409 8.3), with a `Received:` line naming
//!   the submission.
//! - Each user relays at most `[relay] rate` messages and `recipient_rate` recipients per
//!   window ([`SendRate`]); past either, `450 4.7.1` at RCPT until the window ends.
//! - When the `From:` domain has keys in `[dkim] key_dir`, the message is signed once, as it is
//!   queued ([`assemble`], [`crate::dkim_sign`]): the queue holds it signed, so every delivery
//!   attempt sends the same bytes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mail_parser::MessageParser;
use smtpkit_queue::FileStore;
use smtpkit_server::{FailureLimiter, Verdict};

use crate::config;
use crate::dkim_sign::Signer;

/// What the receiver needs to relay: the queue, the runner's wake-up, the sender map.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The queue.
    pub store: Arc<FileStore>,
    /// Wakes the queue runner when a message is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Who may send as whom.
    pub relay: config::Relay,
    /// The DKIM keys of the key directory (none: nothing is signed).
    pub signer: Arc<Signer>,
    /// Each user's sending counts; kept across reloads.
    pub rate: Arc<SendRate>,
}

/// Per-user sending limits (`[relay] rate`, `recipient_rate`): fixed windows in a bounded
/// table, the same counter as the AUTH failure limits (Postfix's anvil counts
/// `smtpd_client_message_rate_limit` the same way). A message counts once queued; a recipient
/// counts once accepted at RCPT, so one message cannot carry a user past the recipient limit.
#[derive(Debug)]
pub struct SendRate {
    messages: FailureLimiter<String>,
    recipients: FailureLimiter<String>,
}

/// Which limit a user reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// `[relay] rate`.
    Messages {
        /// The first refusal of the window: log it (once per window).
        first: bool,
    },
    /// `[relay] recipient_rate`.
    Recipients {
        /// The first refusal of the window.
        first: bool,
    },
}

impl SendRate {
    /// The limits `relay` sets (none: everything is allowed).
    #[must_use]
    pub fn new(relay: &config::Relay) -> Self {
        // A limit of 0 turns a FailureLimiter off.
        let limiter = |rate: Option<config::Rate>| {
            rate.map_or_else(
                || FailureLimiter::new(0, Duration::ZERO),
                |r| FailureLimiter::new(r.count, r.window),
            )
        };
        Self {
            messages: limiter(relay.rate),
            recipients: limiter(relay.recipient_rate),
        }
    }

    /// Whether `user` may relay to one more recipient at `now`.
    pub fn check(&self, user: &str, now: Instant) -> Result<(), Exceeded> {
        let user = user.to_owned();
        if let Verdict::Exceeded { first } = self.messages.check(&user, now) {
            return Err(Exceeded::Messages { first });
        }
        if let Verdict::Exceeded { first } = self.recipients.check(&user, now) {
            return Err(Exceeded::Recipients { first });
        }
        Ok(())
    }

    /// Counts a recipient `user` was allowed.
    pub fn count_recipient(&self, user: &str, now: Instant) {
        self.recipients.record_failure(user.to_owned(), now);
    }

    /// Counts a message `user` queued.
    pub fn count_message(&self, user: &str, now: Instant) {
        self.messages.record_failure(user.to_owned(), now);
    }
}

/// Why a submitted message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `From:` address the user does not own.
    From(String),
}

/// What [`check_and_complete`] found in a submitted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Header fields to put above the message's own: `Message-ID` and `Date` when missing.
    pub added: String,
    /// The domain of the first `From:` address (lower case), the one a signature is made for.
    pub from_domain: Option<String>,
    /// Octets of the message's header block, its blank line included.
    pub header_len: usize,
}

/// Checks the header section of `content` for `user` and says what to add to it.
pub fn check_and_complete(
    relay: &config::Relay,
    user: &str,
    content: &[u8],
    hostname: &str,
    id: &str,
    now: SystemTime,
) -> Result<Completed, Refusal> {
    let head_end = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |i| i + 4);
    let parsed = MessageParser::default().parse_headers(&content[..head_end]);
    let mut added = String::new();
    let mut from_domain = None;
    if let Some(from) = parsed.as_ref().and_then(|m| m.from()) {
        for addr in from.iter() {
            let a = addr.address().unwrap_or_default();
            if !relay.owns(user, a) {
                return Err(Refusal::From(a.to_owned()));
            }
            if from_domain.is_none() {
                from_domain = a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
            }
        }
    }
    let has = |name: &str| {
        parsed
            .as_ref()
            .is_some_and(|m| m.header_raw(name).is_some())
    };
    if !has("Message-ID") {
        let _ = write!(added, "Message-ID: <{id}@{hostname}>\r\n");
    }
    if !has("Date") {
        let _ = write!(added, "Date: {}\r\n", smtpkit_queue::dsn::rfc5322_date(now));
    }
    Ok(Completed {
        added,
        from_domain,
        header_len: head_end,
    })
}

/// The queued form of a relayed message: the `DKIM-Signature` fields (when `signing`, the
/// signer and the [`crate::dkim_sign::BodyHash`] of `content`, has a key for the `From:`
/// domain), `trace` (our `Received:`), the fields `completed` adds, then `content`. A signing
/// error leaves the message unsigned and is handed back for the log: mail is never refused for
/// want of a signature.
pub fn assemble(
    trace: &[u8],
    completed: &Completed,
    content: &[u8],
    signing: Option<(&Signer, &[u8])>,
    now: SystemTime,
) -> (Vec<u8>, Option<mail_auth::Error>) {
    let signed = match (signing, completed.from_domain.as_deref()) {
        (Some((signer, body_hash)), Some(domain)) => signer.sign(
            domain,
            completed.added.as_bytes(),
            &content[..completed.header_len.min(content.len())],
            body_hash,
            now,
        ),
        _ => Ok(String::new()),
    };
    let (signatures, error) = match signed {
        Ok(signatures) => (signatures, None),
        Err(e) => (String::new(), Some(e)),
    };
    let mut message =
        Vec::with_capacity(signatures.len() + trace.len() + completed.added.len() + content.len());
    message.extend_from_slice(signatures.as_bytes());
    message.extend_from_slice(trace);
    message.extend_from_slice(completed.added.as_bytes());
    message.extend_from_slice(content);
    (message, error)
}

/// The `Received:` line of a submission (RFC 5321 4.4; `ESMTPSA`/`ESMTPA`, RFC 3848). The
/// client's address is left out: a submitting user's home address is nobody's business
/// (RFC 6409 doesn't require it, and Postfix's header_checks commonly strip it).
#[must_use]
pub fn received(hostname: &str, info: &smtpkit_server::SessionInfo) -> String {
    let protocol = if info.tls { "ESMTPSA" } else { "ESMTPA" };
    format!(
        "Received: by {hostname} with {protocol} id {};\r\n\t{}\r\n",
        info.id,
        smtpkit_queue::dsn::rfc5322_date(SystemTime::now())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> config::Relay {
        config::Relay {
            enabled: true,
            senders: [(
                "alice".to_owned(),
                vec![
                    "alice@example.org".to_owned(),
                    "@lists.example.org".to_owned(),
                ],
            )]
            .into(),
            ..config::Relay::default()
        }
    }

    #[test]
    fn owners() {
        let r = relay();
        assert!(r.owns("alice", "Alice@Example.org"));
        assert!(r.owns("alice", "news@lists.example.org"));
        assert!(!r.owns("alice", "bob@example.org"));
        assert!(!r.owns("alice", "x@sub.lists.example.org"));
        assert!(r.owns("carol@example.net", "carol@example.net"));
        assert!(!r.owns("bob", "bob@example.org"));
    }

    #[test]
    fn from_is_checked_and_missing_headers_are_added() {
        let r = relay();
        let now = smtpkit_queue::from_unix(1_795_922_047);
        let added = check_and_complete(
            &r,
            "alice",
            b"From: Alice <alice@example.org>\r\nSubject: x\r\n\r\nbody\r\n",
            "mx.example.org",
            "ID1",
            now,
        )
        .unwrap();
        assert_eq!(
            added.added,
            "Message-ID: <ID1@mx.example.org>\r\nDate: Sun, 29 Nov 2026 03:14:07 +0000\r\n"
        );
        assert_eq!(added.from_domain.as_deref(), Some("example.org"));
        assert_eq!(added.header_len, 47);
        let kept = check_and_complete(
            &r,
            "alice",
            b"From: alice@example.org\r\nMessage-ID: <a@b>\r\nDate: Sun, 29 Nov 2026 03:14:07 +0000\r\n\r\nx\r\n",
            "h",
            "i",
            now,
        )
        .unwrap();
        assert_eq!(kept.added, "");
        assert_eq!(
            check_and_complete(
                &r,
                "alice",
                b"From: alice@example.org, Bob <bob@example.org>\r\n\r\nx\r\n",
                "h",
                "i",
                now
            ),
            Err(Refusal::From("bob@example.org".to_owned()))
        );
        // A body line that looks like a header is not a header.
        assert!(
            check_and_complete(
                &r,
                "alice",
                b"Subject: x\r\n\r\nFrom: bob@example.org\r\n",
                "h",
                "i",
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn the_queued_form_is_signatures_trace_added_fields_then_the_message() {
        let now = smtpkit_queue::from_unix(1_795_922_047);
        let content = b"From: alice@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let completed =
            check_and_complete(&relay(), "alice", content, "mx.example.org", "ID1", now).unwrap();
        let mut hash = crate::dkim_sign::BodyHash::new();
        hash.write(content);
        let body_hash = hash.finish();
        let trace = b"Received: by mx.example.org\r\n";

        // No key for the domain: unsigned.
        let unsigned = Signer::default();
        let (message, error) = assemble(
            trace,
            &completed,
            content,
            Some((&unsigned, &body_hash)),
            now,
        );
        assert!(error.is_none());
        let expected = [trace, completed.added.as_bytes(), content].concat();
        assert_eq!(message, expected);

        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::dkim_key::KeyStore::load(dir.path()).unwrap();
        store.ensure("example.org", now).unwrap();
        let signer = Signer::from_store(&store).unwrap();
        let (message, error) =
            assemble(trace, &completed, content, Some((&signer, &body_hash)), now);
        assert!(error.is_none(), "{error:?}");
        let text = String::from_utf8(message).unwrap();
        assert!(
            text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=202611e; d=example.org;"),
            "{text}"
        );
        assert_eq!(text.matches("DKIM-Signature: ").count(), 2, "{text}");
        assert!(text.contains("t=1795922047;"), "{text}");
        assert!(
            text.ends_with(std::str::from_utf8(&expected).unwrap()),
            "{text}"
        );
        // Not asked to sign: unsigned whatever the keys.
        let (message, _) = assemble(trace, &completed, content, None, now);
        assert_eq!(message, expected);
    }

    #[test]
    fn send_rates_per_user_and_window() {
        let mut r = relay();
        r.rate = Some("2/h".parse().unwrap());
        r.recipient_rate = Some("3/10m".parse().unwrap());
        let rate = SendRate::new(&r);
        let t0 = Instant::now();
        // Three recipients in two messages, then the recipient limit.
        for _ in 0..3 {
            assert_eq!(rate.check("alice", t0), Ok(()));
            rate.count_recipient("alice", t0);
        }
        rate.count_message("alice", t0);
        assert_eq!(
            rate.check("alice", t0),
            Err(Exceeded::Recipients { first: true })
        );
        assert_eq!(
            rate.check("alice", t0),
            Err(Exceeded::Recipients { first: false })
        );
        // Others are not affected.
        assert_eq!(rate.check("bob", t0), Ok(()));
        // Ten minutes on, recipients may go again, until the second message fills the hour.
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(rate.check("alice", t1), Ok(()));
        rate.count_recipient("alice", t1);
        rate.count_message("alice", t1);
        assert_eq!(
            rate.check("alice", t1),
            Err(Exceeded::Messages { first: true })
        );
        assert_eq!(rate.check("alice", t0 + Duration::from_secs(3600)), Ok(()));

        // No limits configured: nothing is counted or refused.
        let open = SendRate::new(&relay());
        for _ in 0..1000 {
            open.count_message("alice", t0);
            open.count_recipient("alice", t0);
        }
        assert_eq!(open.check("alice", t0), Ok(()));
    }
}
