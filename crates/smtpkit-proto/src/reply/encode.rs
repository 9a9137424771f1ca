//! Reply encoding, digit by digit into a caller's buffer: no `format!`, no allocation once
//! the buffer has capacity.

use super::{EnhancedCode, Reply, ReplyCode};

impl Reply<'_> {
    /// Appends the reply to `out`, with the enhanced code on every line when `enhanced` is on
    /// (RFC 2034 3). A reply without an enhanced code of its own gets `x.0.0` then.
    pub fn encode(&self, enhanced: bool, out: &mut Vec<u8>) {
        let code = if enhanced {
            self.enhanced
                .or_else(|| EnhancedCode::default_for(self.code))
        } else {
            None
        };
        write_reply(out, self.code, code, &self.text);
    }
}

/// Writes `code [enhanced] text` as one or more lines; `\n` in `text` separates lines.
pub(crate) fn write_reply(
    out: &mut Vec<u8>,
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    text: &str,
) {
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        write_line(out, code, enhanced, line, last);
    }
}

/// Writes one reply line; `last` picks the separator (`' '` ends the reply, `'-'` continues).
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    line: &str,
    last: bool,
) {
    out.extend_from_slice(&code.digits());
    let sep = if last { b' ' } else { b'-' };
    match enhanced {
        Some(e) => {
            out.push(sep);
            write_enhanced(out, e);
            if !line.is_empty() {
                out.push(b' ');
                out.extend_from_slice(line.as_bytes());
            }
        }
        // RFC 4954 4: `continue-req = "334" SP [base64] CRLF` keeps the space even when empty.
        None if line.is_empty() && last && code.get() != 334 => {}
        None => {
            out.push(sep);
            out.extend_from_slice(line.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn write_enhanced(out: &mut Vec<u8>, e: EnhancedCode) {
    out.push(b'0' + e.class());
    out.push(b'.');
    write_u64(out, u64::from(e.subject()));
    out.push(b'.');
    write_u64(out, u64::from(e.detail()));
}

/// Appends the decimal digits of `n`.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(code: u16, e: Option<EnhancedCode>, text: &str, on: bool) -> String {
        let mut r = Reply::new(ReplyCode::new(code).unwrap(), text).unwrap();
        if let Some(e) = e {
            r = r.with_enhanced(e);
        }
        let mut out = Vec::new();
        r.encode(on, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_answers() {
        let e = EnhancedCode::new(5, 1, 1);
        let rows: &[(u16, Option<EnhancedCode>, &str, bool, &str)] = &[
            (250, None, "OK", false, "250 OK\r\n"),
            (250, None, "OK", true, "250 2.0.0 OK\r\n"),
            (550, e, "No such user", true, "550 5.1.1 No such user\r\n"),
            (550, e, "No such user", false, "550 No such user\r\n"),
            (250, None, "a\nb\nc", false, "250-a\r\n250-b\r\n250 c\r\n"),
            (451, None, "x\ny", true, "451-4.0.0 x\r\n451 4.0.0 y\r\n"),
            (354, None, "go", true, "354 go\r\n"),
            (250, None, "", false, "250\r\n"),
            (334, None, "", false, "334 \r\n"),
            (250, None, "\n", false, "250-\r\n250\r\n"),
        ];
        for (code, e, text, on, want) in rows {
            assert_eq!(enc(*code, *e, text, *on), *want, "{code} {text:?}");
        }
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 999, 1_048_576, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
