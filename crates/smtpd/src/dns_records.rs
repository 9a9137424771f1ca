//! The DNS records a domain publishes to receive mail at this server and to have its mail
//! trusted: what `smtpd dns-records` prints and `smtpd dns-check` looks for.
//!
//! | record  | name                          | value                                             |
//! |---------|-------------------------------|---------------------------------------------------|
//! | MX      | `domain.`                     | `10 <mx host>.`                                   |
//! | A/AAAA  | `<mx host>.`                  | the server's addresses                            |
//! | SPF     | `domain.` TXT                 | `v=spf1 ip4:<ip> ip6:<ip> -all`                   |
//! | DKIM    | `<selector>._domainkey.domain.` TXT | `v=DKIM1; k=<alg>; p=<key>`, one per key    |
//! | DMARC   | `_dmarc.domain.` TXT          | `v=DMARC1; p=quarantine; rua=mailto:postmaster@domain` |
//! | TLS-RPT | `_smtp._tls.domain.` TXT      | `v=TLSRPTv1; rua=mailto:postmaster@domain`        |
//! | MTA-STS | `_mta-sts.domain.` TXT        | `v=STSv1; id=<date and time>`                     |
//!
//! SPF lists the addresses rather than `mx`: it costs receivers no further lookups (RFC 7208
//! 4.6.4 allows ten) and stays right when a backup MX that never sends is added. DMARC starts at
//! `quarantine`, not `reject`, so a forwarder that breaks DKIM costs a Junk folder, not a bounce.
//! The MTA-STS policy starts in `testing` mode (RFC 8461 5): failures are reported through
//! TLS-RPT, not enforced, until the reports show the certificate and MX are right.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::dkim_key::Key;

/// The TTL printed on every record, in seconds: an hour, short enough to fix a mistake the same
/// day, long enough not to load the domain's nameservers.
pub const TTL: u32 = 3600;

/// The MX preference printed (RFC 5321 5.1: any number; 10 leaves room for a primary below).
pub const MX_PREFERENCE: u16 = 10;

/// Longest character-string in a TXT record (RFC 1035 3.3): longer values are split.
pub const TXT_CHUNK: usize = 255;

/// What one domain publishes.
#[derive(Debug, Clone)]
pub struct DomainRecords {
    /// The mail domain, lower case, without the trailing dot.
    pub domain: String,
    /// The host its MX points at (this server), without the trailing dot.
    pub mx_host: String,
    /// This server's addresses.
    pub addresses: Vec<IpAddr>,
    /// The DKIM keys to publish.
    pub keys: Vec<Key>,
    /// The MTA-STS policy id (RFC 8461 3.1: 1 to 32 letters and digits), changed whenever the
    /// policy changes.
    pub sts_id: String,
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What it is for: `MX`, `A`, `AAAA`, `SPF`, `DKIM`, `DMARC`, `TLS-RPT`, `MTA-STS`.
    pub purpose: &'static str,
    /// The owner name, absolute (with the trailing dot).
    pub name: String,
    /// The record type (`MX`, `A`, `AAAA`, `TXT`).
    pub rtype: &'static str,
    /// The value: for TXT the whole text, unsplit and unquoted.
    pub value: String,
}

impl Record {
    /// The value as zone-file RDATA: TXT split into quoted strings of at most [`TXT_CHUNK`]
    /// octets.
    #[must_use]
    pub fn rdata(&self) -> String {
        if self.rtype != "TXT" {
            return self.value.clone();
        }
        txt_chunks(&self.value)
            .map(|c| format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The zone-file line.
    #[must_use]
    pub fn zone_line(&self) -> String {
        format!("{} {TTL} IN {} {}", self.name, self.rtype, self.rdata())
    }
}

/// `text` in pieces of at most [`TXT_CHUNK`] octets (the values here are ASCII).
fn txt_chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(TXT_CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// An MTA-STS policy id from the time: `YYYYMMDDhhmmss` in UTC.
#[must_use]
pub fn sts_id(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub(crate) fn civil(days: u64) -> (i64, i64, i64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

impl DomainRecords {
    /// The SPF record: this server's addresses, nothing else may send.
    #[must_use]
    pub fn spf(&self) -> String {
        let mut spf = "v=spf1".to_owned();
        for ip in &self.addresses {
            let _ = match ip {
                IpAddr::V4(v4) => write!(spf, " ip4:{v4}"),
                IpAddr::V6(v6) => write!(spf, " ip6:{v6}"),
            };
        }
        if self.addresses.is_empty() {
            spf.push_str(" mx");
        }
        spf.push_str(" -all");
        spf
    }

    /// Where aggregate DMARC and TLS reports go.
    #[must_use]
    pub fn report_address(&self) -> String {
        format!("mailto:postmaster@{}", self.domain)
    }

    /// Every record, in the order of the [module table](self).
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        let d = &self.domain;
        let mut out = vec![Record {
            purpose: "MX",
            name: format!("{d}."),
            rtype: "MX",
            value: format!("{MX_PREFERENCE} {}.", self.mx_host),
        }];
        for ip in &self.addresses {
            let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
            out.push(Record {
                purpose: rtype,
                name: format!("{}.", self.mx_host),
                rtype,
                value: ip.to_string(),
            });
        }
        out.push(Record {
            purpose: "SPF",
            name: format!("{d}."),
            rtype: "TXT",
            value: self.spf(),
        });
        for key in &self.keys {
            out.push(Record {
                purpose: "DKIM",
                name: key.record_name(),
                rtype: "TXT",
                value: key.record(),
            });
        }
        let rua = self.report_address();
        out.push(Record {
            purpose: "DMARC",
            name: format!("_dmarc.{d}."),
            rtype: "TXT",
            value: format!("v=DMARC1; p=quarantine; rua={rua}"),
        });
        out.push(Record {
            purpose: "TLS-RPT",
            name: format!("_smtp._tls.{d}."),
            rtype: "TXT",
            value: format!("v=TLSRPTv1; rua={rua}"),
        });
        out.push(Record {
            purpose: "MTA-STS",
            name: format!("_mta-sts.{d}."),
            rtype: "TXT",
            value: format!("v=STSv1; id={}", self.sts_id),
        });
        out
    }

    /// The MTA-STS policy file to serve at `https://mta-sts.<domain>/.well-known/mta-sts.txt`
    /// (RFC 8461 3.2). A week's `max_age`: long enough to protect, short enough to leave
    /// `testing` within one.
    #[must_use]
    pub fn sts_policy(&self) -> String {
        format!(
            "version: STSv1\nmode: testing\nmx: {}\nmax_age: 604800\n",
            self.mx_host
        )
    }

    /// What `smtpd dns-records` prints: zone-file lines (comments start with `;`, so the block
    /// loads as it is), a blank line, the table, and the MTA-STS policy.
    #[must_use]
    pub fn render(&self) -> String {
        let records = self.records();
        let mut out = format!(
            "; DNS records for {} (mail server {}); paste into the zone.\n",
            self.domain, self.mx_host
        );
        for r in &records {
            let _ = writeln!(out, "{}", r.zone_line());
        }
        out.push('\n');
        let name_width = records.iter().map(|r| r.name.len()).max().unwrap_or(4);
        let _ = writeln!(
            out,
            "{:<8} {:<5} {:<name_width$} VALUE",
            "RECORD", "TYPE", "NAME"
        );
        for r in &records {
            let _ = writeln!(
                out,
                "{:<8} {:<5} {:<name_width$} {}",
                r.purpose, r.rtype, r.name, r.value
            );
        }
        let _ = write!(
            out,
            "\nMTA-STS: serve this file at https://mta-sts.{}/.well-known/mta-sts.txt \
             (HTTPS with a valid certificate for mta-sts.{}):\n\n{}",
            self.domain,
            self.domain,
            self.sts_policy()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn plan() -> DomainRecords {
        DomainRecords {
            domain: "example.test".to_owned(),
            mx_host: "mx.example.test".to_owned(),
            addresses: vec![
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
            keys: Vec::new(),
            sts_id: sts_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_173_261)),
        }
    }

    #[test]
    fn records_for_a_domain() {
        let lines: Vec<_> = plan().records().iter().map(Record::zone_line).collect();
        assert_eq!(
            lines,
            [
                "example.test. 3600 IN MX 10 mx.example.test.",
                "mx.example.test. 3600 IN A 192.0.2.10",
                "mx.example.test. 3600 IN AAAA 2001:db8::10",
                "example.test. 3600 IN TXT \"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all\"",
                "_dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test\"",
                "_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@example.test\"",
                "_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id=20261202010101\"",
            ]
        );
        let mut no_ip = plan();
        no_ip.addresses.clear();
        assert_eq!(no_ip.spf(), "v=spf1 mx -all");
        assert!(plan().sts_policy().contains("\nmx: mx.example.test\n"));
    }

    #[test]
    fn long_txt_values_are_split_into_255_octet_strings() {
        let long = Record {
            purpose: "DKIM",
            name: "x.".to_owned(),
            rtype: "TXT",
            value: "a".repeat(300) + "\"",
        };
        assert_eq!(
            long.rdata(),
            format!("\"{}\" \"{}\\\"\"", "a".repeat(255), "a".repeat(45))
        );
        assert_eq!(txt_chunks(&"b".repeat(510)).count(), 2);
        assert_eq!(txt_chunks("").count(), 0);
    }

    #[test]
    fn the_zone_block_ends_at_the_first_blank_line() {
        let text = plan().render();
        let zone = text.split("\n\n").next().unwrap();
        assert_eq!(zone.lines().filter(|l| !l.starts_with(';')).count(), 7);
        assert!(text.contains("RECORD   TYPE"), "{text}");
        assert!(text.ends_with("max_age: 604800\n"), "{text}");
    }
}
