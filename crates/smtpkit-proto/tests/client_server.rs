//! `Client` talking to the crate's own `Server` in memory, for random envelopes, decisions,
//! bodies, configurations and chunkings of the bytes in both directions.
//!
//! Checked: every byte of every accepted body arrives un-stuffed and identical; every
//! recipient's result on the client is the decision the server side made; the message result
//! (LMTP: per recipient) is the server side's; both sides end with QUIT.

use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::auth::{Credentials, decode_login_step, decode_plain};
use smtpkit_proto::client::{
    Client, ClientConfig, ClientOptions, Envelope, Event as ClientEvent, Recipient, Sasl,
};
use smtpkit_proto::data::BareLineEnding;
use smtpkit_proto::server::Protocol;
use smtpkit_proto::{
    CloseReason, EnhancedCode, Event, Reply, ReplyCode, Server, ServerConfig, ServerOptions,
};

/// A reply the server side gives to a decision: 250 (accept), or a refusal code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Accept,
    Temporary,
    Permanent,
}

impl Decision {
    fn code(self) -> u16 {
        match self {
            Self::Accept => 250,
            Self::Temporary => 451,
            Self::Permanent => 550,
        }
    }

    fn answer(self, server: &mut Server, now: Instant) {
        match self {
            Self::Accept => server.accept(now).unwrap(),
            Self::Temporary => server
                .reply(
                    now,
                    &Reply::new(ReplyCode::LOCAL_ERROR, "Try again later")
                        .unwrap()
                        .with_enhanced(EnhancedCode::SYSTEM_TRANSIENT),
                )
                .unwrap(),
            Self::Permanent => server
                .reply(
                    now,
                    &Reply::new(ReplyCode::MAILBOX_UNAVAILABLE, "No")
                        .unwrap()
                        .with_enhanced(EnhancedCode::PERMANENT),
                )
                .unwrap(),
        }
    }
}

#[derive(Clone, Debug)]
struct Message {
    mail: Decision,
    recipients: Vec<Decision>,
    data_start: Decision,
    /// One per accepted recipient for LMTP (cycled), the first for SMTP.
    end: Vec<Decision>,
    body: Vec<u8>,
    /// Sizes of the `send_data` pieces, cycled.
    pieces: Vec<usize>,
    declare_size: bool,
}

#[derive(Clone, Debug)]
struct Scenario {
    lmtp: bool,
    server_pipelining: bool,
    server_chunking: bool,
    client_pipelining: bool,
    client_chunking: bool,
    /// None, or PLAIN (false) / LOGIN (true).
    auth: Option<bool>,
    messages: Vec<Message>,
    /// Bytes moved per round in each direction, cycled.
    transfer: Vec<usize>,
}

impl Scenario {
    fn bdat(&self) -> bool {
        self.server_chunking && self.client_chunking
    }
    fn pipelined(&self) -> bool {
        self.server_pipelining && self.client_pipelining
    }
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        6 => Just(Decision::Accept),
        1 => Just(Decision::Temporary),
        1 => Just(Decision::Permanent),
    ]
}

/// Body pieces: dots, line breaks (bare ones too) and text, so stuffing, end markers and
/// line-ending normalization are exercised; NUL and 8-bit bytes only when the content goes
/// with BDAT.
fn body(binary: bool) -> BoxedStrategy<Vec<u8>> {
    let mut pieces: Vec<&'static [u8]> = vec![
        b".",
        b"..",
        b"\r\n",
        b"\r\n.\r\n",
        b"\r\n..\r\n",
        b"a",
        b"text ",
        b"\r\n.",
        b"\r",
        b"\n",
        b"\n.\n",
        b"\r.\r",
    ];
    if binary {
        pieces.extend_from_slice(&[b"\0", b"\xff"]);
    }
    proptest::collection::vec(proptest::sample::select(pieces), 0..40)
        .prop_map(|p| p.concat())
        .boxed()
}

fn message(binary: bool) -> impl Strategy<Value = Message> {
    (
        prop_oneof![8 => Just(Decision::Accept), 1 => Just(Decision::Temporary)],
        proptest::collection::vec(decision(), 1..6),
        prop_oneof![8 => Just(Decision::Accept), 1 => Just(Decision::Permanent)],
        proptest::collection::vec(decision(), 1..6),
        body(binary),
        proptest::collection::vec(1usize..64, 1..6),
        any::<bool>(),
    )
        .prop_map(
            |(mail, recipients, data_start, end, body, pieces, declare_size)| Message {
                mail,
                recipients,
                data_start,
                end,
                body,
                pieces,
                declare_size,
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(1usize..300, 1..5),
    )
        .prop_flat_map(|(lmtp, sp, sc, cp, cc, auth, transfer)| {
            let binary = sc && cc;
            proptest::collection::vec(message(binary), 1..4).prop_map(move |messages| Scenario {
                lmtp,
                server_pipelining: sp,
                server_chunking: sc,
                client_pipelining: cp,
                client_chunking: cc,
                auth,
                messages,
                transfer: transfer.clone(),
            })
        })
}

/// What the server side saw and decided for one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    body: Vec<u8>,
    /// The end-of-content decisions given, in order.
    end: Vec<u16>,
    data_started: bool,
}

/// What the client side reported for one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Reported {
    mail: Option<u16>,
    recipients: Vec<(usize, u16)>,
    results: Vec<(Option<usize>, u16)>,
    aborted: bool,
}

/// DATA content as the server must receive it: each bare CR and LF as CRLF, and a final
/// CRLF if missing (RFC 5321 2.3.8, 4.5.2).
fn normalized(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < content.len() {
        match (content[i], content.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            (b'\r' | b'\n', _) => out.extend_from_slice(b"\r\n"),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn address(m: usize, r: usize) -> String {
    format!("r{r}.m{m}@example.com")
}

struct ServerSide {
    server: Server,
    message: usize,
    mails: usize,
    rcpt_accepted: usize,
    ends: usize,
    seen: Vec<Seen>,
    login_step: u8,
}

impl ServerSide {
    /// Handles every event in `input`, answering decisions from the scenario.
    fn pump(&mut self, s: &Scenario, now: Instant, input: &mut Vec<u8>) {
        // Bounded: each call consumes input, answers a decision, or stops.
        for _ in 0..10_000 {
            let p = self.server.handle_input(now, input);
            let Some(event) = p.event else {
                input.drain(..p.consumed);
                return;
            };
            // Every message sends exactly one MAIL, so MAILs count the messages.
            if matches!(event, Event::MailFrom { .. }) {
                self.message = self.mails;
                self.mails += 1;
            }
            let m = &s.messages[self.message];
            let seen = &mut self.seen[self.message];
            match event {
                Event::Auth {
                    mechanism,
                    initial_response,
                } => {
                    if mechanism.eq_ignore_ascii_case("PLAIN") {
                        let c = decode_plain(initial_response.unwrap().expose()).unwrap();
                        let Credentials::Password { user, password, .. } = c else {
                            panic!("{c:?}")
                        };
                        assert_eq!(
                            (user.as_str(), password.expose().as_str()),
                            ("user", "secret")
                        );
                        self.server.accept(now).unwrap();
                    } else {
                        assert!(initial_response.is_none());
                        self.login_step = 1;
                        let r = Reply::new(ReplyCode::AUTH_CONTINUE, "VXNlcm5hbWU6").unwrap();
                        self.server.reply(now, &r).unwrap();
                    }
                }
                Event::AuthResponse(r) => {
                    let text = decode_login_step(r.expose()).unwrap();
                    if self.login_step == 1 {
                        assert_eq!(text, "user");
                        self.login_step = 2;
                        let r = Reply::new(ReplyCode::AUTH_CONTINUE, "UGFzc3dvcmQ6").unwrap();
                        self.server.reply(now, &r).unwrap();
                    } else {
                        assert_eq!(text, "secret");
                        self.server.accept(now).unwrap();
                    }
                }
                Event::MailFrom { .. } => {
                    self.rcpt_accepted = 0;
                    self.ends = 0;
                    m.mail.answer(&mut self.server, now);
                }
                Event::RcptTo { forward_path, .. } => {
                    let fp = forward_path.to_string();
                    let r = (0..m.recipients.len())
                        .find(|&r| fp == format!("<{}>", address(self.message, r)))
                        .expect("a recipient of the current message");
                    let d = m.recipients[r];
                    if d == Decision::Accept {
                        self.rcpt_accepted += 1;
                    }
                    d.answer(&mut self.server, now);
                }
                Event::DataStart => {
                    if m.data_start == Decision::Accept {
                        seen.data_started = true;
                    }
                    m.data_start.answer(&mut self.server, now);
                }
                Event::Bdat { .. } => {
                    seen.data_started = true;
                    self.server.accept(now).unwrap();
                }
                Event::DataChunk(c) => seen.body.extend_from_slice(c),
                Event::BdatEnd { last: false } => self.server.accept(now).unwrap(),
                Event::DataEnd | Event::BdatEnd { last: true } => {
                    while self.server.awaiting_decision() {
                        let d = m.end[self.ends % m.end.len()];
                        self.ends += 1;
                        seen.end.push(d.code());
                        d.answer(&mut self.server, now);
                    }
                }
                Event::Hello { .. } => self.server.accept(now).unwrap(),
                _ if self.server.awaiting_decision() => self.server.accept(now).unwrap(),
                _ => {}
            }
            input.drain(..p.consumed);
        }
        panic!("server made no progress");
    }
}

struct ClientSide {
    client: Client,
    message: usize,
    reported: Vec<Reported>,
    authenticated: bool,
}

impl ClientSide {
    fn next_message(&mut self, s: &Scenario, now: Instant) {
        if self.message >= s.messages.len() {
            self.client.quit(now).unwrap();
            return;
        }
        let m = &s.messages[self.message];
        let addresses: Vec<String> = (0..m.recipients.len())
            .map(|r| address(self.message, r))
            .collect();
        let to: Vec<Recipient<'_>> = addresses
            .iter()
            .map(|a| Recipient::new(ForwardPath::Mailbox(Mailbox::parse(a).unwrap())))
            .collect();
        let from = ReversePath::Mailbox(Mailbox::parse("sender@example.org").unwrap());
        let mut envelope = Envelope::new(from, &to);
        if m.declare_size {
            envelope.size = Some(m.body.len() as u64);
        }
        self.client.send_mail(now, &envelope).unwrap();
    }

    fn pump(&mut self, s: &Scenario, now: Instant, input: &mut Vec<u8>) {
        for _ in 0..10_000 {
            let p = self.client.handle_input(now, input);
            let Some(event) = p.event else {
                input.drain(..p.consumed);
                return;
            };
            let ended = matches!(
                event,
                ClientEvent::MessageResult { .. } | ClientEvent::MessageAborted { .. }
            );
            let i = self.message.min(s.messages.len() - 1);
            let rep = &mut self.reported[i];
            match event {
                ClientEvent::Ready => match s.auth {
                    Some(login) if !self.authenticated => {
                        let sasl = if login {
                            Sasl::Login {
                                user: "user",
                                password: "secret",
                            }
                        } else {
                            Sasl::Plain {
                                user: "user",
                                password: "secret",
                            }
                        };
                        self.client.auth(now, &sasl).unwrap();
                    }
                    _ => self.next_message(s, now),
                },
                ClientEvent::AuthResult(r) => {
                    assert_eq!(r.code().get(), 235);
                    self.authenticated = true;
                    self.next_message(s, now);
                }
                ClientEvent::SenderResult(r) => rep.mail = Some(r.code().get()),
                ClientEvent::RecipientResult { index, reply } => {
                    rep.recipients.push((index, reply.code().get()));
                }
                ClientEvent::ReadyForData => {
                    let m = &s.messages[i];
                    let mut rest = &m.body[..];
                    let mut k = 0;
                    while !rest.is_empty() {
                        let n = m.pieces[k % m.pieces.len()].min(rest.len());
                        assert!(self.client.wants_data());
                        self.client.send_data(now, &rest[..n]).unwrap();
                        rest = &rest[n..];
                        k += 1;
                    }
                    self.client.finish_data(now).unwrap();
                }
                ClientEvent::MessageResult { recipient, reply } => {
                    rep.results.push((recipient, reply.code().get()));
                }
                ClientEvent::MessageAborted { .. } => rep.aborted = true,
                ClientEvent::Greeting(r) => assert_eq!(r.code().get(), 220),
                other => panic!("unexpected event {other:?}"),
            }
            input.drain(..p.consumed);
            if ended && !self.client.in_transaction() {
                self.message += 1;
                self.next_message(s, now);
            }
        }
        panic!("client made no progress");
    }
}

fn run(s: &Scenario) -> (Vec<Seen>, Vec<Reported>, ServerSide, ClientSide) {
    let now = Instant::now();
    let mut so = ServerOptions {
        protocol: if s.lmtp {
            Protocol::Lmtp
        } else {
            Protocol::Smtp
        },
        allow_insecure_auth: true,
        ..ServerOptions::default()
    };
    so.extensions.pipelining = s.server_pipelining;
    so.extensions.chunking = s.server_chunking;
    so.extensions.binary_mime = s.server_chunking;
    // Any bare CR or LF reaching the server would fail the message: the client must send
    // none with DATA.
    so.bare_line_ending = BareLineEnding::Reject;
    so.extensions.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
    let co = ClientOptions {
        protocol: so.protocol,
        pipelining: s.client_pipelining,
        chunking: s.client_chunking,
        allow_insecure_auth: true,
        hostname: "client.example".into(),
        ..ClientOptions::default()
    };
    let mut server = ServerSide {
        server: Server::new(Arc::new(ServerConfig::new(so).unwrap()), now),
        message: 0,
        mails: 0,
        rcpt_accepted: 0,
        ends: 0,
        seen: vec![Seen::default(); s.messages.len()],
        login_step: 0,
    };
    let mut client = ClientSide {
        client: Client::new(Arc::new(ClientConfig::new(co).unwrap()), now),
        message: 0,
        reported: vec![Reported::default(); s.messages.len()],
        authenticated: false,
    };
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let (mut wire_s, mut wire_c) = (Vec::<u8>::new(), Vec::<u8>::new());
    // Bounded: the whole exchange is a few thousand bytes moved at least one per round.
    for round in 0..100_000 {
        let k = s.transfer[round % s.transfer.len()];
        // Move up to k bytes each way, as a network would.
        let n = wire_s.len().min(k);
        to_server.extend(wire_s.drain(..n));
        let n = wire_c.len().min(k);
        to_client.extend(wire_c.drain(..n));
        server.pump(s, now, &mut to_server);
        wire_c.extend_from_slice(server.server.poll_transmit());
        server
            .server
            .advance_transmit(server.server.poll_transmit().len());
        client.pump(s, now, &mut to_client);
        wire_s.extend_from_slice(client.client.poll_transmit());
        client
            .client
            .advance_transmit(client.client.poll_transmit().len());
        if client.client.is_closed() && server.server.is_closed() && wire_c.is_empty() {
            break;
        }
    }
    (server.seen.clone(), client.reported.clone(), server, client)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn client_and_server_agree(s in scenario()) {
        let (seen, reported, server, client) = run(&s);
        prop_assert_eq!(client.client.close_reason(), Some(CloseReason::Quit));
        prop_assert_eq!(server.server.close_reason(), Some(CloseReason::Quit));
        for (i, m) in s.messages.iter().enumerate() {
            let (seen, rep) = (&seen[i], &reported[i]);
            prop_assert_eq!(rep.mail, Some(m.mail.code()), "message {}", i);
            let accepted: Vec<usize> = (0..m.recipients.len())
                .filter(|&r| m.mail == Decision::Accept && m.recipients[r] == Decision::Accept)
                .collect();
            if m.mail == Decision::Accept {
                let want: Vec<(usize, u16)> =
                    m.recipients.iter().map(|d| d.code()).enumerate().collect();
                prop_assert_eq!(&rep.recipients, &want, "message {}", i);
            } else if s.pipelined() {
                // The pipelined RCPTs met a server with no transaction open.
                prop_assert!(rep.recipients.iter().all(|&(_, c)| c == 503));
            } else {
                prop_assert!(rep.recipients.is_empty());
            }
            let content = !accepted.is_empty() && (s.bdat() || m.data_start == Decision::Accept);
            if !content {
                prop_assert!(rep.aborted, "message {} should be aborted: {:?}", i, rep);
                prop_assert!(rep.results.is_empty());
                prop_assert!(seen.body.is_empty());
                continue;
            }
            prop_assert!(!rep.aborted);
            let body = if s.bdat() { m.body.clone() } else { normalized(&m.body) };
            prop_assert_eq!(seen.body.escape_ascii().to_string(), body.escape_ascii().to_string());
            let want: Vec<(Option<usize>, u16)> = if s.lmtp {
                accepted.iter().copied().map(Some).zip(seen.end.iter().copied()).collect()
            } else {
                vec![(None, seen.end[0])]
            };
            prop_assert_eq!(seen.end.len(), want.len());
            prop_assert_eq!(&rep.results, &want, "message {}", i);
        }
    }
}
