//! Delivery status notifications (RFC 3464): a `multipart/report; report-type=delivery-status`
//! with a human part, one `message/delivery-status` part with a block per recipient, and the
//! original message's headers as `text/rfc822-headers` (RFC 6522).

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::entry::{Entry, Recipient, from_unix};

/// The most of the original header section copied into a notice.
pub const MAX_HEADERS: usize = 64 * 1024;

/// What a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The recipients failed for good (`Action: failed`).
    Failed,
    /// The recipients are still being retried (`Action: delayed`).
    Delayed,
}

/// A notice to build.
#[derive(Debug, Clone, Copy)]
pub struct Notice<'a> {
    /// This host's name (`Reporting-MTA`, the `From:` domain).
    pub reporting_mta: &'a str,
    /// The message reported on.
    pub entry: &'a Entry,
    /// The recipients reported on.
    pub recipients: &'a [Recipient],
    /// Failed or delayed.
    pub action: Action,
    /// The original content (only its header section is copied).
    pub original: &'a [u8],
    /// When the notice is made.
    pub now: SystemTime,
    /// When retries end (for `Will-Retry-Until` in a delay notice).
    pub retry_until: SystemTime,
}

/// The notice's content, ready to queue with the null sender to `entry.sender`.
#[must_use]
pub fn build(n: &Notice<'_>) -> Vec<u8> {
    let sender = n.entry.sender.as_deref().unwrap_or("");
    let boundary = format!("{}/{}", n.entry.id, n.reporting_mta);
    let subject = match n.action {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
    };
    let date = rfc5322_date(n.now);
    let mut m = String::with_capacity(2048);
    let host = n.reporting_mta;
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{sender}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{}.{}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n",
        n.entry.id,
        match n.action {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
        },
    );
    let _ = write!(m, "This is the mail system at host {host}.\r\n\r\n");
    match n.action {
        Action::Failed => m.push_str(
            "Your message could not be delivered to one or more recipients.\r\n\
             It is attached below.\r\n\r\n",
        ),
        Action::Delayed => {
            let _ = write!(
                m,
                "Your message could not be delivered yet. It is still being retried\r\n\
                 until {}; you need not send it again.\r\n\r\n",
                rfc5322_date(n.retry_until)
            );
        }
    }
    for r in n.recipients {
        let _ = write!(
            m,
            "<{}>: {}\r\n",
            one_line(&r.address),
            one_line(r.last_reply.as_deref().unwrap_or("no reply"))
        );
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         X-Queue-ID: {}\r\n\
         Arrival-Date: {}\r\n",
        n.entry.id,
        rfc5322_date(from_unix(n.entry.created)),
    );
    for r in n.recipients {
        let reply = r.last_reply.as_deref().map(one_line);
        let status = reply
            .as_deref()
            .and_then(enhanced_code)
            .unwrap_or(match n.action {
                Action::Failed => "5.0.0".to_owned(),
                Action::Delayed => "4.0.0".to_owned(),
            });
        let _ = write!(
            m,
            "\r\nFinal-Recipient: rfc822; {}\r\n\
             Action: {}\r\n\
             Status: {status}\r\n",
            one_line(&r.address),
            match n.action {
                Action::Failed => "failed",
                Action::Delayed => "delayed",
            },
        );
        if let Some(remote) = &r.remote {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", one_line(remote));
        }
        if let Some(reply) = &reply {
            // RFC 3464 2.3.6: `smtp;` only for a reply an SMTP server gave; our own errors
            // (DNS, connection, expiry) are in the human part and `X-Diagnostic`.
            if is_smtp_reply(reply) {
                let _ = write!(m, "Diagnostic-Code: smtp; {reply}\r\n");
            } else {
                let _ = write!(m, "X-Diagnostic: {reply}\r\n");
            }
        }
        let _ = write!(m, "Last-Attempt-Date: {date}\r\n");
        if n.action == Action::Delayed {
            let _ = write!(m, "Will-Retry-Until: {}\r\n", rfc5322_date(n.retry_until));
        }
    }
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n"
    );
    let mut out = m.into_bytes();
    out.extend_from_slice(header_section(n.original));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The header section of a message (up to the empty line), at most [`MAX_HEADERS`] octets and
/// cut at a line end.
fn header_section(content: &[u8]) -> &[u8] {
    let end = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |i| i + 2);
    let mut head = &content[..end.min(MAX_HEADERS)];
    if head.len() == MAX_HEADERS
        && let Some(i) = head.windows(2).rposition(|w| w == b"\r\n")
    {
        head = &head[..i + 2];
    }
    head
}

/// Printable, one line: what goes into a header field of the notice.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn is_smtp_reply(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && matches!(b[0], b'2'..=b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b.get(3).is_none_or(|c| matches!(c, b' ' | b'-'))
}

/// The RFC 3463 code after an SMTP reply code (`550 5.1.1 ...` gives `5.1.1`).
fn enhanced_code(reply: &str) -> Option<String> {
    if !is_smtp_reply(reply) {
        return None;
    }
    let code = reply.get(4..)?.split_whitespace().next()?;
    let mut parts = code.split('.');
    let class = parts.next()?;
    let ok = matches!(class, "2" | "4" | "5")
        && parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| code.to_owned())
}

/// `date-time` in UTC (RFC 5322 3.3), e.g. `Sun, 29 Nov 2026 03:14:07 +0000`.
#[must_use]
pub fn rfc5322_date(t: SystemTime) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Kind, RecipientState};
    use crate::id::QueueId;
    use mail_parser::{MessageParser, MimeHeaders};

    fn failed(addr: &str, reply: &str) -> Recipient {
        Recipient {
            address: addr.into(),
            state: RecipientState::Failed,
            last_reply: Some(reply.into()),
            remote: Some("mx.example.com".into()),
        }
    }

    #[test]
    fn a_bounce_is_a_multipart_report_with_a_block_per_recipient_and_the_headers() {
        let now = from_unix(1_795_922_047);
        let entry = Entry {
            id: QueueId::generate(now),
            kind: Kind::Message,
            sender: Some("alice@example.org".into()),
            recipients: vec![],
            size: 0,
            created: 1_795_900_000,
            attempts: 1,
            next_attempt: 0,
            held: false,
            delay_notified: false,
            lease: None,
        };
        let rcpts = [
            failed(
                "bob@example.com",
                "550 5.1.1 <bob@example.com>: user unknown",
            ),
            failed("carol@example.com", "connection refused\r\nInjected: yes"),
        ];
        let original = b"From: alice@example.org\r\nSubject: hello\r\n\r\nsecret body\r\n";
        let bytes = build(&Notice {
            reporting_mta: "mx.example.org",
            entry: &entry,
            recipients: &rcpts,
            action: Action::Failed,
            original,
            now,
            retry_until: now,
        });
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("secret body"), "{text}");
        assert!(!text.contains("\r\nInjected"), "{text}");
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.parts.len(), 4, "{text}");
        let types: Vec<String> = msg.parts[1..]
            .iter()
            .map(|p| {
                let ct = p.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
        assert!(
            status.contains("Reporting-MTA: dns; mx.example.org\r\n"),
            "{status}"
        );
        assert!(status.contains("Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.com\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: user unknown\r\n"), "{status}");
        assert!(
            status.contains(
                "Final-Recipient: rfc822; carol@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
            ),
            "{status}"
        );
        let headers = String::from_utf8_lossy(msg.parts[3].contents()).into_owned();
        assert!(headers.contains("Subject: hello"), "{headers}");
        assert_eq!(
            msg.to().unwrap().first().unwrap().address(),
            Some("alice@example.org")
        );
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
    }

    #[test]
    fn enhanced_codes_and_header_sections() {
        assert_eq!(enhanced_code("550 5.1.1 no").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced_code("451 4.7.1"), Some("4.7.1".into()));
        assert_eq!(enhanced_code("550 no such user"), None);
        assert_eq!(enhanced_code("timeout"), None);
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        let big = format!("X: {}\r\n", "y".repeat(MAX_HEADERS));
        assert!(header_section(big.as_bytes()).len() <= MAX_HEADERS);
    }

    #[test]
    fn dates() {
        assert_eq!(
            rfc5322_date(from_unix(1_795_922_047)),
            "Sun, 29 Nov 2026 03:14:07 +0000"
        );
        assert_eq!(
            rfc5322_date(from_unix(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }
}
