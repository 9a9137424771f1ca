//! Inputs: client bytes and the clock, framed into commands, DATA content and BDAT chunks.

use std::time::{Duration, Instant};

use super::timer::Timer;
use super::{Event, Mode, Pending, Progress, Server, Transaction};
use crate::data::{BareLineEnding, Decoded};
use crate::error::{CloseReason, ParseError, Refusal};
use crate::line::{self, Frame};
use crate::reply::{EnhancedCode, ReplyCode};

/// One step of the input loop.
enum Step<'i> {
    /// Report an event after consuming this many bytes.
    Event(usize, Event<'i>),
    /// Consumed this many bytes or changed state; look again.
    Continue(usize),
    /// Nothing more to do with this input.
    Stop(usize),
}

impl Server {
    /// Feeds client bytes. Returns at most one event; drop `consumed` bytes from the front of
    /// the input once it is handled, then call again until the event is `None`.
    ///
    /// While a decision is pending, nothing is consumed: answer it first.
    pub fn handle_input<'i>(&mut self, now: Instant, input: &'i [u8]) -> Progress<'i> {
        let mut consumed = 0;
        // Every iteration consumes input or changes mode towards one that does, so the loop
        // runs at most a few times per input byte.
        loop {
            if let Some(aborted) = self.ended.take() {
                return Progress {
                    consumed,
                    event: Some(Event::TransactionEnded { aborted }),
                };
            }
            if self.pending.is_some() || self.closed.is_some() {
                return Progress {
                    consumed,
                    event: None,
                };
            }
            let rest = &input[consumed..];
            let step = match self.mode {
                Mode::Connect => self.step_connect(),
                Mode::GreetingDelay => self.step_greeting_delay(rest),
                Mode::Command | Mode::AuthResponse => {
                    if self.out.len() - self.sent >= self.config.options.limits.output_buffer {
                        Step::Stop(0)
                    } else {
                        self.step_command(now, rest)
                    }
                }
                Mode::Data { .. } => self.step_data(now, rest),
                Mode::Bdat { .. } => self.step_bdat(now, rest),
                // Plaintext after STARTTLS, before the handshake, is dropped (CVE-2011-0411).
                Mode::TlsHandshake => Step::Stop(rest.len()),
                Mode::Closed => Step::Stop(0),
            };
            match step {
                Step::Event(n, event) => {
                    return Progress {
                        consumed: consumed + n,
                        event: Some(event),
                    };
                }
                Step::Continue(n) => consumed += n,
                Step::Stop(n) => {
                    return Progress {
                        consumed: consumed + n,
                        event: None,
                    };
                }
            }
        }
    }

    /// Tells the session that time has reached `now`; call when
    /// [`poll_timeout`](Self::poll_timeout) has passed. A missed deadline queues
    /// `421 4.4.2` and closes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(timer) = self.timers.expired(now) else {
            return;
        };
        if timer == Timer::GreetingDelay {
            self.timers.stop(Timer::GreetingDelay);
            if self.mode == Mode::GreetingDelay {
                self.send_greeting(now);
            }
            return;
        }
        self.send(
            ReplyCode::UNAVAILABLE,
            EnhancedCode::TIMEOUT,
            "Timeout exceeded, closing connection",
        );
        self.close(CloseReason::Timeout);
    }

    // ---- Input steps -----------------------------------------------------------------------

    fn step_connect<'i>(&mut self) -> Step<'i> {
        if self.connect_reported {
            return Step::Stop(0);
        }
        self.connect_reported = true;
        self.pending = Some(Pending::Connect);
        Step::Event(0, Event::Connect)
    }

    fn step_greeting_delay<'i>(&mut self, rest: &'i [u8]) -> Step<'i> {
        if !rest.is_empty() && self.config.options.pipelining_sync_check {
            self.pipelining_violation();
            return Step::Stop(rest.len());
        }
        Step::Stop(0)
    }

    fn step_command<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        if self.skip_line {
            return match memchr::memchr(b'\n', rest) {
                Some(lf) => {
                    self.skip_line = false;
                    Step::Continue(lf + 1)
                }
                None => Step::Stop(rest.len()),
            };
        }
        let max = if self.mode == Mode::AuthResponse {
            line::MAX_AUTH_LINE
        } else {
            line::limit_for(rest, self.config.options.limits.command_line)
        };
        match line::frame(rest, max) {
            Frame::Incomplete => Step::Stop(0),
            Frame::TooLong => {
                self.skip_line = true;
                // An over-long AUTH response cancels the exchange (RFC 4954 4: 500 5.5.6).
                self.mode = Mode::Command;
                self.arm_idle(now);
                Step::Event(0, self.refuse(Refusal::Parse(ParseError::LineTooLong)))
            }
            Frame::Line {
                line,
                consumed,
                bare_lf,
            } => {
                self.arm_idle(now);
                let more = consumed < rest.len();
                let event = self.dispatch(now, line, bare_lf, more);
                Step::Event(consumed, event)
            }
        }
    }

    fn step_data<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        let Mode::Data {
            mut decoder,
            mut poison,
        } = self.mode
        else {
            return Step::Stop(0);
        };
        self.start_transfer(now);
        let limits = &self.config.options.limits;
        let reject_bare = self.config.options.bare_line_ending == BareLineEnding::Reject;
        let mut consumed = 0;
        let step = loop {
            match decoder.decode(&rest[consumed..]) {
                Decoded::Data { data, consumed: n } => {
                    consumed += n;
                    let txn = self.txn.get_or_insert_with(Transaction::default);
                    txn.size += data.len() as u64;
                    self.count.bytes += data.len() as u64;
                    // The reason must not depend on where the reads cut the content: a message
                    // both too big and with a bare line ending is too big, whichever a chunk
                    // showed first (the size only grows, and a bare line ending stays seen).
                    if txn.size > limits.message_size {
                        poison = Some(Refusal::MessageTooBig);
                    } else if poison.is_none() && reject_bare && decoder.saw_bare_line_ending() {
                        poison = Some(Refusal::BareLineEnding);
                    }
                    if poison.is_none() {
                        break Step::Event(consumed, Event::DataChunk(data));
                    }
                    // A poisoned message is read to its end without being handed out.
                }
                Decoded::NeedMore { consumed: n } => break Step::Stop(consumed + n),
                Decoded::End { consumed: n } => {
                    consumed += n;
                    self.timers.stop(Timer::Transfer);
                    self.mode = Mode::Command;
                    self.arm_idle(now);
                    break match poison {
                        Some(reason) => Step::Event(consumed, self.reject_message(reason)),
                        None => {
                            let txn = self.txn.unwrap_or_default();
                            let replies = self.end_replies(&txn);
                            self.set_pending(Pending::DataEnd { replies }, now);
                            Step::Event(consumed, Event::DataEnd)
                        }
                    };
                }
            }
        };
        if let Mode::Data {
            decoder: d,
            poison: p,
        } = &mut self.mode
        {
            *d = decoder;
            *p = poison;
        }
        if consumed > 0 && self.closed.is_none() && matches!(self.mode, Mode::Data { .. }) {
            self.arm_idle(now);
            self.credit_transfer(now, consumed);
        }
        step
    }

    fn step_bdat<'i>(&mut self, now: Instant, rest: &'i [u8]) -> Step<'i> {
        let Mode::Bdat {
            mut reader,
            last,
            discard,
        } = self.mode
        else {
            return Step::Stop(0);
        };
        if reader.is_done() {
            self.timers.stop(Timer::Transfer);
            self.mode = Mode::Command;
            self.arm_idle(now);
            if discard {
                self.maybe_drain();
                return Step::Continue(0);
            }
            let size = self.txn.map_or(0, |t| t.size);
            self.set_pending(Pending::BdatEnd { size, last }, now);
            return Step::Event(0, Event::BdatEnd { last });
        }
        self.start_transfer(now);
        let chunk = reader.take(rest);
        self.mode = Mode::Bdat {
            reader,
            last,
            discard,
        };
        if chunk.is_empty() {
            return Step::Stop(0);
        }
        self.arm_idle(now);
        self.credit_transfer(now, chunk.len());
        if discard {
            return Step::Continue(chunk.len());
        }
        if let Some(txn) = &mut self.txn {
            txn.size += chunk.len() as u64;
        }
        self.count.bytes += chunk.len() as u64;
        Step::Event(chunk.len(), Event::DataChunk(chunk))
    }

    /// Starts the deadline of a DATA or BDAT transfer when its first content can arrive, so
    /// the application's decision time before it does not count.
    fn start_transfer(&mut self, now: Instant) {
        let o = &self.config.options;
        if o.limits.min_data_rate.is_some() && self.timers.get(Timer::Transfer).is_none() {
            self.timers
                .set(Timer::Transfer, now + o.timeouts.data_block);
        }
    }

    /// Moves the transfer deadline `octets / min_data_rate` later, never past `data_block` from
    /// `now` (Postfix `smtpd_min_data_rate`): the time left shrinks for a sender below the rate
    /// however often it sends, and never for one at or above it.
    fn credit_transfer(&mut self, now: Instant, octets: usize) {
        let o = &self.config.options;
        let (Some(rate), Some(at)) = (o.limits.min_data_rate, self.timers.get(Timer::Transfer))
        else {
            return;
        };
        let rate = u64::from(rate.get());
        let octets = octets as u64;
        let credit = Duration::from_secs(octets / rate)
            + Duration::from_nanos((octets % rate) * 1_000_000_000 / rate);
        let cap = now + o.timeouts.data_block;
        self.timers.set(Timer::Transfer, (at + credit).min(cap));
    }

    pub(super) fn arm_idle(&mut self, now: Instant) {
        let t = &self.config.options.timeouts;
        let d = match self.mode {
            Mode::Data { .. } | Mode::Bdat { .. } => t.data_block,
            _ => t.command,
        };
        self.timers.set(Timer::Idle, now + d);
    }
}
