//! Refusals the core makes on its own, and the error counts that end a session.

use super::Event;
use super::Server;
use crate::error::{CloseReason, ParseError, Refusal};
use crate::reply::{EnhancedCode, Reply, ReplyCode};

impl Server {
    /// Sends the core's reply for `reason` and reports it.
    pub(super) fn refuse<'i>(&mut self, reason: Refusal) -> Event<'i> {
        let event = self.refuse_uncounted(reason);
        self.count_error();
        event
    }

    /// Sends the core's reply for `reason` and reports it, without counting an error.
    pub(super) fn refuse_uncounted<'i>(&mut self, reason: Refusal) -> Event<'i> {
        let (code, enhanced, text) = refusal_reply(reason);
        self.send(code, enhanced, text);
        Event::Rejected { code, reason }
    }

    pub(super) fn reject_message<'i>(&mut self, reason: Refusal) -> Event<'i> {
        let (code, enhanced, text) = refusal_reply(reason);
        let replies = self.end_replies(&self.txn.unwrap_or_default());
        for _ in 0..replies {
            self.send(code, enhanced, text);
        }
        self.drop_transaction();
        self.maybe_drain();
        Event::MessageRejected { code, reason }
    }

    pub(super) fn count_error(&mut self) {
        self.count.errors += 1;
        if self.count.errors >= self.config.options.limits.errors {
            self.too_many_errors();
        }
    }

    pub(super) fn junk<'i>(&mut self, event: Event<'i>) -> Event<'i> {
        self.count.junk += 1;
        if self.count.junk > self.config.options.limits.junk_commands {
            self.too_many_errors();
        }
        event
    }

    pub(super) fn too_many_errors(&mut self) {
        if self.closed.is_none() {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Too many errors, closing connection",
            );
            self.close(CloseReason::TooManyErrors);
        }
    }

    pub(super) fn pipelining_violation(&mut self) {
        self.send(
            ReplyCode::TRANSACTION_FAILED,
            EnhancedCode::PROTOCOL_ERROR,
            "Improper use of SMTP command pipelining",
        );
        self.close(CloseReason::PipeliningViolation);
    }
}

impl Refusal {
    /// The reply the core sends for this refusal, for an application layer that must refuse
    /// the same way (an offered AUTH mechanism it cannot run, say).
    pub fn reply(self) -> Reply<'static> {
        let (code, enhanced, text) = refusal_reply(self);
        Reply::from_static(code, enhanced, text)
    }
}

/// The reply the core sends for each refusal.
fn refusal_reply(reason: Refusal) -> (ReplyCode, EnhancedCode, &'static str) {
    use Refusal as R;
    match reason {
        R::Parse(e) => {
            let (code, enhanced) = e.reply_hint();
            let text = match e {
                ParseError::UnknownCommand => "Command unrecognized",
                ParseError::Syntax(what) | ParseError::InvalidParameter(what) => what,
                ParseError::LineTooLong => "Line too long",
                ParseError::BareLineEnding => "Bare LF in command line",
            };
            (code, enhanced, text)
        }
        R::BadSequence(what) => (ReplyCode::BAD_SEQUENCE, EnhancedCode::INVALID_COMMAND, what),
        R::NotImplemented => (
            ReplyCode::NOT_IMPLEMENTED,
            EnhancedCode::INVALID_COMMAND,
            "Command not implemented",
        ),
        R::UnsupportedParameter => (
            ReplyCode::PARAM_UNRECOGNIZED,
            EnhancedCode::INVALID_ARGS,
            "Parameter not supported",
        ),
        R::TooManyRecipients => (
            ReplyCode::INSUFFICIENT_STORAGE,
            EnhancedCode::TOO_MANY_RECIPIENTS,
            "Too many recipients",
        ),
        R::MessageTooBig => (
            ReplyCode::EXCEEDED_STORAGE,
            EnhancedCode::MESSAGE_TOO_BIG,
            "Message size exceeds fixed maximum message size",
        ),
        R::BareLineEnding => (
            ReplyCode::MAILBOX_UNAVAILABLE,
            EnhancedCode::MEDIA_ERROR,
            "Message contains bare CR or LF",
        ),
        R::Utf8NotAllowed => (
            ReplyCode::MAILBOX_NAME_INVALID,
            EnhancedCode::UTF8_NOT_PERMITTED,
            "Non-ASCII address needs SMTPUTF8",
        ),
        R::AuthRequired => (
            ReplyCode::AUTH_REQUIRED,
            EnhancedCode::SECURITY_PERMANENT,
            "Authentication required",
        ),
        R::TlsRequired => (
            ReplyCode::AUTH_REQUIRED,
            EnhancedCode::SECURITY_PERMANENT,
            "Must issue a STARTTLS command first",
        ),
        R::EncryptionRequired => (
            ReplyCode::ENCRYPTION_REQUIRED,
            EnhancedCode::ENCRYPTION_REQUIRED,
            "Encryption required for requested authentication mechanism",
        ),
        R::AuthCanceled => (
            ReplyCode::SYNTAX_ERROR_PARAMS,
            EnhancedCode::PERMANENT,
            "Authentication canceled",
        ),
        R::UnknownMechanism => (
            ReplyCode::PARAM_NOT_IMPLEMENTED,
            EnhancedCode::INVALID_ARGS,
            "Unrecognized authentication type",
        ),
        R::NoService => (
            ReplyCode::BAD_SEQUENCE,
            EnhancedCode::INVALID_COMMAND,
            "No service here, send QUIT",
        ),
        R::NoValidRecipients => (
            ReplyCode::TRANSACTION_FAILED,
            EnhancedCode::INVALID_COMMAND,
            "No valid recipients",
        ),
        R::BinaryWithData => (
            ReplyCode::BAD_SEQUENCE,
            EnhancedCode::INVALID_COMMAND,
            "BINARYMIME requires BDAT",
        ),
        R::FrontEndNotAllowed => (
            ReplyCode::MAILBOX_UNAVAILABLE,
            EnhancedCode::SECURITY_PERMANENT,
            "Insufficient authorization",
        ),
    }
}
