//! `smtpd`: receive mail, store it in Maildirs, log every session and message.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime error, 2 for a bad configuration
//! (including a `[privileges]` account that does not exist), 3 when a listener cannot bind
//! (port in use, permission) or an inherited socket matches no listener, 4 when the TLS
//! certificate or key cannot be loaded, 5 when the switch to the `[privileges]` account fails.
//!
//! Startup order: sockets first (inherited from systemd or bound), then the switch away from
//! root, and only then the first thread (the log writer, the runtime): see
//! `smtpd::privilege`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use smtpd::config::{self, Config, ListenerKind, LogFormat};
use smtpd::receiver::{Receiver, State};
use smtpkit_tokio::{Metrics, SmtpServer};
use tracing::{error, info, warn};

/// A mail server that receives mail over SMTP/LMTP and stores it in Maildir mailboxes.
///
/// With no options it runs on a built-in configuration: it listens on 127.0.0.1:2525, accepts
/// mail for any address at any domain, and stores each message in
/// ./maildir/<domain>/<local-part>/new/. It never relays.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML configuration file (see crates/smtpd/config/example.toml). Default: the built-in one.
    #[arg(short, long, env = "SMTPD_CONFIG")]
    config: Option<PathBuf>,
    /// Listen on this address with plain SMTP, instead of the configured listeners. Repeatable.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Store mail under this directory instead of the configured Maildir root.
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// Read every message to its end and discard it (for load tests). Replies 250 as usual.
    #[arg(long)]
    sink: bool,
    /// Turn the mail authentication checks ([checks]) off, whatever the configuration says.
    #[arg(long)]
    no_checks: bool,
    /// Log line format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Read a password from standard input and print its Argon2 hash for a [[user]] entry.
    HashPassword,
    /// Print the example configuration, every option with its default and its source.
    ExampleConfig,
    /// Make DOMAIN's DKIM keys in [dkim] key_dir (Ed25519 and RSA-2048, unless it has them) and
    /// print the DNS records to publish: zone-file lines, a table, the MTA-STS policy file.
    DnsRecords {
        /// The mail domain.
        domain: String,
        #[command(flatten)]
        server: ServerAddresses,
    },
    /// Look up what DOMAIN publishes and report, record by record, what is missing or wrong.
    /// Exit code 0 when everything is right, 1 otherwise.
    DnsCheck {
        /// The mail domain.
        domain: String,
        #[command(flatten)]
        server: ServerAddresses,
        /// Ask this nameserver (ip:port) instead of `[dns] nameservers`. Repeatable.
        #[arg(long, value_name = "ADDR")]
        nameserver: Vec<SocketAddr>,
    },
    /// Look at and act on the outbound queue (`[queue] directory`). Safe while the server
    /// runs: both take the queue's lock for every change.
    Queue {
        #[command(subcommand)]
        action: QueueCommand,
    },
    /// Print the TLS-RPT report (RFC 8460 JSON) of DOMAIN's delivery sessions on DAY
    /// (YYYY-MM-DD, UTC) from `[queue] directory`'s tls-report.jsonl. Nothing is sent.
    TlsReport {
        /// The policy domain (a recipients' domain).
        domain: String,
        /// The UTC day, YYYY-MM-DD.
        day: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// One line per queued message.
    List,
    /// A message's recipients, their last replies, and its headers.
    Show { id: smtpkit_queue::QueueId },
    /// Make every message due now.
    Flush,
    /// Make one message due now.
    Retry { id: smtpkit_queue::QueueId },
    /// Keep a message from being delivered.
    Hold { id: smtpkit_queue::QueueId },
    /// Let a held message be delivered again.
    Release { id: smtpkit_queue::QueueId },
    /// Remove a message without notifying anyone.
    Delete { id: smtpkit_queue::QueueId },
}

/// This server as the domain's DNS should show it.
#[derive(Debug, clap::Args)]
struct ServerAddresses {
    /// This server's IPv4 address (A record, SPF). Repeatable. For dns-check, default: the
    /// addresses the MX host has.
    #[arg(long, value_name = "ADDR")]
    ip: Vec<std::net::Ipv4Addr>,
    /// This server's IPv6 address (AAAA record, SPF). Repeatable.
    #[arg(long, value_name = "ADDR")]
    ip6: Vec<std::net::Ipv6Addr>,
    /// The MX host name. Default: the configured hostname when a configuration file is given
    /// and the name is fully qualified, `mx.DOMAIN` otherwise.
    #[arg(long, value_name = "HOST")]
    mx: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => return check_config(file),
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::ExampleConfig) => {
            print!("{}", include_str!("../config/example.toml"));
            return ExitCode::SUCCESS;
        }
        Some(Command::Queue { action }) => return queue_command(&cli, action),
        Some(Command::TlsReport { domain, day }) => return tls_report(&cli, domain, day),
        Some(Command::DnsRecords { domain, server }) => return dns_records(&cli, domain, server),
        Some(Command::DnsCheck {
            domain,
            server,
            nameserver,
        }) => return dns_check(&cli, domain, server, nameserver),
        None => {}
    }
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("smtpd: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default_embedded(),
    };
    apply_overrides(&mut config, &cli);
    let bound = match Bound::new(&config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("smtpd: cannot listen: {e}");
            return ExitCode::from(3);
        }
    };
    let was_root = smtpd::privilege::is_root();
    if let (true, Some(user)) = (was_root, &config.privileges.user) {
        let account = match smtpd::privilege::lookup(user, config.privileges.group.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("smtpd: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = smtpd::privilege::drop_to(account) {
            eprintln!("smtpd: {e}");
            return ExitCode::from(5);
        }
    }
    // Held to the end of `main`: dropping it flushes the lines still queued.
    let _log_writer = match init_logging(config.log_format) {
        Ok(flusher) => flusher,
        Err(e) => {
            eprintln!("smtpd: cannot start the log writer: {e}");
            return ExitCode::from(1);
        }
    };
    match (was_root, &config.privileges.user) {
        (true, None) => warn!(
            "running as root: set [privileges] user to switch to an unprivileged account once \
             the listeners are bound"
        ),
        (true, Some(user)) => info!(%user, "switched from root after binding"),
        (false, _) => {}
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads.get());
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smtpd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(config, cli, bound))
}

/// The sockets, bound (or inherited) before anything else happens.
struct Bound {
    /// One per `config.listeners`, in order.
    listeners: Vec<smtpkit_server::ListenerSource>,
    /// The `[metrics]` endpoint's.
    metrics: Option<std::net::TcpListener>,
}

impl Bound {
    fn new(config: &Config) -> Result<Self, String> {
        let inherited = smtpd::activation::take()?;
        let assigned = smtpd::activation::assign(&config.listeners, inherited)?;
        let mut listeners = Vec::with_capacity(assigned.len());
        for (l, inherited) in config.listeners.iter().zip(assigned) {
            listeners.push(match inherited {
                Some(socket) => socket,
                None => match l.address.tcp() {
                    Some(addr) => smtpkit_server::bind_listener(addr)
                        .map_err(|e| e.to_string())?
                        .into(),
                    // Bound by the server builder: it removes a stale file first, sets the
                    // mode, and removes the file at shutdown.
                    None => l.source(),
                },
            });
        }
        let metrics = match config.metrics.listen {
            Some(addr) => {
                Some(smtpkit_server::bind_listener(addr).map_err(|e| format!("[metrics] {e}"))?)
            }
            None => None,
        };
        Ok(Self { listeners, metrics })
    }
}

fn apply_overrides(config: &mut Config, cli: &Cli) {
    if !cli.listen.is_empty() {
        config.listeners = cli
            .listen
            .iter()
            .map(|&address| config::Listener {
                address: address.into(),
                mode: None,
                kind: ListenerKind::Smtp,
                tls: Some(config.tls.is_some()),
                proxy_protocol: false,
                name: None,
                disabled_commands: Vec::new(),
                hidden_extensions: Vec::new(),
                client_ca: None,
                client_auth: None,
            })
            .collect();
    }
    if let Some(dir) = &cli.maildir {
        config.storage.maildir.clone_from(dir);
    }
    if cli.sink {
        config.storage.sink = true;
    }
    if cli.no_checks {
        config.checks.enabled = false;
    }
    match cli.log_format {
        Some(LogFormatArg::Json) => config.log_format = LogFormat::Json,
        Some(LogFormatArg::Text) => config.log_format = LogFormat::Text,
        None => {}
    }
}

fn init_logging(format: LogFormat) -> std::io::Result<smtpd::log_writer::Flusher> {
    // smtpd writes its own line per session (with the message count and the user), so the
    // library driver's "session ended" line would only repeat it: warnings only from there
    // unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,smtpkit_server::driver::session=warn".into());
    // Colour codes only for a terminal: in a log file or journal they are noise that breaks
    // grep and log parsers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Lines go to a writer thread in batches, so sessions never wait on a slow terminal, pipe
    // or journal. Not lossy: when its buffer is full, logging waits instead of dropping the
    // audit trail.
    let (writer, flusher) = smtpd::log_writer::spawn(
        "smtpd-log",
        std::io::stderr(),
        smtpd::log_writer::BATCH_DELAY,
    )?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .fmt_fields(smtpd::log_fields::LineFields)
            .event_format(smtpd::log_line::LineFormat::new())
            .init(),
    }
    Ok(flusher)
}

fn check_config(file: &PathBuf) -> ExitCode {
    match Config::load(file) {
        Ok(config) => match smtpd::routing::Router::from_config(&config) {
            Ok(_) => {
                print!("{}", config.to_toml());
                let findings = smtpd::check::check(&config);
                for w in &findings.warnings {
                    eprintln!("smtpd: {}: warning: {w}", file.display());
                }
                for e in &findings.errors {
                    eprintln!("smtpd: {}: {e}", file.display());
                }
                if findings.errors.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("smtpd: {}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("smtpd: {e}");
            ExitCode::from(2)
        }
    }
}

fn tls_report(cli: &Cli, domain: &str, day: &str) -> ExitCode {
    if !smtpd::tls_report::is_day(day) {
        eprintln!("smtpd: tls-report: day `{day}` is not YYYY-MM-DD");
        return ExitCode::from(2);
    }
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("smtpd: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default_embedded(),
    };
    match smtpd::tls_report::report(&config.queue.directory, domain, day, &config.hostname) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smtpd: tls-report: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!(
                "smtpd: tls-report: {}: {e}",
                config
                    .queue
                    .directory
                    .join(smtpd::tls_report::FILE)
                    .display()
            );
            ExitCode::from(1)
        }
    }
}

fn queue_command(cli: &Cli, action: &QueueCommand) -> ExitCode {
    use smtpd::queue::Action;
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("smtpd: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default_embedded(),
    };
    let action = match action {
        QueueCommand::List => Action::List,
        QueueCommand::Show { id } => Action::Show(id.clone()),
        QueueCommand::Flush => Action::Flush,
        QueueCommand::Retry { id } => Action::Retry(id.clone()),
        QueueCommand::Hold { id } => Action::Hold(id.clone()),
        QueueCommand::Release { id } => Action::Release(id.clone()),
        QueueCommand::Delete { id } => Action::Delete(id.clone()),
    };
    let store = match smtpd::queue::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smtpd: queue {}: {e}", config.queue.directory.display());
            return ExitCode::from(1);
        }
    };
    match smtpd::queue::run(&store, &action, std::time::SystemTime::now()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(smtpkit_queue::StoreError::NotFound(id)) => {
            eprintln!("smtpd: no queued message {id}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("smtpd: {e}");
            ExitCode::from(1)
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("smtpd: give the password on standard input");
        return ExitCode::from(2);
    }
    match smtpd::password::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtpd: {e}");
            ExitCode::from(1)
        }
    }
}

/// The configuration `-c` names, or the built-in one; `None` after printing why it is unusable.
fn load_config(cli: &Cli) -> Option<Config> {
    match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("smtpd: {e}");
                None
            }
        },
        None => Some(Config::default_embedded()),
    }
}

/// What `domain`'s records should say about this server, its keys not yet filled in.
fn expected_records(
    cli: &Cli,
    config: &Config,
    domain: &str,
    server: &ServerAddresses,
) -> smtpd::dns_records::DomainRecords {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    // The detected host name of a machine run on the built-in configuration is rarely the name
    // the world should use; a configured one is.
    let mx_host = match &server.mx {
        Some(mx) => mx.trim_end_matches('.').to_ascii_lowercase(),
        None if cli.config.is_some() && config.hostname.contains('.') => {
            config.hostname.to_ascii_lowercase()
        }
        None => format!("mx.{domain}"),
    };
    let addresses = server
        .ip
        .iter()
        .map(|&ip| std::net::IpAddr::V4(ip))
        .chain(server.ip6.iter().map(|&ip| std::net::IpAddr::V6(ip)))
        .collect();
    smtpd::dns_records::DomainRecords {
        domain,
        mx_host,
        addresses,
        keys: Vec::new(),
        sts_id: smtpd::dns_records::sts_id(std::time::SystemTime::now()),
    }
}

fn dns_records(cli: &Cli, domain: &str, server: &ServerAddresses) -> ExitCode {
    let Some(config) = load_config(cli) else {
        return ExitCode::from(2);
    };
    // The domain names key files: nothing but a host name may get there (no `/`, no `..`).
    if !config::is_valid_hostname(domain.trim_end_matches('.')) {
        eprintln!("smtpd: `{domain}` is not a domain name");
        return ExitCode::from(2);
    }
    if server.ip.is_empty() && server.ip6.is_empty() {
        eprintln!("smtpd: give this server's address with --ip (and --ip6)");
        return ExitCode::from(2);
    }
    let mut records = expected_records(cli, &config, domain, server);
    let keys = smtpd::dkim_key::KeyStore::load(&config.dkim.key_dir)
        .and_then(|mut store| store.ensure(&records.domain, std::time::SystemTime::now()));
    match keys {
        Ok(keys) => {
            for (key, made) in keys {
                let verb = if made { "made" } else { "kept" };
                eprintln!(
                    "smtpd: {verb} {} key {} (selector {})",
                    key.algorithm,
                    key.path.display(),
                    key.selector
                );
                records.keys.push(key);
            }
        }
        Err(e) => {
            eprintln!("smtpd: DKIM keys: {e}");
            return ExitCode::from(1);
        }
    }
    print!("{}", records.render());
    ExitCode::SUCCESS
}

fn dns_check(
    cli: &Cli,
    domain: &str,
    server: &ServerAddresses,
    nameservers: &[SocketAddr],
) -> ExitCode {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let Some(config) = load_config(cli) else {
        return ExitCode::from(2);
    };
    // The domain names key files: nothing but a host name may get there (no `/`, no `..`).
    if !config::is_valid_hostname(domain.trim_end_matches('.')) {
        eprintln!("smtpd: `{domain}` is not a domain name");
        return ExitCode::from(2);
    }
    let mut records = expected_records(cli, &config, domain, server);
    let store = match smtpd::dkim_key::KeyStore::load(&config.dkim.key_dir) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("smtpd: DKIM keys: {e}");
            return ExitCode::from(1);
        }
    };
    records.keys = store.signing_keys(&records.domain).cloned().collect();
    // `[dns]`'s nameservers (or the system's), unless --nameserver names others; one try of at
    // most 5 s: the lookups run at once, so a dead nameserver costs one timeout (and one more
    // for SPF), not one per record.
    let (mut resolver, mut opts) = match config.dns.resolver_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtpd: [dns]: {e}");
            return ExitCode::from(2);
        }
    };
    if !nameservers.is_empty() {
        resolver = ResolverConfig::from_name_servers(
            nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect(),
        );
    }
    opts.timeout = opts.timeout.min(std::time::Duration::from_secs(5));
    opts.attempts = 1;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smtpd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let findings = runtime.block_on(async {
        let checker = smtpd::dns_check::Checker::new(resolver, opts)?;
        Ok::<_, String>(checker.check(&records).await)
    });
    let findings = match findings {
        Ok(f) => f,
        Err(e) => {
            eprintln!("smtpd: cannot build the resolver: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bad = 0;
    for f in &findings {
        println!("{f}");
        if f.status != smtpd::dns_check::Status::Ok {
            bad += 1;
        }
    }
    if records.keys.is_empty() {
        println!(
            "MISSING DKIM     no key for {} in {}: run smtpd dns-records first",
            records.domain,
            config.dkim.key_dir.display()
        );
        bad += 1;
    }
    if bad == 0 {
        println!(
            "{}: all {} records are right",
            records.domain,
            findings.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("{}: {bad} of the records need attention", records.domain);
        ExitCode::from(1)
    }
}

/// Everything that can be rebuilt from the configuration without rebinding sockets.
fn build_state(config: &Config, queue: Option<&smtpd::queue::Running>) -> Result<State, String> {
    let router = smtpd::routing::Router::from_config(config).map_err(|e| e.to_string())?;
    // The store is built once: a Maildir store starts its group-commit thread.
    if !config.storage.sink && config.storage.lmtp.is_none() {
        std::fs::create_dir_all(&config.storage.maildir)
            .map_err(|e| format!("cannot create {}: {e}", config.storage.maildir.display()))?;
    }
    let store = smtpd::maildir::Store::from_config(&config.storage, &config.hostname);
    Ok(State {
        hostname: config.hostname.clone(),
        router,
        store,
        accounts: smtpd::password::Accounts::new(&config.users),
        // The queue itself is started once; a reload changes who may send as whom, and reads
        // the DKIM keys again (a rotation).
        outbound: queue.filter(|_| config.relay.enabled).map(|q| {
            let (signer, warnings) = smtpd::dkim_sign::Signer::load(
                &config.dkim.key_dir,
                config.domains.iter().map(|d| d.name.as_str()),
            );
            for warning in warnings {
                warn!("{warning}");
            }
            q.outbound(&config.relay, Arc::new(signer))
        }),
        rcpt_policy: smtpd::rcpt_policy::RcptPolicy::from_config(config)?,
        checks: smtpd::checks::Checker::from_config(&config.checks, &config.dns, &config.hostname)
            .map_err(|e| format!("[checks]: {e}"))?,
        lmtp: smtpd::lmtp::Lmtp::from_config(config)?,
    })
}

/// One listener's settings: its kind, TLS on or off, PROXY from `[proxy] trusted`.
async fn run(config: Config, cli: Cli, bound: Bound) -> ExitCode {
    // Install the handlers before any listener binds: a client (or a supervisor) may act as soon
    // as the port accepts connections, and a SIGHUP or SIGTERM arriving before the handlers
    // exist would kill the process with the default action instead of reloading or draining.
    let signals = Signals::install();
    for d in &config.deprecated {
        warn!("configuration: {d}");
    }
    let queue = if config.relay.enabled {
        match smtpd::queue::start(&config).await {
            Ok(q) => Some(q),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let state = match build_state(&config, queue.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    smtpd::housekeeping::spawn_tmp_sweeper(&state.store);
    smtpd::housekeeping::raise_fd_limit(u64::from(config.limits.connections));
    let receiver = Receiver::new(state, smtpd::receiver::Guards::from_config(&config));
    let (tls, certs) = match &config.tls {
        Some(t) => match smtpkit_tokio::tls::ReloadableCert::from_files(&t.cert, &t.key) {
            Ok(cert) => {
                let cert = Arc::new(cert);
                match smtpkit_tokio::tls::rustls_config(cert.clone()) {
                    Ok(cfg) => (Some(cfg), Some(cert)),
                    Err(e) => {
                        error!("TLS: {e}");
                        return ExitCode::from(4);
                    }
                }
            }
            Err(e) => {
                error!(
                    "cannot load the TLS certificate {} / key {}: {e}",
                    t.cert.display(),
                    t.key.display()
                );
                return ExitCode::from(4);
            }
        },
        None => (None, None),
    };
    if let Some(listener) = bound.metrics {
        let handle = match smtpd::metrics_endpoint::install() {
            Ok(h) => h,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(1);
            }
        };
        // Non-blocking already (bind_listener), as tokio needs.
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                if let Ok(addr) = listener.local_addr() {
                    info!(%addr, "metrics endpoint listening");
                }
                smtpd::metrics_endpoint::spawn(listener, handle);
            }
            Err(e) => {
                error!("cannot listen: [metrics] {e}");
                return ExitCode::from(3);
            }
        }
    }
    let metrics = Arc::new(Metrics::new());
    // One server for every listener: TLS and PROXY are set per listener, so the connection
    // limits span all of them and one shutdown stops them all at once.
    let server_settings = config.server_settings();
    let grace = server_settings.shutdown_grace;
    let mut builder = SmtpServer::builder(receiver.clone())
        .settings(server_settings)
        .metrics(metrics.clone());
    if let Some(tls) = &tls {
        builder = builder.tls(tls.clone());
    }
    match config.dns.reverse_dns() {
        Ok(Some(lookup)) => builder = builder.reverse_dns(lookup),
        Ok(None) => {}
        Err(e) => {
            error!("[dns]: {e}");
            return ExitCode::from(2);
        }
    }
    for (l, socket) in config.listeners.iter().zip(bound.listeners) {
        let mut settings = config.listener_settings(l);
        match l.client_auth() {
            Ok(auth) => settings.client_auth = auth,
            Err(e) => {
                error!("listener {}: client_ca: {e}", l.address);
                return ExitCode::from(4);
            }
        }
        builder = builder.listener(socket, settings);
    }
    let handle = match builder.build().await {
        Ok(server) => {
            for addr in server.endpoints() {
                info!(%addr, hostname = %config.hostname, "listening");
            }
            server.spawn()
        }
        Err(smtpkit_tokio::Error::Io(e)) => {
            error!("cannot listen: {e}");
            return ExitCode::from(3);
        }
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let storage = if config.storage.sink {
        "sink (messages are discarded)".to_owned()
    } else {
        config.storage.maildir.display().to_string()
    };
    info!(storage = %storage, "smtpd ready");
    smtpd::housekeeping::notify_ready();
    signals
        .wait(&receiver, certs.as_deref(), &cli, queue.as_ref())
        .await;
    info!("shutting down");
    handle.shutdown(grace).await;
    if let Some(queue) = queue {
        queue.stop().await;
    }
    let m = metrics.snapshot();
    info!(
        connections = m.connections_total,
        connections_refused = m.connections_refused,
        sessions = m.sessions_total,
        messages_accepted = m.messages_accepted,
        messages_rejected = m.messages_rejected,
        bytes_received = m.bytes_received,
        tls_handshakes = m.tls_handshakes,
        tls_handshake_failures = m.tls_handshake_failures,
        auth_failures = m.auth_failures,
        "stopped"
    );
    ExitCode::SUCCESS
}

/// The signals smtpd acts on: SIGTERM and SIGINT stop it, SIGHUP reloads.
#[derive(Debug)]
struct Signals {
    /// `None` when the handlers could not be installed.
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some([term, int, hup]),
            _ => None,
        };
        Self { streams }
    }

    /// Returns on SIGTERM or SIGINT; reloads the certificate and configuration on SIGHUP.
    async fn wait(
        self,
        receiver: &Receiver,
        certs: Option<&smtpkit_tokio::tls::ReloadableCert>,
        cli: &Cli,
        queue: Option<&smtpd::queue::Running>,
    ) {
        let Some([mut term, mut int, mut hup]) = self.streams else {
            warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => reload(receiver, certs, cli, queue),
            }
        }
    }
}

fn reload(
    receiver: &Receiver,
    certs: Option<&smtpkit_tokio::tls::ReloadableCert>,
    cli: &Cli,
    queue: Option<&smtpd::queue::Running>,
) {
    if let Some(certs) = certs {
        match certs.reload() {
            Ok(()) => info!("TLS certificate reloaded"),
            Err(e) => warn!("TLS certificate reload failed, keeping the old one: {e}"),
        }
    }
    let Some(path) = &cli.config else { return };
    // The command line still wins over the file, as it did at startup (`--maildir`, `--sink`).
    match Config::load(path)
        .map(|mut c| {
            apply_overrides(&mut c, cli);
            c
        })
        .map_err(|e| e.to_string())
        .and_then(|c| build_state(&c, queue))
    {
        // Domains, mailboxes, aliases, users and storage take effect for new sessions;
        // listeners and limits need a restart.
        Ok(state) => {
            receiver.replace(state);
            info!(config = %path.display(), "configuration reloaded");
        }
        Err(e) => warn!("configuration reload failed, keeping the old one: {e}"),
    }
}
