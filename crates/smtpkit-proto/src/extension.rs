//! ESMTP extensions: the EHLO [`Capability`] keywords and the MAIL/RCPT [`Parameter`]s
//! (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 3030 CHUNKING/BINARYMIME, RFC 6531 SMTPUTF8,
//! RFC 4954 AUTH, RFC 3461 DSN, RFC 8689 REQUIRETLS).
//!
//! Parameters stay a borrowed string and are decoded lazily by [`Parameters::iter`]; the
//! parser has already checked each one, so iterating cannot fail.
//!
//! ```
//! use smtpkit_proto::{Command, extension::{Parameter, BodyType}};
//! let Command::Mail { params, .. } = Command::parse(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME").unwrap()
//! else { unreachable!() };
//! let got: Vec<_> = params.iter().collect();
//! assert_eq!(got, [Parameter::Size(1000), Parameter::Body(BodyType::EightBitMime)]);
//! ```

use core::fmt;
use std::borrow::Cow;

use crate::error::ParseError;

/// An EHLO keyword this crate understands, or another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability<'a> {
    /// RFC 2920.
    Pipelining,
    /// RFC 1870, with the maximum size (0: no fixed limit).
    Size(u64),
    /// RFC 6152.
    EightBitMime,
    /// RFC 3030.
    Chunking,
    /// RFC 3030.
    BinaryMime,
    /// RFC 6531.
    SmtpUtf8,
    /// RFC 2034.
    EnhancedStatusCodes,
    /// RFC 3461.
    Dsn,
    /// RFC 3207.
    StartTls,
    /// RFC 8689.
    RequireTls,
    /// RFC 4954, with the mechanism list as sent (space separated).
    Auth(&'a str),
    /// Any other keyword and its parameters.
    Other {
        /// The keyword.
        keyword: &'a str,
        /// Everything after the keyword.
        params: &'a str,
    },
}

impl<'a> Capability<'a> {
    /// Parses one line of an EHLO reply (after the first, which holds the domain).
    pub fn parse(line: &'a str) -> Self {
        let (keyword, params) = line.split_once(' ').unwrap_or((line, ""));
        let is = |k: &str| keyword.eq_ignore_ascii_case(k);
        if is("PIPELINING") {
            Self::Pipelining
        } else if is("SIZE") {
            Self::Size(params.trim().parse().unwrap_or(0))
        } else if is("8BITMIME") {
            Self::EightBitMime
        } else if is("CHUNKING") {
            Self::Chunking
        } else if is("BINARYMIME") {
            Self::BinaryMime
        } else if is("SMTPUTF8") {
            Self::SmtpUtf8
        } else if is("ENHANCEDSTATUSCODES") {
            Self::EnhancedStatusCodes
        } else if is("DSN") {
            Self::Dsn
        } else if is("STARTTLS") {
            Self::StartTls
        } else if is("REQUIRETLS") {
            Self::RequireTls
        } else if is("AUTH") {
            Self::Auth(params)
        } else {
            Self::Other { keyword, params }
        }
    }
}

impl fmt::Display for Capability<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pipelining => f.write_str("PIPELINING"),
            Self::Size(0) => f.write_str("SIZE"),
            Self::Size(n) => write!(f, "SIZE {n}"),
            Self::EightBitMime => f.write_str("8BITMIME"),
            Self::Chunking => f.write_str("CHUNKING"),
            Self::BinaryMime => f.write_str("BINARYMIME"),
            Self::SmtpUtf8 => f.write_str("SMTPUTF8"),
            Self::EnhancedStatusCodes => f.write_str("ENHANCEDSTATUSCODES"),
            Self::Dsn => f.write_str("DSN"),
            Self::StartTls => f.write_str("STARTTLS"),
            Self::RequireTls => f.write_str("REQUIRETLS"),
            Self::Auth(m) => write!(f, "AUTH {m}"),
            Self::Other {
                keyword,
                params: "",
            } => f.write_str(keyword),
            Self::Other { keyword, params } => write!(f, "{keyword} {params}"),
        }
    }
}

/// `BODY=` values (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BodyType {
    /// `7BIT`, the default.
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME`: only with BDAT.
    BinaryMime,
}

impl BodyType {
    /// The keyword value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SevenBit => "7BIT",
            Self::EightBitMime => "8BITMIME",
            Self::BinaryMime => "BINARYMIME",
        }
    }
}

/// `RET=` values (RFC 3461 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// Return the full message in a DSN.
    Full,
    /// Return headers only.
    Hdrs,
}

/// `NOTIFY=` (RFC 3461 4.1): `NEVER` or a set of conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Notify {
    /// Notify on success.
    pub success: bool,
    /// Notify on failure.
    pub failure: bool,
    /// Notify on delay.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Self = Self {
        success: false,
        failure: false,
        delay: false,
    };
}

/// Text in RFC 3461 4 `xtext`: printable ASCII with `+XX` escapes; kept encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XText<'a>(&'a str);

impl<'a> XText<'a> {
    /// Checks `xtext = *( xchar / hexchar )`.
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        // Most values have no escapes: one pass the compiler vectorizes settles them.
        if all_bytes(b, |c| matches!(c, 33..=42 | 44..=60 | 62..=126)) {
            return Ok(Self(s));
        }
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => {
                    let hex = b
                        .get(i + 1..i + 3)
                        .ok_or(ParseError::InvalidParameter("xtext"))?;
                    if !hex
                        .iter()
                        .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h))
                    {
                        return Err(ParseError::InvalidParameter("xtext"));
                    }
                    i += 3;
                }
                b'=' => return Err(ParseError::InvalidParameter("xtext")),
                33..=126 => i += 1,
                _ => return Err(ParseError::InvalidParameter("xtext")),
            }
        }
        Ok(Self(s))
    }

    /// The encoded form.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The decoded bytes; allocates only when there are escapes.
    pub fn decode(&self) -> Cow<'a, [u8]> {
        if !self.0.contains('+') {
            return Cow::Borrowed(self.0.as_bytes());
        }
        let b = self.0.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'+' {
                let hi = hex_val(b[i + 1]);
                let lo = hex_val(b[i + 2]);
                out.push(hi << 4 | lo);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Cow::Owned(out)
    }
}

fn hex_val(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        _ => h - b'A' + 10,
    }
}

/// One MAIL or RCPT parameter, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Parameter<'a> {
    /// MAIL `SIZE=` (RFC 1870).
    Size(u64),
    /// MAIL `BODY=` (RFC 6152, RFC 3030).
    Body(BodyType),
    /// MAIL `SMTPUTF8` (RFC 6531).
    SmtpUtf8,
    /// MAIL `AUTH=` (RFC 4954 5): the authenticated sender, `None` for `<>`.
    Auth(Option<XText<'a>>),
    /// MAIL `RET=` (RFC 3461).
    Ret(Ret),
    /// MAIL `ENVID=` (RFC 3461).
    EnvId(XText<'a>),
    /// MAIL `REQUIRETLS` (RFC 8689).
    RequireTls,
    /// RCPT `NOTIFY=` (RFC 3461).
    Notify(Notify),
    /// RCPT `ORCPT=addr-type;xtext` (RFC 3461).
    Orcpt {
        /// The address type, usually `rfc822` or `utf-8`.
        addr_type: &'a str,
        /// The original recipient, xtext encoded.
        addr: XText<'a>,
    },
    /// A parameter this crate does not know; refused with 555 unless declared in the config.
    Unknown {
        /// `esmtp-keyword`
        keyword: &'a str,
        /// `esmtp-value`
        value: Option<&'a str>,
    },
}

impl Parameter<'_> {
    /// Whether the parameter belongs to MAIL (true) or RCPT (false); unknown ones to both.
    pub fn is_mail(&self) -> bool {
        !matches!(self, Self::Notify(_) | Self::Orcpt { .. })
    }
}

impl fmt::Display for Parameter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(n) => write!(f, "SIZE={n}"),
            Self::Body(b) => write!(f, "BODY={}", b.as_str()),
            Self::SmtpUtf8 => f.write_str("SMTPUTF8"),
            Self::Auth(None) => f.write_str("AUTH=<>"),
            Self::Auth(Some(x)) => write!(f, "AUTH={}", x.as_str()),
            Self::Ret(Ret::Full) => f.write_str("RET=FULL"),
            Self::Ret(Ret::Hdrs) => f.write_str("RET=HDRS"),
            Self::EnvId(x) => write!(f, "ENVID={}", x.as_str()),
            Self::RequireTls => f.write_str("REQUIRETLS"),
            Self::Notify(n) if *n == Notify::NEVER => f.write_str("NOTIFY=NEVER"),
            Self::Notify(n) => {
                f.write_str("NOTIFY=")?;
                let names = [
                    (n.success, "SUCCESS"),
                    (n.failure, "FAILURE"),
                    (n.delay, "DELAY"),
                ];
                let mut first = true;
                for (_, name) in names.iter().filter(|(on, _)| *on) {
                    if !first {
                        f.write_str(",")?;
                    }
                    f.write_str(name)?;
                    first = false;
                }
                Ok(())
            }
            Self::Orcpt { addr_type, addr } => write!(f, "ORCPT={addr_type};{}", addr.as_str()),
            Self::Unknown {
                keyword,
                value: None,
            } => f.write_str(keyword),
            Self::Unknown {
                keyword,
                value: Some(v),
            } => write!(f, "{keyword}={v}"),
        }
    }
}

/// The parameters of a MAIL or RCPT command, checked, still in their wire form.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Parameters<'a>(&'a str);

impl fmt::Debug for Parameters<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Parameters<'a> {
    /// No parameters.
    pub const EMPTY: Parameters<'static> = Parameters("");

    /// Checks `esmtp-param *(SP esmtp-param)` and every known parameter's value.
    /// Keywords are case-insensitive; a keyword given twice is a syntax error (RFC 5321 4.1.1.11 leaves
    /// it undefined, and two different SIZE values must not both be believed).
    pub fn parse(s: &'a str) -> Result<Self, ParseError> {
        let s = trim_spaces(s);
        let mut seen = 0u16;
        let mut rest = s;
        while !rest.is_empty() {
            let (keyword, value, tail) = split_parameter(rest)?;
            rest = tail;
            let p = parameter(keyword, value)?;
            let bit = match p {
                Parameter::Size(_) => 1,
                Parameter::Body(_) => 2,
                Parameter::SmtpUtf8 => 4,
                Parameter::Auth(_) => 8,
                Parameter::Ret(_) => 16,
                Parameter::EnvId(_) => 32,
                Parameter::RequireTls => 64,
                Parameter::Notify(_) => 128,
                Parameter::Orcpt { .. } => 256,
                Parameter::Unknown { .. } => 0,
            };
            if seen & bit != 0 {
                return Err(ParseError::InvalidParameter("duplicate parameter"));
            }
            seen |= bit;
        }
        Ok(Self(s))
    }

    /// Parameters that `command`'s fast path already checked as [`parse`](Self::parse) would
    /// (its proptest compares the two).
    pub(crate) const fn checked(s: &'a str) -> Self {
        Self(s)
    }

    /// The parameters, decoded one by one.
    pub fn iter(&self) -> impl Iterator<Item = Parameter<'a>> + 'a {
        // Every parameter was checked by `parse`, so the fallbacks are never taken.
        let mut rest = self.0;
        core::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let Ok((keyword, value, tail)) = split_parameter(rest) else {
                rest = "";
                return None;
            };
            rest = tail;
            Some(parameter(keyword, value).unwrap_or(Parameter::Unknown { keyword, value }))
        })
    }

    /// The parameters as sent.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether every octet of `bytes` passes `test`.
///
/// Unlike `Iterator::all` it does not stop at the first failure: with no early exit the loop
/// becomes SIMD compares over 16 octets at a time, faster on the short valid strings that are
/// the common case.
#[inline]
fn all_bytes(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & test(b))
}

/// `s` without leading and trailing spaces; a byte loop, cheaper than the generic
/// `trim_matches` on strings this short.
fn trim_spaces(s: &str) -> &str {
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// `s` split at the first `sep`, which is dropped; `s` and "" when there is none.
fn split_at_byte(s: &str, sep: u8) -> (&str, Option<&str>) {
    match s.bytes().position(|b| b == sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `esmtp-keyword` octets (ALPHA / DIGIT / "-") as a table: one load per octet.
const KEYWORD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = (c.is_ascii_alphanumeric() || c == b'-') as u8;
        b += 1;
    }
    t
};

/// `esmtp-param = esmtp-keyword ["=" esmtp-value]` (RFC 5321 4.1.2) at the start of `s`:
/// the keyword, the value, and what follows the spaces after them.
///
/// One pass over the octets, which both checks them and finds where the parameter ends:
/// parameters are a few octets long, too short for a separate split to pay.
fn split_parameter(s: &str) -> Result<(&str, Option<&str>, &str), ParseError> {
    let bytes = s.as_bytes();
    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    let kw_len = bytes
        .iter()
        .position(|&b| KEYWORD[usize::from(b)] == 0)
        .unwrap_or(bytes.len());
    if !bytes.first().is_some_and(u8::is_ascii_alphanumeric) {
        return Err(ParseError::Syntax("invalid parameter keyword"));
    }
    let keyword = &s[..kw_len];
    let (value, end) = match bytes.get(kw_len) {
        None | Some(b' ') => (None, kw_len),
        Some(b'=') => {
            // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 3.3)
            let start = kw_len + 1;
            let len = bytes[start..]
                .iter()
                .position(|&b| b <= b' ' || b == b'=' || b == 127)
                .unwrap_or(bytes.len() - start);
            let end = start + len;
            if len == 0 || !matches!(bytes.get(end), None | Some(b' ')) {
                return Err(ParseError::Syntax("invalid parameter value"));
            }
            (Some(&s[start..end]), end)
        }
        Some(_) => return Err(ParseError::Syntax("invalid parameter keyword")),
    };
    Ok((keyword, value, trim_spaces(&s[end..])))
}

/// A parameter's keyword and value, checked by [`split_parameter`], decoded.
#[inline]
fn parameter<'a>(keyword: &'a str, value: Option<&'a str>) -> Result<Parameter<'a>, ParseError> {
    let is = |k: &str| keyword.eq_ignore_ascii_case(k);
    let need = |what| value.ok_or(ParseError::InvalidParameter(what));
    let no_value = |p: Parameter<'static>, what| match value {
        None => Ok(p),
        Some(_) => Err(ParseError::InvalidParameter(what)),
    };
    Ok(if is("SIZE") {
        let v = need("SIZE needs a value")?;
        // size-value = 1*20DIGIT (RFC 1870 4)
        if v.len() > 20 || !all_bytes(v.as_bytes(), |b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidParameter("SIZE value"));
        }
        // More than u64 can hold is believed as "too big", not refused as a syntax error.
        let size = v.bytes().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        Parameter::Size(size.unwrap_or(u64::MAX))
    } else if is("BODY") {
        let v = need("BODY needs a value")?;
        Parameter::Body(if v.eq_ignore_ascii_case("7BIT") {
            BodyType::SevenBit
        } else if v.eq_ignore_ascii_case("8BITMIME") {
            BodyType::EightBitMime
        } else if v.eq_ignore_ascii_case("BINARYMIME") {
            BodyType::BinaryMime
        } else {
            return Err(ParseError::InvalidParameter("BODY value"));
        })
    } else if is("SMTPUTF8") {
        no_value(Parameter::SmtpUtf8, "SMTPUTF8 takes no value")?
    } else if is("REQUIRETLS") {
        no_value(Parameter::RequireTls, "REQUIRETLS takes no value")?
    } else if is("AUTH") {
        let v = need("AUTH needs a value")?;
        if v == "<>" {
            Parameter::Auth(None)
        } else {
            Parameter::Auth(Some(XText::parse(v)?))
        }
    } else if is("RET") {
        let v = need("RET needs a value")?;
        Parameter::Ret(if v.eq_ignore_ascii_case("FULL") {
            Ret::Full
        } else if v.eq_ignore_ascii_case("HDRS") {
            Ret::Hdrs
        } else {
            return Err(ParseError::InvalidParameter("RET value"));
        })
    } else if is("ENVID") {
        let v = need("ENVID needs a value")?;
        // RFC 3461 4.4: at most 100 characters.
        if v.len() > 100 {
            return Err(ParseError::InvalidParameter("ENVID too long"));
        }
        Parameter::EnvId(XText::parse(v)?)
    } else if is("NOTIFY") {
        Parameter::Notify(notify(need("NOTIFY needs a value")?)?)
    } else if is("ORCPT") {
        let v = need("ORCPT needs a value")?;
        let (addr_type, Some(addr)) = split_at_byte(v, b';') else {
            return Err(ParseError::InvalidParameter("ORCPT needs addr-type;addr"));
        };
        if addr_type.is_empty()
            || !all_bytes(addr_type.as_bytes(), |b| {
                b.is_ascii_alphanumeric() || b == b'-'
            })
        {
            return Err(ParseError::InvalidParameter("ORCPT addr-type"));
        }
        // RFC 3461 4.2: at most 500 characters.
        if v.len() > 500 {
            return Err(ParseError::InvalidParameter("ORCPT too long"));
        }
        Parameter::Orcpt {
            addr_type,
            addr: XText::parse(addr)?,
        }
    } else {
        Parameter::Unknown { keyword, value }
    })
}

/// `"NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )` (RFC 3461 4.1).
fn notify(v: &str) -> Result<Notify, ParseError> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::NEVER);
    }
    let mut n = Notify::NEVER;
    let mut rest = Some(v);
    while let Some(list) = rest {
        let (item, tail) = split_at_byte(list, b',');
        rest = tail;
        let flag = if item.eq_ignore_ascii_case("SUCCESS") {
            &mut n.success
        } else if item.eq_ignore_ascii_case("FAILURE") {
            &mut n.failure
        } else if item.eq_ignore_ascii_case("DELAY") {
            &mut n.delay
        } else {
            return Err(ParseError::InvalidParameter("NOTIFY value"));
        };
        if *flag {
            return Err(ParseError::InvalidParameter("NOTIFY value repeated"));
        }
        *flag = true;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One whole parameter, split and decoded.
    fn one(word: &str) -> Result<Parameter<'_>, ParseError> {
        let (keyword, value, rest) = split_parameter(word)?;
        assert_eq!(rest, "", "{word}");
        parameter(keyword, value)
    }

    #[test]
    fn known_answers() {
        let rows: &[(&str, Parameter<'_>)] = &[
            ("SIZE=0", Parameter::Size(0)),
            ("size=12345", Parameter::Size(12345)),
            ("BODY=7bit", Parameter::Body(BodyType::SevenBit)),
            ("BODY=BINARYMIME", Parameter::Body(BodyType::BinaryMime)),
            ("SMTPUTF8", Parameter::SmtpUtf8),
            ("AUTH=<>", Parameter::Auth(None)),
            (
                "AUTH=e+2Bf@x.org",
                Parameter::Auth(Some(XText("e+2Bf@x.org"))),
            ),
            ("RET=HDRS", Parameter::Ret(Ret::Hdrs)),
            ("ENVID=QQ314159", Parameter::EnvId(XText("QQ314159"))),
            ("REQUIRETLS", Parameter::RequireTls),
            ("NOTIFY=NEVER", Parameter::Notify(Notify::NEVER)),
            (
                "NOTIFY=SUCCESS,DELAY",
                Parameter::Notify(Notify {
                    success: true,
                    failure: false,
                    delay: true,
                }),
            ),
            (
                "ORCPT=rfc822;a+40b@x.org",
                Parameter::Orcpt {
                    addr_type: "rfc822",
                    addr: XText("a+40b@x.org"),
                },
            ),
            (
                "X-FOO=bar",
                Parameter::Unknown {
                    keyword: "X-FOO",
                    value: Some("bar"),
                },
            ),
            (
                "XBAZ",
                Parameter::Unknown {
                    keyword: "XBAZ",
                    value: None,
                },
            ),
        ];
        for (input, want) in rows {
            assert_eq!(one(input).unwrap(), *want, "{input}");
            let encoded = want.to_string();
            assert_eq!(one(&encoded).unwrap(), *want, "{encoded}");
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "SIZE",
            "SIZE=x",
            "SIZE=123456789012345678901",
            "BODY=9BIT",
            "SMTPUTF8=yes",
            "RET=ALL",
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,SUCCESS",
            "ORCPT=rfc822",
            "ENVID=a=b",
            "-X",
            "X=",
            "X=a\u{1}",
        ] {
            assert!(one(bad).is_err(), "{bad}");
        }
        assert!(Parameters::parse("SIZE=1 SIZE=2").is_err());
        assert!(Parameters::parse("X-A=1 X-A=2").is_ok());
    }

    #[test]
    fn xtext_decode() {
        assert_eq!(&*XText::parse("a+2Bb+3D").unwrap().decode(), b"a+b=");
        assert!(XText::parse("a+2b").is_err());
        assert!(XText::parse("a+2").is_err());
    }

    #[test]
    fn capabilities() {
        for line in [
            "PIPELINING",
            "SIZE 1000",
            "AUTH PLAIN LOGIN",
            "X-THING a b",
            "SMTPUTF8",
        ] {
            assert_eq!(Capability::parse(line).to_string(), line);
        }
    }
}
