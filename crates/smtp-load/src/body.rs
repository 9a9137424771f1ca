//! Message generation.
//!
//! Bodies are generated once per run, before any connection opens, so the load generator spends its time
//! on the wire rather than on formatting. Every body is a plain RFC 5322 message: a header block, a blank
//! line, then text lines of 72 to 998 characters. A few lines start with a dot, and one line is a lone
//! dot, so that a server's dot-unstuffing is exercised on every message sent with DATA.

use std::fmt;
use std::str::FromStr;

/// RFC 5322 §2.1.1: a line is at most 998 characters, not counting the CRLF.
const MAX_LINE: usize = 998;
/// The shortest generated text line; shorter lines only appear to hit an exact message size.
const MIN_LINE: usize = 72;
/// A dot-leading line gains one byte when stuffed, and RFC 5321 §4.5.3.1.6 limits a text line on the
/// wire to 1000 octets including the CRLF, so dot-leading lines stay one character shorter.
const MAX_DOT_LINE: usize = MAX_LINE - 1;
/// One line in this many starts with a dot.
const DOT_LINE_EVERY: u64 = 8;

/// A small, fast, deterministic PRNG (xorshift64*); load generation needs no cryptographic randomness,
/// and determinism makes runs repeatable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // A zero state would stay zero forever; mixing in a constant avoids it for every seed.
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo + 1) as u64;
        lo + (self.next_u64() % span) as usize
    }
}

/// Generates an RFC 5322 message of exactly `size` bytes (or the header block alone, if `size` is
/// smaller than it). Lines end with CRLF and the message ends with CRLF.
pub fn generate_message(size: usize, seed: u64, mail_from: &str, rcpt_to: &str) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut msg = format!(
        "From: <{mail_from}>\r\n\
         To: <{rcpt_to}>\r\n\
         Subject: smtp-load test message {seed} ({size} bytes)\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
         Message-ID: <{seed}.{size}@smtp-load.invalid>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n"
    )
    .into_bytes();
    msg.reserve(size.saturating_sub(msg.len()));

    let mut line_no: u64 = 0;
    let mut lone_dot_done = false;
    // Each iteration appends one line; every line is at least 3 bytes, so this ends.
    while size.saturating_sub(msg.len()) >= 3 {
        let remaining = size - msg.len();
        line_no += 1;
        let dot_line = line_no % DOT_LINE_EVERY == 2;
        if dot_line && !lone_dot_done && remaining >= 3 + 2 + MIN_LINE {
            // The one line that must be stuffed to "..": unstuffed, it would end the message early.
            msg.extend_from_slice(b".\r\n");
            lone_dot_done = true;
            continue;
        }
        let max = if dot_line { MAX_DOT_LINE } else { MAX_LINE };
        let len = if remaining - 2 <= max {
            // The last line takes exactly what is left.
            remaining - 2
        } else {
            // Leave room for one more line of at least MIN_LINE characters.
            rng.range(MIN_LINE, max).min(remaining - 2 - (MIN_LINE + 2))
        };
        let start = msg.len();
        msg.extend((0..len).map(|_| text_char(&mut rng)));
        if dot_line {
            msg[start] = b'.';
        }
        msg.extend_from_slice(b"\r\n");
    }
    msg
}

/// A printable character for message text: mostly letters, some digits and spaces, never a control
/// character, so the result is valid 7-bit text.
fn text_char(rng: &mut Rng) -> u8 {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     ,.-";
    ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize]
}

/// A distribution of message sizes: `(size in bytes, weight)` pairs.
///
/// Parsed from `1k:70,64k:25,1m:5`; a size alone (`4096`) is a distribution with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeDist {
    entries: Vec<(usize, u32)>,
    total_weight: u32,
}

impl SizeDist {
    /// A distribution where every message has `size` bytes.
    pub fn fixed(size: usize) -> Self {
        Self {
            entries: vec![(size, 1)],
            total_weight: 1,
        }
    }

    /// The `(size, weight)` entries.
    pub fn entries(&self) -> &[(usize, u32)] {
        &self.entries
    }

    /// Picks an entry index with probability proportional to its weight.
    pub(crate) fn pick(&self, rng: &mut Rng) -> usize {
        let mut x = (rng.next_u64() % u64::from(self.total_weight)) as u32;
        for (i, &(_, w)) in self.entries.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        self.entries.len() - 1
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (size, weight)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{size}:{weight}")?;
        }
        Ok(())
    }
}

/// Why a size or size distribution did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSizeError(String);

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseSizeError {}

/// Parses a byte count with an optional binary suffix: `512`, `1k`, `64K`, `1m`.
pub fn parse_size(s: &str) -> Result<usize, ParseSizeError> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            ParseSizeError(format!(
                "invalid size `{s}` (expected e.g. 512, 1k, 64k, 1m)"
            ))
        })
}

impl FromStr for SizeDist {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = Vec::new();
        for part in s.split(',') {
            let (size, weight) = match part.split_once(':') {
                Some((size, weight)) => {
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        ParseSizeError(format!("invalid weight in `{part}` (expected SIZE:WEIGHT)"))
                    })?;
                    (size, weight)
                }
                None => (part, 1),
            };
            entries.push((parse_size(size)?, weight));
        }
        let total_weight = entries
            .iter()
            .try_fold(0u32, |acc, &(_, w)| acc.checked_add(w))
            .filter(|&w| w > 0)
            .ok_or_else(|| {
                ParseSizeError("size distribution weights must sum to 1..=u32::MAX".into())
            })?;
        Ok(Self {
            entries,
            total_weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference un-stuffer: whole buffer, line by line.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn message_has_exact_size_and_valid_lines() {
        for size in [600, 1024, 4096, 65536, 1 << 20] {
            let msg = generate_message(size, 7, "a@example.test", "b@example.test");
            assert_eq!(msg.len(), size, "size {size}");
            assert!(msg.ends_with(b"\r\n"));
            let text = msg.split(|&b| b == b'\n').collect::<Vec<_>>();
            for line in &text[..text.len() - 1] {
                let line = line
                    .strip_suffix(b"\r")
                    .expect("every LF is preceded by CR");
                assert!(line.len() <= MAX_LINE, "line of {} chars", line.len());
                assert!(!line.contains(&b'\r'));
            }
        }
    }

    #[test]
    fn body_lines_are_72_to_998_except_the_lone_dot_and_the_last() {
        let msg = generate_message(65536, 3, "a@b", "c@d");
        let body_start = memchr::memmem::find(&msg, b"\r\n\r\n").expect("header end") + 4;
        let lines = msg[body_start..].split(|&b| b == b'\n').collect::<Vec<_>>();
        let text_lines = &lines[..lines.len() - 2]; // The empty split after the final LF, and the last line.
        for line in text_lines {
            let line = line.strip_suffix(b"\r").expect("CRLF");
            assert!(
                line == b"." || (MIN_LINE..=MAX_LINE).contains(&line.len()),
                "{}",
                line.len()
            );
        }
    }

    #[test]
    fn messages_contain_dot_lines_and_stuffing_round_trips() {
        let msg = generate_message(16 * 1024, 11, "a@b", "c@d");
        assert!(msg.windows(3).any(|w| w == b"\n.\r"), "a lone dot line");
        assert!(
            msg.windows(2).filter(|w| w == b"\n.").count() >= 3,
            "several dot-leading lines"
        );
        // As the client sends it: the core's encoder (the client adds nothing else to content).
        let mut wire = Vec::new();
        let mut encoder = smtpkit_proto::data::DotEncoder::new();
        encoder.encode(&msg, &mut wire);
        encoder.finish(&mut wire);
        assert!(wire.ends_with(b"\r\n.\r\n"));
        // Only the terminator may look like the end of data.
        assert_eq!(
            memchr::memmem::find(&wire, b"\r\n.\r\n"),
            Some(wire.len() - 5)
        );
        assert_eq!(unstuff(&wire), msg);
        for line in wire.split_inclusive(|&b| b == b'\n') {
            assert!(line.len() <= 1000, "wire line of {} octets", line.len());
        }
    }

    #[test]
    fn small_size_gives_header_only_message() {
        let msg = generate_message(10, 1, "a@b", "c@d");
        assert!(msg.ends_with(b"\r\n\r\n"));
        assert!(msg.len() > 10);
    }

    #[test]
    fn size_parsing() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("1g").is_err());
        let dist: SizeDist = "1k:70,64k:25,1m:5".parse().expect("valid");
        assert_eq!(dist.entries(), &[(1024, 70), (65536, 25), (1 << 20, 5)]);
        assert_eq!(dist.to_string(), "1024:70,65536:25,1048576:5");
        assert!("1k:0".parse::<SizeDist>().is_err());
        assert!("1k:x".parse::<SizeDist>().is_err());
    }

    #[test]
    fn pick_follows_weights() {
        let dist: SizeDist = "1k:70,64k:25,1m:5".parse().expect("valid");
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[dist.pick(&mut rng)] += 1;
        }
        assert!((6500..7500).contains(&counts[0]), "{counts:?}");
        assert!((2000..3000).contains(&counts[1]), "{counts:?}");
        assert!((300..700).contains(&counts[2]), "{counts:?}");
    }
}
