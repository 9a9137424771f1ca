//! Commands: [`Command`] with one parser per RFC 5321 rule ([`Command::parse`]) and an encoder
//! ([`Command::encode`]) for the client side.
//!
//! The parser runs on one line that [`crate::line`] framed first, CRLF stripped, so it never
//! sees a partial command and never re-scans a growing buffer.
//!
//! ```
//! use smtpkit_proto::{Command, address::ReversePath};
//! let cmd = Command::parse(b"MAIL FROM:<> BODY=8BITMIME").unwrap();
//! assert!(matches!(cmd, Command::Mail { reverse_path: ReversePath::Null, .. }));
//! let mut out = Vec::new();
//! cmd.encode(&mut out);
//! assert_eq!(out, b"MAIL FROM:<> BODY=8BITMIME\r\n");
//! ```

mod encode;
mod fast_path;
pub mod front_end;
mod parse;

use crate::address::{ForwardPath, ReversePath};
use crate::extension::Parameters;

/// The three greetings: EHLO (RFC 5321), HELO (RFC 821) and LHLO (LMTP, RFC 2033).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelloVerb {
    /// `EHLO`: extended SMTP.
    Ehlo,
    /// `HELO`: plain SMTP, no extensions.
    Helo,
    /// `LHLO`: LMTP.
    Lhlo,
}

impl HelloVerb {
    /// The verb as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ehlo => "EHLO",
            Self::Helo => "HELO",
            Self::Lhlo => "LHLO",
        }
    }
}

/// A command line, parsed. Borrows the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `EHLO`, `HELO` or `LHLO` with the client's name for itself.
    ///
    /// The name is one word of visible characters. RFC 5321 wants a domain or address literal,
    /// but real clients send things like `WIN_PC`; 4.1.4 forbids refusing mail over a bad name,
    /// so it is kept as sent. `Domain::parse` tells whether it is a proper domain.
    Hello {
        /// Which greeting.
        verb: HelloVerb,
        /// The client's name for itself.
        domain: &'a str,
    },
    /// `MAIL FROM:<reverse-path> [params]`
    Mail {
        /// The sender.
        reverse_path: ReversePath<'a>,
        /// ESMTP parameters.
        params: Parameters<'a>,
    },
    /// `RCPT TO:<forward-path> [params]`
    Rcpt {
        /// The recipient.
        forward_path: ForwardPath<'a>,
        /// ESMTP parameters.
        params: Parameters<'a>,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `VRFY string`
    Vrfy(&'a str),
    /// `EXPN string`
    Expn(&'a str),
    /// `HELP [string]`
    Help(Option<&'a str>),
    /// `NOOP [string]`
    Noop(Option<&'a str>),
    /// `QUIT`
    Quit,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `XCLIENT attribute=value...` (Postfix): a trusted front end names the real client.
    /// The text is checked by the server, which first checks that the client may send it
    /// (see [`front_end::Attributes`]).
    Xclient(&'a str),
    /// `XFORWARD attribute=value...` (Postfix): facts about the original client of the next
    /// transaction, from a trusted front end.
    Xforward(&'a str),
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, as sent.
        mechanism: &'a str,
        /// Base64 initial response; `=` stands for an empty one.
        initial_response: Option<&'a str>,
    },
}

impl Command<'_> {
    /// The command's verb, upper case.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Hello { verb, .. } => verb.as_str(),
            Self::Mail { .. } => "MAIL",
            Self::Rcpt { .. } => "RCPT",
            Self::Data => "DATA",
            Self::Bdat { .. } => "BDAT",
            Self::Rset => "RSET",
            Self::Vrfy(_) => "VRFY",
            Self::Expn(_) => "EXPN",
            Self::Help(_) => "HELP",
            Self::Noop(_) => "NOOP",
            Self::Quit => "QUIT",
            Self::StartTls => "STARTTLS",
            Self::Auth { .. } => "AUTH",
            Self::Xclient(_) => "XCLIENT",
            Self::Xforward(_) => "XFORWARD",
        }
    }
}
