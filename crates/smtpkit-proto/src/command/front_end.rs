//! The attributes of Postfix's XCLIENT and XFORWARD commands, with which a trusted front end
//! (a proxy, a content filter, webmail) tells the server about the client it serves
//! (<https://www.postfix.org/XCLIENT_README.html>, <https://www.postfix.org/XFORWARD_README.html>).
//!
//! ```
//! use smtpkit_proto::command::front_end::{Attribute, AttributeValue, Attributes, FrontEnd};
//! let attrs = Attributes::parse("NAME=mail.example.org ADDR=192.0.2.1 LOGIN=a+2Bb", FrontEnd::Xclient).unwrap();
//! let all: Vec<_> = attrs.iter().collect();
//! assert_eq!(all[2], (Attribute::Login, AttributeValue::Value("a+b".into())));
//! assert!(Attributes::parse("IDENT=x", FrontEnd::Xclient).is_err());
//! ```

use std::net::IpAddr;

use crate::address::Domain;
use crate::error::ParseError;

/// Which command the attributes came with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrontEnd {
    /// XCLIENT: the session's client facts are replaced, and the session starts over.
    Xclient,
    /// XFORWARD: facts about the original client for the next transaction.
    Xforward,
}

impl FrontEnd {
    /// The command verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xclient => "XCLIENT",
            Self::Xforward => "XFORWARD",
        }
    }

    /// The attributes the command accepts, as its EHLO keyword lists them.
    pub fn attributes(self) -> &'static [Attribute] {
        use Attribute as A;
        match self {
            Self::Xclient => &[
                A::Name,
                A::Addr,
                A::Port,
                A::Proto,
                A::Helo,
                A::Login,
                A::DestAddr,
                A::DestPort,
            ],
            Self::Xforward => &[
                A::Name,
                A::Addr,
                A::Port,
                A::Proto,
                A::Helo,
                A::Ident,
                A::Source,
            ],
        }
    }

    /// The EHLO keyword line: the verb and its attribute names.
    pub fn ehlo_line(self) -> String {
        let mut line = self.as_str().to_owned();
        for a in self.attributes() {
            line.push(' ');
            line.push_str(a.as_str());
        }
        line
    }
}

/// An attribute name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// The client's host name (XCLIENT: as the front end verified it).
    Name,
    /// The client's address: IPv4, or `IPV6:` and an IPv6 address.
    Addr,
    /// The client's TCP port.
    Port,
    /// `SMTP` or `ESMTP`: how the client greeted.
    Proto,
    /// The name the client gave in HELO or EHLO.
    Helo,
    /// XCLIENT: the user name the client authenticated as with the front end.
    Login,
    /// XCLIENT: the address the client connected to.
    DestAddr,
    /// XCLIENT: the port the client connected to.
    DestPort,
    /// XFORWARD: the local queue id the message had on the front end.
    Ident,
    /// XFORWARD: `LOCAL` or `REMOTE`, where the message came from.
    Source,
}

impl Attribute {
    /// The attribute's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "NAME",
            Self::Addr => "ADDR",
            Self::Port => "PORT",
            Self::Proto => "PROTO",
            Self::Helo => "HELO",
            Self::Login => "LOGIN",
            Self::DestAddr => "DESTADDR",
            Self::DestPort => "DESTPORT",
            Self::Ident => "IDENT",
            Self::Source => "SOURCE",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Name,
            Self::Addr,
            Self::Port,
            Self::Proto,
            Self::Helo,
            Self::Login,
            Self::DestAddr,
            Self::DestPort,
            Self::Ident,
            Self::Source,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }
}

/// An attribute's value, xtext-decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    /// The value.
    Value(String),
    /// `[UNAVAILABLE]`: the front end does not know it.
    Unavailable,
    /// `[TEMPUNAVAIL]` (NAME only): a lookup failed temporarily.
    TempUnavailable,
}

/// The attributes of one XCLIENT or XFORWARD command, checked when parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes<'a> {
    text: &'a str,
}

/// Longest decoded value: a host name's limit (RFC 1035), and more than any user name needs.
const MAX_VALUE: usize = 255;

impl<'a> Attributes<'a> {
    /// Checks `text` (`NAME=value` pairs separated by spaces, at least one) as the attributes
    /// of `command`: every name must be one of its [`attributes`](FrontEnd::attributes), every
    /// value valid xtext (RFC 3461 4) of the right form.
    ///
    /// # Errors
    ///
    /// [`ParseError::InvalidParameter`] naming what is wrong (the server answers
    /// `501 5.5.4`).
    pub fn parse(text: &'a str, command: FrontEnd) -> Result<Self, ParseError> {
        let mut any = false;
        for pair in text.split(' ').filter(|p| !p.is_empty()) {
            any = true;
            let (name, value) = pair
                .split_once('=')
                .ok_or(ParseError::InvalidParameter("Bad attribute syntax"))?;
            let attr = Attribute::from_name(name)
                .filter(|a| command.attributes().contains(a))
                .ok_or(ParseError::InvalidParameter("Bad attribute name"))?;
            check(attr, &decode(value)?)?;
        }
        if any {
            Ok(Self { text })
        } else {
            Err(ParseError::InvalidParameter("Attributes required"))
        }
    }

    /// The attributes in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (Attribute, AttributeValue)> + 'a {
        self.text
            .split(' ')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                Some((Attribute::from_name(name)?, decode(value).ok()?))
            })
    }

    /// The text as sent.
    pub fn as_str(&self) -> &'a str {
        self.text
    }
}

/// Decodes xtext (`+HH` for `+`, `=`, and octets outside 33..=126) into the value; the
/// decoded value must be printable ASCII, as every attribute here is.
fn decode(text: &str) -> Result<AttributeValue, ParseError> {
    if text.eq_ignore_ascii_case("[UNAVAILABLE]") {
        return Ok(AttributeValue::Unavailable);
    }
    if text.eq_ignore_ascii_case("[TEMPUNAVAIL]") {
        return Ok(AttributeValue::TempUnavailable);
    }
    let bad = ParseError::InvalidParameter("Bad attribute value");
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let c = match b {
            b'+' => {
                let digit = |b: Option<u8>| {
                    b.and_then(|b| char::from(b).to_digit(16))
                        .and_then(|d| u8::try_from(d).ok())
                        .ok_or(bad)
                };
                digit(bytes.next())? << 4 | digit(bytes.next())?
            }
            b'=' => return Err(bad),
            b => b,
        };
        if !c.is_ascii_graphic() && c != b' ' {
            return Err(bad);
        }
        out.push(char::from(c));
    }
    if out.is_empty() || out.len() > MAX_VALUE {
        return Err(bad);
    }
    Ok(AttributeValue::Value(out))
}

/// Whether `value` has the form `attr` needs.
fn check(attr: Attribute, value: &AttributeValue) -> Result<(), ParseError> {
    let bad = ParseError::InvalidParameter("Bad attribute value");
    let v = match value {
        AttributeValue::TempUnavailable if attr == Attribute::Name => return Ok(()),
        AttributeValue::TempUnavailable => return Err(bad),
        AttributeValue::Unavailable => return Ok(()),
        AttributeValue::Value(v) => v.as_str(),
    };
    let ok = match attr {
        Attribute::Name => Domain::parse(v).is_ok(),
        Attribute::Addr | Attribute::DestAddr => parse_addr(v).is_some(),
        Attribute::Port | Attribute::DestPort => v.parse::<u16>().is_ok(),
        Attribute::Proto => v.eq_ignore_ascii_case("SMTP") || v.eq_ignore_ascii_case("ESMTP"),
        Attribute::Source => v.eq_ignore_ascii_case("LOCAL") || v.eq_ignore_ascii_case("REMOTE"),
        Attribute::Helo | Attribute::Login | Attribute::Ident => !v.contains(' '),
    };
    if ok { Ok(()) } else { Err(bad) }
}

/// An ADDR or DESTADDR value: IPv4, or `IPV6:` (any case) and an IPv6 address.
pub fn parse_addr(value: &str) -> Option<IpAddr> {
    match value.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("IPV6:") => {
            value[5..].parse().ok().map(IpAddr::V6)
        }
        _ => value.parse().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_per_attribute() {
        let ok = [
            "NAME=mx.example.org ADDR=192.0.2.1 PORT=4242 PROTO=ESMTP HELO=[192.0.2.1]",
            "ADDR=IPV6:2001:db8::1 DESTADDR=ipv6:::1 DESTPORT=25 LOGIN=user+40example.org",
            "NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE]",
        ];
        for text in ok {
            assert!(Attributes::parse(text, FrontEnd::Xclient).is_ok(), "{text}");
        }
        let bad = [
            "",
            "ADDR",
            "ADDR=2001:db8::1",
            "ADDR=999.0.0.1",
            "PORT=65536",
            "PROTO=LMTP",
            "NAME=bad_name!",
            "ADDR=[TEMPUNAVAIL]",
            "HELO=a+2",
            "HELO=a+0Ab",
            "HELO=a++41",
            "HELO=a+-1",
            "IDENT=x",
            "SOURCE=LOCAL",
        ];
        for text in bad {
            assert!(
                Attributes::parse(text, FrontEnd::Xclient).is_err(),
                "{text}"
            );
        }
        assert!(Attributes::parse("IDENT=q1 SOURCE=remote", FrontEnd::Xforward).is_ok());
        assert!(Attributes::parse("LOGIN=x", FrontEnd::Xforward).is_err());
    }

    proptest::proptest! {
        /// Network input: never a panic, and what is accepted decodes whole.
        #[test]
        fn any_text_is_checked_without_panicking(text in "[ -~\u{80}-\u{10ffff}]{0,80}") {
            for command in [FrontEnd::Xclient, FrontEnd::Xforward] {
                if let Ok(attrs) = Attributes::parse(&text, command) {
                    let pairs = text.split(' ').filter(|p| !p.is_empty()).count();
                    proptest::prop_assert_eq!(attrs.iter().count(), pairs);
                }
            }
        }
    }

    #[test]
    fn values_are_decoded_in_order() {
        let attrs = Attributes::parse(
            "name=[TEMPUNAVAIL]  ADDR=IPV6:2001:db8::1 LOGIN=a+2Bb+3D",
            FrontEnd::Xclient,
        )
        .unwrap();
        let all: Vec<_> = attrs.iter().collect();
        assert_eq!(
            all,
            [
                (Attribute::Name, AttributeValue::TempUnavailable),
                (
                    Attribute::Addr,
                    AttributeValue::Value("IPV6:2001:db8::1".into())
                ),
                (Attribute::Login, AttributeValue::Value("a+b=".into())),
            ]
        );
        assert_eq!(parse_addr("IPV6:2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(
            FrontEnd::Xforward.ehlo_line(),
            "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"
        );
    }
}
