//! The fast path: the shapes nearly every command line has (`EHLO name`, `MAIL
//! FROM:<local@domain> SIZE=n BODY=8BITMIME`, `RCPT TO:<local@domain> NOTIFY=... ORCPT=...`,
//! `DATA`, `QUIT`, ...), parsed in one pass with fixed-size compares and byte tables.
//!
//! It answers only when the line is one of those shapes and valid; for anything else (quoted
//! local parts, address literals, source routes, other parameters, extra spaces, errors) it
//! returns `None` and the full parser in `parse.rs` decides, so every refusal and its reply
//! text stay the full parser's. Where it answers, its answer is the full parser's: the
//! proptest below compares the two on lines dense in the octets that matter.

use super::{Command, HelloVerb};
use crate::address::{self, ForwardPath, ReversePath};
use crate::extension::Parameters;

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

/// The command on `line` if it has one of the common shapes, exactly as
/// [`Command::parse`]'s full parser would return it.
#[inline]
pub(super) fn parse(line: &[u8]) -> Option<Command<'_>> {
    let (head, rest) = line.split_first_chunk::<4>()?;
    // OR-ing 0x20 maps exactly the ASCII letters onto the lower-case ones: nothing but the
    // verb in either case can match.
    match word(head) {
        RCPT => rcpt(line),
        MAIL => mail(line),
        DATA if rest.is_empty() => Some(Command::Data),
        EHLO => hello(HelloVerb::Ehlo, rest),
        QUIT if rest.is_empty() => Some(Command::Quit),
        RSET if rest.is_empty() => Some(Command::Rset),
        STAR if starts_with_folded(line, b"starttls") && line.len() == 8 => Some(Command::StartTls),
        HELO => hello(HelloVerb::Helo, rest),
        LHLO => hello(HelloVerb::Lhlo, rest),
        NOOP if rest.is_empty() => Some(Command::Noop(None)),
        _ => None,
    }
}

/// Whether `bytes` starts with `lower`, its letters in either case, every other octet exact.
///
/// One pass over a fixed-size array with no early exit, which compiles to a few wide
/// compares; OR-ing 0x20 into a non-letter would let a control octet pass for `:` or a digit.
#[inline(always)]
fn starts_with_folded<const N: usize>(bytes: &[u8], lower: &[u8; N]) -> bool {
    let Some(head) = bytes.first_chunk::<N>() else {
        return false;
    };
    head.iter().zip(lower).fold(true, |ok, (&b, &w)| {
        let fold = if w.is_ascii_lowercase() { 0x20 } else { 0 };
        ok & (b | fold == w)
    })
}

/// `bytes[start..]` as text, if it is UTF-8; the octets before `start` must be ASCII.
///
/// `str::from_utf8` checks octet by octet up to the first 8-octet boundary and a word at a
/// time after it, so the check starts at the last boundary before `start` when the line has
/// one there: a fifth fewer instructions on a command line.
#[inline(always)]
fn text(bytes: &[u8], start: usize) -> Option<&str> {
    let past_boundary = bytes[start..].as_ptr().addr() % 8;
    let from = start.checked_sub(past_boundary).unwrap_or(start);
    let text = core::str::from_utf8(&bytes[from..]).ok()?;
    text.get(start - from..)
}

/// `EHLO name`: one space, then a name of visible ASCII to the end of the line.
#[inline]
fn hello(verb: HelloVerb, rest: &[u8]) -> Option<Command<'_>> {
    let (&b' ', name) = rest.split_first()? else {
        return None;
    };
    // No early exit: the compiler checks 16 octets at a time.
    let visible = name
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(b'!') < b'~' - b'!' + 1));
    if name.is_empty() || !visible {
        return None;
    }
    let domain = text(rest, 1)?;
    Some(Command::Hello { verb, domain })
}

/// `MAIL FROM:<path> params` with no space after the colon.
#[inline]
fn mail(line: &[u8]) -> Option<Command<'_>> {
    const HEAD: &[u8; 11] = b"mail from:<";
    if !starts_with_folded(line, HEAD) {
        return None;
    }
    let after = text(line, HEAD.len())?;
    let (reverse_path, rest) = match after.strip_prefix('>') {
        Some(rest) => (ReversePath::Null, rest),
        None => {
            let (mailbox, rest) = address::common_path(after)?;
            (ReversePath::Mailbox(mailbox), rest)
        }
    };
    Some(Command::Mail {
        reverse_path,
        params: parameters(rest)?,
    })
}

/// `RCPT TO:<path> params` with no space after the colon.
#[inline]
fn rcpt(line: &[u8]) -> Option<Command<'_>> {
    const HEAD: &[u8; 9] = b"rcpt to:<";
    if !starts_with_folded(line, HEAD) {
        return None;
    }
    let after = text(line, HEAD.len())?;
    // `<Postmaster>` has no `@`, so `common_path` leaves it to the full parser.
    let (mailbox, rest) = address::common_path(after)?;
    Some(Command::Rcpt {
        forward_path: ForwardPath::Mailbox(mailbox),
        params: parameters(rest)?,
    })
}

/// Nothing, or one space and parameters separated by single spaces, with no space at the end.
#[inline]
fn parameters(rest: &str) -> Option<Parameters<'_>> {
    if rest.is_empty() {
        return Some(Parameters::EMPTY);
    }
    let params = rest.strip_prefix(' ')?;
    let bytes = params.as_bytes();
    let mut pos = 0;
    // One bit per keyword: a keyword given twice is an error, left to the full parser.
    let mut seen = 0u8;
    loop {
        let (keyword, len) = parameter(&bytes[pos..])?;
        if seen & keyword != 0 {
            return None;
        }
        seen |= keyword;
        pos += len;
        match bytes.get(pos) {
            None => return Some(Parameters::checked(params)),
            Some(b' ') => pos += 1,
            Some(_) => return None,
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
#[inline]
fn parameter(bytes: &[u8]) -> Option<(u8, usize)> {
    // A chain of compares rather than a `match` on the first octet, which compiles to a jump
    // table: an indirect jump that mispredicted on every parameter.
    if starts_with_folded(bytes, b"size=") {
        let digits = bytes[5..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(bytes.len() - 5);
        (1..=MAX_SIZE_DIGITS)
            .contains(&digits)
            .then_some((SIZE, 5 + digits))
    } else if starts_with_folded(bytes, b"body=") {
        let value = &bytes[5..];
        let len = if starts_with_folded(value, b"8bitmime") {
            8
        } else if starts_with_folded(value, b"7bit") {
            4
        } else {
            return None;
        };
        Some((BODY, 5 + len))
    } else if starts_with_folded(bytes, b"notify=") {
        notify(bytes)
    } else if starts_with_folded(bytes, b"orcpt=") {
        orcpt(bytes)
    } else {
        None
    }
}

/// `NOTIFY=NEVER` or `NOTIFY=` and a comma-separated list of SUCCESS, FAILURE and DELAY, each
/// at most once (RFC 3461 4.1).
#[inline]
fn notify(bytes: &[u8]) -> Option<(u8, usize)> {
    let mut pos = 7;
    if starts_with_folded(&bytes[pos..], b"never") {
        return Some((NOTIFY, pos + 5));
    }
    let mut given = 0u8;
    loop {
        let item = &bytes[pos..];
        let (flag, len) = if starts_with_folded(item, b"failure") {
            (1, 7)
        } else if starts_with_folded(item, b"success") {
            (2, 7)
        } else if starts_with_folded(item, b"delay") {
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

/// `ORCPT=addr-type;xtext` (RFC 3461 4.2): the address type of letters, digits and hyphens,
/// the address in xtext (printable ASCII but `=`, `+` only as `+XX` with upper-case hex).
#[inline]
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
    while let Some(&b) = bytes.get(pos) {
        match b {
            b' ' => break,
            b'+' => {
                let hex = bytes.get(pos + 1..pos + 3)?;
                if !hex
                    .iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h))
                {
                    return None;
                }
                pos += 3;
            }
            b'=' => return None,
            b'!'..=b'~' => pos += 1,
            _ => return None,
        }
    }
    (pos - START <= MAX_ORCPT).then_some((ORCPT, pos))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::parse;
    use crate::command::parse::full;

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
            let fast = parse(line.as_bytes()).unwrap_or_else(|| panic!("not fast: {line}"));
            assert_eq!(Ok(fast), full(line.as_bytes()), "{line}");
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
            assert_eq!(parse(line.as_bytes()), None, "{line}");
        }
        assert_eq!(parse(b"MAIL FROM:<a@x.example> BODY=8BITMIME\xff"), None);
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
        let path = prop_oneof![
            4 => (local.clone(), domain.clone()).prop_map(|(l, d)| format!("<{l}@{d}>")),
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
            Just(" ORCPT=rfc822;a+2b"),
            Just(" ORCPT=;x"),
            Just(" ORCPT=rfc822;"),
            Just(" SMTPUTF8"),
            Just(" "),
        ];
        let random_param = " [A-Za-z]{0,6}=?[ -~é]{0,8}";
        let params = proptest::collection::vec(
            prop_oneof![4 => param.prop_map(str::to_owned), 1 => random_param],
            0..3,
        );
        let mail_rcpt = (head, path, params)
            .prop_map(|(h, p, params)| format!("{h}{p}{}", params.concat()).into_bytes());
        let hello =
            "(EHLO|ehlo|HELO|LHLO|EHLOX)[ \t]{0,2}[ -~é]{0,12}".prop_map(String::into_bytes);
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
            if let Some(fast) = parse(&line) {
                prop_assert_eq!(Ok(fast), full(&line));
            }
        }
    }
}
