//! Client-certificate verification per listener (Node `requestCert`/`rejectUnauthorized`),
//! on every adapter: a rustls client presents a certificate from the listener's CA, one from
//! a stranger, or none, after STARTTLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smtp_test::adapters::{Mio, Smol, Tokio};
use smtp_test::{
    Adapter, Call, ListenerKind, ListenerSettings, Pki, RecordingHandler, SERVER_NAME, ServerSpec,
    base_settings,
};
use smtpkit_server::tls::provider;
use smtpkit_server::{ClientAuth, ClientAuthMode};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A client certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

struct Certs {
    ca: CertificateDer<'static>,
    good: Identity,
    stranger: Identity,
}

fn certs() -> Certs {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let good = CertificateParams::new(vec!["client.test".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let good = (
        vec![good.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    );
    let key = KeyPair::generate().unwrap();
    let stranger = CertificateParams::new(vec!["stranger.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let stranger = (
        vec![stranger.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    );
    Certs {
        ca: ca.der().clone(),
        good,
        stranger,
    }
}

/// EHLO, STARTTLS, a handshake presenting `identity`, EHLO again: whether the encrypted
/// EHLO got its 250 (a refused certificate ends the connection instead).
fn session(port: u16, identity: Option<&Identity>) -> bool {
    let pki = Pki::get();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut line = String::new();
    let mut read_reply = |reader: &mut BufReader<TcpStream>| loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.clone();
        }
    };
    assert!(read_reply(&mut reader).starts_with("220"));
    (&tcp).write_all(b"EHLO c.test\r\nSTARTTLS\r\n").unwrap();
    assert!(read_reply(&mut reader).starts_with("250"));
    assert!(read_reply(&mut reader).starts_with("220"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // TLS 1.3: the client's certificate goes out with its last handshake flight, so a
    // refusal shows as an alert or a close on the first read after it.
    if tls.write_all(b"EHLO c.test\r\n").is_err() {
        return false;
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ENHANCEDSTATUSCODES\r\n") && Instant::now() < deadline {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let ok = got.starts_with(b"250");
    if ok {
        let _ = tls.write_all(b"QUIT\r\n");
    }
    ok
}

/// The calls' `Secured` entries, in session order: the client chain's length for each.
fn client_certs(handler: &RecordingHandler) -> Vec<usize> {
    let record = handler.record();
    (record.sessions.iter().flatten())
        .filter_map(|c| match c {
            Call::Secured { client_certs, .. } => Some(*client_certs),
            _ => None,
        })
        .collect()
}

fn check<A: Adapter>() {
    let certs = certs();
    let pki = Pki::get();
    for mode in [ClientAuthMode::Required, ClientAuthMode::Optional] {
        let handler = RecordingHandler::new();
        let auth = ClientAuth::new(vec![certs.ca.clone()], mode);
        let listener = ListenerSettings::new(ListenerKind::Smtp).client_auth(auth);
        let spec = ServerSpec::new(
            base_settings(),
            vec![listener],
            Some(Arc::clone(&pki.server)),
            handler.clone(),
        );
        let running = A::start(spec);
        let port = running.addrs[0].port();
        assert!(
            session(port, Some(&certs.good)),
            "[{}] {mode:?}: good",
            A::NAME
        );
        assert!(
            !session(port, Some(&certs.stranger)),
            "[{}] {mode:?}: stranger",
            A::NAME
        );
        let without = session(port, None);
        assert_eq!(
            without,
            mode == ClientAuthMode::Optional,
            "[{}] {mode:?}: none",
            A::NAME
        );
        drop(running);
        // The handler saw the good chain; a client without one (optional) as no certificate;
        // the refused handshakes never reached it.
        let want: &[usize] = match mode {
            ClientAuthMode::Required => &[1],
            ClientAuthMode::Optional => &[1, 0],
        };
        assert_eq!(client_certs(&handler), want, "[{}] {mode:?}", A::NAME);
    }
}

#[test]
fn tokio_verifies_client_certificates() {
    check::<Tokio>();
}

#[test]
fn smol_verifies_client_certificates() {
    check::<Smol>();
}

#[test]
fn mio_verifies_client_certificates() {
    check::<Mio>();
}
