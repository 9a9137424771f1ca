//! Reverse DNS with forward confirmation through hickory against an in-process authoritative
//! server on 127.0.0.1 holding the PTR and A/AAAA records each test writes.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_test::dns::{NEGATIVE_TTL, TestDns, ptr};
use smtpkit_server::rdns::{
    AddressFamily, LookupError, Resolver, ReverseDns, ReverseDnsSettings, ReverseLookup,
    ReverseName,
};
use smtpkit_tokio::rdns::HickoryResolver;

/// Every test finishes well within this, or fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records() -> String {
    [
        // Confirmed, over IPv4 and IPv6.
        ptr(ip("192.0.2.1"), "Mail.Example.test."),
        "mail.example.test. 300 IN A 192.0.2.1\n".into(),
        "mail.example.test. 300 IN AAAA 2001:db8::1\n".into(),
        ptr(ip("2001:db8::1"), "mail.example.test."),
        // A PTR name whose A records do not include the address.
        ptr(ip("192.0.2.2"), "liar.example.test."),
        "liar.example.test. 300 IN A 198.51.100.9\n".into(),
        // A PTR name that has no address at all.
        ptr(ip("192.0.2.3"), "ghost.example.test."),
        // Two PTR names, the second confirms.
        ptr(ip("192.0.2.4"), "a.example.test."),
        ptr(ip("192.0.2.4"), "b.example.test."),
        "a.example.test. 300 IN A 198.51.100.10\n".into(),
        "b.example.test. 300 IN A 192.0.2.4\n".into(),
    ]
    .concat()
}

async fn rdns(dns: &TestDns, timeout: Duration) -> ReverseDns<HickoryResolver> {
    let resolver = HickoryResolver::new(&[dns.addr()], timeout).unwrap();
    let settings = ReverseDnsSettings {
        timeout,
        ..Default::default()
    };
    ReverseDns::new(resolver, settings)
}

async fn lookup(rdns: &ReverseDns<HickoryResolver>, addr: &str) -> ReverseName {
    let timer = tokio::time::sleep(rdns.timeout());
    let lookup = rdns.lookup(ip(addr), Instant::now(), timer);
    tokio::time::timeout(BOUND, lookup)
        .await
        .expect("lookup hung")
}

#[tokio::test]
async fn forward_confirmed_name() {
    let dns = TestDns::start(&records()).await.unwrap();
    let rdns = rdns(&dns, Duration::from_secs(5)).await;
    assert_eq!(
        lookup(&rdns, "192.0.2.1").await,
        ReverseName::Confirmed("mail.example.test".into())
    );
    assert_eq!(
        lookup(&rdns, "2001:db8::1").await.confirmed(),
        Some("mail.example.test")
    );
    // A dual-stack socket reports an IPv4 client as a mapped IPv6 address.
    assert_eq!(
        lookup(&rdns, "::ffff:192.0.2.1").await.confirmed(),
        Some("mail.example.test")
    );
    assert_eq!(
        lookup(&rdns, "192.0.2.4").await.confirmed(),
        Some("b.example.test")
    );
}

#[tokio::test]
async fn as_the_trait_object_a_server_holds() {
    let dns = TestDns::start(&records()).await.unwrap();
    let rdns: Arc<dyn ReverseLookup> = Arc::new(rdns(&dns, Duration::from_secs(5)).await);
    let timer = Box::pin(tokio::time::sleep(rdns.timeout()));
    let name = rdns.reverse_name(ip("192.0.2.1"), Instant::now(), timer);
    let name = tokio::time::timeout(BOUND, name)
        .await
        .expect("lookup hung");
    assert_eq!(name.to_string(), "mail.example.test");
}

#[tokio::test]
async fn mismatch_is_not_confirmed() {
    let dns = TestDns::start(&records()).await.unwrap();
    let rdns = rdns(&dns, Duration::from_secs(5)).await;
    let name = lookup(&rdns, "192.0.2.2").await;
    assert_eq!(name, ReverseName::Unconfirmed("liar.example.test".into()));
    assert_eq!(name.to_string(), "unknown");
    assert_eq!(
        lookup(&rdns, "192.0.2.3").await,
        ReverseName::Unconfirmed("ghost.example.test".into())
    );
}

#[tokio::test]
async fn no_ptr_is_not_found_with_the_zone_negative_ttl() {
    let dns = TestDns::start(&records()).await.unwrap();
    let rdns = rdns(&dns, Duration::from_secs(5)).await;
    assert_eq!(lookup(&rdns, "192.0.2.99").await, ReverseName::NotFound);
    assert_eq!(lookup(&rdns, "2001:db8::99").await, ReverseName::NotFound);

    let err = rdns
        .resolver()
        .lookup_ptr(ip("192.0.2.98"))
        .await
        .unwrap_err();
    let LookupError::NotFound { ttl: Some(ttl) } = err else {
        panic!("expected NXDOMAIN with an SOA, got {err:?}")
    };
    assert!(ttl <= Duration::from_secs(NEGATIVE_TTL.into()), "{ttl:?}");
}

#[tokio::test]
async fn forward_lookup_returns_only_the_asked_family() {
    let dns = TestDns::start(&records()).await.unwrap();
    let rdns = rdns(&dns, Duration::from_secs(5)).await;
    let v6 = rdns
        .resolver()
        .lookup_ip("mail.example.test", AddressFamily::V6)
        .await
        .unwrap();
    assert_eq!(v6.records, vec![ip("2001:db8::1")]);
    assert!(v6.ttl <= Duration::from_secs(300) && !v6.ttl.is_zero());
}

#[tokio::test]
async fn a_nameserver_that_never_answers_times_out() {
    // Bound, never read: queries sent there are never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();

    // The caller's timer ends the check even when the resolver would wait far longer.
    let resolver = HickoryResolver::new(&[addr], Duration::from_secs(60)).unwrap();
    let settings = ReverseDnsSettings {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let rdns = ReverseDns::new(resolver, settings);
    let started = Instant::now();
    assert_eq!(lookup(&rdns, "192.0.2.1").await, ReverseName::TempError);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The resolver's own per-query timeout is reported as a timeout, not as "no name".
    let resolver = HickoryResolver::new(&[addr], Duration::from_millis(300)).unwrap();
    let err = tokio::time::timeout(BOUND, resolver.lookup_ptr(ip("192.0.2.1")))
        .await
        .expect("resolver hung");
    assert_eq!(err, Err(LookupError::Timeout));
    drop(silent);
}

/// The client the session-level tests are, by a PROXY header: hickory answers the reverse
/// lookup of a loopback address itself (`localhost`, RFC 6761), so a client on 127.0.0.1 could
/// never reach the test's nameserver.
const CLIENT: &str = "192.0.2.1";

/// The name a server on adapter `A` with `lookup` found for [`CLIENT`], as its connect handler
/// saw it, and how long the greeting took to arrive.
fn session_name<A: smtp_test::Adapter>(lookup: Arc<dyn ReverseLookup>) -> (ReverseName, Duration) {
    use std::io::{BufRead, BufReader, Write};

    use smtp_test::{
        Call, ListenerKind, ListenerSettings, RecordingHandler, ServerSpec, base_settings,
        support::eventually_blocking,
    };
    use smtpkit_server::ProxySettings;

    let handler = RecordingHandler::new();
    let listener = ListenerSettings::new(ListenerKind::Smtp)
        .proxy(ProxySettings::new("127.0.0.1/32".parse().unwrap()));
    let spec =
        ServerSpec::new(base_settings(), vec![listener], None, handler.clone()).reverse_dns(lookup);
    let running = A::start(spec);
    let started = Instant::now();
    let conn = std::net::TcpStream::connect(running.addrs[0]).unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    (&conn)
        .write_all(format!("PROXY TCP4 {CLIENT} 127.0.0.1 40000 25\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    let waited = started.elapsed();
    assert_eq!(greeting, "220 mx.test ESMTP\r\n", "[{}]", A::NAME);
    (&conn).write_all(b"QUIT\r\n").unwrap();
    eventually_blocking(|| handler.record().closed() == 1);
    let record = handler.record();
    let Some(Call::Connect {
        reverse_name: Some(name),
        ..
    }) = record.sessions[0].first().cloned()
    else {
        panic!("[{}] no reverse name in {:?}", A::NAME, record.sessions)
    };
    (name, waited)
}

/// A tokio runtime for the DNS server and the resolver's lookups: the smol and mio servers
/// have no reactor hickory could use, so the resolver runs its lookups here.
fn dns_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The session-level check on every adapter: `records` for [`CLIENT`] served by a test
/// nameserver, and what the connect handler must see.
fn every_adapter_sees(records: &str, expected: &ReverseName) {
    let rt = dns_runtime();
    let dns = rt.block_on(TestDns::start(records)).unwrap();
    let lookup = || -> Arc<dyn ReverseLookup> {
        let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(5))
            .unwrap()
            .on_runtime(rt.handle().clone());
        Arc::new(ReverseDns::new(resolver, ReverseDnsSettings::default()))
    };
    let got = [
        session_name::<smtp_test::adapters::Tokio>(lookup()).0,
        session_name::<smtp_test::adapters::Smol>(lookup()).0,
        session_name::<smtp_test::adapters::Mio>(lookup()).0,
    ];
    assert_eq!(got, [expected.clone(), expected.clone(), expected.clone()]);
}

#[test]
fn the_connect_handler_sees_a_confirmed_name_on_every_adapter() {
    let records = [
        ptr(ip(CLIENT), "client.example.test."),
        "client.example.test. 300 IN A 192.0.2.1\n".into(),
    ]
    .concat();
    every_adapter_sees(
        &records,
        &ReverseName::Confirmed("client.example.test".into()),
    );
}

#[test]
fn the_connect_handler_sees_a_forward_mismatch_on_every_adapter() {
    let records = [
        ptr(ip(CLIENT), "liar.example.test."),
        "liar.example.test. 300 IN A 198.51.100.9\n".into(),
    ]
    .concat();
    every_adapter_sees(
        &records,
        &ReverseName::Unconfirmed("liar.example.test".into()),
    );
}

#[test]
fn the_connect_handler_sees_no_ptr_on_every_adapter() {
    every_adapter_sees("", &ReverseName::NotFound);
}

#[test]
fn a_silent_nameserver_is_a_temporary_failure_within_the_timeout_on_every_adapter() {
    let rt = dns_runtime();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(300);
    let lookup = || -> Arc<dyn ReverseLookup> {
        // The resolver alone would wait a minute: the server's timer must end the lookup.
        let resolver =
            HickoryResolver::new(&[silent.local_addr().unwrap()], Duration::from_secs(60))
                .unwrap()
                .on_runtime(rt.handle().clone());
        let settings = ReverseDnsSettings {
            timeout,
            ..Default::default()
        };
        Arc::new(ReverseDns::new(resolver, settings))
    };
    for (name, waited) in [
        session_name::<smtp_test::adapters::Tokio>(lookup()),
        session_name::<smtp_test::adapters::Smol>(lookup()),
        session_name::<smtp_test::adapters::Mio>(lookup()),
    ] {
        assert_eq!(name, ReverseName::TempError);
        // The greeting waited for the lookup's timeout, and not for the resolver's minute.
        assert!(
            waited >= timeout && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }
}
