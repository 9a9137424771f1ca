//! Reply parsing, for clients and for checking what the server writes.
//!
//! ```text
//! Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//!              Reply-code [ SP textstring ] CRLF          ; RFC 5321 4.2
//! ```

use core::fmt;
use std::borrow::Cow;

use super::{EnhancedCode, MAX_REPLY_LINE, Reply, ReplyCode};

/// Why bytes did not parse as a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyParseError {
    /// A line does not start with a valid three-digit code followed by SP, `-` or CRLF.
    BadCode,
    /// The lines of a multi-line reply carry different codes.
    CodeMismatch,
    /// A line does not end in CRLF.
    BareLineFeed,
    /// The text is not UTF-8 or contains control characters.
    BadText,
    /// A line is longer than 512 octets with its CRLF (RFC 5321 4.5.3.1.5).
    LineTooLong,
}

impl fmt::Display for ReplyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadCode => "reply line does not start with a reply code",
            Self::CodeMismatch => "multi-line reply with different codes",
            Self::BareLineFeed => "reply line does not end in CRLF",
            Self::BadText => "reply text is not printable UTF-8",
            Self::LineTooLong => "reply line longer than 512 octets",
        })
    }
}

impl std::error::Error for ReplyParseError {}

impl<'a> Reply<'a> {
    /// Parses one complete reply from the front of `input`.
    ///
    /// Returns `Ok(None)` when the input ends before the last line, else the reply and the
    /// number of bytes it took. An enhanced code is recognised when every line starts with
    /// one whose class equals the reply class (RFC 2034 3), and then stripped from the text.
    ///
    /// ```
    /// use smtpkit_proto::Reply;
    /// let (reply, used) = Reply::parse(b"250-mx.example\r\n250 SIZE 100\r\nrest").unwrap().unwrap();
    /// assert_eq!((reply.code().get(), reply.text(), used), (250, "mx.example\nSIZE 100", 30));
    /// ```
    pub fn parse(input: &'a [u8]) -> Result<Option<(Self, usize)>, ReplyParseError> {
        let mut pos = 0;
        let mut code = None;
        let mut lines = 0usize;
        let end = loop {
            let Some(lf) = memchr::memchr(b'\n', &input[pos..]) else {
                // A line that is already too long will not become valid with more input.
                if input.len() - pos >= MAX_REPLY_LINE {
                    return Err(ReplyParseError::LineTooLong);
                }
                return Ok(None);
            };
            if lf + 1 > MAX_REPLY_LINE {
                return Err(ReplyParseError::LineTooLong);
            }
            let line = &input[pos..pos + lf];
            let line = line
                .strip_suffix(b"\r")
                .ok_or(ReplyParseError::BareLineFeed)?;
            let (this, last) = split_code(line)?;
            if *code.get_or_insert(this) != this {
                return Err(ReplyParseError::CodeMismatch);
            }
            lines += 1;
            pos += lf + 1;
            if last {
                break pos;
            }
        };
        let code = code.ok_or(ReplyParseError::BadCode)?;
        let raw = &input[..end];
        let enhanced = detect_enhanced(raw, code);
        let text: Cow<'a, str> = if lines == 1 {
            Cow::Borrowed(line_text(first_line(raw), enhanced.is_some())?)
        } else {
            let mut joined = String::new();
            for (i, line) in raw
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .enumerate()
            {
                if i > 0 {
                    joined.push('\n');
                }
                joined.push_str(line_text(
                    line.strip_suffix(b"\r").unwrap_or(line),
                    enhanced.is_some(),
                )?);
            }
            Cow::Owned(joined)
        };
        // Every line fit in 512 octets on the wire, so its text fits when encoded the same way:
        // allow what remains after "ddd-" and CRLF rather than Reply::new's worst case.
        let mut reply = Reply::with_line_limit(code, text, MAX_REPLY_LINE - 6)
            .map_err(|_| ReplyParseError::BadText)?;
        reply.enhanced = enhanced;
        Ok(Some((reply, end)))
    }
}

fn first_line(raw: &[u8]) -> &[u8] {
    let lf = memchr::memchr(b'\n', raw).unwrap_or(raw.len());
    raw[..lf].strip_suffix(b"\r").unwrap_or(&raw[..lf])
}

/// The code of a line and whether it is the last line.
fn split_code(line: &[u8]) -> Result<(ReplyCode, bool), ReplyParseError> {
    let digits = line.get(..3).ok_or(ReplyParseError::BadCode)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyParseError::BadCode);
    }
    let n = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let code = ReplyCode::new(n).ok_or(ReplyParseError::BadCode)?;
    match line.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(ReplyParseError::BadCode),
    }
}

/// The text of a line after the code and separator, without the enhanced code if `strip`.
fn line_text(line: &[u8], strip: bool) -> Result<&str, ReplyParseError> {
    let text = line.get(4..).unwrap_or_default();
    let text = if strip {
        match memchr::memchr(b' ', text) {
            Some(sp) => &text[sp + 1..],
            None => &[],
        }
    } else {
        text
    };
    core::str::from_utf8(text).map_err(|_| ReplyParseError::BadText)
}

/// The enhanced code if every line starts with the same-class `x.y.z` (RFC 2034 3).
fn detect_enhanced(raw: &[u8], code: ReplyCode) -> Option<EnhancedCode> {
    let mut found = None;
    for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = line.get(4..)?;
        let word_end = memchr::memchr(b' ', text).unwrap_or(text.len());
        let e = parse_enhanced(&text[..word_end])?;
        if e.class() != code.class() || *found.get_or_insert(e) != e {
            return None;
        }
    }
    found
}

/// `status-code = class "." subject "." detail` (RFC 3463 2).
pub(crate) fn parse_enhanced(word: &[u8]) -> Option<EnhancedCode> {
    let mut parts = word.split(|&b| b == b'.');
    let mut num = |max_len: usize| -> Option<u16> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > max_len || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(p.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
    };
    let class = num(1)?;
    let subject = num(3)?;
    let detail = num(3)?;
    if parts.next().is_some() {
        return None;
    }
    EnhancedCode::new(class as u8, subject, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)] // A known-answer table reads best inline.
    fn known_answers() {
        let rows: &[(&[u8], Option<(u16, Option<&str>, &str, usize)>)] = &[
            (b"250 OK\r\n", Some((250, None, "OK", 8))),
            (b"250 2.1.0 OK\r\n", Some((250, Some("2.1.0"), "OK", 14))),
            (b"250\r\n", Some((250, None, "", 5))),
            (b"250-a\r\n250 b\r\nxx", Some((250, None, "a\nb", 14))),
            (
                b"550-5.1.1 a\r\n550 5.1.1 b\r\n",
                Some((550, Some("5.1.1"), "a\nb", 26)),
            ),
            (b"250-a\r\n", None),
            (b"250 OK", None),
            // A 2.x.y code on a 5xx reply is text, not an enhanced code.
            (b"550 2.0.0 odd\r\n", Some((550, None, "2.0.0 odd", 15))),
        ];
        for (input, want) in rows {
            let got = Reply::parse(input).unwrap().map(|(r, n)| {
                (
                    r.code().get(),
                    r.enhanced().map(|e| e.to_string()),
                    r.text().to_owned(),
                    n,
                )
            });
            let want = want.map(|(c, e, t, n)| (c, e.map(str::to_owned), t.to_owned(), n));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Reply::parse(b"25 x\r\n"), Err(ReplyParseError::BadCode));
        assert_eq!(Reply::parse(b"250x\r\n"), Err(ReplyParseError::BadCode));
        assert_eq!(Reply::parse(b"650 x\r\n"), Err(ReplyParseError::BadCode));
        assert_eq!(
            Reply::parse(b"250-x\r\n251 y\r\n"),
            Err(ReplyParseError::CodeMismatch)
        );
        assert_eq!(Reply::parse(b"250 x\n"), Err(ReplyParseError::BareLineFeed));
        assert_eq!(Reply::parse(b"250 \xff\r\n"), Err(ReplyParseError::BadText));
        // A full 512-octet line parses (RFC 5321 4.5.3.1.5); one octet more does not.
        let full = format!("250 {}\r\n", "x".repeat(506));
        let (r, used) = Reply::parse(full.as_bytes()).unwrap().unwrap();
        assert_eq!((r.text().len(), used), (506, 512));
        let over = format!("250 {}\r\n", "x".repeat(507));
        assert_eq!(
            Reply::parse(over.as_bytes()),
            Err(ReplyParseError::LineTooLong)
        );
    }
}
