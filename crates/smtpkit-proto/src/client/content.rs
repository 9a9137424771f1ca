//! [`ContentEncoder`]: DATA content on its way out. Line endings are made CRLF, then lines
//! are dot-stuffed with the crate's [`DotEncoder`].
//!
//! RFC 5321 2.3.8 forbids a bare CR or LF in content. Passing one on is how "SMTP smuggling"
//! works: `LF . LF` ends the message at a lenient server and what follows is read as
//! commands. So, like Postfix's client, every bare CR and bare LF leaves as CRLF, and the
//! only end marker the server can ever see is the one [`ContentEncoder::finish`] writes.

use memchr::memchr2;

use crate::data::DotEncoder;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContentEncoder {
    dot: DotEncoder,
    /// The last chunk ended in CR: CRLF if the next starts with LF, bare otherwise.
    pending_cr: bool,
}

impl ContentEncoder {
    pub(crate) const fn new() -> Self {
        Self {
            dot: DotEncoder::new(),
            pending_cr: false,
        }
    }

    /// Appends `chunk`, normalized and stuffed, to `out`.
    pub(crate) fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            self.dot.encode(b"\r\n", out);
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        let mut start = 0;
        let mut pos = 0;
        while let Some(offset) = memchr2(b'\r', b'\n', &rest[pos..]) {
            let i = pos + offset;
            if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => {
                        pos = i + 2;
                        continue;
                    }
                    None => {
                        self.dot.encode(&rest[start..i], out);
                        self.pending_cr = true;
                        return;
                    }
                    Some(_) => {}
                }
            }
            self.dot.encode(&rest[start..i], out);
            self.dot.encode(b"\r\n", out);
            pos = i + 1;
            start = pos;
        }
        self.dot.encode(&rest[start..], out);
    }

    /// Ends the content: CRLF if it lacks one, then `.` CRLF.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            self.dot.encode(b"\r\n", out);
        }
        self.dot.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::BareLineEnding;
    use crate::testing::chunked_decode;
    use proptest::prelude::*;

    /// Every bare CR and LF as CRLF, and a final CRLF if missing: what the server must get.
    fn reference(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < content.len() {
            match (content[i], content.get(i + 1)) {
                (b'\r', Some(b'\n')) => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                (b'\r' | b'\n', _) => out.extend_from_slice(b"\r\n"),
                (b, _) => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn encode(content: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut e = ContentEncoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain([&content.len()]) {
            let cut = cut.clamp(last, content.len());
            e.encode(&content[last..cut], &mut out);
            last = cut;
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn known_answers() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".a\r\n", b"..a\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"\n\r", b"\r\n\r\n.\r\n"),
        ];
        for (content, want) in rows {
            for k in 0..=content.len() {
                assert_eq!(
                    encode(content, &[k]).escape_ascii().to_string(),
                    want.escape_ascii().to_string(),
                    "{:?} split at {k}",
                    content.escape_ascii().to_string()
                );
            }
        }
    }

    proptest! {
        /// Whatever the content and however it is split, the server un-stuffs the normalized
        /// content, sees no bare line ending, and finds the end exactly at the end.
        #[test]
        fn server_reads_back_the_normalized_content(
            content in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let wire = encode(&content, &cuts);
            let (got, bare, end) = chunked_decode(&wire, &[], BareLineEnding::Reject).unwrap();
            prop_assert_eq!(got, reference(&content));
            prop_assert!(!bare);
            prop_assert_eq!(end, wire.len());
        }
    }
}
