//! What a handler sees of its session over a real loopback connection: the TLS facts after
//! STARTTLS and implicit TLS (a rustls client sending SNI, one presenting a client certificate
//! from an rcgen CA), the STARTTLS hook refusing the
//! upgrade, the greeting verb, the envelope and the transaction count, the PROXY v2 source and
//! TLVs. (The transcript has its own test binary: `transcript.rs`.)

mod common;

use std::sync::{Arc, Mutex};

use common::{Raw, T, pki, settings};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, ProtocolVersion};
use smtp_test::support::blocking;
use smtpkit_proto::extension::BodyType;
use smtpkit_tokio::{
    Decision, EnhancedCode, Handler, HelloVerb, ListenerKind, ListenerSettings, ProxyHeader,
    ProxySettings, Reply, ServerHandle, Session, SessionInfo, SmtpServer,
};

/// The infos the application was handed, step by step.
#[derive(Debug, Default)]
struct Seen {
    connected: Vec<SessionInfo>,
    secured: Vec<SessionInfo>,
    mails: Vec<SessionInfo>,
    messages: Vec<SessionInfo>,
}

#[derive(Clone, Debug, Default)]
struct Watcher(Arc<Mutex<Seen>>);

impl Watcher {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap()
    }
}

struct Conn(Watcher);

impl Handler for Watcher {
    type Session = Conn;
    async fn connect(&self, info: &SessionInfo) -> Result<Conn, Reply<'static>> {
        self.seen().connected.push(info.clone());
        Ok(Conn(self.clone()))
    }
}

impl Session for Conn {
    async fn starttls(&mut self, info: &SessionInfo) -> Decision {
        if info.ehlo.as_deref() == Some("refuse.test") {
            Decision::reply(454, EnhancedCode::new(4, 7, 0).unwrap(), "Not for you")
        } else {
            Decision::Accept
        }
    }

    async fn secured(&mut self, info: &SessionInfo) {
        self.0.seen().secured.push(info.clone());
    }

    async fn auth(
        &mut self,
        _: &SessionInfo,
        _: &str,
        creds: &smtpkit_tokio::Credentials,
    ) -> Decision {
        if let smtpkit_tokio::Credentials::Password { user, password, .. } = creds
            && user == "user"
            && password.expose() == "secret"
        {
            Decision::Accept
        } else {
            Decision::reply(535, EnhancedCode::AUTH_FAILED, "Bad credentials")
        }
    }

    async fn mail_from(
        &mut self,
        info: &SessionInfo,
        _: &smtpkit_tokio::ReversePath<'_>,
        _: &smtpkit_tokio::Parameters<'_>,
    ) -> Decision {
        self.0.seen().mails.push(info.clone());
        Decision::Accept
    }

    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        to: &smtpkit_tokio::ForwardPath<'_>,
        _: &smtpkit_tokio::Parameters<'_>,
    ) -> Decision {
        if to.to_string() == "<nobody@y.test>" {
            Decision::reply(550, EnhancedCode::new(5, 1, 1).unwrap(), "No such user")
        } else {
            Decision::Accept
        }
    }

    async fn data_end(&mut self, info: &SessionInfo) -> Decision {
        self.0.seen().messages.push(info.clone());
        Decision::Accept
    }
}

/// Listeners: 0 SMTP with STARTTLS, 1 implicit TLS, 2 submission (AUTH in plaintext), 3 SMTP
/// behind a PROXY from loopback.
async fn start(watcher: &Watcher) -> ServerHandle {
    let mut s = settings();
    s.allow_insecure_auth = true;
    // For a RCPT parameter to see in the envelope.
    s.extensions.dsn = true;
    let loopback = "127.0.0.0/8".parse().unwrap();
    let kinds = [
        ListenerKind::Smtp.into(),
        ListenerKind::Smtps.into(),
        ListenerKind::Submission.into(),
        ListenerSettings::new(ListenerKind::Smtp).proxy(ProxySettings::new(loopback)),
    ];
    let b = SmtpServer::builder(watcher.clone());
    let server = smtp_test::support::configure(b, s, &kinds, Some(pki().server.clone()));
    server.build().await.unwrap().spawn()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn starttls_facts_greeting_and_envelope() {
    // The server runs on the runtime's workers; the test thread is a blocking client.
    let rt = runtime();
    let w = Watcher::default();
    let handle = rt.block_on(start(&w));
    let mut c = blocking::Raw::greeted(handle.local_addrs()[0]);
    c.send("EHLO c.test\r\n");
    c.expect("250-");
    c.send("STARTTLS\r\n");
    c.expect("220 ");
    // The suite's client sends SNI `localhost`.
    c.upgrade(pki().client.clone());
    c.send("EHLO c.test\r\n");
    c.expect("250-");
    c.send("MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n");
    c.expect("250 ");
    c.send("RCPT TO:<b@y.test>\r\n");
    c.expect("250 ");
    c.send("RCPT TO:<bad@y.test> NOTIFY=NEVER\r\n");
    c.expect("250 ");
    // Refused: not part of the envelope.
    c.send("RCPT TO:<nobody@y.test>\r\n");
    c.expect("550 ");
    c.send("DATA\r\n");
    c.expect("354 ");
    c.send("hi\r\n.\r\n");
    c.expect("250 ");
    c.send("HELO c2.test\r\n");
    c.expect("250 ");
    c.send("MAIL FROM:<>\r\n");
    c.expect("250 ");
    c.send("RCPT TO:<d@y.test>\r\n");
    c.expect("250 ");
    c.send("DATA\r\n");
    c.expect("354 ");
    c.send("again\r\n.\r\n");
    c.expect("250 ");
    c.send("QUIT\r\n");
    c.expect("221 ");

    let seen = w.seen();
    assert!(seen.connected[0].tls_info.is_none() && !seen.connected[0].tls);
    let secured = &seen.secured[0];
    let tls = secured
        .tls_info
        .as_deref()
        .expect("TLS facts after STARTTLS");
    assert!(secured.tls);
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    assert_eq!(tls.version, Some(ProtocolVersion::TLSv1_3));
    assert!(matches!(
        tls.cipher_suite,
        Some(
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    ));
    assert!(tls.peer_certificates.is_empty());
    // STARTTLS forgets the greeting (RFC 3207 4.2).
    assert_eq!((secured.greeting, secured.ehlo.as_deref()), (None, None));

    let [first, second] = &seen.messages[..] else {
        panic!("two messages expected: {:?}", seen.messages);
    };
    assert_eq!(first.greeting, Some(HelloVerb::Ehlo));
    assert_eq!(first.transactions, 1);
    assert_eq!(first.tls_info.as_deref(), Some(tls));
    let env = first.envelope.as_ref().expect("envelope at data_end");
    assert_eq!(env.reverse_path, "a@x.test");
    assert_eq!(env.mail_params, "SIZE=100 BODY=8BITMIME SMTPUTF8");
    assert_eq!(env.size, Some(100));
    assert_eq!(env.body, Some(BodyType::EightBitMime));
    assert!(env.smtputf8);
    let rcpts: Vec<_> = env
        .recipients
        .iter()
        .map(|r| (r.forward_path.as_str(), r.params.as_str()))
        .collect();
    assert_eq!(rcpts, [("b@y.test", ""), ("bad@y.test", "NOTIFY=NEVER")]);

    // The first transaction's envelope is gone once it ended; the count stays.
    let second_mail = &seen.mails[1];
    assert_eq!(second_mail.envelope, None);
    assert_eq!(second_mail.transactions, 1);
    assert_eq!(seen.mails[0].transactions, 0);
    assert_eq!(second.greeting, Some(HelloVerb::Helo));
    assert_eq!(second.ehlo.as_deref(), Some("c2.test"));
    assert_eq!(second.transactions, 2);
    let env = second.envelope.as_ref().expect("envelope at data_end");
    assert_eq!(env.reverse_path, "");
    assert_eq!((env.size, env.body, env.smtputf8), (None, None, false));
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].forward_path, "d@y.test");
    drop(seen);
    rt.block_on(handle.shutdown(T));
}

#[test]
fn implicit_tls_facts_reach_connect() {
    let rt = runtime();
    let w = Watcher::default();
    let handle = rt.block_on(start(&w));
    let mut c = blocking::Raw::connect(handle.local_addrs()[1]);
    c.upgrade(pki().client.clone());
    c.expect("220 ");
    c.send("QUIT\r\n");
    c.expect("221 ");
    let seen = w.seen();
    let info = &seen.connected[0];
    let tls = info.tls_info.as_deref().expect("TLS facts at connect");
    assert!(info.tls);
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    assert_eq!(tls.version, Some(ProtocolVersion::TLSv1_3));
    assert!(tls.cipher_suite.is_some());
    // Implicit TLS is not an upgrade: `secured` is for STARTTLS only.
    assert!(seen.secured.is_empty());
    drop(seen);
    rt.block_on(handle.shutdown(T));
}

#[tokio::test]
async fn starttls_refused_by_the_hook() {
    let w = Watcher::default();
    let handle = start(&w).await;
    let mut c = Raw::greeted(handle.local_addrs()[0]).await;
    c.send("EHLO refuse.test\r\n").await;
    assert!(c.expect("250-").await.contains("STARTTLS"));
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "454 4.7.0 Not for you\r\n");
    // The session goes on in plaintext, greeting kept.
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("250 ").await;
    c.send("QUIT\r\n").await;
    c.expect("221 ").await;
    assert!(w.seen().secured.is_empty());
    handle.shutdown(T).await;
}

#[tokio::test]
async fn proxy_v2_source_and_tlvs() {
    let w = Watcher::default();
    let handle = start(&w).await;
    // PROXY v2, TCP over IPv4: 192.0.2.7:4242 -> 198.51.100.1:25, then AUTHORITY and UNIQUE_ID.
    let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
    body.extend_from_slice(&4242u16.to_be_bytes());
    body.extend_from_slice(&25u16.to_be_bytes());
    body.extend_from_slice(&[0x02, 0x00, 0x07]);
    body.extend_from_slice(b"mx.test");
    body.extend_from_slice(&[0x05, 0x00, 0x03, 9, 8, 7]);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    let mut c = Raw::connect(handle.local_addrs()[3]).await;
    c.send(&header).await;
    c.expect("220 ").await;
    c.send("QUIT\r\n").await;
    c.expect("221 ").await;
    let info = w.seen().connected[0].clone();
    assert_eq!(info.peer, "192.0.2.7:4242".parse().unwrap());
    assert!(matches!(
        info.proxy.as_deref(),
        Some(ProxyHeader::Proxied { version: 2, .. })
    ));
    let tlvs = info.proxy_tlvs.as_deref().expect("TLVs of the v2 header");
    assert_eq!(tlvs.authority.as_deref(), Some("mx.test"));
    assert_eq!(tlvs.unique_id.as_deref(), Some(&[9u8, 8, 7][..]));
    assert!(tlvs.ssl.is_none());
    handle.shutdown(T).await;
}

/// TLS configs from a fresh CA: a server that asks for (but does not require) a client
/// certificate, a client presenting one, and a client without one.
struct ClientCertPki {
    server: Arc<rustls::ServerConfig>,
    with_cert: Arc<rustls::ClientConfig>,
    without_cert: Arc<rustls::ClientConfig>,
    client_cert: CertificateDer<'static>,
}

fn client_cert_pki() -> ClientCertPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use smtpkit_server::tls::provider;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (cert.der().clone(), key)
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("client.test");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();
    let client = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(Arc::clone(&roots))
    };
    let with_cert = client()
        .with_client_auth_cert(vec![client_cert.clone()], client_key)
        .unwrap();
    ClientCertPki {
        server: Arc::new(server),
        with_cert: Arc::new(with_cert),
        without_cert: Arc::new(client().with_no_client_auth()),
        client_cert,
    }
}

#[test]
fn client_certificate_reaches_the_handler() {
    let rt = runtime();
    let w = Watcher::default();
    let pki = client_cert_pki();
    let handle = rt.block_on(async {
        let b = SmtpServer::builder(w.clone());
        let kinds = [ListenerKind::Smtps, ListenerKind::Smtp];
        let tls = Some(Arc::clone(&pki.server));
        let server = smtp_test::support::configure(b, settings(), &kinds, tls);
        server.build().await.unwrap().spawn()
    });
    // Implicit TLS with a certificate: the chain is in the info given to `connect`.
    let mut c = blocking::Raw::connect(handle.local_addrs()[0]);
    c.upgrade(Arc::clone(&pki.with_cert));
    c.expect("220 ");
    c.send("QUIT\r\n");
    c.expect("221 ");
    // STARTTLS without one: an empty chain in `secured`.
    let mut c = blocking::Raw::greeted(handle.local_addrs()[1]);
    c.send("EHLO c.test\r\nSTARTTLS\r\n");
    c.expect("250-");
    c.expect("220 ");
    c.upgrade(Arc::clone(&pki.without_cert));
    c.send("QUIT\r\n");
    c.expect("221 ");
    let seen = w.seen();
    let tls = seen.connected[0].tls_info.as_deref().expect("TLS facts");
    assert_eq!(
        tls.peer_certificates,
        std::slice::from_ref(&pki.client_cert)
    );
    let tls = seen.secured[0].tls_info.as_deref().expect("TLS facts");
    assert!(tls.peer_certificates.is_empty());
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    drop(seen);
    rt.block_on(handle.shutdown(T));
}
