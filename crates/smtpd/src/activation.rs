//! systemd socket activation (`sd_listen_fds(3)`): listeners the service manager bound and
//! passed as file descriptors 3, 4, ... with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`.
//!
//! Each configured listener takes the inherited socket named like its `name`, or else the one
//! bound to its `address`; a listener without a match binds its address itself. An inherited
//! socket no listener takes is an error: the unit and the configuration disagree.

use smtpkit_server::{Endpoint, ListenerSource};

use crate::config::Listener;

/// One inherited socket.
#[derive(Debug)]
pub struct Inherited {
    /// Its `FileDescriptorName=` (systemd's default is the socket unit's name).
    pub name: String,
    /// The address (or Unix socket path) it is bound to.
    pub address: Endpoint,
    /// The socket.
    pub listener: ListenerSource,
}

/// Takes the sockets passed by the service manager, if any, and clears the variables so no
/// child inherits them. Must run before any thread starts (it changes the environment).
pub fn take() -> Result<Vec<Inherited>, String> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut inherited = Vec::with_capacity(fds.len());
    let mut names = names.split(':');
    for idx in 0..fds.len() {
        let name = names.next().unwrap_or_default().to_owned();
        let fail = |e: std::io::Error| format!("inherited socket {} ({name}): {e}", idx + 3);
        let gone = || format!("inherited socket {} ({name}) is gone", idx + 3);
        // A socket that is not TCP stays in place for the Unix-domain attempt.
        let (listener, address) = match fds.take_tcp_listener(idx) {
            Ok(tcp) => {
                let tcp = tcp.ok_or_else(gone)?;
                let address = Endpoint::Tcp(tcp.local_addr().map_err(fail)?);
                (ListenerSource::from(tcp), address)
            }
            Err(_) => {
                let unix = fds
                    .take_unix_listener(idx)
                    .map_err(fail)?
                    .ok_or_else(gone)?;
                let path = unix.local_addr().map_err(fail)?;
                let address = Endpoint::Unix(path.as_pathname().map(Into::into));
                (ListenerSource::from(unix), address)
            }
        };
        inherited.push(Inherited {
            name,
            address,
            listener,
        });
    }
    Ok(inherited)
}

/// For each configured listener, in order, the inherited socket it takes (if any). Errors
/// when an inherited socket is left over.
pub fn assign(
    listeners: &[Listener],
    mut inherited: Vec<Inherited>,
) -> Result<Vec<Option<ListenerSource>>, String> {
    let mut assigned = Vec::with_capacity(listeners.len());
    for l in listeners {
        let by_name = l
            .name
            .as_deref()
            .and_then(|n| inherited.iter().position(|i| i.name == n));
        let found = by_name.or_else(|| inherited.iter().position(|i| i.address == l.address));
        assigned.push(found.map(|i| inherited.swap_remove(i).listener));
    }
    if let Some(left) = inherited.first() {
        return Err(format!(
            "inherited socket `{}` ({}) matches no [[listener]] name or address",
            left.name, left.address
        ));
    }
    Ok(assigned)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::config::ListenerKind;

    fn listener(address: Endpoint, name: Option<&str>) -> Listener {
        Listener {
            address,
            mode: None,
            kind: ListenerKind::Smtp,
            tls: Some(false),
            proxy_protocol: false,
            name: name.map(str::to_owned),
            disabled_commands: Vec::new(),
            hidden_extensions: Vec::new(),
            client_ca: None,
            client_auth: None,
        }
    }

    fn inherited(name: &str) -> Inherited {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Inherited {
            name: name.to_owned(),
            address: Endpoint::Tcp(listener.local_addr().unwrap()),
            listener: listener.into(),
        }
    }

    fn inherited_unix(name: &str, path: &std::path::Path) -> Inherited {
        Inherited {
            name: name.to_owned(),
            address: Endpoint::unix(path),
            listener: UnixListener::bind(path).unwrap().into(),
        }
    }

    fn bound(source: Option<&ListenerSource>) -> Option<Endpoint> {
        match source? {
            ListenerSource::Std(l) => Some(Endpoint::Tcp(l.local_addr().unwrap())),
            ListenerSource::StdUnix(l) => Some(Endpoint::unix(
                l.local_addr().unwrap().as_pathname().unwrap(),
            )),
            other => panic!("not an inherited socket: {other:?}"),
        }
    }

    #[test]
    fn by_name_then_by_address_and_leftovers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = (dir.path().join("lmtp.sock"), dir.path().join("other.sock"));
        let a = inherited("smtp");
        let b = inherited("submission.socket");
        let (u1, u2) = (inherited_unix("lmtp", &p1), inherited_unix("x", &p2));
        let (a_addr, b_addr) = (a.address.clone(), b.address.clone());
        let other: Endpoint = "127.0.0.1:1".parse().unwrap();
        let elsewhere = Endpoint::unix(dir.path().join("nowhere.sock"));
        let config = [
            listener(other.clone(), Some("smtp")),
            listener(b_addr.clone(), None),
            listener(other, None),
            // A Unix listener takes its socket by name, or by path.
            listener(elsewhere, Some("lmtp")),
            listener(Endpoint::unix(&p2), None),
        ];
        let got = assign(&config, vec![a, b, u1, u2]).unwrap();
        let addrs: Vec<_> = got.iter().map(|l| bound(l.as_ref())).collect();
        let want = [
            Some(a_addr),
            Some(b_addr),
            None,
            Some(Endpoint::unix(&p1)),
            Some(Endpoint::unix(&p2)),
        ];
        assert_eq!(addrs, want);

        let err = assign(&config[2..3], vec![inherited("stray")]).unwrap_err();
        assert!(err.contains("`stray`"), "{err}");
    }
}
