//! systemd socket activation (`sd_listen_fds(3)`): listeners the service manager bound and
//! passed as file descriptors 3, 4, ... with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`.
//!
//! Each configured listener takes the inherited socket named like its `name`, or else the one
//! bound to its `address`; a listener without a match binds its address itself. An inherited
//! socket no listener takes is an error: the unit and the configuration disagree.

use std::net::{SocketAddr, TcpListener};

use crate::config::Listener;

/// One inherited socket.
#[derive(Debug)]
pub struct Inherited {
    /// Its `FileDescriptorName=` (systemd's default is the socket unit's name).
    pub name: String,
    /// The address it is bound to.
    pub address: SocketAddr,
    /// The socket.
    pub listener: TcpListener,
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
        let listener = fds
            .take_tcp_listener(idx)
            .map_err(|e| format!("inherited socket {} ({name}): {e}", idx + 3))?
            .ok_or_else(|| format!("inherited socket {} ({name}) is gone", idx + 3))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("inherited socket {} ({name}): {e}", idx + 3))?;
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
) -> Result<Vec<Option<TcpListener>>, String> {
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
    use super::*;
    use crate::config::ListenerKind;

    fn listener(address: SocketAddr, name: Option<&str>) -> Listener {
        Listener {
            address,
            kind: ListenerKind::Smtp,
            tls: Some(false),
            proxy_protocol: false,
            name: name.map(str::to_owned),
            disabled_commands: Vec::new(),
            hidden_extensions: Vec::new(),
        }
    }

    fn inherited(name: &str) -> Inherited {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Inherited {
            name: name.to_owned(),
            address: listener.local_addr().unwrap(),
            listener,
        }
    }

    #[test]
    fn by_name_then_by_address_and_leftovers_are_errors() {
        let a = inherited("smtp");
        let b = inherited("submission.socket");
        let (a_addr, b_addr) = (a.address, b.address);
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let config = [
            listener(other, Some("smtp")),
            listener(b_addr, None),
            listener(other, None),
        ];
        let got = assign(&config, vec![a, b]).unwrap();
        let addrs: Vec<_> = got
            .iter()
            .map(|l| l.as_ref().map(|l| l.local_addr().unwrap()))
            .collect();
        assert_eq!(addrs, [Some(a_addr), Some(b_addr), None]);

        let err = assign(&config[2..], vec![inherited("stray")]).unwrap_err();
        assert!(err.contains("`stray`"), "{err}");
    }
}
