//! Greylisting: the first attempt of a (client network, sender, recipient) triplet gets
//! `451 4.7.1`; a retry after the delay and within the retry window passes, and the triplet
//! passes from then on. Real MTAs retry; most spam software does not.
//!
//! The client is taken by network (IPv4 /24, IPv6 /64), because big senders retry from
//! another address of the same pool. A network whose triplets have passed
//! [`Settings::auto_whitelist`] times passes for every sender and recipient (postgrey's
//! `--auto-whitelist-clients`). Defaults are postgrey's: 300 s delay, 35 days before an unused
//! triplet is forgotten, 5 passes to whitelist a network; the retry window is 2 days (a
//! triplet first seen longer ago that never retried starts over).
//!
//! State survives restarts in one append-only file: a line per change, the last line about a
//! key wins when it is read back. When the file holds many more lines than live entries it is
//! rewritten under a temporary name and renamed over the old one. The file is not fsynced:
//! losing the last changes costs a sender one more delay, never a message.
//!
//! Time is passed in (`now`), so tests step through delays without sleeping.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The timing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long after the first attempt a retry passes. Default 300 s (postgrey `--delay`).
    pub delay: Duration,
    /// How long after the delay a retry still passes; later the triplet starts over. Default
    /// 2 days: RFC 5321 4.5.4.1 has senders retry for 4-5 days, but a first retry this late
    /// is not a queue behaving well.
    pub retry_window: Duration,
    /// How long a passed triplet, or a whitelisted network, is kept without being seen.
    /// Default 35 days (postgrey `--max-age`).
    pub max_age: Duration,
    /// Passes after which the client's network passes everything; 0 turns this off. Default 5
    /// (postgrey `--auto-whitelist-clients`).
    pub auto_whitelist: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86_400),
            max_age: Duration::from_secs(35 * 86_400),
            auto_whitelist: 5,
        }
    }
}

/// What to do with one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accept: the triplet has waited, or passed before.
    Pass,
    /// Accept: the client's network is whitelisted.
    Whitelisted,
    /// `451 4.7.1`: retry after this long.
    Defer(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Triplet {
    first: u64,
    last: u64,
    passed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Client {
    passes: u32,
    last: u64,
}

#[derive(Debug)]
struct Inner {
    triplets: HashMap<String, Triplet>,
    clients: HashMap<String, Client>,
    file: File,
    lines: usize,
}

/// The triplet store; see the [module documentation](self).
#[derive(Debug)]
pub struct Greylist {
    path: PathBuf,
    settings: Settings,
    inner: Mutex<Inner>,
}

/// The network a client is greylisted by: its /24 or /64.
#[must_use]
pub fn network(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An address as a field of the file: lower case, no tabs or line breaks (SMTP addresses
/// have none, but the file must stay parseable whatever comes in).
fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                '?'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

impl Greylist {
    /// Opens (or creates) the store at `path`, reading what an earlier run left.
    pub fn open(path: impl Into<PathBuf>, settings: Settings) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut triplets = HashMap::new();
        let mut clients = HashMap::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line?;
                    lines += 1;
                    let f: Vec<&str> = line.split('\t').collect();
                    // A torn last line (a crash mid-write) is skipped, not fatal.
                    match f.as_slice() {
                        ["T", key @ .., first, last, passed] if key.len() == 3 => {
                            if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                                triplets.insert(
                                    key.join("\t"),
                                    Triplet {
                                        first,
                                        last,
                                        passed: *passed == "1",
                                    },
                                );
                            }
                        }
                        ["C", net, passes, last] => {
                            if let (Ok(passes), Ok(last)) = (passes.parse(), last.parse()) {
                                clients.insert((*net).to_owned(), Client { passes, last });
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            settings,
            inner: Mutex::new(Inner {
                triplets,
                clients,
                file,
                lines,
            }),
        })
    }

    /// The store's file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decides for one recipient of a message from `ip` and `sender`, at `now`.
    pub fn check(&self, ip: IpAddr, sender: &str, recipient: &str, now: SystemTime) -> Verdict {
        let now = secs(now);
        let s = self.settings;
        let net = network(ip);
        let key = format!("{net}\t{}\t{}", field(sender), field(recipient));
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *inner;
        let mut writes = Vec::new();

        let verdict = inner.decide(&net, key, now, s, &mut writes);
        inner.append(&writes);
        if inner.lines > 4 * (inner.triplets.len() + inner.clients.len()) + 1024 {
            // Best effort: if the rewrite fails the log just keeps growing.
            let _ = inner.compact(&self.path, now, s);
        }
        verdict
    }
}

impl Inner {
    /// The verdict for `key` (network, sender, recipient) at `now`; the lines to log go to
    /// `writes`.
    fn decide(
        &mut self,
        net: &str,
        key: String,
        now: u64,
        s: Settings,
        writes: &mut Vec<String>,
    ) -> Verdict {
        if s.auto_whitelist > 0
            && let Some(c) = self.clients.get_mut(net)
            && c.passes >= s.auto_whitelist
            && now.saturating_sub(c.last) <= s.max_age.as_secs()
        {
            c.last = now;
            writes.push(format!("C\t{net}\t{}\t{now}", c.passes));
            return Verdict::Whitelisted;
        }

        let fresh = Triplet {
            first: now,
            last: now,
            passed: false,
        };
        let entry = self.triplets.entry(key.clone()).or_insert(fresh);
        let expired = if entry.passed {
            now.saturating_sub(entry.last) > s.max_age.as_secs()
        } else {
            now.saturating_sub(entry.first) > (s.delay + s.retry_window).as_secs()
        };
        if expired {
            *entry = fresh;
        }
        let verdict = if entry.passed {
            entry.last = now;
            Verdict::Pass
        } else {
            let waited = now.saturating_sub(entry.first);
            if waited >= s.delay.as_secs() && entry.first != now {
                entry.passed = true;
                entry.last = now;
                let c = self.clients.entry(net.to_owned()).or_insert(Client {
                    passes: 0,
                    last: now,
                });
                c.passes = c.passes.saturating_add(1);
                c.last = now;
                writes.push(format!("C\t{net}\t{}\t{now}", c.passes));
                Verdict::Pass
            } else if s.delay.is_zero() {
                entry.passed = true;
                Verdict::Pass
            } else {
                Verdict::Defer(Duration::from_secs(
                    s.delay.as_secs() - waited.min(s.delay.as_secs()),
                ))
            }
        };
        let t = *entry;
        writes.push(format!(
            "T\t{key}\t{}\t{}\t{}",
            t.first,
            t.last,
            u8::from(t.passed)
        ));
        verdict
    }

    fn append(&mut self, lines: &[String]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        // One write per decision, so concurrent processes never interleave within a line; a
        // failed write loses only state, never mail.
        if self.file.write_all(text.as_bytes()).is_ok() {
            self.lines += lines.len();
        }
    }

    /// Drops forgotten entries and rewrites the file with one line per live entry.
    fn compact(&mut self, path: &Path, now: u64, s: Settings) -> io::Result<()> {
        let max_age = s.max_age.as_secs();
        let window = (s.delay + s.retry_window).as_secs();
        self.triplets.retain(|_, t| {
            if t.passed {
                now.saturating_sub(t.last) <= max_age
            } else {
                now.saturating_sub(t.first) <= window
            }
        });
        self.clients
            .retain(|_, c| now.saturating_sub(c.last) <= max_age);
        let mut text = String::new();
        for (key, t) in &self.triplets {
            text.push_str(&format!(
                "T\t{key}\t{}\t{}\t{}\n",
                t.first,
                t.last,
                u8::from(t.passed)
            ));
        }
        for (net, c) in &self.clients {
            text.push_str(&format!("C\t{net}\t{}\t{}\n", c.passes, c.last));
        }
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        self.file = OpenOptions::new().append(true).open(path)?;
        self.lines = self.triplets.len() + self.clients.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks() {
        assert_eq!(network(ip("192.0.2.77")), "192.0.2.0/24");
        assert_eq!(network(ip("::ffff:192.0.2.77")), "192.0.2.0/24");
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
    }

    #[test]
    fn first_attempt_waits_a_retry_after_the_delay_passes() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open(dir.path().join("greylist"), Settings::default()).unwrap();
        let (a, s, r) = (ip("192.0.2.1"), "<a@sender.test>", "<b@example.test>");
        assert_eq!(
            g.check(a, s, r, at(0)),
            Verdict::Defer(Duration::from_secs(300))
        );
        assert_eq!(
            g.check(a, s, r, at(120)),
            Verdict::Defer(Duration::from_secs(180))
        );
        // Another address of the same /24 is the same client (a sending pool).
        assert_eq!(g.check(ip("192.0.2.200"), s, r, at(300)), Verdict::Pass);
        assert_eq!(g.check(a, s, r, at(400)), Verdict::Pass);
        // Another recipient is another triplet; another network too.
        assert!(matches!(
            g.check(a, s, "<c@example.test>", at(400)),
            Verdict::Defer(_)
        ));
        assert!(matches!(
            g.check(ip("198.51.100.1"), s, r, at(400)),
            Verdict::Defer(_)
        ));
        // Addresses compare without case.
        assert_eq!(g.check(a, "<A@Sender.TEST>", r, at(500)), Verdict::Pass);
    }

    #[test]
    fn a_retry_after_the_window_starts_over_and_passed_triplets_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            delay: Duration::from_secs(60),
            retry_window: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
            auto_whitelist: 0,
        };
        let g = Greylist::open(dir.path().join("g"), settings).unwrap();
        let (a, s, r) = (ip("2001:db8::1"), "<>", "<b@example.test>");
        assert!(matches!(g.check(a, s, r, at(0)), Verdict::Defer(_)));
        // Too late: 60 + 600 seconds passed; this attempt is a new first attempt.
        assert_eq!(
            g.check(a, s, r, at(700)),
            Verdict::Defer(Duration::from_secs(60))
        );
        assert_eq!(g.check(a, s, r, at(760)), Verdict::Pass);
        assert_eq!(g.check(a, s, r, at(760 + 3600)), Verdict::Pass);
        // Unseen for longer than max_age: forgotten.
        assert!(matches!(
            g.check(a, s, r, at(760 + 3600 + 3601)),
            Verdict::Defer(_)
        ));
    }

    #[test]
    fn a_network_that_passed_often_is_whitelisted() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            auto_whitelist: 2,
            ..Settings::default()
        };
        let g = Greylist::open(dir.path().join("g"), settings).unwrap();
        let a = ip("192.0.2.9");
        for (i, r) in ["<x@example.test>", "<y@example.test>"].iter().enumerate() {
            let t = i as u64 * 1000;
            assert!(matches!(
                g.check(a, "<s@s.test>", r, at(t)),
                Verdict::Defer(_)
            ));
            assert_eq!(g.check(a, "<s@s.test>", r, at(t + 300)), Verdict::Pass);
        }
        assert_eq!(
            g.check(a, "<new@s.test>", "<z@example.test>", at(5000)),
            Verdict::Whitelisted
        );
    }

    #[test]
    fn state_survives_a_restart_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/greylist");
        let (a, s, r) = (ip("192.0.2.1"), "<a@s.test>", "<b@example.test>");
        {
            let g = Greylist::open(&path, Settings::default()).unwrap();
            assert!(matches!(g.check(a, s, r, at(0)), Verdict::Defer(_)));
        }
        // A torn line from a crash is skipped.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"T\t192.0.2.0/24\t<a@s")
            .unwrap();
        let g = Greylist::open(&path, Settings::default()).unwrap();
        // The first attempt's time was kept: the delay counts from it, not from the restart.
        assert_eq!(g.check(a, s, r, at(301)), Verdict::Pass);
        drop(g);
        let g = Greylist::open(&path, Settings::default()).unwrap();
        assert_eq!(g.check(a, s, r, at(302)), Verdict::Pass);
        // Many checks grow the log past the compaction bound; it is rewritten, the state kept.
        for i in 0..1100 {
            g.check(a, s, r, at(400 + i));
        }
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 1100, "{lines} lines");
        drop(g);
        let g = Greylist::open(&path, Settings::default()).unwrap();
        assert_eq!(g.check(a, s, r, at(2000)), Verdict::Pass);
        assert!(matches!(
            g.check(a, s, "<other@example.test>", at(2000)),
            Verdict::Defer(_)
        ));
    }
}
