//! Shared test fixtures: a recording blocking handler, certificates, a std line client.

#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smtpkit_mio::tls::{ReloadableCert, certified_key, rustls_config};
use smtpkit_mio::{
    Blocking, BlockingHandler, BlockingSession, CloseReason, Credentials, Decision, EnhancedCode,
    ForwardPath, ListenerSettings, Parameters, Reply, ReversePath, ServerHandle, ServerSettings,
    SessionInfo, SmtpServer,
};

/// Every blocking read in the tests is bounded by this.
pub const T: Duration = Duration::from_secs(10);

/// A received message.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub from: String,
    pub to: Vec<String>,
    pub body: Vec<u8>,
    pub user: Option<String>,
    pub tls: bool,
}

#[derive(Debug, Default)]
pub struct Store {
    pub messages: Vec<Message>,
    pub aborted: usize,
    pub peers: Vec<SocketAddr>,
    pub closes: Vec<CloseReason>,
}

#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Store>>);

impl Recorder {
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap()
    }
}

pub struct Conn {
    store: Recorder,
    current: Message,
}

impl BlockingHandler for Recorder {
    type Session = Conn;
    fn connect(&self, info: &SessionInfo) -> Result<Conn, Reply<'static>> {
        self.store().peers.push(info.peer);
        Ok(Conn {
            store: self.clone(),
            current: Message::default(),
        })
    }
}

impl BlockingSession for Conn {
    fn auth(&mut self, _: &SessionInfo, creds: &Credentials) -> Decision {
        if creds.authcid == "user" && creds.password.expose() == "secret" {
            Decision::Accept
        } else {
            Decision::reply(535, EnhancedCode::new(5, 7, 8).unwrap(), "Bad credentials")
        }
    }
    fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.current.from = from.to_string();
        self.current.user = info.authenticated.clone();
        self.current.tls = info.tls;
        Decision::Accept
    }
    fn rcpt_to(&mut self, _: &SessionInfo, to: &ForwardPath<'_>, _: &Parameters<'_>) -> Decision {
        self.current.to.push(to.to_string());
        Decision::Accept
    }
    fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.current.body.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, _: &SessionInfo) -> Decision {
        let m = std::mem::take(&mut self.current);
        self.store.store().messages.push(m);
        Decision::Accept
    }
    fn data_aborted(&mut self, _: &SessionInfo) {
        self.store.store().aborted += 1;
    }
    fn reset(&mut self, _: &SessionInfo) {
        self.current = Message::default();
    }
    fn close(&mut self, _: &SessionInfo, reason: CloseReason) {
        self.store.store().closes.push(reason);
    }
}

/// A CA and a `localhost` certificate it signed.
pub struct Pki {
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub config: Arc<rustls::ServerConfig>,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = certified_key(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let config = rustls_config(Arc::new(ReloadableCert::new(key))).unwrap();
    Pki {
        ca_der: ca.der().clone(),
        config,
    }
}

impl Pki {
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(smtpkit_mio::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Fast settings for tests.
pub fn settings() -> ServerSettings {
    let mut s = ServerSettings {
        hostname: "mx.test".into(),
        max_per_ip: 1000,
        ..Default::default()
    };
    s.timeouts.command = Duration::from_secs(3);
    s.timeouts.data_block = Duration::from_secs(3);
    s
}

pub struct Running {
    pub handle: ServerHandle,
    pub rec: Recorder,
}

impl Running {
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.handle.local_addrs()[i]
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Leave no threads behind between tests.
        self.handle.shutdown(Duration::from_millis(100));
    }
}

pub fn start(
    settings: ServerSettings,
    kinds: &[impl Into<ListenerSettings> + Clone],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let rec = Recorder::default();
    let mut b = SmtpServer::builder(Blocking(rec.clone()))
        .settings(settings)
        .threads(2.try_into().unwrap());
    for kind in kinds {
        b = b.listener("127.0.0.1:0".parse::<SocketAddr>().unwrap(), kind.clone());
    }
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    let handle = b.build().unwrap().start().unwrap();
    Running { handle, rec }
}

/// The client's stream: plain TCP, then TLS after STARTTLS (or from the start).
pub enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Only while switching to TLS.
    Closed,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Closed => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::Closed => Ok(()),
        }
    }
}

/// A line-oriented raw client; every read is bounded by [`T`].
pub struct Raw {
    pub io: Io,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect_timeout(&addr, T).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        tcp.set_write_timeout(Some(T)).unwrap();
        Self {
            io: Io::Plain(tcp),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, s: impl AsRef<[u8]>) {
        self.io.write_all(s.as_ref()).unwrap();
        self.io.flush().unwrap();
    }

    /// Switches to TLS (after a 220 to STARTTLS, or at once for implicit TLS).
    pub fn upgrade(&mut self, client: Arc<rustls::ClientConfig>) {
        assert!(self.buf.is_empty(), "bytes buffered before TLS");
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Closed) else {
            panic!("already TLS");
        };
        let conn = rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        self.io = Io::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
    }

    /// One line with its CRLF, or "" at EOF (or on a reset).
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk) {
                Ok(0) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    panic!("reply timed out")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                }
            }
        }
    }

    /// One whole reply (all its lines), or "" at EOF.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            out.push_str(&line);
            if line.is_empty() || line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    /// Reads a reply and checks its start.
    pub fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    pub fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr);
        c.expect("220 ");
        c
    }

    /// Everything up to EOF (bounded by the read timeout).
    pub fn rest(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return out;
            }
            out.push_str(&line);
        }
    }
}

/// Waits until `f` holds, polling; panics after the timeout.
pub fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}
