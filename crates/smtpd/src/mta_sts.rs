//! MTA-STS (RFC 8461): whether a destination domain wants its mail over TLS with a checked
//! certificate, to which MX hosts.
//!
//! For each domain: the `_mta-sts.DOMAIN` TXT record (`v=STSv1; id=...`, parsed by mail-auth),
//! then the policy from `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (certificate checked
//! against the web PKI, no redirects, at most [`MAX_POLICY`] octets, a timeout). A policy is
//! cached for its `max_age` and fetched again when the TXT record's `id` changes; a domain
//! whose TXT record vanishes or whose server fails keeps its cached policy until it expires
//! (RFC 8461 5.1), so an attacker who blocks the fetch cannot downgrade a known domain. With
//! [`MtaSts::with_store`], cached policies are also kept as files (`DOMAIN.json`: id, expiry,
//! text) so a restart does not open that window again (RFC 8461 10.2).
//!
//! The GET is HTTP/1.0 over tokio-rustls rather than hyper: one request, `Connection: close`,
//! a body read to EOF under a size limit, and any status but 200 a failure (redirects are not
//! followed, RFC 8461 3.3). HTTP/1.0 rules out chunked bodies, so about forty lines do it and
//! no HTTP stack joins the dependency graph.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use mail_auth::common::parse::TxtRecordParser;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest policy accepted, in octets (RFC 8461 3.3 suggests 64 KiB).
pub const MAX_POLICY: usize = 64 * 1024;

/// The longest a policy is cached, whatever it says (RFC 8461 3.2: `max_age` is at most
/// 31557600, a year).
const MAX_AGE: u64 = 31_557_600;

/// A policy's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only matching MX hosts, only with TLS and a valid certificate; otherwise defer.
    Enforce,
    /// Deliver as without a policy, but record what would have failed.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    /// As written in the policy.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }
}

/// A parsed policy (RFC 8461 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What a sender does about it.
    pub mode: Mode,
    /// MX host patterns: a name, or `*.` and a name for one more label on the left.
    pub mx: Vec<String>,
    /// Seconds it may be cached.
    pub max_age: u64,
    /// The text as served, one entry per line, for TLS reports (`policy-string`).
    pub lines: Vec<String>,
}

impl Policy {
    /// Parses the policy text: `key: value` lines, CRLF or LF; `version: STSv1`, `mode` and
    /// `max_age` required, `mx` required unless the mode is `none`; unknown keys ignored.
    ///
    /// # Errors
    ///
    /// Says which required field is missing or wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            lines.push(line.to_owned());
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_owned()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode `{other}`")),
                    });
                }
                "max_age" => {
                    max_age = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("max_age `{value}` is not a number"))?
                            .min(MAX_AGE),
                    );
                }
                "mx" => mx.push(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("version is not STSv1".to_owned());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("no mx".to_owned());
        }
        Ok(Self {
            mode,
            mx,
            max_age,
            lines,
        })
    }

    /// Whether the MX host `host` is one the policy names (RFC 8461 4.1: a wildcard stands
    /// for exactly one label).
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

/// What applies to a domain.
#[derive(Debug, Clone)]
pub enum Found {
    /// No MTA-STS record, or a policy in mode `none`.
    Nothing,
    /// A policy in effect.
    Policy(Arc<Policy>),
    /// The domain has a record, but no policy could be had: delivery goes on as without one
    /// (RFC 8461 5), and TLS-RPT hears of it (`sts-policy-fetch-error`).
    FetchFailed(String),
}

struct Cached {
    id: String,
    policy: Arc<Policy>,
    expires: SystemTime,
}

/// A cached policy as stored on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    id: String,
    /// Seconds since the Unix epoch.
    expires: u64,
    policy: String,
}

/// `[delivery.mta_sts]`'s lookups and their cache.
pub struct MtaSts {
    resolver: TokioResolver,
    tls: TlsConnector,
    port: u16,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    store: Option<PathBuf>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MtaSts {
    /// Looks policies up with `resolver`, fetches them over HTTPS on `port` (443 but in tests)
    /// with certificates checked by `tls`, each fetch bounded by `timeout`.
    #[must_use]
    pub fn new(
        resolver: TokioResolver,
        tls: Arc<rustls::ClientConfig>,
        port: u16,
        timeout: Duration,
    ) -> Self {
        Self {
            resolver,
            tls: TlsConnector::from(tls),
            port,
            timeout,
            cache: Mutex::new(HashMap::new()),
            store: None,
        }
    }

    /// Keeps cached policies in `directory` too (created when missing), and reads them back
    /// after a restart.
    #[must_use]
    pub fn with_store(mut self, directory: PathBuf) -> Self {
        self.store = Some(directory);
        self
    }

    /// The file of `domain`'s policy; `None` for a name that is no safe file name.
    fn stored_path(&self, domain: &str) -> Option<PathBuf> {
        let dir = self.store.as_ref()?;
        let safe = !domain.is_empty()
            && !domain.starts_with('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        safe.then(|| dir.join(format!("{domain}.json")))
    }

    fn load(&self, domain: &str) -> Option<Cached> {
        let text = std::fs::read_to_string(self.stored_path(domain)?).ok()?;
        let stored: Stored = serde_json::from_str(&text).ok()?;
        Some(Cached {
            id: stored.id,
            policy: Arc::new(Policy::parse(&stored.policy).ok()?),
            expires: SystemTime::UNIX_EPOCH + Duration::from_secs(stored.expires),
        })
    }

    /// Writes the policy through a temporary file and a rename, without fsync: losing it in a
    /// crash only means fetching it again.
    fn save(&self, domain: &str, cached: &Cached) {
        let Some(path) = self.stored_path(domain) else {
            return;
        };
        let stored = Stored {
            id: cached.id.clone(),
            expires: cached
                .expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            policy: cached.policy.lines.join("\n"),
        };
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&stored).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "MTA-STS policy not kept on disk");
        }
    }

    fn cached(&self, domain: &str, id: Option<&str>) -> Option<Arc<Policy>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(domain)
            && let Some(loaded) = self.load(domain)
        {
            cache.insert(domain.to_owned(), loaded);
        }
        cache
            .get(domain)
            .filter(|c| c.expires > SystemTime::now() && id.is_none_or(|id| id == c.id))
            .map(|c| Arc::clone(&c.policy))
    }

    /// The policy for `domain` (lowercase): from the cache while its id is current, fetched
    /// otherwise.
    pub async fn policy(&self, domain: &str) -> Found {
        // No record, or DNS trouble: a cached policy stays in force until it expires.
        let Ok(Some(id)) = self.record_id(domain).await else {
            return self.cached(domain, None).map_or(Found::Nothing, found);
        };
        if let Some(policy) = self.cached(domain, Some(&id)) {
            return found(policy);
        }
        match tokio::time::timeout(self.timeout, self.fetch(domain)).await {
            Ok(Ok(policy)) => {
                let policy = Arc::new(policy);
                let cached = Cached {
                    id,
                    policy: Arc::clone(&policy),
                    expires: SystemTime::now() + Duration::from_secs(policy.max_age),
                };
                self.save(domain, &cached);
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(domain.to_owned(), cached);
                found(policy)
            }
            Ok(Err(e)) => self.stale_or(domain, e),
            Err(_) => self.stale_or(domain, "timed out".to_owned()),
        }
    }

    fn stale_or(&self, domain: &str, error: String) -> Found {
        self.cached(domain, None).map_or_else(
            || Found::FetchFailed(format!("MTA-STS policy of {domain}: {error}")),
            found,
        )
    }

    /// The `id` of the domain's one `v=STSv1` TXT record; `None` without one (several are
    /// none too, RFC 8461 3.1).
    async fn record_id(&self, domain: &str) -> Result<Option<String>, String> {
        let lookup = match self
            .resolver
            .txt_lookup(format!("_mta-sts.{domain}."))
            .await
        {
            Ok(lookup) => lookup,
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let records: Vec<Vec<u8>> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.concat()),
                _ => None,
            })
            .filter(|r| r.starts_with(b"v=STSv1"))
            .collect();
        match records.as_slice() {
            [one] => Ok(mail_auth::mta_sts::MtaSts::parse(one).ok().map(|r| r.id)),
            _ => Ok(None),
        }
    }

    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let ips: Vec<IpAddr> = self
            .resolver
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .iter()
            .collect();
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let mut last = format!("{host} has no address");
        for ip in ips {
            match self
                .get(SocketAddr::new(ip, self.port), &host, name.clone())
                .await
            {
                Ok(text) => {
                    return Policy::parse(&text).map_err(|e| format!("invalid policy: {e}"));
                }
                Err(e) => last = format!("https://{host}/ ({ip}): {e}"),
            }
        }
        Err(last)
    }

    async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        name: ServerName<'static>,
    ) -> Result<String, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Headers on top of the policy: 4 KiB is far more than a server sends.
        let limit = MAX_POLICY + 4096;
        let mut response = Vec::new();
        (&mut tls)
            .take(limit as u64 + 1)
            .read_to_end(&mut response)
            .await
            // A server that closes without close_notify has still sent its whole body.
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Ok(0)
                } else {
                    Err(e.to_string())
                }
            })?;
        body(&response, limit)
    }
}

fn found(policy: Arc<Policy>) -> Found {
    if policy.mode == Mode::None {
        Found::Nothing
    } else {
        Found::Policy(policy)
    }
}

/// The body of an HTTP/1.x response that must be `200` with `text/plain`.
fn body(response: &[u8], limit: usize) -> Result<String, String> {
    if response.len() > limit {
        return Err(format!("the response is over {limit} octets"));
    }
    let end = memchr::memmem::find(response, b"\r\n\r\n").ok_or("no end of the response header")?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| "header is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        // Redirects too: RFC 8461 3.3 forbids following them.
        return Err(format!("HTTP status `{status}`"));
    }
    let plain = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("content-type")
                && v.trim().to_ascii_lowercase().starts_with("text/plain")
        })
    });
    if !plain {
        return Err("Content-Type is not text/plain".to_owned());
    }
    String::from_utf8(response[end + 4..].to_vec()).map_err(|_| "policy is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx.b.test\r\nmx: *.backup.test\r\nmax_age: 86400\r\n";

    #[test]
    fn parses_rfc_8461_policies() {
        let p = Policy::parse(POLICY).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, ["mx.b.test", "*.backup.test"]);
        assert_eq!(p.max_age, 86400);
        assert_eq!(p.lines.len(), 5);
        let lf =
            Policy::parse("version: STSv1\nmode: testing\nmx: a\nmax_age: 99999999999\nx: y\n");
        assert_eq!(lf.unwrap().max_age, MAX_AGE);
        assert!(Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
        for bad in [
            "mode: enforce\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a\n",
            "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_one_label() {
        let p = Policy::parse(POLICY).unwrap();
        assert!(p.matches("mx.b.test"));
        assert!(p.matches("MX.B.test."));
        assert!(p.matches("one.backup.test"));
        assert!(!p.matches("backup.test"));
        assert!(!p.matches("two.one.backup.test"));
        assert!(!p.matches("evil-mx.b.test"));
    }

    /// A restarted server (a new `MtaSts` on the same directory) still knows a policy whose
    /// record has disappeared, until it expires; an expired or foreign file is no policy.
    #[tokio::test]
    async fn stored_policies_survive_a_restart_until_they_expire() {
        let dns = smtp_test::dns::TestDns::start("").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let make = || {
            let mut udp = hickory_resolver::config::ConnectionConfig::udp();
            udp.port = dns.addr().port();
            let config = hickory_resolver::config::ResolverConfig::from_name_servers(vec![
                hickory_resolver::config::NameServerConfig::new(dns.addr().ip(), true, vec![udp]),
            ]);
            let resolver = smtpkit_queue::mx::HickoryMx::with_options(
                config,
                hickory_resolver::config::ResolverOpts::default(),
            )
            .unwrap();
            let tls = smtpkit_tokio::client::client_config(rustls::RootCertStore::empty());
            MtaSts::new(
                resolver.resolver().clone(),
                Arc::new(tls),
                443,
                Duration::from_secs(1),
            )
            .with_store(dir.path().to_owned())
        };
        let first = make();
        let policy = Policy::parse(POLICY).unwrap();
        let cached = |seconds: u64| Cached {
            id: "1".to_owned(),
            policy: Arc::new(policy.clone()),
            expires: SystemTime::now() + Duration::from_secs(seconds),
        };
        first.save("b.test", &cached(3600));
        first.save("../etc", &cached(3600));
        assert!(!dir.path().join("../etc.json").exists());

        let restarted = make();
        match restarted.policy("b.test").await {
            Found::Policy(p) => assert_eq!(*p, policy),
            other => panic!("{other:?}"),
        }
        assert!(matches!(restarted.policy("c.test").await, Found::Nothing));
        let stale = Cached {
            expires: SystemTime::now() - Duration::from_secs(1),
            ..cached(0)
        };
        restarted.save("old.test", &stale);
        assert!(matches!(make().policy("old.test").await, Found::Nothing));
    }

    #[test]
    fn only_a_plain_200_is_a_policy() {
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nversion: STSv1\r\n";
        assert_eq!(body(ok, 1000).unwrap(), "version: STSv1\r\n");
        let redirect =
            b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n";
        assert!(body(redirect, 1000).unwrap_err().contains("301"));
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx";
        assert!(body(html, 1000).is_err());
        assert!(body(ok, 20).unwrap_err().contains("over 20"));
        assert!(body(b"HTTP/1.1 200 OK\r\n", 1000).is_err());
    }
}
