//! [`Event`]: what [`Client::handle_input`](super::Client::handle_input) reports, and
//! [`Progress`]: how much input it used.

use crate::reply::{Reply, ReplyParseError};

/// The result of one [`Client::handle_input`](super::Client::handle_input) call.
///
/// Handle `event` (it borrows the input), then drop `consumed` bytes from the front of the
/// input buffer.
#[must_use = "drop `consumed` bytes from the input and handle the event"]
#[derive(Debug)]
pub struct Progress<'i> {
    /// Input bytes used, to be discarded once the event is handled.
    pub consumed: usize,
    /// What happened; `None` means: flush output, or read more.
    pub event: Option<Event<'i>>,
}

/// Something the server said, or a step the session reached.
///
/// Events carry the server's [`Reply`] where there is one. A reply of 421 to anything
/// (RFC 5321 3.8) is reported in its usual event, after which the session is closed with
/// [`CloseReason::Shutdown`](crate::CloseReason::Shutdown). Recipients and messages that
/// have no result when the session closes never reached the server's decision: treat them as
/// a temporary failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'i> {
    /// The server's greeting. On 220 the client has sent EHLO (LHLO for LMTP); on anything
    /// else it has sent QUIT (RFC 5321 3.1).
    Greeting(Reply<'i>),
    /// EHLO, HELO or LHLO was accepted: [`Client::capabilities`](super::Client::capabilities)
    /// holds what was offered, and commands may be given
    /// ([`Client::is_ready`](super::Client::is_ready)). Reported again after STARTTLS.
    Ready,
    /// The greeting command was refused (both EHLO and HELO, or LHLO); the client has sent QUIT.
    HelloRefused(Reply<'i>),
    /// The reply to STARTTLS. On 220, flush the output, run the TLS handshake and report it
    /// with [`Client::handle_tls_established`](super::Client::handle_tls_established);
    /// otherwise the session goes on in plaintext.
    StartTlsResult(Reply<'i>),
    /// The final reply to AUTH: 235 succeeded, anything else failed.
    AuthResult(Reply<'i>),
    /// The reply to MAIL FROM.
    SenderResult(Reply<'i>),
    /// The reply to the RCPT TO of `recipients[index]`.
    RecipientResult {
        /// Index into the envelope's recipients.
        index: usize,
        /// The server's reply; positive means accepted for this transaction.
        reply: Reply<'i>,
    },
    /// The server takes content: stream it with
    /// [`Client::send_data`](super::Client::send_data) and end it with
    /// [`Client::finish_data`](super::Client::finish_data). After 354 for DATA; for BDAT,
    /// once every recipient is answered and at least one accepted.
    ReadyForData,
    /// The reply to the end of the content: for SMTP one for the message (`recipient` is
    /// `None`), for LMTP one per accepted recipient in RCPT order (RFC 2033 4.2). A failed
    /// BDAT chunk is reported here too, once, with `recipient: None`. Only a positive reply
    /// means the server took responsibility for the message.
    MessageResult {
        /// For LMTP, the index of the recipient this reply is about.
        recipient: Option<usize>,
        /// The server's reply.
        reply: Reply<'i>,
    },
    /// The transaction ended before any content was sent: MAIL was refused, no recipient was
    /// accepted, or DATA was refused (`reply` then holds that refusal). The client resets the
    /// transaction on its own; recipients without a result share this outcome.
    MessageAborted {
        /// The reply to DATA, when that is what ended the transaction.
        reply: Option<Reply<'i>>,
    },
    /// The reply to NOOP.
    NoopResult(Reply<'i>),
    /// A reply to nothing the client sent. 421 means the server is going away; anything else
    /// means client and server disagree. Either way the client has closed.
    Unsolicited(Reply<'i>),
    /// The server's bytes are not a valid reply; the client has closed
    /// ([`CloseReason::BadReply`](crate::CloseReason::BadReply)).
    Malformed(ReplyParseError),
}
