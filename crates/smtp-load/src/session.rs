//! One client connection: greeting, EHLO, optional STARTTLS, then mail transactions, all through
//! the project's own client (`smtpkit_tokio::client`): the core parses replies, pipelines (RFC 2920),
//! dot-stuffs or chunks (BDAT) and resets refused transactions; this module maps its results to the
//! report's `Failure`s. Every step is bounded by the core's deadlines (all set to the read timeout)
//! and by the run's deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{ClientConfig as SmtpConfig, Envelope, Recipient, Sasl};
use smtpkit_tokio::client::{self, Body, Error, ProtocolError, TlsMode, TlsSettings};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// Why a message or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server answered with a code the client did not expect; the connection stays usable.
    Reply { code: u16, text: String },
    /// The TCP connection could not be opened.
    Connect(io::ErrorKind),
    /// Reading or writing failed.
    Io(io::ErrorKind),
    /// The server closed the connection in the middle of a conversation.
    Closed,
    /// No reply (or no progress writing) within the read timeout.
    Timeout,
    /// The run's duration limit passed while this was in progress; not counted as an error.
    Interrupted,
    /// The TLS handshake failed.
    Tls(String),
    /// The server's bytes did not make sense as SMTP, or it lacks a required extension.
    Protocol(&'static str),
}

impl Failure {
    /// The key under which the report groups this failure: the bare reply code for replies.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Reply { code, .. } => code.to_string(),
            Self::Connect(kind) => format!("connect: {kind}"),
            Self::Io(kind) => format!("io: {kind}"),
            Self::Closed => "io: connection closed by server".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Interrupted => "interrupted".to_owned(),
            Self::Tls(msg) => format!("tls: {msg}"),
            Self::Protocol(msg) => format!("protocol: {msg}"),
        }
    }

    /// An example of this failure worth showing next to the count (the server's reply text).
    pub(crate) fn sample(&self) -> Option<&str> {
        match self {
            Self::Reply { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether the connection is unusable after this failure.
    pub(crate) fn is_fatal(&self) -> bool {
        !matches!(self, Self::Reply { .. })
    }
}

/// STARTTLS settings for a run.
#[derive(Debug, Clone)]
pub struct StartTls {
    /// The rustls client configuration (see [`crate::tls::client_config`]).
    pub config: Arc<ClientConfig>,
    /// The name the certificate is checked against (and sent as SNI when it is a DNS name).
    pub server_name: ServerName<'static>,
}

/// Everything a connection needs to know, computed once per run and shared by all sessions.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    /// The client core's config: EHLO name, PIPELINING and BDAT use, deadlines. `None` when the
    /// EHLO name is not valid, which fails every connection.
    pub(crate) config: Option<Arc<SmtpConfig>>,
    pub(crate) mail_from: String,
    pub(crate) rcpt_to: Vec<String>,
    pub(crate) pipelining: bool,
    pub(crate) bdat: bool,
    pub(crate) starttls: Option<StartTls>,
    /// AUTH PLAIN user and password, sent once per connection.
    pub(crate) auth: Option<(String, String)>,
    pub(crate) read_timeout: Duration,
    pub(crate) deadline: Option<Instant>,
    pub(crate) payloads: Vec<Payload>,
}

/// One pre-generated message; the client core encodes it for DATA or BDAT as it goes out.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) message: Vec<u8>,
}

impl Plan {
    /// Runs `fut`, cut short by the run's deadline (a step's own limit is the core's).
    async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Result<T, Failure> {
        match self.deadline {
            Some(deadline) => timeout_at(deadline, fut)
                .await
                .map_err(|_| Failure::Interrupted),
            None => Ok(fut.await),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Rejected(reply) => {
                let last = reply.lines().last().unwrap_or_default();
                let text = match reply.enhanced() {
                    Some(e) => format!("{} {e} {last}", reply.code()),
                    None => format!("{} {last}", reply.code()),
                };
                Self::Reply {
                    code: reply.code().get(),
                    text,
                }
            }
            Error::Io(e) => Self::Io(e.kind()),
            Error::Timeout => Self::Timeout,
            Error::Tls(e) => Self::Tls(e.to_string()),
            Error::TlsUnavailable => Self::Protocol("STARTTLS not advertised"),
            Error::Closed => Self::Closed,
            Error::Protocol(ProtocolError::Malformed(_)) => Self::Protocol("malformed reply"),
            Error::Protocol(_) => Self::Protocol("reply to nothing sent"),
            _ => Self::Protocol("request refused by the client"),
        }
    }
}

/// An open, greeted connection ready for mail transactions.
#[derive(Debug)]
pub(crate) struct Connection {
    conn: client::Connection,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO, and runs STARTTLS if the plan asks for it.
    pub(crate) async fn open(plan: &Plan) -> Result<Self, Failure> {
        let config = plan
            .config
            .clone()
            .ok_or(Failure::Protocol("invalid EHLO name"))?;
        let limit = Instant::now() + plan.read_timeout;
        let tcp = plan
            .bounded(timeout_at(limit, TcpStream::connect(plan.target)))
            .await?
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| Failure::Connect(e.kind()))?;
        let tls = plan.starttls.as_ref().map(|t| {
            TlsSettings::new(
                Arc::clone(&t.config),
                t.server_name.clone(),
                TlsMode::Required,
            )
        });
        let stream = client::Stream::new(tcp);
        let mut conn = plan
            .bounded(client::Connection::open(stream, config, tls))
            .await??;
        if let Some((user, password)) = &plan.auth {
            plan.bounded(conn.auth(&Sasl::Plain { user, password }))
                .await??;
        }
        let caps = conn.capabilities();
        if plan.pipelining && !caps.pipelining {
            return Err(Failure::Protocol("PIPELINING not advertised"));
        }
        if plan.bdat && !caps.chunking {
            return Err(Failure::Protocol("CHUNKING not advertised"));
        }
        Ok(Self { conn })
    }

    /// Whether another message may be sent on this connection.
    pub(crate) fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Sends one message; on success returns the time from sending MAIL to reading the final reply.
    ///
    /// A refused command leaves the connection usable: the client resets the transaction. The first
    /// refusal among the recipients is the one reported.
    pub(crate) async fn send_message(
        &mut self,
        plan: &Plan,
        payload: &Payload,
    ) -> Result<Duration, Failure> {
        let started = Instant::now();
        let invalid = || Failure::Protocol("invalid address");
        let from = ReversePath::Mailbox(Mailbox::parse(&plan.mail_from).map_err(|_| invalid())?);
        let to = plan
            .rcpt_to
            .iter()
            .map(|r| Ok(Recipient::new(ForwardPath::Mailbox(Mailbox::parse(r)?))))
            .collect::<Result<Vec<_>, smtpkit_proto::ParseError>>()
            .map_err(|_| invalid())?;
        let envelope = Envelope::new(from, &to);
        let delivery = plan
            .bounded(self.conn.send(&envelope, Body::Bytes(&payload.message)))
            .await??;
        match delivery.recipients.into_iter().find_map(Result::err) {
            None => Ok(started.elapsed()),
            Some(e) => Err(e.into()),
        }
    }

    /// Says QUIT and closes; errors no longer matter at this point.
    pub(crate) async fn quit(self, plan: &Plan) {
        let _ = plan.bounded(self.conn.quit()).await;
    }
}

/// The client core's config for a run: every deadline is the read timeout; `None` for an EHLO
/// name the core refuses. `auth` allows AUTH without TLS: the load generator's servers are
/// test servers, often on loopback without a certificate.
pub(crate) fn smtp_config(
    ehlo_name: &str,
    pipelining: bool,
    bdat: bool,
    read_timeout: Duration,
    auth: bool,
) -> Option<SmtpConfig> {
    let t = read_timeout;
    let options = smtpkit_proto::client::ClientOptions {
        hostname: ehlo_name.to_owned(),
        pipelining,
        chunking: bdat,
        allow_insecure_auth: auth,
        // Bulk messages go out in pieces of this size (and as BDAT chunks of this size): a few
        // large writes per MiB rather than many small ones.
        output_buffer: 256 * 1024,
        timeouts: smtpkit_proto::client::ClientTimeouts {
            greeting: t,
            mail: t,
            rcpt: t,
            data_start: t,
            data_block: t,
            data_end: t,
            command: t,
        },
        ..Default::default()
    };
    SmtpConfig::new(options).ok()
}
