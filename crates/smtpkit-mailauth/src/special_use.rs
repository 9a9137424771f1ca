//! Names that never reach DNS (RFC 6761 6.3 `localhost.`, 6.4 `invalid.`; RFC 7686 `onion.`):
//! hickory answers them itself, and so can the TXT cache, before mail-auth builds a query.
//!
//! A sender in `.invalid` (load generators, tests) made three TXT lookups per message: SPF
//! for MAIL FROM and DMARC's tree walk (`_dmarc.<domain>.`, `_dmarc.invalid.`). hickory never
//! sent them, but each went through its resolver, cache client and error path. `.test` and
//! `.example` are special-use too, but RFC 6761 6.2 and 6.5 say resolvers must not treat them
//! differently: they are looked up.

use std::hash::{Hash, Hasher};

use mail_auth::hickory_resolver::proto::op::ResponseCode;

/// The longest name in presentation form with its final dot (RFC 1035 2.3.4: 255 octets on
/// the wire).
pub(crate) const MAX_NAME: usize = 254;

/// What hickory answers for a TXT query of `name` (absolute, with its final dot) without asking
/// a server: `NXDomain` under `invalid.` and `onion.`, no records (`NoError`) under
/// `localhost.`; `None` for every other name, and for any name hickory would not parse the
/// same way (only letters, digits, `-` and `_` in labels of 1 to 63 octets are taken here).
pub(crate) fn txt_answer(name: &str) -> Option<ResponseCode> {
    let name = name.strip_suffix('.')?;
    if name.len() >= MAX_NAME {
        return None;
    }
    let mut labels = name.split('.');
    let top = labels.next_back()?;
    let code = if top.eq_ignore_ascii_case("invalid") || top.eq_ignore_ascii_case("onion") {
        ResponseCode::NXDomain
    } else if top.eq_ignore_ascii_case("localhost") {
        ResponseCode::NoError
    } else {
        return None;
    };
    let plain = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.all(plain).then_some(code)
}

/// The name mail-auth hands a cache lookup, or `None`.
///
/// `ResolverCache::get` receives the key only as some `Q` that `Box<str>` borrows as (`str`,
/// or `Box<str>` itself), known to be hashable and nothing more; both hash as the string's
/// octets followed by `0xff` (`Hasher::write_str`). This hasher keeps exactly that shape and
/// gives up on any other, so a different hashing leaves the lookup to hickory, as before.
pub(crate) fn key_name<'a, Q: Hash + ?Sized>(
    key: &Q,
    buffer: &'a mut [u8; MAX_NAME],
) -> Option<&'a str> {
    let mut capture = Capture {
        buffer,
        len: 0,
        step: Step::Start,
    };
    key.hash(&mut capture);
    let Capture { buffer, len, step } = capture;
    if step != Step::Ended {
        return None;
    }
    std::str::from_utf8(&buffer[..len]).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Octets,
    Ended,
    Other,
}

struct Capture<'a> {
    buffer: &'a mut [u8; MAX_NAME],
    len: usize,
    step: Step,
}

impl Hasher for Capture<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.step = match self.step {
            Step::Start if bytes.len() <= self.buffer.len() => {
                self.buffer[..bytes.len()].copy_from_slice(bytes);
                self.len = bytes.len();
                Step::Octets
            }
            _ => Step::Other,
        };
    }

    fn write_u8(&mut self, byte: u8) {
        self.step = match self.step {
            Step::Octets if byte == 0xff => Step::Ended,
            _ => Step::Other,
        };
    }

    fn finish(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_onion_and_localhost_are_answered_here() {
        for name in [
            "smtp-load.invalid.",
            "_dmarc.smtp-load.invalid.",
            "_dmarc.invalid.",
            "invalid.",
            "A.B.INVALID.",
            "x.onion.",
        ] {
            assert_eq!(txt_answer(name), Some(ResponseCode::NXDomain), "{name}");
        }
        for name in ["localhost.", "mail.localhost.", "_dmarc.LocalHost."] {
            assert_eq!(txt_answer(name), Some(ResponseCode::NoError), "{name}");
        }
    }

    #[test]
    fn every_other_name_goes_to_dns() {
        let long_label = format!("{}.invalid.", "a".repeat(64));
        let long_name = format!("{}invalid.", "abcdefghi.".repeat(25));
        for name in [
            "example.org.",
            "sender.test.",
            "_dmarc.example.",
            "notinvalid.",
            "invalid.example.org.",
            "x.invalid.org.",
            // Relative: hickory would try the search list.
            "smtp-load.invalid",
            "a..invalid.",
            ".invalid.",
            "caf\u{e9}.invalid.",
            "a b.invalid.",
            long_label.as_str(),
            long_name.as_str(),
            "",
            ".",
        ] {
            assert_eq!(txt_answer(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_key_of_a_lookup_is_read_back() {
        let mut buffer = [0; MAX_NAME];
        assert_eq!(key_name("a.invalid.", &mut buffer), Some("a.invalid."));
        let boxed: Box<str> = "_dmarc.example.org.".into();
        assert_eq!(key_name(&boxed, &mut buffer), Some("_dmarc.example.org."));
        assert_eq!(key_name("", &mut buffer), Some(""));
        // Too long to be a name, or not a string at all.
        assert_eq!(key_name(&"a".repeat(MAX_NAME + 1), &mut buffer), None);
        assert_eq!(key_name(&7u32, &mut buffer), None);
        assert_eq!(key_name(&(7u32, 1u8), &mut buffer), None);
        assert_eq!(key_name(&("a", "b"), &mut buffer), None);
        assert_eq!(key_name(&[1u8, 2][..], &mut buffer), None);
    }
}
