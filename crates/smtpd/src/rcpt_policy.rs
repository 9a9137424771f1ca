//! The optional checks of the client at RCPT: DNS blocklists ([`dnsbl`](crate::dnsbl)) then
//! greylisting ([`greylist`](crate::greylist)), in Postfix's order (a listed client is refused
//! outright; only the others are worth delaying).
//!
//! Authenticated clients and `[limits] trusted_networks` are exempt from both: they are our
//! users and our own relays. A client that passed SPF is exempt from greylisting when the
//! caller knows (`spf_pass`): its domain vouches for the address, so a delay buys nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use ipnet::IpNet;
use smtpkit_server::{Decision, EnhancedCode, SessionInfo};
use tracing::info;

use crate::config::Config;
use crate::dnsbl::{Dnsbl, List};
use crate::greylist::{Greylist, Verdict};

/// What the server checks at RCPT; built from `[dnsbl]`, `[greylist]` and
/// `[limits] trusted_networks`.
#[derive(Debug, Clone, Default)]
pub struct RcptPolicy {
    /// The blocklists, when any is configured.
    pub dnsbl: Option<Dnsbl>,
    /// The greylist store, when greylisting is on.
    pub greylist: Option<Arc<Greylist>>,
    /// Clients exempt from both.
    pub trusted: Vec<IpNet>,
}

/// What one session remembers between its RCPTs: the blocklists are asked once per session.
#[derive(Debug, Clone, Default)]
pub struct SessionPolicy {
    dnsbl: Option<Option<String>>,
}

/// One recipient, as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Rcpt<'a> {
    /// The envelope sender, as given (`<>` for bounces).
    pub sender: &'a str,
    /// The recipient, as given.
    pub recipient: &'a str,
    /// Whether SPF passed for the sender, `None` when not checked.
    pub spf_pass: Option<bool>,
}

impl RcptPolicy {
    /// The checks `config` turns on. Opens the greylist file and builds a resolver from `[dns]`,
    /// only when they are used.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let dnsbl = if config.dnsbl.lists.is_empty() {
            None
        } else {
            // The `[dns]` nameservers, with the list check's own timeout and a single try: the
            // check's timeout bounds the whole lookup.
            let (resolver_config, mut opts) = config
                .dns
                .resolver_config()
                .map_err(|e| format!("[dnsbl]: {e}"))?;
            let timeout = Duration::from_secs(config.dnsbl.timeout);
            opts.timeout = timeout;
            opts.attempts = 1;
            let resolver = TokioResolver::builder_with_config(
                resolver_config,
                TokioRuntimeProvider::default(),
            )
            .with_options(opts)
            .build()
            .map_err(|e| format!("[dnsbl]: {e}"))?;
            let lists = config
                .dnsbl
                .lists
                .iter()
                .map(|l| List {
                    zone: l.zone.clone(),
                    weight: l.weight,
                })
                .collect();
            Some(Dnsbl::new(lists, config.dnsbl.threshold, timeout, resolver))
        };
        let greylist = if config.greylist.enabled {
            let store = Greylist::open(&config.greylist.file, config.greylist.settings())
                .map_err(|e| format!("greylist.file {}: {e}", config.greylist.file.display()))?;
            Some(Arc::new(store))
        } else {
            None
        };
        Ok(Self {
            dnsbl,
            greylist,
            trusted: config.limits.trusted_networks.clone(),
        })
    }

    /// Whether the client is exempt from every check: authenticated, from a trusted network,
    /// or on a Unix socket (a local program, with no address to list or greylist).
    #[must_use]
    pub fn is_exempt(&self, info: &SessionInfo) -> bool {
        let Some(ip) = client_ip(info) else {
            return true;
        };
        info.authenticated.is_some() || self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// `None` to go on, or the refusal: `554 5.7.1` for a listed client, `451 4.7.1` for a
    /// greylisted triplet.
    pub async fn check(
        &self,
        info: &SessionInfo,
        session: &mut SessionPolicy,
        rcpt: Rcpt<'_>,
        now: SystemTime,
    ) -> Option<Decision> {
        if (self.dnsbl.is_none() && self.greylist.is_none()) || self.is_exempt(info) {
            return None;
        }
        let ip = client_ip(info)?;
        if let Some(dnsbl) = &self.dnsbl {
            if session.dnsbl.is_none() {
                let verdict = dnsbl.check(ip).await;
                session.dnsbl = Some(verdict.blocked.then(|| verdict.reply_text(ip)));
            }
            if let Some(Some(text)) = &session.dnsbl {
                info!(session = %info.id, peer = %info.peer, from = rcpt.sender, to = rcpt.recipient, "refused: {text}");
                return Some(Decision::reply(554, EnhancedCode::NOT_AUTHORIZED, text));
            }
        }
        if let Some(greylist) = &self.greylist
            && rcpt.spf_pass != Some(true)
        {
            let store = Arc::clone(greylist);
            let (sender, recipient) = (rcpt.sender.to_owned(), rcpt.recipient.to_owned());
            // The store may write its file: off the async worker.
            let verdict =
                tokio::task::spawn_blocking(move || store.check(ip, &sender, &recipient, now))
                    .await
                    // A failed check must not refuse mail.
                    .unwrap_or(Verdict::Pass);
            if let Verdict::Defer(wait) = verdict {
                info!(session = %info.id, peer = %info.peer, from = rcpt.sender, to = rcpt.recipient, "greylisted for {}s", wait.as_secs());
                // 4.7.1: "delivery not authorized, message refused" in its transient form, as
                // postgrey and Postfix answer.
                let enhanced =
                    EnhancedCode::new(4, 7, 1).unwrap_or(EnhancedCode::SECURITY_TRANSIENT);
                return Some(Decision::reply(
                    451,
                    enhanced,
                    &format!("Greylisted, please try again in {} seconds", wait.as_secs()),
                ));
            }
        }
        None
    }
}

/// The client's address, an IPv4-mapped IPv6 address as IPv4; `None` on a Unix socket.
fn client_ip(info: &SessionInfo) -> Option<IpAddr> {
    info.peer.ip().map(|ip| ip.to_canonical())
}
