//! `[checks]`: inbound mail authentication (SPF, DKIM, ARC, DMARC, iprev) through
//! smtpkit-mailauth, and the policy that turns results into replies and folders.
//!
//! SPF runs at MAIL FROM; the content streams through a [`MessageStream`] (the body hashed as it
//! is staged, forged `Authentication-Results` dropped from the header block); DKIM, ARC and
//! DMARC run at the end of data, before the reply. `Authentication-Results:` and
//! `Received-SPF:` are prepended to the stored message and the results go into the message's
//! log line.
//!
//! Policy, safe by default: DMARC `p=reject` fail is refused with `550 5.7.1`, `p=quarantine`
//! goes to each recipient's Maildir++ `.Junk` folder, SPF `fail` is only recorded unless
//! `spf_fail = "reject"`, and a DNS temporary error is recorded and the message accepted unless
//! `temperror = "defer"` (`451 4.7.x`), as policyd-spf and OpenDMARC do. Each setting can be
//! changed for the recipients of one local domain (`[checks.domain."example.org"]`); a message
//! for several domains gets the strictest of their policies. Authenticated sessions and
//! `exempt_networks` are not checked.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smtpkit_mailauth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use smtpkit_mailauth::{Authenticator, Disposition, Report};
use smtpkit_server::SessionInfo;

use crate::dns::Dns;

pub use smtpkit_mailauth::{Iprev, MessageStream, SessionFacts, Spf};

/// What to do with an SPF `fail` (the domain publishes `-all` and the client is not listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfFail {
    /// Record it; DMARC decides.
    Accept,
    /// Refuse MAIL FROM (or, per domain, the recipient) with `550 5.7.23`.
    Reject,
}

/// What to do when a check could not finish for a reason that may go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TempError {
    /// Record `temperror` and accept.
    Accept,
    /// Ask the client to retry: `451 4.7.24` (SPF) or `451 4.7.0`.
    Defer,
}

/// `[checks]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Run the checks. Default `true`: a machine without DNS records `temperror`/`none` and
    /// still accepts.
    pub enabled: bool,
    /// Deprecated (one release): `[dns] nameservers`, which it fills when that is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Deprecated (one release): `[dns] timeout`, which it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Deprecated (one release): `[dns] cache_size`, which it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<usize>,
    /// The largest header block checked, in octets; a larger one is refused with `552 5.3.4`.
    /// Default 262144 (256 KiB), far above real mail.
    pub header_limit: usize,
    /// Clients that are not checked (besides authenticated ones), for example a content filter
    /// that re-injects mail. Default none: unlike `limits.trusted_networks`, loopback is
    /// checked, so a local test shows the results.
    #[serde(with = "crate::config::cidr_list")]
    pub exempt_networks: Vec<IpNet>,
    /// SPF `fail`: `accept` (default; DMARC decides) or `reject` at MAIL FROM.
    pub spf_fail: SpfFail,
    /// Apply the sender's DMARC policy (`reject` → 550, `quarantine` → `.Junk`). Default true.
    pub dmarc: bool,
    /// DNS temporary errors: `accept` (default) or `defer` (451).
    pub temperror: TempError,
    /// Per local domain, for its recipients: any of `spf_fail`, `dmarc`, `temperror`.
    pub domain: BTreeMap<String, DomainPolicy>,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            enabled: true,
            nameservers: None,
            timeout: None,
            cache_size: None,
            header_limit: smtpkit_mailauth::DEFAULT_HEADER_LIMIT,
            exempt_networks: Vec::new(),
            spf_fail: SpfFail::Accept,
            dmarc: true,
            temperror: TempError::Accept,
            domain: BTreeMap::new(),
        }
    }
}

/// `[checks.domain."example.org"]`: the policy for one local domain's recipients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainPolicy {
    /// Overrides `checks.spf_fail` (refused at RCPT for this domain's recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf_fail: Option<SpfFail>,
    /// Overrides `checks.dmarc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<bool>,
    /// Overrides `checks.temperror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperror: Option<TempError>,
}

/// The effective policy for a set of recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// See [`Checks::spf_fail`].
    pub spf_fail: SpfFail,
    /// See [`Checks::dmarc`].
    pub dmarc: bool,
    /// See [`Checks::temperror`].
    pub temperror: TempError,
}

impl Policy {
    /// The stricter of two policies, setting by setting.
    #[must_use]
    pub fn strictest(self, other: Self) -> Self {
        Self {
            spf_fail: if self.spf_fail == SpfFail::Reject {
                self.spf_fail
            } else {
                other.spf_fail
            },
            dmarc: self.dmarc || other.dmarc,
            temperror: if self.temperror == TempError::Defer {
                self.temperror
            } else {
                other.temperror
            },
        }
    }
}

/// What the end-of-data policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver to the recipients' inboxes.
    Deliver,
    /// Deliver to the recipients' `.Junk` folders.
    Junk,
    /// Refuse with `550 5.7.1` and this text.
    Reject(String),
    /// Ask for a retry: `451` with this enhanced code's detail (`4.7.x`) and text.
    Defer(&'static str),
}

/// The server's checker: the shared [`Authenticator`] and the policy.
#[derive(Debug)]
pub struct Checker {
    auth: Authenticator,
    settings: Checks,
}

impl Checker {
    /// The checker `[checks]` describes, resolving as `[dns]` says, or `None` when the checks
    /// are off. `hostname` is the authserv-id.
    pub fn from_config(
        checks: &Checks,
        dns: &Dns,
        hostname: &str,
    ) -> Result<Option<Arc<Self>>, String> {
        if !checks.enabled {
            return Ok(None);
        }
        // No resolv.conf (a container, a machine without network): a resolver without
        // nameservers, so every lookup is a temperror and mail is still accepted.
        let (config, opts) = dns.resolver_config().unwrap_or_else(|_| {
            let mut opts = ResolverOpts::default();
            opts.timeout = dns.timeout();
            (ResolverConfig::from_name_servers(Vec::new()), opts)
        });
        // mail-auth builds its own hickory resolver from these: its record caches sit on top.
        let auth = Authenticator::new(config, opts, dns.cache_size, hostname)
            .map_err(|e| e.to_string())?
            .with_header_limit(checks.header_limit);
        Ok(Some(Arc::new(Self {
            auth,
            settings: checks.clone(),
        })))
    }

    /// The authenticator, for checks of the caller's own.
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Whether this session is checked: not authenticated, not from an exempt network, not on
    /// a Unix socket (a local program: no address to check SPF against).
    pub fn applies_to(&self, info: &SessionInfo) -> bool {
        let Some(ip) = info.peer.ip().map(|ip| ip.to_canonical()) else {
            return false;
        };
        info.authenticated.is_none()
            && !self
                .settings
                .exempt_networks
                .iter()
                .any(|n| n.contains(&ip))
    }

    /// The server-wide policy.
    pub fn policy(&self) -> Policy {
        Policy {
            spf_fail: self.settings.spf_fail,
            dmarc: self.settings.dmarc,
            temperror: self.settings.temperror,
        }
    }

    /// The policy for recipients at `domain`.
    pub fn policy_for(&self, domain: &str) -> Policy {
        let base = self.policy();
        let Some(over) = self
            .settings
            .domain
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(domain))
            .map(|(_, p)| p)
        else {
            return base;
        };
        Policy {
            spf_fail: over.spf_fail.unwrap_or(base.spf_fail),
            dmarc: over.dmarc.unwrap_or(base.dmarc),
            temperror: over.temperror.unwrap_or(base.temperror),
        }
    }

    /// SPF for the session's HELO name and `mail_from` (without angle brackets).
    pub async fn spf(&self, ip: IpAddr, helo: &str, mail_from: &str) -> Spf {
        self.auth
            .check_spf(SessionFacts {
                ip,
                helo,
                mail_from,
            })
            .await
    }

    /// A stream for one message's content.
    pub fn message(&self) -> MessageStream {
        self.auth.message()
    }

    /// DKIM, ARC and DMARC at the end of data.
    pub async fn verify(
        &self,
        stream: &MessageStream,
        facts: SessionFacts<'_>,
        spf: &Spf,
        iprev: &Iprev,
    ) -> Report {
        self.auth.verify(stream, facts, spf, iprev).await
    }
}

/// The reply to MAIL FROM after SPF, under `policy`: `None` to go on.
pub fn spf_verdict(spf: &Spf, policy: Policy) -> Option<Action> {
    if spf.is_fail() && policy.spf_fail == SpfFail::Reject {
        return Some(Action::Reject(format!(
            "SPF check failed: {} does not allow this client to send for it",
            spf.mail_from.domain()
        )));
    }
    if spf.is_temporary_error() && policy.temperror == TempError::Defer {
        return Some(Action::Defer("SPF check could not finish; try again later"));
    }
    None
}

/// What to do with a message whose checks gave `report`, under `policy`.
pub fn message_verdict(report: &Report, policy: Policy) -> Action {
    if report.has_temporary_error() && policy.temperror == TempError::Defer {
        return Action::Defer("Authentication checks could not finish; try again later");
    }
    if !policy.dmarc {
        return Action::Deliver;
    }
    match report.disposition() {
        Disposition::Reject => Action::Reject(format!(
            "Message rejected by the DMARC policy of {}",
            report.dmarc.as_ref().map_or("", |d| d.domain.as_str())
        )),
        Disposition::Quarantine => Action::Junk,
        Disposition::Accept => Action::Deliver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn on_by_default_and_per_domain_policy_overrides() {
        let config = Config::default_embedded();
        assert!(config.checks.enabled);
        let config = Config::from_str(
            r#"
[dns]
nameservers = ["127.0.0.1:5353"]

[checks]
spf_fail = "accept"

[checks.domain."Strict.example"]
spf_fail = "reject"
dmarc = false
"#,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let checker = Checker::from_config(&config.checks, &config.dns, "mx.test")
            .unwrap()
            .expect("enabled");
        assert_eq!(checker.policy().spf_fail, SpfFail::Accept);
        let strict = checker.policy_for("strict.EXAMPLE");
        assert_eq!(strict.spf_fail, SpfFail::Reject);
        assert!(!strict.dmarc);
        assert_eq!(strict.temperror, TempError::Accept);
        // A message for both domains: the stricter of each setting.
        let both = checker.policy().strictest(strict);
        assert_eq!(both.spf_fail, SpfFail::Reject);
        assert!(both.dmarc);

        let mut off = config.checks.clone();
        off.enabled = false;
        assert!(
            Checker::from_config(&off, &config.dns, "mx.test")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_policy_values_name_the_choices() {
        let err = Config::from_str("[checks]\ntemperror = \"maybe\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("accept") && text.contains("defer"), "{text}");
    }
}
