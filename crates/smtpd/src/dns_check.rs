//! `smtpd dns-check`: what a domain has published, record by record, against what this server
//! needs ([`DomainRecords`]): the MX points at us, the MX host has our addresses, SPF passes
//! for each of them (evaluated by mail-auth, as a receiver would), each DKIM key published is
//! ours, DMARC, TLS-RPT and MTA-STS are there.
//!
//! A DNS failure other than "no such record" is reported as such, never as a missing record:
//! the fix for a lame nameserver is not to add a record.

use std::fmt;
use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};

use crate::dns_records::DomainRecords;

/// How one record looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Published and right.
    Ok,
    /// Not published.
    Missing,
    /// Published, but not what this server needs.
    Wrong,
    /// The lookup failed (timeout, SERVFAIL): nothing is known.
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so a report's columns line up (`{:<7}`).
        f.pad(match self {
            Self::Ok => "ok",
            Self::Missing => "MISSING",
            Self::Wrong => "WRONG",
            Self::Unknown => "UNKNOWN",
        })
    }
}

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which record: `MX`, `A`, `AAAA`, `SPF`, `DKIM`, `DMARC`, `TLS-RPT`, `MTA-STS`.
    pub purpose: &'static str,
    /// The name looked up, absolute.
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// What was found, or what is wrong and what was expected.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<7} {:<8} {}: {}",
            self.status, self.purpose, self.name, self.detail
        )
    }
}

/// Looks records up through one resolver configuration (the `[dns]` one, or `--nameserver`).
#[derive(Clone)]
pub struct Checker {
    resolver: TokioResolver,
    auth: MessageAuthenticator,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

/// A lookup's outcome: records, none (NXDOMAIN or no data), or a failure.
enum Answer<T> {
    Found(Vec<T>),
    None,
    Failed(String),
}

impl Checker {
    /// A checker asking what `config` names, with `opts`.
    pub fn new(config: ResolverConfig, opts: ResolverOpts) -> Result<Self, String> {
        let resolver =
            TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default())
                .with_options(opts.clone())
                .build()
                .map_err(|e| e.to_string())?;
        let auth = MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())?;
        Ok(Self { resolver, auth })
    }

    async fn txt(&self, name: &str) -> Answer<String> {
        match self.resolver.txt_lookup(name).await {
            Ok(lookup) => {
                let texts: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // A record's strings form one text (RFC 7208 3.3, RFC 6376 3.6.2.2).
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect();
                found(texts)
            }
            Err(e) => failed(e),
        }
    }

    async fn mx(&self, domain: &str) -> Answer<(u16, String)> {
        match self.resolver.mx_lookup(domain).await {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failed(e),
        }
    }

    async fn addresses(&self, host: &str, v6: bool) -> Answer<IpAddr> {
        let result = if v6 {
            self.resolver.ipv6_lookup(host).await
        } else {
            self.resolver.ipv4_lookup(host).await
        };
        match result {
            Ok(lookup) => found(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => failed(e),
        }
    }

    /// Checks every record `expected` describes. With no addresses in `expected`, the MX
    /// host's published ones are taken as ours (SPF must cover them).
    pub async fn check(&self, expected: &DomainRecords) -> Vec<Finding> {
        let d = &expected.domain;
        let mx_host = format!("{}.", expected.mx_host);
        let mut out = Vec::new();
        let finding = |purpose, name: &str, status, detail: String| Finding {
            purpose,
            name: name.to_owned(),
            status,
            detail,
        };

        let apex = format!("{d}.");
        let policy_names = [
            format!("_dmarc.{d}."),
            format!("_smtp._tls.{d}."),
            format!("_mta-sts.{d}."),
        ];
        // Every lookup at once: against a dead nameserver the report takes one timeout, not
        // one per record.
        let (mx, v4, v6, apex_txt, dkim, policies) = futures_util::join!(
            self.mx(&apex),
            self.addresses(&mx_host, false),
            self.addresses(&mx_host, true),
            self.txt(&apex),
            futures_util::future::join_all(
                expected
                    .keys
                    .iter()
                    .map(|k| async move { self.txt(&k.record_name()).await })
            ),
            futures_util::future::join_all(policy_names.iter().map(|n| self.txt(n))),
        );
        let mut dkim = dkim.into_iter();
        let mut policies = policies.into_iter();
        let mut by_family = [v4, v6].into_iter();
        out.push(match mx {
            Answer::Found(mx) => {
                let list = mx
                    .iter()
                    .map(|(p, h)| format!("{p} {h}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if mx.iter().any(|(_, h)| h.eq_ignore_ascii_case(&mx_host)) {
                    finding("MX", &apex, Status::Ok, list)
                } else {
                    finding(
                        "MX",
                        &apex,
                        Status::Wrong,
                        format!("points elsewhere: {list} (expected {mx_host})"),
                    )
                }
            }
            Answer::None => finding(
                "MX",
                &apex,
                Status::Missing,
                format!("expected 10 {mx_host}"),
            ),
            Answer::Failed(e) => finding("MX", &apex, Status::Unknown, e),
        });

        let mut ours = expected.addresses.clone();
        for (purpose, v6) in [("A", false), ("AAAA", true)] {
            let wanted: Vec<IpAddr> = expected
                .addresses
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv6() == v6)
                .collect();
            let answer = by_family.next().unwrap_or(Answer::None);
            if wanted.is_empty() {
                // Nothing expected of this family: only report what there is.
                if let Answer::Found(found) = &answer {
                    if expected.addresses.is_empty() {
                        ours.extend(found);
                    }
                    out.push(finding(purpose, &mx_host, Status::Ok, join(found)));
                }
                continue;
            }
            out.push(match answer {
                Answer::Found(found) => {
                    let absent: Vec<IpAddr> = wanted
                        .iter()
                        .copied()
                        .filter(|ip| !found.contains(ip))
                        .collect();
                    if absent.is_empty() {
                        finding(purpose, &mx_host, Status::Ok, join(&found))
                    } else {
                        finding(
                            purpose,
                            &mx_host,
                            Status::Wrong,
                            format!("has {}, not {}", join(&found), join(&absent)),
                        )
                    }
                }
                Answer::None => finding(purpose, &mx_host, Status::Missing, join(&wanted)),
                Answer::Failed(e) => finding(purpose, &mx_host, Status::Unknown, e),
            });
        }

        out.push(self.check_spf(&apex, apex_txt, expected, &ours).await);

        for key in &expected.keys {
            let name = key.record_name();
            let selector = &key.selector;
            out.push(match dkim.next().unwrap_or(Answer::None) {
                Answer::Found(texts) => match texts.iter().find_map(|t| tag(t, "p")) {
                    Some(p) if strip_space(&p) == key.public_key_base64() => finding(
                        "DKIM",
                        &name,
                        Status::Ok,
                        format!("{} key, selector {selector}", key.algorithm),
                    ),
                    Some(_) => finding(
                        "DKIM",
                        &name,
                        Status::Wrong,
                        format!(
                            "the published key does not match ours ({} key, selector {selector}, {})",
                            key.algorithm,
                            key.path.display()
                        ),
                    ),
                    None => finding(
                        "DKIM",
                        &name,
                        Status::Wrong,
                        format!("no p= tag; expected {}", key.record()),
                    ),
                },
                Answer::None => finding("DKIM", &name, Status::Missing, key.record()),
                Answer::Failed(e) => finding("DKIM", &name, Status::Unknown, e),
            });
        }

        for ((purpose, prefix), name) in [
            ("DMARC", "v=DMARC1"),
            ("TLS-RPT", "v=TLSRPTv1"),
            ("MTA-STS", "v=STSv1"),
        ]
        .into_iter()
        .zip(&policy_names)
        {
            let want = expected
                .records()
                .into_iter()
                .find(|r| r.purpose == purpose)
                .map(|r| r.value)
                .unwrap_or_default();
            out.push(match policies.next().unwrap_or(Answer::None) {
                Answer::Found(texts) => {
                    let matching: Vec<&String> =
                        texts.iter().filter(|t| has_version(t, prefix)).collect();
                    match matching.as_slice() {
                        [one] => finding(purpose, name, Status::Ok, (*one).clone()),
                        [] => finding(
                            purpose,
                            name,
                            Status::Missing,
                            format!("no {prefix} record; expected {want}"),
                        ),
                        _ => finding(
                            purpose,
                            name,
                            Status::Wrong,
                            format!(
                                "{} {prefix} records: receivers ignore them all",
                                matching.len()
                            ),
                        ),
                    }
                }
                Answer::None => finding(purpose, name, Status::Missing, format!("expected {want}")),
                Answer::Failed(e) => finding(purpose, name, Status::Unknown, e),
            });
        }
        out
    }

    async fn check_spf(
        &self,
        apex: &str,
        txt: Answer<String>,
        expected: &DomainRecords,
        ours: &[IpAddr],
    ) -> Finding {
        let finding = |status, detail| Finding {
            purpose: "SPF",
            name: apex.to_owned(),
            status,
            detail,
        };
        let texts = match txt {
            Answer::Found(texts) => texts,
            Answer::None => Vec::new(),
            Answer::Failed(e) => return finding(Status::Unknown, e),
        };
        let spf: Vec<&String> = texts.iter().filter(|t| has_version(t, "v=spf1")).collect();
        let record = match spf.as_slice() {
            [one] => (*one).clone(),
            [] => return finding(Status::Missing, format!("expected {}", expected.spf())),
            _ => {
                return finding(
                    Status::Wrong,
                    format!(
                        "{} SPF records: a permerror for every receiver (RFC 7208 3.2)",
                        spf.len()
                    ),
                );
            }
        };
        let sender = format!("postmaster@{}", expected.domain);
        let mut failing = Vec::new();
        for &ip in ours {
            let output = self
                .auth
                .verify_spf(SpfParameters::verify_mail_from(
                    ip,
                    &expected.mx_host,
                    &expected.mx_host,
                    &sender,
                ))
                .await;
            if output.result() != SpfResult::Pass {
                failing.push(format!("{ip} gets {}", spf_name(output.result())));
            }
        }
        if failing.is_empty() {
            finding(Status::Ok, record)
        } else {
            finding(
                Status::Wrong,
                format!(
                    "does not cover our address: {} ({record})",
                    failing.join(", ")
                ),
            )
        }
    }
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn found<T>(records: Vec<T>) -> Answer<T> {
    if records.is_empty() {
        Answer::None
    } else {
        Answer::Found(records)
    }
}

fn failed<T>(e: NetError) -> Answer<T> {
    if e.is_no_records_found() || e.is_nx_domain() {
        Answer::None
    } else {
        Answer::Failed(format!("lookup failed: {e}"))
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `text` starts with the version tag `prefix` (case-insensitive, as the RFCs say),
/// followed by the end, a space or a `;`.
fn has_version(text: &str, prefix: &str) -> bool {
    let text = text.trim_start();
    text.len() >= prefix.len()
        && text.is_char_boundary(prefix.len())
        && text[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(text[prefix.len()..].chars().next(), None | Some(' ' | ';'))
}

/// The value of `name` in a `tag=value; tag=value` list (RFC 6376 3.2).
fn tag(text: &str, name: &str) -> Option<String> {
    text.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

fn strip_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lists_and_versions() {
        assert_eq!(
            tag("v=DKIM1; k=rsa; p=AB CD", "p").as_deref(),
            Some("AB CD")
        );
        assert_eq!(tag("v=DKIM1;k=rsa", "p"), None);
        assert!(has_version("v=spf1 -all", "v=spf1"));
        assert!(has_version("V=SPF1", "v=spf1"));
        assert!(!has_version("v=spf10 -all", "v=spf1"));
        assert!(has_version("v=DMARC1; p=none", "v=DMARC1"));
        assert!(!has_version("é", "v=spf1"));
    }
}
