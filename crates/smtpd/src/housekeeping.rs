//! Work the server does beside sessions: removing what crashed deliveries left in `tmp/`,
//! checking at startup that the process may open as many files as the configuration promises
//! connections, and telling systemd when the server is ready.

use std::time::Duration;

use tracing::{info, warn};

use crate::maildir::{MaildirStore, Store};

/// Age after which a file in a Maildir's `tmp/` is a crashed delivery's leftover: the
/// Maildir specification's 36 hours (no delivery takes that long).
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// How often `tmp/` is swept after the sweep at startup.
pub const TMP_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Sweeps every `tmp/` under the store's root now, then every [`TMP_SWEEP_INTERVAL`], on the
/// blocking pool. Does nothing for the sink. The task ends with the runtime.
pub fn spawn_tmp_sweeper(store: &Store) {
    let Store::Maildir(store) = store else { return };
    let store = store.clone();
    tokio::spawn(async move {
        loop {
            sweep(&store).await;
            tokio::time::sleep(TMP_SWEEP_INTERVAL).await;
        }
    });
}

async fn sweep(store: &MaildirStore) {
    let store = store.clone();
    let root = store.root().to_path_buf();
    match tokio::task::spawn_blocking(move || store.clean_tmp(TMP_MAX_AGE)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => info!(removed, root = %root.display(), "removed stale files from tmp/"),
        Ok(Err(e)) => warn!(root = %root.display(), error = %e, "cannot sweep tmp/"),
        Err(e) => warn!(error = %e, "tmp/ sweep failed"),
    }
}

/// File descriptors the process needs beyond one per connection: listeners, the log, files
/// being written and directories being synced, the runtime's own.
const FD_RESERVE: u64 = 256;

/// What [`raise_fd_limit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdLimit {
    /// The soft limit already covers `connections` plus the reserve.
    Enough {
        /// The soft limit.
        soft: u64,
    },
    /// The soft limit was raised (up to the hard limit) and now covers the need.
    Raised {
        /// Before.
        from: u64,
        /// After.
        to: u64,
    },
    /// Even the hard limit is too low: connections past it would wait unserved in the backlog.
    TooLow {
        /// The limit in force.
        soft: u64,
        /// What the configuration needs.
        needed: u64,
    },
}

/// Raises `RLIMIT_NOFILE`'s soft limit so `connections` can be served (each connection is a
/// socket, plus a file while it delivers), and reports what it found. Logs a warning when the
/// hard limit is too low.
pub fn raise_fd_limit(connections: u64) -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = connections.saturating_mul(2).saturating_add(FD_RESERVE);
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let outcome = if soft >= needed {
        FdLimit::Enough { soft }
    } else {
        let hard = current.maximum.unwrap_or(u64::MAX);
        let target = needed.min(hard);
        let raised = target > soft
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(target),
                    maximum: current.maximum,
                },
            )
            .is_ok();
        match (raised, target >= needed) {
            (true, true) => FdLimit::Raised {
                from: soft,
                to: target,
            },
            (true, false) => FdLimit::TooLow {
                soft: target,
                needed,
            },
            (false, _) => FdLimit::TooLow { soft, needed },
        }
    };
    match outcome {
        FdLimit::Enough { .. } => {}
        FdLimit::Raised { from, to } => {
            info!(from, to, "raised the open-file limit (RLIMIT_NOFILE)")
        }
        FdLimit::TooLow { soft, needed } => warn!(
            limit = soft,
            needed,
            "the open-file limit (RLIMIT_NOFILE) is below what limits.connections needs; \
             connections past it wait unserved: raise it (LimitNOFILE= in the systemd unit, \
             ulimit -n) or lower limits.connections"
        ),
    }
    outcome
}

/// Tells the service manager that every listener is bound (`sd_notify(3)` `READY=1`), when it
/// asked with `$NOTIFY_SOCKET` (systemd's `Type=notify`). The protocol is one datagram on a Unix
/// socket: a dependency would not make it simpler.
pub fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify(&socket, b"READY=1") {
        warn!(socket = %socket.to_string_lossy(), error = %e, "cannot notify the service manager");
    }
}

/// Sends `message` to the `sd_notify` socket `path` (`@name` is in the abstract namespace).
fn notify(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(message, &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify(dir.path().join("none").as_os_str(), b"READY=1").is_err());
    }

    #[test]
    fn small_needs_are_met_and_impossible_ones_reported() {
        assert!(matches!(
            raise_fd_limit(1),
            FdLimit::Enough { .. } | FdLimit::Raised { .. }
        ));
        // Afterwards the need is met.
        assert!(matches!(raise_fd_limit(1), FdLimit::Enough { .. }));
        assert!(matches!(
            raise_fd_limit(u64::MAX / 4),
            FdLimit::TooLow { .. }
        ));
    }
}
