//! MX routing with hickory against smtp-test's in-process authoritative server.

use std::net::IpAddr;
use std::time::Duration;

use smtp_test::dns::TestDns;
use smtpkit_queue::mx::{HickoryMx, RouteError, route};

const ZONE: &str = "\
multi.test. 60 IN MX 20 backup.multi.test.
multi.test. 60 IN MX 10 primary.multi.test.
primary.multi.test. 60 IN A 192.0.2.10
primary.multi.test. 60 IN AAAA 2001:db8::10
backup.multi.test. 60 IN A 192.0.2.20
bare.test. 60 IN AAAA 2001:db8::30
bare.test. 60 IN A 192.0.2.30
nullmx.test. 60 IN MX 0 .
broken.test. 60 IN MX 10 nowhere.broken.test.
noaddress.test. 60 IN TXT \"v=spf1 -all\"
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn routes_follow_rfc_5321_and_rfc_7505() {
    let dns = TestDns::start(ZONE).await.unwrap();
    let resolver = HickoryMx::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);

    // Preference order; IPv6 before IPv4 for each host.
    let hosts = route(&resolver, "multi.test", &mut rng).await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["primary.multi.test", "backup.multi.test"]);
    assert_eq!(hosts[0].addresses, [ip("2001:db8::10"), ip("192.0.2.10")]);

    // No MX: the domain itself (implicit MX), both families.
    let hosts = route(&resolver, "bare.test", &mut rng).await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].name, "bare.test");
    assert_eq!(hosts[0].addresses, [ip("2001:db8::30"), ip("192.0.2.30")]);

    // Null MX, a domain that does not exist, a domain without MX or address: permanent.
    for domain in ["nullmx.test", "nosuchdomain.test", "noaddress.test"] {
        let e = route(&resolver, domain, &mut rng).await.unwrap_err();
        assert!(matches!(e, RouteError::Permanent(_)), "{domain}: {e:?}");
    }
    let e = route(&resolver, "nullmx.test", &mut rng).await.unwrap_err();
    assert!(e.to_string().contains("null MX"), "{e}");

    // An MX host without an address is the domain's DNS problem for now: temporary.
    let e = route(&resolver, "broken.test", &mut rng).await.unwrap_err();
    assert!(matches!(e, RouteError::Temporary(_)), "{e:?}");
}
