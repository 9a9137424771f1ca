//! [`ServerConfig`]: what a server offers and enforces, built once and shared by sessions.

use core::num::NonZeroU32;
use core::time::Duration;

use crate::data::BareLineEnding;
use crate::extension::Capability;
use crate::reply::encode::write_line;
use crate::reply::{MAX_REPLY_LINE, ReplyCode};

/// SMTP or LMTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RFC 5321 SMTP: EHLO/HELO, one reply after the message.
    #[default]
    Smtp,
    /// RFC 2033 LMTP: LHLO, one reply per accepted recipient after the message.
    Lmtp,
}

/// Which ESMTP extensions are offered (RFC 5321 2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920 PIPELINING. Default on.
    pub pipelining: bool,
    /// RFC 1870 SIZE: advertised with the message size limit, and the `SIZE=` MAIL parameter
    /// accepted. Default on. Off, the limit still holds; only the declaration is not offered.
    pub size: bool,
    /// RFC 6152 8BITMIME. Default on.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8. Default on.
    pub smtputf8: bool,
    /// RFC 3030 CHUNKING (BDAT). Default on.
    pub chunking: bool,
    /// RFC 3030 BINARYMIME; needs `chunking`. Default on.
    pub binary_mime: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES. Default on.
    pub enhanced_status_codes: bool,
    /// RFC 3461 DSN parameters. Default off: only an application that sends DSNs should offer it.
    pub dsn: bool,
    /// RFC 3207 STARTTLS, offered when the session is not yet encrypted. Default off: the
    /// adapter turns it on when it has a certificate.
    pub starttls: bool,
    /// RFC 8689 REQUIRETLS, offered only over TLS. Default off: it binds the relay path.
    pub requiretls: bool,
    /// RFC 4954 AUTH mechanisms, in the order offered. Default none.
    pub auth_mechanisms: Vec<String>,
}

/// The EHLO keywords [`Extensions::hide`] knows, in the order of the EHLO reply.
pub const EXTENSION_KEYWORDS: [&str; 11] = [
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "CHUNKING",
    "BINARYMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "DSN",
    "STARTTLS",
    "REQUIRETLS",
    "AUTH",
];

impl Extensions {
    /// Turns off the extension whose EHLO keyword is `keyword` (case-insensitive, one of
    /// [`EXTENSION_KEYWORDS`]), as Node's `hideSTARTTLS`, `hidePIPELINING`... do: not
    /// advertised, and its command or parameters refused as for a server without it. Hiding
    /// CHUNKING hides BINARYMIME too (RFC 3030 3 needs CHUNKING for it); hiding AUTH clears
    /// the mechanisms.
    ///
    /// ```
    /// use smtpkit_proto::server::Extensions;
    /// let mut e = Extensions::default();
    /// e.hide("8bitmime").unwrap();
    /// assert!(!e.eight_bit_mime);
    /// assert!(e.hide("VRFY").is_err());
    /// ```
    pub fn hide(&mut self, keyword: &str) -> Result<(), ConfigError> {
        let flag = match keyword.to_ascii_uppercase().as_str() {
            "PIPELINING" => &mut self.pipelining,
            "SIZE" => &mut self.size,
            "8BITMIME" => &mut self.eight_bit_mime,
            "CHUNKING" => {
                self.binary_mime = false;
                &mut self.chunking
            }
            "BINARYMIME" => &mut self.binary_mime,
            "SMTPUTF8" => &mut self.smtputf8,
            "ENHANCEDSTATUSCODES" => &mut self.enhanced_status_codes,
            "DSN" => &mut self.dsn,
            "STARTTLS" => &mut self.starttls,
            "REQUIRETLS" => &mut self.requiretls,
            "AUTH" => {
                self.auth_mechanisms.clear();
                return Ok(());
            }
            _ => return Err(ConfigError::UnknownExtension(keyword.to_owned())),
        };
        *flag = false;
        Ok(())
    }
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            pipelining: true,
            size: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            binary_mime: true,
            enhanced_status_codes: true,
            dsn: false,
            starttls: false,
            requiretls: false,
            auth_mechanisms: Vec::new(),
        }
    }
}

/// Limits, each with where its default comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line with CRLF: 512 (RFC 5321 4.5.3.1.4). AUTH lines may reach 12288
    /// (RFC 4954 4) regardless.
    pub command_line: usize,
    /// Largest message in octets, advertised as SIZE: 25 MiB, the common limit of large
    /// providers (Gmail, Outlook.com), room for a 20 MB attachment-heavy message.
    pub message_size: u64,
    /// Recipients per message: 100, the minimum RFC 5321 4.5.3.1.8 requires servers to accept.
    pub recipients: u32,
    /// Over-limit recipients per message that get `452 4.5.3` without counting as errors:
    /// 1000, Postfix's `smtpd_recipient_overshoot_limit`. A client that sends every RCPT
    /// before DATA (Python's smtplib) then still delivers to the accepted ones; past this,
    /// each further one counts towards `errors`.
    pub recipient_overshoot: u32,
    /// Errors before 421 and close: 20, Postfix's `smtpd_hard_error_limit`.
    pub errors: u32,
    /// NOOP/RSET/VRFY/EXPN/HELP commands before 421 and close: 100, Postfix's
    /// `smtpd_junk_command_limit`.
    pub junk_commands: u32,
    /// Failed AUTH attempts before 421 and close: 3, as most submission servers do.
    pub auth_failures: u32,
    /// Messages per session before 421: 1000 (a busy relay connection; Postfix has no such
    /// limit by default, Exim's `smtp_accept_max_per_connection` is 1000).
    pub messages_per_session: u32,
    /// Message octets per session before 421: `None` for no limit.
    pub bytes_per_session: Option<u64>,
    /// Pending reply bytes above which input is no longer consumed: 16 KiB, so a client that
    /// pipelines without reading cannot grow the output without bound.
    pub output_buffer: usize,
    /// Slowest DATA or BDAT transfer allowed, in octets per second: 500, Postfix's
    /// `smtpd_min_data_rate`. Each transfer starts with a deadline of
    /// [`Timeouts::data_block`]; every `n` octets received move it `n / rate` seconds later,
    /// but never past `data_block` from now. A trickle therefore runs out of time after about
    /// `data_block` however often it sends a byte, while a sender at or above the rate never
    /// does. `None` keeps only the per-block timeout, which each byte resets.
    pub min_data_rate: Option<NonZeroU32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            command_line: crate::line::MAX_COMMAND_LINE,
            message_size: 25 * 1024 * 1024,
            recipients: 100,
            recipient_overshoot: 1000,
            errors: 20,
            junk_commands: 100,
            auth_failures: 3,
            messages_per_session: 1000,
            bytes_per_session: None,
            output_buffer: 16 * 1024,
            min_data_rate: NonZeroU32::new(500),
        }
    }
}

/// Deadlines (RFC 5321 4.5.3.2, server side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the application's connection decision: 5 minutes, the client's greeting
    /// wait (4.5.3.2.1), after which the client has given up anyway.
    pub greeting: Duration,
    /// Hold the greeting this long and treat earlier input as a pipelining violation
    /// (Postfix `postscreen_greet_wait`). Default none.
    pub greeting_delay: Option<Duration>,
    /// Waiting for the next command: 5 minutes (4.5.3.2.7).
    pub command: Duration,
    /// Waiting for the next piece of DATA or BDAT content: 3 minutes (4.5.3.2.5).
    pub data_block: Duration,
    /// Waiting for the application's decision on a command or message: 10 minutes, the
    /// client's wait after the end of data (4.5.3.2.6).
    pub decision: Duration,
    /// Whole session: 1 hour. No RFC number; bounds slow-drip clients that stay just under
    /// the other deadlines.
    pub session: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            greeting: Duration::from_secs(300),
            greeting_delay: None,
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            decision: Duration::from_secs(600),
            session: Some(Duration::from_secs(3600)),
        }
    }
}

/// Everything a [`ServerConfig`] is built from. Plain data with defaults; see each type.
///
/// ```
/// use smtpkit_proto::server::{ServerConfig, ServerOptions};
/// let config = ServerConfig::new(ServerOptions { hostname: "mx.example".into(), ..Default::default() }).unwrap();
/// assert_eq!(config.hostname(), "mx.example");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// The name the server gives itself in the greeting and EHLO reply.
    pub hostname: String,
    /// Text after `220 hostname ` in the greeting.
    pub banner: String,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// Offered extensions.
    pub extensions: Extensions,
    /// Limits.
    pub limits: Limits,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Bare CR / bare LF in message content.
    pub bare_line_ending: BareLineEnding,
    /// Postfix-style `reject_unauth_pipelining`: input sent before the greeting, or after a
    /// command that must end a pipelined group (EHLO, DATA, NOOP, ...), gets 554 5.5.0 and a
    /// close. Default off.
    pub pipelining_sync_check: bool,
    /// Offer and accept AUTH on an unencrypted session. Default off (RFC 4954 4, RFC 8314).
    pub allow_insecure_auth: bool,
    /// MAIL needs AUTH first (submission, RFC 6409 4.3). Default off.
    pub require_auth: bool,
    /// MAIL and AUTH need TLS first (RFC 3207 4). Default off.
    pub require_tls: bool,
    /// MAIL parameter keywords the application handles itself (no 555 for them).
    pub extra_mail_params: Vec<String>,
    /// RCPT parameter keywords the application handles itself.
    pub extra_rcpt_params: Vec<String>,
    /// Command verbs answered `502 5.5.1` as if not implemented (RFC 5321 4.2.4), as Node's
    /// `disabledCommands`: any of [`COMMAND_VERBS`] but QUIT, case-insensitive. Disabling
    /// STARTTLS, AUTH or BDAT also stops advertising STARTTLS, AUTH or CHUNKING. Default none.
    pub disabled_commands: Vec<String>,
}

/// The command verbs the server knows, upper case.
pub const COMMAND_VERBS: [&str; 17] = [
    "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP", "NOOP",
    "QUIT", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD",
];

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            banner: "ESMTP".into(),
            protocol: Protocol::Smtp,
            extensions: Extensions::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            bare_line_ending: BareLineEnding::default(),
            pipelining_sync_check: false,
            allow_insecure_auth: false,
            require_auth: false,
            require_tls: false,
            extra_mail_params: Vec::new(),
            extra_rcpt_params: Vec::new(),
            disabled_commands: Vec::new(),
        }
    }
}

/// Why [`ServerConfig::new`] refused its options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The hostname is empty or not printable ASCII without spaces.
    InvalidHostname,
    /// The banner contains control characters or makes the greeting longer than 512 octets.
    InvalidBanner,
    /// An AUTH mechanism name is not 1 to 20 of `A-Z 0-9 - _` (RFC 4954 3).
    InvalidMechanism(String),
    /// An AUTH mechanism the layer running the exchange does not implement (the core accepts
    /// any valid name; `smtpkit-server` runs PLAIN and LOGIN). Offering it would only
    /// advertise a mechanism every attempt of which fails.
    UnsupportedMechanism(String),
    /// The command line limit is below 512 (RFC 5321 4.5.3.1.4 makes that the minimum).
    CommandLineTooShort,
    /// `binary_mime` without `chunking` (RFC 3030 3).
    BinaryMimeWithoutChunking,
    /// The output cap is below one maximal reply line (512), so no command could be answered.
    OutputBufferTooSmall,
    /// A hidden extension that is not one of [`EXTENSION_KEYWORDS`].
    UnknownExtension(String),
    /// A disabled command that is not one of [`COMMAND_VERBS`], or QUIT.
    CannotDisable(String),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InvalidHostname => f.write_str("hostname must be printable ASCII without spaces"),
            Self::InvalidBanner => {
                f.write_str("banner must be printable and fit in one reply line")
            }
            Self::InvalidMechanism(m) => write!(f, "invalid AUTH mechanism name {m:?}"),
            Self::UnsupportedMechanism(m) => {
                write!(f, "AUTH mechanism {m:?} is not implemented by this server")
            }
            Self::CommandLineTooShort => f.write_str("command line limit must be at least 512"),
            Self::BinaryMimeWithoutChunking => f.write_str("BINARYMIME needs CHUNKING"),
            Self::OutputBufferTooSmall => f.write_str("output buffer limit must be at least 512"),
            Self::UnknownExtension(k) => write!(
                f,
                "unknown extension {k:?} (known: {})",
                EXTENSION_KEYWORDS.join(", ")
            ),
            Self::CannotDisable(v) => write!(
                f,
                "cannot disable {v:?}: not a command this server knows, or QUIT"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A validated configuration with its fixed replies encoded once.
///
/// Share it between sessions with `Arc`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) options: ServerOptions,
    pub(crate) greeting: Vec<u8>,
    /// EHLO replies: `[plaintext, tls]`, since STARTTLS, AUTH and REQUIRETLS depend on it.
    /// The EHLO reply, indexed by [`ehlo_index`]: TLS or not, XCLIENT and XFORWARD offered
    /// or not (to trusted front ends only).
    pub(crate) ehlo: [Vec<u8>; 8],
    pub(crate) helo: Vec<u8>,
}

impl ServerConfig {
    /// Checks `options` and encodes the greeting and EHLO replies.
    pub fn new(mut options: ServerOptions) -> Result<Self, ConfigError> {
        for verb in &mut options.disabled_commands {
            verb.make_ascii_uppercase();
            if verb == "QUIT" || !COMMAND_VERBS.contains(&verb.as_str()) {
                return Err(ConfigError::CannotDisable(verb.clone()));
            }
            // A disabled command's extension is not offered either.
            match verb.as_str() {
                "STARTTLS" => options.extensions.starttls = false,
                "AUTH" => options.extensions.auth_mechanisms.clear(),
                "BDAT" => {
                    options.extensions.chunking = false;
                    options.extensions.binary_mime = false;
                }
                _ => {}
            }
        }
        let o = &options;
        if o.hostname.is_empty() || !o.hostname.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidHostname);
        }
        if o.banner.bytes().any(|b| b.is_ascii_control())
            || o.hostname.len() + o.banner.len() + 7 > MAX_REPLY_LINE
        {
            return Err(ConfigError::InvalidBanner);
        }
        for m in &o.extensions.auth_mechanisms {
            let ok = (1..=20).contains(&m.len())
                && m.bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(ConfigError::InvalidMechanism(m.clone()));
            }
        }
        if o.limits.command_line < crate::line::MAX_COMMAND_LINE {
            return Err(ConfigError::CommandLineTooShort);
        }
        if o.limits.output_buffer < MAX_REPLY_LINE {
            return Err(ConfigError::OutputBufferTooSmall);
        }
        if o.extensions.binary_mime && !o.extensions.chunking {
            return Err(ConfigError::BinaryMimeWithoutChunking);
        }
        let mut greeting = Vec::new();
        let text = if o.banner.is_empty() {
            o.hostname.clone()
        } else {
            format!("{} {}", o.hostname, o.banner)
        };
        // RFC 2034 3: no enhanced code on the greeting.
        write_line(&mut greeting, ReplyCode::READY, None, &text, true);
        let mut helo = Vec::new();
        write_line(&mut helo, ReplyCode::OK, None, &o.hostname, true);
        let ehlo = core::array::from_fn(|i| encode_ehlo(o, i & 1 != 0, i & 2 != 0, i & 4 != 0));
        Ok(Self {
            options,
            greeting,
            ehlo,
            helo,
        })
    }

    /// The options this config was built from.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The server's hostname.
    pub fn hostname(&self) -> &str {
        &self.options.hostname
    }

    /// Whether AUTH is offered on a session with (`tls`) or without TLS.
    pub(crate) fn auth_offered(&self, tls: bool) -> bool {
        !self.options.extensions.auth_mechanisms.is_empty()
            && (tls || self.options.allow_insecure_auth)
    }

    /// The EHLO keywords offered on a session with or without TLS.
    pub fn capabilities(&self, tls: bool) -> Vec<Capability<'_>> {
        capabilities(&self.options, tls)
    }

    /// Whether `verb` (upper case, as [`Command::verb`](crate::Command::verb) gives it) is
    /// disabled on this server.
    pub(crate) fn disabled(&self, verb: &str) -> bool {
        // Empty for almost every server: no cost on the hot path.
        !self.options.disabled_commands.is_empty()
            && self.options.disabled_commands.iter().any(|v| v == verb)
    }

    pub(crate) fn enhanced(&self) -> bool {
        self.options.extensions.enhanced_status_codes
    }
}

fn capabilities(o: &ServerOptions, tls: bool) -> Vec<Capability<'_>> {
    let e = &o.extensions;
    let mut caps = Vec::new();
    if e.pipelining {
        caps.push(Capability::Pipelining);
    }
    if e.size {
        caps.push(Capability::Size(o.limits.message_size));
    }
    if e.eight_bit_mime {
        caps.push(Capability::EightBitMime);
    }
    if e.chunking {
        caps.push(Capability::Chunking);
    }
    if e.binary_mime {
        caps.push(Capability::BinaryMime);
    }
    if e.smtputf8 {
        caps.push(Capability::SmtpUtf8);
    }
    if e.enhanced_status_codes {
        caps.push(Capability::EnhancedStatusCodes);
    }
    if e.dsn {
        caps.push(Capability::Dsn);
    }
    if e.starttls && !tls {
        caps.push(Capability::StartTls);
    }
    if e.requiretls && tls {
        caps.push(Capability::RequireTls);
    }
    if !e.auth_mechanisms.is_empty() && (tls || o.allow_insecure_auth) {
        caps.push(Capability::Auth(""));
    }
    caps
}

/// Where the EHLO reply for a session is in [`ServerConfig::ehlo`].
pub(crate) fn ehlo_index(tls: bool, xclient: bool, xforward: bool) -> usize {
    usize::from(tls) | usize::from(xclient) << 1 | usize::from(xforward) << 2
}

fn encode_ehlo(o: &ServerOptions, tls: bool, xclient: bool, xforward: bool) -> Vec<u8> {
    let mut lines = vec![o.hostname.clone()];
    for cap in capabilities(o, tls) {
        lines.push(match cap {
            Capability::Auth(_) => format!("AUTH {}", o.extensions.auth_mechanisms.join(" ")),
            other => other.to_string(),
        });
    }
    let disabled = |verb| o.disabled_commands.iter().any(|v| v == verb);
    if xclient && !disabled("XCLIENT") {
        lines.push(crate::command::front_end::FrontEnd::Xclient.ehlo_line());
    }
    if xforward && !disabled("XFORWARD") {
        lines.push(crate::command::front_end::FrontEnd::Xforward.ehlo_line());
    }
    let mut out = Vec::new();
    let last = lines.len() - 1;
    for (i, line) in lines.iter().enumerate() {
        // RFC 2034 3: no enhanced codes in the EHLO reply.
        write_line(&mut out, ReplyCode::OK, None, line, i == last);
    }
    out
}
