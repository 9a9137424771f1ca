//! [`Event`]: what [`Server::handle_input`](super::Server::handle_input) reports, and
//! [`Progress`]: how much input it used.

use crate::address::{ForwardPath, ReversePath};
use crate::command::HelloVerb;
use crate::error::Refusal;
use crate::extension::Parameters;
use crate::reply::ReplyCode;
use crate::secret::Secret;

/// The result of one [`Server::handle_input`](super::Server::handle_input) call.
///
/// Handle `event` (it borrows the input), then drop `consumed` bytes from the front of the
/// input buffer.
#[must_use = "drop `consumed` bytes from the input and handle the event"]
#[derive(Debug)]
pub struct Progress<'i> {
    /// Input bytes used, to be discarded once the event is handled.
    pub consumed: usize,
    /// What happened; `None` means: answer the pending decision, flush output, or read more.
    pub event: Option<Event<'i>>,
}

/// Something the client did.
///
/// Variants marked **decision** leave the session waiting: the application MUST call
/// [`Server::accept`](super::Server::accept) or [`Server::reply`](super::Server::reply)
/// before `handle_input` makes further progress. The others are reports: the core has already
/// answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'i> {
    /// A new connection. **Decision**: accept sends the 220 greeting; reply 554 refuses service
    /// (only QUIT is then served, RFC 5321 3.1); 421 closes.
    Connect,
    /// EHLO, HELO or LHLO. **Decision**: accept sends the capability list (EHLO/LHLO) or 250.
    /// Any transaction in progress is gone (RFC 5321 4.1.4).
    Hello {
        /// Which greeting.
        verb: HelloVerb,
        /// The name the client gave.
        domain: &'i str,
    },
    /// AUTH (RFC 4954). **Decision**: 334 with a challenge asks for a response line, 235
    /// authenticates, 535 (or other 4xx/5xx) fails. The core has checked the mechanism is offered.
    Auth {
        /// The mechanism, as sent (compare case-insensitively).
        mechanism: &'i str,
        /// The base64 initial response; `=` means empty.
        initial_response: Option<Secret<&'i str>>,
    },
    /// A response line to a 334 challenge, base64. **Decision**, as for `Auth`.
    /// A `*` response is handled by the core (501, RFC 4954 4) and never reported.
    AuthResponse(Secret<&'i str>),
    /// MAIL FROM. **Decision**: accept starts a transaction (250 2.1.0).
    MailFrom {
        /// The sender.
        reverse_path: ReversePath<'i>,
        /// Checked parameters (SIZE, BODY, SMTPUTF8, ...).
        params: Parameters<'i>,
    },
    /// RCPT TO. **Decision**: accept adds the recipient (250 2.1.5).
    RcptTo {
        /// The recipient.
        forward_path: ForwardPath<'i>,
        /// Checked parameters (NOTIFY, ORCPT, ...).
        params: Parameters<'i>,
    },
    /// DATA with at least one accepted recipient. **Decision**: accept sends 354 and the
    /// content follows as `DataChunk`s.
    DataStart,
    /// Un-stuffed message content, a slice of the input (DATA) or a BDAT chunk's bytes.
    ///
    /// Content is handed out as it arrives, so a message refused later (`MessageRejected`)
    /// may have produced some chunks first; how many depends on how the input was split.
    DataChunk(&'i [u8]),
    /// The end of DATA content. **Decision**: accept sends 250 (LMTP: one reply per accepted
    /// recipient, each `reply`/`accept` call answering the next one). Only a reply after the
    /// message is safely stored may be positive.
    DataEnd,
    /// BDAT (RFC 3030). **Decision**: accept reads the chunk (reported as `DataChunk`s) and
    /// then reports `BdatEnd`; a refusal is sent at once and the chunk is skipped.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// A BDAT chunk has been read. **Decision**: for `last`, as `DataEnd`; otherwise accept
    /// sends `250 2.0.0 <n> octets received`.
    BdatEnd {
        /// Whether this was the last chunk.
        last: bool,
    },
    /// STARTTLS. **Decision**: accept sends 220 and the session waits for
    /// [`Server::handle_tls_established`](super::Server::handle_tls_established); 454 refuses.
    StartTls,
    /// XCLIENT from a trusted front end, its attributes checked. **Decision**, answered as
    /// [`Event::Connect`] is: the session has started over (no greeting, no AUTH unless LOGIN
    /// was given, as Postfix), and accept sends a new `220` greeting for the new client.
    Xclient(crate::command::front_end::Attributes<'i>),
    /// XFORWARD from a trusted front end, its attributes checked and answered `250`: they
    /// describe the original client of the next transaction. No decision.
    Xforward(crate::command::front_end::Attributes<'i>),
    /// VRFY. **Decision**: accept sends 252 (RFC 5321 3.5.3).
    Vrfy(&'i str),
    /// EXPN. **Decision**: accept sends 502 (mailing lists are not expanded by default).
    Expn(&'i str),
    /// RSET: 250 was sent; `TransactionEnded` follows.
    Rset,
    /// The mail transaction is over, for whatever reason: its message was answered, or it was
    /// dropped (RSET, a new EHLO, a refused BDAT chunk, a message the core refused). Reported
    /// once per transaction that MAIL opened, and after every RSET (which clears the
    /// transaction state even when none was open), before any further input is consumed.
    TransactionEnded {
        /// Content had been handed out and the application did not answer the end of the
        /// message: drop what was received.
        aborted: bool,
    },
    /// NOOP: 250 was sent.
    Noop,
    /// HELP: 214 was sent.
    Help,
    /// QUIT: 221 was sent and the session is closing.
    Quit,
    /// The core refused a command on its own and sent `code`.
    Rejected {
        /// The reply code sent.
        code: ReplyCode,
        /// Why.
        reason: Refusal,
    },
    /// The core refused a message after reading it to its end (size or bare line endings)
    /// and sent `code`. Drop whatever content was received.
    MessageRejected {
        /// The reply code sent.
        code: ReplyCode,
        /// Why.
        reason: Refusal,
    },
}
