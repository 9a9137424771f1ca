//! [`RecordingHandler`]: an application that writes down every session call and every
//! message byte-exact, and refuses a few things on cue, so conversations can check what the
//! application saw as well as what the client read.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use smtpkit_server::rdns::ReverseName;
use smtpkit_server::{
    CloseReason, Credentials, Decision, EnhancedCode, ForwardPath, Handler, ListenerKind,
    Parameters, Reply, ReversePath, Session, SessionInfo,
};

/// The only credentials [`RecordingHandler`] accepts.
pub const USER: &str = "user";
/// The password of [`USER`].
pub const PASSWORD: &str = "secret";
/// The OAuth 2.0 token of [`USER`] (XOAUTH2, OAUTHBEARER).
pub const TOKEN: &str = "ya29.token";

/// One call the application received, in a form that is the same for every adapter: message
/// content is joined into one body, because how it is split into chunks depends on timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `Handler::connect`: the listener, whether the session started encrypted, and the
    /// client's reverse-DNS name when the server looks names up.
    Connect {
        /// The listener that accepted the connection.
        listener: ListenerKind,
        /// Implicit TLS.
        tls: bool,
        /// `SessionInfo::reverse_name`.
        reverse_name: Option<ReverseName>,
        /// The client came over a Unix-domain socket (`SessionInfo::peer` says so, with no
        /// IP address).
        unix: bool,
    },
    /// `Session::ehlo` with the domain and whether the session was encrypted.
    Ehlo {
        /// The client's name.
        domain: String,
        /// The session was encrypted at the time.
        tls: bool,
    },
    /// `Session::starttls` and whether it was accepted.
    StartTls {
        /// Whether the handler accepted it.
        accepted: bool,
    },
    /// `Session::secured` with the SNI name and TLS version the handshake reported.
    Secured {
        /// `TlsInfo::sni`, `-` when absent.
        sni: String,
        /// `TlsInfo::version_name`.
        version: &'static str,
        /// The length of `TlsInfo::peer_certificates`: the client's verified chain.
        client_certs: usize,
    },
    /// `Session::xclient`: the client the front end named, as `SessionInfo` has it now.
    Xclient {
        /// `SessionInfo::peer`.
        peer: String,
        /// `SessionInfo::reverse_name`, shown as its `Display` (`-` when none).
        name: String,
        /// `SessionInfo::authenticated`.
        user: Option<String>,
    },
    /// `SessionInfo::xforward` at `Session::mail_from`, when XFORWARD came first.
    Forwarded {
        /// The original client's address (`-` when not given).
        addr: String,
        /// The name it greeted the front end with (`-` when not given).
        helo: String,
    },
    /// `Session::auth`: the mechanism, the user name and whether it was accepted.
    Auth {
        /// The mechanism's name.
        mechanism: String,
        /// The authentication identity (the token's user for XOAUTH2 and OAUTHBEARER).
        user: String,
        /// Whether the handler accepted it.
        accepted: bool,
    },
    /// `Session::mail_from` with the reverse path as sent, and the authenticated user.
    MailFrom {
        /// The reverse path, with angle brackets.
        from: String,
        /// `SessionInfo::authenticated` at the time.
        user: Option<String>,
    },
    /// `Session::rcpt_to` with the forward path and whether it was accepted.
    RcptTo {
        /// The forward path, with angle brackets.
        to: String,
        /// Whether the handler accepted it.
        accepted: bool,
    },
    /// `Session::data_start` and whether it was accepted.
    DataStart {
        /// Whether the handler accepted it.
        accepted: bool,
    },
    /// `Session::data_end`, with every content byte received since `data_start`.
    DataEnd(Vec<u8>),
    /// `Session::data_aborted`. How much content came before the abort depends on how the
    /// input was split, so it is not recorded.
    DataAborted,
    /// `Session::reset`.
    Reset,
    /// A call the handler never answers (`hang rcpt`, `hang data_chunk`).
    Hang(&'static str),
    /// `Session::close` with its reason.
    Close(CloseReason),
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = |t: bool| if t { " tls" } else { "" };
        let ok = |a: bool| if a { "" } else { " refused" };
        match self {
            Self::Connect {
                listener,
                tls: t,
                reverse_name,
                unix,
            } => {
                write!(f, "connect {listener}{}", tls(*t))?;
                if *unix {
                    f.write_str(" unix")?;
                }
                match reverse_name {
                    Some(name) => write!(f, " rdns {name:?}"),
                    None => Ok(()),
                }
            }
            Self::Ehlo { domain, tls: t } => write!(f, "ehlo {domain}{}", tls(*t)),
            Self::StartTls { accepted } => write!(f, "starttls{}", ok(*accepted)),
            Self::Secured {
                sni,
                version,
                client_certs,
            } => {
                write!(f, "secured {sni} {version}")?;
                match client_certs {
                    0 => Ok(()),
                    n => write!(f, " client-certs {n}"),
                }
            }
            Self::Xclient { peer, name, user } => match user {
                Some(u) => write!(f, "xclient {peer} {name} as {u}"),
                None => write!(f, "xclient {peer} {name}"),
            },
            Self::Forwarded { addr, helo } => write!(f, "forwarded {addr} {helo}"),
            Self::Auth {
                mechanism,
                user,
                accepted,
            } => write!(f, "auth {mechanism} {user}{}", ok(*accepted)),
            Self::MailFrom { from, user } => match user {
                Some(u) => write!(f, "mail {from} as {u}"),
                None => write!(f, "mail {from}"),
            },
            Self::RcptTo { to, accepted } => write!(f, "rcpt {to}{}", ok(*accepted)),
            Self::DataStart { accepted } => write!(f, "data_start{}", ok(*accepted)),
            Self::DataEnd(body) => write!(f, "data_end {}", escape(body)),
            Self::DataAborted => f.write_str("data_aborted"),
            Self::Reset => f.write_str("reset"),
            Self::Hang(call) => write!(f, "hang {call}"),
            Self::Close(reason) => write!(f, "close {reason}"),
        }
    }
}

/// Bytes as a Rust-style escaped string in double quotes, so CR, LF and 8-bit bytes are
/// visible in expectations and failure messages.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    out.extend(bytes.escape_ascii().map(char::from));
    out.push('"');
    out
}

/// Everything the handler saw, one entry per session in the order the sessions connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The calls of each session.
    pub sessions: Vec<Vec<Call>>,
}

impl Record {
    /// Sessions whose `close` has been called.
    pub fn closed(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| matches!(s.last(), Some(Call::Close(_))))
            .count()
    }

    /// Every session's calls rendered with [`Call`]'s `Display`.
    pub fn render(&self) -> Vec<Vec<String>> {
        self.sessions
            .iter()
            .map(|s| s.iter().map(ToString::to_string).collect())
            .collect()
    }
}

/// A [`Handler`] that records every call in shared state and answers by fixed rules:
///
/// - STARTTLS after a greeting with the name `notls.test` gets
///   `454 4.7.0 TLS not available to this client`;
/// - AUTH succeeds only for [`USER`] / [`PASSWORD`] (`535 5.7.8` otherwise);
/// - RCPT to a local part `reject` or `Green` (the refused recipient of RFC 5321 D.1) gets
///   `550 5.1.1 No such user here`;
/// - RCPT to a local part `hang`, and a body chunk containing `HANG`, are never answered (a
///   hung application: the server must end the session at the core's deadline);
/// - MAIL from the local part `busy` makes the next `data_start` answer
///   `452 4.3.1 Out of storage`, which refuses DATA, or a BDAT chunk (whose content the server
///   must then skip);
/// - with LMTP, an accepted recipient with the local part `full` gets
///   `452 4.2.2 Mailbox full` at the end of the message, the others 250;
/// - everything else is accepted.
///
/// Cheap to clone; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingHandler {
    record: Arc<Mutex<Record>>,
}

impl RecordingHandler {
    /// A handler with an empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the record so far.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }
}

/// The record stays usable after a panicking holder: every update is a single push.
fn lock(record: &Mutex<Record>) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One session of [`RecordingHandler`].
#[derive(Debug)]
pub struct RecordingSession {
    record: Arc<Mutex<Record>>,
    index: usize,
    busy: bool,
    body: Vec<u8>,
    /// Whether each accepted recipient of the transaction is a `full` mailbox (LMTP).
    full: Vec<bool>,
}

impl RecordingSession {
    fn push(&self, call: Call) {
        if let Some(s) = lock(&self.record).sessions.get_mut(self.index) {
            s.push(call);
        }
    }
}

impl Handler for RecordingHandler {
    type Session = RecordingSession;

    async fn connect(&self, info: &SessionInfo) -> Result<RecordingSession, Reply<'static>> {
        let mut record = lock(&self.record);
        record.sessions.push(vec![Call::Connect {
            listener: info.listener,
            tls: info.tls,
            reverse_name: info.reverse_name.clone(),
            unix: info.peer.is_unix() && info.peer.ip().is_none(),
        }]);
        Ok(RecordingSession {
            record: Arc::clone(&self.record),
            index: record.sessions.len() - 1,
            busy: false,
            body: Vec::new(),
            full: Vec::new(),
        })
    }
}

/// A refusal from constant, valid parts.
fn refusal(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Decision {
    let enhanced = EnhancedCode::new(class, subject, detail).expect("constant enhanced code");
    Decision::reply(code, enhanced, text)
}

impl Session for RecordingSession {
    async fn ehlo(&mut self, info: &SessionInfo, domain: &str) -> Decision {
        self.push(Call::Ehlo {
            domain: domain.to_owned(),
            tls: info.tls,
        });
        Decision::Accept
    }

    async fn starttls(&mut self, info: &SessionInfo) -> Decision {
        let accepted = info.ehlo.as_deref() != Some("notls.test");
        self.push(Call::StartTls { accepted });
        if accepted {
            Decision::Accept
        } else {
            refusal(454, 4, 7, 0, "TLS not available to this client")
        }
    }

    async fn secured(&mut self, info: &SessionInfo) {
        let (sni, version) = info.tls_info.as_deref().map_or(("-".into(), "none"), |t| {
            (
                t.sni.clone().unwrap_or_else(|| "-".into()),
                t.version_name(),
            )
        });
        let client_certs = info
            .tls_info
            .as_deref()
            .map_or(0, |t| t.peer_certificates.len());
        self.push(Call::Secured {
            sni,
            version,
            client_certs,
        });
    }

    async fn xclient(&mut self, info: &SessionInfo) -> Decision {
        self.push(Call::Xclient {
            peer: info.peer.to_string(),
            name: info
                .reverse_name
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            user: info.authenticated.clone(),
        });
        Decision::Accept
    }

    async fn auth(&mut self, _: &SessionInfo, mechanism: &str, creds: &Credentials) -> Decision {
        let accepted = match creds {
            Credentials::Password { user, password, .. } => {
                user == USER && password.expose() == PASSWORD
            }
            Credentials::Token { user, token } => user == USER && token.expose() == TOKEN,
            _ => false,
        };
        self.push(Call::Auth {
            mechanism: mechanism.to_owned(),
            user: creds.user().to_owned(),
            accepted,
        });
        if accepted {
            Decision::Accept
        } else {
            refusal(535, 5, 7, 8, "Authentication credentials invalid")
        }
    }

    async fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        if let Some(fwd) = info.xforward.as_deref() {
            self.push(Call::Forwarded {
                addr: fwd.addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                helo: fwd.helo.clone().unwrap_or_else(|| "-".to_owned()),
            });
        }
        let from = from.to_string();
        self.busy = from.starts_with("<busy@");
        self.push(Call::MailFrom {
            from,
            user: info.authenticated.clone(),
        });
        Decision::Accept
    }

    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        to: &ForwardPath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        let to = to.to_string();
        if to.starts_with("<hang@") {
            self.push(Call::Hang("rcpt"));
            return std::future::pending().await;
        }
        let accepted = !(to.starts_with("<reject@") || to.starts_with("<Green@"));
        if accepted {
            self.full.push(to.starts_with("<full@"));
        }
        self.push(Call::RcptTo { to, accepted });
        if accepted {
            Decision::Accept
        } else {
            refusal(550, 5, 1, 1, "No such user here")
        }
    }

    async fn data_start(&mut self, _: &SessionInfo) -> Decision {
        let accepted = !self.busy;
        self.body.clear();
        self.push(Call::DataStart { accepted });
        if accepted {
            Decision::Accept
        } else {
            refusal(452, 4, 3, 1, "Out of storage")
        }
    }

    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        if chunk.windows(4).any(|w| w == b"HANG") {
            self.push(Call::Hang("data_chunk"));
            return std::future::pending().await;
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    async fn data_end(&mut self, _: &SessionInfo) -> Decision {
        let body = std::mem::take(&mut self.body);
        self.push(Call::DataEnd(body));
        Decision::Accept
    }

    async fn data_end_lmtp(&mut self, info: &SessionInfo, recipients: usize) -> Vec<Decision> {
        let decision = self.data_end(info).await;
        (0..recipients)
            .map(|i| match self.full.get(i) {
                Some(true) => refusal(452, 4, 2, 2, "Mailbox full"),
                _ => decision.clone(),
            })
            .collect()
    }

    async fn data_aborted(&mut self, _: &SessionInfo) {
        self.body.clear();
        self.push(Call::DataAborted);
    }

    async fn reset(&mut self, _: &SessionInfo) {
        self.busy = false;
        self.full.clear();
        self.body.clear();
        self.push(Call::Reset);
    }

    async fn close(&mut self, _: &SessionInfo, reason: CloseReason) {
        self.push(Call::Close(reason));
    }
}
