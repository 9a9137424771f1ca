//! How the text log writes an event's fields: exactly as `tracing_subscriber`'s default
//! (`name="value"`, Rust string escapes), but a string of plain printable ASCII, which needs no
//! escape, is copied whole instead of through `Debug` one character at a time, integers and
//! booleans are written directly, and `name=` is never painted when colours are off. The
//! message line of every mail carries a dozen such fields, and the default's formatting was
//! the larger part of the cost of logging it.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The text log's field formatter (`fmt_fields`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineFields;

impl<'a> MakeVisitor<Writer<'a>> for LineFields {
    type Visitor = LineVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> LineVisitor<'a> {
        LineVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields; see [`LineFields`].
#[derive(Debug)]
pub struct LineVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet, so no separating space.
    is_empty: bool,
    result: fmt::Result,
}

/// Whether `Debug` would print `s` as it is between its quotes.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl LineVisitor<'_> {
    /// What the default formatter does with this field, continuing this line.
    fn default_for(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // The default skips the `log.` fields of `log` records without writing anything.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

impl LineVisitor<'_> {
    /// Whether the default writes this field as `name=` and the value's `Debug`, with nothing
    /// painted: not the message, not a raw identifier, not a `log.` field, no colours.
    fn is_plain(&self, name: &str) -> bool {
        name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
            && !self.writer.has_ansi_escapes()
    }

    /// Writes the separating space and `name=`, then the value with `value`.
    fn plain(&mut self, name: &str, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let w = &mut self.writer;
        let pad = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = w
            .write_str(pad)
            .and_then(|()| w.write_str(name))
            .and_then(|()| w.write_char('='))
            .and_then(|()| value(w));
    }
}

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.is_plain(field.name()) || !needs_no_escape(value) {
            return self.default_for(field, |v| v.record_str(field, value));
        }
        self.plain(field.name(), |w| {
            w.write_char('"')?;
            w.write_str(value)?;
            w.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !self.is_plain(field.name()) {
            return self.default_for(field, |v| v.record_u64(field, value));
        }
        self.plain(field.name(), |w| w.write_str(decimal(value, &mut [0; 20])));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if !self.is_plain(field.name()) {
            return self.default_for(field, |v| v.record_i64(field, value));
        }
        self.plain(field.name(), |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            w.write_str(decimal(value.unsigned_abs(), &mut [0; 20]))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.is_plain(field.name()) {
            return self.default_for(field, |v| v.record_bool(field, value));
        }
        self.plain(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default_for(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.is_plain(field.name()) {
            return self.default_for(field, |v| v.record_debug(field, value));
        }
        // `%value` fields (session ids, addresses) come here as `Debug` wrappers of `Display`.
        self.plain(field.name(), |w| write!(w, "{value:?}"));
    }
}

/// `value` in decimal, as `Debug` and `Display` write integers, in `buffer`.
fn decimal(mut value: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buffer[at..]).unwrap_or("")
}

impl VisitOutput<fmt::Result> for LineVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LineVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Every line a subscriber in a test wrote, kept in memory: the writer of the log tests.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Lines {
    /// What was written so far, as text.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("log lines are UTF-8")
    }
}

#[cfg(test)]
impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use tracing::{info, info_span, warn};

    fn events() {
        let span = info_span!("smtp", id = %"s1", peer = %"192.0.2.1:25", n = 3);
        let _entered = span.enter();
        info!(
            session = %"abc", ehlo = "mail.example.org", from = "<a@example.org>", to = "",
            subject = "caf\u{e9} \"quoted\" back\\slash\ttab\u{7f}\u{301}x", size = 1234u64,
            ok = true, delta = -42i64, minus_one = -1i64, zero = 0u64, low = i64::MIN, high = u64::MAX,
            no = false, outcome = "stored", "message"
        );
        warn!(error = %io::Error::other("disk full"), r#type = "x y", "failed: {}", "why");
        info!(plain = "it's", "");
        let err = io::Error::other("outer");
        info!(
            error = &err as &(dyn std::error::Error + 'static),
            "with source"
        );
    }

    fn render(fields: Option<LineFields>, ansi: bool) -> String {
        let lines = Lines::default();
        let out = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(ansi)
            .without_time();
        match fields {
            Some(f) => tracing::subscriber::with_default(builder.fmt_fields(f).finish(), events),
            None => tracing::subscriber::with_default(builder.finish(), events),
        }
        lines.text()
    }

    #[test]
    fn lines_are_those_of_the_default_formatter() {
        for ansi in [false, true] {
            let ours = render(Some(LineFields), ansi);
            assert_eq!(ours, render(None, ansi), "ansi {ansi}");
            assert_eq!(ours.lines().count(), 4, "{ours}");
        }
        let plain = render(Some(LineFields), false);
        assert!(
            plain.contains(r#" ehlo="mail.example.org" from="<a@example.org>" to="" "#),
            "{plain}"
        );
        assert!(
            plain.contains(r#"subject="café \"quoted\" back\\slash\ttab\u{7f}\u{301}x""#),
            "{plain}"
        );
    }

    #[test]
    fn integers_in_decimal() {
        let mut buffer = [0; 20];
        for n in [0, 7, 10, 1234, u64::MAX] {
            assert_eq!(decimal(n, &mut buffer), n.to_string());
        }
    }

    #[test]
    fn plain_strings() {
        assert!(needs_no_escape("Hello, world! <a@b> it's ~ {}"));
        assert!(needs_no_escape(""));
        for s in [
            "\"",
            "\\",
            "\t",
            "\r",
            "\n",
            "\u{7f}",
            "\u{0}",
            "é",
            "\u{1b}[2J",
        ] {
            assert!(!needs_no_escape(s), "{s:?}");
        }
    }
}
