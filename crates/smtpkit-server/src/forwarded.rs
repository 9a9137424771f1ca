//! [`Forwarded`]: what a trusted front end said about its client with XCLIENT or XFORWARD
//! (Postfix), as [`SessionInfo`](crate::SessionInfo) carries it.

use std::net::IpAddr;

use smtpkit_proto::command::front_end::{Attribute, AttributeValue, Attributes, parse_addr};

use crate::rdns::ReverseName;

/// The attributes of XCLIENT or XFORWARD, decoded; `None` where the front end did not say or
/// said `[UNAVAILABLE]` (except `name`, which keeps what it said).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forwarded {
    /// NAME: the client's host name as the front end resolved it (`[UNAVAILABLE]` is
    /// [`ReverseName::NotFound`], `[TEMPUNAVAIL]` [`ReverseName::TempError`]). The front end is
    /// trusted to have confirmed it, as Postfix trusts it.
    pub name: Option<ReverseName>,
    /// ADDR: the client's address.
    pub addr: Option<IpAddr>,
    /// PORT: the client's port.
    pub port: Option<u16>,
    /// PROTO: `SMTP` or `ESMTP`.
    pub proto: Option<String>,
    /// HELO: the name the client greeted the front end with.
    pub helo: Option<String>,
    /// LOGIN (XCLIENT): the user the client authenticated as with the front end.
    pub login: Option<String>,
    /// DESTADDR (XCLIENT): the address the client connected to.
    pub dest_addr: Option<IpAddr>,
    /// DESTPORT (XCLIENT): the port the client connected to.
    pub dest_port: Option<u16>,
    /// IDENT (XFORWARD): the message's queue id on the front end.
    pub ident: Option<String>,
    /// SOURCE (XFORWARD): `LOCAL` or `REMOTE`.
    pub source: Option<String>,
}

impl Forwarded {
    /// Adds `attrs` (checked by the core) to what is known; later values win.
    pub fn merge(&mut self, attrs: &Attributes<'_>) {
        for (attr, value) in attrs.iter() {
            if attr == Attribute::Name {
                self.name = Some(match value {
                    AttributeValue::Value(v) => ReverseName::Confirmed(v.to_ascii_lowercase()),
                    AttributeValue::Unavailable => ReverseName::NotFound,
                    AttributeValue::TempUnavailable => ReverseName::TempError,
                });
                continue;
            }
            let AttributeValue::Value(v) = value else {
                continue;
            };
            match attr {
                Attribute::Addr => self.addr = parse_addr(&v),
                Attribute::Port => self.port = v.parse().ok(),
                Attribute::Proto => self.proto = Some(v.to_ascii_uppercase()),
                Attribute::Helo => self.helo = Some(v),
                Attribute::Login => self.login = Some(v),
                Attribute::DestAddr => self.dest_addr = parse_addr(&v),
                Attribute::DestPort => self.dest_port = v.parse().ok(),
                Attribute::Ident => self.ident = Some(v),
                Attribute::Source => self.source = Some(v.to_ascii_uppercase()),
                Attribute::Name => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use smtpkit_proto::command::front_end::FrontEnd;

    use super::*;

    #[test]
    fn attributes_merge_with_later_values_winning() {
        let mut f = Forwarded::default();
        let first = Attributes::parse(
            "NAME=Mail.Example.ORG ADDR=IPV6:2001:db8::1 PORT=25 HELO=h+2Bx",
            FrontEnd::Xclient,
        )
        .unwrap();
        f.merge(&first);
        let second = Attributes::parse(
            "NAME=[TEMPUNAVAIL] PORT=[UNAVAILABLE] LOGIN=u",
            FrontEnd::Xclient,
        )
        .unwrap();
        f.merge(&second);
        assert_eq!(f.name, Some(ReverseName::TempError));
        assert_eq!(f.addr, "2001:db8::1".parse().ok());
        assert_eq!(f.port, Some(25));
        assert_eq!(f.helo.as_deref(), Some("h+x"));
        assert_eq!(f.login.as_deref(), Some("u"));
        let mut g = Forwarded::default();
        g.merge(&first);
        assert_eq!(
            g.name,
            Some(ReverseName::Confirmed("mail.example.org".into()))
        );
    }
}
