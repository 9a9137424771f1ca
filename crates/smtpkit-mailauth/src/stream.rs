//! [`MessageStream`]: the header block held, the body hashed as it passes.

use std::sync::Arc;

use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha1, Sha256};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;

use crate::strip::remove_own_results;

type Hasher = <Sha256 as HashImpl>::Context;

/// What [`MessageStream::write`] hands back for storage, in order: the header block (once,
/// forged results removed, the blank line included) and body bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed<'a> {
    /// The header block, when it just ended.
    pub header: Option<&'a [u8]>,
    /// Body bytes that follow it.
    pub body: &'a [u8],
}

/// One message's content on its way through the checks.
///
/// The header block is held until its blank line (or until [`end`](Self::end)), at most the
/// header limit; the body is hashed chunk by chunk for each canonicalization and hash algorithm
/// the DKIM and ARC signatures name, then handed back at once. See the crate documentation.
pub struct MessageStream {
    authserv_id: Arc<str>,
    limit: usize,
    header: Vec<u8>,
    /// The header block as stored: `header` without forged results.
    stored_header: Vec<u8>,
    /// Body bytes that arrived in the same chunk as the end of the header block.
    first_body: Vec<u8>,
    state: State,
    body_hashes: Vec<(Canonicalization, HashAlgorithm, Vec<u8>)>,
}

enum State {
    Header { scanned: usize },
    Body(Vec<(Canonicalization, HashAlgorithm, BodyHasher<Hasher>)>),
    Ended,
    Oversized,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("header", &self.header.len())
            .field("oversized", &self.is_oversized())
            .finish_non_exhaustive()
    }
}

impl MessageStream {
    pub(crate) fn new(limit: usize, authserv_id: Arc<str>) -> Self {
        Self {
            authserv_id,
            limit,
            header: Vec::new(),
            stored_header: Vec::new(),
            first_body: Vec::new(),
            state: State::Header { scanned: 0 },
            body_hashes: Vec::new(),
        }
    }

    /// Whether the header block outgrew the limit. Nothing is handed back from then on, and the
    /// message cannot be checked: refuse it (`552 5.3.4`).
    #[must_use]
    pub fn is_oversized(&self) -> bool {
        matches!(self.state, State::Oversized)
    }

    /// The header block as received (forged results included), once it ended.
    #[must_use]
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Takes the next chunk of content (as the core hands it out: un-stuffed, CRLF lines) and
    /// returns what may be stored now.
    pub fn write<'a>(&'a mut self, chunk: &'a [u8]) -> Passed<'a> {
        match &mut self.state {
            State::Header { scanned } => {
                if self.header.len() + chunk.len() > self.limit.saturating_add(4) {
                    self.state = State::Oversized;
                    self.header = Vec::new();
                    return Passed::default();
                }
                self.header.extend_from_slice(chunk);
                let Some(end) = header_end(&self.header, *scanned) else {
                    *scanned = self.header.len().saturating_sub(3);
                    return Passed::default();
                };
                if end > self.limit {
                    self.state = State::Oversized;
                    self.header = Vec::new();
                    return Passed::default();
                }
                self.first_body = self.header.split_off(end);
                self.start_body();
                let State::Body(hashers) = &mut self.state else {
                    unreachable!("start_body sets the body state")
                };
                for (_, _, hasher) in hashers.iter_mut() {
                    hasher.write(&self.first_body);
                }
                Passed {
                    header: Some(&self.stored_header),
                    body: &self.first_body,
                }
            }
            State::Body(hashers) => {
                for (_, _, hasher) in hashers.iter_mut() {
                    hasher.write(chunk);
                }
                Passed {
                    header: None,
                    body: chunk,
                }
            }
            State::Ended | State::Oversized => Passed::default(),
        }
    }

    /// The end of the content: finishes the body hashes and hands back the header block if it
    /// never ended with a blank line (a message without a body).
    pub fn end(&mut self) -> Passed<'_> {
        let mut header_now = false;
        if matches!(self.state, State::Header { .. }) {
            self.start_body();
            header_now = true;
        }
        if let State::Body(hashers) = std::mem::replace(&mut self.state, State::Ended) {
            self.body_hashes = hashers
                .into_iter()
                .map(|(cb, ha, hasher)| {
                    let (context, _) = hasher.finish();
                    (cb, ha, context.complete().as_ref().to_vec())
                })
                .collect();
            return Passed {
                header: header_now.then_some(self.stored_header.as_slice()),
                body: &[],
            };
        }
        Passed::default()
    }

    /// The header block is complete: what to store, and a hasher per body hash the signatures
    /// ask for.
    fn start_body(&mut self) {
        self.stored_header = remove_own_results(&self.header, &self.authserv_id).into_owned();
        let mut hashers = Vec::new();
        if names_a_signature(&self.header)
            && let Some(message) = AuthenticatedMessage::parse_with_opts(&self.header, None, true)
        {
            for (cb, ha, length, _) in &message.body_hashes {
                // Strict parsing admits no `l=`: every body hash covers the whole body.
                debug_assert_eq!(*length, 0);
                let context = match ha {
                    HashAlgorithm::Sha1 => <Sha1 as HashImpl>::hasher(),
                    HashAlgorithm::Sha256 => <Sha256 as HashImpl>::hasher(),
                };
                hashers.push((*cb, *ha, BodyHasher::new(context, *cb, 0)));
            }
        }
        self.state = State::Body(hashers);
    }

    /// The header block as mail-auth's message, carrying the streamed body hashes; `None`
    /// before [`end`](Self::end), for an oversized header, or when there is no header at all.
    pub(crate) fn authenticated_message(&self) -> Option<AuthenticatedMessage<'_>> {
        if !matches!(self.state, State::Ended) {
            return None;
        }
        let mut message = AuthenticatedMessage::parse_with_opts(&self.header, None, true)?;
        for (cb, ha, _, hash) in &mut message.body_hashes {
            if let Some((_, _, streamed)) =
                self.body_hashes.iter().find(|(c, h, _)| c == cb && h == ha)
            {
                hash.clone_from(streamed);
            }
        }
        Some(message)
    }
}

/// Whether `header` may hold a field that asks for a body hash: `DKIM-Signature` or
/// `ARC-Message-Signature`. mail-auth recognizes them by name, folded or not, and either way
/// the name ends in the contiguous octets `nature` (any case); without them there is nothing
/// to hash, so most mail, unsigned, is not parsed twice (here and at the end of data).
fn names_a_signature(header: &[u8]) -> bool {
    memchr::memchr2_iter(b'n', b'N', header).any(|at| {
        header
            .get(at..at + 6)
            .is_some_and(|word| word.eq_ignore_ascii_case(b"nature"))
    })
}

/// Where the body starts: after the first empty line, searching from `from` (bytes before it
/// were searched already). A message may start with the empty line (no header fields).
fn header_end(buffer: &[u8], from: usize) -> Option<usize> {
    if buffer.starts_with(b"\r\n") {
        return Some(2);
    }
    memchr::memmem::find(&buffer[from..], b"\r\n\r\n").map(|at| from + at + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> MessageStream {
        MessageStream::new(1024, Arc::from("mx.test"))
    }

    /// Feeds `message` in pieces of `size` and returns what was handed back, concatenated.
    fn pass(message: &[u8], size: usize) -> (Vec<u8>, MessageStream) {
        let mut s = stream();
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            let passed = s.write(chunk);
            out.extend_from_slice(passed.header.unwrap_or_default());
            out.extend_from_slice(passed.body);
        }
        let passed = s.end();
        out.extend_from_slice(passed.header.unwrap_or_default());
        out.extend_from_slice(passed.body);
        (out, s)
    }

    #[test]
    fn content_is_handed_back_whole_at_any_chunking() {
        let message = b"From: a@example.test\r\nSubject: x\r\n\r\nline one\r\n\r\nline two\r\n";
        for size in 1..message.len() {
            let (out, s) = pass(message, size);
            assert_eq!(out, message, "chunks of {size}");
            assert_eq!(s.header(), b"From: a@example.test\r\nSubject: x\r\n\r\n");
        }
        let (out, _) = pass(b"From: a@example.test\r\n", 5);
        assert_eq!(out, b"From: a@example.test\r\n");
        let (out, s) = pass(b"\r\nbody only\r\n", 3);
        assert_eq!(out, b"\r\nbody only\r\n");
        assert_eq!(s.header(), b"\r\n");
    }

    #[test]
    fn forged_results_are_not_handed_back() {
        let message = b"Authentication-Results: mx.test; dkim=pass\r\n\theader.d=bank.test\r\nFrom: a@example.test\r\n\r\nbody\r\n";
        let (out, s) = pass(message, 7);
        assert_eq!(out, b"From: a@example.test\r\n\r\nbody\r\n");
        // The checks still see the header as it was sent.
        assert!(s.header().starts_with(b"Authentication-Results: mx.test;"));
    }

    #[test]
    fn only_a_signature_field_asks_for_a_body_hash() {
        for header in [
            &b"DKIM-Signature: v=1\r\n\r\n"[..],
            b"From: a@example.test\r\narc-message-signaTURE: i=1\r\n\r\n",
            // A folded name, as mail-auth reads it.
            b"DKIM-\r\n Signature: v=1\r\n\r\n",
        ] {
            assert!(names_a_signature(header), "{header:?}");
        }
        for header in [
            &b"From: a@example.test\r\nSubject: signat\r\n\r\n"[..],
            b"",
            b"n",
            b"natur",
        ] {
            assert!(!names_a_signature(header), "{header:?}");
        }
    }

    #[test]
    fn an_oversized_header_stops_the_stream() {
        let mut s = stream();
        let line = b"X-Filler: 0123456789012345678901234567890123456789\r\n";
        for _ in 0..40 {
            let passed = s.write(line);
            assert_eq!(passed, Passed::default());
        }
        assert!(s.is_oversized());
        assert_eq!(s.end(), Passed::default());
        assert!(s.authenticated_message().is_none());
    }
}
