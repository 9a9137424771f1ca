//! [`Capabilities`]: what the server's EHLO (or LHLO) reply offered, parsed once per greeting.

use crate::extension::Capability;

/// The extensions a server offered. A HELO session has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The name the server gave on the first line of its reply.
    pub domain: String,
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 1870 SIZE: `Some(0)` is offered without a fixed limit.
    pub size: Option<u64>,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 3030 CHUNKING.
    pub chunking: bool,
    /// RFC 3030 BINARYMIME.
    pub binary_mime: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// RFC 3461 DSN.
    pub dsn: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 8689 REQUIRETLS.
    pub requiretls: bool,
    /// RFC 4954 AUTH mechanisms, space separated, as sent.
    pub auth: String,
}

impl Capabilities {
    /// Parses the text of an EHLO reply: the domain line, then one keyword per line.
    pub fn parse(text: &str) -> Self {
        let mut caps = Self::default();
        caps.update(text);
        caps
    }

    /// Re-parses into `self`, keeping the strings' capacity.
    pub(crate) fn update(&mut self, text: &str) {
        let mut lines = text.split('\n');
        let domain = lines.next().unwrap_or_default();
        let domain = domain.split(' ').next().unwrap_or_default();
        let (mut d, mut auth) = (
            std::mem::take(&mut self.domain),
            std::mem::take(&mut self.auth),
        );
        d.clear();
        d.push_str(domain);
        auth.clear();
        *self = Self {
            domain: d,
            auth,
            ..Self::default()
        };
        for line in lines {
            match Capability::parse(line) {
                Capability::Pipelining => self.pipelining = true,
                Capability::Size(n) => self.size = Some(n),
                Capability::EightBitMime => self.eight_bit_mime = true,
                Capability::Chunking => self.chunking = true,
                Capability::BinaryMime => self.binary_mime = true,
                Capability::SmtpUtf8 => self.smtputf8 = true,
                Capability::EnhancedStatusCodes => self.enhanced_status_codes = true,
                Capability::Dsn => self.dsn = true,
                Capability::StartTls => self.starttls = true,
                Capability::RequireTls => self.requiretls = true,
                Capability::Auth(m) => {
                    if !self.auth.is_empty() {
                        self.auth.push(' ');
                    }
                    self.auth.push_str(m.trim());
                }
                _ => {}
            }
        }
    }

    /// Forgets everything (HELO session, or after STARTTLS until the next EHLO).
    pub(crate) fn clear(&mut self) {
        self.update("");
    }

    /// The AUTH mechanisms offered.
    pub fn auth_mechanisms(&self) -> impl Iterator<Item = &str> {
        self.auth.split(' ').filter(|m| !m.is_empty())
    }

    /// Whether `mechanism` is offered (compared case-insensitively).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth_mechanisms()
            .any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The server's SIZE limit, if it has a fixed one.
    pub fn max_size(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let c = Capabilities::parse(
            "mx.example greets you\nPIPELINING\nSIZE 1000\n8BITMIME\nAUTH PLAIN LOGIN\nAUTH=LOGIN\nSTARTTLS\nX-FOO bar\nchunking",
        );
        assert_eq!(c.domain, "mx.example");
        assert!(c.pipelining && c.eight_bit_mime && c.starttls && c.chunking);
        assert!(!c.dsn && !c.smtputf8 && !c.binary_mime && !c.requiretls);
        assert_eq!(c.max_size(), Some(1000));
        assert!(c.offers_auth("plain") && c.offers_auth("LOGIN") && !c.offers_auth("XOAUTH2"));
        let none = Capabilities::parse("mx.example");
        assert_eq!(none.size, None);
        assert_eq!(Capabilities::parse("mx\nSIZE").max_size(), None);
        assert_eq!(none.auth_mechanisms().count(), 0);
    }
}
