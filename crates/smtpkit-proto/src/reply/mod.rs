//! Replies: [`ReplyCode`], RFC 3463 [`EnhancedCode`], and [`Reply`], single or multi-line.
//!
//! ```
//! use smtpkit_proto::{EnhancedCode, Reply, ReplyCode};
//!
//! let reply = Reply::new(ReplyCode::new(550).unwrap(), "No such user here")
//!     .unwrap()
//!     .with_enhanced(EnhancedCode::new(5, 1, 1).unwrap());
//! let mut out = Vec::new();
//! reply.encode(true, &mut out);
//! assert_eq!(out, b"550 5.1.1 No such user here\r\n");
//! ```

pub(crate) mod encode;
mod parse;

use core::fmt;
use std::borrow::Cow;

pub use parse::ReplyParseError;

/// Longest reply line, CRLF included (RFC 5321 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// A three-digit reply code (RFC 5321 4.2): first digit 2 to 5, second 0 to 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// 211-style system status replies start with 2; this is the common positive completion.
    pub const OK: Self = Self(250);
    /// Service ready (greeting, STARTTLS go-ahead).
    pub const READY: Self = Self(220);
    /// Closing the transmission channel.
    pub const CLOSING: Self = Self(221);
    /// Help message.
    pub const HELP: Self = Self(214);
    /// Authentication succeeded (RFC 4954).
    pub const AUTH_OK: Self = Self(235);
    /// Cannot VRFY, but will accept (RFC 5321 3.5.3).
    pub const CANNOT_VERIFY: Self = Self(252);
    /// AUTH continuation (RFC 4954).
    pub const AUTH_CONTINUE: Self = Self(334);
    /// Start mail input.
    pub const START_DATA: Self = Self(354);
    /// Service not available, closing the channel.
    pub const UNAVAILABLE: Self = Self(421);
    /// Local error in processing.
    pub const LOCAL_ERROR: Self = Self(451);
    /// Insufficient system storage / too many recipients.
    pub const INSUFFICIENT_STORAGE: Self = Self(452);
    /// TLS not available (RFC 3207).
    pub const TLS_UNAVAILABLE: Self = Self(454);
    /// Syntax error, command unrecognized (also: line too long).
    pub const SYNTAX_ERROR: Self = Self(500);
    /// Syntax error in parameters or arguments.
    pub const SYNTAX_ERROR_PARAMS: Self = Self(501);
    /// Command not implemented.
    pub const NOT_IMPLEMENTED: Self = Self(502);
    /// Bad sequence of commands.
    pub const BAD_SEQUENCE: Self = Self(503);
    /// Command parameter not implemented.
    pub const PARAM_NOT_IMPLEMENTED: Self = Self(504);
    /// Authentication required (RFC 4954).
    pub const AUTH_REQUIRED: Self = Self(530);
    /// Authentication credentials invalid (RFC 4954).
    pub const AUTH_FAILED: Self = Self(535);
    /// Encryption required for the mechanism (RFC 4954).
    pub const ENCRYPTION_REQUIRED: Self = Self(538);
    /// Mailbox unavailable / policy refusal.
    pub const MAILBOX_UNAVAILABLE: Self = Self(550);
    /// Exceeded storage allocation.
    pub const EXCEEDED_STORAGE: Self = Self(552);
    /// Mailbox name not allowed.
    pub const MAILBOX_NAME_INVALID: Self = Self(553);
    /// Transaction failed / no service.
    pub const TRANSACTION_FAILED: Self = Self(554);
    /// MAIL/RCPT parameters not recognized or not implemented.
    pub const PARAM_UNRECOGNIZED: Self = Self(555);

    /// A reply code, if `code` has the RFC 5321 4.2 shape (2xx to 5xx, second digit 0 to 5).
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 200 && code < 600 && (code / 10) % 10 <= 5 {
            Some(Self(code))
        } else {
            None
        }
    }

    /// The numeric code.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The first digit: 2 positive completion, 3 intermediate, 4 transient, 5 permanent.
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    /// 2xx.
    pub const fn is_positive(self) -> bool {
        self.class() == 2
    }

    /// 4xx or 5xx.
    pub const fn is_negative(self) -> bool {
        self.class() >= 4
    }

    pub(crate) fn digits(self) -> [u8; 3] {
        [
            b'0' + (self.0 / 100) as u8,
            b'0' + (self.0 / 10 % 10) as u8,
            b'0' + (self.0 % 10) as u8,
        ]
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedCode {
    /// 2.0.0 Other or undefined status (success).
    pub const OK: Self = Self::of(2, 0, 0);
    /// 2.1.0 Other address status (sender accepted).
    pub const SENDER_OK: Self = Self::of(2, 1, 0);
    /// 2.1.5 Destination address valid.
    pub const RECIPIENT_OK: Self = Self::of(2, 1, 5);
    /// 2.5.0 Other or undefined protocol status.
    pub const PROTOCOL_OK: Self = Self::of(2, 5, 0);
    /// 2.7.0 Other or undefined security status (AUTH succeeded).
    pub const SECURITY_OK: Self = Self::of(2, 7, 0);
    /// 4.3.0 Other or undefined mail system status.
    pub const SYSTEM_TRANSIENT: Self = Self::of(4, 3, 0);
    /// 4.3.2 System not accepting network messages (shutdown).
    pub const SYSTEM_SHUTDOWN: Self = Self::of(4, 3, 2);
    /// 4.4.2 Bad connection (timeout).
    pub const TIMEOUT: Self = Self::of(4, 4, 2);
    /// 4.5.3 Too many recipients.
    pub const TOO_MANY_RECIPIENTS: Self = Self::of(4, 5, 3);
    /// 4.7.0 Other or undefined security status (too many errors, limits).
    pub const SECURITY_TRANSIENT: Self = Self::of(4, 7, 0);
    /// 5.0.0 Other undefined status.
    pub const PERMANENT: Self = Self::of(5, 0, 0);
    /// 5.1.1 Bad destination mailbox address.
    pub const MAILBOX_UNKNOWN: Self = Self::of(5, 1, 1);
    /// 5.3.4 Message too big for system.
    pub const MESSAGE_TOO_BIG: Self = Self::of(5, 3, 4);
    /// 5.5.0 Other or undefined protocol status.
    pub const PROTOCOL_ERROR: Self = Self::of(5, 5, 0);
    /// 5.5.1 Invalid command.
    pub const INVALID_COMMAND: Self = Self::of(5, 5, 1);
    /// 5.5.2 Syntax error.
    pub const SYNTAX_ERROR: Self = Self::of(5, 5, 2);
    /// 5.5.4 Invalid command arguments.
    pub const INVALID_ARGS: Self = Self::of(5, 5, 4);
    /// 5.5.6 Authentication exchange line is too long / line too long (RFC 4954, RFC 3463).
    pub const LINE_TOO_LONG: Self = Self::of(5, 5, 6);
    /// 5.6.0 Other or undefined media error (bare CR/LF).
    pub const MEDIA_ERROR: Self = Self::of(5, 6, 0);
    /// 5.6.7 Non-ASCII addresses not permitted (RFC 6531).
    pub const UTF8_NOT_PERMITTED: Self = Self::of(5, 6, 7);
    /// 5.7.0 Other or undefined security status.
    pub const SECURITY_PERMANENT: Self = Self::of(5, 7, 0);
    /// 5.7.1 Delivery not authorized (relaying denied).
    pub const NOT_AUTHORIZED: Self = Self::of(5, 7, 1);
    /// 5.7.8 Authentication credentials invalid (RFC 4954).
    pub const AUTH_FAILED: Self = Self::of(5, 7, 8);
    /// 5.7.11 Encryption required for requested authentication mechanism (RFC 4954).
    pub const ENCRYPTION_REQUIRED: Self = Self::of(5, 7, 11);

    const fn of(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// An enhanced code, if `class` is 2, 4 or 5 and subject and detail are 0 to 999 (RFC 3463 2).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        if (class == 2 || class == 4 || class == 5) && subject <= 999 && detail <= 999 {
            Some(Self::of(class, subject, detail))
        } else {
            None
        }
    }

    /// The class digit: 2, 4 or 5.
    pub const fn class(self) -> u8 {
        self.class
    }

    /// The subject number.
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// The detail number.
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// `x.0.0` for a reply code's class, used when a reply carries no enhanced code of its own.
    pub(crate) const fn default_for(code: ReplyCode) -> Option<Self> {
        match code.class() {
            2 => Some(Self::of(2, 0, 0)),
            4 => Some(Self::of(4, 0, 0)),
            5 => Some(Self::of(5, 0, 0)),
            _ => None,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply: a code, an optional enhanced code, and text (lines separated by `\n`).
///
/// Build one with [`Reply::new`], which checks that every line is printable and fits in
/// 512 octets once encoded, so an invalid reply can't reach the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    text: Cow<'a, str>,
}

/// Why [`Reply::new`] refused its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyTextError {
    /// The text contains a control character other than `\n` and tab.
    ControlCharacter,
    /// A line would be longer than 512 octets once encoded.
    LineTooLong,
    /// The enhanced code's class does not match the reply code's first digit.
    ClassMismatch,
}

impl fmt::Display for ReplyTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ControlCharacter => "reply text contains a control character",
            Self::LineTooLong => "reply line longer than 512 octets",
            Self::ClassMismatch => "enhanced code class does not match the reply code",
        })
    }
}

impl std::error::Error for ReplyTextError {}

/// Octets a line needs besides its text: `ddd-x.yyy.zzz ` plus CRLF.
const LINE_OVERHEAD: usize = 4 + 12 + 2;

impl<'a> Reply<'a> {
    /// A reply with `text`; `\n` separates the lines of a multi-line reply.
    ///
    /// Text is RFC 5321 `textstring` (tab and printable ASCII) plus UTF-8, which RFC 6531
    /// sessions may carry. Each line must fit in 512 octets with the code and enhanced code.
    pub fn new(code: ReplyCode, text: impl Into<Cow<'a, str>>) -> Result<Self, ReplyTextError> {
        Self::with_line_limit(code, text.into(), MAX_REPLY_LINE - LINE_OVERHEAD)
    }

    /// A reply from the crate's own constant parts, whose text is known to follow the rules
    /// [`Reply::new`] checks.
    pub(crate) const fn from_static(
        code: ReplyCode,
        enhanced: EnhancedCode,
        text: &'static str,
    ) -> Reply<'static> {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    /// Checks `text` line by line against `max_text` octets and for control characters.
    /// [`Reply::parse`] allows what the wire line really had room for.
    pub(crate) fn with_line_limit(
        code: ReplyCode,
        text: Cow<'a, str>,
        max_text: usize,
    ) -> Result<Self, ReplyTextError> {
        for line in text.split('\n') {
            if line.len() > max_text {
                return Err(ReplyTextError::LineTooLong);
            }
            if line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(ReplyTextError::ControlCharacter);
            }
        }
        Ok(Self {
            code,
            enhanced: None,
            text,
        })
    }

    /// Sets the enhanced status code. Its class must equal the reply code's first digit;
    /// a mismatched code is dropped, and [`Reply::try_with_enhanced`] reports it instead.
    #[must_use]
    pub fn with_enhanced(self, enhanced: EnhancedCode) -> Self {
        self.try_with_enhanced(enhanced)
            .unwrap_or_else(|(reply, _)| reply)
    }

    /// Sets the enhanced status code, or gives the reply back if the classes differ.
    pub fn try_with_enhanced(
        mut self,
        enhanced: EnhancedCode,
    ) -> Result<Self, (Self, ReplyTextError)> {
        if enhanced.class() != self.code.class() {
            return Err((self, ReplyTextError::ClassMismatch));
        }
        self.enhanced = Some(enhanced);
        Ok(self)
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code, if any.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text, lines separated by `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The lines of the text.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }

    /// A reply that owns its text.
    pub fn into_owned(self) -> Reply<'static> {
        Reply {
            code: self.code,
            enhanced: self.enhanced,
            text: Cow::Owned(self.text.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_shape() {
        for (code, ok) in [
            (199, false),
            (200, true),
            (269, false),
            (259, true),
            (354, true),
            (599, false),
            (559, true),
            (600, false),
        ] {
            assert_eq!(ReplyCode::new(code).is_some(), ok, "{code}");
        }
    }

    #[test]
    fn text_validation() {
        let c = ReplyCode::OK;
        assert!(Reply::new(c, "fine\tand tabbed").is_ok());
        assert!(Reply::new(c, "multi\nline").is_ok());
        assert_eq!(
            Reply::new(c, "cr\rinside"),
            Err(ReplyTextError::ControlCharacter)
        );
        assert_eq!(
            Reply::new(c, "nul\0"),
            Err(ReplyTextError::ControlCharacter)
        );
        assert_eq!(
            Reply::new(c, "x".repeat(495)),
            Err(ReplyTextError::LineTooLong)
        );
        assert!(Reply::new(c, "x".repeat(494)).is_ok());
        let r = Reply::new(c, "x").unwrap();
        assert!(r.try_with_enhanced(EnhancedCode::PERMANENT).is_err());
    }
}
