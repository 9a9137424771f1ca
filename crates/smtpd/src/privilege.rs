//! Dropping root after binding (`[privileges] user`/`group`), as Postfix's master does with
//! `mail_owner`: bind the listeners (ports below 1024 need root), then switch for good to an
//! unprivileged account before reading any mail.
//!
//! The switch must cover every thread, and the kernel's calls act on the calling thread only
//! (the C library broadcasts them with signals, which safe Rust cannot reach). So smtpd calls
//! [`drop_to`] before it starts any thread (no log writer, no runtime yet), and [`drop_to`]
//! refuses to run when the process already has more than one thread.
//!
//! Started as root with no `user` configured, smtpd keeps running as root and warns (at
//! startup and in `check-config`). Postfix has no such case (its `mail_owner` defaults to
//! `postfix` and must exist); refusing would stop the built-in configuration, which needs no
//! root at all, from running in a root container or a CI job.

use rustix::process::{Gid, Uid};

/// An account to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The user.
    pub uid: u32,
    /// The group (the only group: supplementary groups are cleared).
    pub gid: u32,
}

/// Whether the process runs as root (effective uid 0).
#[must_use]
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Looks up `user` (a name or a numeric uid) and `group` (a name or a numeric gid; default:
/// the user's primary group) in the system's account databases.
pub fn lookup(user: &str, group: Option<&str>) -> Result<Account, String> {
    let (uid, primary) = match uzers::get_user_by_name(user) {
        Some(u) => (u.uid(), Some(u.primary_group_id())),
        None => match user.parse::<u32>() {
            Ok(uid) => (
                uid,
                uzers::get_user_by_uid(uid).map(|u| u.primary_group_id()),
            ),
            Err(_) => return Err(format!("[privileges] user `{user}` does not exist")),
        },
    };
    let gid = match group {
        Some(g) => match uzers::get_group_by_name(g) {
            Some(g) => g.gid(),
            None => g
                .parse::<u32>()
                .map_err(|_| format!("[privileges] group `{g}` does not exist"))?,
        },
        None => primary.ok_or_else(|| {
            format!("[privileges] user {uid} has no account entry: set group as well")
        })?,
    };
    if uid == 0 {
        return Err(
            "[privileges] user must not be root: it is the account to drop root for".into(),
        );
    }
    Ok(Account { uid, gid })
}

/// Switches the process to `account` for good: supplementary groups cleared, real, effective
/// and saved group and user ids all set, then checked (a failed switch must not go unnoticed).
/// Must run before the process starts a second thread.
pub fn drop_to(account: Account) -> Result<(), String> {
    if let Some(n) = threads()
        && n > 1
    {
        return Err(format!(
            "cannot drop privileges: the process already runs {n} threads"
        ));
    }
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    let step = |what: &str, r: rustix::io::Result<()>| {
        r.map_err(|e| format!("cannot drop privileges: {what}: {e}"))
    };
    step("setgroups", rustix::thread::set_thread_groups(&[gid]))?;
    step(
        "setresgid",
        rustix::thread::set_thread_res_gid(gid, gid, gid),
    )?;
    step(
        "setresuid",
        rustix::thread::set_thread_res_uid(uid, uid, uid),
    )?;
    // Root must be out of reach now: getting it back has to fail.
    if rustix::process::geteuid() != uid
        || rustix::process::getegid() != gid
        || rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok()
    {
        return Err("cannot drop privileges: root is still reachable after the switch".into());
    }
    Ok(())
}

/// The number of threads of this process, where the system tells (Linux: `/proc/self/task`).
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|dir| dir.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_name_and_number() {
        // Every Unix system has root; uid 0 is refused as the account to drop to.
        let err = lookup("root", None).unwrap_err();
        assert!(err.contains("must not be root"), "{err}");
        let err = lookup("no-such-user-smtpd-test", None).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = lookup("65534", Some("no-such-group-smtpd-test")).unwrap_err();
        assert!(err.contains("group"), "{err}");
        assert_eq!(
            lookup("65534", Some("65533")),
            Ok(Account {
                uid: 65534,
                gid: 65533
            })
        );
    }

    #[test]
    fn refuses_once_threads_run() {
        // The test harness runs this on a thread of its own beside the main one.
        if threads().is_none() {
            eprintln!("skipped: the thread count is not readable on this system");
            return;
        }
        let err = drop_to(Account {
            uid: 65534,
            gid: 65534,
        })
        .unwrap_err();
        assert!(err.contains("threads"), "{err}");
    }
}
