//! The results of one message: owned, for logs and policy, and as header fields.

use std::fmt::Write as _;
use std::sync::Arc;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, IprevOutput, IprevResult, ReceivedSpf, SpfOutput, SpfResult,
};
use smtpkit_server::rdns::ReverseName;

use crate::SessionFacts;

/// SPF for both identities, checked at MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spf {
    /// The HELO identity (RFC 7208 2.3).
    pub helo: SpfOutput,
    /// The MAIL FROM identity (RFC 7208 2.4); the HELO result for the null sender.
    pub mail_from: SpfOutput,
}

impl Spf {
    /// Both results `none`, for sessions that are not checked.
    #[must_use]
    pub fn none() -> Self {
        Self {
            helo: SpfOutput::default(),
            mail_from: SpfOutput::default(),
        }
    }

    /// Whether the MAIL FROM domain's policy says the client may not send for it (`-all`).
    #[must_use]
    pub fn is_fail(&self) -> bool {
        self.mail_from.result() == SpfResult::Fail
    }

    /// Whether the MAIL FROM domain authorizes the client (`pass`).
    #[must_use]
    pub fn is_pass(&self) -> bool {
        self.mail_from.result() == SpfResult::Pass
    }

    /// Whether a lookup failed for a reason that may go away (RFC 7208 2.6.6).
    #[must_use]
    pub fn is_temporary_error(&self) -> bool {
        self.mail_from.result() == SpfResult::TempError
    }

    /// `spf=` and the result keyword, for logs.
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        spf_keyword(self.mail_from.result())
    }
}

/// The client's reverse DNS, forward-confirmed or not (RFC 8601 3: iprev).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Iprev {
    /// A PTR name whose A/AAAA records include the address.
    Pass(String),
    /// PTR names, none of which resolves back to the address.
    Fail,
    /// The lookup failed for a reason that may go away.
    TempError,
    /// No PTR record.
    PermError,
    /// Not checked.
    None,
}

impl Iprev {
    /// The result keyword (RFC 8601 2.7.3).
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Pass(_) => "pass",
            Self::Fail => "fail",
            Self::TempError => "temperror",
            Self::PermError => "permerror",
            Self::None => "none",
        }
    }

    pub(crate) fn from_output(output: &IprevOutput) -> Self {
        match output.result() {
            IprevResult::Pass => Self::Pass(
                output
                    .ptr
                    .as_ref()
                    .and_then(|names| names.first())
                    .map(|n| n.trim_end_matches('.').to_owned())
                    .unwrap_or_default(),
            ),
            IprevResult::Fail(_) => Self::Fail,
            IprevResult::TempError(_) => Self::TempError,
            IprevResult::PermError(_) => Self::PermError,
            IprevResult::None => Self::None,
        }
    }

    fn to_output(&self) -> IprevOutput {
        use mail_auth::{DnsError, Error};
        let not_found = || Error::Dns(DnsError::InvalidRecordType);
        let (result, ptr) = match self {
            Self::Pass(name) => (
                IprevResult::Pass,
                Some(Arc::from(vec![name.clone().into_boxed_str()])),
            ),
            Self::Fail => (IprevResult::Fail(Error::NotAligned), None),
            Self::TempError => (
                IprevResult::TempError(Error::Dns(DnsError::Resolver("timeout".to_owned()))),
                None,
            ),
            Self::PermError => (IprevResult::PermError(not_found()), None),
            Self::None => (IprevResult::None, None),
        };
        IprevOutput { result, ptr }
    }
}

/// smtpkit-server's per-session reverse DNS as an iprev result.
impl From<&ReverseName> for Iprev {
    fn from(name: &ReverseName) -> Self {
        match name {
            ReverseName::Confirmed(name) => Self::Pass(name.clone()),
            ReverseName::Unconfirmed(_) => Self::Fail,
            ReverseName::NotFound => Self::PermError,
            ReverseName::TempError => Self::TempError,
            #[allow(unreachable_patterns)]
            _ => Self::None,
        }
    }
}

/// RFC 6376 6.3: a body hash that does not match is PERMFAIL ("body hash did not verify"),
/// `dkim=fail` in RFC 8601 2.7.1 terms; mail-auth reports it as neutral.
pub(crate) fn body_mismatch_fails<'x>(outputs: &'x [DkimOutput<'x>]) -> Vec<DkimOutput<'x>> {
    use mail_auth::Error;
    use mail_auth::dkim::DkimError;
    outputs
        .iter()
        .map(|output| match (output.result(), output.signature()) {
            (DkimResult::Neutral(Error::Dkim(DkimError::FailedBodyHashMatch)), Some(signature)) => {
                DkimOutput::fail(Error::Dkim(DkimError::FailedBodyHashMatch))
                    .with_signature(signature)
            }
            _ => output.clone(),
        })
        .collect()
}

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSummary {
    /// The verdict.
    pub result: DkimResult,
    /// The signing domain (`d=`); empty when the signature did not parse.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
}

/// The DMARC evaluation of the `From:` domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcSummary {
    /// Pass when SPF or DKIM passed aligned; fail when a record exists and neither did.
    pub result: DmarcResult,
    /// The policy that applies to this message (`p=` or `sp=`, `pct=` taken into account).
    pub policy: Policy,
    /// The `From:` domain.
    pub domain: String,
}

/// What the domain owner's DMARC policy asks for this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver as usual.
    Accept,
    /// Deliver to the recipient's junk folder (`p=quarantine`).
    Quarantine,
    /// Refuse (`p=reject`).
    Reject,
}

/// Everything checked for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// SPF, from MAIL FROM time.
    pub spf: Spf,
    /// One entry per DKIM signature; empty when the message had none.
    pub dkim: Vec<DkimSummary>,
    /// The ARC chain's validation (`none` without a chain).
    pub arc: DkimResult,
    /// DMARC; `None` when the message has no `From:` address.
    pub dmarc: Option<DmarcSummary>,
    /// The client's reverse DNS.
    pub iprev: Iprev,
    authentication_results: String,
    received_spf: String,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        authserv_id: &str,
        facts: SessionFacts<'_>,
        message: &AuthenticatedMessage<'_>,
        spf: &Spf,
        dkim: &[DkimOutput<'_>],
        arc: &ArcOutput<'_>,
        dmarc: Option<&DmarcOutput>,
        iprev: &Iprev,
    ) -> Self {
        let mut results = AuthenticationResults::new(authserv_id)
            .with_dkim_results(dkim, message.from())
            .with_spf_ehlo_result(&spf.helo, facts.ip, facts.helo)
            .with_spf_mailfrom_result(&spf.mail_from, facts.ip, facts.mail_from, facts.helo)
            .with_arc_result(arc, facts.ip);
        if let Some(dmarc) = dmarc {
            results = results.with_dmarc_result(dmarc);
        }
        results = results.with_iprev_result(&iprev.to_output(), facts.ip);
        let mut authentication_results = results.to_header();
        if dkim.is_empty() {
            // RFC 8601 2.7.1: say that no signature was there rather than nothing at all.
            let at = "Authentication-Results: ".len() + authserv_id.len();
            authentication_results.insert_str(at, ";\r\n\tdkim=none");
        }
        if dmarc.is_none() {
            let at = authentication_results.len() - 2;
            authentication_results.insert_str(at, ";\r\n\tdmarc=none");
        }
        let received_spf = ReceivedSpf::new(
            &spf.mail_from,
            facts.ip,
            facts.helo,
            facts.mail_from,
            authserv_id,
        )
        .to_header();
        Self {
            spf: spf.clone(),
            dkim: dkim
                .iter()
                .map(|d| DkimSummary {
                    result: d.result().clone(),
                    domain: d.signature().map(|s| s.d.clone()).unwrap_or_default(),
                    selector: d.signature().map(|s| s.s.clone()).unwrap_or_default(),
                })
                .collect(),
            arc: arc.result().clone(),
            dmarc: dmarc.map(|d| DmarcSummary {
                result: d.result(),
                policy: d.policy(),
                domain: d.domain().to_owned(),
            }),
            iprev: iprev.clone(),
            authentication_results,
            received_spf,
        }
    }

    /// The `Authentication-Results:` field (RFC 8601), CRLF-terminated, to prepend.
    #[must_use]
    pub fn authentication_results(&self) -> &str {
        &self.authentication_results
    }

    /// The `Received-SPF:` field (RFC 7208 9.1), CRLF-terminated, to prepend.
    #[must_use]
    pub fn received_spf(&self) -> &str {
        &self.received_spf
    }

    /// The best DKIM result (RFC 8601 keywords): pass if any signature passed.
    #[must_use]
    pub fn dkim_keyword(&self) -> &'static str {
        self.dkim
            .iter()
            .map(|d| dkim_keyword(&d.result))
            .min_by_key(|k| RANK.iter().position(|r| r == k).unwrap_or(RANK.len()))
            .unwrap_or("none")
    }

    /// The DMARC result keyword.
    #[must_use]
    pub fn dmarc_keyword(&self) -> &'static str {
        self.dmarc
            .as_ref()
            .map_or("none", |d| dmarc_keyword(&d.result))
    }

    /// `spf=… dkim=… arc=… dmarc=… iprev=…`, for the message's log line.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut s = String::with_capacity(64);
        let _ = write!(
            s,
            "spf={} dkim={} arc={} dmarc={} iprev={}",
            self.spf.keyword(),
            self.dkim_keyword(),
            dkim_keyword(&self.arc),
            self.dmarc_keyword(),
            self.iprev.keyword()
        );
        s
    }

    /// What the `From:` domain's DMARC policy asks for. A temporary error never rejects.
    #[must_use]
    pub fn disposition(&self) -> Disposition {
        match &self.dmarc {
            Some(DmarcSummary {
                result: DmarcResult::Fail(_),
                policy,
                ..
            }) => match policy {
                Policy::Reject => Disposition::Reject,
                Policy::Quarantine => Disposition::Quarantine,
                Policy::None | Policy::Unspecified => Disposition::Accept,
            },
            _ => Disposition::Accept,
        }
    }

    /// Whether some check could not be completed for a reason that may go away (a DNS
    /// timeout or SERVFAIL): the client may be asked to retry (`451 4.7.x`) instead of the
    /// result being recorded.
    #[must_use]
    pub fn has_temporary_error(&self) -> bool {
        self.spf.is_temporary_error()
            || self
                .dkim
                .iter()
                .any(|d| matches!(d.result, DkimResult::TempError(_)))
            || matches!(self.arc, DkimResult::TempError(_))
            || self
                .dmarc
                .as_ref()
                .is_some_and(|d| matches!(d.result, DmarcResult::TempError(_)))
    }
}

const RANK: [&str; 6] = ["pass", "fail", "neutral", "temperror", "permerror", "none"];

fn spf_keyword(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_keyword(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_keyword(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}
