//! Process statistics from `/proc` (Linux only).
//!
//! `getrusage` would need `unsafe` (forbidden in this workspace), and it cannot look at another process
//! anyway, so both the client's and the server's numbers come from procfs.

use std::fs;

use serde::Serialize;

/// `/proc/PID/stat` counts CPU time in clock ticks of `USER_HZ`, which the kernel ABI fixes at 100 on
/// every architecture Linux exposes it for (`sysconf(_SC_CLK_TCK)` would need `unsafe`).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds used so far by process `pid` (all threads, including exited ones), or
/// by this process when `pid` is `None`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = fs::read_to_string(stat_path(pid, "stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// Memory figures of a process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of process `pid`, or of this process when `pid` is `None`.
pub fn memory(pid: Option<u32>) -> Option<Memory> {
    let status = fs::read_to_string(stat_path(pid, "status")).ok()?;
    Some(Memory {
        rss_kib: status_field_kib(&status, "VmRSS:")?,
        peak_rss_kib: status_field_kib(&status, "VmHWM:")?,
    })
}

fn stat_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// Sums `utime` and `stime` (fields 14 and 15 of `proc_pid_stat(5)`).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself contain spaces and parentheses, so
    // fields are counted from the last `)`; the field after it is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_fields() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds(None).is_some_and(|s| s >= 0.0));
        let mem = memory(Some(std::process::id())).expect("own status");
        assert!(mem.rss_kib > 0 && mem.peak_rss_kib >= mem.rss_kib);
    }
}
