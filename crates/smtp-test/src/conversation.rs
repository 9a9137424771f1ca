//! The conversations, written once as data: what the client sends (with pauses), the exact
//! bytes the server must answer, and the calls the application must see.
//!
//! Every server runs with [`base_settings`]: hostname `mx.test`, banner `ESMTP`, so the
//! greeting is `220 mx.test ESMTP`.

use std::fmt;
use std::time::Duration;

use smtpkit_proto::data::BareLineEnding;
use smtpkit_server::{ListenerKind, ListenerSettings, ProxySettings, ServerSettings};

use crate::handler::{Call, Record, escape};

/// One thing the client does or checks.
#[derive(Clone, Copy)]
pub enum Step {
    /// Open a new connection to the conversation's first listener; it becomes the current
    /// one. Connections are numbered from 0 in the order they are opened.
    Connect,
    /// Open a new connection to listener `n` (in the order of [`Conversation::listeners`]).
    ConnectTo(usize),
    /// Make connection `n` the current one.
    Use(usize),
    /// Write these bytes in one write.
    Send(&'static [u8]),
    /// Write `count` copies of a byte in one write.
    Fill(u8, usize),
    /// Write these bytes one byte per write, with a short pause after each.
    Drip(&'static [u8]),
    /// Do nothing for this many milliseconds.
    Pause(u64),
    /// The server's next bytes are exactly these.
    Expect(&'static [u8]),
    /// The server closes the connection and sends nothing more.
    ExpectClose,
    /// Run a TLS handshake (after `220` to STARTTLS, or first thing for implicit TLS).
    StartTls,
    /// Close the current connection without QUIT.
    Disconnect,
    /// Write `chunk` again and again without ever reading, until writes block for two
    /// seconds or `max` bytes went out.
    Flood {
        /// What to write.
        chunk: &'static [u8],
        /// The most bytes to write.
        max: usize,
    },
    /// Start a graceful shutdown of the server with this grace period (milliseconds); it
    /// runs in the background.
    Shutdown(u64),
    /// The shutdown started by [`Step::Shutdown`] completes within ten seconds.
    AwaitShutdown,
    /// A new connection to every listener is refused (the listeners are closed).
    ExpectRefused,
    /// The application has seen `sessions` sessions closed within `within_ms`.
    AwaitClosed {
        /// How many sessions must have ended.
        sessions: usize,
        /// The deadline, from the start of this step.
        within_ms: u64,
    },
    /// These steps, in order (lets a macro stand for several steps).
    Group(&'static [Self]),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("Connect"),
            Self::ConnectTo(n) => write!(f, "ConnectTo({n})"),
            Self::Use(n) => write!(f, "Use({n})"),
            Self::Send(b) => write!(f, "Send({})", escape(b)),
            Self::Fill(b, n) => write!(f, "Fill({:?}, {n})", char::from(*b)),
            Self::Drip(b) => write!(f, "Drip({})", escape(b)),
            Self::Pause(ms) => write!(f, "Pause({ms} ms)"),
            Self::Expect(b) => write!(f, "Expect({})", escape(b)),
            Self::ExpectClose => f.write_str("ExpectClose"),
            Self::StartTls => f.write_str("StartTls"),
            Self::Disconnect => f.write_str("Disconnect"),
            Self::Flood { chunk, max } => write!(f, "Flood({}, max {max})", escape(chunk)),
            Self::Shutdown(ms) => write!(f, "Shutdown(grace {ms} ms)"),
            Self::AwaitShutdown => f.write_str("AwaitShutdown"),
            Self::ExpectRefused => f.write_str("ExpectRefused"),
            Self::AwaitClosed {
                sessions,
                within_ms,
            } => write!(f, "AwaitClosed({sessions} within {within_ms} ms)"),
            Self::Group(steps) => write!(f, "Group({} steps)", steps.len()),
        }
    }
}

/// What the application must have seen once the conversation is over.
#[derive(Clone, Copy, Debug)]
pub enum Calls {
    /// Exactly these calls, rendered with [`Call`]'s `Display`, one list per session.
    Exact(&'static [&'static [&'static str]]),
    /// A check for conversations where the number of calls depends on timing.
    Check(fn(&Record) -> Result<(), String>),
}

/// One conversation of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Conversation {
    /// The test's name.
    pub name: &'static str,
    /// What it shows, and where the rule comes from.
    pub about: &'static str,
    /// The listeners of the one server.
    pub listeners: &'static [Listen],
    /// Whether the server has a certificate (STARTTLS offered, implicit TLS possible).
    pub tls: bool,
    /// Changes to [`base_settings`].
    pub settings: fn(&mut ServerSettings),
    /// What the client does.
    pub steps: &'static [Step],
    /// What the application must have seen.
    pub calls: Calls,
}

/// One listener of a conversation's server.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// What it serves.
    pub kind: ListenerKind,
    /// TLS on this listener (when the server has a certificate).
    pub tls: bool,
    /// Expects PROXY headers from loopback.
    pub proxy: bool,
    /// Commands answered 502 on this listener.
    pub disabled: &'static [&'static str],
    /// Extensions not offered on this listener.
    pub hidden: &'static [&'static str],
    /// On a Unix-domain socket (in a fresh temporary directory) instead of TCP.
    pub unix: bool,
}

impl Listen {
    /// A listener of `kind` with TLS on (when the server has a certificate), no PROXY.
    pub const fn new(kind: ListenerKind) -> Self {
        Self {
            kind,
            tls: true,
            proxy: false,
            disabled: &[],
            hidden: &[],
            unix: false,
        }
    }

    /// The same listener on a Unix-domain socket.
    pub const fn unix(self) -> Self {
        Self { unix: true, ..self }
    }

    /// The same listener answering `verbs` with 502 and not offering `keywords`.
    pub const fn switches(
        self,
        verbs: &'static [&'static str],
        keywords: &'static [&'static str],
    ) -> Self {
        Self {
            disabled: verbs,
            hidden: keywords,
            ..self
        }
    }

    /// The same listener without TLS.
    pub const fn plain(self) -> Self {
        Self { tls: false, ..self }
    }

    /// The same listener expecting PROXY headers from loopback.
    pub const fn proxied(self) -> Self {
        Self {
            proxy: true,
            ..self
        }
    }

    /// The listener's settings for a server.
    pub fn settings(self) -> ListenerSettings {
        let mut l = ListenerSettings::new(self.kind).tls(self.tls);
        if self.proxy {
            let trusted = "127.0.0.0/8".parse().expect("a valid network");
            l = l.proxy(ProxySettings::new(trusted));
        }
        for verb in self.disabled {
            l = l.disable_command(*verb);
        }
        for keyword in self.hidden {
            l = l.hide_extension(*keyword);
        }
        l
    }
}

/// The settings every conversation starts from: fixed names, short deadlines so timeouts
/// are testable, and a per-address limit that never gets in the way.
pub fn base_settings() -> ServerSettings {
    let mut s = ServerSettings {
        hostname: "mx.test".into(),
        banner: "ESMTP".into(),
        max_per_ip: 1000,
        tls_handshake_timeout: Duration::from_secs(5),
        ..ServerSettings::default()
    };
    s.timeouts.command = Duration::from_secs(5);
    s.timeouts.data_block = Duration::from_secs(5);
    s
}

fn defaults(_: &mut ServerSettings) {}

/// Every built-in AUTH mechanism offered, the token ones too.
fn token_mechanisms(s: &mut ServerSettings) {
    s.auth_mechanisms = smtpkit_server::AUTH_MECHANISMS.map(str::to_owned).to_vec();
}

macro_rules! greeting {
    () => {
        "220 mx.test ESMTP\r\n"
    };
}

macro_rules! ehlo_common {
    () => {
        concat!(
            "250-mx.test\r\n",
            "250-PIPELINING\r\n",
            "250-SIZE 26214400\r\n",
            "250-8BITMIME\r\n",
            "250-CHUNKING\r\n",
            "250-BINARYMIME\r\n",
            "250-SMTPUTF8\r\n",
        )
    };
}

/// The EHLO reply without TLS and AUTH.
macro_rules! ehlo {
    () => {
        concat!(ehlo_common!(), "250 ENHANCEDSTATUSCODES\r\n")
    };
}

/// The EHLO reply to a trusted front end: XCLIENT and XFORWARD offered.
macro_rules! ehlo_front_end {
    () => {
        concat!(
            ehlo_common!(),
            "250-ENHANCEDSTATUSCODES\r\n",
            "250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n",
            "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
        )
    };
}

/// The EHLO reply offering STARTTLS.
macro_rules! ehlo_starttls {
    () => {
        concat!(
            ehlo_common!(),
            "250-ENHANCEDSTATUSCODES\r\n",
            "250 STARTTLS\r\n"
        )
    };
}

/// The EHLO reply offering AUTH (submission over TLS).
macro_rules! ehlo_auth {
    () => {
        concat!(
            ehlo_common!(),
            "250-ENHANCEDSTATUSCODES\r\n",
            "250 AUTH PLAIN LOGIN\r\n"
        )
    };
}

macro_rules! b {
    ($($s:expr),+ $(,)?) => {
        concat!($($s),+).as_bytes()
    };
}

const MAIL_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const NO_USER: &str = "550 5.1.1 No such user here\r\n";
const GO_AHEAD: &str = "354 Start mail input; end with <CRLF>.<CRLF>\r\n";
const ACCEPTED: &str = "250 2.0.0 Message accepted\r\n";
const OK: &str = "250 2.0.0 OK\r\n";
const BYE: &str = "221 2.0.0 Bye\r\n";
const SHUTTING_DOWN: &str = "421 4.3.2 Server shutting down\r\n";

macro_rules! mail_ok {
    () => {
        "250 2.1.0 Sender OK\r\n"
    };
}
macro_rules! rcpt_ok {
    () => {
        "250 2.1.5 Recipient OK\r\n"
    };
}
macro_rules! go_ahead {
    () => {
        "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    };
}
macro_rules! accepted {
    () => {
        "250 2.0.0 Message accepted\r\n"
    };
}

/// Connect, read the greeting, EHLO.
macro_rules! hello {
    () => {
        Step::Group(&[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
        ])
    };
}

/// QUIT, `221`, close.
macro_rules! quit {
    () => {
        Step::Group(&[
            Step::Send(b"QUIT\r\n"),
            Step::Expect(BYE.as_bytes()),
            Step::ExpectClose,
        ])
    };
}

/// One message: the envelope (pipelined), `354`, then `$body` and the expected reply.
macro_rules! message {
    ($body:expr, $reply:expr) => {
        Step::Group(&[
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send($body),
            Step::Expect($reply),
        ])
    };
}

/// The calls a [`message!`] makes before its end.
macro_rules! envelope_calls {
    () => {
        ["mail <a@x.test>", "rcpt <b@y.test>", "data_start"]
    };
}

const BARE_REJECTED: &[u8] = b"550 5.6.0 Message contains bare CR or LF\r\n";

/// Every conversation, in the order of the [`conformance_suite!`](crate::conformance_suite)
/// tests.
pub static CONVERSATIONS: &[Conversation] = &[
    Conversation {
        name: "d1_typical",
        about: "RFC 5321 Appendix D.1: one recipient refused by the application, a \
                dot-stuffed line",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO bar.com\r\n"),
            Step::Expect(b!(ehlo!())),
            Step::Send(b"MAIL FROM:<Smith@bar.com>\r\n"),
            Step::Expect(MAIL_OK.as_bytes()),
            Step::Send(b"RCPT TO:<Jones@foo.com>\r\n"),
            Step::Expect(RCPT_OK.as_bytes()),
            Step::Send(b"RCPT TO:<Green@foo.com>\r\n"),
            Step::Expect(NO_USER.as_bytes()),
            Step::Send(b"RCPT TO:<Brown@foo.com>\r\n"),
            Step::Expect(RCPT_OK.as_bytes()),
            Step::Send(b"DATA\r\n"),
            Step::Expect(GO_AHEAD.as_bytes()),
            Step::Send(b"Blah blah blah...\r\n....etc. etc. etc.\r\n.\r\n"),
            Step::Expect(ACCEPTED.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo bar.com",
            "mail <Smith@bar.com>",
            "rcpt <Jones@foo.com>",
            "rcpt <Green@foo.com> refused",
            "rcpt <Brown@foo.com>",
            "data_start",
            r#"data_end "Blah blah blah...\r\n...etc. etc. etc.\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "pipelining_burst",
        about: "RFC 2920: a whole session in one write; replies come in order, a refused \
                recipient in the middle changes nothing else",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b!(
                "EHLO c.test\r\n",
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "Subject: 1\r\n\r\none\r\n.\r\n",
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<reject@y.test>\r\nRCPT TO:<c@y.test>\r\n",
                "DATA\r\n",
                "Subject: 2\r\n\r\n..two\r\n.\r\n",
                "RSET\r\nNOOP\r\n",
                "MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "Subject: 3\r\n\r\n\u{fe}\r\n.\r\n",
                "QUIT\r\n",
            )),
            Step::Expect(b!(
                ehlo!(),
                mail_ok!(),
                rcpt_ok!(),
                go_ahead!(),
                accepted!(),
                mail_ok!(),
                "550 5.1.1 No such user here\r\n",
                rcpt_ok!(),
                go_ahead!(),
                accepted!(),
                "250 2.0.0 OK\r\n",
                "250 2.0.0 OK\r\n",
                mail_ok!(),
                rcpt_ok!(),
                go_ahead!(),
                accepted!(),
                "221 2.0.0 Bye\r\n",
            )),
            Step::ExpectClose,
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "Subject: 1\r\n\r\none\r\n""#,
            "reset",
            "mail <a@x.test>",
            "rcpt <reject@y.test> refused",
            "rcpt <c@y.test>",
            "data_start",
            r#"data_end "Subject: 2\r\n\r\n.two\r\n""#,
            "reset",
            "reset",
            "mail <>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "Subject: 3\r\n\r\n\xc3\xbe\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "starttls_injection",
        about: "RFC 3207 / CVE-2011-0411: commands pipelined after STARTTLS are dropped, the \
                EHLO state is forgotten, and the session goes on over TLS",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@x.test>\r\n"),
            Step::Expect(b"220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(b"503 5.5.1 Send EHLO first\r\n"),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
            Step::Send(b"RCPT TO:<b@y.test>\r\n"),
            Step::Expect(b"503 5.5.1 Send MAIL first\r\n"),
            message!(b"secret\r\n.\r\n", ACCEPTED.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "starttls",
            "secured localhost TLSv1.3",
            "ehlo c.test tls",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "secret\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "starttls_refused_by_hook",
        about: "RFC 3207 4: the application refuses STARTTLS before the 220 \
                (`Session::starttls`); the session goes on in plaintext with its greeting, \
                and a later STARTTLS from an accepted name upgrades",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO notls.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"STARTTLS\r\n"),
            Step::Expect(b"454 4.7.0 TLS not available to this client\r\n"),
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(MAIL_OK.as_bytes()),
            Step::Send(b"RSET\r\n"),
            Step::Expect(OK.as_bytes()),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"STARTTLS\r\n"),
            Step::Expect(b"220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo notls.test",
            "starttls refused",
            "mail <a@x.test>",
            "reset",
            "ehlo c.test",
            "starttls",
            "secured localhost TLSv1.3",
            "ehlo c.test tls",
            "close quit",
        ]]),
    },
    Conversation {
        name: "auth_plain_after_starttls",
        about: "RFC 4954 / RFC 6409: submission offers AUTH only over TLS and needs it \
                before MAIL; AUTH PLAIN with an initial response",
        listeners: &[Listen::new(ListenerKind::Submission)],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(b"530 5.7.0 Authentication required\r\n"),
            Step::Send(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"),
            Step::Expect(
                b"538 5.7.11 Encryption required for requested authentication mechanism\r\n",
            ),
            Step::Send(b"STARTTLS\r\n"),
            Step::Expect(b"220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_auth!())),
            Step::Send(b"AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"),
            Step::Expect(b"535 5.7.8 Authentication credentials invalid\r\n"),
            Step::Send(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"),
            Step::Expect(b"235 2.7.0 Authentication successful\r\n"),
            message!(b"hi\r\n.\r\n", ACCEPTED.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect submission",
            "ehlo c.test",
            "starttls",
            "secured localhost TLSv1.3",
            "ehlo c.test tls",
            "auth PLAIN user refused",
            "auth PLAIN user",
            "mail <a@x.test> as user",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "hi\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "auth_login_implicit_tls",
        about: "RFC 8314 implicit TLS, RFC 4954 AUTH LOGIN with 334 challenges, a failure, \
                then an initial response",
        listeners: &[Listen::new(ListenerKind::Smtps)],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::StartTls,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_auth!())),
            Step::Send(b"AUTH LOGIN\r\n"),
            Step::Expect(b"334 VXNlcm5hbWU6\r\n"),
            Step::Send(b"dXNlcg==\r\n"),
            Step::Expect(b"334 UGFzc3dvcmQ6\r\n"),
            Step::Send(b"d3Jvbmc=\r\n"),
            Step::Expect(b"535 5.7.8 Authentication credentials invalid\r\n"),
            Step::Send(b"AUTH LOGIN dXNlcg==\r\n"),
            Step::Expect(b"334 UGFzc3dvcmQ6\r\n"),
            Step::Send(b"c2VjcmV0\r\n"),
            Step::Expect(b"235 2.7.0 Authentication successful\r\n"),
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(MAIL_OK.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtps tls",
            "ehlo c.test tls",
            "auth LOGIN user refused",
            "auth LOGIN user",
            "mail <a@x.test> as user",
            "close quit",
        ]]),
    },
    Conversation {
        name: "auth_xoauth2",
        about: "XOAUTH2 (Google's format): a refused token gets the JSON error challenge, the \
                client's empty reply, then 535; a good token without initial response after \
                an empty 334",
        listeners: &[Listen::new(ListenerKind::Smtps)],
        tls: true,
        settings: token_mechanisms,
        steps: &[
            Step::Connect,
            Step::StartTls,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(
                ehlo_common!(),
                "250-ENHANCEDSTATUSCODES\r\n",
                "250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"
            )),
            // user=user^Aauth=Bearer expired^A^A
            Step::Send(b"AUTH XOAUTH2 dXNlcj11c2VyAWF1dGg9QmVhcmVyIGV4cGlyZWQBAQ==\r\n"),
            Step::Expect(
                b"334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n",
            ),
            Step::Send(b"\r\n"),
            Step::Expect(b"535 5.7.8 Authentication credentials invalid\r\n"),
            Step::Send(b"AUTH XOAUTH2\r\n"),
            Step::Expect(b"334 \r\n"),
            // user=user^Aauth=Bearer ya29.token^A^A
            Step::Send(b"dXNlcj11c2VyAWF1dGg9QmVhcmVyIHlhMjkudG9rZW4BAQ==\r\n"),
            Step::Expect(b"235 2.7.0 Authentication successful\r\n"),
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(MAIL_OK.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtps tls",
            "ehlo c.test tls",
            "auth XOAUTH2 user refused",
            "auth XOAUTH2 user",
            "mail <a@x.test> as user",
            "close quit",
        ]]),
    },
    Conversation {
        name: "auth_oauthbearer",
        about: "RFC 7628 OAUTHBEARER with a GS2 header naming the user: accepted at once",
        listeners: &[Listen::new(ListenerKind::Smtps)],
        tls: true,
        settings: token_mechanisms,
        steps: &[
            Step::Connect,
            Step::StartTls,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(
                ehlo_common!(),
                "250-ENHANCEDSTATUSCODES\r\n",
                "250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"
            )),
            // n,a=user,^Aauth=Bearer ya29.token^A^A
            Step::Send(b"AUTH OAUTHBEARER bixhPXVzZXIsAWF1dGg9QmVhcmVyIHlhMjkudG9rZW4BAQ==\r\n"),
            Step::Expect(b"235 2.7.0 Authentication successful\r\n"),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtps tls",
            "ehlo c.test tls",
            "auth OAUTHBEARER user",
            "close quit",
        ]]),
    },
    Conversation {
        name: "bdat",
        about: "RFC 3030: chunks are counted, not scanned; content that looks like commands \
                or an end marker is content",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRCPT TO:<b@y.test>\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!())),
            Step::Send(b"BDAT 11\r\nhi\r\n.\r\nQUIT"),
            Step::Expect(b"250 2.0.0 11 octets received\r\n"),
            Step::Send(b"BDAT 3 LAST\r\n\x00\xff\n"),
            Step::Expect(ACCEPTED.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "hi\r\n.\r\nQUIT\x00\xff\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "bdat_refused_skip",
        about: "RFC 3030 2: a refused BDAT's chunk is skipped, never read as commands, and \
                the transaction is over",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<busy@x.test>\r\nRCPT TO:<b@y.test>\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!())),
            Step::Send(b"BDAT 12\r\nRSET\r\nQUIT\r\n"),
            Step::Expect(b"452 4.3.1 Out of storage\r\n"),
            Step::Send(b"RCPT TO:<b@y.test>\r\nNOOP\r\n"),
            Step::Expect(b!("503 5.5.1 Send MAIL first\r\n", "250 2.0.0 OK\r\n")),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 4 LAST\r\nabcd"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), accepted!())),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <busy@x.test>",
            "rcpt <b@y.test>",
            "data_start refused",
            "reset",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "abcd""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "size_overrun",
        about: "RFC 1870: SIZE over the limit is refused at MAIL; a message that grows past \
                it is read to its end, refused with 552, and never delivered",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.limits.message_size = 64,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(
                "250-mx.test\r\n",
                "250-PIPELINING\r\n",
                "250-SIZE 64\r\n",
                "250-8BITMIME\r\n",
                "250-CHUNKING\r\n",
                "250-BINARYMIME\r\n",
                "250-SMTPUTF8\r\n",
                "250 ENHANCEDSTATUSCODES\r\n",
            )),
            Step::Send(b"MAIL FROM:<a@x.test> SIZE=65\r\n"),
            Step::Expect(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
            Step::Send(b"MAIL FROM:<a@x.test> SIZE=64\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send(b"0123456789012345678901234567890123456789\r\n"),
            Step::Send(b"0123456789012345678901234567890123456789\r\n"),
            Step::Send(b"MAIL FROM:<not-a-command@x.test>\r\n.\r\n"),
            Step::Expect(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
            Step::Send(b"NOOP\r\n"),
            Step::Expect(OK.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            "data_aborted",
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "bare_line_endings_normalize",
        about: "Bare CR / LF policy normalize: none of the six bare variants of the end \
                marker ends the message (SMTP smuggling); each becomes CRLF",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            message!(b"a\n.\nMAIL FROM:<s@x.test>\r\n.\r\n", ACCEPTED.as_bytes()),
            message!(b"a\r.\rMAIL FROM:<s@x.test>\r\n.\r\n", ACCEPTED.as_bytes()),
            message!(
                b"a\n.\r\nMAIL FROM:<s@x.test>\r\n.\r\n",
                ACCEPTED.as_bytes()
            ),
            message!(
                b"a\r\n.\nMAIL FROM:<s@x.test>\r\n.\r\n",
                ACCEPTED.as_bytes()
            ),
            message!(
                b"a\r.\r\nMAIL FROM:<s@x.test>\r\n.\r\n",
                ACCEPTED.as_bytes()
            ),
            message!(
                b"a\r\n.\rMAIL FROM:<s@x.test>\r\n.\r\n",
                ACCEPTED.as_bytes()
            ),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n.\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n.\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n.\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n.\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            r#"data_end "a\r\n\r\nMAIL FROM:<s@x.test>\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "bare_line_endings_reject",
        about: "Bare CR / LF policy reject: each of the six bare variants of the end marker \
                is content; the message is read to CRLF.CRLF and refused with 550 5.6.0",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.bare_line_ending = BareLineEnding::Reject,
        steps: &[
            hello!(),
            message!(b"a\n.\nMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            message!(b"a\r.\rMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            message!(b"a\n.\r\nMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            message!(b"a\r\n.\nMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            message!(b"a\r.\r\nMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            message!(b"a\r\n.\rMAIL FROM:<s@x.test>\r\n.\r\n", BARE_REJECTED),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            envelope_calls!()[0],
            envelope_calls!()[1],
            envelope_calls!()[2],
            "data_aborted",
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "line_too_long",
        about: "RFC 5321 4.5.3.1.4: a command line over 512 octets gets 500; its tail is \
                skipped even when it looks like a command",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"NOOP "),
            Step::Fill(b'x', 600),
            Step::Send(b"MAIL FROM:<evil@x.test>\r\n"),
            Step::Expect(b"500 5.5.6 Line too long\r\n"),
            Step::Send(b"NOOP\r\n"),
            Step::Expect(OK.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&["connect smtp", "ehlo c.test", "close quit"]]),
    },
    Conversation {
        name: "slow_drip",
        about: "Input one byte per write: framing does not depend on how bytes arrive",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Drip(b!(
                "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "Subject: drip\r\n\r\n..slow\r\n.\r\nQUIT\r\n",
            )),
            Step::Expect(b!(
                ehlo!(),
                mail_ok!(),
                rcpt_ok!(),
                go_ahead!(),
                accepted!(),
                "221 2.0.0 Bye\r\n"
            )),
            Step::ExpectClose,
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            r#"data_end "Subject: drip\r\n\r\n.slow\r\n""#,
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "never_reads",
        about: "A client that pipelines without ever reading: the server stops reading, \
                and the session ends once a write has been stuck for the command timeout",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.timeouts.command = Duration::from_secs(1),
        steps: &[
            Step::Connect,
            Step::Flood {
                chunk: b"EHLO c.test\r\nEHLO c.test\r\nEHLO c.test\r\nEHLO c.test\r\n",
                max: 8 << 20,
            },
            Step::AwaitClosed {
                sessions: 1,
                within_ms: 5000,
            },
        ],
        calls: Calls::Check(check_never_reads),
    },
    Conversation {
        name: "idle_timeout",
        about: "RFC 5321 4.5.3.2.7: no command within the command timeout gets 421 4.4.2 \
                and a close",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.timeouts.command = Duration::from_millis(500),
        steps: &[
            hello!(),
            Step::Expect(b"421 4.4.2 Timeout exceeded, closing connection\r\n"),
            Step::ExpectClose,
        ],
        calls: Calls::Exact(&[&["connect smtp", "ehlo c.test", "close timeout"]]),
    },
    Conversation {
        name: "disconnect_mid_data",
        about: "A client that vanishes mid-message: the application sees data_aborted and \
                no message",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send(b"Subject: cut\r\n\r\nhalf a bo"),
            Step::Pause(50),
            Step::Disconnect,
            Step::AwaitClosed {
                sessions: 1,
                within_ms: 5000,
            },
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            "data_aborted",
            "close peer closed the connection",
        ]]),
    },
    Conversation {
        name: "connection_limit",
        about: "max_connections: one more connection gets 421 4.7.0 and a close, without a \
                session",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.max_connections = 1,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Connect,
            Step::Expect(b"421 4.7.0 mx.test Too many connections, try again later\r\n"),
            Step::ExpectClose,
            Step::Use(0),
            Step::Send(b"NOOP\r\n"),
            Step::Expect(OK.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[&["connect smtp", "close quit"]]),
    },
    Conversation {
        name: "graceful_shutdown",
        about: "Shutdown: idle sessions get 421 4.3.2 at once, a session in a transaction \
                may finish it first; then the listener is closed",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send(b"Subject: late\r\n\r\n"),
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Shutdown(5000),
            Step::Expect(SHUTTING_DOWN.as_bytes()),
            Step::ExpectClose,
            Step::Use(0),
            Step::Send(b"body\r\n.\r\n"),
            Step::Expect(b!(accepted!(), "421 4.3.2 Server shutting down\r\n")),
            Step::ExpectClose,
            Step::AwaitShutdown,
            Step::ExpectRefused,
        ],
        calls: Calls::Exact(&[
            &[
                "connect smtp",
                "ehlo c.test",
                "mail <a@x.test>",
                "rcpt <b@y.test>",
                "data_start",
                r#"data_end "Subject: late\r\n\r\nbody\r\n""#,
                "reset",
                "close shutdown",
            ],
            &["connect smtp", "close shutdown"],
        ]),
    },
    Conversation {
        name: "shutdown_grace_expires",
        about: "Shutdown: a transaction that outlasts the grace period is aborted with \
                421 4.3.2",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send(b"Subject: never finished\r\n"),
            Step::Shutdown(300),
            Step::Expect(SHUTTING_DOWN.as_bytes()),
            Step::ExpectClose,
            Step::AwaitShutdown,
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            "data_aborted",
            "close shutdown",
        ]]),
    },
    Conversation {
        name: "hung_decision",
        about: "A handler that never answers RCPT: at the core's decision deadline the \
                session gets 421 4.4.2 and closes (the client is not held forever)",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.timeouts.decision = Duration::from_millis(600),
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<hang@y.test>\r\n"),
            Step::Expect(b!(
                mail_ok!(),
                "421 4.4.2 Timeout exceeded, closing connection\r\n"
            )),
            Step::ExpectClose,
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "hang rcpt",
            "close timeout",
        ]]),
    },
    Conversation {
        name: "hung_data_chunk",
        about: "A handler that never takes a body chunk: at the core's data-block deadline \
                (not the decision timeout) the session gets 421 4.4.2, the message is aborted",
        listeners: &[Listen::new(ListenerKind::Smtp)],
        tls: false,
        settings: |s| s.timeouts.data_block = Duration::from_millis(600),
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::Send(b"Subject: stuck\r\n\r\nHANG\r\n"),
            Step::Expect(b"421 4.4.2 Timeout exceeded, closing connection\r\n"),
            Step::ExpectClose,
        ],
        calls: Calls::Exact(&[&[
            "connect smtp",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "data_start",
            "hang data_chunk",
            "data_aborted",
            "close timeout",
        ]]),
    },
    Conversation {
        name: "per_listener_tls_proxy",
        about: "One server, three listeners: STARTTLS offered only where TLS is on, a PROXY \
                header read only where the listener expects one",
        listeners: &[
            Listen::new(ListenerKind::Smtp),
            Listen::new(ListenerKind::Smtp).plain(),
            Listen::new(ListenerKind::Smtp).plain().proxied(),
        ],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            quit!(),
            Step::ConnectTo(1),
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
            quit!(),
            Step::ConnectTo(2),
            Step::Send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 25\r\nEHLO c.test\r\n"),
            Step::Expect(b!(greeting!(), ehlo!())),
            quit!(),
        ],
        calls: Calls::Exact(&[
            &["connect smtp", "ehlo c.test", "close quit"],
            &["connect smtp", "ehlo c.test", "close quit"],
            &["connect smtp", "ehlo c.test", "close quit"],
        ]),
    },
    Conversation {
        name: "connection_limit_across_listeners",
        about: "max_connections counts every listener of the server; a session's place is \
                free again as soon as it has answered QUIT",
        listeners: &[
            Listen::new(ListenerKind::Smtp),
            Listen::new(ListenerKind::Lmtp),
        ],
        tls: false,
        settings: |s| s.max_connections = 1,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::ConnectTo(1),
            Step::Expect(b"421 4.7.0 mx.test Too many connections, try again later\r\n"),
            Step::ExpectClose,
            Step::Use(0),
            Step::Send(b"QUIT\r\n"),
            Step::Expect(BYE.as_bytes()),
            Step::ConnectTo(1),
            Step::Expect(b!(greeting!())),
            quit!(),
        ],
        calls: Calls::Exact(&[
            &["connect smtp", "close quit"],
            &["connect lmtp", "close quit"],
        ]),
    },
    Conversation {
        name: "shutdown_all_listeners",
        about: "One shutdown closes every listener at once, while a session on one of them \
                still finishes its transaction",
        listeners: &[
            Listen::new(ListenerKind::Smtp),
            Listen::new(ListenerKind::Smtp),
        ],
        tls: false,
        settings: defaults,
        steps: &[
            hello!(),
            Step::Send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(mail_ok!(), rcpt_ok!(), go_ahead!())),
            Step::ConnectTo(1),
            Step::Expect(b!(greeting!())),
            Step::Shutdown(5000),
            Step::Expect(SHUTTING_DOWN.as_bytes()),
            Step::ExpectClose,
            // Listeners close right after the state change; give the accept loops a moment.
            Step::Pause(300),
            Step::ExpectRefused,
            Step::Use(0),
            Step::Send(b"body\r\n.\r\n"),
            Step::Expect(b!(accepted!(), "421 4.3.2 Server shutting down\r\n")),
            Step::ExpectClose,
            Step::AwaitShutdown,
        ],
        calls: Calls::Exact(&[
            &[
                "connect smtp",
                "ehlo c.test",
                "mail <a@x.test>",
                "rcpt <b@y.test>",
                "data_start",
                r#"data_end "body\r\n""#,
                "reset",
                "close shutdown",
            ],
            &["connect smtp", "close shutdown"],
        ]),
    },
    Conversation {
        name: "disabled_commands_hidden_extensions",
        about: "Per-listener switches (Node's disabledCommands, hide*): on the second listener \
                VRFY, HELP and STARTTLS are answered 502 5.5.1 (RFC 5321 4.2.4) and STARTTLS, \
                PIPELINING, SIZE and 8BITMIME are not offered, nor SIZE= accepted; the first \
                listener of the same server is untouched",
        listeners: &[
            Listen::new(ListenerKind::Smtp),
            Listen::new(ListenerKind::Smtp).switches(
                &["VRFY", "help", "STARTTLS"],
                &["PIPELINING", "size", "8BITMIME"],
            ),
        ],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"HELP\r\n"),
            Step::Expect(b"214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321\r\n"),
            quit!(),
            Step::ConnectTo(1),
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(
                "250-mx.test\r\n",
                "250-CHUNKING\r\n",
                "250-BINARYMIME\r\n",
                "250-SMTPUTF8\r\n",
                "250 ENHANCEDSTATUSCODES\r\n"
            )),
            Step::Send(b"VRFY postmaster\r\n"),
            Step::Expect(b"502 5.5.1 Command not implemented\r\n"),
            Step::Send(b"HELP\r\n"),
            Step::Expect(b"502 5.5.1 Command not implemented\r\n"),
            Step::Send(b"STARTTLS\r\n"),
            Step::Expect(b"502 5.5.1 Command not implemented\r\n"),
            Step::Send(b"MAIL FROM:<a@x.test> SIZE=10\r\n"),
            Step::Expect(b"555 5.5.4 Parameter not supported\r\n"),
            message!(b"Subject: s\r\n\r\nbody\r\n.\r\n", ACCEPTED.as_bytes()),
            quit!(),
        ],
        calls: Calls::Exact(&[
            &["connect smtp", "ehlo c.test", "close quit"],
            &[
                "connect smtp",
                "ehlo c.test",
                "mail <a@x.test>",
                "rcpt <b@y.test>",
                "data_start",
                r#"data_end "Subject: s\r\n\r\nbody\r\n""#,
                "reset",
                "close quit",
            ],
        ]),
    },
    Conversation {
        name: "xclient_xforward",
        about: "Postfix XCLIENT and XFORWARD: offered to a client in xclient_networks / \
                xforward_networks only; XCLIENT replaces the client's facts (the session hook \
                sees them, LOGIN counts as AUTH) and restarts with a new 220; XFORWARD \
                describes the next transaction's client; a client outside the networks (here by \
                a PROXY header) is not offered them and gets 550 5.7.0",
        listeners: &[
            Listen::new(ListenerKind::Smtp),
            Listen::new(ListenerKind::Smtp).proxied(),
        ],
        tls: false,
        settings: |s| {
            s.xclient_networks = "127.0.0.0/8".parse().expect("a valid network");
            s.xforward_networks = "127.0.0.0/8".parse().expect("a valid network");
        },
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO proxy.test\r\n"),
            Step::Expect(b!(ehlo_front_end!())),
            Step::Send(b"XCLIENT ADDR=192.0.2.1 LOGIN=nobody bad\r\n"),
            Step::Expect(b"501 5.5.4 Bad attribute syntax\r\n"),
            Step::Send(b"XCLIENT NAME=Mail.Example.test ADDR=192.0.2.1 PORT=4242 LOGIN=user\r\n"),
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO client.test\r\n"),
            Step::Expect(b!(ehlo_front_end!())),
            Step::Send(b"XFORWARD ADDR=198.51.100.2 HELO=orig+2Etest\r\n"),
            Step::Expect(OK.as_bytes()),
            message!(b"hi\r\n.\r\n", ACCEPTED.as_bytes()),
            quit!(),
            Step::ConnectTo(1),
            Step::Send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 25\r\nEHLO c.test\r\n"),
            Step::Expect(b!(greeting!(), ehlo!())),
            Step::Send(b"XCLIENT ADDR=192.0.2.1\r\n"),
            Step::Expect(b"550 5.7.0 Insufficient authorization\r\n"),
            Step::Send(b"XFORWARD ADDR=192.0.2.1\r\n"),
            Step::Expect(b"550 5.7.0 Insufficient authorization\r\n"),
            quit!(),
        ],
        calls: Calls::Exact(&[
            &[
                "connect smtp",
                "ehlo proxy.test",
                "xclient 192.0.2.1:4242 mail.example.test as user",
                "ehlo client.test",
                "forwarded 198.51.100.2 orig.test",
                "mail <a@x.test> as user",
                "rcpt <b@y.test>",
                "data_start",
                r#"data_end "hi\r\n""#,
                "reset",
                "close quit",
            ],
            &["connect smtp", "ehlo c.test", "close quit"],
        ]),
    },
    Conversation {
        name: "unix_lmtp",
        about: "LMTP on a Unix-domain socket (go-smtp's ListenAndServe on unix, Postfix's \
                lmtp:unix:): the handler sees a Unix peer, recipients get one reply each \
                after the message (RFC 2033 4.2), and the socket file is gone after shutdown",
        listeners: &[Listen::new(ListenerKind::Lmtp).unix()],
        tls: false,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"LHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
            Step::Send(b"MAIL FROM:<a@x.test>\r\n"),
            Step::Expect(b!(mail_ok!())),
            Step::Send(b"RCPT TO:<b@y.test>\r\nRCPT TO:<reject@y.test>\r\n"),
            Step::Expect(b!(rcpt_ok!(), "550 5.1.1 No such user here\r\n")),
            Step::Send(b"RCPT TO:<full@y.test>\r\nDATA\r\n"),
            Step::Expect(b!(rcpt_ok!(), go_ahead!())),
            Step::Send(b"body\r\n.\r\n"),
            Step::Expect(b!(accepted!(), "452 4.2.2 Mailbox full\r\n")),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect lmtp unix",
            "ehlo c.test",
            "mail <a@x.test>",
            "rcpt <b@y.test>",
            "rcpt <reject@y.test> refused",
            "rcpt <full@y.test>",
            "data_start",
            "data_end \"body\\r\\n\"",
            "reset",
            "close quit",
        ]]),
    },
    Conversation {
        name: "unix_smtp_starttls",
        about: "SMTP on a Unix-domain socket still offers STARTTLS (only PROXY and implicit \
                TLS are refused on one), and the session is encrypted after it",
        listeners: &[Listen::new(ListenerKind::Smtp).unix()],
        tls: true,
        settings: defaults,
        steps: &[
            Step::Connect,
            Step::Expect(b!(greeting!())),
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo_starttls!())),
            Step::Send(b"STARTTLS\r\n"),
            Step::Expect(b"220 2.0.0 Ready to start TLS\r\n"),
            Step::StartTls,
            Step::Send(b"EHLO c.test\r\n"),
            Step::Expect(b!(ehlo!())),
            quit!(),
        ],
        calls: Calls::Exact(&[&[
            "connect smtp unix",
            "ehlo c.test",
            "starttls",
            "secured localhost TLSv1.3",
            "ehlo c.test tls",
            "close quit",
        ]]),
    },
];

/// `never_reads`: one session; connect, then only EHLOs (as many as the server read before
/// it stopped), then the close.
fn check_never_reads(record: &Record) -> Result<(), String> {
    let [session] = record.sessions.as_slice() else {
        return Err(format!(
            "expected one session, got {}",
            record.sessions.len()
        ));
    };
    let rendered: Vec<String> = session.iter().map(ToString::to_string).collect();
    let ok = matches!(session.first(), Some(Call::Connect { .. }))
        && matches!(session.last(), Some(Call::Close(_)))
        && session.len() >= 3
        && session[1..session.len() - 1]
            .iter()
            .all(|c| matches!(c, Call::Ehlo { .. }));
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected calls: {rendered:?}"))
    }
}
