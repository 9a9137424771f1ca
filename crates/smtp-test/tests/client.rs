//! The client driver (`smtpkit_server::client`) through each adapter's `client` module,
//! against each adapter's server: plain, STARTTLS with the suite's CA, AUTH PLAIN, a
//! pipelined envelope with a refused recipient, BDAT, LMTP per-recipient results (also over a
//! Unix socket), a server that stalls; and against Postfix's `smtp-sink`.
//!
//! The servers record what the application saw ([`RecordingHandler`]), so each test checks
//! both sides: what the client reports and what arrived.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_test::{
    Adapter, Call, ListenerKind, ListenerSettings, PASSWORD, Pki, RecordingHandler, Running,
    SERVER_NAME, ServerSettings, ServerSpec, USER, base_settings,
};
use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
use smtpkit_proto::client::{
    Capabilities, ClientConfig, ClientOptions, ClientTimeouts, Envelope, Recipient, Sasl,
};
use smtpkit_proto::server::Protocol;
use smtpkit_server::client::{Body, Delivery, Error, TlsMode, TlsSettings};

/// A client adapter, as blocking calls so one test body serves all three. Each call is
/// bounded by the core's deadlines, which `config` sets to seconds.
trait TestClient: Sized + std::fmt::Debug {
    fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error>;
    fn connect_unix(path: &Path, config: Arc<ClientConfig>) -> Result<Self, Error>;
    fn is_tls(&self) -> bool;
    fn capabilities(&self) -> &Capabilities;
    fn is_open(&self) -> bool;
    fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error>;
    fn send(&mut self, envelope: &Envelope<'_>, body: Body<'_>) -> Result<Delivery, Error>;
    fn quit(self) -> Result<(), Error>;

    /// Sends `body` from the null reverse path to `to`.
    fn send_null(&mut self, to: &[Recipient<'_>], body: &[u8]) -> Result<Delivery, Error> {
        self.send(&Envelope::new(ReversePath::Null, to), Body::Bytes(body))
    }
}

/// `smtpkit_tokio::client` on a current-thread runtime of its own.
#[derive(Debug)]
struct TokioClient {
    rt: tokio::runtime::Runtime,
    conn: smtpkit_tokio::client::Connection,
}

impl TestClient for TokioClient {
    fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = rt.block_on(smtpkit_tokio::client::connect(addr, config, tls))?;
        Ok(Self { rt, conn })
    }
    fn connect_unix(path: &Path, config: Arc<ClientConfig>) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = rt.block_on(smtpkit_tokio::client::connect_unix(path, config, None))?;
        Ok(Self { rt, conn })
    }
    fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }
    fn capabilities(&self) -> &Capabilities {
        self.conn.capabilities()
    }
    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
    fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error> {
        self.rt.block_on(self.conn.auth(sasl))
    }
    fn send(&mut self, envelope: &Envelope<'_>, body: Body<'_>) -> Result<Delivery, Error> {
        self.rt.block_on(self.conn.send(envelope, body))
    }
    fn quit(self) -> Result<(), Error> {
        self.rt.block_on(self.conn.quit())
    }
}

/// `smtpkit_smol::client` under `smol::block_on`.
#[derive(Debug)]
struct SmolClient(smtpkit_smol::client::Connection);

impl TestClient for SmolClient {
    fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        smol::block_on(smtpkit_smol::client::connect(addr, config, tls)).map(Self)
    }
    fn connect_unix(path: &Path, config: Arc<ClientConfig>) -> Result<Self, Error> {
        smol::block_on(smtpkit_smol::client::connect_unix(path, config, None)).map(Self)
    }
    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
    fn capabilities(&self) -> &Capabilities {
        self.0.capabilities()
    }
    fn is_open(&self) -> bool {
        self.0.is_open()
    }
    fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error> {
        smol::block_on(self.0.auth(sasl))
    }
    fn send(&mut self, envelope: &Envelope<'_>, body: Body<'_>) -> Result<Delivery, Error> {
        smol::block_on(self.0.send(envelope, body))
    }
    fn quit(self) -> Result<(), Error> {
        smol::block_on(self.0.quit())
    }
}

/// `smtpkit_mio::client`, blocking already.
type MioClient = smtpkit_mio::client::Connection;

impl TestClient for MioClient {
    fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        tls: Option<TlsSettings>,
    ) -> Result<Self, Error> {
        Self::connect(addr, config, tls)
    }
    fn connect_unix(path: &Path, config: Arc<ClientConfig>) -> Result<Self, Error> {
        Self::connect_unix(path, config, None)
    }
    fn is_tls(&self) -> bool {
        self.is_tls()
    }
    fn capabilities(&self) -> &Capabilities {
        self.capabilities()
    }
    fn is_open(&self) -> bool {
        self.is_open()
    }
    fn auth(&mut self, sasl: &Sasl<'_>) -> Result<(), Error> {
        self.auth(sasl)
    }
    fn send(&mut self, envelope: &Envelope<'_>, body: Body<'_>) -> Result<Delivery, Error> {
        self.send(envelope, body)
    }
    fn quit(self) -> Result<(), Error> {
        self.quit()
    }
}

/// Each recipient's reply code after the message (LMTP), 0 where there was no reply.
fn reply_codes(d: &Delivery) -> Vec<u16> {
    d.recipients
        .iter()
        .map(|r| match r {
            Ok(r) => r.code().get(),
            Err(e) => e.reply().map_or(0, |r| r.code().get()),
        })
        .collect()
}

fn config(f: impl FnOnce(&mut ClientOptions)) -> Arc<ClientConfig> {
    // Every wait of a test is bounded by these, so a hung client fails instead of hanging.
    let t = Duration::from_secs(10);
    let mut o = ClientOptions {
        hostname: "client.test".into(),
        timeouts: ClientTimeouts {
            greeting: t,
            mail: t,
            rcpt: t,
            data_start: t,
            data_block: t,
            data_end: t,
            command: t,
        },
        ..ClientOptions::default()
    };
    f(&mut o);
    Arc::new(ClientConfig::new(o).expect("client config"))
}

fn mailbox(s: &str) -> Mailbox<'_> {
    Mailbox::parse(s).expect("valid mailbox")
}

fn recipients<'a>(addrs: &[&'a str]) -> Vec<Recipient<'a>> {
    addrs
        .iter()
        .map(|a| Recipient::new(ForwardPath::Mailbox(mailbox(a))))
        .collect()
}

fn ca_tls(mode: TlsMode) -> TlsSettings {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(Pki::get().ca_der.clone()).expect("CA root");
    TlsSettings::with_roots(roots, SERVER_NAME, mode).expect("server name")
}

fn start<A: Adapter>(kind: ListenerKind, tls: bool) -> (Running, RecordingHandler) {
    start_with::<A>(kind, tls, |_| {})
}

fn start_with<A: Adapter>(
    kind: ListenerKind,
    tls: bool,
    settings: impl FnOnce(&mut ServerSettings),
) -> (Running, RecordingHandler) {
    let handler = RecordingHandler::new();
    let tls = tls.then(|| Arc::clone(&Pki::get().server));
    let mut s = base_settings();
    settings(&mut s);
    let spec = ServerSpec::new(s, vec![ListenerSettings::new(kind)], tls, handler.clone());
    (A::start(spec), handler)
}

/// The bodies the application received, one per accepted message, over every session.
fn bodies(h: &RecordingHandler) -> Vec<Vec<u8>> {
    h.record()
        .sessions
        .iter()
        .flatten()
        .filter_map(|c| match c {
            Call::DataEnd(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// The sessions' calls as text, to search.
fn calls(h: &RecordingHandler) -> Vec<String> {
    h.record().render().into_iter().flatten().collect()
}

/// Two messages over one plaintext connection, the second with lines that need
/// dot-stuffing and a bare LF; then QUIT.
fn plain<C: TestClient, A: Adapter>() {
    let (mut server, h) = start::<A>(ListenerKind::Smtp, false);
    let addr = server.addrs[0];
    {
        let mut conn = C::connect(addr, config(|_| {}), None).expect("connect");
        assert!(!conn.is_tls());
        assert!(conn.capabilities().pipelining);
        let to = recipients(&["a@example.test", "b@example.test"]);
        let from = ReversePath::Mailbox(mailbox("s@example.org"));
        let d = conn
            .send(
                &Envelope::new(from, &to),
                Body::Bytes(b"Subject: one\r\n\r\nHi\r\n"),
            )
            .expect("first message");
        assert_eq!(d.delivered(), 2);
        let d = conn
            .send_null(
                &to[..1],
                b"Subject: two\r\n\r\n.leading dot\r\n.\r\nbare\nlf",
            )
            .expect("second message");
        assert!(d.all_delivered(), "{d:?}");
        conn.quit().expect("quit");
    }
    // Shutting down waits for the session's end, so its `close` is recorded.
    server.shutdown(Duration::from_secs(5));
    assert_eq!(
        bodies(&h),
        [
            b"Subject: one\r\n\r\nHi\r\n".to_vec(),
            b"Subject: two\r\n\r\n.leading dot\r\n.\r\nbare\r\nlf\r\n".to_vec()
        ]
    );
    assert!(
        calls(&h).contains(&"close quit".to_string()),
        "{:?}",
        calls(&h)
    );
}

/// STARTTLS required, verified against the suite's CA with the SNI name apart from the
/// address; opportunistic and required against a server without TLS.
fn starttls<C: TestClient, A: Adapter>() {
    let (tls_server, h) = start::<A>(ListenerKind::Smtp, true);
    let (plain_server, _) = start::<A>(ListenerKind::Smtp, false);
    {
        let mut conn = C::connect(
            tls_server.addrs[0],
            config(|_| {}),
            Some(ca_tls(TlsMode::Required)),
        )
        .expect("STARTTLS");
        assert!(conn.is_tls());
        assert!(
            !conn.capabilities().starttls,
            "capabilities are those after TLS"
        );
        let to = recipients(&["a@example.test"]);
        let d = conn.send_null(&to, b"secret\r\n").expect("send");
        assert!(d.all_delivered());
        conn.quit().expect("quit");

        let conn = C::connect(
            plain_server.addrs[0],
            config(|_| {}),
            Some(ca_tls(TlsMode::Opportunistic)),
        )
        .expect("opportunistic falls back to plaintext");
        assert!(!conn.is_tls());
        let e = C::connect(
            plain_server.addrs[0],
            config(|_| {}),
            Some(ca_tls(TlsMode::Required)),
        )
        .expect_err("required TLS is not offered");
        assert!(
            matches!(e, Error::TlsUnavailable) && e.is_temporary(),
            "{e}"
        );

        // A certificate for another name fails the handshake.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(Pki::get().ca_der.clone()).expect("CA root");
        let wrong = TlsSettings::with_roots(roots, "other.test", TlsMode::Required).expect("name");
        let e =
            C::connect(tls_server.addrs[0], config(|_| {}), Some(wrong)).expect_err("wrong name");
        assert!(matches!(e, Error::Tls(_)), "{e}");
    }
    let c = calls(&h);
    assert!(
        c.contains(&"secured localhost TLSv1.3".to_string()),
        "{c:?}"
    );
    assert_eq!(bodies(&h), [b"secret\r\n".to_vec()]);
}

/// Submission with STARTTLS and AUTH PLAIN: a wrong password is a permanent refusal that
/// leaves the connection usable; the right one lets MAIL through as that user.
fn auth<C: TestClient, A: Adapter>() {
    let (server, h) = start::<A>(ListenerKind::Submission, true);
    {
        let mut conn = C::connect(
            server.addrs[0],
            config(|_| {}),
            Some(ca_tls(TlsMode::Required)),
        )
        .expect("connect");
        let e = conn
            .auth(&Sasl::Plain {
                user: USER,
                password: "wrong",
            })
            .expect_err("wrong password");
        assert_eq!(e.reply().map(|r| r.code().get()), Some(535));
        assert!(e.is_permanent() && conn.is_open());
        conn.auth(&Sasl::Plain {
            user: USER,
            password: PASSWORD,
        })
        .expect("auth");
        let to = recipients(&["a@example.test"]);
        let from = ReversePath::Mailbox(mailbox("user@example.org"));
        let d = conn
            .send(&Envelope::new(from, &to), Body::Bytes(b"x\r\n"))
            .expect("send");
        assert!(d.all_delivered());
        conn.quit().expect("quit");
    }
    let c = calls(&h);
    assert!(c.contains(&"auth PLAIN user refused".to_string()), "{c:?}");
    assert!(
        c.contains(&"mail <user@example.org> as user".to_string()),
        "{c:?}"
    );
}

/// SMTPS (implicit TLS, port 465 style) with AUTH LOGIN.
fn implicit_tls<C: TestClient, A: Adapter>() {
    let (server, h) = start::<A>(ListenerKind::Smtps, true);
    {
        let mut conn = C::connect(
            server.addrs[0],
            config(|_| {}),
            Some(ca_tls(TlsMode::Implicit)),
        )
        .expect("connect");
        assert!(conn.is_tls());
        conn.auth(&Sasl::Login {
            user: USER,
            password: PASSWORD,
        })
        .expect("auth");
        let to = recipients(&["a@example.test"]);
        let d = conn.send_null(&to, b"465\r\n").expect("send");
        assert!(d.all_delivered());
        conn.quit().expect("quit");
    }
    let c = calls(&h);
    assert!(c.contains(&"connect smtps tls".to_string()), "{c:?}");
    assert_eq!(bodies(&h), [b"465\r\n".to_vec()]);
}

/// The server's application never answers a RCPT, so the server holds even the replies
/// before it (it writes a pipelined group's replies together): the client's deadline for the
/// MAIL reply ends the session, and every recipient shares that temporary failure.
fn hung_rcpt<C: TestClient, A: Adapter>() {
    // The server cuts its hung handler soon after the client gave up, so it stops quickly.
    let (server, _h) = start_with::<A>(ListenerKind::Smtp, false, |s| {
        s.timeouts.decision = Duration::from_millis(600);
    });
    let started = Instant::now();
    {
        let config = config(|o| {
            o.timeouts.mail = Duration::from_millis(300);
            o.timeouts.rcpt = Duration::from_millis(300);
        });
        let mut conn = C::connect(server.addrs[0], config, None).expect("connect");
        let to = recipients(&["a@example.test", "hang@example.test"]);
        let e = conn
            .send_null(&to, b"x\r\n")
            .expect_err("no final answer for anyone");
        assert!(matches!(e, Error::Timeout), "{e}");
        assert!(!conn.is_open());
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// A pipelined envelope where one recipient is refused: that one fails permanently, the
/// others get the message; a transaction with every recipient refused is reset and the
/// connection goes on; a refused DATA (452) is a temporary failure.
fn refused_recipient<C: TestClient, A: Adapter>() {
    let (server, h) = start::<A>(ListenerKind::Smtp, false);
    {
        let mut conn = C::connect(server.addrs[0], config(|_| {}), None).expect("connect");
        let to = recipients(&["a@example.test", "reject@example.test", "b@example.test"]);
        let d = conn.send_null(&to, b"m1\r\n").expect("send");
        assert!(d.recipients[0].is_ok() && d.recipients[2].is_ok(), "{d:?}");
        let e = d.recipients[1].as_ref().expect_err("refused");
        assert_eq!(e.reply().map(|r| r.code().get()), Some(550));
        assert!(e.is_permanent());

        let none = recipients(&["reject@example.test", "Green@example.test"]);
        let d = conn.send_null(&none, b"never\r\n").expect("send");
        assert_eq!(d.delivered(), 0);
        assert!(
            d.recipients
                .iter()
                .all(|r| r.as_ref().is_err_and(Error::is_permanent))
        );

        let busy = ReversePath::Mailbox(mailbox("busy@example.org"));
        let d = conn
            .send(&Envelope::new(busy, &to[..1]), Body::Bytes(b"never\r\n"))
            .expect("send");
        let e = d.recipients[0].as_ref().expect_err("DATA refused");
        assert_eq!(e.reply().map(|r| r.code().get()), Some(452));
        assert_eq!(d.temporary_failures().collect::<Vec<_>>(), [0]);

        let d = conn
            .send_null(&to[..1], b"m2\r\n")
            .expect("send after failures");
        assert!(d.all_delivered());
        conn.quit().expect("quit");
    }
    assert_eq!(bodies(&h), [b"m1\r\n".to_vec(), b"m2\r\n".to_vec()]);
}

/// BDAT: content from a reader, larger than one chunk, goes byte for byte (no stuffing, bare
/// LF kept).
fn bdat<C: TestClient, A: Adapter>(
    reader: impl Fn(Vec<u8>) -> Box<dyn futures_io::AsyncRead + Send + Unpin>,
) {
    let (server, h) = start::<A>(ListenerKind::Smtp, false);
    let mut body = Vec::new();
    for i in 0..2000 {
        body.extend_from_slice(format!(".line {i}\n").as_bytes());
    }
    let sent = body.clone();
    {
        let mut conn =
            C::connect(server.addrs[0], config(|o| o.chunking = true), None).expect("connect");
        assert!(conn.capabilities().chunking);
        let to = recipients(&["a@example.test"]);
        let mut r = reader(sent);
        let d = conn
            .send(
                &Envelope::new(ReversePath::Null, &to),
                Body::Reader(&mut *r),
            )
            .expect("send");
        assert!(d.all_delivered(), "{d:?}");
        conn.quit().expect("quit");
    }
    assert_eq!(bodies(&h), [body]);
}

/// LMTP: one result per recipient after the message.
fn lmtp<C: TestClient, A: Adapter>() {
    let (server, h) = start::<A>(ListenerKind::Lmtp, false);
    {
        let mut conn = C::connect(
            server.addrs[0],
            config(|o| o.protocol = Protocol::Lmtp),
            None,
        )
        .expect("connect");
        let to = recipients(&[
            "a@example.test",
            "full@example.test",
            "reject@example.test",
            "b@example.test",
        ]);
        let d = conn.send_null(&to, b"lmtp\r\n").expect("send");
        let codes = reply_codes(&d);
        assert_eq!(codes, [250, 452, 550, 250]);
        assert_eq!(d.temporary_failures().collect::<Vec<_>>(), [1]);
        conn.quit().expect("quit");
    }
    assert!(calls(&h).iter().any(|c| c == "ehlo client.test"));
}

/// LMTP over a Unix socket (`connect_unix`), as Dovecot's LMTP usually listens: the test
/// forwards one connection from the socket to the tokio adapter's LMTP listener.
fn unix_socket<C: TestClient>() {
    let (server, h) = start::<smtp_test::adapters::Tokio>(ListenerKind::Lmtp, false);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lmtp.sock");
    let listener = UnixListener::bind(&path).expect("bind the Unix socket");
    let target = server.addrs[0];
    let forwarder = std::thread::spawn(move || {
        let (unix, _) = listener.accept().expect("accept");
        let tcp = TcpStream::connect(target).expect("connect to the LMTP listener");
        let (mut unix_in, mut tcp_out) = (
            unix.try_clone().expect("clone"),
            tcp.try_clone().expect("clone"),
        );
        let upstream = std::thread::spawn(move || {
            let _ = std::io::copy(&mut unix_in, &mut tcp_out);
            let _ = tcp_out.shutdown(std::net::Shutdown::Write);
        });
        let (mut tcp_in, mut unix_out) = (tcp, unix);
        let _ = std::io::copy(&mut tcp_in, &mut unix_out);
        let _ = unix_out.shutdown(std::net::Shutdown::Write);
        let _ = upstream.join();
    });
    {
        let mut conn =
            C::connect_unix(&path, config(|o| o.protocol = Protocol::Lmtp)).expect("connect");
        let to = recipients(&["a@example.test", "full@example.test"]);
        let d = conn
            .send_null(&to, b"over a unix socket\r\n")
            .expect("send");
        let codes = reply_codes(&d);
        assert_eq!(codes, [250, 452]);
        conn.quit().expect("quit");
    }
    forwarder.join().expect("forwarder");
    assert_eq!(bodies(&h), [b"over a unix socket\r\n".to_vec()]);
    // A socket nobody listens on is an IO error, which a queue retries.
    drop(server);
    let missing = dir.path().join("nobody.sock");
    let e = C::connect_unix(&missing, config(|_| {})).expect_err("no server there");
    assert!(matches!(e, Error::Io(_)) && e.is_temporary(), "{e:?}");
}

/// A server that accepts and never says anything: the greeting deadline ends it.
fn stalled<C: TestClient>() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let started = Instant::now();
    let config = config(|o| o.timeouts.greeting = Duration::from_millis(300));
    let e = C::connect(addr, config, None).expect_err("no greeting");
    assert!(matches!(e, Error::Timeout) && e.is_temporary(), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(listener);
}

/// Postfix's `smtp-sink` on a free loopback port, killed when dropped.
struct Sink {
    child: std::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Sink {
    const PATH: &str = "/usr/sbin/smtp-sink";

    /// Starts `smtp-sink` with `args`, dumping each transaction into a scratch directory.
    /// Panics when it is not installed: CI installs `postfix` (`.ci/run`).
    fn start(args: &[&str]) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        assert!(
            std::path::Path::new(Self::PATH).exists(),
            "{} is missing: install Debian's postfix package (see .ci/run)",
            Self::PATH
        );
        let dir = tempfile::tempdir().expect("scratch dir");
        // As root, smtp-sink must drop to another user, who then writes the dumps.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = std::process::Command::new(Self::PATH);
        if root {
            cmd.args(["-u", "nobody"]);
        }
        let template = format!("{}/msg.", dir.path().display());
        cmd.args(["-d", &template])
            .args(args)
            .arg(addr.to_string())
            .arg("16")
            .stdout(std::process::Stdio::null());
        let child = cmd.spawn().expect("start smtp-sink");
        let sink = Self { child, addr, dir };
        // Bounded: 100 tries 20 ms apart.
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return sink;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("smtp-sink did not start on {addr}");
    }

    /// The content of every dumped transaction.
    fn dumps(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("dump dir")
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        out.sort();
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Against Postfix's `smtp-sink`: two messages on one connection (pipelined, dot-stuffed),
/// then a sink that refuses RCPT with 4xx and offers no PIPELINING (`-r RCPT`): every
/// recipient fails temporarily; and LMTP (`-L`).
fn smtp_sink<C: TestClient>() {
    let sink = Sink::start(&[]);
    let soft = Sink::start(&["-r", "RCPT"]);
    let lmtp = Sink::start(&["-L"]);
    {
        let mut conn = C::connect(sink.addr, config(|_| {}), None).expect("connect");
        assert!(conn.capabilities().pipelining);
        let to = recipients(&["a@example.test", "b@example.test"]);
        for body in [
            "Subject: one\r\n\r\n.first\r\n",
            "Subject: two\r\n\r\nsecond\r\n",
        ] {
            let from = ReversePath::Mailbox(mailbox("s@example.org"));
            let d = conn
                .send(&Envelope::new(from, &to), Body::Bytes(body.as_bytes()))
                .expect("send");
            assert!(d.all_delivered(), "{d:?}");
        }
        conn.quit().expect("quit");

        let mut conn = C::connect(soft.addr, config(|_| {}), None).expect("connect");
        assert!(!conn.capabilities().pipelining);
        let d = conn.send_null(&to, b"x\r\n").expect("send");
        assert_eq!(d.temporary_failures().collect::<Vec<_>>(), [0, 1], "{d:?}");
        conn.quit().expect("quit");

        let config = config(|o| o.protocol = Protocol::Lmtp);
        let mut conn = C::connect(lmtp.addr, config, None).expect("connect");
        let d = conn.send_null(&to, b"x\r\n").expect("send");
        assert_eq!(d.delivered(), 2, "{d:?}");
        conn.quit().expect("quit");
    }
    // smtp-sink writes a dump when it has answered the end of data; give it a moment.
    let mut dumps = Vec::new();
    for _ in 0..100 {
        dumps = sink.dumps();
        if dumps.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    // The dump has the envelope as headers and LF line ends; the stuffed dot is removed.
    let ends =
        |d: &String, body: &str| d.contains("X-Rcpt-Args: <b@example.test>\n") && d.ends_with(body);
    assert!(
        dumps.iter().any(|d| ends(d, "Subject: one\n\n.first\n\n")),
        "{dumps:?}"
    );
    assert!(
        dumps.iter().any(|d| ends(d, "Subject: two\n\nsecond\n\n")),
        "{dumps:?}"
    );
}

/// A one-connection server on a thread that answers each command line with the next of
/// `replies` (after writing `greeting`), then closes.
fn scripted(greeting: &'static [u8], replies: &'static [&'static [u8]]) -> SocketAddr {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = tcp.write_all(greeting);
        let mut reader = BufReader::new(tcp.try_clone().expect("clone"));
        let mut line = Vec::new();
        for reply in replies {
            line.clear();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let _ = tcp.write_all(reply);
        }
    });
    addr
}

/// The server answers MAIL with 421 and closes: every recipient shares that temporary
/// refusal and the connection is gone. A malformed reply is a protocol error. A 554 greeting
/// is a refusal.
fn broken_servers<C: TestClient>() {
    let to = recipients(&["a@example.test"]);
    let no_pipelining: &[&[u8]] = &[b"250-mx\r\n250 8BITMIME\r\n", b"421 4.3.2 going away\r\n"];
    let addr = scripted(b"220 mx ESMTP\r\n", no_pipelining);
    let mut conn = C::connect(addr, config(|_| {}), None).expect("connect");
    let e = conn.send_null(&to, b"x\r\n").expect_err("421");
    assert_eq!(e.reply().map(|r| r.code().get()), Some(421), "{e}");
    assert!(e.is_temporary() && !conn.is_open());

    let addr = scripted(b"220 mx ESMTP\r\n", &[b"250 mx\r\n", b"25O oops\r\n"]);
    let mut conn = C::connect(addr, config(|_| {}), None).expect("connect");
    let e = conn.send_null(&to, b"x\r\n").expect_err("malformed");
    assert!(matches!(e, Error::Protocol(_)) && e.is_temporary(), "{e}");

    let addr = scripted(b"554 5.7.1 go away\r\n", &[b"221 bye\r\n"]);
    let e = C::connect(addr, config(|_| {}), None).expect_err("refused greeting");
    assert_eq!(e.reply().map(|r| r.code().get()), Some(554), "{e}");
    assert!(e.is_permanent());
}

macro_rules! client_suite {
    ($module:ident, $side:ty, $reader:expr) => {
        mod $module {
            use super::*;
            macro_rules! against {
                ($server:ident, $adapter:ty) => {
                    mod $server {
                        use super::*;
                        #[test]
                        fn plain() {
                            super::super::plain::<$side, $adapter>()
                        }
                        #[test]
                        fn starttls() {
                            super::super::starttls::<$side, $adapter>()
                        }
                        #[test]
                        fn auth() {
                            super::super::auth::<$side, $adapter>()
                        }
                        #[test]
                        fn refused_recipient() {
                            super::super::refused_recipient::<$side, $adapter>()
                        }
                        #[test]
                        fn bdat() {
                            super::super::bdat::<$side, $adapter>($reader)
                        }
                        #[test]
                        fn implicit_tls() {
                            super::super::implicit_tls::<$side, $adapter>()
                        }
                        #[test]
                        fn hung_rcpt() {
                            super::super::hung_rcpt::<$side, $adapter>()
                        }
                        #[test]
                        fn lmtp() {
                            super::super::lmtp::<$side, $adapter>()
                        }
                    }
                };
            }
            against!(tokio_server, smtp_test::adapters::Tokio);
            against!(smol_server, smtp_test::adapters::Smol);
            against!(mio_server, smtp_test::adapters::Mio);
            #[test]
            fn stalled() {
                super::stalled::<$side>()
            }
            #[test]
            fn unix_socket() {
                super::unix_socket::<$side>()
            }
            #[test]
            fn smtp_sink() {
                super::smtp_sink::<$side>()
            }
            #[test]
            fn broken_servers() {
                super::broken_servers::<$side>()
            }
        }
    };
}

client_suite!(tokio_client, TokioClient, |b: Vec<u8>| Box::new(
    smtpkit_tokio::client::BodyReader(std::io::Cursor::new(b))
));

client_suite!(smol_client, SmolClient, |b: Vec<u8>| Box::new(
    futures_lite::io::Cursor::new(b)
));

client_suite!(mio_client, MioClient, |b: Vec<u8>| Box::new(
    smtpkit_mio::client::BodyReader(std::io::Cursor::new(b))
));
