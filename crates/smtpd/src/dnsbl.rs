//! DNS blocklists (RFC 5782): is the client's address listed, and by whom.
//!
//! Each configured list has a weight; a client whose listings add up to the threshold is
//! refused. As Postfix postscreen with `postscreen_dnsbl_action = enforce`, the refusal comes
//! at RCPT, not at connect: by then an authenticated submission client has said who it is (and
//! is exempt), and the log line carries the sender and recipient the listed client tried.
//! The reply is Postfix `reject_rbl_client`'s: `554 5.7.1 Service unavailable; Client host
//! [ip] blocked using <zone>; <the list's TXT reason>`.
//!
//! Only answers in 127.0.0.0/8 count as listings (RFC 5782 2.3); 127.255.255.0/24 is where
//! Spamhaus and others answer errors ("you query through an open resolver"), so it never
//! counts. A lookup that fails or times out counts as not listed: a DNS problem never refuses
//! mail. All lists are asked at once; the whole check is bounded by one timeout.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tracing::debug;

/// One list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// The list's DNS zone, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// What a listing here adds towards the threshold.
    pub weight: u32,
}

/// A listing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The list's zone.
    pub zone: String,
    /// Its weight.
    pub weight: u32,
    /// The addresses it answered (`127.0.0.2`, ...).
    pub codes: Vec<Ipv4Addr>,
    /// Its TXT reason, when it gave one.
    pub reason: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The lists that list the client, heaviest first.
    pub listings: Vec<Listing>,
    /// The zones whose lookup failed or timed out (counted as not listing).
    pub failed: Vec<String>,
    /// Whether the listings reach the threshold.
    pub blocked: bool,
}

impl Verdict {
    /// The reply text for a blocked client: the heaviest list names the block.
    #[must_use]
    pub fn reply_text(&self, ip: IpAddr) -> String {
        let Some(first) = self.listings.first() else {
            return String::new();
        };
        let mut text = format!(
            "Service unavailable; Client host [{ip}] blocked using {}",
            first.zone
        );
        if let Some(reason) = &first.reason {
            // The reason is the list's text: keep it on one printable line.
            let clean: String = reason
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .take(200)
                .collect();
            let _ = write!(text, "; {clean}");
        }
        text
    }
}

/// The configured lists, a threshold and a resolver.
#[derive(Clone)]
pub struct Dnsbl {
    lists: Vec<List>,
    threshold: u32,
    timeout: Duration,
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl")
            .field("lists", &self.lists)
            .field("threshold", &self.threshold)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The name to look `ip` up at in `zone` (RFC 5782 2.1 and 2.4): the IPv4 octets, or the 32
/// IPv6 nibbles, in reverse order, absolute.
#[must_use]
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    let mut name = String::with_capacity(80);
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let _ = write!(name, "{octet}.");
            }
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// Whether an answer is a listing (see the [module documentation](self)).
#[must_use]
pub fn is_listing(code: Ipv4Addr) -> bool {
    let [a, b, c, _] = code.octets();
    a == 127 && !(b == 255 && c == 255)
}

impl Dnsbl {
    /// `lists` asked through `resolver`; blocked at `threshold` (at least 1); the whole
    /// check gives up after `timeout`.
    #[must_use]
    pub fn new(
        lists: Vec<List>,
        threshold: u32,
        timeout: Duration,
        resolver: TokioResolver,
    ) -> Self {
        Self {
            lists,
            threshold: threshold.max(1),
            timeout,
            resolver,
        }
    }

    /// Asks every list about `ip`.
    pub async fn check(&self, ip: IpAddr) -> Verdict {
        // An IPv4 client on a dual-stack socket is a v4 address to the lists.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let lookups = self.lists.iter().map(|list| async move {
            let answer = tokio::time::timeout(self.timeout, self.lookup(ip, &list.zone)).await;
            (list, answer)
        });
        let mut verdict = Verdict::default();
        for (list, answer) in futures_util::future::join_all(lookups).await {
            match answer {
                Ok(Ok(Some((codes, reason)))) => verdict.listings.push(Listing {
                    zone: list.zone.clone(),
                    weight: list.weight,
                    codes,
                    reason,
                }),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    debug!(zone = %list.zone, %ip, "DNSBL lookup failed: {e}");
                    verdict.failed.push(list.zone.clone());
                }
                Err(_) => {
                    debug!(zone = %list.zone, %ip, "DNSBL lookup timed out");
                    verdict.failed.push(list.zone.clone());
                }
            }
        }
        verdict
            .listings
            .sort_by_key(|l| std::cmp::Reverse(l.weight));
        let score: u32 = verdict.listings.iter().map(|l| l.weight).sum();
        verdict.blocked = !verdict.listings.is_empty() && score >= self.threshold;
        verdict
    }

    /// The listing codes and TXT reason, `None` when not listed.
    async fn lookup(
        &self,
        ip: IpAddr,
        zone: &str,
    ) -> Result<Option<(Vec<Ipv4Addr>, Option<String>)>, String> {
        let name = query_name(ip, zone);
        let codes: Vec<Ipv4Addr> = match self.resolver.ipv4_lookup(name.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) if is_listing(a.0) => Some(a.0),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if codes.is_empty() {
            return Ok(None);
        }
        // The reason is a courtesy: its failure does not undo the listing.
        let reason = match self.resolver.txt_lookup(name.as_str()).await {
            Ok(lookup) => lookup.answers().iter().find_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            }),
            Err(_) => None,
        };
        Ok(Some((codes, reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_follow_rfc_5782() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test."
        );
        // RFC 5782 2.4's example.
        assert_eq!(
            query_name(
                "2001:db8:1:2:3:4:567:89ab".parse().unwrap(),
                "ugly.example.com."
            ),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
        );
    }

    #[test]
    fn only_loopback_answers_outside_the_error_range_list() {
        assert!(is_listing(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(is_listing(Ipv4Addr::new(127, 0, 0, 11)));
        assert!(!is_listing(Ipv4Addr::new(127, 255, 255, 254)));
        assert!(!is_listing(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
