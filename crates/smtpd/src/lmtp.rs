//! Delivery over LMTP (`[storage] lmtp`): local recipients are handed to an LMTP server
//! (Dovecot's `lmtp` service, say) instead of the Maildir writer, within the SMTP transaction,
//! and the LMTP server's per-recipient replies become the one reply to the client's DATA.
//!
//! # The content
//!
//! A message is held in memory up to `receiver::STAGE_BYTES`; beyond that it goes to an
//! unlinked temporary file ([`Spool`]) as it arrives, so a large message never sits whole in
//! memory. It is sent once the client has finished it: the checks' `Authentication-Results:`
//! go above the message's own headers, and they are known only at the end.
//!
//! # One reply for several recipients
//!
//! SMTP has one reply to DATA, LMTP one per recipient (RFC 2033 4.2). [`reply_to_data`]:
//! - every recipient delivered: `250`;
//! - one recipient: its own reply (a `421` becomes `451`: closing the client's session is not
//!   the LMTP server's call);
//! - any temporary failure (a 4xx, an unreachable or silent server): `451` with that reason.
//!   The client retries the whole message, so a recipient already delivered may get it twice:
//!   a duplicate, never a loss (RFC 5321 6.1 puts the message's safety first);
//! - only permanent failures: the first failure's 5xx, naming every failed recipient and, when
//!   some were delivered, saying so. The client's bounce then tells the sender exactly who did
//!   not get it; the alternative (250, then a bounce of our own) needs the outbound queue, which
//!   a receive-only server does not run.
//!
//! A connection is opened per message: local LMTP connections are cheap, and none idles
//! between messages.

use std::fmt::Write as _;
use std::io::{self, Seek as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::server::Protocol;
use smtpkit_server::client::{Address, Delivery, Error};
use smtpkit_server::{EnhancedCode, ReplyCode};
use smtpkit_tokio::client::{
    self, Body, BodyReader, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient,
};
use tokio::io::AsyncReadExt as _;

use crate::routing::MailboxPath;

/// The longest reply text we compose, well inside the 512 octets of a reply line.
const MAX_TEXT: usize = 400;

/// An LMTP server to deliver to.
#[derive(Debug, Clone)]
pub struct Lmtp {
    address: Address,
    config: Arc<ClientConfig>,
    /// The whole exchange, connect to the last reply: the storage timeout, since the LMTP
    /// server stands where the Maildir would.
    timeout: Duration,
}

impl Lmtp {
    /// A server at `address`, greeted as `hostname`, given `timeout` for each message.
    pub fn new(address: Address, hostname: &str, timeout: Duration) -> Result<Self, String> {
        let options = ClientOptions {
            hostname: hostname.to_owned(),
            protocol: Protocol::Lmtp,
            timeouts: ClientTimeouts {
                greeting: timeout,
                mail: timeout,
                rcpt: timeout,
                data_start: timeout,
                data_block: timeout,
                data_end: timeout,
                command: timeout,
            },
            ..ClientOptions::default()
        };
        let config = ClientConfig::new(options).map_err(|e| format!("[storage] lmtp: {e}"))?;
        Ok(Self {
            address,
            config: Arc::new(config),
            timeout,
        })
    }

    /// The server `[storage] lmtp` names, if any, with the storage timeout.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, String> {
        let Some(text) = &config.storage.lmtp else {
            return Ok(None);
        };
        let address = text.parse().map_err(|e| format!("storage.lmtp: {e}"))?;
        let timeout = config.limits.timeouts.storage();
        Self::new(address, &config.hostname, timeout).map(Some)
    }

    /// The server's address.
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Delivers `message` from `sender` (`local@domain`, empty for `<>`) to `mailboxes`.
    /// `Err` is a failure for every recipient (the server cannot be reached, or did not
    /// answer in time); `Ok` tells each recipient's fate, in order.
    pub async fn deliver(
        &self,
        sender: &str,
        mailboxes: &[MailboxPath],
        message: Message,
    ) -> Result<Delivery, Error> {
        let work = self.exchange(sender, mailboxes, message);
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    async fn exchange(
        &self,
        sender: &str,
        mailboxes: &[MailboxPath],
        message: Message,
    ) -> Result<Delivery, Error> {
        let reverse_path = if sender.is_empty() {
            ReversePath::Null
        } else {
            ReversePath::Mailbox(Mailbox::parse(sender).map_err(|_| unusable("sender"))?)
        };
        let addresses: Vec<String> = mailboxes.iter().map(mailbox_address).collect();
        let recipients = addresses
            .iter()
            .map(|a| Mailbox::parse(a).map(|m| Recipient::new(ForwardPath::Mailbox(m))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| unusable("recipient"))?;
        let mut conn = client::connect_to(&self.address, Arc::clone(&self.config), None).await?;
        let envelope = Envelope::new(reverse_path, &recipients).with_size(message.size());
        let Message { head, spool, tail } = message;
        let file = spool.map(tokio::fs::File::from_std);
        let mut reader = BodyReader(
            io::Cursor::new(head)
                .chain(ReadAll(file))
                .chain(io::Cursor::new(tail)),
        );
        let delivery = conn.send(&envelope, Body::Reader(&mut reader)).await;
        // The replies are in; a QUIT that goes wrong changes none of them.
        let _ = conn.quit().await;
        delivery
    }
}

/// A recipient or sender smtpd accepted that the LMTP client cannot write: permanent.
fn unusable(what: &str) -> Error {
    let text = format!("The {what} address cannot be written in LMTP");
    match smtpkit_proto::Reply::new(ReplyCode::MAILBOX_NAME_INVALID, text) {
        Ok(reply) => Error::Rejected(reply.with_enhanced(EnhancedCode::SYNTAX_ERROR)),
        Err(_) => Error::Closed,
    }
}

/// An optional tokio file as a reader (empty without one).
struct ReadAll(Option<tokio::fs::File>);

impl tokio::io::AsyncRead for ReadAll {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.0.as_mut() {
            Some(f) => std::pin::Pin::new(f).poll_read(cx, buf),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// `local@domain` of a mailbox: its directory names decoded (see [`MailboxPath::new`]), so
/// the address after alias expansion and without the `+tag`, in lower case.
#[must_use]
pub fn mailbox_address(mailbox: &MailboxPath) -> String {
    format!(
        "{}@{}",
        decode_component(mailbox.local_dir()),
        decode_component(mailbox.domain_dir())
    )
}

/// Undoes `routing::encode_component`: `%xx` to the byte, `%empty` to nothing.
fn decode_component(name: &str) -> String {
    if name == "%empty" {
        return String::new();
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A message on its way to the LMTP server: `head` (smtpd's trace headers and the checks'
/// results), the spooled middle, and the content not yet spooled.
#[derive(Debug, Default)]
pub struct Message {
    /// Sent first.
    pub head: Vec<u8>,
    /// Sent next, from its start.
    pub spool: Option<std::fs::File>,
    /// Sent last.
    pub tail: Vec<u8>,
}

impl Message {
    /// Octets in all, for `SIZE=`.
    fn size(&self) -> u64 {
        let spooled = self
            .spool
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        self.head.len() as u64 + spooled + self.tail.len() as u64
    }
}

/// Content past the memory stage: smtpd's trace headers kept apart (the checks' results go
/// right after them), the rest in an unlinked temporary file.
#[derive(Debug)]
pub struct Spool {
    trace: Vec<u8>,
    file: std::fs::File,
}

impl Spool {
    /// Appends `staged` to `spool`, starting one (whose first `trace_len` octets of `staged`
    /// are the trace headers) when there is none. Blocks: call it on the blocking pool.
    /// Returns `staged` emptied, for reuse.
    pub fn append(
        spool: Option<Self>,
        mut staged: Vec<u8>,
        trace_len: usize,
    ) -> io::Result<(Self, Vec<u8>)> {
        let mut spool = match spool {
            Some(spool) => spool,
            None => {
                let at = trace_len.min(staged.len());
                let content = staged.split_off(at);
                let trace = std::mem::replace(&mut staged, content);
                Self {
                    trace,
                    file: tempfile::tempfile()?,
                }
            }
        };
        spool.file.write_all(&staged)?;
        staged.clear();
        Ok((spool, staged))
    }

    /// The message to send: trace headers, `results`, the spooled content, then `rest`.
    /// Blocks (a seek): call it on the blocking pool.
    pub fn into_message(self, results: &[u8], rest: Vec<u8>) -> io::Result<Message> {
        let Self {
            mut trace,
            mut file,
        } = self;
        file.flush()?;
        file.rewind()?;
        trace.extend_from_slice(results);
        Ok(Message {
            head: trace,
            spool: Some(file),
            tail: rest,
        })
    }
}

/// The message from content that stayed in memory: `results` go after the first `trace_len`
/// octets of `staged`.
#[must_use]
pub fn in_memory(mut staged: Vec<u8>, trace_len: usize, results: &[u8]) -> Message {
    let at = trace_len.min(staged.len());
    let tail = staged.split_off(at);
    staged.extend_from_slice(results);
    Message {
        head: staged,
        spool: None,
        tail,
    }
}

/// The SMTP reply to DATA for what the LMTP server said; see the [module docs](self).
/// `addresses` are the recipients' addresses, in the order of the delivery's entries.
#[must_use]
pub fn reply_to_data(
    addresses: &[String],
    delivery: &Result<Delivery, Error>,
) -> (ReplyCode, EnhancedCode, String) {
    let results = match delivery {
        Ok(d) => &d.recipients,
        Err(e) => return temporary_or(e, &format!("Local delivery failed: {}", describe(e))),
    };
    if results.iter().all(Result::is_ok) {
        if let [Ok(reply)] = &results[..] {
            let code = reply.code();
            return (code, enhanced_of(code, reply.enhanced()), one_line(reply));
        }
        return (
            ReplyCode::OK,
            EnhancedCode::OK,
            format!("Ok: delivered to {} recipients", results.len()),
        );
    }
    if let [Err(e)] = &results[..] {
        return match e.reply() {
            Some(reply) if e.is_permanent() => {
                let code = reply.code();
                (code, enhanced_of(code, reply.enhanced()), one_line(reply))
            }
            _ => temporary_or(e, &describe(e)),
        };
    }
    let failed: Vec<(&String, &Error)> = addresses
        .iter()
        .zip(results)
        .filter_map(|(a, r)| r.as_ref().err().map(|e| (a, e)))
        .collect();
    let delivered = results.len() - failed.len();
    let mut text = String::from("Not delivered to");
    for (address, e) in &failed {
        let _ = write!(text, " <{address}> ({})", describe(e));
    }
    if delivered > 0 {
        let _ = write!(text, "; delivered to the other {delivered}");
    }
    let text = truncate(text);
    if let Some((_, e)) = failed.iter().find(|(_, e)| e.is_temporary()) {
        return temporary_or(e, &text);
    }
    let (_, first) = failed[0];
    match first.reply() {
        Some(reply) => {
            let code = reply.code();
            (code, enhanced_of(code, reply.enhanced()), text)
        }
        None => (
            ReplyCode::MAILBOX_UNAVAILABLE,
            EnhancedCode::PERMANENT,
            text,
        ),
    }
}

/// `451` with the failure's enhanced code when it has a 4xx of its own, `4.3.0` otherwise.
fn temporary_or(e: &Error, text: &str) -> (ReplyCode, EnhancedCode, String) {
    let enhanced = e
        .reply()
        .and_then(|r| r.enhanced())
        .filter(|c| c.class() == 4)
        .unwrap_or(EnhancedCode::SYSTEM_TRANSIENT);
    (ReplyCode::LOCAL_ERROR, enhanced, truncate(text.to_owned()))
}

/// The enhanced code to send with `code`: the LMTP server's when its class fits.
fn enhanced_of(code: ReplyCode, enhanced: Option<EnhancedCode>) -> EnhancedCode {
    let default = match code.class() {
        2 => EnhancedCode::OK,
        4 => EnhancedCode::SYSTEM_TRANSIENT,
        _ => EnhancedCode::PERMANENT,
    };
    enhanced
        .filter(|e| e.class() == code.class())
        .unwrap_or(default)
}

/// A failure in a few words, for reply texts and logs.
fn describe(e: &Error) -> String {
    match e.reply() {
        Some(reply) => {
            let mut s = reply.code().to_string();
            if let Some(enhanced) = reply.enhanced() {
                let _ = write!(s, " {enhanced}");
            }
            let _ = write!(s, " {}", one_line(reply));
            s
        }
        None => e.to_string(),
    }
}

/// A reply's text on one line.
fn one_line(reply: &smtpkit_proto::Reply<'_>) -> String {
    truncate(reply.lines().collect::<Vec<_>>().join(" "))
}

/// At most [`MAX_TEXT`] octets, printable ASCII only (reply texts must be).
fn truncate(text: String) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    out.truncate(MAX_TEXT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtpkit_proto::Reply;

    fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Reply<'static> {
        let r = Reply::new(ReplyCode::new(code).unwrap(), text.to_owned()).unwrap();
        match enhanced {
            Some((c, s, d)) => r.with_enhanced(EnhancedCode::new(c, s, d).unwrap()),
            None => r,
        }
    }

    fn delivery(results: Vec<Result<Reply<'static>, Error>>) -> Result<Delivery, Error> {
        Ok(Delivery {
            recipients: results,
        })
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("u{i}@example.test")).collect()
    }

    #[test]
    fn one_recipient_gets_its_own_reply() {
        let ok = delivery(vec![Ok(reply(250, Some((2, 0, 0)), "<u0> Saved"))]);
        let (code, enhanced, text) = reply_to_data(&addrs(1), &ok);
        assert_eq!((code.get(), enhanced.to_string()), (250, "2.0.0".into()));
        assert_eq!(text, "<u0> Saved");
        let refused = delivery(vec![Err(Error::Rejected(reply(
            552,
            Some((5, 2, 2)),
            "Quota exceeded",
        )))]);
        let (code, enhanced, text) = reply_to_data(&addrs(1), &refused);
        assert_eq!((code.get(), enhanced.to_string()), (552, "5.2.2".into()));
        assert_eq!(text, "Quota exceeded");
        // A 421 from the LMTP server must not close the client's session.
        let closing = delivery(vec![Err(Error::Rejected(reply(421, None, "bye")))]);
        let (code, enhanced, _) = reply_to_data(&addrs(1), &closing);
        assert_eq!((code.get(), enhanced.to_string()), (451, "4.3.0".into()));
    }

    #[test]
    fn unreachable_or_temporary_is_451_never_250() {
        let down = Err(Error::io(io::ErrorKind::ConnectionRefused.into()));
        let (code, _, text) = reply_to_data(&addrs(2), &down);
        assert_eq!(code.get(), 451);
        assert!(text.starts_with("Local delivery failed"), "{text}");
        let (code, _, _) = reply_to_data(&addrs(1), &Err(Error::Timeout));
        assert_eq!(code.get(), 451);
        let mixed = delivery(vec![
            Ok(reply(250, None, "ok")),
            Err(Error::Rejected(reply(452, Some((4, 2, 2)), "Mailbox full"))),
            Err(Error::Rejected(reply(550, Some((5, 1, 1)), "No such user"))),
        ]);
        let (code, enhanced, text) = reply_to_data(&addrs(3), &mixed);
        assert_eq!((code.get(), enhanced.to_string()), (451, "4.2.2".into()));
        assert!(
            text.contains("<u1@example.test> (452 4.2.2 Mailbox full)"),
            "{text}"
        );
        assert!(text.ends_with("delivered to the other 1"), "{text}");
    }

    #[test]
    fn permanent_failures_are_named_with_the_first_code() {
        let mixed = delivery(vec![
            Err(Error::Rejected(reply(550, Some((5, 1, 1)), "No such user"))),
            Ok(reply(250, None, "ok")),
        ]);
        let (code, enhanced, text) = reply_to_data(&addrs(2), &mixed);
        assert_eq!((code.get(), enhanced.to_string()), (550, "5.1.1".into()));
        assert_eq!(
            text,
            "Not delivered to <u0@example.test> (550 5.1.1 No such user); delivered to the other 1"
        );
        let all = delivery(vec![Ok(reply(250, None, "a")), Ok(reply(250, None, "b"))]);
        let (code, _, text) = reply_to_data(&addrs(2), &all);
        assert_eq!(
            (code.get(), text.as_str()),
            (250, "Ok: delivered to 2 recipients")
        );
        // However many recipients fail, the text stays one reply line.
        let many = delivery(
            (0..40)
                .map(|_| Err(Error::Rejected(reply(550, None, "No such user here"))))
                .collect(),
        );
        let (code, _, text) = reply_to_data(&addrs(40), &many);
        assert_eq!(code.get(), 550);
        assert!(text.len() <= MAX_TEXT);
    }

    #[test]
    fn config_names_the_server_and_refuses_bad_addresses() {
        use crate::config::{Config, LoadError};
        let config = |lmtp: &str, sink: bool| {
            Config::from_str(&format!(
                "hostname = \"mx.test\"\n[storage]\nsink = {sink}\nlmtp = \"{lmtp}\"\n"
            ))
        };
        let ok = config("unix:/run/dovecot/lmtp", false).unwrap();
        let lmtp = Lmtp::from_config(&ok).unwrap().unwrap();
        assert_eq!(lmtp.address().to_string(), "unix:/run/dovecot/lmtp");
        for (text, sink, problem) in [
            (
                "localhost:24",
                false,
                "storage.lmtp: `localhost:24` is neither",
            ),
            (
                "127.0.0.1:24",
                true,
                "storage.lmtp and storage.sink exclude each other",
            ),
        ] {
            match config(text, sink) {
                Err(LoadError::Invalid(problems)) => {
                    assert!(problems.iter().any(|p| p.contains(problem)), "{problems:?}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn mailbox_paths_decode_to_addresses() {
        for (domain, local, address) in [
            ("Example.Test", "Bob", "bob@example.test"),
            ("example.test", "a/b%c", "a/b%c@example.test"),
            ("example.test", ".hidden", ".hidden@example.test"),
            ("example.test", "", "@example.test"),
        ] {
            let path = MailboxPath::new(domain, local).unwrap();
            assert_eq!(mailbox_address(&path), address);
        }
    }

    #[test]
    fn spooled_content_keeps_its_order_with_results_after_the_trace() {
        let (spool, staged) = Spool::append(None, b"TRACEbody1".to_vec(), 5).unwrap();
        assert!(staged.is_empty());
        let (spool, _) = Spool::append(Some(spool), b"body2".to_vec(), 5).unwrap();
        let mut m = spool.into_message(b"RESULTS", b"tail".to_vec()).unwrap();
        let mut middle = Vec::new();
        io::Read::read_to_end(m.spool.as_mut().unwrap(), &mut middle).unwrap();
        assert_eq!(m.head, b"TRACERESULTS");
        assert_eq!(middle, b"body1body2");
        assert_eq!(m.tail, b"tail");
        let m = in_memory(b"TRACEbody".to_vec(), 5, b"R");
        assert_eq!(
            (m.head.as_slice(), m.tail.as_slice()),
            (&b"TRACER"[..], &b"body"[..])
        );
        assert_eq!(m.size(), 10);
    }
}
