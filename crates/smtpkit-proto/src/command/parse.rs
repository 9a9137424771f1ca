//! One function per RFC 5321 4.1.1 command rule. Each takes the text after the verb.

use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while1};
use nom::character::complete::{digit1, space0, space1};
use nom::combinator::{all_consuming, map_res, opt, value};
use nom::sequence::preceded;

use super::{Command, HelloVerb, fast_path};
use crate::address;
use crate::error::ParseError;
use crate::extension::Parameters;

impl<'a> Command<'a> {
    /// Parses one command line, CRLF already removed.
    ///
    /// Verbs are case-insensitive (RFC 5321 2.4). Arguments must be UTF-8; whether non-ASCII
    /// is allowed in this session is the server's call (RFC 6531), not the parser's.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        fast_path::parse(line)
    }
}

/// The full parser, one function per rule: every command, every error. [`Command::parse`]
/// asks the fast path first, which answers as this does on the lines it knows and calls this
/// for the others.
/// The attributes of XCLIENT and XFORWARD, checked later by `front_end`: here only that they
/// stay on one line (a CR or LF could only come from a caller that did not frame the line).
fn front_end_args(args: &str) -> Result<&str, ParseError> {
    if args.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(ParseError::BareLineEnding);
    }
    Ok(args.trim_start_matches(' '))
}

pub(super) fn full(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let verb_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (verb, rest) = line.split_at(verb_len);
    let args = || core::str::from_utf8(rest).map_err(|_| ParseError::Syntax("invalid UTF-8"));
    // Four-letter verbs compare as one lower-cased word: OR-ing 0x20 into each octet maps
    // exactly the ASCII letters onto the lower-case ones, so nothing else can match.
    let Ok(four) = <[u8; 4]>::try_from(verb) else {
        return if verb.eq_ignore_ascii_case(b"STARTTLS") {
            no_args(args()?, Command::StartTls)
        } else if verb.eq_ignore_ascii_case(b"XCLIENT") {
            front_end_args(args()?).map(Command::Xclient)
        } else if verb.eq_ignore_ascii_case(b"XFORWARD") {
            front_end_args(args()?).map(Command::Xforward)
        } else {
            Err(ParseError::UnknownCommand)
        };
    };
    let word = u32::from_le_bytes(four) | 0x2020_2020;
    let is = |v: &[u8; 4]| word == u32::from_le_bytes(*v);
    // Ordered by how often each verb arrives in a mail transaction.
    if is(b"rcpt") {
        rcpt(args()?)
    } else if is(b"mail") {
        mail(args()?)
    } else if is(b"data") {
        no_args(args()?, Command::Data)
    } else if is(b"ehlo") {
        hello(HelloVerb::Ehlo, args()?)
    } else if is(b"bdat") {
        bdat(args()?)
    } else if is(b"rset") {
        no_args(args()?, Command::Rset)
    } else if is(b"quit") {
        no_args(args()?, Command::Quit)
    } else if is(b"helo") {
        hello(HelloVerb::Helo, args()?)
    } else if is(b"lhlo") {
        hello(HelloVerb::Lhlo, args()?)
    } else if is(b"noop") {
        optional_string(args()?).map(Command::Noop)
    } else if is(b"auth") {
        auth(args()?)
    } else if is(b"vrfy") {
        required_string(args()?).map(Command::Vrfy)
    } else if is(b"expn") {
        required_string(args()?).map(Command::Expn)
    } else if is(b"help") {
        optional_string(args()?).map(Command::Help)
    } else {
        Err(ParseError::UnknownCommand)
    }
}

fn run<'a, O>(
    input: &'a str,
    parser: impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>,
    what: &'static str,
) -> Result<O, ParseError> {
    all_consuming(parser)
        .parse(input)
        .map(|(_, o)| o)
        .map_err(|_| ParseError::Syntax(what))
}

/// Text after a verb that takes no arguments: only trailing spaces, which some clients send.
fn no_args<'a>(args: &str, cmd: Command<'a>) -> Result<Command<'a>, ParseError> {
    if args.bytes().all(|b| b == b' ') {
        Ok(cmd)
    } else {
        Err(ParseError::Syntax("no parameters allowed"))
    }
}

/// `ehlo = "EHLO" SP ( Domain / address-literal ) CRLF`, `helo = "HELO" SP Domain CRLF`,
/// and `"LHLO" SP Domain` (RFC 2033 4.1). See [`Command::Hello`] for why any visible word passes.
fn hello(verb: HelloVerb, args: &str) -> Result<Command<'_>, ParseError> {
    // One or more spaces or tabs, the name, then only spaces or tabs.
    let blank = |b: u8| b == b' ' || b == b'\t';
    let visible = |b: u8| b.is_ascii_graphic() || b >= 0x80;
    let bytes = args.as_bytes();
    let start = bytes.iter().position(|&b| !blank(b)).unwrap_or(bytes.len());
    let len = bytes[start..]
        .iter()
        .position(|&b| !visible(b))
        .unwrap_or(bytes.len() - start);
    let end = start + len;
    if start == 0 || len == 0 || !bytes[end..].iter().all(|&b| blank(b)) {
        return Err(ParseError::Syntax("expected one domain"));
    }
    Ok(Command::Hello {
        verb,
        domain: &args[start..end],
    })
}

/// `mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF` (RFC 5321 4.1.1.2).
///
/// A space after the colon is tolerated: RFC 5321 forbids it, but many clients send it and
/// Postfix, Exim and Sendmail accept it.
fn mail(args: &str) -> Result<Command<'_>, ParseError> {
    let rest = keyword(args, b"from:", "expected MAIL FROM:<reverse-path>")?;
    let (reverse_path, params) = address::reverse_path(rest)?;
    Ok(Command::Mail {
        reverse_path,
        params: esmtp_params(params)?,
    })
}

/// `rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
/// [SP Rcpt-parameters] CRLF` (RFC 5321 4.1.1.3).
fn rcpt(args: &str) -> Result<Command<'_>, ParseError> {
    let rest = keyword(args, b"to:", "expected RCPT TO:<forward-path>")?;
    let (forward_path, params) = address::forward_path(rest)?;
    Ok(Command::Rcpt {
        forward_path,
        params: esmtp_params(params)?,
    })
}

/// `SP "FROM:"` or `SP "TO:"`, case-insensitive, and any spaces after the colon. `word` is
/// in lower case.
///
/// The letters compare by OR-ing 0x20 into them, the colon exactly (OR-ing 0x20 into any
/// octet would let 0x1A pass for it), in one pass over a fixed-size array with no early exit:
/// `eq_ignore_ascii_case` lower-cases both sides octet by octet, which cost a sixth of the
/// instructions of a RCPT command.
#[inline]
fn keyword<'a, const N: usize>(
    args: &'a str,
    word: &'static [u8; N],
    what: &'static str,
) -> Result<&'a str, ParseError> {
    let rest = args.strip_prefix(' ').ok_or(ParseError::Syntax(what))?;
    let Some((head, _)) = rest.as_bytes().split_first_chunk::<N>() else {
        return Err(ParseError::Syntax(what));
    };
    let matches = head.iter().zip(word).fold(true, |ok, (&b, &w)| {
        let fold = if w.is_ascii_lowercase() { 0x20 } else { 0 };
        ok & (b | fold == w)
    });
    if !matches {
        return Err(ParseError::Syntax(what));
    }
    let rest = &rest[N..];
    Ok(&rest[rest.bytes().position(|b| b != b' ').unwrap_or(rest.len())..])
}

/// `[SP Mail-parameters]`: empty, or a space and the parameters.
fn esmtp_params(rest: &str) -> Result<Parameters<'_>, ParseError> {
    if rest.is_empty() {
        return Ok(Parameters::EMPTY);
    }
    match rest.strip_prefix(' ') {
        Some(params) => Parameters::parse(params),
        None => Err(ParseError::Syntax("expected a space before parameters")),
    }
}

/// `bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF`, `chunk-size = 1*DIGIT`,
/// `end-marker = "LAST"` (RFC 3030 2).
fn bdat(args: &str) -> Result<Command<'_>, ParseError> {
    let size = map_res(digit1, str::parse::<u64>);
    let last = opt(preceded(space1, tag_no_case("LAST"))).map(|l| l.is_some());
    let (size, last) = run(
        args,
        preceded(space1, (size, last, space0)).map(|(s, l, _)| (s, l)),
        "expected BDAT size [LAST]",
    )?;
    Ok(Command::Bdat { size, last })
}

/// `"AUTH" SP sasl-mech [SP initial-response]`, `sasl-mech = 1*20mech-char`,
/// `initial-response = base64 / "="` (RFC 4954 4).
fn auth(args: &str) -> Result<Command<'_>, ParseError> {
    let mech_char = |c: char| {
        c.is_ascii_uppercase()
            || c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || c == '_'
    };
    let b64_char = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    let (mechanism, initial_response) = run(
        args,
        preceded(
            space1,
            (
                take_while1(mech_char),
                opt(preceded(
                    space1,
                    alt((value("=", tag("=")), take_while1(b64_char))),
                )),
                space0,
            ),
        )
        .map(|(m, r, _)| (m, r)),
        "expected AUTH mechanism [initial-response]",
    )?;
    if mechanism.len() > 20 {
        return Err(ParseError::Syntax("mechanism name too long"));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

/// `SP String` for VRFY and EXPN (RFC 5321 4.1.1.6, 4.1.1.7).
fn required_string(args: &str) -> Result<&str, ParseError> {
    match optional_string(args)? {
        Some(s) => Ok(s),
        None => Err(ParseError::Syntax("argument required")),
    }
}

/// `[ SP String ]` for HELP and NOOP: the rest of the line, trimmed; printable text only.
fn optional_string(args: &str) -> Result<Option<&str>, ParseError> {
    let s = args.trim_matches(' ');
    if !args.is_empty() && !args.starts_with(' ') {
        return Err(ParseError::UnknownCommand);
    }
    if s.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(ParseError::Syntax("control character in argument"));
    }
    Ok((!s.is_empty()).then_some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{ForwardPath, Mailbox, ReversePath};
    use crate::extension::{BodyType, Parameter};

    fn p(s: &str) -> Result<Command<'_>, ParseError> {
        Command::parse(s.as_bytes())
    }

    /// Found by the `command` fuzz target: a line given to `Command::parse` unframed kept its
    /// LF inside the XCLIENT attributes, and the command encoded to two lines.
    #[test]
    fn front_end_attributes_stay_on_one_line() {
        for verb in ["XCLIENT", "XFORWARD"] {
            for bad in ["NAME=a\nADDR=192.0.2.1", "NAME=a\r", "\n"] {
                assert_eq!(p(&format!("{verb} {bad}")), Err(ParseError::BareLineEnding));
            }
        }
        assert_eq!(p("XCLIENT NAME=a"), Ok(Command::Xclient("NAME=a")));
        assert_eq!(p("XFORWARD  ADDR=1"), Ok(Command::Xforward("ADDR=1")));
    }

    #[test]
    fn known_answers() {
        let m = |s| Mailbox::parse(s).unwrap();
        let rows: Vec<(&str, Command<'_>)> = vec![
            (
                "EHLO mx.example",
                Command::Hello {
                    verb: HelloVerb::Ehlo,
                    domain: "mx.example",
                },
            ),
            (
                "ehlo [192.0.2.1]",
                Command::Hello {
                    verb: HelloVerb::Ehlo,
                    domain: "[192.0.2.1]",
                },
            ),
            (
                "HELO WIN_PC ",
                Command::Hello {
                    verb: HelloVerb::Helo,
                    domain: "WIN_PC",
                },
            ),
            (
                "LHLO lmtp.example",
                Command::Hello {
                    verb: HelloVerb::Lhlo,
                    domain: "lmtp.example",
                },
            ),
            (
                "MAIL FROM:<a@b.example>",
                Command::Mail {
                    reverse_path: ReversePath::Mailbox(m("a@b.example")),
                    params: Parameters::EMPTY,
                },
            ),
            (
                "RcPt tO:<a@b.example>",
                Command::Rcpt {
                    forward_path: ForwardPath::Mailbox(m("a@b.example")),
                    params: Parameters::EMPTY,
                },
            ),
            (
                "mail from: <a@b.example>",
                Command::Mail {
                    reverse_path: ReversePath::Mailbox(m("a@b.example")),
                    params: Parameters::EMPTY,
                },
            ),
            (
                "MAIL FROM:<>",
                Command::Mail {
                    reverse_path: ReversePath::Null,
                    params: Parameters::EMPTY,
                },
            ),
            (
                "RCPT TO:<Postmaster>",
                Command::Rcpt {
                    forward_path: ForwardPath::Postmaster,
                    params: Parameters::EMPTY,
                },
            ),
            ("DATA", Command::Data),
            ("data  ", Command::Data),
            (
                "BDAT 1000",
                Command::Bdat {
                    size: 1000,
                    last: false,
                },
            ),
            (
                "BDAT 0 LAST",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            (
                "bdat 12 last",
                Command::Bdat {
                    size: 12,
                    last: true,
                },
            ),
            ("RSET", Command::Rset),
            ("VRFY Smith", Command::Vrfy("Smith")),
            ("EXPN Example-People", Command::Expn("Example-People")),
            ("HELP", Command::Help(None)),
            ("HELP MAIL", Command::Help(Some("MAIL"))),
            ("NOOP", Command::Noop(None)),
            ("NOOP hello there", Command::Noop(Some("hello there"))),
            ("QUIT", Command::Quit),
            ("STARTTLS", Command::StartTls),
            (
                "AUTH LOGIN",
                Command::Auth {
                    mechanism: "LOGIN",
                    initial_response: None,
                },
            ),
            (
                "AUTH PLAIN AHRlc3QAdGVzdA==",
                Command::Auth {
                    mechanism: "PLAIN",
                    initial_response: Some("AHRlc3QAdGVzdA=="),
                },
            ),
            (
                "AUTH PLAIN =",
                Command::Auth {
                    mechanism: "PLAIN",
                    initial_response: Some("="),
                },
            ),
        ];
        for (line, want) in rows {
            assert_eq!(p(line), Ok(want), "{line}");
        }
        let Ok(Command::Mail { params, .. }) = p("MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME")
        else {
            panic!()
        };
        assert_eq!(
            params.iter().collect::<Vec<_>>(),
            [Parameter::Size(10), Parameter::Body(BodyType::EightBitMime)]
        );
    }

    #[test]
    fn errors() {
        let rows: &[(&str, ParseError)] = &[
            ("", ParseError::UnknownCommand),
            ("FOO bar", ParseError::UnknownCommand),
            ("MAILX FROM:<>", ParseError::UnknownCommand),
            ("EHLO", ParseError::Syntax("expected one domain")),
            ("EHLO a b", ParseError::Syntax("expected one domain")),
            ("EHLO a\u{1}b", ParseError::Syntax("expected one domain")),
            ("DATA x", ParseError::Syntax("no parameters allowed")),
            ("STARTTLS x", ParseError::Syntax("no parameters allowed")),
            (
                "MAIL TO:<a@b.example>",
                ParseError::Syntax("expected MAIL FROM:<reverse-path>"),
            ),
            ("MAIL FROM:a@b.example", ParseError::Syntax("expected '<'")),
            // 0x1A is ':' with the case bit cleared: only letters compare case-insensitively.
            (
                "MAIL FROM\u{1a}<a@b.example>",
                ParseError::Syntax("expected MAIL FROM:<reverse-path>"),
            ),
            (
                "MAIL fROm<a@b.example>",
                ParseError::Syntax("expected MAIL FROM:<reverse-path>"),
            ),
            (
                "RCPT T\u{f}:<a@b.example>",
                ParseError::Syntax("expected RCPT TO:<forward-path>"),
            ),
            (
                "RCPT TO",
                ParseError::Syntax("expected RCPT TO:<forward-path>"),
            ),
            (
                "MAIL FROM:<a@b.example>SIZE=1",
                ParseError::Syntax("expected a space before parameters"),
            ),
            (
                "MAIL FROM:<a@b.example> SIZE=x",
                ParseError::InvalidParameter("SIZE value"),
            ),
            (
                "RCPT TO:<a\0b@x.example>",
                ParseError::Syntax("expected '@'"),
            ),
            ("BDAT", ParseError::Syntax("expected BDAT size [LAST]")),
            ("BDAT x", ParseError::Syntax("expected BDAT size [LAST]")),
            (
                "BDAT 99999999999999999999999",
                ParseError::Syntax("expected BDAT size [LAST]"),
            ),
            (
                "BDAT 1 FIRST",
                ParseError::Syntax("expected BDAT size [LAST]"),
            ),
            ("VRFY", ParseError::Syntax("argument required")),
            (
                "AUTH",
                ParseError::Syntax("expected AUTH mechanism [initial-response]"),
            ),
            (
                "AUTH PLAIN a b",
                ParseError::Syntax("expected AUTH mechanism [initial-response]"),
            ),
        ];
        for (line, want) in rows {
            assert_eq!(p(line), Err(*want), "{line}");
        }
        assert_eq!(
            Command::parse(b"MAIL FROM:<\xff@x>"),
            Err(ParseError::Syntax("invalid UTF-8"))
        );
        assert_eq!(Command::parse(b"\xff\xfe"), Err(ParseError::UnknownCommand));
    }
}
