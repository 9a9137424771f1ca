//! The text log's line around its fields: exactly `tracing_subscriber`'s default (`Full`)
//! format, `2026-12-02T11:38:53.123456Z  INFO smtp{id=...}: smtpd::receiver: fields`, written
//! with plain string copies. The default paints every part through `nu_ansi_term` and
//! `write!` even when colours are off, and formats the whole date for every line; that was a
//! third of the cost of the message line. With colours on (a terminal) the default does it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime as DefaultTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The text log's event format (`event_format`); see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct LineFormat {
    timestamps: bool,
    colours: Format<Full, DefaultTime>,
}

impl LineFormat {
    /// Lines stamped with the time, as the default's.
    #[must_use]
    pub fn new() -> Self {
        Self {
            timestamps: true,
            colours: Format::default(),
        }
    }

    /// Lines without the time (the default's `without_time`).
    #[must_use]
    pub fn without_time() -> Self {
        Self {
            timestamps: false,
            colours: Format::default(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return if self.timestamps {
                self.colours.format_event(ctx, writer, event)
            } else {
                self.colours
                    .clone()
                    .without_time()
                    .format_event(ctx, writer, event)
            };
        }
        let meta = event.metadata();
        if self.timestamps {
            if LineTime.format_time(&mut writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(level(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(&fields.fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The level as the default pads it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// The default's timestamp (`2026-12-02T11:38:53.123456Z`, UTC, microseconds), with the date
/// and time of day worked out once per second per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineTime;

thread_local! {
    /// The second last formatted, and its text up to the fraction (`2026-12-02T11:38:53.`).
    static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // Before 1970: the default's own arithmetic.
            return DefaultTime.format_time(w);
        };
        let secs = since.as_secs();
        let (cached, mut prefix) = SECOND.get();
        if cached != secs {
            match date_and_time(secs) {
                Some(text) => prefix = text,
                // Past year 9999: the default's own formatting.
                None => return DefaultTime.format_time(w),
            }
            SECOND.set((secs, prefix));
        }
        let mut text = [0u8; 27];
        text[..20].copy_from_slice(&prefix);
        digits(&mut text[20..26], since.subsec_micros());
        text[26] = b'Z';
        // Every octet is an ASCII digit or one of `-T:.Z`.
        w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` after the epoch (UTC), for years up to 9999.
fn date_and_time(secs: u64) -> Option<[u8; 20]> {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.";
    digits(&mut text[0..4], year as u32);
    digits(&mut text[5..7], month);
    digits(&mut text[8..10], day);
    digits(&mut text[11..13], (of_day / 3600) as u32);
    digits(&mut text[14..16], (of_day / 60 % 60) as u32);
    digits(&mut text[17..19], (of_day % 60) as u32);
    Some(text)
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `value` in decimal, zero-padded to fill `out` (higher digits are dropped).
fn digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_fields::Lines;
    use tracing::{debug, error, info, info_span, trace, warn};

    fn events() {
        info!(outside = "no span", "starting");
        let span = info_span!("smtp", id = %"s1", peer = %"192.0.2.1:25");
        let _entered = span.enter();
        info!(session = %"abc", from = "<a@example.org>", size = 12u64, "message");
        let inner = info_span!("empty");
        let _inner = inner.enter();
        warn!(error = "disk full", "failed");
        error!("bad");
        debug!(n = 1, "details");
        trace!("fine");
    }

    fn render(ours: bool, ansi: bool) -> String {
        let lines = Lines::default();
        let out = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_max_level(Level::TRACE)
            .with_ansi(ansi)
            .fmt_fields(crate::log_fields::LineFields);
        if ours {
            let subscriber = builder.event_format(LineFormat::without_time()).finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = builder.without_time().finish();
            tracing::subscriber::with_default(subscriber, events);
        }
        lines.text()
    }

    #[test]
    fn lines_are_those_of_the_default_format() {
        for ansi in [false, true] {
            let ours = render(true, ansi);
            assert_eq!(ours, render(false, ansi), "ansi {ansi}");
            assert_eq!(ours.lines().count(), 6, "{ours}");
        }
        let plain = render(true, false);
        assert!(
            plain.contains(
                " WARN smtp{id=s1 peer=192.0.2.1:25}:empty: smtpd::log_line::tests: failed error=\"disk full\"\n"
            ),
            "{plain}"
        );
        assert!(
            plain.starts_with(" INFO smtpd::log_line::tests: starting outside=\"no span\"\n"),
            "{plain}"
        );
    }

    #[test]
    fn dates_are_those_of_the_default_timer() {
        let cases = [
            (0, "1970-01-01T00:00:00."),
            (951_782_399, "2000-02-28T23:59:59."),
            (951_868_800, "2000-03-01T00:00:00."),
            (1_796_211_533, "2026-12-02T11:38:53."),
            (4_107_542_400, "2100-03-01T00:00:00."),
            (253_402_300_799, "9999-12-31T23:59:59."),
        ];
        for (secs, text) in cases {
            let got = date_and_time(secs).expect("within 9999");
            assert_eq!(std::str::from_utf8(&got).unwrap(), text, "{secs}");
        }
        assert!(date_and_time(253_402_300_800).is_none());
    }

    fn stamp(timer: impl FormatTime) -> String {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    #[test]
    fn now_reads_as_the_default_reads_it() {
        // The two clocks are read apart: compare to the second, retrying across a boundary.
        for _ in 0..100 {
            let ours = stamp(LineTime);
            let theirs = stamp(DefaultTime);
            let again = stamp(LineTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            if ours[..19] == again[..19] && ours[..19] == theirs[..19] {
                assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
                return;
            }
        }
        panic!("the clock never held still for a second");
    }
}
