//! Addresses: [`Mailbox`], [`LocalPart`], [`Domain`], [`AddressLiteral`], and the
//! [`ReversePath`] / [`ForwardPath`] of MAIL and RCPT (RFC 5321 4.1.2, RFC 6531 3.3).
//!
//! Parse results borrow the command line. Quoted local parts stay raw; ask for
//! [`LocalPart::unescaped`] when you need the value.
//!
//! ```
//! use smtpkit_proto::address::{Mailbox, DomainPart};
//! let m = Mailbox::parse("\"john smith\"@example.org").unwrap();
//! assert_eq!(m.local_part().unescaped(), "john smith");
//! assert!(matches!(m.domain(), DomainPart::Domain(d) if d.as_str() == "example.org"));
//! assert_eq!(m.to_string(), "\"john smith\"@example.org");
//! ```

use core::fmt;
use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::ParseError;

mod common_path;
pub(crate) use common_path::common_path;
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
pub(crate) use common_path::common_path_avx2;

/// Longest local part (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path including the angle brackets (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

type PResult<'a, T> = Result<(T, &'a str), ParseError>;

/// Character classes as lookup tables: one load per byte on the hot path.
const ATEXT: u8 = 1;
const QTEXT: u8 = 2;
const DCONTENT: u8 = 4;
/// Letters, digits, hyphen and UTF-8: what a domain label is made of.
const LDH: u8 = 8;
/// atext and the dot: what a dot-string is made of.
pub(crate) const DOT_STRING: u8 = 16;
/// LDH and the dot: what a domain is made of.
pub(crate) const DOMAIN: u8 = 32;

pub(crate) const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        // atext (RFC 5322 3.2.3), plus UTF-8 (RFC 6531 3.3 `UTF8-non-ascii`).
        if alnum
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'/'
                    | b'='
                    | b'?'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'{'
                    | b'|'
                    | b'}'
                    | b'~'
            )
            || c >= 0x80
        {
            t[b] |= ATEXT;
        }
        // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531).
        if matches!(c, 32..=33 | 35..=91 | 93..=126) || c >= 0x80 {
            t[b] |= QTEXT;
        }
        // dcontent = %d33-90 / %d94-126
        if matches!(c, 33..=90 | 94..=126) {
            t[b] |= DCONTENT;
        }
        if alnum || c == b'-' || c >= 0x80 {
            t[b] |= LDH | DOMAIN;
        }
        if t[b] & ATEXT != 0 || c == b'.' {
            t[b] |= DOT_STRING;
        }
        if c == b'.' {
            t[b] |= DOMAIN;
        }
        b += 1;
    }
    t
};

#[inline]
fn is(class: u8, b: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

/// Length of the run of bytes in `class` at the start of `bytes`.
#[inline]
fn run_of(class: u8, bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !is(class, b))
        .unwrap_or(bytes.len())
}

/// `s` after its first octet if that is `t` (ASCII); a byte comparison, where a `&str`
/// pattern would cost a `memcmp` call.
#[inline]
fn tag<'a>(s: &'a str, t: u8, what: &'static str) -> Result<&'a str, ParseError> {
    match s.as_bytes().first() {
        Some(&b) if b == t => Ok(&s[1..]),
        _ => Err(ParseError::Syntax(what)),
    }
}

/// A domain name: `Domain = sub-domain *("." sub-domain)`, where
/// `sub-domain = Let-dig [Ldh-str]` (RFC 5321 4.1.2) or a U-label (RFC 6531 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Domain<'a>(&'a str);

impl<'a> Domain<'a> {
    /// Parses a whole string as a domain.
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        match domain(s)? {
            (d, "") => Ok(d),
            _ => Err(ParseError::Syntax("trailing characters after domain")),
        }
    }

    /// The domain as sent.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether the domain is all ASCII (no U-labels).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl fmt::Display for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// `Domain` (RFC 5321 4.1.2), with U-labels (RFC 6531 3.3).
#[inline]
pub(crate) fn domain(s: &str) -> PResult<'_, Domain<'_>> {
    let mut pos = 0;
    let bytes = s.as_bytes();
    loop {
        // sub-domain: starts and ends with a letter or digit, hyphens inside.
        let start = pos;
        pos += run_of(LDH, &bytes[pos..]);
        let label = &bytes[start..pos];
        if label.is_empty()
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
            || label.len() > MAX_LABEL
        {
            return Err(ParseError::Syntax("invalid domain"));
        }
        if pos < bytes.len()
            && bytes[pos] == b'.'
            && pos + 1 < bytes.len()
            && is_label_start(bytes[pos + 1])
        {
            pos += 1;
            continue;
        }
        break;
    }
    if pos > MAX_DOMAIN {
        return Err(ParseError::Syntax("domain too long"));
    }
    Ok((Domain(&s[..pos]), &s[pos..]))
}

const fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// An address literal: `"[" ( IPv4 / "IPv6:" IPv6 / General ) "]"` (RFC 5321 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressLiteral<'a> {
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]` for a standardized tag other than `IPv6`.
    General {
        /// `Standardized-tag = Ldh-str`
        tag: &'a str,
        /// `1*dcontent`
        content: &'a str,
    },
}

impl fmt::Display for AddressLiteral<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(ip) => write!(f, "[{ip}]"),
            Self::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            Self::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// `address-literal` (RFC 5321 4.1.3).
pub(crate) fn address_literal(s: &str) -> PResult<'_, AddressLiteral<'_>> {
    let s = tag(s, b'[', "expected '['")?;
    let end = s
        .find(']')
        .ok_or(ParseError::Syntax("unterminated address literal"))?;
    let (inner, rest) = (&s[..end], &s[end + 1..]);
    let lit = if let Some(v6) = strip_prefix_ci(inner, "IPv6:") {
        AddressLiteral::Ipv6(
            v6.parse()
                .map_err(|_| ParseError::Syntax("invalid IPv6 literal"))?,
        )
    } else if let Ok(v4) = inner.parse() {
        AddressLiteral::Ipv4(v4)
    } else {
        let colon = inner
            .find(':')
            .ok_or(ParseError::Syntax("invalid address literal"))?;
        let (tag, content) = (&inner[..colon], &inner[colon + 1..]);
        let tag_ok = !tag.is_empty()
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !tag.ends_with('-');
        if !tag_ok || content.is_empty() || !content.bytes().all(|b| is(DCONTENT, b)) {
            return Err(ParseError::Syntax("invalid address literal"));
        }
        AddressLiteral::General { tag, content }
    };
    Ok((lit, rest))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The part after `@`: a domain or an address literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainPart<'a> {
    /// A domain name.
    Domain(Domain<'a>),
    /// An address literal.
    Literal(AddressLiteral<'a>),
}

impl DomainPart<'_> {
    /// Whether the domain part is ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Domain(d) => d.is_ascii(),
            Self::Literal(_) => true,
        }
    }
}

impl fmt::Display for DomainPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::Literal(l) => l.fmt(f),
        }
    }
}

/// `Domain / address-literal`.
#[inline]
pub(crate) fn domain_part(s: &str) -> PResult<'_, DomainPart<'_>> {
    if s.starts_with('[') {
        address_literal(s).map(|(l, r)| (DomainPart::Literal(l), r))
    } else {
        domain(s).map(|(d, r)| (DomainPart::Domain(d), r))
    }
}

/// `Local-part = Dot-string / Quoted-string` (RFC 5321 4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalPart<'a> {
    /// `Dot-string = Atom *("." Atom)`
    Dot(&'a str),
    /// The content between the quotes of a `Quoted-string`, escapes still in place.
    Quoted(&'a str),
}

impl<'a> LocalPart<'a> {
    /// The value, with quoted-pair escapes removed. Allocates only for quoted parts that
    /// contain escapes.
    pub fn unescaped(&self) -> Cow<'a, str> {
        match *self {
            Self::Dot(s) => Cow::Borrowed(s),
            Self::Quoted(s) if !s.contains('\\') => Cow::Borrowed(s),
            Self::Quoted(s) => {
                let mut out = String::with_capacity(s.len());
                let mut chars = s.chars();
                while let Some(c) = chars.next() {
                    out.push(if c == '\\' {
                        chars.next().unwrap_or('\\')
                    } else {
                        c
                    });
                }
                Cow::Owned(out)
            }
        }
    }

    /// The local part as it appears on the wire, quotes excluded.
    pub fn raw(&self) -> &'a str {
        match *self {
            Self::Dot(s) | Self::Quoted(s) => s,
        }
    }

    /// Whether the local part is ASCII.
    pub fn is_ascii(&self) -> bool {
        self.raw().is_ascii()
    }
}

impl fmt::Display for LocalPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dot(s) => f.write_str(s),
            Self::Quoted(s) => write!(f, "\"{s}\""),
        }
    }
}

/// `Dot-string` (RFC 5321 4.1.2).
#[inline]
fn dot_string(s: &str) -> PResult<'_, &str> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    loop {
        let start = pos;
        pos += run_of(ATEXT, &bytes[pos..]);
        if pos == start {
            return Err(ParseError::Syntax("invalid local part"));
        }
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            continue;
        }
        return Ok((&s[..pos], &s[pos..]));
    }
}

/// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE` (RFC 5321 4.1.2); returns the content.
#[inline]
fn quoted_string(s: &str) -> PResult<'_, &str> {
    let s = tag(s, b'"', "expected '\"'")?;
    let bytes = s.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => return Ok((&s[..pos], &s[pos + 1..])),
            // quoted-pairSMTP = %d92 %d32-126
            b'\\' => match bytes.get(pos + 1) {
                Some(32..=126) => pos += 2,
                _ => return Err(ParseError::Syntax("invalid quoted pair")),
            },
            b if is(QTEXT, b) => pos += 1,
            _ => return Err(ParseError::Syntax("invalid character in quoted string")),
        }
    }
    Err(ParseError::Syntax("unterminated quoted string"))
}

/// `Local-part`.
#[inline]
fn local_part(s: &str) -> PResult<'_, LocalPart<'_>> {
    let (lp, rest) = if s.starts_with('"') {
        quoted_string(s).map(|(q, r)| (LocalPart::Quoted(q), r))?
    } else {
        dot_string(s).map(|(d, r)| (LocalPart::Dot(d), r))?
    };
    // RFC 5321 4.5.3.1.1 bounds the local part; quotes are not part of the length.
    if lp.raw().len() > MAX_LOCAL_PART {
        return Err(ParseError::Syntax("local part too long"));
    }
    Ok((lp, rest))
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )` (RFC 5321 4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox<'a> {
    local_part: LocalPart<'a>,
    domain: DomainPart<'a>,
}

impl<'a> Mailbox<'a> {
    /// Parses a whole string as a mailbox.
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        match mailbox(s)? {
            (m, "") => Ok(m),
            _ => Err(ParseError::Syntax("trailing characters after mailbox")),
        }
    }

    /// The local part.
    pub fn local_part(&self) -> LocalPart<'a> {
        self.local_part
    }

    /// The domain or address literal.
    pub fn domain(&self) -> DomainPart<'a> {
        self.domain
    }

    /// Whether the whole address is ASCII; if not, the transaction needs `SMTPUTF8`.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

impl<'a> Mailbox<'a> {
    /// The mailbox [`common_path()`] found, and what follows its `>`: `text` is the path from
    /// just after the `<`, `at` and `gt` are where its `@` and `>` are in it.
    #[inline(always)]
    pub(crate) fn common(text: &'a str, at: usize, gt: usize) -> Option<(Self, &'a str)> {
        // Split rather than sliced: one boundary check each, inline.
        let (local, rest) = text.split_at_checked(at)?;
        let (domain, rest) = rest.strip_prefix('@')?.split_at_checked(gt - at - 1)?;
        let mailbox = Self {
            local_part: LocalPart::Dot(local),
            domain: DomainPart::Domain(Domain(domain)),
        };
        Some((mailbox, rest.strip_prefix('>')?))
    }
}

/// `Mailbox`.
#[inline]
pub(crate) fn mailbox(s: &str) -> PResult<'_, Mailbox<'_>> {
    let (local_part, rest) = local_part(s)?;
    let rest = tag(rest, b'@', "expected '@'")?;
    let (domain, rest) = domain_part(rest)?;
    Ok((Mailbox { local_part, domain }, rest))
}

/// `Path = "<" [ A-d-l ":" ] Mailbox ">"`; the source route is checked and dropped
/// (RFC 5321 4.1.1.3: servers MUST accept and SHOULD ignore it).
#[inline]
fn path(s: &str) -> PResult<'_, Mailbox<'_>> {
    let start_len = s.len();
    let mut s = tag(s, b'<', "expected '<'")?;
    if s.starts_with('@') {
        // A-d-l = At-domain *( "," At-domain )
        loop {
            s = tag(s, b'@', "expected '@' in source route")?;
            s = domain(s)?.1;
            match s.strip_prefix(',') {
                Some(r) => s = r,
                None => break,
            }
        }
        s = tag(s, b':', "expected ':' after source route")?;
    }
    let (m, rest) = mailbox(s)?;
    let rest = tag(rest, b'>', "expected '>'")?;
    if start_len - rest.len() > MAX_PATH {
        return Err(ParseError::Syntax("path too long"));
    }
    Ok((m, rest))
}

/// Longest domain label (RFC 1035 2.3.4).
pub(crate) const MAX_LABEL: usize = 63;

/// `Reverse-path = Path / "<>"` (RFC 5321 4.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath<'a> {
    /// `<>`: bounces and other messages that must not be answered.
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox<'a>),
}

impl ReversePath<'_> {
    /// Whether the path is ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Null => true,
            Self::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ReversePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// `Reverse-path`.
#[inline]
pub(crate) fn reverse_path(s: &str) -> PResult<'_, ReversePath<'_>> {
    if let Some(rest) = s.strip_prefix("<>") {
        return Ok((ReversePath::Null, rest));
    }
    path(s).map(|(m, r)| (ReversePath::Mailbox(m), r))
}

/// The argument of RCPT: `"<Postmaster>" / Forward-path` (RFC 5321 4.1.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardPath<'a> {
    /// `<Postmaster>` without a domain: the server's own postmaster (RFC 5321 4.5.1).
    Postmaster,
    /// A recipient mailbox (`<Postmaster@domain>` is a mailbox too).
    Mailbox(Mailbox<'a>),
}

impl ForwardPath<'_> {
    /// Whether the path is ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Postmaster => true,
            Self::Mailbox(m) => m.is_ascii(),
        }
    }
}

impl fmt::Display for ForwardPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster => f.write_str("<Postmaster>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// `"<Postmaster>" / Forward-path`.
#[inline]
pub(crate) fn forward_path(s: &str) -> PResult<'_, ForwardPath<'_>> {
    if let Some(head) = s.get(..12)
        && head.eq_ignore_ascii_case("<postmaster>")
    {
        return Ok((ForwardPath::Postmaster, &s[12..]));
    }
    path(s).map(|(m, r)| (ForwardPath::Mailbox(m), r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes() {
        let ok = [
            "user@example.com",
            "first.last@sub.example.co.uk",
            "a+tag@x.io",
            "\"john smith\"@example.org",
            "\"a\\\"b\"@example.org",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "user@[x-tag:some-content]",
            "用户@例子.广告",
            "o'neil@a-b.example",
            "postmaster@example.com",
        ];
        for s in ok {
            let m = Mailbox::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let again = m.to_string();
            assert_eq!(Mailbox::parse(&again).unwrap(), m, "{s}");
        }
        let bad = [
            "",
            "user",
            "@example.com",
            "user@",
            "us er@example.com",
            "user..dots@example.com",
            ".user@example.com",
            "user.@example.com",
            "user@-example.com",
            "user@example-.com",
            "user@example..com",
            "user@[300.1.1.1]",
            "user@[IPv6:zz]",
            "\"unterminated@example.com",
            "\"ctl\u{1}\"@example.com",
            "nul\0@example.com",
            "user@exa\0mple.com",
        ];
        for s in bad {
            assert!(Mailbox::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn unescaped() {
        let m = Mailbox::parse(r#""a\"b\\c"@x.org"#).unwrap();
        assert_eq!(m.local_part().unescaped(), "a\"b\\c");
        assert!(matches!(m.local_part().unescaped(), Cow::Owned(_)));
        let m = Mailbox::parse(r#""plain"@x.org"#).unwrap();
        assert!(matches!(m.local_part().unescaped(), Cow::Borrowed("plain")));
    }

    #[test]
    fn paths() {
        assert_eq!(reverse_path("<>").unwrap().0, ReversePath::Null);
        let (p, rest) = reverse_path("<@a.example,@b.example:u@c.example> SIZE=1").unwrap();
        assert_eq!(p.to_string(), "<u@c.example>");
        assert_eq!(rest, " SIZE=1");
        assert_eq!(
            forward_path("<POSTMASTER>").unwrap().0,
            ForwardPath::Postmaster
        );
        assert!(matches!(
            forward_path("<postmaster@x.org>").unwrap().0,
            ForwardPath::Mailbox(_)
        ));
        assert!(reverse_path("u@x.org").is_err());
        assert!(reverse_path("<u@x.org").is_err());
        let label = "b".repeat(60);
        let long = format!("<{}@{label}.{label}.{label}.org>", "a".repeat(64));
        assert!(reverse_path(&long).is_ok());
        let too_long = format!("<{}@{label}.{label}.{label}.{label}.org>", "a".repeat(64));
        assert!(reverse_path(&too_long).is_err());
        assert!(reverse_path(&format!("<{}@x.org>", "a".repeat(65))).is_err());
    }
}
