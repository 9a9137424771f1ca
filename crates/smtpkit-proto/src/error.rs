//! Errors: what the peer got wrong ([`ParseError`], [`Refusal`]), what the caller got wrong
//! ([`UsageError`]), and why a session ended ([`CloseReason`]).

use core::fmt;

use crate::reply::{EnhancedCode, ReplyCode};

/// The peer sent bytes that do not form a valid command or argument.
///
/// Never fatal: the core answers with [`ParseError::reply_hint`] and reads the next command.
/// The `&'static str` carried by [`ParseError::Syntax`] is diagnostic detail; do not branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The verb is not an SMTP command this crate knows.
    UnknownCommand,
    /// The verb is known but its arguments do not follow the grammar.
    Syntax(&'static str),
    /// A known ESMTP parameter has a value outside its grammar (`SIZE=abc`).
    InvalidParameter(&'static str),
    /// The command line is longer than the configured limit (RFC 5321 4.5.3.1.4).
    LineTooLong,
    /// The command line ends in a bare LF and the bare line ending policy is `Reject`.
    BareLineEnding,
}

impl ParseError {
    /// The reply code and enhanced status code the core sends for this error.
    pub fn reply_hint(&self) -> (ReplyCode, EnhancedCode) {
        match self {
            Self::UnknownCommand => (ReplyCode::SYNTAX_ERROR, EnhancedCode::INVALID_COMMAND),
            Self::Syntax(_) => (ReplyCode::SYNTAX_ERROR_PARAMS, EnhancedCode::SYNTAX_ERROR),
            Self::InvalidParameter(_) => {
                (ReplyCode::SYNTAX_ERROR_PARAMS, EnhancedCode::INVALID_ARGS)
            }
            Self::LineTooLong => (ReplyCode::SYNTAX_ERROR, EnhancedCode::LINE_TOO_LONG),
            Self::BareLineEnding => (ReplyCode::SYNTAX_ERROR, EnhancedCode::SYNTAX_ERROR),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand => f.write_str("unknown command"),
            Self::Syntax(what) => write!(f, "syntax error: {what}"),
            Self::InvalidParameter(what) => write!(f, "invalid parameter: {what}"),
            Self::LineTooLong => f.write_str("command line too long"),
            Self::BareLineEnding => f.write_str("command line ends in a bare LF"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Why the core refused a command or a message on its own, before the application saw it.
///
/// Carried by [`Event::Rejected`](crate::server::Event::Rejected) and
/// [`Event::MessageRejected`](crate::server::Event::MessageRejected); the reply is already queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The command did not parse.
    Parse(ParseError),
    /// The command is valid but not in this state (RFC 5321 4.1.4, reply 503).
    BadSequence(&'static str),
    /// The command is recognized but not offered in this session (reply 502).
    NotImplemented,
    /// A MAIL or RCPT parameter that was not advertised or declared (RFC 5321 4.1.1.11, reply 555).
    UnsupportedParameter,
    /// More recipients than the limit (RFC 5321 4.5.3.1.8, reply 452).
    TooManyRecipients,
    /// The declared or received message size is over the limit (RFC 1870, reply 552).
    MessageTooBig,
    /// The message contains a bare CR or bare LF and the policy is `Reject` (reply 550).
    BareLineEnding,
    /// A non-ASCII address without `SMTPUTF8` (RFC 6531 3.5, reply 553).
    Utf8NotAllowed,
    /// The command needs an authenticated session (RFC 4954 6, reply 530).
    AuthRequired,
    /// The command needs TLS first (RFC 3207 4, reply 530).
    TlsRequired,
    /// The client canceled an AUTH exchange with `*` (RFC 4954 4, reply 501).
    AuthCanceled,
    /// The AUTH mechanism is not offered (RFC 4954 4, reply 504).
    UnknownMechanism,
    /// The greeting was a 554: only QUIT is served (RFC 5321 3.1).
    NoService,
    /// DATA or BDAT without any accepted recipient (RFC 5321 3.3, reply 554).
    NoValidRecipients,
    /// AUTH on an unencrypted session (RFC 4954 4, reply 538).
    EncryptionRequired,
    /// `BINARYMIME` content with DATA (RFC 3030 3, reply 503).
    BinaryWithData,
    /// XCLIENT or XFORWARD from a client that may not send it (Postfix, reply 550 5.7.0).
    FrontEndNotAllowed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse(e) => e.fmt(f),
            Self::BadSequence(what) => write!(f, "bad sequence of commands: {what}"),
            Self::NotImplemented => f.write_str("command not implemented"),
            Self::UnsupportedParameter => f.write_str("parameter not supported"),
            Self::TooManyRecipients => f.write_str("too many recipients"),
            Self::MessageTooBig => f.write_str("message too big"),
            Self::BareLineEnding => f.write_str("message contains a bare CR or LF"),
            Self::Utf8NotAllowed => f.write_str("non-ASCII address without SMTPUTF8"),
            Self::AuthRequired => f.write_str("authentication required"),
            Self::TlsRequired => f.write_str("TLS required"),
            Self::AuthCanceled => f.write_str("authentication canceled"),
            Self::UnknownMechanism => f.write_str("unknown authentication mechanism"),
            Self::NoService => f.write_str("no service"),
            Self::NoValidRecipients => f.write_str("no valid recipients"),
            Self::EncryptionRequired => f.write_str("encryption required for authentication"),
            Self::BinaryWithData => f.write_str("BINARYMIME content sent with DATA"),
            Self::FrontEndNotAllowed => f.write_str("XCLIENT/XFORWARD not authorized"),
        }
    }
}

impl std::error::Error for Refusal {}

/// The caller used the API in a way the session does not allow; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// `accept` or `reply` was called while no decision was pending.
    NothingPending,
    /// The reply code does not answer the pending decision (354 to RCPT, 250 to DATA, ...).
    UnexpectedReply {
        /// The code the caller tried to send.
        code: ReplyCode,
    },
    /// The session is closed.
    Closed,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NothingPending => f.write_str("no decision is pending"),
            Self::UnexpectedReply { code } => {
                write!(f, "reply code {code} does not answer the pending decision")
            }
            Self::Closed => f.write_str("the session is closed"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Why a session ended. Terminal: once set it never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// A deadline passed (421 4.4.2 was queued).
    Timeout,
    /// Too many errors, junk commands or AUTH failures (421 4.7.0 was queued).
    TooManyErrors,
    /// The client closed its side.
    PeerEof,
    /// The application replied 421 or the server is shutting down.
    Shutdown,
    /// The TLS handshake failed after STARTTLS.
    TlsFailed,
    /// The client broke the pipelining rules with the synchronization check on (554 5.5.0).
    PipeliningViolation,
    /// A session limit (messages or bytes per session) was reached.
    LimitReached,
    /// Client side: the server sent a malformed reply, or one to nothing the client sent.
    BadReply,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quit => "quit",
            Self::Timeout => "timeout",
            Self::TooManyErrors => "too many errors",
            Self::PeerEof => "peer closed the connection",
            Self::Shutdown => "shutdown",
            Self::TlsFailed => "tls handshake failed",
            Self::PipeliningViolation => "improper pipelining",
            Self::LimitReached => "session limit reached",
            Self::BadReply => "malformed or unexpected reply",
        })
    }
}
