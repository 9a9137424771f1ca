//! [`ServerSettings`]: one place for what every listener shares, and [`ListenerKind`]: what
//! differs between ports.

use core::fmt;
use std::sync::Arc;
use std::time::Duration;

use smtpkit_proto::data::BareLineEnding;
use smtpkit_proto::server::{ConfigError, Extensions, Limits, Protocol, Timeouts};
use smtpkit_proto::{ServerConfig, ServerOptions};

use crate::limit::ConnectionLimiter;
use crate::listen::ListenerSettings;
use crate::proxy::TrustedNetworks;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum ListenerKind {
    /// Relay/MX SMTP (port 25): no AUTH, STARTTLS when a certificate is configured.
    Smtp,
    /// Message submission (port 587, RFC 6409): AUTH PLAIN and LOGIN, required before MAIL
    /// unless [`ServerSettings::auth_optional`]; STARTTLS when a certificate is configured.
    Submission,
    /// Submission over implicit TLS (port 465, RFC 8314): the handshake comes first; AUTH as
    /// for `Submission`.
    Smtps,
    /// LMTP (RFC 2033): LHLO, one reply per recipient after the message.
    Lmtp,
}

impl ListenerKind {
    /// Whether the TLS handshake starts as soon as the connection is accepted.
    pub fn implicit_tls(self) -> bool {
        self == Self::Smtps
    }

    /// The listener's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Submission => "submission",
            Self::Smtps => "smtps",
            Self::Lmtp => "lmtp",
        }
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings shared by all listeners of a server: every option of the core
/// ([`ServerOptions`]) plus what the adapters add (connection limits, PROXY, TLS handshake,
/// shutdown).
///
/// Each default exists once. The core's options take the core's defaults (see
/// [`ServerOptions`], [`Extensions`], [`Limits`], [`Timeouts`], each with its source); the
/// fields only this layer has document theirs here.
///
/// ```
/// use smtpkit_server::{ListenerKind, ServerSettings};
/// let settings = ServerSettings { hostname: "mx.example".into(), ..Default::default() };
/// let config = settings.server_config(ListenerKind::Submission, true).unwrap();
/// assert!(config.options().require_auth);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// The server's name in the greeting and the EHLO reply. Default: the core's.
    pub hostname: String,
    /// Text after the hostname in the greeting. Default: the core's.
    pub banner: String,
    /// Protocol limits (message size, recipients, overshoot, errors, minimum data rate, output
    /// cap...). Default: the core's.
    pub limits: Limits,
    /// Bare CR / bare LF in message content. Default: the core's (normalize, as Postfix 3.9).
    pub bare_line_ending: BareLineEnding,
    /// Protocol deadlines. `timeouts.command` also bounds each write to the client, so a
    /// client that never reads is dropped after it. Default: the core's.
    pub timeouts: Timeouts,
    /// Offered ESMTP extensions (PIPELINING, 8BITMIME, SMTPUTF8, CHUNKING, BINARYMIME,
    /// ENHANCEDSTATUSCODES, DSN, REQUIRETLS). Default: the core's. Two of its fields are set
    /// per listener instead: `starttls` (offered when the listener has a certificate and is
    /// not implicit TLS) and `auth_mechanisms` (see [`auth_mechanisms`](Self::auth_mechanisms)).
    pub extensions: Extensions,
    /// Postfix-style `reject_unauth_pipelining`; see [`ServerOptions::pipelining_sync_check`].
    pub pipelining_sync_check: bool,
    /// MAIL and AUTH need TLS first; see [`ServerOptions::require_tls`].
    pub require_tls: bool,
    /// Offer and accept AUTH without TLS; see [`ServerOptions::allow_insecure_auth`].
    pub allow_insecure_auth: bool,
    /// MAIL parameter keywords the application handles itself; see
    /// [`ServerOptions::extra_mail_params`].
    pub extra_mail_params: Vec<String>,
    /// RCPT parameter keywords the application handles itself; see
    /// [`ServerOptions::extra_rcpt_params`].
    pub extra_rcpt_params: Vec<String>,
    /// Submission and SMTPS: allow MAIL without AUTH. Default off (RFC 6409 4.3).
    pub auth_optional: bool,
    /// AUTH mechanisms offered on submission listeners, in order. Each must be built in
    /// ([`AUTH_MECHANISMS`]: PLAIN, LOGIN, XOAUTH2, OAUTHBEARER) or named in
    /// [`custom_mechanisms`](Self::custom_mechanisms); another name is a
    /// [`ConfigError::UnsupportedMechanism`], never an advertised `504`. Default: PLAIN and
    /// LOGIN ([`DEFAULT_AUTH_MECHANISMS`]): the token mechanisms need an application that
    /// checks tokens.
    pub auth_mechanisms: Vec<String>,
    /// Mechanisms the application implements itself, by overriding
    /// [`Session::mechanism`](crate::Session::mechanism); listing one here allows it in
    /// [`auth_mechanisms`](Self::auth_mechanisms). Default none.
    pub custom_mechanisms: Vec<String>,
    /// Open connections across all listeners; more get `421 4.7.0`. Default 1000: Postfix
    /// runs at most 100 smtpd processes (`default_process_limit`), and a session here is far
    /// cheaper than a process.
    pub max_connections: usize,
    /// Open connections from one IP address. Default 50, Postfix's
    /// `smtpd_client_connection_count_limit`.
    pub max_per_ip: usize,
    /// Client networks exempt from `max_per_ip` (the server's own machines and relays).
    /// Default loopback (`127.0.0.0/8`, `::1`), as Postfix exempts `$mynetworks`
    /// (`smtpd_client_event_limit_exceptions`); empty exempts no one.
    pub trusted_networks: TrustedNetworks,
    /// Clients allowed to send XCLIENT (Postfix's `smtpd_authorized_xclient_hosts`, Node's
    /// `useXClient`): front ends such as a proxy or webmail that name the real client. It is
    /// offered in their EHLO reply only; anyone else gets `550 5.7.0`. Default none, as
    /// Postfix: whoever may send it can claim any address and any login.
    pub xclient_networks: TrustedNetworks,
    /// Clients allowed to send XFORWARD (Postfix's `smtpd_authorized_xforward_hosts`, Node's
    /// `useXForward`): content filters and relays that pass on the original client of a
    /// message. Default none.
    pub xforward_networks: TrustedNetworks,
    /// Longest TLS handshake (implicit TLS and STARTTLS). Default 60 s: Postfix's
    /// `smtpd_starttls_timeout` is 300 s (10 s under stress); a handshake is a few round
    /// trips, and a minute holds a slot for a stalled peer only so long.
    pub tls_handshake_timeout: Duration,
    /// On graceful shutdown, how long sessions in a transaction may take to finish before
    /// they are closed. Default 30 s.
    pub shutdown_grace: Duration,
}

/// The AUTH mechanisms built in ([`smtpkit_proto::auth::builtin`]), run by the
/// [`Dispatcher`](crate::Dispatcher) unless the session overrides
/// [`Session::mechanism`](crate::Session::mechanism).
pub const AUTH_MECHANISMS: [&str; 4] = smtpkit_proto::auth::BUILTIN_MECHANISMS;

/// The AUTH mechanisms offered by default, in order.
pub const DEFAULT_AUTH_MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

impl Default for ServerSettings {
    fn default() -> Self {
        let core = ServerOptions::default();
        Self {
            hostname: core.hostname,
            banner: core.banner,
            limits: core.limits,
            bare_line_ending: core.bare_line_ending,
            timeouts: core.timeouts,
            extensions: core.extensions,
            pipelining_sync_check: core.pipelining_sync_check,
            require_tls: core.require_tls,
            allow_insecure_auth: core.allow_insecure_auth,
            extra_mail_params: core.extra_mail_params,
            extra_rcpt_params: core.extra_rcpt_params,
            auth_optional: false,
            auth_mechanisms: DEFAULT_AUTH_MECHANISMS.map(str::to_owned).to_vec(),
            custom_mechanisms: Vec::new(),
            max_connections: 1000,
            max_per_ip: 50,
            trusted_networks: "127.0.0.0/8, ::1/128".parse().unwrap_or_default(),
            xclient_networks: TrustedNetworks::default(),
            xforward_networks: TrustedNetworks::default(),
            tls_handshake_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ServerSettings {
    /// The connection limiter these settings describe, shared by all listeners of a server.
    pub fn connection_limiter(&self) -> ConnectionLimiter {
        ConnectionLimiter::with_exempt(
            self.max_connections,
            self.max_per_ip,
            self.trusted_networks.clone(),
        )
    }

    /// The core options for a listener of `kind`; `tls_available` says whether the listener
    /// has a certificate (STARTTLS is offered then, except on implicit TLS listeners).
    pub fn server_options(&self, kind: ListenerKind, tls_available: bool) -> ServerOptions {
        let mut o = ServerOptions {
            hostname: self.hostname.clone(),
            banner: self.banner.clone(),
            protocol: Protocol::Smtp,
            extensions: self.extensions.clone(),
            limits: self.limits.clone(),
            timeouts: self.timeouts.clone(),
            bare_line_ending: self.bare_line_ending,
            pipelining_sync_check: self.pipelining_sync_check,
            allow_insecure_auth: self.allow_insecure_auth,
            require_auth: false,
            require_tls: self.require_tls,
            extra_mail_params: self.extra_mail_params.clone(),
            extra_rcpt_params: self.extra_rcpt_params.clone(),
            disabled_commands: Vec::new(),
        };
        o.extensions.starttls = tls_available && !kind.implicit_tls();
        o.extensions.auth_mechanisms = Vec::new();
        match kind {
            ListenerKind::Smtp => {}
            ListenerKind::Submission | ListenerKind::Smtps => {
                o.extensions.auth_mechanisms = self.auth_mechanisms.clone();
                o.require_auth = !self.auth_optional;
            }
            ListenerKind::Lmtp => o.protocol = Protocol::Lmtp,
        }
        o
    }

    /// The validated core config for a listener of `kind` (see
    /// [`server_options`](Self::server_options)).
    pub fn server_config(
        &self,
        kind: ListenerKind,
        tls_available: bool,
    ) -> Result<Arc<ServerConfig>, ConfigError> {
        self.check_mechanisms()?;
        ServerConfig::new(self.server_options(kind, tls_available)).map(Arc::new)
    }

    /// The validated core config for `listener`: [`server_config`](Self::server_config) for
    /// its kind, with its disabled commands and hidden extensions.
    pub fn listener_config(
        &self,
        listener: &ListenerSettings,
        tls_available: bool,
    ) -> Result<Arc<ServerConfig>, ConfigError> {
        self.check_mechanisms()?;
        let mut o = self.server_options(listener.kind, tls_available);
        for keyword in &listener.hidden_extensions {
            o.extensions.hide(keyword)?;
        }
        o.disabled_commands.clone_from(&listener.disabled_commands);
        ServerConfig::new(o).map(Arc::new)
    }

    fn check_mechanisms(&self) -> Result<(), ConfigError> {
        match self
            .auth_mechanisms
            .iter()
            .find(|m| !AUTH_MECHANISMS.contains(&m.as_str()) && !self.custom_mechanisms.contains(m))
        {
            Some(m) => Err(ConfigError::UnsupportedMechanism(m.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtpkit_proto::extension::Capability;

    fn caps(config: &ServerConfig, tls: bool) -> Vec<String> {
        config
            .capabilities(tls)
            .iter()
            .map(|c| match c {
                Capability::Auth(_) => "AUTH".to_owned(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn per_listener_configs() {
        let s = ServerSettings::default();

        let smtp = s.server_config(ListenerKind::Smtp, true).unwrap();
        assert!(caps(&smtp, false).contains(&"STARTTLS".into()));
        assert!(!caps(&smtp, true).contains(&"AUTH".into()));
        assert!(!smtp.options().require_auth);

        let smtp_plain = s.server_config(ListenerKind::Smtp, false).unwrap();
        assert!(!caps(&smtp_plain, false).contains(&"STARTTLS".into()));

        let sub = s.server_config(ListenerKind::Submission, true).unwrap();
        assert!(sub.options().require_auth);
        assert_eq!(sub.options().extensions.auth_mechanisms, ["PLAIN", "LOGIN"]);
        // AUTH only over TLS unless insecure AUTH is allowed.
        assert!(!caps(&sub, false).contains(&"AUTH".into()));
        assert!(caps(&sub, true).contains(&"AUTH".into()));

        let smtps = s.server_config(ListenerKind::Smtps, true).unwrap();
        assert!(!smtps.options().extensions.starttls);
        assert!(smtps.options().require_auth);

        let lmtp = s.server_config(ListenerKind::Lmtp, false).unwrap();
        assert_eq!(lmtp.options().protocol, Protocol::Lmtp);
    }

    #[test]
    fn auth_optional_and_insecure() {
        let s = ServerSettings {
            auth_optional: true,
            allow_insecure_auth: true,
            hostname: "mx.example".into(),
            ..Default::default()
        };
        let sub = s.server_config(ListenerKind::Submission, false).unwrap();
        assert!(!sub.options().require_auth);
        assert!(caps(&sub, false).contains(&"AUTH".into()));
        assert_eq!(sub.hostname(), "mx.example");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = ServerSettings {
            hostname: "has space".into(),
            ..Default::default()
        };
        assert_eq!(
            s.server_config(ListenerKind::Smtp, false).unwrap_err(),
            ConfigError::InvalidHostname
        );
        let s = ServerSettings {
            auth_mechanisms: vec!["plain".into()],
            ..Default::default()
        };
        assert!(s.server_config(ListenerKind::Submission, false).is_err());
    }

    #[test]
    fn listeners_disable_commands_and_hide_extensions() {
        let s = ServerSettings::default();
        let listener = ListenerSettings::new(ListenerKind::Smtp)
            .disable_command("vrfy")
            .disable_command("STARTTLS")
            .hide_extension("size")
            .hide_extension("PIPELINING");
        let config = s.listener_config(&listener, true).unwrap();
        let caps = caps(&config, false);
        for hidden in ["STARTTLS", "PIPELINING"] {
            assert!(!caps.contains(&hidden.into()), "{caps:?}");
        }
        assert!(!caps.iter().any(|c| c.starts_with("SIZE")), "{caps:?}");
        assert_eq!(config.options().disabled_commands, ["VRFY", "STARTTLS"]);

        let bad = ListenerSettings::new(ListenerKind::Smtp).hide_extension("VRFY");
        assert_eq!(
            s.listener_config(&bad, false).unwrap_err(),
            ConfigError::UnknownExtension("VRFY".into())
        );
        let bad = ListenerSettings::new(ListenerKind::Smtp).disable_command("QUIT");
        assert!(matches!(
            s.listener_config(&bad, false),
            Err(ConfigError::CannotDisable(_))
        ));
    }

    #[test]
    fn implicit_tls() {
        assert!(ListenerKind::Smtps.implicit_tls());
        assert!(!ListenerKind::Submission.implicit_tls());
        assert_eq!(ListenerKind::Lmtp.to_string(), "lmtp");
    }
}
