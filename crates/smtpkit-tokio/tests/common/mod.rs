//! Shared test fixtures: a recording handler, certificates, a raw line client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtpkit_tokio::tls::{ReloadableCert, certified_key, rustls_config};
use smtpkit_tokio::{
    CloseReason, Credentials, Decision, EnhancedCode, ForwardPath, Handler, ListenerSettings,
    Parameters, Reply, ReversePath, ServerHandle, ServerSettings, Session, SessionInfo, SmtpServer,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Every await in the tests is bounded by this.
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

impl Handler for Recorder {
    type Session = Conn;
    async fn connect(&self, info: &SessionInfo) -> Result<Conn, Reply<'static>> {
        self.store().peers.push(info.peer);
        Ok(Conn {
            store: self.clone(),
            current: Message::default(),
        })
    }
}

impl Session for Conn {
    async fn auth(&mut self, _: &SessionInfo, creds: &Credentials) -> Decision {
        if creds.authcid == "user" && creds.password.expose() == "secret" {
            Decision::Accept
        } else {
            Decision::reply(535, EnhancedCode::new(5, 7, 8).unwrap(), "Bad credentials")
        }
    }
    async fn mail_from(
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
    async fn rcpt_to(
        &mut self,
        _: &SessionInfo,
        to: &ForwardPath<'_>,
        _: &Parameters<'_>,
    ) -> Decision {
        self.current.to.push(to.to_string());
        Decision::Accept
    }
    async fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        self.current.body.extend_from_slice(chunk);
        Ok(())
    }
    async fn data_end(&mut self, _: &SessionInfo) -> Decision {
        let m = std::mem::take(&mut self.current);
        self.store.store().messages.push(m);
        Decision::Accept
    }
    async fn data_aborted(&mut self, _: &SessionInfo) {
        self.store.store().aborted += 1;
    }
    async fn reset(&mut self, _: &SessionInfo) {
        self.current = Message::default();
    }
    async fn close(&mut self, _: &SessionInfo, reason: CloseReason) {
        self.store.store().closes.push(reason);
    }
}

/// A CA and a `localhost` certificate it signed.
pub struct Pki {
    pub ca_pem: String,
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
        ca_pem: ca.pem(),
        config,
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

pub async fn start(
    settings: ServerSettings,
    kinds: &[impl Into<ListenerSettings> + Clone],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Running {
    let rec = Recorder::default();
    let mut b = SmtpServer::builder(rec.clone()).settings(settings);
    for kind in kinds {
        b = b.listener("127.0.0.1:0".parse::<SocketAddr>().unwrap(), kind.clone());
    }
    if let Some(tls) = tls {
        b = b.tls(tls);
    }
    let handle = b.build().await.unwrap().spawn();
    Running { handle, rec }
}

/// A line-oriented raw client.
pub struct Raw {
    pub io: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Self {
            io: BufReader::new(tcp),
        }
    }

    pub async fn send(&mut self, s: impl AsRef<[u8]>) {
        tokio::time::timeout(T, self.io.get_mut().write_all(s.as_ref()))
            .await
            .unwrap()
            .unwrap();
    }

    /// One whole reply (all its lines), or "" at EOF.
    pub async fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap_or(0);
            out.push_str(&line);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    /// Reads a reply and checks its start.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    pub async fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        c.expect("220 ").await;
        c
    }

    /// Reads until EOF; true if the server closed within the timeout.
    pub async fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(
            T,
            tokio::io::AsyncReadExt::read_to_end(&mut self.io, &mut sink),
        )
        .await
        .is_ok()
    }
}

/// Waits until `f` holds, polling; panics after the timeout.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
