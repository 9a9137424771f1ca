//! How queued mail leaves: an SMTP [`Transport`] over smtpkit-tokio's client, to the domain's
//! MX hosts (RFC 5321 5.1, through [`smtpkit_queue::mx`]) or to a smart host.
//!
//! - MX hosts are tried in order, each of their addresses in turn, until one answers; a
//!   connection that fails, or a server that refuses the whole session or transaction with a
//!   4xx, moves on to the next (RFC 5321 5.1: "try the next host"). A 5xx is final.
//! - To MX hosts, STARTTLS is used when offered without checking the certificate
//!   (opportunistic TLS, RFC 7435: protection against passive listeners, the Postfix `may`
//!   level), unless the domain has an MTA-STS policy ([`crate::mta_sts`]):
//!   - `enforce`: only the MX hosts the policy lists, only with STARTTLS and a certificate valid
//!     for the MX name (web PKI plus `[delivery.mta_sts] ca`); anything else defers the
//!     recipients (RFC 8461 5.1), never plaintext;
//!   - `testing`: the checked session is tried first; when it fails, the failure is recorded
//!     and delivery goes on as without a policy.
//! - With `[delivery] dane`, an MX host whose TLSA records (`_25._tcp.HOST`) validate under
//!   DNSSEC must present a certificate they name ([`crate::dane`]), or its recipients are
//!   deferred; DANE outranks MTA-STS for that host (RFC 8461 2).
//! - Sessions under a policy are recorded for TLS-RPT ([`crate::tls_report`]).
//! - A smart host is reached with its own TLS mode (certificate checked against the web PKI
//!   or a given CA) and AUTH.

use rustls::pki_types::pem::PemObject;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_queue::mx::{self, MxResolver, RouteError};
use smtpkit_queue::{Attempt, Outcome, Transport};
use smtpkit_tokio::Reply;
use smtpkit_tokio::client::{
    self, Body, ClientConfig, ClientOptions, Delivery, Envelope, Error, Recipient, Sasl, TlsMode,
    TlsSettings, any_certificate_config,
};
use tracing::{debug, info};

use crate::config;
use crate::connection_cache::{Class, ConnectionCache, Key, Limits, Session};
use crate::dane;
use crate::mta_sts::{Found, Mode, MtaSts, Policy};
use crate::tls_report::{self, Failure, PolicyType, Recorder};

/// How one session with an MX host is secured.
#[derive(Debug, Clone)]
enum Security {
    /// No STARTTLS.
    Plaintext,
    /// STARTTLS when offered, any certificate.
    Opportunistic,
    /// STARTTLS required, the certificate checked for the MX name.
    Verified,
    /// STARTTLS required, the certificate checked by this configuration (DANE's TLSA records).
    Pinned(Arc<rustls::ClientConfig>),
}

/// A smart host, resolved from `[delivery.smart_host]`.
#[derive(Debug, Clone)]
struct SmartHost {
    host: String,
    port: u16,
    tls: Option<TlsSettings>,
    auth: Option<(String, String)>,
}

/// The SMTP transport; see the [module docs](self).
#[derive(Debug)]
pub struct SmtpTransport<R> {
    resolver: R,
    client: Arc<ClientConfig>,
    port: u16,
    starttls: bool,
    opportunistic: Arc<rustls::ClientConfig>,
    verified: Arc<rustls::ClientConfig>,
    mta_sts: Option<MtaSts>,
    dane: Option<hickory_resolver::TokioResolver>,
    tls_report: Option<Recorder>,
    connect_timeout: Duration,
    smart_host: Option<SmartHost>,
    /// Sessions kept between deliveries; `None` when `[delivery] connection_cache_time` is 0.
    connections: Option<ConnectionCache>,
    rng: Mutex<fastrand::Rng>,
}

impl<R: MxResolver> SmtpTransport<R> {
    /// The transport `[delivery]` describes, sending as `hostname` (EHLO), resolving with
    /// `resolver`.
    pub fn new(resolver: R, hostname: &str, delivery: &config::Delivery) -> Result<Self, String> {
        let client = ClientConfig::new(ClientOptions {
            hostname: hostname.to_owned(),
            ..Default::default()
        })
        .map_err(|e| format!("client settings: {e}"))?;
        let smart_host = delivery.smart_host.as_ref().map(smart_host).transpose()?;
        Ok(Self {
            resolver,
            client: Arc::new(client),
            port: delivery.port,
            starttls: delivery.starttls,
            opportunistic: Arc::new(any_certificate_config()),
            verified: Arc::new(verified_config(delivery.mta_sts.ca.as_deref())?),
            mta_sts: None,
            dane: None,
            tls_report: None,
            connect_timeout: Duration::from_secs(delivery.connect_timeout),
            smart_host,
            connections: (delivery.connection_cache_time > 0).then(|| {
                ConnectionCache::new(Limits {
                    idle: Duration::from_secs(delivery.connection_cache_time),
                    max_age: Duration::from_secs(delivery.connection_reuse_time),
                })
            }),
            rng: Mutex::new(fastrand::Rng::new()),
        })
    }

    /// Follows MTA-STS policies, looked up with `resolver` (the MX resolver's, sharing its
    /// cache), as `settings` say, keeping them in `store` across restarts.
    #[must_use]
    pub fn with_mta_sts(
        mut self,
        resolver: hickory_resolver::TokioResolver,
        settings: &config::MtaSts,
        store: std::path::PathBuf,
    ) -> Self {
        let sts = MtaSts::new(
            resolver,
            Arc::clone(&self.verified),
            settings.https_port,
            Duration::from_secs(settings.fetch_timeout),
        );
        self.mta_sts = Some(sts.with_store(store));
        self
    }

    /// Checks MX hosts' certificates against their TLSA records (DANE, RFC 7672), looked up
    /// with `resolver`, which must validate DNSSEC.
    #[must_use]
    pub fn with_dane(mut self, resolver: hickory_resolver::TokioResolver) -> Self {
        self.dane = Some(resolver);
        self
    }

    /// Records sessions under a policy for TLS-RPT.
    #[must_use]
    pub fn with_tls_report(mut self, recorder: Recorder) -> Self {
        self.tls_report = Some(recorder);
        self
    }

    /// The hosts to try: (name for logs and TLS, addresses, TLS, AUTH).
    async fn hosts(&self, domain: &str) -> Result<Vec<(String, Vec<SocketAddr>)>, RouteError> {
        if let Some(smart) = &self.smart_host {
            let addresses = match smart.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self.resolver.addresses(&smart.host).await.map_err(|e| {
                    RouteError::Temporary(format!("smart host {}: {e}", smart.host))
                })?,
            };
            let addrs = addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, smart.port))
                .collect();
            return Ok(vec![(smart.host.clone(), addrs)]);
        }
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fork();
        let hosts = mx::route(&self.resolver, domain, &mut rng).await?;
        Ok(hosts
            .into_iter()
            .map(|h| {
                let addrs = h
                    .addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port))
                    .collect();
                (h.name, addrs)
            })
            .collect())
    }

    fn tls_for(&self, host: &str, security: Security) -> Option<TlsSettings> {
        if let Some(smart) = &self.smart_host {
            return smart.tls.clone();
        }
        let name = ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
        match security {
            // A policy's demand for TLS outranks `starttls = false`.
            Security::Verified => Some(TlsSettings::new(
                Arc::clone(&self.verified),
                name,
                TlsMode::Required,
            )),
            Security::Opportunistic if self.starttls => Some(TlsSettings::new(
                Arc::clone(&self.opportunistic),
                name,
                TlsMode::Opportunistic,
            )),
            Security::Pinned(config) => Some(TlsSettings::new(config, name, TlsMode::Required)),
            Security::Opportunistic | Security::Plaintext => None,
        }
    }

    /// Records a session under a policy for TLS-RPT: one that ended for a TLS reason failed,
    /// one that got an answer succeeded; a connection that never reached TLS is no session.
    fn report(
        &self,
        domain: &str,
        (kind, policy): (PolicyType, &[String]),
        host: &str,
        addr: SocketAddr,
        tried: &Tried,
    ) {
        let Some(recorder) = &self.tls_report else {
            return;
        };
        let failure = match &tried.result {
            Ok(_) if tried.fresh => None,
            Ok(_) => return,
            Err(e @ Error::Tls(_)) if kind == PolicyType::Tlsa => {
                Some((Failure::TlsaInvalid, e.to_string()))
            }
            Err(e @ (Error::Tls(_) | Error::TlsUnavailable)) => {
                Some((tls_failure(e), e.to_string()))
            }
            Err(_) => return,
        };
        record(
            recorder,
            domain,
            (kind, policy),
            host,
            Some(addr.ip()),
            failure,
        );
    }

    /// One session with one address: `Ok` is a per-recipient result (the server answered),
    /// `Err` a failure of the whole attempt with this address. The session is a kept one
    /// ([`ConnectionCache`]) when there is one, and is kept for the next delivery afterwards.
    async fn try_address(
        &self,
        host: &str,
        addr: SocketAddr,
        attempt: &Attempt<'_>,
        security: Security,
    ) -> Tried {
        let sender = match attempt.sender {
            None => ReversePath::Null,
            Some(s) => match Mailbox::parse(s) {
                Ok(m) => ReversePath::Mailbox(m),
                Err(_) => {
                    return Tried::answered(smtpkit_queue::all(
                        attempt.recipients.len(),
                        &Outcome::Permanent {
                            reply: "553 5.1.7 The sender address is not valid".to_owned(),
                            remote: None,
                        },
                    ));
                }
            },
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; attempt.recipients.len()];
        let mut recipients = Vec::with_capacity(attempt.recipients.len());
        let mut index = Vec::with_capacity(attempt.recipients.len());
        for (i, r) in attempt.recipients.iter().enumerate() {
            match Mailbox::parse(r) {
                Ok(m) => {
                    recipients.push(Recipient::new(ForwardPath::Mailbox(m)));
                    index.push(i);
                }
                Err(_) => {
                    outcomes[i] = Some(Outcome::Permanent {
                        reply: "553 5.1.3 The recipient address is not valid".to_owned(),
                        remote: None,
                    });
                }
            }
        }
        if recipients.is_empty() {
            // No address the server could be asked about: no session either.
            return Tried::answered(outcomes.into_iter().flatten().collect());
        }
        let key = self.connections.as_ref().and_then(|_| {
            Some(Key {
                addr,
                host: host.to_owned(),
                class: self.class(&security)?,
            })
        });
        let kept = self
            .connections
            .as_ref()
            .zip(key.as_ref())
            .and_then(|(cache, key)| cache.take(key));
        let reused = kept.is_some();
        let mut session = match kept {
            Some(session) => session,
            None => match self.open(host, addr, security.clone()).await {
                Ok(session) => session,
                Err(e) => return Tried::failed(e),
            },
        };
        let envelope = Envelope::new(sender, &recipients);
        let mut sent = session
            .conn
            .send(&envelope, Body::Bytes(attempt.content))
            .await;
        let mut fresh = !reused;
        if reused && died_waiting(&sent, &session.conn) {
            // The kept session ended while it waited (the server's idle timeout, say): nothing
            // was accepted on it, so the message goes again on a new one.
            debug!(host, %addr, "kept session no longer usable; opening a new one");
            session = match self.open(host, addr, security).await {
                Ok(session) => session,
                Err(e) => return Tried::failed(e),
            };
            fresh = true;
            sent = session
                .conn
                .send(&envelope, Body::Bytes(attempt.content))
                .await;
        }
        let delivery = match sent {
            Ok(delivery) => delivery,
            Err(e) => return Tried::failed(e),
        };
        for (i, result) in index.into_iter().zip(delivery.recipients) {
            let remote = Some(host.to_owned());
            outcomes[i] = Some(match result {
                Ok(reply) => Outcome::Delivered {
                    reply: show(&reply),
                    remote,
                },
                Err(e) => outcome_of(&e, remote),
            });
        }
        match (&self.connections, key) {
            (Some(cache), Some(key)) => cache.put(key, session),
            // The message is the server's now; a failing QUIT changes nothing.
            _ => {
                let _ = session.conn.quit().await;
            }
        }
        Tried {
            result: Ok(outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome::Temporary {
                        reply: "no result".to_owned(),
                        remote: None,
                    })
                })
                .collect()),
            fresh,
        }
    }

    /// A new session with `addr`: connected, greeted, EHLO, TLS as `security` says, and AUTH to
    /// the smart host.
    async fn open(
        &self,
        host: &str,
        addr: SocketAddr,
        security: Security,
    ) -> Result<Session, Error> {
        let tls = self.tls_for(host, security);
        let opened = Instant::now();
        let mut conn = match tokio::time::timeout(
            self.connect_timeout,
            client::connect(addr, Arc::clone(&self.client), tls),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => return Err(Error::Timeout),
        };
        if let Some((user, password)) = self.smart_host.as_ref().and_then(|s| s.auth.as_ref()) {
            conn.auth(&Sasl::Plain { user, password }).await?;
        }
        Ok(Session { conn, opened })
    }

    /// Which kept sessions a delivery under `security` may use; `None`: it keeps none.
    fn class(&self, security: &Security) -> Option<Class> {
        if self.smart_host.is_some() {
            return Some(Class::SmartHost);
        }
        match security {
            Security::Plaintext => Some(Class::Plaintext),
            Security::Opportunistic if self.starttls => Some(Class::Opportunistic),
            // `tls_for` opens these without TLS.
            Security::Opportunistic => Some(Class::Plaintext),
            Security::Verified => Some(Class::Verified),
            // Trusted by one lookup's TLSA records: not for the next delivery.
            Security::Pinned(_) => None,
        }
    }
}

/// Whether a transaction on a kept session failed because the session had ended: it failed
/// whole (short of refusing to send at all), or no recipient was accepted and the server has
/// closed the session (its `421` to MAIL, read after an idle timeout).
fn died_waiting(sent: &Result<Delivery, Error>, conn: &client::Connection) -> bool {
    match sent {
        Err(Error::Usage(_)) => false,
        Err(_) => true,
        Ok(delivery) => !conn.is_open() && delivery.recipients.iter().all(Result::is_err),
    }
}

/// What [`SmtpTransport::try_address`] got, and whether it opened a session for it: TLS-RPT
/// counts sessions, not the deliveries over a kept one.
#[derive(Debug)]
struct Tried {
    result: Result<Vec<Outcome>, Error>,
    fresh: bool,
}

impl Tried {
    fn answered(outcomes: Vec<Outcome>) -> Self {
        Self {
            result: Ok(outcomes),
            fresh: false,
        }
    }

    /// TLS-RPT looks only at the error of a failure: whether a session was opened is moot.
    fn failed(e: Error) -> Self {
        Self {
            result: Err(e),
            fresh: true,
        }
    }
}

impl<R: MxResolver> SmtpTransport<R> {
    /// The MTA-STS policy in force for `domain`; a failed fetch is recorded and means none.
    async fn policy(&self, domain: &str) -> Option<Arc<Policy>> {
        let sts = self
            .mta_sts
            .as_ref()
            .filter(|_| self.smart_host.is_none())?;
        match sts.policy(domain).await {
            Found::Nothing => None,
            Found::Policy(p) => Some(p),
            Found::FetchFailed(e) => {
                info!(
                    domain,
                    error = e.as_str(),
                    "MTA-STS policy not available; delivering as without one"
                );
                if let Some(recorder) = &self.tls_report {
                    recorder.record(tls_report::Session {
                        day: String::new(),
                        domain: domain.to_owned(),
                        policy: PolicyType::Sts,
                        policy_string: Vec::new(),
                        mx: String::new(),
                        ip: None,
                        failure: Some(Failure::StsPolicyFetchError),
                        detail: e,
                    });
                }
                None
            }
        }
    }
}

impl<R: MxResolver> SmtpTransport<R> {
    /// `host`'s validated TLSA records as a client configuration that checks them (and the
    /// records as text, for reports); `None` without DANE; `Err` (defer this host) when the
    /// lookup failed or did not validate.
    async fn dane(
        &self,
        domain: &str,
        host: &str,
    ) -> Result<Option<(Arc<rustls::ClientConfig>, Vec<String>)>, Outcome> {
        let Some(resolver) = self.dane.as_ref().filter(|_| self.smart_host.is_none()) else {
            return Ok(None);
        };
        let records = match dane::lookup(resolver, host, self.port).await {
            dane::Found::Nothing => return Ok(None),
            dane::Found::Records(records) => records,
            dane::Found::Failed(e) => {
                if let Some(recorder) = &self.tls_report {
                    let failure = Some((Failure::DnssecInvalid, e.clone()));
                    record(
                        recorder,
                        domain,
                        (PolicyType::Tlsa, &[]),
                        host,
                        None,
                        failure,
                    );
                }
                return Err(Outcome::Temporary {
                    reply: format!("DANE: {host}: {e}"),
                    remote: Some(host.to_owned()),
                });
            }
        };
        let text = records.iter().map(dane::Tlsa::to_text).collect();
        let provider = Arc::clone(self.verified.crypto_provider());
        match dane::DaneVerifier::new(records, provider).client_config() {
            Ok(config) => Ok(Some((Arc::new(config), text))),
            Err(e) => Err(Outcome::Temporary {
                reply: format!("DANE: {host}: {e}"),
                remote: Some(host.to_owned()),
            }),
        }
    }
}

impl<R: MxResolver> Transport for SmtpTransport<R> {
    async fn deliver(&self, attempt: Attempt<'_>) -> Vec<Outcome> {
        let domain = attempt.domain;
        let mut hosts = match self.hosts(domain).await {
            Ok(hosts) => hosts,
            Err(RouteError::Permanent(e)) => {
                return smtpkit_queue::all(
                    attempt.recipients.len(),
                    &Outcome::Permanent {
                        reply: e,
                        remote: None,
                    },
                );
            }
            Err(e) => {
                return smtpkit_queue::all(
                    attempt.recipients.len(),
                    &Outcome::Temporary {
                        reply: e.to_string(),
                        remote: None,
                    },
                );
            }
        };
        let policy = self.policy(domain).await;
        if let Some(p) = &policy {
            let unlisted: Vec<String> = hosts
                .iter()
                .filter(|(h, _)| !p.matches(h))
                .map(|(h, _)| h.clone())
                .collect();
            if let Some(recorder) = &self.tls_report {
                for host in &unlisted {
                    let detail = format!("MX host {host} is not in the MTA-STS policy");
                    record(
                        recorder,
                        domain,
                        (PolicyType::Sts, &p.lines),
                        host,
                        None,
                        Some((Failure::ValidationFailure, detail)),
                    );
                }
            }
            if p.mode == Mode::Enforce {
                hosts.retain(|(h, _)| p.matches(h));
                if hosts.is_empty() {
                    return smtpkit_queue::all(
                        attempt.recipients.len(),
                        &Outcome::Temporary {
                            reply: format!(
                                "MTA-STS policy of {domain} (enforce): no MX host ({}) matches its mx: {}",
                                unlisted.join(", "),
                                p.mx.join(", ")
                            ),
                            remote: None,
                        },
                    );
                }
            }
        }
        let enforce = policy.as_ref().is_some_and(|p| p.mode == Mode::Enforce);
        let mut last = Outcome::Temporary {
            reply: format!("no host of {domain} could be reached"),
            remote: None,
        };
        for (host, addrs) in hosts {
            // DANE outranks MTA-STS for a host with TLSA records (RFC 8461 2).
            let pinned = match self.dane(domain, &host).await {
                Ok(pinned) => pinned,
                Err(outcome) => {
                    last = outcome;
                    continue;
                }
            };
            for addr in addrs {
                if let Some((config, records)) = &pinned {
                    let tried = self
                        .try_address(&host, addr, &attempt, Security::Pinned(Arc::clone(config)))
                        .await;
                    self.report(domain, (PolicyType::Tlsa, records), &host, addr, &tried);
                    match tried.result {
                        Ok(outcomes) => return outcomes,
                        Err(e @ (Error::Tls(_) | Error::TlsUnavailable)) => {
                            last = Outcome::Temporary {
                                reply: format!("DANE: {host}: {e}"),
                                remote: Some(host.clone()),
                            };
                        }
                        Err(e) => {
                            last = outcome_of(&e, Some(host.clone()));
                            if matches!(last, Outcome::Permanent { .. }) {
                                return smtpkit_queue::all(attempt.recipients.len(), &last);
                            }
                        }
                    }
                    continue;
                }
                let mut tried = match &policy {
                    Some(p) => {
                        let checked = self
                            .try_address(&host, addr, &attempt, Security::Verified)
                            .await;
                        self.report(domain, (PolicyType::Sts, &p.lines), &host, addr, &checked);
                        if let Err(e @ (Error::Tls(_) | Error::TlsUnavailable)) = &checked.result
                            && enforce
                        {
                            // RFC 8461 5.1: a temporary failure, never plaintext.
                            debug!(host = host.as_str(), %addr, error = %e, "MTA-STS: no verified TLS");
                            last = Outcome::Temporary {
                                reply: format!("MTA-STS policy of {domain} (enforce): {host}: {e}"),
                                remote: Some(host.clone()),
                            };
                            continue;
                        }
                        if matches!(checked.result, Err(Error::Tls(_) | Error::TlsUnavailable)) {
                            self.try_address(&host, addr, &attempt, Security::Opportunistic)
                                .await
                        } else {
                            checked
                        }
                    }
                    None => {
                        self.try_address(&host, addr, &attempt, Security::Opportunistic)
                            .await
                    }
                };
                // Opportunistic TLS that fails is not worth the message: like Postfix at the
                // `may` level, the same host is tried again in plaintext.
                if matches!(tried.result, Err(Error::Tls(_)))
                    && self.smart_host.is_none()
                    && !enforce
                {
                    debug!(host = host.as_str(), %addr, "STARTTLS failed; trying without TLS");
                    tried = self
                        .try_address(&host, addr, &attempt, Security::Plaintext)
                        .await;
                }
                match tried.result {
                    Ok(outcomes) => return outcomes,
                    Err(e) => {
                        debug!(host = host.as_str(), %addr, error = %e, "delivery attempt failed");
                        last = outcome_of(&e, Some(host.clone()));
                        // A 5xx to the session or the whole transaction is the domain's
                        // answer; anything else may go better elsewhere.
                        if matches!(last, Outcome::Permanent { .. }) {
                            return smtpkit_queue::all(attempt.recipients.len(), &last);
                        }
                    }
                }
            }
        }
        smtpkit_queue::all(attempt.recipients.len(), &last)
    }
}

fn record(
    recorder: &Recorder,
    domain: &str,
    (kind, policy): (PolicyType, &[String]),
    host: &str,
    ip: Option<IpAddr>,
    failure: Option<(Failure, String)>,
) {
    let (failure, detail) = failure.map_or((None, String::new()), |(f, d)| (Some(f), d));
    recorder.record(tls_report::Session {
        day: String::new(),
        domain: domain.to_owned(),
        policy: kind,
        policy_string: policy.to_vec(),
        mx: host.to_owned(),
        ip,
        failure,
        detail,
    });
}

/// The RFC 8460 result type of a TLS failure, from rustls' certificate error when there is one.
fn tls_failure(e: &Error) -> Failure {
    use rustls::CertificateError as C;
    let Error::Tls(io) = e else {
        return Failure::StarttlsNotSupported;
    };
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::Expired | C::ExpiredContext { .. } => Failure::CertificateExpired,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                Failure::CertificateHostMismatch
            }
            C::UnknownIssuer | C::BadSignature => Failure::CertificateNotTrusted,
            _ => Failure::ValidationFailure,
        },
        _ => Failure::ValidationFailure,
    }
}

fn outcome_of(e: &Error, remote: Option<String>) -> Outcome {
    let reply = match e.reply() {
        Some(r) => show(r),
        None => e.to_string(),
    };
    if e.is_temporary() {
        Outcome::Temporary { reply, remote }
    } else {
        Outcome::Permanent { reply, remote }
    }
}

/// `550 5.1.1 text`, one line.
fn show(reply: &Reply<'_>) -> String {
    let text = reply.lines().collect::<Vec<_>>().join(" ");
    match reply.enhanced() {
        // The text already starts with the enhanced code when the server sent one.
        Some(e) if !text.starts_with(&e.to_string()) => format!("{} {e} {text}", reply.code()),
        _ => format!("{} {text}", reply.code()),
    }
}

fn smart_host(s: &config::SmartHost) -> Result<SmartHost, String> {
    let (host, port) = s
        .address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
        .ok_or_else(|| {
            format!(
                "delivery.smart_host.address `{}` is not host:port",
                s.address
            )
        })?;
    let mode = match s.tls.as_str() {
        "none" => None,
        "implicit" => Some(TlsMode::Implicit),
        _ => Some(TlsMode::Required),
    };
    let tls = match mode {
        None => None,
        Some(mode) => {
            let name = if s.tls_name.is_empty() {
                host.as_str()
            } else {
                s.tls_name.as_str()
            };
            let settings = match &s.ca {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("delivery.smart_host.ca {}: {e}", path.display()))?;
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                    TlsSettings::with_roots(roots, name, mode)
                }
                None => TlsSettings::webpki(name, mode),
            };
            Some(settings.map_err(|e| format!("delivery.smart_host.tls_name `{name}`: {e}"))?)
        }
    };
    let auth = s
        .user
        .clone()
        .map(|u| (u, s.password.clone().unwrap_or_default()));
    Ok(SmartHost {
        host,
        port,
        tls,
        auth,
    })
}

/// rustls for sessions a policy wants verified: the web PKI roots and `ca`'s certificates.
fn verified_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        let pem = std::fs::read(path)
            .map_err(|e| format!("delivery.mta_sts.ca {}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(client::client_config(roots))
}
