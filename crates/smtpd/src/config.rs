//! The server's TOML configuration.
//!
//! [`Config::load`] reads a file, [`Config::from_str`] parses text and
//! [`Config::default_embedded`] returns the built-in default (`config/default.toml`: listen on
//! 127.0.0.1:2525, accept mail for every address at every domain into `./maildir`, never relay).
//! All three go through the same steps: parse (unknown fields are errors, and parse errors
//! name the line and column), fill in values that depend on the machine or on other fields,
//! then validate the whole configuration, reporting every problem found, each naming the
//! section it is in.
//!
//! Every field has a default, so an empty file is the same as the default configuration. The
//! defaults, and where each number comes from, are documented on the fields below and in
//! `config/example.toml`, which shows every option.
//!
//! Every option of the SMTP core is here ([`Config::server_settings`] maps them one to one onto
//! [`ServerSettings`]), and each takes its default from the library, so the two cannot drift.
//! Where smtpd deliberately differs, the field says so and why: `limits.line_length` (2048,
//! as Postfix, against the core's RFC 512) and `bare_lf` (reject, against the core's
//! normalize).
//!
//! [`Config::to_toml`] (and `Display`) prints the effective configuration, defaults included,
//! for `smtpd check-config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
pub use smtpkit_server::ListenerKind;
use smtpkit_server::{Endpoint, ServerSettings};

use crate::{password, routing};

/// The built-in default configuration file.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// A problem loading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not match the schema. The message names the line and
    /// column.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// The configuration parsed but is inconsistent; one message per problem.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's host name, used in the greeting, the EHLO reply, `Received:` headers and
    /// Maildir file names. Default: empty, meaning "detect" ([`detect_hostname`]); the loaded
    /// configuration always holds the detected name.
    #[serde(default)]
    pub hostname: String,
    /// Text after the host name in the `220` greeting. Default `"ESMTP"` (the library's):
    /// RFC 5321 §4.2 only requires the greeting to start with the host name, and naming the
    /// software helps no one but attackers.
    #[serde(default = "default_banner")]
    pub banner: String,
    /// Sockets to listen on (`[[listener]]`). Default: one plain SMTP listener on
    /// 127.0.0.1:2525, an unprivileged loopback port, so a fresh install is not an open port 25.
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<Listener>,
    /// Certificate and key for STARTTLS and implicit TLS. Default: none (no TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Local domains and their mailboxes (`[[domain]]`). Default: none.
    #[serde(default, rename = "domain")]
    pub domains: Vec<Domain>,
    /// Accounts for SMTP AUTH (`[[user]]`). Default: none.
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    /// How recipients without a `[[domain]]` are treated.
    #[serde(default)]
    pub routing: Routing,
    /// Where and how mail is stored.
    #[serde(default)]
    pub storage: Storage,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// What to do with a bare LF (an LF not preceded by CR) in message data. Default `reject`.
    #[serde(default)]
    pub bare_lf: BareLf,
    /// MAIL and AUTH need TLS first (RFC 3207 4). Default `false`.
    #[serde(default = "library_require_tls")]
    pub require_tls: bool,
    /// Offer and accept AUTH without TLS. Default `false` (RFC 8314 3): passwords would
    /// travel in clear.
    #[serde(default = "library_allow_insecure_auth")]
    pub allow_insecure_auth: bool,
    /// Postfix's `reject_unauth_pipelining`: a client that sends before the greeting, or
    /// after a command that must end a pipelined group (EHLO, DATA, ...), gets `554 5.5.0`
    /// and is disconnected. Default `false`.
    #[serde(default = "library_pipelining_sync_check")]
    pub pipelining_sync_check: bool,
    /// AUTH mechanisms offered on submission and smtps listeners, in order: smtpd checks
    /// passwords from its password file, so `PLAIN` and `LOGIN` are the ones it runs; the
    /// token mechanisms `XOAUTH2` and `OAUTHBEARER` need a token verifier smtpd does not
    /// have, and are a configuration error. Default `["PLAIN", "LOGIN"]`.
    #[serde(default = "library_auth_mechanisms")]
    pub auth_mechanisms: Vec<String>,
    /// MAIL parameter keywords accepted without being advertised (none is acted on by smtpd;
    /// this only stops the `555` for clients that send them). Default: none.
    #[serde(default)]
    pub extra_mail_params: Vec<String>,
    /// RCPT parameter keywords accepted likewise. Default: none.
    #[serde(default)]
    pub extra_rcpt_params: Vec<String>,
    /// Which ESMTP extensions are offered.
    #[serde(default)]
    pub extensions: Extensions,
    /// PROXY protocol settings.
    #[serde(default)]
    pub proxy: Proxy,
    /// Password checks and authentication failure limits.
    #[serde(default)]
    pub auth: Auth,
    /// Log line format. Default `text`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Threads that run the sessions (tokio's workers). Default: none given, one per CPU core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// The Prometheus endpoint. Default: off.
    #[serde(default)]
    pub metrics: Metrics,
    /// Who smtpd runs as once its listeners are bound.
    #[serde(default)]
    pub privileges: Privileges,
    /// Nameservers and the clients' reverse lookup (`[dns]`).
    #[serde(default)]
    pub dns: crate::dns::Dns,
    /// Submission relay: who may send mail to other domains, as which addresses.
    #[serde(default)]
    pub relay: Relay,
    /// The outbound queue: where it lives and its retry schedule.
    #[serde(default)]
    pub queue: Queue,
    /// How queued mail leaves: MX lookup, ports, TLS, an optional smart host.
    #[serde(default)]
    pub delivery: Delivery,
    /// DKIM signing keys.
    #[serde(default)]
    pub dkim: Dkim,
    /// DNS blocklists checked at RCPT. Default: none.
    #[serde(default)]
    pub dnsbl: Dnsbl,
    /// Greylisting at RCPT. Default: off.
    #[serde(default)]
    pub greylist: Greylist,
    /// Inbound mail authentication (SPF, DKIM, ARC, DMARC, iprev) and its policy; on by default.
    #[serde(default)]
    pub checks: crate::checks::Checks,
    /// Deprecated keys found while loading, each already moved to where it lives now; reported
    /// by `check-config` and at startup.
    #[serde(skip)]
    pub deprecated: Vec<String>,
}

/// `[metrics]`: an HTTP endpoint serving `GET /metrics` in the Prometheus text format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address to serve on, e.g. `"127.0.0.1:9187"`. Default: none, no endpoint. The page is
    /// unauthenticated: keep it on loopback or a management network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[privileges]`: the account smtpd switches to after binding its listeners, when started as
/// root (Postfix's `mail_owner`). Ignored when not started as root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privileges {
    /// User name (or numeric uid). Default: none: a server started as root keeps running as
    /// root, with a warning at startup and from `check-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name (or numeric gid). Default: the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Socket address, e.g. `"0.0.0.0:25"` or `"[::]:587"`, or a Unix-domain socket,
    /// `"unix:/run/smtpd/lmtp.sock"` (for LMTP from a local MTA, say; not with `smtps` or
    /// `proxy_protocol`). Required.
    pub address: Endpoint,
    /// For a `unix:` address: the socket file's permissions, in octal (`"0660"`), set before
    /// it accepts anything. Default: the umask's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SocketMode>,
    /// Protocol. Default `smtp`.
    #[serde(default = "default_kind")]
    pub kind: ListenerKind,
    /// For `smtp`, `submission` and `lmtp`: offer STARTTLS. For `smtps`: must not be `false`.
    /// Default: `true` for `smtps` and when a `[tls]` section exists, `false` otherwise. The loaded
    /// configuration always holds the effective value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Expect a PROXY protocol v1/v2 header (HAProxy) before SMTP, accepted only from
    /// `[proxy] trusted` addresses. Default `false`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Under socket activation, the name of the inherited socket to use
    /// (`FileDescriptorName=` in the systemd `.socket` unit). Default: none; an inherited
    /// socket bound to `address` is used instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Commands answered `502 5.5.1` on this listener (`"VRFY"`, `"EXPN"`, ...). Default none.
    #[serde(default)]
    pub disabled_commands: Vec<String>,
    /// EHLO keywords not offered on this listener (`"STARTTLS"`, `"SIZE"`, ...). Default none.
    #[serde(default)]
    pub hidden_extensions: Vec<String>,
    /// PEM file of the CA certificates a client certificate must lead to: TLS clients of this
    /// listener are asked for one (Node `requestCert`), and the verified chain reaches the
    /// session. Needs TLS on the listener. Default none: no certificate is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `"optional"` (a client without a certificate is served; one whose
    /// certificate does not verify is refused) or `"required"` (Node `rejectUnauthorized`).
    /// Default `"optional"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<smtpkit_server::ClientAuthMode>,
}

/// Permission bits of a socket file, written in octal (`"0660"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Serialize for SocketMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let digits = s.strip_prefix("0o").unwrap_or(&s);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(Self(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "`{s}` is not a file mode in octal (like \"0660\")"
            ))),
        }
    }
}

impl Listener {
    /// The client-certificate verification of this listener, read from `client_ca`.
    pub fn client_auth(
        &self,
    ) -> Result<Option<smtpkit_server::ClientAuth>, smtpkit_server::tls::TlsError> {
        let Some(ca) = &self.client_ca else {
            return Ok(None);
        };
        let mode = (self.client_auth).unwrap_or(smtpkit_server::ClientAuthMode::Optional);
        smtpkit_server::ClientAuth::from_pem_file(ca, mode).map(Some)
    }

    /// Where the server gets this listener's socket when nothing is inherited: the address
    /// to bind, or the Unix socket file to create with its mode.
    #[must_use]
    pub fn source(&self) -> smtpkit_server::ListenerSource {
        match (&self.address, self.address.path()) {
            (_, Some(path)) => smtpkit_server::ListenerSource::unix(path, self.mode.map(|m| m.0)),
            (address, None) => match address.tcp() {
                Some(addr) => addr.into(),
                // An unnamed Unix endpoint does not parse from a configuration.
                None => smtpkit_server::ListenerSource::unix("", None),
            },
        }
    }

    /// Whether TLS is used on this listener: STARTTLS offered, or implicit TLS for `smtps`.
    #[must_use]
    pub fn uses_tls(&self) -> bool {
        self.kind == ListenerKind::Smtps || self.tls == Some(true)
    }
}

/// `[tls]`: PEM files, read at startup. Relative paths are relative to the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, leaf first. Required.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
}

/// One `[[domain]]`: a local domain and who receives mail there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// The domain name, matched case-insensitively. Required.
    pub name: String,
    /// Local parts that have a Maildir at `<storage.maildir>/<domain>/<local part>/`.
    /// Matched case-insensitively. Default: none.
    #[serde(default)]
    pub mailboxes: Vec<String>,
    /// Alias → targets. A target is a local part in this domain or `local@domain` in another
    /// local domain, and may itself be an alias (chains up to
    /// [`routing::MAX_ALIAS_DEPTH`] steps; loops are errors). Default: none.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Where mail for unknown local parts goes (a mailbox or alias, written like an alias
    /// target). Default: none, unknown local parts are refused with `550 5.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<String>,
}

/// One `[[user]]`: an account for SMTP AUTH.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name, compared exactly. Required.
    pub name: String,
    /// Argon2 PHC string from `smtpd hash-password`. Required.
    pub password_hash: String,
}

impl fmt::Debug for User {
    // The hash is not the password, but it is offline-crackable material: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Treat every domain as local and give every address its own mailbox at
    /// `<storage.maildir>/<domain>/<local part>/` (configured domains keep their own rules).
    /// Default: `true` when there is no `[[domain]]`, `false` otherwise. The loaded
    /// configuration always holds the effective value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard: Option<bool>,
    /// Characters that start an address extension: with `"+"`, mail for `user+tag@domain`
    /// reaches `user` (unless `user+tag` is an address of its own), and the full address stays
    /// in `Delivered-To:`. Several characters are each a delimiter (Postfix's
    /// `recipient_delimiter`). Default `"+"`; `""` turns extensions off.
    #[serde(default = "default_recipient_delimiter")]
    pub recipient_delimiter: String,
}

fn default_recipient_delimiter() -> String {
    "+".to_owned()
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            wildcard: None,
            recipient_delimiter: default_recipient_delimiter(),
        }
    }
}

impl Routing {
    /// The effective wildcard flag, given the configured domains.
    #[must_use]
    pub fn is_wildcard(&self, domains: &[Domain]) -> bool {
        self.wildcard.unwrap_or(domains.is_empty())
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Root of the mailboxes (`<maildir>/<domain>/<local part>/{tmp,new,cur}`). Default
    /// `"./maildir"`.
    #[serde(default = "default_maildir")]
    pub maildir: PathBuf,
    /// Count and discard messages instead of storing them, for load tests. Default `false`.
    #[serde(default)]
    pub sink: bool,
    /// fsync each message and its `new/` directory before replying `250`. Turning it off
    /// trades durability (mail acknowledged but lost on power failure, against RFC 5321
    /// §6.1) for speed. Default `true`.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Hand local mail to this LMTP server (Dovecot's `lmtp` service) instead of writing the
    /// Maildirs: `"127.0.0.1:24"` or `"unix:/run/dovecot/lmtp"`. Its replies become the reply
    /// to DATA (`smtpd::lmtp`). Default: none (Maildir delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            maildir: default_maildir(),
            sink: false,
            fsync: true,
            lmtp: None,
        }
    }
}

/// `[extensions]`: the ESMTP extensions offered. Each default is the library's
/// (`smtpkit_proto::server::Extensions`). STARTTLS and AUTH are not here: they follow the
/// listeners' `tls` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Extensions {
    /// RFC 2920 PIPELINING. Default `true`.
    pub pipelining: bool,
    /// RFC 1870 SIZE: the limit advertised and `SIZE=` accepted. Default `true`.
    pub size: bool,
    /// RFC 6152 8BITMIME. Default `true`.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8. Default `true`.
    pub smtputf8: bool,
    /// RFC 3030 CHUNKING (BDAT). Default `true`.
    pub chunking: bool,
    /// RFC 3030 BINARYMIME; needs `chunking`. Default `true`.
    pub binary_mime: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES. Default `true`.
    pub enhanced_status_codes: bool,
    /// RFC 3461 DSN parameters (NOTIFY, ORCPT, RET, ENVID) accepted. smtpd sends no DSNs
    /// itself, so it is off by default.
    pub dsn: bool,
    /// RFC 8689 REQUIRETLS, offered over TLS. Default `false`.
    pub requiretls: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        let e = ServerSettings::default().extensions;
        Self {
            pipelining: e.pipelining,
            size: e.size,
            eight_bit_mime: e.eight_bit_mime,
            smtputf8: e.smtputf8,
            chunking: e.chunking,
            binary_mime: e.binary_mime,
            enhanced_status_codes: e.enhanced_status_codes,
            dsn: e.dsn,
            requiretls: e.requiretls,
        }
    }
}

/// `[limits]`. Defaults are the library's (`smtpkit_proto::server::Limits` and
/// `smtpkit_server::ServerSettings`), except `line_length`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in octets, advertised with SIZE (RFC 1870). Default 26214400
    /// (25 MiB): the largest message the big mailbox providers accept, so larger mail would
    /// bounce downstream anyway.
    pub message_size: u64,
    /// Recipients per message. Default 100: the minimum RFC 5321 §4.5.3.1.8 requires a server
    /// to accept.
    pub recipients: u32,
    /// Recipients over `recipients` answered `452 4.5.3` without counting as errors, so a
    /// client that sends every RCPT before DATA still delivers to the accepted ones. Default
    /// 1000, Postfix's `smtpd_recipient_overshoot_limit`.
    pub recipient_overshoot: u32,
    /// Longest command line, in octets including CRLF. Default 2048, Postfix's
    /// `line_length_limit`. The library keeps RFC 5321 §4.5.3.1.4's 512; smtpd follows
    /// Postfix because each extension (SIZE, BODY, SMTPUTF8, DSN parameters) may add to a
    /// line and real clients send long ones. Must be at least 512.
    pub line_length: u32,
    /// Protocol errors (bad syntax, bad sequence) before the session is closed with `421`.
    /// Default 20, Postfix's `smtpd_hard_error_limit`.
    pub errors: u32,
    /// NOOP, RSET, VRFY and HELP commands per session before it is closed. Default 100,
    /// Postfix's `smtpd_junk_command_limit`.
    pub junk_commands: u32,
    /// Failed AUTH attempts before the session is closed. Default 3, as most submission
    /// servers: enough for typos, too few for guessing.
    pub auth_failures: u32,
    /// Messages accepted per session. Default 1000, Exim's `smtp_accept_max_per_connection`.
    pub messages_per_session: u32,
    /// Message octets per session before `421`; 0 for no limit. Default 0.
    pub bytes_per_session: u64,
    /// Slowest DATA/BDAT transfer, in octets per second: a sender below it runs out of time
    /// about `timeouts.data_block` after the transfer started however often it sends a byte;
    /// 0 turns the check off. Default 500, Postfix's `smtpd_min_data_rate`.
    pub min_data_rate: u32,
    /// Reply octets waiting for a client that does not read before its input is no longer
    /// consumed. Default 16384; at least 512.
    pub output_buffer: u64,
    /// Concurrent connections across all listeners; more are refused with `421`. Default
    /// 1000: Postfix runs at most 100 smtpd processes (`default_process_limit`); a task is far
    /// cheaper than a process.
    pub connections: u32,
    /// Concurrent connections from one IP address. Default 50, Postfix's
    /// `smtpd_client_connection_count_limit`.
    pub connections_per_ip: u32,
    /// Client networks exempt from `connections_per_ip` (this host and its own relays).
    /// Default loopback, as Postfix exempts `$mynetworks` (`smtpd_client_event_limit_exceptions`);
    /// `[]` exempts no one.
    #[serde(with = "cidr_list")]
    pub trusted_networks: Vec<IpNet>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl Default for Limits {
    fn default() -> Self {
        let s = ServerSettings::default();
        let l = s.limits;
        Self {
            message_size: l.message_size,
            recipients: l.recipients,
            recipient_overshoot: l.recipient_overshoot,
            line_length: DEFAULT_LINE_LENGTH,
            errors: l.errors,
            junk_commands: l.junk_commands,
            auth_failures: l.auth_failures,
            messages_per_session: l.messages_per_session,
            bytes_per_session: l.bytes_per_session.unwrap_or(0),
            min_data_rate: l.min_data_rate.map_or(0, NonZeroU32::get),
            output_buffer: l.output_buffer as u64,
            connections: u32::try_from(s.max_connections).unwrap_or(u32::MAX),
            connections_per_ip: u32::try_from(s.max_per_ip).unwrap_or(u32::MAX),
            trusted_networks: s.trusted_networks.networks().to_vec(),
            timeouts: Timeouts::default(),
        }
    }
}

/// `[auth]`: how password checks are bounded, and how often a client or a user may fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Password checks running at once; more wait their turn. Each Argon2id check holds its
    /// memory (19 MiB with `smtpd hash-password`'s parameters), allocated once per slot and
    /// reused, so this bounds AUTH's memory at `checks x 19 MiB`. Default 2: a check is CPU-bound
    /// for tens of milliseconds, so more slots than cores only queue in the kernel instead.
    #[serde(default = "default_auth_checks")]
    pub checks: u32,
    /// Failed AUTH attempts from one client address within `window`, across all its sessions;
    /// past it the client's AUTH gets `421 4.7.0` without a password check until the window
    /// ends. Like Postfix's `smtpd_client_auth_rate_limit` (off there by default); default 10
    /// per minute: a person mistyping never gets there, a guesser gets 10 a minute instead of
    /// the 28 a second measured without it. 0 turns the limit off.
    #[serde(default = "default_auth_failures_per_ip")]
    pub failures_per_ip: u32,
    /// Failed AUTH attempts for one user name within `window`, from any address (guessing
    /// from many addresses); past it AUTH for that name gets `454 4.7.0`. Default 10. 0 turns
    /// the limit off.
    #[serde(default = "default_auth_failures_per_user")]
    pub failures_per_user: u32,
    /// The window of both limits, in seconds. Default 60, Postfix's `anvil_rate_time_unit`.
    #[serde(default = "default_auth_window")]
    pub window: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            checks: default_auth_checks(),
            failures_per_ip: default_auth_failures_per_ip(),
            failures_per_user: default_auth_failures_per_user(),
            window: default_auth_window(),
        }
    }
}

fn default_auth_checks() -> u32 {
    2
}

fn default_auth_failures_per_ip() -> u32 {
    10
}

fn default_auth_failures_per_user() -> u32 {
    10
}

fn default_auth_window() -> u64 {
    60
}

/// `[limits.timeouts]`, in seconds. Defaults are the library's, except `storage` (smtpd's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Waiting for the next command. Default 300: RFC 5321 §4.5.3.2.7 asks a server to wait at
    /// least 5 minutes. A command line dripped in pieces must be complete within it.
    pub command: u64,
    /// Waiting for the next block of message data, and the budget of each DATA/BDAT transfer
    /// (see `limits.min_data_rate`). Default 180: the client's "Data Block" timeout of RFC
    /// 5321 §4.5.3.2.5 (3 minutes), mirrored.
    pub data_block: u64,
    /// Waiting for the server's own decision on a command or message (a stalled disk, say)
    /// before `421`. Default 600: the client's wait after the end of data (RFC 5321
    /// §4.5.3.2.6).
    pub decision: u64,
    /// Waiting for the decision on a new connection. Default 300: the client's greeting wait
    /// (RFC 5321 §4.5.3.2.1).
    pub greeting: u64,
    /// Hold the greeting this long; a client that talks first is disconnected when
    /// `pipelining_sync_check` is on (Postfix `postscreen_greet_wait`). 0 for none. Default 0.
    pub greeting_delay: u64,
    /// Completing the TLS handshake. Default 60: Postfix's `smtpd_starttls_timeout` is 300
    /// (10 under stress); a handshake takes a few round trips, and waiting longer only holds
    /// a connection slot for a stalled or hostile peer.
    pub tls_handshake: u64,
    /// Whole session, whatever is happening. Default 3600 (one hour): a bound on connections
    /// that stay just under every other deadline.
    pub session: u64,
    /// Waiting for the store (a write, an fsync, the commit) of one message. Default 120. When
    /// it expires the message is answered `451 4.3.0` and the session goes on; other sessions
    /// never wait on it. Must be shorter than `data_block`, so the client hears 451 before the
    /// data timeout would close the session.
    #[serde(default = "default_storage_timeout")]
    pub storage: u64,
    /// On shutdown, how long sessions in a transaction may take to finish it before every
    /// session is closed with `421 4.3.2`. Default 30: a 25 MiB message at 10 Mbit/s.
    pub shutdown_grace: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = ServerSettings::default();
        let t = s.timeouts;
        Self {
            command: t.command.as_secs(),
            data_block: t.data_block.as_secs(),
            decision: t.decision.as_secs(),
            greeting: t.greeting.as_secs(),
            greeting_delay: t.greeting_delay.map_or(0, |d| d.as_secs()),
            tls_handshake: s.tls_handshake_timeout.as_secs(),
            session: t.session.map_or(0, |d| d.as_secs()),
            storage: default_storage_timeout(),
            shutdown_grace: s.shutdown_grace.as_secs(),
        }
    }
}

impl Timeouts {
    /// [`Timeouts::command`] as a `Duration`.
    #[must_use]
    pub fn command(&self) -> Duration {
        Duration::from_secs(self.command)
    }

    /// [`Timeouts::data_block`] as a `Duration`.
    #[must_use]
    pub fn data_block(&self) -> Duration {
        Duration::from_secs(self.data_block)
    }

    /// [`Timeouts::tls_handshake`] as a `Duration`.
    #[must_use]
    pub fn tls_handshake(&self) -> Duration {
        Duration::from_secs(self.tls_handshake)
    }

    /// [`Timeouts::session`] as a `Duration`.
    #[must_use]
    pub fn session(&self) -> Duration {
        Duration::from_secs(self.session)
    }

    /// [`Timeouts::shutdown_grace`] as a `Duration`.
    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    /// [`Timeouts::storage`] as a `Duration`.
    #[must_use]
    pub fn storage(&self) -> Duration {
        Duration::from_secs(self.storage)
    }
}

/// What to do with a bare LF in message data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLf {
    /// Refuse the message (RFC 5321 §2.3.8 allows CR and LF only as CRLF). This shuts out the
    /// "SMTP smuggling" class (CVE-2023-51764/51765/51766), where servers disagree on where
    /// `<LF>.<LF>` ends a message. The default.
    #[default]
    Reject,
    /// Accept, storing each bare LF as CRLF (Postfix 3.9's `smtpd_forbid_bare_newline =
    /// normalize`). `<LF>.<LF>` still never ends the message.
    Normalize,
}

/// `[proxy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Networks allowed to send a PROXY header, in CIDR notation (`"10.0.0.0/8"`; a bare
    /// address means a single host). A connection from elsewhere on a `proxy_protocol`
    /// listener is closed. Default: none.
    #[serde(default, with = "cidr_list")]
    pub trusted: Vec<IpNet>,
    /// Front ends allowed to send XCLIENT (Postfix `smtpd_authorized_xclient_hosts`): a proxy
    /// or webmail naming the real client, whose address, name and login then stand in the
    /// `Received:` header and the log. Default: none.
    #[serde(default, with = "cidr_list")]
    pub xclient_networks: Vec<IpNet>,
    /// Content filters and relays allowed to send XFORWARD (Postfix
    /// `smtpd_authorized_xforward_hosts`): the original client of each message, for its
    /// `Received:` header and the log. Default: none.
    #[serde(default, with = "cidr_list")]
    pub xforward_networks: Vec<IpNet>,
}

impl Proxy {
    /// Whether `addr` may send a PROXY header.
    #[must_use]
    pub fn is_trusted(&self, addr: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }
}

/// `[dkim]`: where the signing keys are ([`crate::dkim_key`] describes the layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dkim {
    /// The key directory: `smtpd dns-records` writes keys there, outbound signing reads them.
    /// Default `"./dkim"`, beside the default `./maildir` and relative to the working directory
    /// like every path here; a packaged install points it at `/var/lib/smtpd/dkim` (state, not
    /// configuration: keys are made by the server and rotated, never edited by hand).
    pub key_dir: PathBuf,
}

impl Default for Dkim {
    fn default() -> Self {
        Self {
            key_dir: PathBuf::from("./dkim"),
        }
    }
}

/// `[dnsbl]`: DNS blocklists ([`crate::dnsbl`]), asked once per session at the first RCPT;
/// authenticated clients and `limits.trusted_networks` are exempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dnsbl {
    /// The lists (`[[dnsbl.list]]`). Default: none, no lookups.
    #[serde(rename = "list")]
    pub lists: Vec<DnsblList>,
    /// Refuse (`554 5.7.1`) when the weights of the lists listing the client add up to this.
    /// Default 1 (Postfix `postscreen_dnsbl_threshold`): any listing.
    pub threshold: u32,
    /// Seconds the lookups of one client may take together; then unanswered lists count as not
    /// listing. Default 5: a DNS problem never refuses mail, and a session never waits long on
    /// one.
    pub timeout: u64,
}

impl Default for Dnsbl {
    fn default() -> Self {
        Self {
            lists: Vec::new(),
            threshold: 1,
            timeout: 5,
        }
    }
}

/// One `[[dnsbl.list]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblList {
    /// The list's zone, e.g. `"zen.spamhaus.org"`. Required.
    pub zone: String,
    /// What a listing here adds towards `threshold`. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[greylist]` ([`crate::greylist`]): defer the first attempt of each (client network, sender,
/// recipient) with `451 4.7.1`. Authenticated clients and `limits.trusted_networks` are exempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Greylist {
    /// Greylist. Default `false`: it delays all first mail from new senders.
    pub enabled: bool,
    /// The state file (append-only, rewritten when it grows). Default `"./greylist.db"`.
    pub file: PathBuf,
    /// Seconds before a retry passes. Default 300 (postgrey).
    pub delay: u64,
    /// Seconds after the delay in which a retry still passes. Default 172800 (2 days).
    pub retry_window: u64,
    /// Seconds a passed triplet or whitelisted network is kept unseen. Default 3024000 (35
    /// days, postgrey).
    pub max_age: u64,
    /// Passes after which a client network skips greylisting; 0 = never. Default 5 (postgrey).
    pub auto_whitelist: u32,
}

impl Default for Greylist {
    fn default() -> Self {
        let s = crate::greylist::Settings::default();
        Self {
            enabled: false,
            file: PathBuf::from("./greylist.db"),
            delay: s.delay.as_secs(),
            retry_window: s.retry_window.as_secs(),
            max_age: s.max_age.as_secs(),
            auto_whitelist: s.auto_whitelist,
        }
    }
}

impl Greylist {
    /// The store's timing rules.
    #[must_use]
    pub fn settings(&self) -> crate::greylist::Settings {
        crate::greylist::Settings {
            delay: Duration::from_secs(self.delay),
            retry_window: Duration::from_secs(self.retry_window),
            max_age: Duration::from_secs(self.max_age),
            auto_whitelist: self.auto_whitelist,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines. The default.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

fn default_banner() -> String {
    ServerSettings::default().banner
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        address: SocketAddr::from(([127, 0, 0, 1], 2525)).into(),
        mode: None,
        kind: ListenerKind::Smtp,
        tls: None,
        proxy_protocol: false,
        name: None,
        disabled_commands: Vec::new(),
        hidden_extensions: Vec::new(),
        client_ca: None,
        client_auth: None,
    }]
}

fn default_kind() -> ListenerKind {
    ListenerKind::Smtp
}

fn default_maildir() -> PathBuf {
    PathBuf::from("./maildir")
}

fn yes() -> bool {
    true
}

fn default_storage_timeout() -> u64 {
    120
}

/// The shortest command line RFC 5321 §4.5.3.1.4 lets a server accept.
const MIN_LINE_LENGTH: u32 = 512;

/// smtpd's command line limit: Postfix's `line_length_limit` (see [`Limits::line_length`]).
const DEFAULT_LINE_LENGTH: u32 = 2048;

fn library_require_tls() -> bool {
    ServerSettings::default().require_tls
}

fn library_allow_insecure_auth() -> bool {
    ServerSettings::default().allow_insecure_auth
}

fn library_pipelining_sync_check() -> bool {
    ServerSettings::default().pipelining_sync_check
}

fn library_auth_mechanisms() -> Vec<String> {
    ServerSettings::default().auth_mechanisms
}

/// (De)serializes CIDR lists as strings, with errors that show the accepted forms.
pub(crate) mod cidr_list {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(
        nets: &[IpNet],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(nets.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<IpNet>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| parse(text).map_err(de::Error::custom))
            .collect()
    }

    fn parse(text: &str) -> Result<IpNet, String> {
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<std::net::IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => {
                    return Err(format!(
                        "`{text}` is not a network in CIDR notation (like \"10.0.0.0/8\" or \"2001:db8::/32\") or an IP address"
                    ));
                }
            },
        };
        if net.trunc() != net {
            // Host bits set usually means a typo in the prefix length or the address.
            return Err(format!(
                "`{text}` has host bits set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        Ok(net)
    }
}

/// The machine's fully qualified name, as `hostname --fqdn` finds it: `gethostname(3)`, then
/// the canonical name `getaddrinfo(3)` gives it (`AI_CANONNAME`: `/etc/hosts`, then DNS, as
/// the system's resolver is configured). Falls back to the plain host name when that is not
/// a valid, longer name, and to `localhost` when there is no usable host name at all.
#[must_use]
pub fn detect_hostname() -> String {
    let Some(short) = dns_lookup::get_hostname()
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| is_valid_hostname(h))
    else {
        return "localhost".to_owned();
    };
    let hints = dns_lookup::AddrInfoHints {
        flags: libc::AI_CANONNAME,
        ..dns_lookup::AddrInfoHints::default()
    };
    let canonical = dns_lookup::getaddrinfo(Some(&short), None, Some(hints))
        .ok()
        .and_then(|mut infos| infos.find_map(|i| i.ok()?.canonname))
        .map(|c| c.trim_end_matches('.').to_ascii_lowercase());
    match canonical {
        Some(fqdn) if fqdn.len() > short.len() && is_valid_hostname(&fqdn) => fqdn,
        _ => short,
    }
}

/// Whether `name` can be used as our host name in SMTP: dot-separated labels of letters,
/// digits and hyphens (RFC 5321 §4.1.2 `Domain`), 1 to 63 octets each, 253 octets in all.
#[must_use]
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str(&text)
    }

    /// Parses and checks configuration text.
    #[expect(
        clippy::should_implement_trait,
        reason = "also offered as FromStr; this reads better"
    )]
    pub fn from_str(text: &str) -> Result<Self, LoadError> {
        let mut config: Self = toml::from_str(text)?;
        config.fill_in();
        config.validate()?;
        Ok(config)
    }

    /// The built-in default configuration, `config/default.toml`.
    #[must_use]
    pub fn default_embedded() -> Self {
        Self::from_str(DEFAULT_CONFIG)
            .unwrap_or_else(|e| panic!("the embedded default configuration is invalid: {e}"))
    }

    /// The effective configuration as TOML, defaults included; parsing it gives this
    /// configuration back.
    #[must_use]
    pub fn to_toml(&self) -> String {
        // Every type here serializes to TOML: no maps with non-string keys, no values after
        // tables within one struct that toml cannot reorder.
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| panic!("configuration does not serialize as TOML: {e}"))
    }

    /// Replaces "detect" and "depends" defaults by their effective values, so that
    /// [`Config::to_toml`] shows what the server will do.
    fn fill_in(&mut self) {
        if self.hostname.is_empty() {
            self.hostname = detect_hostname();
        }
        let has_tls = self.tls.is_some();
        for listener in &mut self.listeners {
            if listener.tls.is_none() {
                listener.tls = Some(has_tls || listener.kind == ListenerKind::Smtps);
            }
        }
        if self.routing.wildcard.is_none() {
            self.routing.wildcard = Some(self.domains.is_empty());
        }
        if self.queue.instance.is_empty() {
            self.queue.instance.clone_from(&self.hostname);
        }
        self.move_deprecated_dns_keys();
    }

    /// `[delivery] nameservers/dns_timeout` and `[checks] nameservers/timeout/cache_size`
    /// (added the day before `[dns]` became the one DNS section) become `[dns]` settings for
    /// one release. An explicit `[dns] nameservers` wins over both.
    fn move_deprecated_dns_keys(&mut self) {
        let explicit_dns = !self.dns.nameservers.is_empty();
        fn moved(old: &str, new: &str) -> String {
            format!(
                "{old} is deprecated and will be removed in the next release: set {new} instead"
            )
        }
        for (section, nameservers) in [
            ("delivery", self.delivery.nameservers.take()),
            ("checks", self.checks.nameservers.take()),
        ] {
            let Some(nameservers) = nameservers else {
                continue;
            };
            self.deprecated.push(moved(
                &format!("[{section}] nameservers"),
                "[dns] nameservers",
            ));
            if explicit_dns {
                if nameservers != self.dns.nameservers {
                    self.deprecated.push(format!(
                        "[{section}] nameservers differs from [dns] nameservers, which is used"
                    ));
                }
            } else if self.dns.nameservers.is_empty() {
                self.dns.nameservers = nameservers;
            } else if nameservers != self.dns.nameservers {
                self.deprecated.push(format!(
                    "[{section}] nameservers differs from the other deprecated list; the first is used"
                ));
            }
        }
        if let Some(t) = self.delivery.dns_timeout.take() {
            self.deprecated
                .push(moved("[delivery] dns_timeout", "[dns] timeout"));
            self.dns.timeout = t;
        }
        if let Some(t) = self.checks.timeout.take() {
            self.deprecated
                .push(moved("[checks] timeout", "[dns] timeout"));
            self.dns.timeout = t;
        }
        if let Some(n) = self.checks.cache_size.take() {
            self.deprecated
                .push(moved("[checks] cache_size", "[dns] cache_size"));
            self.dns.cache_size = n;
        }
    }

    /// Checks consistency, collecting every problem.
    fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        if !is_valid_hostname(&self.hostname) {
            problems.push(format!(
                "hostname `{}` is not a valid domain name (letters, digits, `-` and `.` only)",
                self.hostname
            ));
        }
        if self.banner.contains(['\r', '\n']) {
            problems.push("banner must not contain line breaks".to_owned());
        }
        self.validate_listeners(&mut problems);
        if let Some(tls) = &self.tls {
            if tls.cert.as_os_str().is_empty() {
                problems.push("tls.cert is empty".to_owned());
            }
            if tls.key.as_os_str().is_empty() {
                problems.push("tls.key is empty".to_owned());
            }
        }
        self.validate_users(&mut problems);
        for m in &self.auth_mechanisms {
            if m.eq_ignore_ascii_case("XOAUTH2") || m.eq_ignore_ascii_case("OAUTHBEARER") {
                problems.push(format!(
                    "auth_mechanisms: {m} needs a token verifier, and smtpd checks only \
                     passwords (PLAIN, LOGIN)"
                ));
            }
        }
        if self
            .routing
            .recipient_delimiter
            .chars()
            .any(|c| c == '@' || c == '/' || c == '.' || c.is_whitespace() || c.is_control())
        {
            problems.push(format!(
                "routing.recipient_delimiter `{}` may not contain `@`, `/`, `.`, spaces or control characters",
                self.routing.recipient_delimiter.escape_default()
            ));
        }
        let wildcard = self.routing.is_wildcard(&self.domains);
        if !wildcard && self.domains.is_empty() {
            problems.push(
                "no local domain: add a [[domain]] section or set routing.wildcard = true"
                    .to_owned(),
            );
        }
        if let Err(e) = routing::Router::new(wildcard, &self.domains) {
            problems.push(format!("[[domain]]: {e}"));
        }
        if !self.storage.sink && self.storage.maildir.as_os_str().is_empty() {
            problems.push("storage.maildir is empty".to_owned());
        }
        if let Some(lmtp) = &self.storage.lmtp {
            if let Err(e) = lmtp.parse::<smtpkit_server::client::Address>() {
                problems.push(format!("storage.lmtp: {e}"));
            }
            if self.storage.sink {
                problems.push("storage.lmtp and storage.sink exclude each other".to_owned());
            }
        }
        self.validate_limits(&mut problems);
        problems.extend(self.dns.problems());
        if let Some(smart) = &self.delivery.smart_host {
            if !matches!(smart.tls.as_str(), "required" | "implicit" | "none") {
                problems.push(format!(
                    "delivery.smart_host.tls `{}` must be `required`, `implicit` or `none`",
                    smart.tls
                ));
            }
            // The client never sends a password in clear (RFC 8314 3).
            if smart.tls == "none" && smart.user.is_some() {
                problems.push(
                    "delivery.smart_host: AUTH (user) needs tls = `required` or `implicit`"
                        .to_owned(),
                );
            }
        }
        if self.relay.enabled && self.queue.directory.as_os_str().is_empty() {
            problems.push("queue.directory is empty".to_owned());
        }
        self.validate_rcpt_checks(&mut problems);
        if problems.is_empty() {
            // The library's own checks (AUTH mechanisms, BINARYMIME without CHUNKING, output
            // cap...), once the ones above, which name the TOML fields, found nothing.
            let settings = self.server_settings();
            for listener in &self.listeners {
                let l = self.listener_settings(listener);
                if let Err(e) = settings.listener_config(&l, listener.uses_tls()) {
                    problems.push(format!(
                        "listener {} ({}): {e}",
                        listener.address, listener.kind
                    ));
                }
            }
            problems.dedup();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Invalid(problems))
        }
    }

    /// The library's settings for listener `l`: kind, TLS, PROXY trust, disabled commands and
    /// hidden extensions.
    #[must_use]
    pub fn listener_settings(&self, l: &Listener) -> smtpkit_server::ListenerSettings {
        let mut listener = smtpkit_server::ListenerSettings::new(l.kind).tls(l.uses_tls());
        listener.disabled_commands.clone_from(&l.disabled_commands);
        listener.hidden_extensions.clone_from(&l.hidden_extensions);
        if !l.proxy_protocol {
            return listener;
        }
        listener.proxy(smtpkit_server::ProxySettings::new(
            smtpkit_server::TrustedNetworks::new(self.proxy.trusted.iter().copied()),
        ))
    }

    /// The library settings for this configuration: every core option, mapped one to one.
    /// PROXY trust is left to the caller, which knows which listeners expect a header.
    #[must_use]
    pub fn server_settings(&self) -> ServerSettings {
        let l = &self.limits;
        let t = &l.timeouts;
        let e = &self.extensions;
        let secs = Duration::from_secs;
        let mut s = ServerSettings {
            hostname: self.hostname.clone(),
            banner: self.banner.clone(),
            bare_line_ending: match self.bare_lf {
                BareLf::Reject => smtpkit_proto::data::BareLineEnding::Reject,
                BareLf::Normalize => smtpkit_proto::data::BareLineEnding::Normalize,
            },
            pipelining_sync_check: self.pipelining_sync_check,
            require_tls: self.require_tls,
            allow_insecure_auth: self.allow_insecure_auth,
            extra_mail_params: self.extra_mail_params.clone(),
            extra_rcpt_params: self.extra_rcpt_params.clone(),
            auth_mechanisms: self.auth_mechanisms.clone(),
            max_connections: l.connections as usize,
            max_per_ip: l.connections_per_ip as usize,
            tls_handshake_timeout: t.tls_handshake(),
            trusted_networks: smtpkit_server::TrustedNetworks::new(
                l.trusted_networks.iter().copied(),
            ),
            shutdown_grace: t.shutdown_grace(),
            xclient_networks: smtpkit_server::TrustedNetworks::new(
                self.proxy.xclient_networks.iter().copied(),
            ),
            xforward_networks: smtpkit_server::TrustedNetworks::new(
                self.proxy.xforward_networks.iter().copied(),
            ),
            ..ServerSettings::default()
        };
        // Whole struct literals: a new core option fails to compile here until it is mapped.
        s.limits = smtpkit_proto::server::Limits {
            command_line: l.line_length as usize,
            message_size: l.message_size,
            recipients: l.recipients,
            recipient_overshoot: l.recipient_overshoot,
            errors: l.errors,
            junk_commands: l.junk_commands,
            auth_failures: l.auth_failures,
            messages_per_session: l.messages_per_session,
            bytes_per_session: (l.bytes_per_session > 0).then_some(l.bytes_per_session),
            output_buffer: usize::try_from(l.output_buffer).unwrap_or(usize::MAX),
            min_data_rate: NonZeroU32::new(l.min_data_rate),
        };
        s.timeouts = smtpkit_proto::server::Timeouts {
            greeting: secs(t.greeting),
            greeting_delay: (t.greeting_delay > 0).then(|| secs(t.greeting_delay)),
            command: t.command(),
            data_block: t.data_block(),
            decision: secs(t.decision),
            session: Some(t.session()),
        };
        s.extensions = smtpkit_proto::server::Extensions {
            pipelining: e.pipelining,
            size: e.size,
            eight_bit_mime: e.eight_bit_mime,
            smtputf8: e.smtputf8,
            chunking: e.chunking,
            binary_mime: e.binary_mime,
            enhanced_status_codes: e.enhanced_status_codes,
            dsn: e.dsn,
            // Set per listener by ServerSettings.
            starttls: false,
            requiretls: e.requiretls,
            auth_mechanisms: Vec::new(),
        };
        s
    }

    fn validate_listeners(&self, problems: &mut Vec<String>) {
        if self.listeners.is_empty() {
            problems.push("no [[listener]]: the server would accept no connection".to_owned());
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let name =
                format!("listener[{i}] ({} {:?})", listener.address, listener.kind).to_lowercase();
            if self.listeners[..i]
                .iter()
                .any(|other| other.address == listener.address)
            {
                problems.push(format!("{name}: address already used by another listener"));
            }
            if listener.uses_tls() && self.tls.is_none() {
                problems.push(format!(
                    "{name}: TLS needs a [tls] section with cert and key"
                ));
            }
            if listener.address.is_unix() {
                if listener.kind == ListenerKind::Smtps {
                    problems.push(format!(
                        "{name}: smtps on a Unix socket: implicit TLS is for TCP (use lmtp or smtp, with STARTTLS if wanted)"
                    ));
                }
                if listener.proxy_protocol {
                    problems.push(format!(
                        "{name}: proxy_protocol on a Unix socket: a PROXY header describes a TCP client"
                    ));
                }
            }
            if listener.client_ca.is_some() && !listener.uses_tls() {
                problems.push(format!(
                    "{name}: client_ca needs TLS on the listener (tls = true and a [tls] section)"
                ));
            }
            if listener.client_auth.is_some() && listener.client_ca.is_none() {
                problems.push(format!(
                    "{name}: client_auth needs client_ca, the CA certificates to verify against"
                ));
            }
            if !listener.address.is_unix() && listener.mode.is_some() {
                problems.push(format!("{name}: mode applies to unix: addresses only"));
            }
            if listener.kind == ListenerKind::Smtps && listener.tls == Some(false) {
                problems.push(format!(
                    "{name}: smtps is implicit TLS, tls = false is contradictory"
                ));
            }
            if matches!(
                listener.kind,
                ListenerKind::Submission | ListenerKind::Smtps
            ) && self.users.is_empty()
            {
                problems.push(format!(
                    "{name}: submission requires AUTH, add at least one [[user]] (see `smtpd hash-password`)"
                ));
            }
            if listener.proxy_protocol && self.proxy.trusted.is_empty() {
                problems.push(format!(
                    "{name}: proxy_protocol = true needs [proxy] trusted networks, otherwise every connection is refused"
                ));
            }
        }
    }

    fn validate_rcpt_checks(&self, problems: &mut Vec<String>) {
        if self.dnsbl.threshold == 0 {
            problems.push("dnsbl.threshold must be at least 1".to_owned());
        }
        if self.dnsbl.timeout == 0 {
            problems.push("dnsbl.timeout must be at least 1 second".to_owned());
        }
        for (i, list) in self.dnsbl.lists.iter().enumerate() {
            if !is_valid_hostname(list.zone.trim_end_matches('.')) {
                problems.push(format!(
                    "dnsbl.list[{i}]: zone `{}` is not a domain name",
                    list.zone
                ));
            }
        }
        if self.greylist.enabled && self.greylist.file.as_os_str().is_empty() {
            problems.push("greylist.file is empty".to_owned());
        }
    }

    fn validate_users(&self, problems: &mut Vec<String>) {
        for (i, user) in self.users.iter().enumerate() {
            if user.name.is_empty() {
                problems.push(format!("user[{i}]: name is empty"));
            }
            if self.users[..i].iter().any(|other| other.name == user.name) {
                problems.push(format!("user[{i}] `{}`: defined twice", user.name));
            }
            if let Err(e) = password::check_phc(&user.password_hash) {
                problems.push(format!("user[{i}] `{}`: password_hash: {e}", user.name));
            }
        }
    }

    fn validate_limits(&self, problems: &mut Vec<String>) {
        let limits = &self.limits;
        let counts = [
            ("message_size", limits.message_size),
            ("recipients", u64::from(limits.recipients)),
            ("errors", u64::from(limits.errors)),
            ("junk_commands", u64::from(limits.junk_commands)),
            ("auth_failures", u64::from(limits.auth_failures)),
            (
                "messages_per_session",
                u64::from(limits.messages_per_session),
            ),
            ("connections", u64::from(limits.connections)),
            ("connections_per_ip", u64::from(limits.connections_per_ip)),
            ("timeouts.command", limits.timeouts.command),
            ("timeouts.data_block", limits.timeouts.data_block),
            ("timeouts.decision", limits.timeouts.decision),
            ("timeouts.greeting", limits.timeouts.greeting),
            ("timeouts.tls_handshake", limits.timeouts.tls_handshake),
            ("timeouts.session", limits.timeouts.session),
            ("timeouts.storage", limits.timeouts.storage),
        ];
        for (name, value) in counts {
            if value == 0 {
                problems.push(format!("limits.{name} must be greater than 0"));
            }
        }
        if limits.line_length < MIN_LINE_LENGTH {
            problems.push(format!(
                "limits.line_length must be at least {MIN_LINE_LENGTH} (RFC 5321 4.5.3.1.4), got {}",
                limits.line_length
            ));
        }
        if limits.timeouts.storage >= limits.timeouts.data_block {
            problems.push(format!(
                "limits.timeouts.storage ({}) must be shorter than limits.timeouts.data_block ({}): a stalled store must be answered 451 before the data timeout closes the session",
                limits.timeouts.storage, limits.timeouts.data_block
            ));
        }
        if self.auth.checks == 0 {
            problems.push("auth.checks must be greater than 0".to_owned());
        }
        if self.auth.window == 0 {
            problems.push("auth.window must be greater than 0".to_owned());
        }
        if limits.connections_per_ip > limits.connections {
            problems.push(format!(
                "limits.connections_per_ip ({}) exceeds limits.connections ({})",
                limits.connections_per_ip, limits.connections
            ));
        }
        // Ten years: longer is a typo (milliseconds?) and would overflow deadline arithmetic
        // on some platforms.
        const MAX_TIMEOUT: u64 = 10 * 365 * 24 * 3600;
        for (name, value) in [
            ("command", limits.timeouts.command),
            ("data_block", limits.timeouts.data_block),
            ("decision", limits.timeouts.decision),
            ("greeting", limits.timeouts.greeting),
            ("greeting_delay", limits.timeouts.greeting_delay),
            ("tls_handshake", limits.timeouts.tls_handshake),
            ("session", limits.timeouts.session),
            ("storage", limits.timeouts.storage),
        ] {
            if value > MAX_TIMEOUT {
                problems.push(format!(
                    "limits.timeouts.{name} = {value} seconds is more than ten years"
                ));
            }
        }
    }
}

impl std::str::FromStr for Config {
    type Err = LoadError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_str(text)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

/// `[relay]`: authenticated users sending to other domains (submission, RFC 6409).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Authenticated users on submission and smtps listeners may send to any domain; their
    /// mail goes through the queue. Default `false`: smtpd never relays.
    pub enabled: bool,
    /// The addresses each user may use as envelope sender and in `From:`: full addresses, or
    /// `@domain` for every address of a domain. A user name that is itself an address always
    /// owns that address. Anything else gets `550 5.7.1`.
    pub senders: BTreeMap<String, Vec<String>>,
    /// Messages each user may relay per window, `"<count>/<window>"` (`"100/h"`, `"500/12h"`;
    /// windows in `s`, `m`, `h` or `d`). Past it, relayed recipients get `450 4.7.1` until the
    /// window ends. Default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Relayed recipients each user may send to per window, in the same form. Default: no
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_rate: Option<Rate>,
}

/// A count per fixed window, written `"<count>/<window>"`: `"100/h"`, `"20/10m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// How many per window (at least 1).
    pub count: u32,
    /// The window.
    pub window: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate such as \"100/h\" or \"20/10m\"");
        let (count, window) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let window = window.trim();
        let unit_at = window.len().checked_sub(1).ok_or_else(bad)?;
        let (n, unit) = window.split_at(unit_at);
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| bad())?
        };
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        if count == 0 || n == 0 {
            return Err(format!("{}: count and window must be above 0", bad()));
        }
        Ok(Self {
            count,
            window: Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?),
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.window.as_secs();
        let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(u, _)| secs.is_multiple_of(*u))
            .map_or((secs, "s"), |(u, name)| (secs / u, name));
        if n == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{n}{unit}", self.count)
        }
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> Self {
        rate.to_string()
    }
}

impl Relay {
    /// Whether `user` may send as `address` (case-insensitive).
    #[must_use]
    pub fn owns(&self, user: &str, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        if user.contains('@') && user.eq_ignore_ascii_case(&address) {
            return true;
        }
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        self.senders.get(user).is_some_and(|owned| {
            owned.iter().any(|o| {
                let o = o.to_ascii_lowercase();
                o == address || o.strip_prefix('@').is_some_and(|d| d == domain)
            })
        })
    }
}

/// `[queue]`: the outbound queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// The queue directory. Default `./queue`.
    pub directory: PathBuf,
    /// This instance's name in leases. Default: the host name. Instances sharing a queue need
    /// different names; a restarted instance takes back at once what it was delivering.
    pub instance: String,
    /// Retry schedule, expiry, notices, per-domain concurrency.
    pub schedule: smtpkit_queue::Policy,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("./queue"),
            instance: String::new(),
            schedule: smtpkit_queue::Policy::default(),
        }
    }
}

/// `[delivery]`: how queued mail leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// The port MX hosts are reached on. Default 25; tests point it elsewhere.
    pub port: u16,
    /// Deprecated (one release): `[dns] nameservers`, which it fills when that is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Deprecated (one release): `[dns] timeout`, which it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_timeout: Option<u64>,
    /// Use STARTTLS when the MX offers it (without checking its certificate: opportunistic
    /// TLS, RFC 7435). Default `true`.
    pub starttls: bool,
    /// Seconds to connect to a host. Default 30 (Postfix smtp_connect_timeout).
    pub connect_timeout: u64,
    /// Seconds a session with a destination stays open after a delivery, for the next message
    /// to the same address (`smtpd::connection_cache`); 0 sends QUIT after every message.
    /// Default 2 (Postfix smtp_connection_cache_time_limit).
    pub connection_cache_time: u64,
    /// Seconds after it was opened that a session is no longer kept for another message.
    /// Default 300 (Postfix smtp_connection_reuse_time_limit).
    pub connection_reuse_time: u64,
    /// DANE (RFC 7672): look up MX hosts' TLSA records with DNSSEC validation (by hickory,
    /// from the root trust anchor; the `[dns]` nameservers must pass DNSSEC records on) and
    /// require a certificate they name. Default `false`, as Postfix's `smtp_dns_support_level`:
    /// a resolver path that strips DNSSEC would make every lookup fail.
    pub dane: bool,
    /// Keep TLS-RPT data (RFC 8460) of sessions under a policy in `tls-report.jsonl` in the
    /// queue directory, for `smtpd tls-report`. Default `true`.
    pub tls_report: bool,
    /// MTA-STS (RFC 8461).
    pub mta_sts: MtaSts,
    /// Send everything through this host instead of the MX hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart_host: Option<SmartHost>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            port: 25,
            nameservers: None,
            dns_timeout: None,
            starttls: true,
            connect_timeout: 30,
            connection_cache_time: 2,
            connection_reuse_time: 300,
            dane: false,
            tls_report: true,
            mta_sts: MtaSts::default(),
            smart_host: None,
        }
    }
}

/// `[delivery.mta_sts]`: destination domains' MTA-STS policies (RFC 8461).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaSts {
    /// Look policies up and follow them. Default `true`.
    pub enabled: bool,
    /// Seconds for fetching one policy over HTTPS. Default 10.
    pub fetch_timeout: u64,
    /// The port policies are fetched from. Default 443; tests point it elsewhere.
    pub https_port: u16,
    /// A PEM file of CA certificates trusted besides the web PKI roots, for policy servers and
    /// MX hosts alike (a private PKI, tests). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Default for MtaSts {
    fn default() -> Self {
        Self {
            enabled: true,
            fetch_timeout: 10,
            https_port: 443,
            ca: None,
        }
    }
}

/// `[delivery.smart_host]`: a relay provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartHost {
    /// `host:port` (a name or an address).
    pub address: String,
    /// The name its certificate must carry. Default: the host part of `address`.
    #[serde(default)]
    pub tls_name: String,
    /// `required` (STARTTLS, certificate checked), `implicit` (TLS from the start, port 465)
    /// or `none` (plain; only for a host on the same machine or network). Default `required`.
    #[serde(default = "default_smart_host_tls")]
    pub tls: String,
    /// A PEM file of CA certificates to check it against instead of the web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// AUTH user name; none for no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// AUTH password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

fn default_smart_host_tls() -> String {
    "required".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/example.toml");

    fn invalid(text: &str) -> Vec<String> {
        match Config::from_str(text) {
            Err(LoadError::Invalid(problems)) => problems,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match Config::from_str(text) {
            Err(e @ LoadError::Parse(_)) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn default_config_parses_and_matches_the_serde_defaults() {
        let config = Config::default_embedded();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(
            config.listeners[0].address,
            "127.0.0.1:2525".parse().unwrap()
        );
        assert_eq!(config.listeners[0].kind, ListenerKind::Smtp);
        assert_eq!(config.listeners[0].tls, Some(false));
        assert!(is_valid_hostname(&config.hostname), "{}", config.hostname);
        assert_eq!(config.routing.wildcard, Some(true));
        assert_eq!(config.storage, Storage::default());
        assert!(config.storage.fsync);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.bare_lf, BareLf::Reject);
        // An empty file means "all defaults", and the default file says so explicitly.
        assert_eq!(Config::from_str("").unwrap(), config);
        assert_eq!("".parse::<Config>().unwrap(), config);
    }

    #[test]
    fn default_config_accepts_any_address_and_never_relays() {
        let config = Config::default_embedded();
        let router = routing::Router::from_config(&config).unwrap();
        assert!(matches!(
            router.resolve("anyone", "anywhere.test"),
            routing::Resolution::Local(_)
        ));
    }

    #[test]
    fn example_config_parses_with_every_section() {
        let config = Config::from_str(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.hostname, "mx.example.org");
        let kinds: Vec<_> = config.listeners.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                ListenerKind::Smtp,
                ListenerKind::Submission,
                ListenerKind::Smtps,
                ListenerKind::Lmtp
            ]
        );
        assert!(config.listeners.iter().all(|l| l.tls.is_some()));
        assert!(config.tls.is_some());
        assert_eq!(config.domains.len(), 2);
        assert_eq!(config.users.len(), 1);
        assert_eq!(config.routing.wildcard, Some(false));
        assert!(config.proxy.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(config.proxy.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(!config.proxy.is_trusted("192.0.2.8".parse().unwrap()));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.worker_threads.map(|n| n.get()), Some(2));
        assert_eq!(config.bare_lf, BareLf::Normalize);
        let router = routing::Router::from_config(&config).unwrap();
        assert!(
            matches!(router.resolve("info", "example.org"), routing::Resolution::Local(p) if p.len() == 2)
        );
        assert_eq!(
            router.resolve("x", "elsewhere.test"),
            routing::Resolution::NotLocal
        );
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_zero_is_an_error() {
        assert_eq!(Config::default_embedded().worker_threads, None);
        let one = Config::from_str("worker_threads = 1\n").unwrap();
        assert_eq!(one.worker_threads.map(|n| n.get()), Some(1));
        let zero = parse_error("worker_threads = 0\n");
        assert!(zero.contains("worker_threads"), "{zero}");
    }

    #[test]
    fn deprecated_dns_keys_move_to_dns_with_a_warning() {
        let config = Config::from_str(
            "[delivery]\nnameservers = [\"127.0.0.1:5353\"]\ndns_timeout = 3\n\
             [checks]\ncache_size = 77\n",
        )
        .unwrap();
        assert_eq!(config.dns.nameservers, ["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!((config.dns.timeout, config.dns.cache_size), (3, 77));
        assert_eq!(config.deprecated.len(), 3, "{:?}", config.deprecated);
        assert!(config.deprecated[0].contains("set [dns] nameservers"));
        let findings = crate::check::check(&config);
        assert!(findings.warnings.contains(&config.deprecated[1]));
        // The effective configuration shows only the new place.
        let printed = config.to_toml();
        assert!(!printed.contains("dns_timeout"), "{printed}");
        assert!(Config::from_str(&printed).unwrap().deprecated.is_empty());

        // An explicit [dns] list wins, and the difference is said.
        let both = Config::from_str(
            "[dns]\nnameservers = [\"127.0.0.1:53\"]\n[checks]\nnameservers = [\"127.0.0.1:5353\"]\n",
        )
        .unwrap();
        assert_eq!(both.dns.nameservers, ["127.0.0.1:53".parse().unwrap()]);
        assert!(both.deprecated.iter().any(|d| d.contains("differs")));
    }

    #[test]
    fn effective_config_round_trips() {
        for text in [DEFAULT_CONFIG, EXAMPLE] {
            let config = Config::from_str(text).unwrap();
            let printed = config.to_toml();
            let reparsed = Config::from_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            assert_eq!(reparsed, config, "{printed}");
            assert_eq!(config.to_string(), printed);
        }
    }

    /// Every key `check-config` prints, at any depth, with the tables it sits in.
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(t) => keys(t, &format!("{path}."), out),
                toml::Value::Array(items)
                    if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
                {
                    for item in items {
                        keys(item.as_table().unwrap(), &format!("{path}."), out);
                    }
                }
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn check_config_prints_every_option_and_the_example_documents_it() {
        let printed = Config::from_str(EXAMPLE).unwrap().to_toml();
        let mut all = Vec::new();
        keys(&toml::from_str(&printed).unwrap(), "", &mut all);
        for core_option in [
            "require_tls",
            "allow_insecure_auth",
            "pipelining_sync_check",
            "auth_mechanisms",
            "extra_mail_params",
            "extra_rcpt_params",
            "extensions.pipelining",
            "extensions.eight_bit_mime",
            "extensions.smtputf8",
            "extensions.chunking",
            "extensions.binary_mime",
            "extensions.enhanced_status_codes",
            "extensions.dsn",
            "extensions.requiretls",
            "limits.recipient_overshoot",
            "limits.min_data_rate",
            "limits.bytes_per_session",
            "limits.output_buffer",
            "limits.timeouts.decision",
            "limits.timeouts.greeting",
            "limits.timeouts.greeting_delay",
        ] {
            assert!(
                all.iter().any(|k| k == core_option),
                "{core_option} not printed:\n{printed}"
            );
        }
        // Alias names are data, not options.
        for key in all
            .iter()
            .filter(|k| !k.starts_with("domain.aliases.") && !k.starts_with("relay.senders."))
        {
            let last = key.rsplit('.').next().unwrap();
            assert!(
                EXAMPLE.lines().any(|l| l.starts_with(&format!("{last} ="))),
                "{key} is not shown in config/example.toml"
            );
        }
    }

    #[test]
    fn relay_rates() {
        let config = Config::from_str(
            "[relay]\nenabled = true\nrate = \"100/h\"\nrecipient_rate = \"1000/12h\"\n[queue]\ndirectory = \"q\"\n",
        )
        .unwrap();
        let rate = config.relay.rate.unwrap();
        assert_eq!((rate.count, rate.window), (100, Duration::from_secs(3600)));
        let recipients = config.relay.recipient_rate.unwrap();
        assert_eq!(recipients.window, Duration::from_secs(12 * 3600));
        // Printed as written, and read back the same.
        let printed = config.to_toml();
        assert!(printed.contains("rate = \"100/h\""), "{printed}");
        assert!(
            printed.contains("recipient_rate = \"1000/12h\""),
            "{printed}"
        );
        assert_eq!(Config::from_str(&printed).unwrap().relay, config.relay);
        for (text, window) in [("5/s", 1), ("5/90s", 90), ("5/10m", 600), ("5/d", 86_400)] {
            let r: Rate = text.parse().unwrap();
            assert_eq!((r.count, r.window.as_secs()), (5, window), "{text}");
            assert_eq!(r.to_string().parse::<Rate>().unwrap(), r, "{text}");
        }
        for bad in [
            "",
            "100",
            "100/",
            "/h",
            "0/h",
            "5/0h",
            "x/h",
            "5/w",
            "5/hh",
            "-1/h",
            "5/99999999999999999d",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
        let e = Config::from_str("[relay]\nrate = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a rate"), "{e}");
        assert_eq!(Config::default_embedded().relay.rate, None);
    }

    #[test]
    fn defaults_are_the_librarys() {
        let config = Config::default_embedded();
        let ours = config.server_settings();
        let library = ServerSettings::default();
        // The documented differences, then everything else equal.
        assert_eq!(ours.limits.command_line, 2048);
        assert_eq!(library.limits.command_line, 512);
        assert_eq!(
            ours.bare_line_ending,
            smtpkit_proto::data::BareLineEnding::Reject
        );
        let ours = ServerSettings {
            hostname: library.hostname.clone(),
            limits: smtpkit_proto::server::Limits {
                command_line: library.limits.command_line,
                ..ours.limits
            },
            bare_line_ending: library.bare_line_ending,
            ..ours
        };
        assert_eq!(ours, library);
    }

    #[test]
    fn core_options_reach_the_settings() {
        let config = Config::from_str(
            "require_tls = true\nallow_insecure_auth = true\npipelining_sync_check = true\n\
             auth_mechanisms = [\"LOGIN\"]\nextra_mail_params = [\"XFOO\"]\nextra_rcpt_params = [\"XBAR\"]\n\
             [extensions]\ndsn = true\nrequiretls = true\npipelining = false\nchunking = false\nbinary_mime = false\n\
             [limits]\nrecipient_overshoot = 7\nmin_data_rate = 0\nbytes_per_session = 99\noutput_buffer = 4096\n\
             [limits.timeouts]\ndecision = 5\ngreeting = 6\ngreeting_delay = 2\n",
        )
        .unwrap();
        let s = config.server_settings();
        assert!(s.require_tls && s.allow_insecure_auth && s.pipelining_sync_check);
        assert_eq!(s.auth_mechanisms, ["LOGIN"]);
        assert_eq!(
            (
                s.extra_mail_params[0].as_str(),
                s.extra_rcpt_params[0].as_str()
            ),
            ("XFOO", "XBAR")
        );
        assert!(s.extensions.dsn && s.extensions.requiretls);
        assert!(!s.extensions.pipelining && !s.extensions.chunking);
        assert_eq!(s.limits.recipient_overshoot, 7);
        assert_eq!(s.limits.min_data_rate, None);
        assert_eq!(s.limits.bytes_per_session, Some(99));
        assert_eq!(s.limits.output_buffer, 4096);
        assert_eq!(s.timeouts.decision, Duration::from_secs(5));
        assert_eq!(s.timeouts.greeting, Duration::from_secs(6));
        assert_eq!(s.timeouts.greeting_delay, Some(Duration::from_secs(2)));
    }

    #[test]
    fn library_checks_are_configuration_errors() {
        let mechanism = invalid("auth_mechanisms = [\"PLAIN\", \"CRAM-MD5\"]\n");
        assert_eq!(mechanism.len(), 1, "{mechanism:?}");
        assert!(mechanism[0].contains("CRAM-MD5"), "{mechanism:?}");
        let token = invalid("auth_mechanisms = [\"PLAIN\", \"XOAUTH2\"]\n");
        assert_eq!(token.len(), 1, "{token:?}");
        assert!(
            token[0].contains("XOAUTH2 needs a token verifier"),
            "{token:?}"
        );
        let bearer = invalid("auth_mechanisms = [\"OAUTHBEARER\"]\n");
        assert!(bearer[0].contains("OAUTHBEARER"), "{bearer:?}");
        let binary = invalid("[extensions]\nchunking = false\n");
        assert!(binary[0].contains("BINARYMIME"), "{binary:?}");
    }

    #[test]
    fn unknown_field_error_names_field_and_line() {
        let message =
            parse_error("hostname = \"mx.test\"\n\n[storage]\nmaildir = \"/m\"\nfsnyc = false\n");
        assert!(message.contains("fsnyc"), "{message}");
        assert!(message.contains("line 5"), "{message}");
        let nested = parse_error("[[listener]]\naddress = \"127.0.0.1:25\"\nport = 25\n");
        assert!(
            nested.contains("port") && nested.contains("line 3"),
            "{nested}"
        );
    }

    #[test]
    fn bad_values_are_parse_errors_with_position() {
        let kind = parse_error("[[listener]]\naddress = \"127.0.0.1:25\"\nkind = \"pop3\"\n");
        assert!(kind.contains("pop3") && kind.contains("line 3"), "{kind}");
        let address = parse_error("[[listener]]\naddress = \"localhost:25\"\n");
        assert!(address.contains("line 2"), "{address}");
    }

    #[test]
    fn invalid_cidr_is_rejected_with_its_text() {
        let message = parse_error("[proxy]\ntrusted = [\"10.0.0.0/8\", \"10.0.0/8\"]\n");
        assert!(
            message.contains("10.0.0/8") && message.contains("CIDR") && message.contains("line 2"),
            "{message}"
        );
        let host_bits = parse_error("[proxy]\ntrusted = [\"10.1.2.3/8\"]\n");
        assert!(host_bits.contains("10.0.0.0/8"), "{host_bits}");
        let config =
            Config::from_str("[proxy]\ntrusted = [\"192.0.2.1\", \"2001:db8::/32\"]\n").unwrap();
        assert!(config.proxy.is_trusted("2001:db8::1".parse().unwrap()));
        assert!(!config.proxy.is_trusted("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn smtps_without_tls_is_rejected() {
        let users = format!(
            "[[user]]\nname = \"a\"\npassword_hash = \"{}\"\n",
            password::hash_password_with(b"pw", password::test_params()).unwrap()
        );
        let problems = invalid(&format!(
            "[[listener]]\naddress = \"127.0.0.1:465\"\nkind = \"smtps\"\n{users}"
        ));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("listener[0]") && problems[0].contains("[tls]"),
            "{problems:?}"
        );
        let starttls = invalid("[[listener]]\naddress = \"127.0.0.1:25\"\ntls = true\n");
        assert!(starttls[0].contains("[tls]"), "{starttls:?}");
    }

    #[test]
    fn submission_requires_users_and_proxy_requires_trusted() {
        let problems = invalid(
            "[[listener]]\naddress = \"127.0.0.1:587\"\nkind = \"submission\"\nproxy_protocol = true\n",
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("[[user]]")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("[proxy]")),
            "{problems:?}"
        );
    }

    #[test]
    fn rcpt_checks_are_off_by_default_and_validated() {
        let config = Config::default_embedded();
        assert!(config.dnsbl.lists.is_empty());
        assert!(!config.greylist.enabled);
        assert_eq!(
            config.greylist.settings(),
            crate::greylist::Settings::default()
        );
        assert_eq!(config.dkim.key_dir, PathBuf::from("./dkim"));
        let example = Config::from_str(EXAMPLE).unwrap();
        assert_eq!(example.dnsbl.lists.len(), 2);
        assert_eq!(example.dnsbl.lists[1].weight, 1);
        let problems =
            invalid("[dnsbl]\nthreshold = 0\ntimeout = 0\n[[dnsbl.list]]\nzone = \"bad zone\"\n");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[2].contains("dnsbl.list[0]: zone `bad zone`"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = invalid(
            "hostname = \"bad host\"\nbanner = \"a\\r\\nb\"\n[[domain]]\nname = \"d.test\"\naliases = { x = [\"nobody\"] }\n\
             [limits]\nline_length = 100\nerrors = 0\n[[user]]\nname = \"u\"\npassword_hash = \"plain\"\n",
        );
        let expect = [
            "hostname",
            "banner",
            "nobody",
            "line_length",
            "limits.errors",
            "password_hash",
        ];
        for needle in expect {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} missing from {problems:?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:?}");
        let message = LoadError::Invalid(problems).to_string();
        assert!(
            message.starts_with("invalid configuration:\n  - "),
            "{message}"
        );
    }

    #[test]
    fn domains_switch_off_wildcard_unless_asked() {
        let strict =
            Config::from_str("[[domain]]\nname = \"d.test\"\nmailboxes = [\"a\"]\n").unwrap();
        assert_eq!(strict.routing.wildcard, Some(false));
        let both = Config::from_str("[routing]\nwildcard = true\n[[domain]]\nname = \"d.test\"\n")
            .unwrap();
        assert_eq!(both.routing.wildcard, Some(true));
        let none = invalid("[routing]\nwildcard = false\n");
        assert!(none[0].contains("no local domain"), "{none:?}");
    }

    #[test]
    fn unix_listeners_parse_and_refuse_tcp_only_settings() {
        let ok = "[[listener]]\naddress = \"unix:/run/smtpd/lmtp.sock\"\nmode = \"0660\"\nkind = \"lmtp\"\n";
        let config = Config::from_str(ok).unwrap();
        let l = &config.listeners[0];
        assert_eq!(l.address, Endpoint::unix("/run/smtpd/lmtp.sock"));
        assert_eq!(l.mode, Some(SocketMode(0o660)));
        assert!(matches!(
            l.source(),
            smtpkit_server::ListenerSource::Unix {
                mode: Some(0o660),
                ..
            }
        ));
        // What check-config prints reads back the same.
        assert_eq!(Config::from_str(&config.to_toml()).unwrap(), config);

        let smtps = invalid(
            "[[listener]]\naddress = \"unix:/tmp/s.sock\"\nkind = \"smtps\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n",
        );
        assert!(
            smtps.iter().any(|p| p.contains("smtps on a Unix socket")),
            "{smtps:?}"
        );
        let proxied = invalid(
            "[proxy]\ntrusted = [\"10.0.0.0/8\"]\n[[listener]]\naddress = \"unix:/tmp/s.sock\"\nproxy_protocol = true\n",
        );
        assert!(
            proxied
                .iter()
                .any(|p| p.contains("proxy_protocol on a Unix")),
            "{proxied:?}"
        );
        let mode_on_tcp = invalid("[[listener]]\naddress = \"127.0.0.1:24\"\nmode = \"0600\"\n");
        assert!(
            mode_on_tcp.iter().any(|p| p.contains("mode applies")),
            "{mode_on_tcp:?}"
        );
        let bad_mode =
            parse_error("[[listener]]\naddress = \"unix:/tmp/s.sock\"\nmode = \"0999\"\n");
        assert!(bad_mode.contains("octal"), "{bad_mode}");
    }

    #[test]
    fn client_ca_needs_tls_and_client_auth_needs_client_ca() {
        let no_tls = invalid("[[listener]]\naddress = \"127.0.0.1:25\"\nclient_ca = \"ca.pem\"\n");
        assert!(
            no_tls.iter().any(|p| p.contains("client_ca needs TLS")),
            "{no_tls:?}"
        );
        let no_ca =
            invalid("[[listener]]\naddress = \"127.0.0.1:25\"\nclient_auth = \"required\"\n");
        assert!(
            no_ca
                .iter()
                .any(|p| p.contains("client_auth needs client_ca")),
            "{no_ca:?}"
        );
        let bad =
            parse_error("[[listener]]\naddress = \"127.0.0.1:25\"\nclient_auth = \"maybe\"\n");
        assert!(bad.contains("maybe"), "{bad}");
    }

    #[test]
    fn duplicate_listener_addresses_are_rejected() {
        let problems = invalid(
            "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nkind = \"lmtp\"\n",
        );
        assert!(
            problems[0].contains("listener[1]") && problems[0].contains("already used"),
            "{problems:?}"
        );
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smtpd.toml");
        std::fs::write(&path, "banner = \"hello\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().banner, "hello");
        let missing = Config::load(dir.path().join("nope.toml")).unwrap_err();
        assert!(
            matches!(missing, LoadError::Io { .. }) && missing.to_string().contains("nope.toml"),
            "{missing}"
        );
    }

    /// The same answer as the C library gives Python for the same two calls (an independent
    /// caller of gethostname and getaddrinfo with AI_CANONNAME).
    #[test]
    fn detected_hostname_is_the_canonical_name() {
        let detected = detect_hostname();
        assert!(is_valid_hostname(&detected), "{detected}");
        let python = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket; h = socket.gethostname(); \
                 print(socket.getaddrinfo(h, None, flags=socket.AI_CANONNAME)[0][3] or h)",
            ])
            .output();
        let Some(out) = python.ok().filter(|o| o.status.success()) else {
            eprintln!("skipped the comparison: python3 is not installed");
            return;
        };
        let expected = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        assert_eq!(detected, expected);
    }

    #[test]
    fn hostname_validation() {
        for good in ["localhost", "mx.example.org", "a-b.c1"] {
            assert!(is_valid_hostname(good), "{good}");
        }
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a_b.c",
            "a b",
            &"a".repeat(64),
            "exa\u{e9}mple",
        ] {
            assert!(!is_valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn user_debug_hides_the_hash() {
        let user = User {
            name: "a".to_owned(),
            password_hash: "$argon2id$secret".to_owned(),
        };
        assert!(!format!("{user:?}").contains("secret"));
    }

    #[test]
    fn smart_host_settings_are_checked() {
        let bad = invalid(
            "[delivery.smart_host]\naddress = \"relay.example:25\"\ntls = \"none\"\nuser = \"u\"\npassword = \"p\"\n",
        );
        assert!(bad.iter().any(|p| p.contains("needs tls")), "{bad:?}");
        let bad =
            invalid("[delivery.smart_host]\naddress = \"relay.example:25\"\ntls = \"maybe\"\n");
        assert!(
            bad.iter().any(|p| p.contains("must be `required`")),
            "{bad:?}"
        );
        let config =
            Config::from_str("[delivery.smart_host]\naddress = \"relay.example:587\"\n").unwrap();
        assert_eq!(config.delivery.smart_host.unwrap().tls, "required");
        assert_eq!(config.delivery.port, 25);
        assert!(!config.relay.enabled);
    }
}
