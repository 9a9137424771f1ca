//! A sans-IO SMTP server core: bytes in, events and reply bytes out.
//!
//! `smtpkit-proto` parses commands and message content, runs the session state machine,
//! enforces limits and encodes replies. It performs no IO, reads no clock and spawns no
//! threads: the caller feeds it bytes and the current time, and writes out what it produces.
//! Adapters for tokio, smol and mio, and the `smtpd` server, are built on it.
//!
//! ```text
//!              +------------------- Server -------------------+
//!  socket  --> | line framing --> Command::parse --> state    | --> Event<'i> --> application
//!  bytes       | DATA/BDAT decoder (borrowed slices)  machine | <-- accept / reply
//!  socket  <-- | reply encoder <------------------------------+
//!              +----------------------------------------------+
//! ```
//!
//! # The run loop
//!
//! One rule: after every input or decision, drain the outputs. In steps:
//!
//! 1. Wait for whichever comes first: input (only if [`Server::wants_input`]) or
//!    [`Server::poll_timeout`].
//! 2. Append what was read to the input buffer. Then loop: call
//!    [`Server::handle_input`]; handle the event, answering decisions with
//!    [`Server::accept`] or [`Server::reply`]; drop `consumed` bytes. Stop when the event is
//!    `None`.
//! 3. If the deadline passed, call [`Server::handle_timeout`].
//! 4. Write [`Server::poll_transmit`] out and report it with [`Server::advance_transmit`];
//!    always before blocking on a read.
//! 5. If [`Server::wants_tls_handshake`], run the handshake and report it. If
//!    [`Server::is_closed`] and nothing is left to send, close. Otherwise go to 1.
//!
//! The whole loop over an in-memory "socket":
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use smtpkit_proto::{Event, InBuf, Server, ServerConfig, ServerOptions};
//!
//! let config = Arc::new(ServerConfig::new(ServerOptions::default()).unwrap());
//! let mut client: &[u8] = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n\
//!     RCPT TO:<b@example.net>\r\nDATA\r\nSubject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
//! let mut wire = Vec::new();
//! let mut body = Vec::new();
//! let now = Instant::now();
//! let mut server = Server::new(config, now);
//! let mut inbuf = InBuf::new(4096, 65536);
//! while !server.is_closed() {
//!     // 1-2. Read (here: a 7-byte drip from the client) and handle every event.
//!     if server.wants_input() {
//!         let n = client.len().min(7);
//!         inbuf.spare()[..n].copy_from_slice(&client[..n]);
//!         inbuf.commit(n);
//!         client = &client[n..];
//!     }
//!     loop {
//!         let progress = server.handle_input(now, inbuf.data());
//!         let Some(event) = progress.event else {
//!             inbuf.consume(progress.consumed);
//!             break;
//!         };
//!         match event {
//!             Event::DataChunk(chunk) => body.extend_from_slice(chunk),
//!             _ if server.awaiting_decision() => server.accept(now).unwrap(),
//!             _ => {}
//!         }
//!         inbuf.consume(progress.consumed);
//!     }
//!     // 4. Write out the replies.
//!     wire.extend_from_slice(server.poll_transmit());
//!     let n = server.poll_transmit().len();
//!     server.advance_transmit(n);
//! }
//! assert_eq!(body, b"Subject: hi\r\n\r\nHello\r\n");
//! assert!(wire.ends_with(b"250 2.0.0 Message accepted\r\n221 2.0.0 Bye\r\n"));
//! ```
//!
//! # What it is not
//!
//! Not a mail server: delivery, queues and policy belong to the application (see `smtpd`).
//! Not a TLS stack: on [`Event::StartTls`] the adapter runs the handshake.
//!
//! # Features of the protocol
//!
//! | RFC | what |
//! | --- | --- |
//! | 5321 | commands, paths, replies, limits, timeouts |
//! | 1870, 6152, 3030 | SIZE, 8BITMIME, CHUNKING/BINARYMIME |
//! | 2920 | PIPELINING, with an optional synchronization check |
//! | 2034, 3463 | enhanced status codes |
//! | 3207 | STARTTLS, with plaintext injection dropped |
//! | 4954, 4616 | AUTH, PLAIN and LOGIN helpers |
//! | 6531 | SMTPUTF8 addresses |
//! | 3461, 8689 | DSN and REQUIRETLS parameters |
//! | 2033 | LMTP (LHLO, one reply per recipient) |
//!
//! # Cargo features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `simd` | on | the DATA decoder checks content, and the command parser the common MAIL and RCPT paths, with AVX2 when the CPU has it, picked at run time through `pulp` (this crate keeps `#![forbid(unsafe_code)]`); without it, or without AVX2, the same checks run as code built for the target's baseline (SSE2 on x86-64), with identical results |
#![cfg_attr(not(fuzzing), warn(missing_docs))]
#![forbid(unsafe_code)]

// The crate README's examples are compiled and run as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod address;
pub mod auth;
pub mod client;
pub mod command;
pub mod data;
pub mod error;
pub mod extension;
mod inbuf;
pub mod line;
pub mod reply;
mod secret;
pub mod server;

/// Reference implementations and drivers shared by tests, fuzz targets and benchmarks.
/// Not part of the API.
#[doc(hidden)]
pub mod testing {
    pub use crate::data::dot::{chunked_decode, reference_decode};
}

pub use command::{Command, HelloVerb};
pub use error::{CloseReason, ParseError, Refusal, UsageError};
pub use inbuf::InBuf;
pub use reply::{EnhancedCode, Reply, ReplyCode};
pub use secret::Secret;
pub use server::{Event, Progress, Server, ServerConfig, ServerOptions};
