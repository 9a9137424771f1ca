//! The `client` target: a whole [`Client`] session fed fuzzer-chosen server bytes.
//!
//! # Input layout
//!
//! Missing bytes read as zero, so every input is valid.
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | bit 0 LMTP, 1 PIPELINING not used, 2 CHUNKING used, 3 AUTH LOGIN when offered (insecure AUTH allowed), 4 one message (else two), 5 STARTTLS when offered |
//! | 1 | number of cuts (`& 15`), then two bytes (little endian) each: positions in the server bytes |
//! | rest | server bytes |

use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{
    Client, ClientConfig, ClientOptions, Envelope, Event, Recipient, Sasl,
};
use smtpkit_proto::server::Protocol;

use crate::{Bytes, pieces};

/// `client`: a client session over fuzzer-chosen server bytes, in pieces, then in one piece.
///
/// Asserts: no panic; `consumed` never exceeds the input; once closed the client consumes and
/// reports nothing and has no deadline; without BDAT the client never writes a bare CR or LF
/// (commands and DATA content are CRLF only: no smuggled end of data); and the output and events are the
/// same when the server bytes arrive in one piece.
pub fn client(data: &[u8]) {
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let cuts: Vec<usize> = (0..input.u8() & 15)
        .map(|_| usize::from(input.u16()))
        .collect();
    let server = input.rest();
    let split = run(flags, server, &cuts);
    let whole = run(flags, server, &[]);
    assert_eq!(split.0, whole.0, "events differ with cuts {cuts:?}");
    assert_eq!(split.1, whole.1, "output differs with cuts {cuts:?}");
    // BDAT chunks go byte for byte; everything else must be CRLF only.
    let out: &[u8] = if flags & 4 == 0 { &split.1 } else { &[] };
    for (i, &b) in out.iter().enumerate() {
        let ok = match b {
            b'\r' => out.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && out[i - 1] == b'\r',
            _ => true,
        };
        assert!(
            ok,
            "bare CR or LF at {i}: {:?}",
            String::from_utf8_lossy(out)
        );
    }
}

/// Runs the session; returns the events (as `Debug`) and the output.
fn run(flags: u8, server: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>) {
    let now = Instant::now();
    let options = ClientOptions {
        protocol: if flags & 1 != 0 {
            Protocol::Lmtp
        } else {
            Protocol::Smtp
        },
        pipelining: flags & 2 == 0,
        chunking: flags & 4 != 0,
        allow_insecure_auth: true,
        hostname: "client.example".into(),
        ..ClientOptions::default()
    };
    let mut c = Client::new(Arc::new(ClientConfig::new(options).expect("valid")), now);
    let messages = if flags & 16 != 0 { 1 } else { 2 };
    let mut sent = 0;
    let mut tried_auth = false;
    let mut log = Vec::new();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let from = ReversePath::Mailbox(Mailbox::parse("a@example.org").expect("valid"));
    let to = [
        Recipient::new(ForwardPath::Mailbox(
            Mailbox::parse("b@example.com").expect("valid"),
        )),
        Recipient::new(ForwardPath::Postmaster),
    ];
    for piece in pieces(server, cuts) {
        buf.extend_from_slice(piece);
        // Bounded: every call with an event consumed a reply or reported a deferred step.
        for _ in 0..buf.len() + 16 {
            let closed = c.is_closed();
            let p = c.handle_input(now, &buf);
            assert!(p.consumed <= buf.len());
            if closed {
                assert!(p.event.is_none() && p.consumed == 0, "input after close");
            }
            let Some(event) = p.event else {
                buf.drain(..p.consumed);
                break;
            };
            log.push(format!("{event:?}"));
            let next = match event {
                Event::Ready if flags & 32 != 0 && c.capabilities().starttls => {
                    let _ = c.starttls(now);
                    false
                }
                Event::Ready
                    if flags & 8 != 0 && !tried_auth && c.capabilities().offers_auth("LOGIN") =>
                {
                    tried_auth = true;
                    let r = c.auth(
                        now,
                        &Sasl::Login {
                            user: "user",
                            password: "secret",
                        },
                    );
                    log.push(format!("{r:?}"));
                    false
                }
                Event::StartTlsResult(r) if r.code().get() == 220 => {
                    c.handle_tls_established(now);
                    false
                }
                Event::Ready | Event::AuthResult(_) => true,
                Event::ReadyForData => {
                    let a = c.send_data(now, b".a\r\nb\n.\nc\r");
                    let b = c.finish_data(now);
                    log.push(format!("{a:?} {b:?}"));
                    false
                }
                Event::MessageResult { .. } | Event::MessageAborted { .. } => !c.in_transaction(),
                _ => false,
            };
            buf.drain(..p.consumed);
            if next && c.is_ready() {
                let r = if sent < messages {
                    sent += 1;
                    c.send_mail(now, &Envelope::new(from, &to))
                } else {
                    c.quit(now)
                };
                log.push(format!("{r:?}"));
            }
            out.extend_from_slice(c.poll_transmit());
            c.advance_transmit(c.poll_transmit().len());
        }
        out.extend_from_slice(c.poll_transmit());
        c.advance_transmit(c.poll_transmit().len());
    }
    if c.is_closed() {
        assert_eq!(c.poll_timeout(), None, "a closed client has no deadline");
    }
    log.push(format!("{:?}", c.close_reason()));
    (log, out)
}
