//! What `smtpd check-config` finds beyond a configuration's syntax and consistency: the things
//! that only fail when the server meets the machine (a certificate that does not load, a
//! Maildir root it cannot write, an LMTP server that does not answer) and settings that are
//! valid but almost certainly not meant.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use smtpkit_server::ListenerKind;

use crate::config::Config;

/// The findings about one configuration on this machine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The server would not start, or could not store mail.
    pub errors: Vec<String>,
    /// It would run, but not as the operator probably meant.
    pub warnings: Vec<String>,
}

/// Whether something accepts connections at `address` (the LMTP server). Connects and closes.
fn reachable(address: &smtpkit_server::client::Address) -> io::Result<()> {
    use smtpkit_server::client::Address;
    match address {
        Address::Tcp(addr) => {
            std::net::TcpStream::connect_timeout(addr, std::time::Duration::from_secs(5)).map(drop)
        }
        Address::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop),
    }
}

/// Looks at `config` against the files and directories it names. Reads the certificate and key,
/// and writes (then removes) one empty file in the Maildir root; changes nothing else.
#[must_use]
pub fn check(config: &Config) -> Findings {
    let mut f = Findings {
        warnings: config.deprecated.clone(),
        ..Findings::default()
    };
    if let Some(tls) = &config.tls
        && let Err(e) = smtpkit_server::tls::ReloadableCert::from_files(&tls.cert, &tls.key)
    {
        f.errors.push(format!(
            "[tls] cannot load certificate {} / key {}: {e}",
            tls.cert.display(),
            tls.key.display()
        ));
    }
    if let Some(text) = &config.storage.lmtp {
        if let Ok(address) = text.parse()
            && let Err(e) = reachable(&address)
        {
            f.warnings.push(format!(
                "storage.lmtp {address} does not answer ({e}): until it does, local mail gets 451"
            ));
        }
    } else if !config.storage.sink
        && let Err(e) = writable(&config.storage.maildir)
    {
        f.errors.push(format!(
            "storage.maildir {} is not writable: {e}",
            config.storage.maildir.display()
        ));
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if let Err(e) = l.client_auth() {
            f.errors
                .push(format!("listener[{i}] ({}) client_ca: {e}", l.address));
        }
        if l.kind == ListenerKind::Submission && !l.uses_tls() && !config.allow_insecure_auth {
            f.warnings.push(format!(
                "listener[{i}] ({} submission) has no TLS: AUTH is never offered without it, so it can never accept mail (add [tls], or allow_insecure_auth = true for a test setup)",
                l.address
            ));
        }
    }
    privileges(config, &mut f);
    if !config.hostname.contains('.') {
        f.warnings.push(format!(
            "hostname `{}` is not fully qualified: other servers check the greeting and HELO name against DNS (set hostname = \"mx.example.org\")",
            config.hostname
        ));
    }
    f
}

/// `[privileges]`: the account exists and can write the Maildir root; or, checked as root
/// with a listener on a port below 1024, the warning that smtpd would serve as root.
fn privileges(config: &Config, f: &mut Findings) {
    let Some(user) = &config.privileges.user else {
        let privileged =
            (config.listeners.iter()).any(|l| l.address.tcp().is_some_and(|a| a.port() < 1024));
        if privileged && crate::privilege::is_root() {
            f.warnings.push(
                "no [privileges] user: started as root to bind ports below 1024, smtpd would keep running as root (set user = \"smtpd\", or run it unprivileged with CAP_NET_BIND_SERVICE)".to_owned(),
            );
        }
        return;
    };
    let account = match crate::privilege::lookup(user, config.privileges.group.as_deref()) {
        Ok(a) => a,
        Err(e) => return f.errors.push(e),
    };
    if !config.storage.sink
        && let Err(e) = writable_by(&config.storage.maildir, account)
    {
        f.errors.push(format!(
            "storage.maildir {} is not writable by [privileges] user {user}: {e}",
            config.storage.maildir.display()
        ));
    }
}

/// Whether `account` may create entries in `dir` (or its nearest existing ancestor), from the
/// directory's owner, group and mode: the same rule the kernel applies, without becoming the
/// account (check-config changes nothing).
fn writable_by(dir: &Path, account: crate::privilege::Account) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut existing = dir;
    while !existing.as_os_str().is_empty() && !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let meta = fs::metadata(existing).map_err(|e| format!("{}: {e}", existing.display()))?;
    let mode = meta.mode();
    // Write and search permission of the class the account falls in: owner, group, other.
    let bits = if meta.uid() == account.uid {
        mode >> 6
    } else if meta.gid() == account.gid {
        mode >> 3
    } else {
        mode
    } & 0o3;
    if bits == 0o3 {
        Ok(())
    } else {
        Err(format!(
            "{} is owned by {}:{} with mode {:o}",
            existing.display(),
            meta.uid(),
            meta.gid(),
            mode & 0o7777
        ))
    }
}

/// Whether a file can be created in `dir`, or in its nearest existing ancestor (the server creates
/// the rest at startup).
fn writable(dir: &Path) -> io::Result<()> {
    let mut existing = dir;
    while !existing.as_os_str().is_empty() && !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let probe = existing.join(format!(".smtpd-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_privileges_account_must_exist_and_write_the_maildir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_embedded();
        config.hostname = "mx.example.org".to_owned();
        config.storage.maildir = dir.path().join("md");
        config.privileges.user = Some("no-such-user-smtpd-check".to_owned());
        let f = check(&config);
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(f.errors[0].contains("does not exist"), "{f:?}");

        // uid 65534 owns nothing here: the temporary directory (0700) is closed to it.
        config.privileges.user = Some("65534".to_owned());
        config.privileges.group = Some("65534".to_owned());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let f = check(&config);
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(
            f.errors[0].contains("not writable by [privileges] user 65534"),
            "{f:?}"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let f = check(&config);
        assert!(f.errors.is_empty(), "{f:?}");
    }

    #[test]
    fn findings_name_the_file_and_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_embedded();
        config.hostname = "vm".to_owned();
        config.storage.maildir = dir.path().join("not/yet/there");
        let f = check(&config);
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(
            f.warnings[0].contains("`vm` is not fully qualified"),
            "{f:?}"
        );

        config.hostname = "mx.example.org".to_owned();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        config.storage.maildir = file.join("md");
        config.tls = Some(crate::config::Tls {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("key.pem"),
        });
        let f = check(&config);
        assert_eq!(f.errors.len(), 2, "{f:?}");
        assert!(f.errors[0].contains("missing.pem"), "{f:?}");
        assert!(f.errors[1].contains("storage.maildir"), "{f:?}");
        assert!(f.warnings.is_empty(), "{f:?}");

        config.tls = None;
        config.storage.maildir = dir.path().join("md");
        config.listeners.push(crate::config::Listener {
            address: "127.0.0.1:2587".parse().unwrap(),
            mode: None,
            kind: ListenerKind::Submission,
            tls: Some(false),
            proxy_protocol: false,
            name: None,
            disabled_commands: Vec::new(),
            hidden_extensions: Vec::new(),
            client_ca: None,
            client_auth: None,
        });
        let f = check(&config);
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(
            f.warnings[0].contains("127.0.0.1:2587 submission) has no TLS"),
            "{f:?}"
        );
        config.allow_insecure_auth = true;
        assert!(check(&config).warnings.is_empty());
    }

    #[test]
    fn lmtp_mode_checks_the_server_not_the_maildir() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_embedded();
        config.hostname = "mx.example.org".to_owned();
        // A Maildir that could never be written: irrelevant when LMTP stores the mail.
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        config.storage.maildir = file.join("md");
        let socket = dir.path().join("lmtp.sock");
        config.storage.lmtp = Some(format!("unix:{}", socket.display()));
        let f = check(&config);
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(f.warnings[0].contains("does not answer"), "{f:?}");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let f = check(&config);
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
    }
}
