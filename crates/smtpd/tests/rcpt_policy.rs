//! DNSBL and greylisting at RCPT, against an in-process authoritative DNS server: the library
//! checks, then the same through smtpd's session handler.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use smtp_test::dns::TestDns;
use smtpd::config::Config;
use smtpd::dnsbl::{Dnsbl, List};
use smtpd::greylist::{Greylist, Settings};
use smtpd::maildir::{MaildirStore, Store};
use smtpd::password::Accounts;
use smtpd::rcpt_policy::{Rcpt, RcptPolicy, SessionPolicy};
use smtpd::receiver::{Guards, Receiver, State};
use smtpd::routing::Router;
use smtpkit_proto::address::Mailbox;
use smtpkit_server::{
    Decision, ForwardPath, Handler, ListenerKind, Parameters, ReversePath, Session, SessionInfo,
};

const ZONE: &str = "\
10.2.0.192.bl.test. 300 IN A 127.0.0.2
10.2.0.192.bl.test. 300 IN TXT \"Listed in bl.test, see https://bl.test/q?192.0.2.10\"
10.2.0.192.weak.test. 300 IN A 127.0.0.4
11.2.0.192.bl.test. 300 IN A 127.255.255.254
12.2.0.192.bl.test. 300 IN A 127.0.0.3
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test. 300 IN A 127.0.0.2
";

fn resolver(ns: SocketAddr, timeout: Duration) -> TokioResolver {
    let mut udp = ConnectionConfig::udp();
    udp.port = ns.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = ns.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        ns.ip(),
        true,
        vec![udp, tcp],
    )]);
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap()
}

fn lists(zones: &[(&str, u32)]) -> Vec<List> {
    zones
        .iter()
        .map(|&(zone, weight)| List {
            zone: zone.to_owned(),
            weight,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn listed_not_listed_error_codes_ipv6_and_weights() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let timeout = Duration::from_secs(5);
    let one = Dnsbl::new(
        lists(&[("bl.test", 1)]),
        1,
        timeout,
        resolver(dns.addr(), timeout),
    );

    let listed = one.check(ip("192.0.2.10")).await;
    assert!(listed.blocked, "{listed:?}");
    assert_eq!(listed.listings[0].codes, [ip("127.0.0.2")]);
    assert_eq!(
        listed.reply_text(ip("192.0.2.10")),
        "Service unavailable; Client host [192.0.2.10] blocked using bl.test; Listed in bl.test, see https://bl.test/q?192.0.2.10"
    );
    // Listed without a TXT reason: the reply names the list alone.
    let bare = one.check(ip("192.0.2.12")).await;
    assert!(bare.blocked);
    assert_eq!(
        bare.reply_text(ip("192.0.2.12")),
        "Service unavailable; Client host [192.0.2.12] blocked using bl.test"
    );
    // NXDOMAIN: not listed.
    let clean = one.check(ip("192.0.2.99")).await;
    assert!(
        !clean.blocked && clean.listings.is_empty() && clean.failed.is_empty(),
        "{clean:?}"
    );
    // 127.255.255.254 is the list saying "error", not "listed".
    assert!(!one.check(ip("192.0.2.11")).await.blocked);
    // IPv6 (RFC 5782 2.4 nibbles), and IPv4-mapped IPv6 as IPv4.
    assert!(one.check(ip("2001:db8::1")).await.blocked);
    assert!(!one.check(ip("2001:db8::2")).await.blocked);
    assert!(one.check(ip("::ffff:192.0.2.10")).await.blocked);

    // Weights: 192.0.2.10 is on both lists (2 + 1), 192.0.2.12 on the heavy one only.
    let weighted = Dnsbl::new(
        lists(&[("weak.test", 1), ("bl.test", 2)]),
        3,
        timeout,
        resolver(dns.addr(), timeout),
    );
    let both = weighted.check(ip("192.0.2.10")).await;
    assert!(both.blocked, "{both:?}");
    // The heaviest list names the block.
    assert_eq!(both.listings[0].zone, "bl.test");
    let heavy_only = weighted.check(ip("192.0.2.12")).await;
    assert_eq!(heavy_only.listings.len(), 1);
    assert!(!heavy_only.blocked, "{heavy_only:?}");
}

#[tokio::test]
async fn a_list_that_does_not_answer_never_blocks() {
    // A nameserver that reads nothing and answers nothing.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(500);
    let dnsbl = Dnsbl::new(
        lists(&[("bl.test", 1)]),
        1,
        timeout,
        resolver(silent.local_addr().unwrap(), Duration::from_secs(30)),
    );
    let start = Instant::now();
    let verdict = dnsbl.check(ip("192.0.2.10")).await;
    assert!(!verdict.blocked, "{verdict:?}");
    assert_eq!(verdict.failed, ["bl.test"]);
    // The check's own timeout bounds it, whatever the resolver's is.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

fn info(peer: &str) -> SessionInfo {
    SessionInfo::new(
        peer.parse::<std::net::SocketAddr>().unwrap(),
        "127.0.0.1:25".parse::<std::net::SocketAddr>().unwrap(),
        ListenerKind::Smtp,
    )
}

fn reply(d: &Decision) -> (u16, String) {
    match d {
        Decision::Accept => (250, String::new()),
        Decision::Reply(r) => (
            r.code().get(),
            format!(
                "{} {}",
                r.enhanced().map(|e| e.to_string()).unwrap_or_default(),
                r.text()
            ),
        ),
    }
}

async fn rcpt(receiver: &Receiver, info: &SessionInfo, to: &str) -> (u16, String) {
    let mut session = receiver.connect(info).await.unwrap();
    let from = ReversePath::Mailbox(Mailbox::parse("a@sender.test").unwrap());
    let to = ForwardPath::Mailbox(Mailbox::parse(to).unwrap());
    session.mail_from(info, &from, &Parameters::EMPTY).await;
    reply(&session.rcpt_to(info, &to, &Parameters::EMPTY).await)
}

#[tokio::test]
async fn smtpd_refuses_listed_clients_and_greylists_at_rcpt() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default_embedded();
    let timeout = Duration::from_secs(5);
    let greylist = Greylist::open(dir.path().join("greylist.db"), Settings::default()).unwrap();
    let state = State {
        hostname: "mx.example.test".to_owned(),
        router: Router::from_config(&config).unwrap(),
        store: Store::Maildir(MaildirStore::new(dir.path().join("maildir"))),
        accounts: Accounts::new(&[]),
        outbound: None,
        checks: None,
        lmtp: None,
        rcpt_policy: RcptPolicy {
            dnsbl: Some(Dnsbl::new(
                lists(&[("bl.test", 1)]),
                1,
                timeout,
                resolver(dns.addr(), timeout),
            )),
            greylist: Some(Arc::new(greylist)),
            trusted: vec!["198.51.100.0/24".parse().unwrap()],
        },
    };
    let receiver = Receiver::new(state, Guards::from_config(&config));

    let (code, text) = rcpt(&receiver, &info("192.0.2.10:4000"), "b@example.test").await;
    assert_eq!(code, 554, "{text}");
    assert!(
        text.starts_with("5.7.1 Service unavailable; Client host [192.0.2.10] blocked using bl.test; Listed in bl.test"),
        "{text}"
    );

    // Authenticated and trusted clients are exempt from both checks.
    let mut user = info("192.0.2.10:4001");
    user.authenticated = Some("alice".to_owned());
    assert_eq!(rcpt(&receiver, &user, "b@example.test").await.0, 250);
    assert_eq!(
        rcpt(&receiver, &info("198.51.100.7:4002"), "b@example.test")
            .await
            .0,
        250
    );

    // A clean client is greylisted on its first attempt.
    let (code, text) = rcpt(&receiver, &info("203.0.113.5:4003"), "b@example.test").await;
    assert_eq!(code, 451, "{text}");
    assert_eq!(text, "4.7.1 Greylisted, please try again in 300 seconds");
}

#[tokio::test]
async fn the_policy_checks_in_order_and_remembers_the_lists_answer_per_session() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(5);
    let policy = RcptPolicy {
        dnsbl: Some(Dnsbl::new(
            lists(&[("bl.test", 1)]),
            1,
            timeout,
            resolver(dns.addr(), timeout),
        )),
        greylist: Some(Arc::new(
            Greylist::open(dir.path().join("g"), Settings::default()).unwrap(),
        )),
        trusted: Vec::new(),
    };
    let clean = info("203.0.113.9:1");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let r = |spf_pass| Rcpt {
        sender: "<a@sender.test>",
        recipient: "<b@example.test>",
        spf_pass,
    };
    let mut session = SessionPolicy::default();
    let first = policy.check(&clean, &mut session, r(None), t0).await;
    assert_eq!(reply(first.as_ref().unwrap()).0, 451);
    // Time is the caller's: five minutes later the retry passes, no sleeping.
    let later = t0 + Duration::from_secs(300);
    assert!(
        policy
            .check(&clean, &mut session, r(None), later)
            .await
            .is_none()
    );
    // SPF pass skips greylisting for a new triplet.
    let other = info("203.0.113.77:1");
    let mut fresh = SessionPolicy::default();
    assert!(
        policy
            .check(&other, &mut fresh, r(Some(true)), t0)
            .await
            .is_none()
    );
    // The blocklist answer is kept for the session: a listed session stays refused even once
    // its DNS server is gone.
    let listed = info("192.0.2.10:1");
    let mut listed_session = SessionPolicy::default();
    assert_eq!(
        reply(
            &policy
                .check(&listed, &mut listed_session, r(None), t0)
                .await
                .unwrap()
        )
        .0,
        554
    );
    drop(dns);
    assert_eq!(
        reply(
            &policy
                .check(&listed, &mut listed_session, r(None), t0)
                .await
                .unwrap()
        )
        .0,
        554
    );
}
