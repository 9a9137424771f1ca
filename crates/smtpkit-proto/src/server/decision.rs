//! Decisions: the application's answer to the pending event, and its effect on the session.

use std::sync::Arc;
use std::time::Instant;

use super::Protocol;
use super::timer::Timer;
use super::{Mode, Pending, Server, Transaction};
use crate::command::HelloVerb;
use crate::data::{BdatReader, DotDecoder};
use crate::error::{CloseReason, UsageError};
use crate::reply::{EnhancedCode, Reply, ReplyCode};

impl Server {
    /// Answers the pending decision with the standard positive reply.
    pub fn accept(&mut self, now: Instant) -> Result<(), UsageError> {
        let pending = self.check_pending()?;
        match pending {
            Pending::Connect => self.resolve_connect(now, None),
            Pending::Hello(verb) => {
                let bytes = match verb {
                    HelloVerb::Helo => &self.config.helo,
                    _ => {
                        let (xclient, xforward) = self.front_end;
                        &self.config.ehlo[super::config::ehlo_index(self.tls, xclient, xforward)]
                    }
                };
                self.out.extend_from_slice(bytes);
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Auth => {
                self.send(
                    ReplyCode::AUTH_OK,
                    EnhancedCode::SECURITY_OK,
                    "Authentication successful",
                );
                self.resolve(now, pending, ReplyCode::AUTH_OK);
            }
            Pending::Mail { .. } => {
                self.send(ReplyCode::OK, EnhancedCode::SENDER_OK, "Sender OK");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Rcpt => {
                self.send(ReplyCode::OK, EnhancedCode::RECIPIENT_OK, "Recipient OK");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Data => {
                self.send(
                    ReplyCode::START_DATA,
                    EnhancedCode::OK,
                    "Start mail input; end with <CRLF>.<CRLF>",
                );
                self.resolve(now, pending, ReplyCode::START_DATA);
            }
            Pending::DataEnd { .. } => {
                self.send(ReplyCode::OK, EnhancedCode::OK, "Message accepted");
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::Bdat { .. } => self.resolve(now, pending, ReplyCode::OK),
            Pending::BdatEnd { size, last } => {
                if last {
                    self.send(ReplyCode::OK, EnhancedCode::OK, "Message accepted");
                } else {
                    self.send_octets_received(size);
                }
                self.resolve(now, pending, ReplyCode::OK);
            }
            Pending::StartTls => {
                self.send(ReplyCode::READY, EnhancedCode::OK, "Ready to start TLS");
                self.resolve(now, pending, ReplyCode::READY);
            }
            Pending::Vrfy => {
                self.send(
                    ReplyCode::CANNOT_VERIFY,
                    EnhancedCode::PROTOCOL_OK,
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                self.resolve(now, pending, ReplyCode::CANNOT_VERIFY);
            }
            Pending::Expn => {
                self.send(
                    ReplyCode::NOT_IMPLEMENTED,
                    EnhancedCode::INVALID_COMMAND,
                    "EXPN not available",
                );
                self.resolve(now, pending, ReplyCode::NOT_IMPLEMENTED);
            }
        }
        Ok(())
    }

    /// Answers the pending decision with `reply`. A code that does not answer it (354 to
    /// RCPT, 250 to DATA, 3xx to MAIL) is refused and nothing changes. A 421 closes the session
    /// after it is sent.
    pub fn reply(&mut self, now: Instant, reply: &Reply<'_>) -> Result<(), UsageError> {
        let pending = self.check_pending()?;
        let code = reply.code();
        let n = code.get();
        let ok = match pending {
            Pending::Connect => matches!(n, 220 | 421 | 554),
            Pending::Data => n == 354 || code.is_negative(),
            Pending::Bdat { .. } => code.is_negative(),
            Pending::StartTls => n == 220 || code.is_negative(),
            Pending::Auth => matches!(n, 235 | 334) || code.is_negative(),
            _ => code.is_positive() || code.is_negative(),
        };
        if !ok {
            return Err(UsageError::UnexpectedReply { code });
        }
        if pending == Pending::Connect {
            self.resolve_connect(now, Some(reply));
            return Ok(());
        }
        reply.encode(self.config.enhanced(), &mut self.out);
        if n == 421 {
            if matches!(
                pending,
                Pending::DataEnd { .. } | Pending::BdatEnd { last: true, .. }
            ) {
                // The message is answered, not lost.
                self.txn = None;
            }
            self.close(CloseReason::Shutdown);
            return Ok(());
        }
        self.resolve(now, pending, code);
        Ok(())
    }

    pub(super) fn check_pending(&self) -> Result<Pending, UsageError> {
        if self.closed.is_some() {
            return Err(UsageError::Closed);
        }
        self.pending.ok_or(UsageError::NothingPending)
    }

    pub(super) fn set_pending(&mut self, pending: Pending, now: Instant) {
        self.pending = Some(pending);
        self.timers.stop(Timer::Idle);
        self.timers
            .set(Timer::Decision, now + self.config.options.timeouts.decision);
    }

    /// Applies the effect of a decision with reply `code`, already written.
    pub(super) fn resolve(&mut self, now: Instant, pending: Pending, code: ReplyCode) {
        self.pending = None;
        self.timers.stop(Timer::Decision);
        let positive = code.is_positive();
        match pending {
            Pending::Connect => {}
            Pending::Hello(verb) => {
                if positive {
                    self.hello = Some(verb);
                    self.drop_transaction();
                }
            }
            Pending::Auth => {
                if code == ReplyCode::AUTH_CONTINUE {
                    self.mode = Mode::AuthResponse;
                } else {
                    self.mode = Mode::Command;
                    if positive {
                        self.authenticated = true;
                    } else if code.is_negative() {
                        self.count.auth_failures += 1;
                        if self.count.auth_failures >= self.config.options.limits.auth_failures {
                            self.too_many_errors();
                        }
                    }
                }
            }
            Pending::Mail { body, smtputf8 } => {
                if positive {
                    self.txn = Some(Transaction {
                        body,
                        smtputf8,
                        ..Transaction::default()
                    });
                }
            }
            Pending::Rcpt => {
                if positive {
                    if let Some(t) = &mut self.txn {
                        t.accepted += 1;
                    }
                } else {
                    self.count_error();
                }
            }
            Pending::Data => {
                if code == ReplyCode::START_DATA {
                    if let Some(t) = &mut self.txn {
                        t.content = true;
                    }
                    self.mode = Mode::Data {
                        decoder: DotDecoder::new(self.config.options.bare_line_ending),
                        poison: None,
                    };
                }
            }
            Pending::DataEnd { replies } => {
                if replies > 1 {
                    // LMTP: wait for the next recipient's reply.
                    self.pending = Some(Pending::DataEnd {
                        replies: replies - 1,
                    });
                    self.timers
                        .set(Timer::Decision, now + self.config.options.timeouts.decision);
                    return;
                }
                self.end_transaction();
            }
            Pending::Bdat { size, last } => {
                if code.is_negative() {
                    self.mode = Mode::Bdat {
                        reader: BdatReader::new(size),
                        last,
                        discard: true,
                    };
                    self.drop_transaction();
                } else if let Some(t) = &mut self.txn {
                    t.content = true;
                }
            }
            Pending::BdatEnd { last: true, .. } => {
                // The last chunk ends the message: from here it is answered like DATA's end.
                let replies = self.end_replies(&self.txn.unwrap_or_default());
                self.pending = Some(Pending::DataEnd { replies });
                return self.resolve(now, Pending::DataEnd { replies }, code);
            }
            Pending::BdatEnd { last: false, .. } => {
                if code.is_negative() {
                    self.drop_transaction();
                }
            }
            Pending::StartTls => {
                if code == ReplyCode::READY {
                    self.mode = Mode::TlsHandshake;
                    self.timers.stop(Timer::Idle);
                    return;
                }
            }
            Pending::Vrfy | Pending::Expn => {}
        }
        if self.closed.is_none() {
            self.arm_idle(now);
            self.maybe_drain();
        }
    }

    pub(super) fn resolve_connect(&mut self, now: Instant, reply: Option<&Reply<'_>>) {
        self.pending = None;
        self.timers.stop(Timer::Decision);
        let Some(reply) = reply else {
            match self.config.options.timeouts.greeting_delay {
                Some(d) => {
                    self.mode = Mode::GreetingDelay;
                    self.timers.set(Timer::GreetingDelay, now + d);
                }
                None => self.send_greeting(now),
            }
            return;
        };
        // RFC 2034 3: no enhanced code on the greeting.
        reply.encode(false, &mut self.out);
        match reply.code() {
            ReplyCode::UNAVAILABLE => self.close(CloseReason::Shutdown),
            code => {
                self.refused = code != ReplyCode::READY;
                self.mode = Mode::Command;
                self.arm_idle(now);
            }
        }
    }

    pub(super) fn send_greeting(&mut self, now: Instant) {
        let config = Arc::clone(&self.config);
        self.out.extend_from_slice(&config.greeting);
        self.mode = Mode::Command;
        self.arm_idle(now);
    }

    /// The application answered the end of the message.
    pub(super) fn end_transaction(&mut self) {
        if self.txn.take().is_some() {
            self.ended = Some(false);
        }
        self.count.messages += 1;
    }

    /// The transaction is gone before the application answered its message, if it had one.
    pub(super) fn drop_transaction(&mut self) {
        if let Some(t) = self.txn.take() {
            self.ended = Some(t.content);
        }
    }

    /// Replies owed at the end of a message: LMTP answers per accepted recipient (RFC 2033 4.2).
    pub(super) fn end_replies(&self, txn: &Transaction) -> u32 {
        match self.config.options.protocol {
            Protocol::Lmtp => txn.accepted.max(1),
            Protocol::Smtp => 1,
        }
    }
}
