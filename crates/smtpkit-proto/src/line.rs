//! Command line framing: find the end of a line first, parse it second.
//!
//! Framing scans only up to the line limit, so a peer that never sends LF costs one bounded
//! scan per read, and a complete line is parsed exactly once.

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest AUTH command or response line, CRLF included (RFC 4954 4).
pub const MAX_AUTH_LINE: usize = 12288;

/// The first line in some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame<'i> {
    /// A line, without its line ending.
    Line {
        /// The line, CRLF (or bare LF) removed.
        line: &'i [u8],
        /// Bytes to consume, line ending included.
        consumed: usize,
        /// Whether the line ended in a bare LF instead of CRLF.
        bare_lf: bool,
    },
    /// No line ending yet and still under the limit.
    Incomplete,
    /// No line ending within `max` bytes.
    TooLong,
}

/// Frames the first line of `input`, at most `max` bytes long with its line ending.
pub(crate) fn frame(input: &[u8], max: usize) -> Frame<'_> {
    let window = &input[..input.len().min(max)];
    match memchr::memchr(b'\n', window) {
        Some(lf) => {
            let (line, bare_lf) = match input[..lf].strip_suffix(b"\r") {
                Some(line) => (line, false),
                None => (&input[..lf], true),
            };
            Frame::Line {
                line,
                consumed: lf + 1,
                bare_lf,
            }
        }
        None if input.len() >= max => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

/// The limit for the line at the front of `input`: AUTH lines may be longer (RFC 4954 4).
pub(crate) fn limit_for(input: &[u8], command_max: usize) -> usize {
    if is_auth(input) {
        command_max.max(MAX_AUTH_LINE)
    } else {
        command_max
    }
}

/// Whether `input` starts with `AUTH ` in any case: the four letters as one word with the
/// case bit OR-ed in (which maps exactly the ASCII letters onto the lower-case ones), the
/// space exact. `eq_ignore_ascii_case` lower-cased and compared octet by octet, for every
/// command line.
fn is_auth(input: &[u8]) -> bool {
    match input.first_chunk::<5>() {
        Some(&[a, u, t, h, b' ']) => {
            u32::from_le_bytes([a, u, t, h]) | 0x2020_2020 == u32::from_le_bytes(*b"auth")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            frame(b"NOOP\r\nQUIT", 512),
            Frame::Line {
                line: b"NOOP",
                consumed: 6,
                bare_lf: false
            }
        );
        assert_eq!(
            frame(b"NOOP\nQUIT", 512),
            Frame::Line {
                line: b"NOOP",
                consumed: 5,
                bare_lf: true
            }
        );
        assert_eq!(frame(b"NOOP", 512), Frame::Incomplete);
        assert_eq!(frame(b"NOOP\r", 512), Frame::Incomplete);
        // Exactly at the limit with CRLF is fine; one more is too long.
        let ok = [vec![b'x'; 510], b"\r\n".to_vec()].concat();
        assert!(matches!(frame(&ok, 512), Frame::Line { consumed: 512, .. }));
        let long = [vec![b'x'; 511], b"\r\n".to_vec()].concat();
        assert_eq!(frame(&long, 512), Frame::TooLong);
        assert_eq!(limit_for(b"auth plain xyz", 512), MAX_AUTH_LINE);
        assert_eq!(limit_for(b"MAIL FROM", 512), 512);
        for auth in [&b"AUTH "[..], b"aUtH x", b"auth LOGIN"] {
            assert!(is_auth(auth), "{auth:?}");
        }
        // Near misses: no space, another blank, `A` and `U` off by one bit other than case.
        for other in [
            &b"AUTH"[..],
            b"AUTH\t",
            b"AUTHX",
            b"\x01UTH ",
            b"A\x15TH ",
            b"AUT ",
        ] {
            assert!(!is_auth(other), "{other:?}");
        }
    }
}
