//! The fast path: the shapes nearly every command line has (`EHLO name`, `MAIL
//! FROM:<local@domain> SIZE=n BODY=8BITMIME`, `RCPT TO:<local@domain> NOTIFY=... ORCPT=...`,
//! `DATA`, `QUIT`, ...), parsed in one pass with fixed-size compares and byte tables.
//!
//! It answers only when the line is one of those shapes and valid; for anything else (quoted
//! local parts, address literals, source routes, other parameters, extra spaces, errors) it
//! returns `None` and the full parser in `parse.rs` decides, so every refusal and its reply
//! text stay the full parser's. Where it answers, its answer is the full parser's: the
//! proptest below compares the two on lines dense in the octets that matter.

use super::parse::full;
use super::{Command, HelloVerb};
use crate::address::{self, ForwardPath, Mailbox, ReversePath};
use crate::error::ParseError;
use crate::extension::Parameters;

/// Whether `bytes` starts with `lower`, its letters in either case, every other octet exact.
///
/// `lower` as words of eight octets, built at compile time (see [`Folded`]): one or two
/// loads, an OR and a compare each, where a loop over the octets is what the compiler made of
/// an octet-by-octet fold inside the AVX2 build (60 instructions for `rcpt to:<`).
macro_rules! starts_with_folded {
    ($bytes:expr, $lower:expr) => {
        const { Folded::new($lower) }.matches($bytes)
    };
}

/// The first four octets of a line as one little-endian word, letters lower-cased.
const fn word(verb: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*verb) | 0x2020_2020
}

const RCPT: u32 = word(b"rcpt");
const MAIL: u32 = word(b"mail");
const DATA: u32 = word(b"data");
const EHLO: u32 = word(b"ehlo");
const HELO: u32 = word(b"helo");
const LHLO: u32 = word(b"lhlo");
const RSET: u32 = word(b"rset");
const QUIT: u32 = word(b"quit");
const NOOP: u32 = word(b"noop");
const STAR: u32 = word(b"star");

/// The command on `line`: from the fast path if it has one of the common shapes, else from
/// the full parser, which answers every line as [`Command::parse`] documents.
///
/// On a CPU with AVX2 all of it runs as one call compiled with AVX2 (and BMI): the path from
/// bit masks, the rest with the wider instruction set, and the command built where the caller
/// gets it (no copy of it on the way out).
#[inline]
pub(super) fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    if let Some(avx2) = pulp::x86::V3::try_new() {
        return avx2.vectorize(Parse { paths: avx2, line });
    }
    parse_portable(line)
}

/// [`parse`] without AVX2. A call of its own, so that the AVX2 path does not pay for saving
/// the registers this one needs on the way in.
#[inline(never)]
fn parse_portable(line: &[u8]) -> Result<Command<'_>, ParseError> {
    parse_or_full(Portable, line)
}

/// The fast path's command, or the full parser's answer where it has none.
#[inline(always)]
fn parse_or_full(paths: impl Paths, line: &[u8]) -> Result<Command<'_>, ParseError> {
    match parse_with(paths, line) {
        Some(cmd) => Ok(cmd),
        None => full(line),
    }
}

/// How the fast path checks the path of MAIL and RCPT.
trait Paths: Copy {
    /// Where the `@` and the `>` of the common path at `line[start..]` are.
    fn common_path(self, line: &[u8], start: usize) -> Option<(usize, usize)>;
}

/// The portable scan, eight octets at a time.
#[derive(Clone, Copy)]
struct Portable;

impl Paths for Portable {
    #[inline(always)]
    fn common_path(self, line: &[u8], start: usize) -> Option<(usize, usize)> {
        address::common_path(line, start)
    }
}

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
impl Paths for pulp::x86::V3 {
    #[inline(always)]
    fn common_path(self, line: &[u8], start: usize) -> Option<(usize, usize)> {
        address::common_path_avx2(self, line, start)
    }
}

/// [`parse_or_full`] as a call that `pulp` compiles with the target features of `paths` (a
/// closure's body would be compiled without them, and every intrinsic in it a call).
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
struct Parse<'l, P> {
    paths: P,
    line: &'l [u8],
}

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
impl<'l, P: Paths> pulp::NullaryFnOnce for Parse<'l, P> {
    type Output = Result<Command<'l>, ParseError>;

    #[inline(always)]
    fn call(self) -> Self::Output {
        parse_or_full(self.paths, self.line)
    }
}

/// The command on `line` if it has one of the common shapes, exactly as the full parser would
/// return it; the paths checked by `paths`.
#[inline(always)]
fn parse_with(paths: impl Paths, line: &[u8]) -> Option<Command<'_>> {
    let (head, rest) = line.split_first_chunk::<4>()?;
    // OR-ing 0x20 maps exactly the ASCII letters onto the lower-case ones: nothing but the
    // verb in either case can match.
    match word(head) {
        RCPT => rcpt(paths, line),
        MAIL => mail(paths, line),
        DATA if rest.is_empty() => Some(Command::Data),
        EHLO => hello(HelloVerb::Ehlo, line),
        QUIT if rest.is_empty() => Some(Command::Quit),
        RSET if rest.is_empty() => Some(Command::Rset),
        STAR if starts_with_folded!(line, b"starttls") && line.len() == 8 => {
            Some(Command::StartTls)
        }
        HELO => hello(HelloVerb::Helo, line),
        LHLO => hello(HelloVerb::Lhlo, line),
        NOOP if rest.is_empty() => Some(Command::Noop(None)),
        _ => None,
    }
}

/// A keyword to match case-insensitively in its letters and exactly in its other octets, as
/// its first and last eight octets (the same ones when it is at most eight long): the case bit
/// of every letter, to OR into the input, and the keyword in lower case. OR-ing 0x20 into a
/// non-letter would let a control octet pass for `:` or a digit, so only letters get it.
struct Folded<const N: usize> {
    case: [u64; 2],
    lower: [u64; 2],
}

impl<const N: usize> Folded<N> {
    const fn new(lower: &[u8; N]) -> Self {
        assert!(N <= 16);
        let mut folded = Self {
            case: [0; 2],
            lower: [0; 2],
        };
        let mut i = 0;
        while i < N {
            let b = lower[i];
            let case = if b.is_ascii_lowercase() { 0x20 } else { 0 };
            // Octet `i` in the first word, and in the last one at its place there.
            if i < 8 {
                folded.case[0] |= case << (8 * i);
                folded.lower[0] |= (b as u64) << (8 * i);
            }
            let offset = N.saturating_sub(8);
            if i >= offset {
                folded.case[1] |= case << (8 * (i - offset));
                folded.lower[1] |= (b as u64) << (8 * (i - offset));
            }
            i += 1;
        }
        folded
    }

    /// Whether `bytes` starts with the keyword.
    #[inline(always)]
    fn matches(&self, bytes: &[u8]) -> bool {
        let Some(head) = bytes.first_chunk::<N>() else {
            return false;
        };
        let octets = |word: u64| word & (u64::MAX >> (8 * 8usize.saturating_sub(N)));
        match (bytes.first_chunk::<8>(), head.last_chunk::<8>()) {
            // At least eight octets: one load for each word, the first cut to the keyword.
            (Some(first), last) => {
                let first = octets(u64::from_le_bytes(*first));
                let last = last.map_or(first, |last| u64::from_le_bytes(*last));
                let first_matches = first | self.case[0] == self.lower[0];
                first_matches & (last | self.case[1] == self.lower[1])
            }
            // A short keyword at the end of the line: octet by octet.
            (None, _) => {
                let first = head
                    .iter()
                    .rev()
                    .fold(0, |word, &b| word << 8 | u64::from(b));
                first | self.case[0] == self.lower[0]
            }
        }
    }
}

/// `bytes[start..]` as text, if it is UTF-8; the octets before `start` must be ASCII.
///
/// `str::from_utf8` checks octet by octet up to the first 8-octet boundary, then 16 octets at
/// a time, then octet by octet to the end. So the check starts at a boundary before `start`
/// when the line has one: the last one, or the one eight octets before it when that leaves
/// fewer than eight octets after the last 16 (a fifth and then a tenth fewer instructions on
/// a command line).
#[inline(always)]
fn text(bytes: &[u8], start: usize) -> Option<&str> {
    let past_boundary = bytes[start..].as_ptr().addr() % 8;
    let from = match start.checked_sub(past_boundary) {
        Some(boundary) if (bytes.len() - boundary) % 16 >= 8 && boundary >= 8 => boundary - 8,
        Some(boundary) => boundary,
        None => start,
    };
    let text = core::str::from_utf8(&bytes[from..]).ok()?;
    // Split rather than sliced: one boundary check, inline (`get` with a range was a call).
    Some(text.split_at_checked(start - from)?.1)
}

/// `EHLO name`: one space, then a name of visible ASCII to the end of the line.
#[inline(always)]
fn hello(verb: HelloVerb, line: &[u8]) -> Option<Command<'_>> {
    let Some((_, &[b' ', ref name @ ..])) = line.split_first_chunk::<4>() else {
        return None;
    };
    let visible = |octets: &[u8]| {
        octets
            .iter()
            .fold(true, |ok, &b| ok & (b.wrapping_sub(b'!') < b'~' - b'!' + 1))
    };
    // 16 octets at a time with no early exit (vector compares), the last 16 again for what is
    // left over rather than octet by octet.
    let all_visible = match (name.as_chunks::<16>(), name.last_chunk::<16>()) {
        ((chunks, rest), Some(last)) => {
            chunks.iter().fold(true, |ok, chunk| ok & visible(chunk))
                & (rest.is_empty() || visible(last))
        }
        _ => visible(name),
    };
    if name.is_empty() || !all_visible {
        return None;
    }
    // From the line's start, not the name's: the UTF-8 check can start at a word boundary.
    let domain = text(line, 5)?;
    Some(Command::Hello { verb, domain })
}

/// `MAIL FROM:<path> params` with no space after the colon.
#[inline(always)]
fn mail(paths: impl Paths, line: &[u8]) -> Option<Command<'_>> {
    const HEAD: &[u8; 11] = b"mail from:<";
    if !starts_with_folded!(line, HEAD) {
        return None;
    }
    // The path and the parameters are checked as octets first, then made text in one go.
    let null = line.get(HEAD.len()) == Some(&b'>');
    let (at, gt) = if null {
        (HEAD.len(), HEAD.len())
    } else {
        paths.common_path(line, HEAD.len())?
    };
    if !parameters(&line[gt + 1..]) {
        return None;
    }
    let after = text(line, HEAD.len())?;
    let (reverse_path, rest) = if null {
        (ReversePath::Null, after.strip_prefix('>')?)
    } else {
        let (mailbox, rest) = Mailbox::common(after, at - HEAD.len(), gt - HEAD.len())?;
        (ReversePath::Mailbox(mailbox), rest)
    };
    Some(Command::Mail {
        reverse_path,
        params: checked_parameters(rest),
    })
}

/// `RCPT TO:<path> params` with no space after the colon.
#[inline(always)]
fn rcpt(paths: impl Paths, line: &[u8]) -> Option<Command<'_>> {
    const HEAD: &[u8; 9] = b"rcpt to:<";
    if !starts_with_folded!(line, HEAD) {
        return None;
    }
    // `<Postmaster>` has no `@`, so `common_path` leaves it to the full parser.
    let (at, gt) = paths.common_path(line, HEAD.len())?;
    if !parameters(&line[gt + 1..]) {
        return None;
    }
    let after = text(line, HEAD.len())?;
    let (mailbox, rest) = Mailbox::common(after, at - HEAD.len(), gt - HEAD.len())?;
    Some(Command::Rcpt {
        forward_path: ForwardPath::Mailbox(mailbox),
        params: checked_parameters(rest),
    })
}

/// The parameters [`parameters`] checked in `rest`, what follows the `>`: nothing, or a space
/// and the parameters.
#[inline(always)]
fn checked_parameters(rest: &str) -> Parameters<'_> {
    match rest.strip_prefix(' ') {
        Some(params) => Parameters::checked(params),
        None => Parameters::EMPTY,
    }
}

/// Whether `rest` is nothing, or one space and parameters separated by single spaces, with no
/// space at the end.
#[inline(always)]
fn parameters(rest: &[u8]) -> bool {
    let Some((&b' ', bytes)) = rest.split_first() else {
        return rest.is_empty();
    };
    let mut pos = 0;
    // One bit per keyword: a keyword given twice is an error, left to the full parser.
    let mut seen = 0u8;
    loop {
        let Some((keyword, len)) = parameter(&bytes[pos..]) else {
            return false;
        };
        if seen & keyword != 0 {
            return false;
        }
        seen |= keyword;
        pos += len;
        match bytes.get(pos) {
            None => return true,
            Some(b' ') => pos += 1,
            Some(_) => return false,
        }
    }
}

const SIZE: u8 = 1;
const BODY: u8 = 2;
const NOTIFY: u8 = 4;
const ORCPT: u8 = 8;

/// Longest SIZE value (RFC 1870 4: `1*20DIGIT`).
const MAX_SIZE_DIGITS: usize = 20;
/// Longest ORCPT value (RFC 3461 4.2).
const MAX_ORCPT: usize = 500;

/// The parameter at the start of `bytes` if it is a valid SIZE, BODY (7BIT, 8BITMIME), NOTIFY
/// or ORCPT: its keyword's bit and the octets it spans. The caller checks what follows.
#[inline(always)]
fn parameter(bytes: &[u8]) -> Option<(u8, usize)> {
    // A chain of compares rather than a `match` on the first octet, which compiles to a jump
    // table: an indirect jump that mispredicted on every parameter.
    if starts_with_folded!(bytes, b"size=") {
        let digits = digits(&bytes[5..]);
        (1..=MAX_SIZE_DIGITS)
            .contains(&digits)
            .then_some((SIZE, 5 + digits))
    } else if starts_with_folded!(bytes, b"body=") {
        let value = &bytes[5..];
        let len = if starts_with_folded!(value, b"8bitmime") {
            8
        } else if starts_with_folded!(value, b"7bit") {
            4
        } else {
            return None;
        };
        Some((BODY, 5 + len))
    } else if starts_with_folded!(bytes, b"notify=") {
        notify(bytes)
    } else if starts_with_folded!(bytes, b"orcpt=") {
        orcpt(bytes)
    } else {
        None
    }
}

/// How many ASCII digits `bytes` starts with, up to 24: eight octets per step, the first
/// non-digit found in a word (a SIZE value is 1 to 20 digits; more are refused either way).
#[inline(always)]
fn digits(bytes: &[u8]) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = !LOW7;
    let mut count = 0;
    while count < 24 {
        let rest = &bytes[count.min(bytes.len())..];
        let word = match rest.first_chunk::<8>() {
            Some(word) => u64::from_le_bytes(*word),
            // The end of the line: its octets, then non-digits.
            None => rest
                .iter()
                .rev()
                .fold(u64::from_le_bytes(*b"xxxxxxxx"), |word, &b| {
                    word << 8 | u64::from(b)
                }),
        };
        // Per octet, exactly (no carry leaves an octet): the top bit of `low + 0x50` is set
        // from 0x30 up, that of `low + 0x46` from 0x3a up.
        let low = word & LOW7;
        let from_zero = (low + 0x5050_5050_5050_5050) & HIGH;
        let past_nine = (low + 0x4646_4646_4646_4646) & HIGH;
        let other = word & HIGH | past_nine | !from_zero & HIGH;
        if other != 0 {
            return count + (other.trailing_zeros() / 8) as usize;
        }
        count += 8;
    }
    count
}

/// `NOTIFY=NEVER` or `NOTIFY=` and a comma-separated list of SUCCESS, FAILURE and DELAY, each
/// at most once (RFC 3461 4.1).
#[inline(always)]
fn notify(bytes: &[u8]) -> Option<(u8, usize)> {
    let mut pos = 7;
    if starts_with_folded!(&bytes[pos..], b"never") {
        return Some((NOTIFY, pos + 5));
    }
    let mut given = 0u8;
    loop {
        let item = &bytes[pos..];
        let (flag, len) = if starts_with_folded!(item, b"failure") {
            (1, 7)
        } else if starts_with_folded!(item, b"success") {
            (2, 7)
        } else if starts_with_folded!(item, b"delay") {
            (4, 5)
        } else {
            return None;
        };
        if given & flag != 0 {
            return None;
        }
        given |= flag;
        pos += len;
        if bytes.get(pos) != Some(&b',') {
            return Some((NOTIFY, pos));
        }
        pos += 1;
    }
}

/// Whether `b` is an xtext octet (RFC 3461 4): printable ASCII but `+`, `=` and the space.
/// Compares rather than [`XCHAR`], so that a loop of them becomes vector code.
#[inline(always)]
const fn is_xchar(b: u8) -> bool {
    b.wrapping_sub(b'!') < b'~' - b'!' + 1 && b != b'+' && b != b'='
}

/// [`is_xchar`] as a table: one load per octet.
const XCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_xchar(b as u8);
        b += 1;
    }
    t
};

/// `ORCPT=addr-type;xtext` (RFC 3461 4.2): the address type of letters, digits and hyphens,
/// the address in xtext (printable ASCII but `=`, `+` only as `+XX` with upper-case hex).
#[inline(always)]
fn orcpt(bytes: &[u8]) -> Option<(u8, usize)> {
    const START: usize = 6;
    let addr_type = bytes[START..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-'))?;
    let mut pos = START + addr_type;
    if addr_type == 0 || bytes[pos] != b';' {
        return None;
    }
    pos += 1;
    loop {
        // A run of plain xtext octets, then what ended it: 16 octets at a time while they are
        // all plain (vector compares, no early exit), then one table load per octet.
        while let Some(chunk) = bytes[pos..].first_chunk::<16>()
            && chunk.iter().fold(true, |ok, &b| ok & is_xchar(b))
        {
            pos += 16;
        }
        pos += bytes[pos..]
            .iter()
            .position(|&b| !XCHAR[usize::from(b)])
            .unwrap_or(bytes.len() - pos);
        match bytes.get(pos) {
            None | Some(b' ') => break,
            Some(b'+') => {
                let hex = bytes.get(pos + 1..pos + 3)?;
                if !hex
                    .iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h))
                {
                    return None;
                }
                pos += 3;
            }
            Some(_) => return None,
        }
    }
    (pos - START <= MAX_ORCPT).then_some((ORCPT, pos))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Folded, Portable, digits, parse_with};
    use crate::command::Command;
    use crate::command::parse::full;

    /// The fast path's answers for `line`, one per way of checking paths this machine has:
    /// the portable scan, and the AVX2 masks where the CPU has AVX2. They must agree.
    fn fast(line: &[u8]) -> Option<Command<'_>> {
        let portable = parse_with(Portable, line);
        #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
        if let Some(avx2) = pulp::x86::V3::try_new() {
            let vectorized = avx2.vectorize(|| parse_with(avx2, line));
            assert_eq!(portable, vectorized, "{:?}", String::from_utf8_lossy(line));
        }
        portable
    }

    /// The shapes of a busy server's command stream: each one answered by the fast path, and
    /// answered as the full parser does.
    #[test]
    fn common_shapes_take_the_fast_path() {
        // 63 octets: the longest domain the fast path takes.
        let long_domain = format!("<x@{}.io>", "a".repeat(60));
        let rows = [
            "EHLO mail-ab1-f12.example.com",
            "ehlo [192.0.2.1]",
            "HELO WIN_PC",
            "LHLO lmtp.example",
            "MAIL FROM:<alice.smith@example.com> SIZE=12345 BODY=8BITMIME",
            "mail from:<> size=0 body=7bit",
            "MAIL FROM:<a@b>",
            "MAIL FROM:<no-reply@shop.example.co.uk> BODY=8BITMIME SIZE=99999999999999999999",
            "RCPT TO:<bob+support12@eu-west-1.mailer.example.com> NOTIFY=SUCCESS,FAILURE \
             ORCPT=rfc822;bob+2Bsupport12@eu-west-1.mailer.example.com",
            "rcpt to:<x_y.z!#$%&'*+/=?^`{|}~@a-b.c9> notify=never",
            "RCPT TO:<Postmaster@example.org> NOTIFY=DELAY,FAILURE,SUCCESS ORCPT=utf-8;",
            "RCPT TO:<用户@例子.广告>",
            &format!("RCPT TO:{long_domain}"),
            "DATA",
            "quit",
            "RSET",
            "NOOP",
            "STARTTLS",
            "StartTls",
        ];
        for line in rows {
            let fast = fast(line.as_bytes()).unwrap_or_else(|| panic!("not fast: {line}"));
            assert_eq!(Ok(fast), full(line.as_bytes()), "{line}");
        }
    }

    /// Keywords match with their letters in either case, their other octets exact (OR-ing the
    /// case bit into `:` makes 0x1A, into a digit a control octet), and only whole: from the
    /// first and last eight octets of a longer input, or octet by octet from a short one.
    fn check_keyword<const N: usize>(keyword: &[u8; N]) {
        let folded = Folded::new(keyword);
        let tail = b" and more after it";
        for upper in [false, true] {
            let mut input = keyword.to_vec();
            if upper {
                input.make_ascii_uppercase();
            }
            assert!(folded.matches(&input), "{input:?}");
            let long = [&input[..], tail].concat();
            assert!(folded.matches(&long), "{long:?}");
            assert!(!folded.matches(&input[..N - 1]), "{input:?}");
            for i in 0..N {
                for other in [input[i] ^ 0x20, input[i] ^ 0x01, input[i] ^ 0x80] {
                    let mut wrong = input.clone();
                    wrong[i] = other;
                    let folds = input[i].is_ascii_alphabetic() && other == input[i] ^ 0x20;
                    assert_eq!(folded.matches(&wrong), folds, "{wrong:?}");
                    let wrong_long = [&wrong[..], tail].concat();
                    assert_eq!(folded.matches(&wrong_long), folds, "{wrong_long:?}");
                }
            }
        }
    }

    #[test]
    fn keywords_fold_letters_only() {
        check_keyword(b"mail from:<");
        check_keyword(b"rcpt to:<");
        check_keyword(b"starttls");
        check_keyword(b"size=");
        check_keyword(b"body=");
        check_keyword(b"8bitmime");
        check_keyword(b"7bit");
        check_keyword(b"notify=");
        check_keyword(b"orcpt=");
        check_keyword(b"never");
        check_keyword(b"failure");
        check_keyword(b"success");
        check_keyword(b"delay");
    }

    /// SIZE's digits, counted a word at a time, up to 24.
    #[test]
    fn digits_are_counted_to_the_first_other_octet() {
        let rows: [(&[u8], usize); 12] = [
            (b"", 0),
            (b"7", 1),
            (b"123 BODY=8BITMIME", 3),
            (b"12345678", 8),
            (b"1234567", 7),
            (b"123456789", 9),
            (b"12345678901234567890", 20),
            (b"123456789012345678901234567", 24),
            (b"12/", 2),
            (b"12:", 2),
            (b"1\xb3", 1),
            (b"\x80123", 0),
        ];
        for (input, want) in rows {
            assert_eq!(digits(input), want, "{input:?}");
        }
    }

    /// EHLO names and ORCPT values of every length up to 48 with an octet that may not be
    /// there at every place in them, on both sides of the 16-octet steps: wherever the fast
    /// path answers, it answers as the full parser does.
    #[test]
    fn a_bad_octet_anywhere_in_a_long_value() {
        let bad: [&[u8]; 7] = [b" ", b"\t", b"=", b"+", b"+2", b"\x7f", "é".as_bytes()];
        for len in 1..=48 {
            for at in 0..len {
                for octets in bad {
                    let mut value =
                        b"abcdefghijklmnopqrstuvwxyz0123456789.-_ABCDEFGHIJ"[..len].to_vec();
                    value.splice(at..at + 1, octets.iter().copied());
                    for head in [&b"EHLO "[..], b"RCPT TO:<a@b.example> ORCPT=rfc822;"] {
                        let line = [head, &value].concat();
                        if let Some(fast) = fast(&line) {
                            assert_eq!(Ok(fast), full(&line), "{}", String::from_utf8_lossy(&line));
                        }
                    }
                }
            }
        }
    }

    /// Lines the fast path leaves to the full parser: valid but unusual, or wrong.
    #[test]
    fn everything_else_goes_to_the_full_parser() {
        let long_domain = format!("RCPT TO:<x@{}.io>", "a".repeat(61));
        let long_local = format!("RCPT TO:<{}@x.io>", "a".repeat(65));
        let rows = [
            "MAIL FROM: <a@b.example>",
            "MAIL FROM:<\"a b\"@x.example>",
            "RCPT TO:<a@[192.0.2.1]>",
            "RCPT TO:<@relay.example:a@b.example>",
            "RCPT TO:<Postmaster>",
            "MAIL FROM:<a@b.example>  SIZE=1",
            "MAIL FROM:<a@b.example> SIZE=1 ",
            "MAIL FROM:<a@b.example> SIZE=1 SIZE=2",
            "MAIL FROM:<a@b.example> SIZE=",
            "MAIL FROM:<a@b.example> SIZE=1x",
            "MAIL FROM:<a@b.example> BODY=BINARYMIME",
            "MAIL FROM:<a@b.example> SMTPUTF8",
            "MAIL FROM:<a@b.example>SIZE=1",
            "MAIL FROM:<.a@x.example>",
            "MAIL FROM:<a.@x.example>",
            "MAIL FROM:<a..b@x.example>",
            "MAIL FROM:<a@-x.example>",
            "MAIL FROM:<a@x-.example>",
            "MAIL FROM:<a@x.-example>",
            "MAIL FROM:<a@x..example>",
            "MAIL FROM:<a@x.example.>",
            "MAIL FROM:<a@.x.example>",
            "MAIL FROM:<a@x_y.example>",
            "RCPT TO:<a@x.example> NOTIFY=FAILURE,FAILURE",
            "RCPT TO:<a@x.example> NOTIFY=FAILURE,",
            "RCPT TO:<a@x.example> NOTIFY=NEVER,DELAY",
            "RCPT TO:<a@x.example> ORCPT=rfc822;a+2b",
            "RCPT TO:<a@x.example> ORCPT=;a",
            "RCPT TO:<a@x.example",
            &long_domain,
            &long_local,
            "DATA ",
            "EHLO  x",
            "EHLO\tx",
            "EHLO",
            "EHLO é",
            "STARTTLS ",
            "BDAT 1 LAST",
            "MAIL FROM:<a@x.example> SIZE=1\u{0}",
        ];
        for line in rows {
            assert_eq!(fast(line.as_bytes()), None, "{line}");
        }
        assert_eq!(fast(b"MAIL FROM:<a@x.example> BODY=8BITMIME\xff"), None);
    }

    /// Command lines near the common shapes, dense in the octets the fast path decides on:
    /// dots, hyphens, `@`, `<>`, quotes, brackets, spaces, `=`, `,`, `;`, `+`, UTF-8.
    fn near_common_line() -> impl Strategy<Value = Vec<u8>> {
        let head = prop_oneof![
            3 => Just("MAIL FROM:"),
            1 => Just("mail from:"),
            1 => Just("MaIl FrOm:"),
            1 => Just("MAIL FROM: "),
            3 => Just("RCPT TO:"),
            1 => Just("rcpt to:"),
            1 => Just("RCPT TO: "),
            1 => Just("RCPT TO:\u{1a}"),
        ];
        // Pieces rather than octets, so that valid parts and the mistakes next to them (a
        // hyphen beside a dot, two dots) are both common.
        let local = proptest::collection::vec(
            prop_oneof![
                12 => Just("ab"),
                4 => Just("."),
                1 => Just("-"),
                1 => Just("+="),
                1 => Just("\""),
                1 => Just("é"),
                1 => Just(" "),
                1 => Just("@"),
            ],
            0..5,
        )
        .prop_map(|p| p.concat());
        let domain = proptest::collection::vec(
            prop_oneof![
                12 => Just("ab"),
                3 => Just("c1"),
                6 => Just("."),
                6 => Just("-"),
                1 => Just("_"),
                1 => Just("é"),
                1 => Just("["),
                1 => Just("]"),
            ],
            0..7,
        )
        .prop_map(|p| p.concat());
        // Long parts too: across the 32- and 64-octet halves of the AVX2 masks, and past them.
        let long_part = proptest::collection::vec(
            prop_oneof![
                16 => Just("abc"),
                2 => Just("."),
                2 => Just("-"),
                1 => Just("é"),
                1 => Just("_"),
            ],
            10..30,
        )
        .prop_map(|p| p.concat());
        let path = prop_oneof![
            4 => (local.clone(), domain.clone()).prop_map(|(l, d)| format!("<{l}@{d}>")),
            2 => (long_part.clone(), domain.clone()).prop_map(|(l, d)| format!("<{l}@{d}>")),
            2 => (local.clone(), long_part.clone()).prop_map(|(l, d)| format!("<{l}@{d}>")),
            1 => (long_part.clone(), long_part).prop_map(|(l, d)| format!("<{l}@{d}>")),
            1 => (local, domain).prop_map(|(l, d)| format!("<{l}@{d}")),
            1 => Just("<>".to_owned()),
            1 => Just("<Postmaster>".to_owned()),
            1 => "[<>@a-z.]{0,6}",
        ];
        let param = prop_oneof![
            Just(" SIZE=123"),
            Just(" size=0"),
            Just(" SIZE="),
            Just(" SIZE=123456789012345678901"),
            Just(" BODY=8BITMIME"),
            Just(" body=7bit"),
            Just(" BODY=BINARYMIME"),
            Just(" BODY=8BITMIMEX"),
            Just(" NOTIFY=NEVER"),
            Just(" NOTIFY=SUCCESS,FAILURE"),
            Just(" notify=delay,success,failure"),
            Just(" NOTIFY=FAILURE,"),
            Just(" NOTIFY=FAILURE,FAILURE"),
            Just(" ORCPT=rfc822;a+2Bb@x.example"),
            Just(" ORCPT=rfc822;first.last+2Bnews@eu-west-1.mailer.example.com"),
            Just(" ORCPT=rfc822;a+2b"),
            Just(" ORCPT=;x"),
            Just(" ORCPT=rfc822;"),
            Just(" SMTPUTF8"),
            Just(" "),
        ];
        let random_param = prop_oneof![
            2 => " [A-Za-z]{0,6}=?[ -~é]{0,8}",
            // xtext past 16 and 32 octets, with escapes, `=`, spaces and UTF-8 in it.
            1 => " ORCPT=rfc822;([!-~]{0,20}(\\+[0-9A-Fa-f]{0,2}|[ =é])?){1,3}",
        ];
        let params = proptest::collection::vec(
            prop_oneof![4 => param.prop_map(str::to_owned), 1 => random_param],
            0..3,
        );
        let mail_rcpt = (head, path, params)
            .prop_map(|(h, p, params)| format!("{h}{p}{}", params.concat()).into_bytes());
        // Names past 16 and 32 octets too: checked 16 at a time, the last 16 overlapping.
        let hello = "(EHLO|ehlo|HELO|LHLO|EHLOX)[ \t]{0,2}([!-~]{0,40}[ \té]?){1,2}"
            .prop_map(String::into_bytes);
        let short = "(DATA|data|QUIT|RSET|NOOP|STARTTLS|starttls|HELP|VRFY)[ x]{0,2}"
            .prop_map(String::into_bytes);
        let octets = proptest::collection::vec(any::<u8>(), 0..48);
        prop_oneof![
            6 => mail_rcpt,
            6 => mutated(valid_common_line()),
            1 => hello,
            1 => short,
            1 => octets,
        ]
    }

    /// A valid MAIL or RCPT line of the common shape.
    fn valid_common_line() -> impl Strategy<Value = Vec<u8>> {
        let head = prop_oneof![
            Just("MAIL FROM:"),
            Just("mail from:"),
            Just("RCPT TO:"),
            Just("rcpt to:")
        ];
        let local = "[a-z0-9+=_-]{1,5}(\\.[a-z0-9+=_-]{1,5}){0,2}";
        let label = "[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?";
        let domain = proptest::collection::vec(label, 1..4).prop_map(|l| l.join("."));
        let param = prop_oneof![
            Just(" SIZE=123"),
            Just(" BODY=8BITMIME"),
            Just(" body=7bit"),
            Just(" NOTIFY=NEVER"),
            Just(" NOTIFY=SUCCESS,FAILURE"),
            Just(" notify=delay"),
            Just(" ORCPT=rfc822;a+2Bb@x.example"),
        ];
        let params = proptest::collection::vec(param, 0..3);
        (head, local, domain, params)
            .prop_map(|(h, l, d, p)| format!("{h}<{l}@{d}>{}", p.concat()).into_bytes())
    }

    /// `lines` with up to three octets inserted, replaced or removed, the inserted ones drawn
    /// from those the fast path decides on.
    fn mutated(lines: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let tricky = proptest::sample::select(b".-@<> \"[]=,;+:_\\\t\0\x7f\x80\xc3\xa9".to_vec());
        let edit = (any::<proptest::sample::Index>(), tricky, 0..3u8);
        (lines, proptest::collection::vec(edit, 0..4)).prop_map(|(mut line, edits)| {
            for (at, octet, how) in edits {
                let at = at.index(line.len() + 1);
                match how {
                    0 => line.insert(at, octet),
                    1 if at < line.len() => line[at] = octet,
                    _ if at < line.len() => {
                        line.remove(at);
                    }
                    _ => {}
                }
            }
            line
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Wherever the fast path answers, the full parser gives the same command.
        #[test]
        fn fast_path_answers_as_the_full_parser(line in near_common_line()) {
            if let Some(fast) = fast(&line) {
                prop_assert_eq!(Ok(fast), full(&line));
            }
        }
    }
}
