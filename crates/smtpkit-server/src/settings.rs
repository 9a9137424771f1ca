//! [`ServerSettings`]: one place for what every listener shares, and [`ListenerKind`]: what
//! differs between ports.

use core::fmt;
use std::sync::Arc;
use std::time::Duration;

use smtpkit_proto::data::BareLineEnding;
use smtpkit_proto::server::{ConfigError, Limits, Protocol, Timeouts};
use smtpkit_proto::{ServerConfig, ServerOptions};

use crate::proxy::ProxySettings;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// Settings shared by all listeners of a server.
///
/// ```
/// use smtpkit_server::{ListenerKind, ServerSettings};
/// let settings = ServerSettings { hostname: "mx.example".into(), ..Default::default() };
/// let config = settings.server_config(ListenerKind::Submission, true).unwrap();
/// assert!(config.options().require_auth);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// The server's name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Text after the hostname in the greeting.
    pub banner: String,
    /// Protocol limits (message size, recipients, errors, output cap...).
    pub limits: Limits,
    /// Bare CR / bare LF in message content: normalize (the default, as Postfix 3.9) or reject.
    pub bare_line_ending: BareLineEnding,
    /// Protocol deadlines. `timeouts.command` also bounds each write to the client, so a
    /// client that never reads is dropped after it.
    pub timeouts: Timeouts,
    /// Submission and SMTPS: allow MAIL without AUTH. Default off (RFC 6409 4.3).
    pub auth_optional: bool,
    /// Offer and accept AUTH without TLS. Default off (RFC 8314 3): passwords would travel
    /// in clear.
    pub allow_insecure_auth: bool,
    /// AUTH mechanisms offered on submission listeners. Default PLAIN and LOGIN, the two the
    /// dispatcher implements.
    pub auth_mechanisms: Vec<String>,
    /// Open connections across all listeners; more get `421 4.7.0`. Default 1000.
    pub max_connections: usize,
    /// Open connections from one IP address. Default 20, Postfix's
    /// `smtpd_client_connection_count_limit` is 50 and most MTAs open a handful.
    pub max_per_ip: usize,
    /// PROXY protocol: `None` (the default) reads no header.
    pub proxy: Option<ProxySettings>,
    /// Longest TLS handshake (implicit TLS and STARTTLS). Default 10 s, generous for any real
    /// client while bounding half-open handshakes.
    pub tls_handshake_timeout: Duration,
    /// On graceful shutdown, how long sessions in a transaction may take to finish before
    /// they are closed. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            banner: "ESMTP ready".into(),
            limits: Limits::default(),
            bare_line_ending: BareLineEnding::default(),
            timeouts: Timeouts::default(),
            auth_optional: false,
            allow_insecure_auth: false,
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            max_connections: 1000,
            max_per_ip: 20,
            proxy: None,
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ServerSettings {
    /// The core options for a listener of `kind`; `tls_available` says whether the server
    /// has a certificate (STARTTLS is offered then, except on implicit TLS listeners).
    pub fn server_options(&self, kind: ListenerKind, tls_available: bool) -> ServerOptions {
        let mut o = ServerOptions {
            hostname: self.hostname.clone(),
            banner: self.banner.clone(),
            limits: self.limits.clone(),
            timeouts: self.timeouts.clone(),
            allow_insecure_auth: self.allow_insecure_auth,
            bare_line_ending: self.bare_line_ending,
            ..ServerOptions::default()
        };
        o.extensions.starttls = tls_available && !kind.implicit_tls();
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
        ServerConfig::new(self.server_options(kind, tls_available)).map(Arc::new)
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
    fn implicit_tls() {
        assert!(ListenerKind::Smtps.implicit_tls());
        assert!(!ListenerKind::Submission.implicit_tls());
        assert_eq!(ListenerKind::Lmtp.to_string(), "lmtp");
    }
}
