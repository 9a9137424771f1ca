//! Submission relay (RFC 6409): what an authenticated user's message to another domain must
//! satisfy, and what is added to it before it is queued.
//!
//! - The envelope sender and every `From:` address must be addresses the user owns
//!   ([`config::Relay::owns`]); otherwise `550 5.7.1`.
//! - A missing `Message-ID` or `Date` is added (RFC 6409 8.3), with a `Received:` line naming
//!   the submission.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use mail_parser::MessageParser;
use smtpkit_queue::FileStore;

use crate::config;

/// What the receiver needs to relay: the queue, the runner's wake-up, the sender map.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The queue.
    pub store: Arc<FileStore>,
    /// Wakes the queue runner when a message is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Who may send as whom.
    pub relay: config::Relay,
}

/// Why a submitted message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `From:` address the user does not own.
    From(String),
}

/// Checks the header section of `content` for `user` and returns the headers to prepend:
/// `Message-ID` and `Date` when missing.
pub fn check_and_complete(
    relay: &config::Relay,
    user: &str,
    content: &[u8],
    hostname: &str,
    id: &str,
    now: SystemTime,
) -> Result<String, Refusal> {
    let head_end = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |i| i + 4);
    let parsed = MessageParser::default().parse_headers(&content[..head_end]);
    let mut added = String::new();
    if let Some(from) = parsed.as_ref().and_then(|m| m.from()) {
        for addr in from.iter() {
            let a = addr.address().unwrap_or_default();
            if !relay.owns(user, a) {
                return Err(Refusal::From(a.to_owned()));
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
    Ok(added)
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
            added,
            "Message-ID: <ID1@mx.example.org>\r\nDate: Sun, 29 Nov 2026 03:14:07 +0000\r\n"
        );
        let kept = check_and_complete(
            &r,
            "alice",
            b"From: alice@example.org\r\nMessage-ID: <a@b>\r\nDate: Sun, 29 Nov 2026 03:14:07 +0000\r\n\r\nx\r\n",
            "h",
            "i",
            now,
        )
        .unwrap();
        assert_eq!(kept, "");
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
}
