//! Inbound mail authentication for any smtpkit handler: SPF (RFC 7208) for the HELO and MAIL
//! FROM identities, DKIM (RFC 6376, RSA and Ed25519) and ARC (RFC 8617) verification, DMARC
//! (RFC 7489) alignment and policy, and iprev, recorded as `Authentication-Results:` (RFC 8601)
//! and `Received-SPF:` header fields.
//!
//! The checks, the DNS and the crypto are Stalwart's `mail-auth` (pinned at 0.13.3) with the
//! hickory resolver it re-exports ([`hickory_resolver`]); this crate adds what a server needs
//! around them: the body hashed as it streams, record caches shared by every session, the
//! removal of forged results, and one [`Report`] per message with the policy decision.
//!
//! # Using it from a handler
//!
//! 1. Build one [`Authenticator`] for the server from a resolver configuration and share it.
//! 2. At MAIL FROM, [`Authenticator::check_spf`] gives the HELO and MAIL FROM results
//!    ([`Spf`]); a handler may refuse an SPF `fail` there.
//! 3. At DATA, [`Authenticator::message`] starts a [`MessageStream`]. Feed it every content
//!    chunk with [`MessageStream::write`], and store what it hands back (the header block
//!    without forged results, then body bytes) instead of the raw chunk.
//! 4. At the end of data, [`MessageStream::end`] hands back what is left, and
//!    [`Authenticator::verify`] runs DKIM, ARC and DMARC and returns the [`Report`]: the header
//!    fields to prepend, a summary for the log line, and the DMARC [`Disposition`].
//!
//! # Streaming: what is held and why
//!
//! mail-auth's verifiers take an [`AuthenticatedMessage`], which borrows the whole raw message
//! and hashes its body when it is parsed. Its fields are public, though, and its body
//! canonicalizer ([`BodyHasher`](mail_auth::dkim::canonicalize::BodyHasher)) is public and
//! incremental. So [`MessageStream`] keeps only the header block (needed whole anyway: every
//! signature covers header fields, and forged `Authentication-Results` must be removed before
//! the header is stored), bounded by [`DEFAULT_HEADER_LIMIT`]; when the header block ends it
//! learns which (canonicalization, hash) pairs the signatures ask for and hashes each body
//! chunk as it passes. At the end the header block is parsed into an `AuthenticatedMessage`
//! with an empty body and the streamed body hashes are put in place of the empty ones before
//! DKIM and ARC run. No copy of the body is kept. Signatures with an `l=` body length are
//! refused as mail-auth's strict mode does (they let anyone append content).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use mail_auth;
pub use mail_auth::hickory_resolver;

use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, MessageAuthenticator, Parameters, SpfOutput,
    dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};

mod cache;
mod report;
mod special_use;
mod stream;
mod strip;

pub use cache::{Caches, LruCache, TxtCache};
pub use report::{Disposition, DkimSummary, DmarcSummary, Iprev, Report, Spf};
pub use stream::{MessageStream, Passed};
pub use strip::remove_own_results;

/// The largest header block [`MessageStream`] holds, 256 KiB: far above real mail (Postfix
/// keeps 100 KiB of it, `header_size_limit`), small enough to hold for thousands of sessions.
pub const DEFAULT_HEADER_LIMIT: usize = 256 * 1024;

/// Why an [`Authenticator`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The resolver configuration was refused.
    #[error("resolver: {0}")]
    Resolver(String),
}

/// A resolver configuration that asks `servers` (ip:port, UDP then TCP) and nothing else.
#[must_use]
pub fn nameservers(servers: &[SocketAddr]) -> ResolverConfig {
    use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig};
    let servers = servers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    ResolverConfig::from_name_servers(servers)
}

/// What the checks of one session need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name as the client gave it.
    pub helo: &'a str,
    /// The MAIL FROM address without angle brackets; empty for the null sender.
    pub mail_from: &'a str,
}

/// The checks, shared by every session of a server: a resolver and its record caches.
/// Cloning is cheap and clones share the caches.
#[derive(Clone)]
pub struct Authenticator {
    resolver: MessageAuthenticator,
    caches: Arc<Caches>,
    authserv_id: Arc<str>,
    header_limit: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("authserv_id", &self.authserv_id)
            .field("header_limit", &self.header_limit)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks through the nameservers of `config` with `opts` (timeouts, attempts, hickory's
    /// own cache size), parsed records cached in [`Caches`] of `cache_size` entries per record
    /// type. `authserv_id` names this server in `Authentication-Results` (RFC 8601 2.5): its
    /// host name.
    pub fn new(
        config: ResolverConfig,
        opts: ResolverOpts,
        cache_size: usize,
        authserv_id: &str,
    ) -> Result<Self, Error> {
        Self::with_caches(config, opts, Arc::new(Caches::new(cache_size)), authserv_id)
    }

    /// [`new`](Self::new) with caches the caller owns, for example shared across a reload.
    pub fn with_caches(
        config: ResolverConfig,
        opts: ResolverOpts,
        caches: Arc<Caches>,
        authserv_id: &str,
    ) -> Result<Self, Error> {
        let resolver =
            MessageAuthenticator::new(config, opts).map_err(|e| Error::Resolver(e.to_string()))?;
        Ok(Self {
            resolver,
            caches,
            authserv_id: Arc::from(authserv_id),
            header_limit: DEFAULT_HEADER_LIMIT,
        })
    }

    /// Holds header blocks of up to `limit` octets (default [`DEFAULT_HEADER_LIMIT`]).
    #[must_use]
    pub fn with_header_limit(mut self, limit: usize) -> Self {
        self.header_limit = limit;
        self
    }

    /// The name this server writes in `Authentication-Results`.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// The record caches.
    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// The resolver mail-auth runs on, for lookups of the caller's own.
    pub fn resolver(&self) -> &MessageAuthenticator {
        &self.resolver
    }

    fn params<P>(&self, params: P) -> cache::CachedParameters<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.caches.txt)
            .with_mx_cache(&self.caches.mx)
            .with_ipv4_cache(&self.caches.ipv4)
            .with_ipv6_cache(&self.caches.ipv6)
            .with_ptr_cache(&self.caches.ptr)
    }

    /// SPF for the HELO identity and then the MAIL FROM identity (RFC 7208 2.3, 2.4): what a
    /// server checks when MAIL FROM arrives. For the null sender the MAIL FROM identity is
    /// `postmaster@` the HELO name, so its result is the HELO result.
    pub async fn check_spf(&self, facts: SessionFacts<'_>) -> Spf {
        let host = &*self.authserv_id;
        let helo = self
            .resolver
            .verify_spf(self.params(SpfParameters::verify_ehlo(facts.ip, facts.helo, host)))
            .await;
        let mail_from = if facts.mail_from.is_empty() {
            helo.clone()
        } else {
            self.resolver
                .verify_spf(self.params(SpfParameters::verify_mail_from(
                    facts.ip,
                    facts.helo,
                    host,
                    facts.mail_from,
                )))
                .await
        };
        Spf { helo, mail_from }
    }

    /// Forward-confirmed reverse DNS of `ip` through mail-auth, for handlers that have no
    /// reverse-DNS result of their own (smtpkit-server's `ReverseDns` gives one per session).
    pub async fn check_iprev(&self, ip: IpAddr) -> Iprev {
        Iprev::from_output(&self.resolver.verify_iprev(self.params(ip)).await)
    }

    /// A stream for one message's content; see [`MessageStream`].
    pub fn message(&self) -> MessageStream {
        MessageStream::new(self.header_limit, Arc::clone(&self.authserv_id))
    }

    /// DKIM, ARC and DMARC for the message `stream` took in (after [`MessageStream::end`]),
    /// and the header fields recording them with `spf` and `iprev`.
    pub async fn verify(
        &self,
        stream: &MessageStream,
        facts: SessionFacts<'_>,
        spf: &Spf,
        iprev: &Iprev,
    ) -> Report {
        let message = stream
            .authenticated_message()
            .unwrap_or_else(|| AuthenticatedMessage {
                raw_message: b"",
                ..AuthenticatedMessage::default()
            });
        let dkim = self.resolver.verify_dkim(self.params(&message)).await;
        let dkim = report::body_mismatch_fails(&dkim);
        let arc = self.resolver.verify_arc(self.params(&message)).await;
        // RFC 7489 4.1: the SPF identity DMARC aligns is MAIL FROM's domain, or the HELO name's
        // for the null sender (whose SPF result is then the HELO result).
        let mail_from_domain = facts
            .mail_from
            .rsplit_once('@')
            .map_or(facts.helo, |(_, d)| d);
        let spf_for_dmarc: &SpfOutput = &spf.mail_from;
        let dmarc = if message.from.is_empty() {
            None
        } else {
            Some(
                self.resolver
                    .verify_dmarc(self.params(DmarcParameters::new(
                        &message,
                        &dkim,
                        mail_from_domain,
                        spf_for_dmarc,
                    )))
                    .await,
            )
        };
        Report::new(
            &self.authserv_id,
            facts,
            &message,
            spf,
            &dkim,
            &arc,
            dmarc.as_ref(),
            iprev,
        )
    }
}
