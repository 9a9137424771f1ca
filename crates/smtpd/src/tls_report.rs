//! TLS-RPT data (RFC 8460): what happened to each TLS session delivery opened under a policy
//! (MTA-STS or DANE), kept for `smtpd tls-report DOMAIN DAY` to turn into the report a domain
//! asks for. Sending reports is not done.
//!
//! One JSON line per session in `tls-report.jsonl` under the queue directory, appended (no
//! fsync: losing the last lines in a crash costs a report a few sessions, not mail). Counting
//! happens when a report is made, so appending never rewrites the file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The file's name in the queue directory.
pub const FILE: &str = "tls-report.jsonl";

/// Which policy a session was under (RFC 8460 4.4 `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    /// MTA-STS.
    Sts,
    /// DANE TLSA records.
    Tlsa,
    /// None found.
    NoPolicyFound,
}

/// Why a session failed (RFC 8460 4.3 result types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The MX did not offer STARTTLS.
    StarttlsNotSupported,
    /// The certificate does not name the MX host.
    CertificateHostMismatch,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate does not chain to a trusted root.
    CertificateNotTrusted,
    /// Anything else that failed the policy (an MX host the policy does not list, say).
    ValidationFailure,
    /// No TLSA record matched the presented chain.
    TlsaInvalid,
    /// The DNSSEC answer did not validate.
    DnssecInvalid,
    /// The MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// The MTA-STS policy did not parse.
    StsPolicyInvalid,
}

/// One session, as appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The policy domain (the recipients' domain).
    pub domain: String,
    /// The policy type.
    pub policy: PolicyType,
    /// The policy as text: the MTA-STS policy's lines, or the TLSA records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// The MX host; empty when the failure came before one (a policy fetch).
    #[serde(default)]
    pub mx: String,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// `None` for a successful session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// What went wrong, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The appending side; see the [module docs](self).
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Recorder {
    /// Records into `directory/`[`FILE`], opened at the first session.
    #[must_use]
    pub fn new(directory: &Path) -> Self {
        Self {
            path: directory.join(FILE),
            file: Mutex::new(None),
        }
    }

    /// Appends one session of today.
    pub fn record(&self, mut session: Session) {
        if session.day.is_empty() {
            session.day = day_of(SystemTime::now());
        }
        let Ok(mut line) = serde_json::to_string(&session) else {
            return;
        };
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "TLS report data not kept");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            tracing::warn!(path = %self.path.display(), error = %e, "TLS report data not kept");
        }
    }
}

/// `YYYY-MM-DD` (UTC) of `t`.
#[must_use]
pub fn day_of(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let date = time::OffsetDateTime::from_unix_timestamp(secs.try_into().unwrap_or(i64::MAX))
        .map_or(time::Date::MIN, time::OffsetDateTime::date);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The RFC 8460 report (section 4.4), as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    organization_name: String,
    date_range: DateRange,
    contact_info: String,
    report_id: String,
    policies: Vec<PolicyReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct DateRange {
    start_datetime: String,
    end_datetime: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PolicyReport {
    policy: PolicyDetails,
    summary: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failure_details: Vec<FailureDetails>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PolicyDetails {
    policy_type: PolicyType,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policy_string: Vec<String>,
    policy_domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mx_host: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    #[serde(rename = "total-successful-session-count")]
    successful: u64,
    #[serde(rename = "total-failure-session-count")]
    failed: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct FailureDetails {
    result_type: Failure,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiving_mx_hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receiving_ip: Option<IpAddr>,
    failed_session_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_information: Option<String>,
}

/// Whether `day` is `YYYY-MM-DD`.
#[must_use]
pub fn is_day(day: &str) -> bool {
    let b = day.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The report for `domain`'s sessions on `day` from the data in `directory`, sent as
/// `organization` (the host name).
///
/// # Errors
///
/// When the file cannot be read (a missing file is a report of no sessions).
pub fn report(directory: &Path, domain: &str, day: &str, organization: &str) -> io::Result<Report> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    // Keyed by policy, then failure group: sorted output, the same for the same data.
    type Failures = BTreeMap<(Failure, String, Option<IpAddr>), (u64, String)>;
    type Counts = (u64, u64, Vec<String>, Failures);
    let mut policies: BTreeMap<(PolicyType, Vec<String>), Counts> = BTreeMap::new();
    match File::open(directory.join(FILE)) {
        Ok(file) => {
            for line in BufReader::new(file).lines() {
                // A line cut by a crash is skipped, not fatal.
                let Ok(s) = serde_json::from_str::<Session>(&line?) else {
                    continue;
                };
                if s.day != day || s.domain != domain {
                    continue;
                }
                let entry = policies.entry((s.policy, s.policy_string)).or_default();
                if !s.mx.is_empty() && !entry.2.contains(&s.mx) {
                    entry.2.push(s.mx.clone());
                }
                match s.failure {
                    None => entry.0 += 1,
                    Some(f) => {
                        entry.1 += 1;
                        let group = entry.3.entry((f, s.mx, s.ip)).or_default();
                        group.0 += 1;
                        if group.1.is_empty() {
                            group.1 = s.detail;
                        }
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let policies = policies
        .into_iter()
        .map(
            |((policy_type, policy_string), (ok, failed, mx, failures))| PolicyReport {
                policy: PolicyDetails {
                    policy_type,
                    policy_string,
                    policy_domain: domain.clone(),
                    mx_host: if policy_type == PolicyType::Sts {
                        Vec::new()
                    } else {
                        mx
                    },
                },
                summary: Summary {
                    successful: ok,
                    failed,
                },
                failure_details: failures
                    .into_iter()
                    .map(|((result_type, mx, ip), (count, detail))| FailureDetails {
                        result_type,
                        receiving_mx_hostname: (!mx.is_empty()).then_some(mx),
                        receiving_ip: ip,
                        failed_session_count: count,
                        additional_information: (!detail.is_empty()).then_some(detail),
                    })
                    .collect(),
            },
        )
        .collect();
    Ok(Report {
        organization_name: organization.to_owned(),
        date_range: DateRange {
            start_datetime: format!("{day}T00:00:00Z"),
            end_datetime: format!("{day}T23:59:59Z"),
        },
        contact_info: format!("postmaster@{organization}"),
        report_id: format!("{day}_{domain}@{organization}"),
        policies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(day: &str, mx: &str, failure: Option<Failure>) -> Session {
        Session {
            day: day.to_owned(),
            domain: "b.test".to_owned(),
            policy: PolicyType::Sts,
            policy_string: vec!["version: STSv1".to_owned(), "mode: enforce".to_owned()],
            mx: mx.to_owned(),
            ip: Some("127.0.0.2".parse().unwrap()),
            failure,
            detail: failure.map_or(String::new(), |_| "bad cert".to_owned()),
        }
    }

    #[test]
    fn sessions_of_a_day_become_rfc_8460_json() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::new(dir.path());
        r.record(session("2026-12-02", "mx.b.test", None));
        r.record(session("2026-12-02", "mx.b.test", None));
        r.record(session(
            "2026-12-02",
            "mx.b.test",
            Some(Failure::CertificateNotTrusted),
        ));
        r.record(session(
            "2026-12-02",
            "mx.b.test",
            Some(Failure::CertificateNotTrusted),
        ));
        r.record(session(
            "2026-12-01",
            "mx.b.test",
            Some(Failure::CertificateExpired),
        ));
        let mut other = session("2026-12-02", "mx.c.test", None);
        other.domain = "c.test".to_owned();
        r.record(other);
        // A torn last line (a crash mid-write) is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"{\"day\":\"2026-12-02\",\"dom")
            .unwrap();

        let made = report(dir.path(), "B.test", "2026-12-02", "mx.a.test").unwrap();
        let json: serde_json::Value = serde_json::to_value(&made).unwrap();
        assert_eq!(json["date-range"]["start-datetime"], "2026-12-02T00:00:00Z");
        assert_eq!(json["organization-name"], "mx.a.test");
        let policies = json["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1);
        let p = &policies[0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "b.test");
        assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 2);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "certificate-not-trusted");
        assert_eq!(f["failed-session-count"], 2);
        assert_eq!(f["receiving-mx-hostname"], "mx.b.test");
        assert_eq!(f["receiving-ip"], "127.0.0.2");

        let empty = report(dir.path(), "b.test", "2026-11-30", "mx.a.test").unwrap();
        assert!(empty.policies.is_empty());
    }

    #[test]
    fn days() {
        assert_eq!(
            day_of(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000)),
            "2026-11-18"
        );
        assert!(is_day("2026-12-02"));
        assert!(!is_day("2026-12-2") && !is_day("2026/12/02") && !is_day("yesterday!"));
    }
}
