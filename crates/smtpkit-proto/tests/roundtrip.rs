//! Property tests: what parses re-encodes to something that parses to the same value, and
//! generated values survive encode → parse.
//!
//! Bytes do not round-trip (verbs are case-insensitive, optional spaces are dropped), so for
//! parsed input the property is stability: `parse(encode(parse(b))) == parse(b)`.

use proptest::prelude::*;
use smtpkit_proto::address::Mailbox;
use smtpkit_proto::{Command, EnhancedCode, Reply, ReplyCode};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec("[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,8}", 1..3)
            .prop_map(|a| a.join(".")),
        // Quoted strings with spaces and escaped quotes and backslashes.
        "([ !#-\\[\\]-~]|\\\\\"|\\\\\\\\){0,12}".prop_map(|q| format!("\"{q}\"")),
        "[a-z]{1,4}(ü|用户|δ)[a-z]{0,3}",
    ]
}

fn mailbox() -> impl Strategy<Value = String> {
    let domain_part = prop_oneof![
        3 => domain(),
        1 => (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255).prop_map(|(a, b, c, d)| format!("[{a}.{b}.{c}.{d}]")),
        1 => any::<[u16; 8]>().prop_map(|s| format!("[IPv6:{}]", std::net::Ipv6Addr::from(s))),
        1 => ("[a-z]{1,5}", "[!-Z^-~]{1,10}").prop_map(|(t, c)| format!("[x-{t}:{c}]")),
    ];
    (local_part(), domain_part).prop_map(|(l, d)| format!("{l}@{d}"))
}

fn mail_params() -> impl Strategy<Value = String> {
    let one = prop_oneof![
        (0u64..1_000_000_000).prop_map(|n| format!("SIZE={n}")),
        prop_oneof![
            Just("BODY=7BIT"),
            Just("BODY=8BITMIME"),
            Just("BODY=BINARYMIME")
        ]
        .prop_map(str::to_owned),
        Just("SMTPUTF8".to_owned()),
        Just("RET=HDRS".to_owned()),
        "[A-Za-z0-9]{1,20}".prop_map(|e| format!("ENVID={e}+2B")),
        "X-[A-Z]{1,6}(=[a-z0-9]{1,6})?",
    ];
    proptest::collection::vec(one, 0..4).prop_map(|v| {
        // Known keywords at most once each.
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|p| seen.insert(p.split('=').next().unwrap().to_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn command_line() -> impl Strategy<Value = String> {
    let with = |verb: &'static str, params: String| {
        if params.is_empty() {
            verb.to_owned()
        } else {
            format!("{verb} {params}")
        }
    };
    prop_oneof![
        (
            prop_oneof![Just("EHLO"), Just("HELO"), Just("LHLO"), Just("ehlo")],
            domain()
        )
            .prop_map(|(v, d)| format!("{v} {d}")),
        (
            prop_oneof![
                Just("<>".to_owned()),
                mailbox().prop_map(|m| format!("<{m}>"))
            ],
            mail_params()
        )
            .prop_map(
                move |(p, params)| with("MAIL FROM:", format!("{p} {params}"))
                    .replace("FROM: ", "FROM:")
                    .trim_end()
                    .to_owned()
            ),
        (
            mailbox(),
            prop_oneof![
                Just(""),
                Just(" NOTIFY=SUCCESS,DELAY"),
                Just(" ORCPT=rfc822;a+40b.example")
            ]
        )
            .prop_map(|(m, p)| format!("RCPT TO:<{m}>{p}")),
        Just("RCPT TO:<Postmaster>".to_owned()),
        (0u64..u64::MAX, any::<bool>()).prop_map(|(n, l)| if l {
            format!("BDAT {n} LAST")
        } else {
            format!("BDAT {n}")
        }),
        prop_oneof![
            Just("DATA"),
            Just("RSET"),
            Just("QUIT"),
            Just("STARTTLS"),
            Just("NOOP"),
            Just("HELP")
        ]
        .prop_map(str::to_owned),
        "[a-zA-Z]{1,10}".prop_map(|s| format!("VRFY {s}")),
        "[a-zA-Z]{1,10}".prop_map(|s| format!("EXPN {s}")),
        (
            "[A-Z0-9-]{1,20}",
            proptest::option::of("[A-Za-z0-9+/]{1,40}={0,2}")
        )
            .prop_map(|(m, r)| match r {
                Some(r) => format!("AUTH {m} {r}"),
                None => format!("AUTH {m}"),
            }),
    ]
}

proptest! {
    /// Every generated valid command parses, and parse(encode(parse(b))) == parse(b).
    #[test]
    fn commands_are_stable(line in command_line()) {
        let first = Command::parse(line.as_bytes()).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
        let mut encoded = Vec::new();
        first.encode(&mut encoded);
        prop_assert!(encoded.ends_with(b"\r\n"));
        let second = Command::parse(&encoded[..encoded.len() - 2]).expect("re-parse");
        prop_assert_eq!(first, second);
    }

    /// Arbitrary bytes never panic the parser, and what parses is stable.
    #[test]
    fn arbitrary_lines_are_stable(line in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(first) = Command::parse(&line) {
            let mut encoded = Vec::new();
            first.encode(&mut encoded);
            prop_assert_eq!(Command::parse(&encoded[..encoded.len() - 2]), Ok(first));
        }
    }

    /// Mailboxes survive Display → parse.
    #[test]
    fn mailboxes_round_trip(m in mailbox()) {
        let parsed = Mailbox::parse(&m).map_err(|e| TestCaseError::fail(format!("{m:?}: {e}")))?;
        let shown = parsed.to_string();
        prop_assert_eq!(Mailbox::parse(&shown), Ok(parsed));
    }

    /// Replies: value → encode → parse is the identity, with and without enhanced codes.
    #[test]
    fn replies_round_trip(
        code in (2u16..=5, 0u16..=5, 0u16..=9).prop_map(|(a, b, c)| a * 100 + b * 10 + c),
        enhanced in proptest::option::of((0u16..=999, 0u16..=999)),
        lines in proptest::collection::vec("[A-Za-z][ -~]{0,40}", 1..4),
        on in any::<bool>(),
    ) {
        let code = ReplyCode::new(code).unwrap();
        let mut reply = Reply::new(code, lines.join("\n")).unwrap();
        let class = code.class();
        if let (Some((s, d)), true) = (enhanced, class != 3) {
            reply = reply.with_enhanced(EnhancedCode::new(class, s, d).unwrap());
        }
        let mut out = Vec::new();
        reply.encode(on, &mut out);
        for line in out.split_inclusive(|&b| b == b'\n') {
            prop_assert!(line.len() <= 512);
        }
        let (parsed, used) = Reply::parse(&out).unwrap().expect("complete reply");
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(parsed.code(), reply.code());
        prop_assert_eq!(parsed.text(), reply.text());
        let want_enhanced = if on && class != 3 { reply.enhanced().or(EnhancedCode::new(class, 0, 0)) } else { None };
        prop_assert_eq!(parsed.enhanced(), want_enhanced);
    }
}
