//! Commands: each verb checked against the session state, then reported or refused.

use std::time::Instant;

use super::timer::Timer;
use super::{Event, Mode, Pending, Protocol, Server};
use crate::address::{ForwardPath, ReversePath};
use crate::command::front_end::{Attribute, AttributeValue, Attributes, FrontEnd};
use crate::command::{Command, HelloVerb};
use crate::data::{BareLineEnding, BdatReader};
use crate::error::{CloseReason, ParseError, Refusal};
use crate::extension::{BodyType, Parameter, Parameters};
use crate::reply::{EnhancedCode, ReplyCode};
use crate::secret::Secret;

impl Server {
    pub(super) fn dispatch<'i>(
        &mut self,
        now: Instant,
        line: &'i [u8],
        bare_lf: bool,
        more: bool,
    ) -> Event<'i> {
        if self.mode == Mode::AuthResponse {
            return self.auth_response(now, line);
        }
        if bare_lf && self.config.options.bare_line_ending == BareLineEnding::Reject {
            return self.refuse(Refusal::Parse(ParseError::BareLineEnding));
        }
        let cmd = match Command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.refuse(Refusal::Parse(e)),
        };
        if self.refused && cmd != Command::Quit {
            return self.refuse(Refusal::NoService);
        }
        // A disabled BDAT turns CHUNKING off, and `cmd_bdat` then refuses it while skipping
        // its chunk, so the chunk's bytes are never read as commands.
        if self.config.disabled(cmd.verb()) && !matches!(cmd, Command::Bdat { .. }) {
            return self.refuse(Refusal::NotImplemented);
        }
        if more && self.config.options.pipelining_sync_check && !self.may_pipeline(&cmd) {
            self.pipelining_violation();
            return Event::Rejected {
                code: ReplyCode::TRANSACTION_FAILED,
                reason: Refusal::BadSequence("improper pipelining"),
            };
        }
        if self.draining && self.txn.is_none() && cmd != Command::Quit {
            self.maybe_drain();
            return Event::Rejected {
                code: ReplyCode::UNAVAILABLE,
                reason: Refusal::NoService,
            };
        }
        match cmd {
            Command::Hello { verb, domain } => self.cmd_hello(now, verb, domain),
            Command::Mail {
                reverse_path,
                params,
            } => self.cmd_mail(now, reverse_path, params),
            Command::Rcpt {
                forward_path,
                params,
            } => self.cmd_rcpt(now, forward_path, params),
            Command::Data => self.cmd_data(now),
            Command::Bdat { size, last } => self.cmd_bdat(now, size, last),
            Command::Rset => {
                self.drop_transaction();
                // RFC 5321 4.1.1.5: RSET clears the transaction state, open or not, so the
                // application hears of it either way.
                self.ended.get_or_insert(false);
                self.send(ReplyCode::OK, EnhancedCode::OK, "OK");
                self.junk(Event::Rset)
            }
            Command::Noop(_) => {
                self.send(ReplyCode::OK, EnhancedCode::OK, "OK");
                self.junk(Event::Noop)
            }
            Command::Help(_) => {
                self.send(
                    ReplyCode::HELP,
                    EnhancedCode::OK,
                    "See https://www.rfc-editor.org/rfc/rfc5321",
                );
                self.junk(Event::Help)
            }
            Command::Vrfy(s) => {
                let event = self.junk(Event::Vrfy(s));
                if self.closed.is_none() {
                    self.set_pending(Pending::Vrfy, now);
                }
                event
            }
            Command::Expn(s) => {
                let event = self.junk(Event::Expn(s));
                if self.closed.is_none() {
                    self.set_pending(Pending::Expn, now);
                }
                event
            }
            Command::Quit => {
                self.send(ReplyCode::CLOSING, EnhancedCode::OK, "Bye");
                self.close(CloseReason::Quit);
                Event::Quit
            }
            Command::StartTls => self.cmd_starttls(now),
            Command::Xclient(text) => self.cmd_front_end(now, FrontEnd::Xclient, text),
            Command::Xforward(text) => self.cmd_front_end(now, FrontEnd::Xforward, text),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.cmd_auth(now, mechanism, initial_response),
        }
    }

    /// RFC 2920 3.1: MAIL, RCPT, RSET (and BDAT, whose chunk follows it) may be followed by
    /// more commands in the same group; others must end it. Without PIPELINING in effect,
    /// nothing may be pipelined.
    pub(super) fn may_pipeline(&self, cmd: &Command<'_>) -> bool {
        if matches!(cmd, Command::Bdat { .. } | Command::Quit) {
            return true;
        }
        let pipelining = self.hello.is_some_and(|v| v != HelloVerb::Helo)
            && self.config.options.extensions.pipelining;
        pipelining
            && matches!(
                cmd,
                Command::Mail { .. } | Command::Rcpt { .. } | Command::Rset
            )
    }

    pub(super) fn cmd_hello<'i>(
        &mut self,
        now: Instant,
        verb: HelloVerb,
        domain: &'i str,
    ) -> Event<'i> {
        let lmtp = self.config.options.protocol == Protocol::Lmtp;
        // RFC 2033 4.1: LMTP has LHLO instead of HELO and EHLO.
        if lmtp != (verb == HelloVerb::Lhlo) {
            return self.refuse(Refusal::Parse(ParseError::UnknownCommand));
        }
        self.set_pending(Pending::Hello(verb), now);
        Event::Hello { verb, domain }
    }

    pub(super) fn cmd_mail<'i>(
        &mut self,
        now: Instant,
        reverse_path: ReversePath<'i>,
        params: Parameters<'i>,
    ) -> Event<'i> {
        let o = &self.config.options;
        if self.hello.is_none() {
            return self.refuse(Refusal::BadSequence("Send EHLO first"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence("Nested MAIL command"));
        }
        if o.require_tls && !self.tls {
            return self.refuse(Refusal::TlsRequired);
        }
        if o.require_auth && !self.authenticated {
            return self.refuse(Refusal::AuthRequired);
        }
        let over_bytes = o
            .limits
            .bytes_per_session
            .is_some_and(|max| self.count.bytes >= max);
        if self.count.messages >= o.limits.messages_per_session || over_bytes {
            self.send(
                ReplyCode::UNAVAILABLE,
                EnhancedCode::SECURITY_TRANSIENT,
                "Session limit reached, closing connection",
            );
            self.close(CloseReason::LimitReached);
            return Event::Rejected {
                code: ReplyCode::UNAVAILABLE,
                reason: Refusal::BadSequence("session limit reached"),
            };
        }
        let mut body = BodyType::SevenBit;
        let mut smtputf8 = false;
        for p in params.iter() {
            let e = &o.extensions;
            let supported = match p {
                Parameter::Size(n) => {
                    if e.size && n > o.limits.message_size {
                        return self.refuse(Refusal::MessageTooBig);
                    }
                    e.size
                }
                Parameter::Body(b) => {
                    body = b;
                    match b {
                        BodyType::SevenBit => true,
                        BodyType::EightBitMime => e.eight_bit_mime,
                        BodyType::BinaryMime => e.binary_mime,
                    }
                }
                Parameter::SmtpUtf8 => {
                    smtputf8 = true;
                    e.smtputf8
                }
                Parameter::Auth(_) => self.config.auth_offered(self.tls),
                Parameter::Ret(_) | Parameter::EnvId(_) => e.dsn,
                Parameter::RequireTls => e.requiretls && self.tls,
                Parameter::Notify(_) | Parameter::Orcpt { .. } => false,
                Parameter::Unknown { keyword, .. } => o
                    .extra_mail_params
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(keyword)),
            };
            // Parameters are an EHLO feature: a HELO session has none (RFC 5321 4.1.1.11).
            if !supported || self.hello == Some(HelloVerb::Helo) {
                return self.refuse(Refusal::UnsupportedParameter);
            }
        }
        if !smtputf8 && !reverse_path.is_ascii() {
            return self.refuse(Refusal::Utf8NotAllowed);
        }
        self.set_pending(Pending::Mail { body, smtputf8 }, now);
        Event::MailFrom {
            reverse_path,
            params,
        }
    }

    pub(super) fn cmd_rcpt<'i>(
        &mut self,
        now: Instant,
        forward_path: ForwardPath<'i>,
        params: Parameters<'i>,
    ) -> Event<'i> {
        let o = &self.config.options;
        let Some(txn) = &mut self.txn else {
            return self.refuse(Refusal::BadSequence("Send MAIL first"));
        };
        if txn.accepted >= o.limits.recipients {
            txn.overshoot = txn.overshoot.saturating_add(1);
            if txn.overshoot > o.limits.recipient_overshoot {
                return self.refuse(Refusal::TooManyRecipients);
            }
            return self.refuse_uncounted(Refusal::TooManyRecipients);
        }
        let txn = *txn;
        for p in params.iter() {
            let supported = match p {
                Parameter::Notify(_) | Parameter::Orcpt { .. } => o.extensions.dsn,
                Parameter::Unknown { keyword, .. } => o
                    .extra_rcpt_params
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(keyword)),
                _ => false,
            };
            if !supported {
                return self.refuse(Refusal::UnsupportedParameter);
            }
        }
        if !txn.smtputf8 && !forward_path.is_ascii() {
            return self.refuse(Refusal::Utf8NotAllowed);
        }
        self.set_pending(Pending::Rcpt, now);
        Event::RcptTo {
            forward_path,
            params,
        }
    }

    pub(super) fn cmd_data<'i>(&mut self, now: Instant) -> Event<'i> {
        let Some(txn) = self.txn else {
            return self.refuse(Refusal::BadSequence("Send MAIL first"));
        };
        if txn.accepted == 0 {
            return self.refuse(Refusal::NoValidRecipients);
        }
        if txn.body == BodyType::BinaryMime {
            return self.refuse(Refusal::BinaryWithData);
        }
        if txn.bdat {
            return self.refuse(Refusal::BadSequence("DATA after BDAT"));
        }
        self.set_pending(Pending::Data, now);
        Event::DataStart
    }

    pub(super) fn cmd_bdat<'i>(&mut self, now: Instant, size: u64, last: bool) -> Event<'i> {
        let o = &self.config.options;
        // Whatever the answer, the chunk's bytes follow the command and are never commands.
        let refusal = if !o.extensions.chunking {
            Some(Refusal::NotImplemented)
        } else if size == 0 && !last {
            Some(Refusal::Parse(ParseError::InvalidParameter(
                "BDAT 0 needs LAST",
            )))
        } else {
            match self.txn {
                None => Some(Refusal::BadSequence("Send MAIL first")),
                Some(t) if t.accepted == 0 => Some(Refusal::NoValidRecipients),
                Some(t) if t.size.saturating_add(size) > o.limits.message_size => {
                    Some(Refusal::MessageTooBig)
                }
                Some(_) => None,
            }
        };
        self.mode = Mode::Bdat {
            reader: BdatReader::new(size),
            last,
            discard: refusal.is_some(),
        };
        if let Some(reason) = refusal {
            // RFC 3030 2: a failed chunk fails the transaction.
            self.drop_transaction();
            return self.refuse(reason);
        }
        if let Some(t) = &mut self.txn {
            t.bdat = true;
        }
        self.set_pending(Pending::Bdat { size, last }, now);
        Event::Bdat { size, last }
    }

    /// XCLIENT and XFORWARD, in Postfix's order of checks: authorization (550 5.7.0), no
    /// transaction open (503 5.5.1), the attributes (501 5.5.4).
    pub(super) fn cmd_front_end<'i>(
        &mut self,
        now: Instant,
        command: FrontEnd,
        text: &'i str,
    ) -> Event<'i> {
        let allowed = match command {
            FrontEnd::Xclient => self.front_end.0,
            FrontEnd::Xforward => self.front_end.1,
        };
        if !allowed {
            return self.refuse(Refusal::FrontEndNotAllowed);
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence("Mail transaction in progress"));
        }
        let attrs = match Attributes::parse(text, command) {
            Ok(attrs) => attrs,
            Err(e) => return self.refuse(Refusal::Parse(e)),
        };
        match command {
            FrontEnd::Xclient => {
                // The session starts over as for a new connection (Postfix): the client
                // greets again; a LOGIN attribute stands for AUTH with the front end.
                self.hello = None;
                self.authenticated = attrs
                    .iter()
                    .any(|(a, v)| a == Attribute::Login && matches!(v, AttributeValue::Value(_)));
                self.pending = Some(Pending::Connect);
                self.timers.stop(Timer::Idle);
                self.timers
                    .set(Timer::Decision, now + self.config.options.timeouts.decision);
                Event::Xclient(attrs)
            }
            FrontEnd::Xforward => {
                self.send(ReplyCode::OK, EnhancedCode::OK, "OK");
                Event::Xforward(attrs)
            }
        }
    }

    pub(super) fn cmd_starttls<'i>(&mut self, now: Instant) -> Event<'i> {
        if !self.config.options.extensions.starttls {
            return self.refuse(Refusal::NotImplemented);
        }
        if self.tls {
            return self.refuse(Refusal::BadSequence("TLS already active"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence("Mail transaction in progress"));
        }
        self.set_pending(Pending::StartTls, now);
        Event::StartTls
    }

    pub(super) fn cmd_auth<'i>(
        &mut self,
        now: Instant,
        mechanism: &'i str,
        initial_response: Option<&'i str>,
    ) -> Event<'i> {
        let o = &self.config.options;
        if o.extensions.auth_mechanisms.is_empty() {
            return self.refuse(Refusal::NotImplemented);
        }
        if !self.config.auth_offered(self.tls) {
            return self.refuse(Refusal::EncryptionRequired);
        }
        if self.hello.is_none() {
            return self.refuse(Refusal::BadSequence("Send EHLO first"));
        }
        if self.authenticated {
            return self.refuse(Refusal::BadSequence("Already authenticated"));
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::BadSequence(
                "AUTH not permitted during a mail transaction",
            ));
        }
        if !o
            .extensions
            .auth_mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
        {
            return self.refuse(Refusal::UnknownMechanism);
        }
        self.set_pending(Pending::Auth, now);
        Event::Auth {
            mechanism,
            initial_response: initial_response.map(Secret::new),
        }
    }

    pub(super) fn auth_response<'i>(&mut self, now: Instant, line: &'i [u8]) -> Event<'i> {
        self.mode = Mode::Command;
        if line == b"*" {
            return self.refuse(Refusal::AuthCanceled);
        }
        let valid = line
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        match core::str::from_utf8(line) {
            Ok(s) if valid => {
                self.mode = Mode::AuthResponse;
                self.set_pending(Pending::Auth, now);
                Event::AuthResponse(Secret::new(s))
            }
            _ => self.refuse(Refusal::Parse(ParseError::Syntax(
                "invalid base64 in AUTH response",
            ))),
        }
    }
}
