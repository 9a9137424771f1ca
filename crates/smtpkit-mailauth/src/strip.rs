//! RFC 8601 5: `Authentication-Results` fields that claim to be ours and arrived with the
//! message are forgeries (or stale), and are removed before anyone trusts them.

use std::borrow::Cow;

/// `header` (a header block of CRLF lines) without the `Authentication-Results` fields whose
/// authserv-id is `authserv_id` (compared without regard to case). Borrowed when nothing goes.
#[must_use]
pub fn remove_own_results<'a>(header: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let fields = Fields { rest: header };
    let mut kept: Option<Vec<u8>> = None;
    let mut offset = 0;
    for field in fields {
        let own = is_own_result(field, authserv_id);
        match (&mut kept, own) {
            (None, true) => {
                let mut v = Vec::with_capacity(header.len());
                v.extend_from_slice(&header[..offset]);
                kept = Some(v);
            }
            (Some(v), false) => v.extend_from_slice(field),
            _ => {}
        }
        offset += field.len();
    }
    match kept {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(header),
    }
}

/// A header block's fields, each with its folded continuation lines and line ending; the empty
/// line that ends the block comes out as a field of its own.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match memchr::memchr(b'\n', &self.rest[end..]) {
                Some(at) => end += at + 1,
                None => {
                    end = self.rest.len();
                    break;
                }
            }
            // The empty line is never folded into the field before it.
            let line_was_empty =
                end <= 2 && self.rest[..end].iter().all(|b| matches!(b, b'\r' | b'\n'));
            if line_was_empty || !matches!(self.rest.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(field)
    }
}

fn is_own_result(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = memchr::memchr(b':', field) else {
        return false;
    };
    let name = field[..colon].trim_ascii_end();
    if !name.eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    authserv_id_of(&field[colon + 1..])
        .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.as_bytes()))
}

/// The authserv-id (RFC 8601 2.2: `authres-header-field = "Authentication-Results:"
/// authserv-id [ CFWS authres-version ] ...`): the first token after comments and folding
/// white space.
fn authserv_id_of(value: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut depth = 0usize;
    while i < value.len() {
        match value[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let start = i.min(value.len());
    let len = value[start..]
        .iter()
        .position(|b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
        .unwrap_or(value.len() - start);
    (len > 0).then(|| &value[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_results_go() {
        let header = b"Authentication-Results: MX.test; spf=pass\r\n\tsmtp.mailfrom=a@b.test\r\n\
Received: from x\r\n\
Authentication-Results: (comment) mx.test 1; none\r\n\
Authentication-Results: other.test; dkim=pass\r\n\
authentication-results : mx.test;dmarc=pass\r\n\
Subject: Authentication-Results: mx.test;\r\n\
\r\n";
        let out = remove_own_results(header, "mx.test");
        assert_eq!(
            &*out,
            &b"Received: from x\r\nAuthentication-Results: other.test; dkim=pass\r\nSubject: Authentication-Results: mx.test;\r\n\r\n"[..]
        );
        // A longer name that starts with ours is somebody else's.
        let other = b"Authentication-Results: mx.test.evil; none\r\n\r\n";
        assert!(matches!(
            remove_own_results(other, "mx.test"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_empty_line_is_never_folded() {
        let header =
            b"Authentication-Results: mx.test; none\r\n\r\n body that starts with a space\r\n";
        assert_eq!(
            &*remove_own_results(header, "mx.test"),
            &b"\r\n body that starts with a space\r\n"[..]
        );
    }
}
