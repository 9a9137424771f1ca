//! [`ClientConfig`]: how a client introduces itself, which extensions it uses, and its
//! deadlines. Built once and shared by sessions.

use core::time::Duration;

use crate::server::{ConfigError, Protocol};

/// Deadlines for the server's replies (RFC 5321 4.5.3.2, client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Waiting for the 220 greeting: 5 minutes (4.5.3.2.1).
    pub greeting: Duration,
    /// Waiting for the reply to MAIL: 5 minutes (4.5.3.2.2).
    pub mail: Duration,
    /// Waiting for the reply to each RCPT: 5 minutes (4.5.3.2.3).
    pub rcpt: Duration,
    /// Waiting for the 354 after DATA: 2 minutes (4.5.3.2.4).
    pub data_start: Duration,
    /// A block of content that the server does not take (output still pending): 3 minutes
    /// (4.5.3.2.5); also the wait for the reply to a BDAT chunk that is not the last.
    pub data_block: Duration,
    /// Waiting for the reply after the end of the content: 10 minutes (4.5.3.2.6), since the
    /// server may be storing or relaying the message.
    pub data_end: Duration,
    /// Any other command (EHLO, STARTTLS, AUTH, RSET, NOOP, QUIT): 5 minutes, the RFC's
    /// figure for MAIL and RCPT, since it names none for these.
    pub command: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            greeting: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_start: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
            command: Duration::from_secs(300),
        }
    }
}

/// Everything a [`ClientConfig`] is built from. Plain data with defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The name the client gives in EHLO/HELO/LHLO: a domain or an address literal.
    pub hostname: String,
    /// SMTP (EHLO, HELO fallback) or LMTP (LHLO, one reply per recipient after the message).
    pub protocol: Protocol,
    /// Pipeline MAIL, RCPT and DATA when the server offers PIPELINING (RFC 2920). Default on.
    pub pipelining: bool,
    /// Send content with BDAT when the server offers CHUNKING (RFC 3030). Default off:
    /// DATA is what every server takes; BINARYMIME messages use BDAT regardless.
    pub chunking: bool,
    /// Allow AUTH on a session without TLS. Default off, so credentials never go out in
    /// plaintext by mistake (RFC 8314 4).
    pub allow_insecure_auth: bool,
    /// Output bytes (written or waiting to be released) above which
    /// [`Client::wants_data`](super::Client::wants_data) turns false: 64 KiB, a few socket
    /// buffers' worth, so a server that reads slowly bounds the client's memory.
    pub output_buffer: usize,
    /// Deadlines.
    pub timeouts: ClientTimeouts,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            protocol: Protocol::Smtp,
            pipelining: true,
            chunking: false,
            allow_insecure_auth: false,
            output_buffer: 64 * 1024,
            timeouts: ClientTimeouts::default(),
        }
    }
}

/// A validated client configuration. Share it between sessions with `Arc`.
///
/// ```
/// use smtpkit_proto::client::{ClientConfig, ClientOptions};
/// let config = ClientConfig::new(ClientOptions { hostname: "mta.example".into(), ..Default::default() }).unwrap();
/// assert_eq!(config.options().hostname, "mta.example");
/// assert!(ClientConfig::new(ClientOptions { hostname: "two words".into(), ..Default::default() }).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) options: ClientOptions,
}

impl ClientConfig {
    /// Checks `options`: the hostname must be one word of printable ASCII that fits in a
    /// command line, as EHLO needs.
    pub fn new(options: ClientOptions) -> Result<Self, ConfigError> {
        let h = &options.hostname;
        if h.is_empty() || h.len() > 255 || !h.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidHostname);
        }
        if options.output_buffer < crate::reply::MAX_REPLY_LINE {
            return Err(ConfigError::OutputBufferTooSmall);
        }
        Ok(Self { options })
    }

    /// The options this config was built from.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }
}
