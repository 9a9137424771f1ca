//! Command-line parsing by hand: a few commands with a few flags each do not need clap.

/// `cargo xtask help`.
pub(crate) const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                      fmt, clippy (every target, benches too), test, doc, tidy, package,
                          fuzz corpus replay, fuzz smoke (skip with XTASK_SKIP_FUZZ=1),
                          torture smoke on the debug binaries; stops at the first failure
  tidy                    repository invariants (also a test: cargo test -p xtask)
  fuzz [TARGET] [--time S]
                          cargo-fuzz on stable (RUSTC_BOOTSTRAP=1); all targets, 60 s each by default
  fuzz-smoke              every fuzz target for 20 s
  bench [--baseline NAME] cargo bench -p smtp-benches, saving a criterion baseline if named
  loadtest [--adapter A[,A...]] [--sessions N] [--messages M] [--size S] [--per-connection K]
                          start a server on 127.0.0.1, run smtp-load against it, print a table;
                          A is tokio|smol|mio|smtpd-sink|smtpd|smtpd-nochecks|
                          baseline|all (default all)
  queuetest [--size S[,S...]] [--sessions N] [--messages M] [--rounds R] [--compare SMTPD]
                          release smtpd relaying through its queue to a sink on loopback:
                          submitted-and-delivered msgs/s beside the same instance's Maildir
                          rate, alternated, R rounds (default 1k,100k, 50, 5000, 2); with
                          --compare, another smtpd binary measured the same way, alternated
  torture [--smoke] [--debug] [-- ARGS...]
                          release (or, with --debug, debug) smtpd under floods, slow and never-reading clients, oversize
                          mail, full and unwritable disks, kill -9, an AUTH storm, 200 RCPTs and
                          log injection; prints a table, fails on any failed check. ARGS go to
                          `smtp-load torture` (--only NAME, --slow-cut S, --auth-permits N, ...)
  help                    this text";

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Task {
    Help,
    Ci,
    Tidy,
    Fuzz { target: Option<String>, secs: u64 },
    Bench { baseline: Option<String> },
    Loadtest(LoadtestOptions),
    Queuetest(QueuetestOptions),
    Torture(TortureOptions),
}

/// `torture` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TortureOptions {
    /// Small counts (the CI step).
    pub(crate) smoke: bool,
    /// The debug binaries, which `cargo test` has built already (the CI step).
    pub(crate) debug: bool,
    /// Arguments after `--`, passed to `smtp-load torture` as they are.
    pub(crate) extra: Vec<String>,
}

/// `loadtest` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadtestOptions {
    /// Adapter names to test, in order.
    pub(crate) adapters: Vec<String>,
    pub(crate) sessions: u32,
    pub(crate) messages: u64,
    /// Passed to smtp-load as is (it accepts `k` and `m` suffixes).
    pub(crate) size: String,
    /// Messages per connection; `None` sends them all on each session's one connection.
    pub(crate) per_connection: Option<u64>,
}

/// `queuetest` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuetestOptions {
    /// Message sizes, each measured in turn (smtp-load's syntax: `k` and `m` suffixes).
    pub(crate) sizes: Vec<String>,
    pub(crate) sessions: u32,
    pub(crate) messages: u64,
    /// Rounds per size, each a Maildir run and a queue run in alternating order.
    pub(crate) rounds: u32,
    /// Another smtpd binary (an earlier build) measured beside this one.
    pub(crate) compare: Option<String>,
}

/// Every server `loadtest` knows, in the order `all` runs them.
pub(crate) const ADAPTERS: &[&str] = &[
    "baseline",
    "tokio",
    "smol",
    "mio",
    "smtpd-sink",
    "smtpd",
    "smtpd-nochecks",
];

/// Parses the arguments after `cargo xtask`.
pub(crate) fn parse(args: &[String]) -> Result<Task, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    let mut flags = Flags::new(rest);
    let task = match command.as_str() {
        "help" | "--help" | "-h" => Task::Help,
        "ci" => Task::Ci,
        "tidy" => Task::Tidy,
        "fuzz" => {
            let secs = flags
                .value("--time")?
                .map_or(Ok(60), |s| number(&s, "--time"))?;
            Task::Fuzz {
                target: flags.positional(),
                secs,
            }
        }
        "fuzz-smoke" => Task::Fuzz {
            target: None,
            secs: crate::fuzz::SMOKE_SECS,
        },
        "bench" => Task::Bench {
            baseline: flags.value("--baseline")?,
        },
        "loadtest" => {
            let adapter = flags.value("--adapter")?.unwrap_or_else(|| "all".into());
            let adapters = if adapter == "all" {
                ADAPTERS.iter().map(|&a| a.to_owned()).collect()
            } else {
                // A comma-separated list runs those servers in that order, in one run (a
                // figure and its baseline side by side).
                let mut list = Vec::new();
                for a in adapter.split(',') {
                    if !ADAPTERS.contains(&a) {
                        return Err(format!(
                            "unknown adapter `{a}`; expected one of {} or all",
                            ADAPTERS.join(", ")
                        ));
                    }
                    list.push(a.to_owned());
                }
                list
            };
            let sessions = flags.value("--sessions")?;
            let messages = flags.value("--messages")?;
            Task::Loadtest(LoadtestOptions {
                adapters,
                sessions: sessions.map_or(Ok(50), |s| number(&s, "--sessions"))?,
                messages: messages.map_or(Ok(10_000), |s| number(&s, "--messages"))?,
                size: flags.value("--size")?.unwrap_or_else(|| "1k".into()),
                per_connection: flags
                    .value("--per-connection")?
                    .map(|s| number(&s, "--per-connection"))
                    .transpose()?,
            })
        }
        "queuetest" => {
            let sizes = flags.value("--size")?.unwrap_or_else(|| "1k,100k".into());
            let sessions = flags.value("--sessions")?;
            let messages = flags.value("--messages")?;
            let rounds = flags.value("--rounds")?;
            Task::Queuetest(QueuetestOptions {
                sizes: sizes.split(',').map(str::to_owned).collect(),
                sessions: sessions.map_or(Ok(50), |s| number(&s, "--sessions"))?,
                messages: messages.map_or(Ok(5000), |s| number(&s, "--messages"))?,
                rounds: rounds.map_or(Ok(2), |s| number(&s, "--rounds"))?,
                compare: flags.value("--compare")?,
            })
        }
        "torture" => {
            let extra = flags.rest_after_dashes();
            Task::Torture(TortureOptions {
                smoke: flags.switch("--smoke"),
                debug: flags.switch("--debug"),
                extra,
            })
        }
        other => return Err(format!("unknown command `{other}`")),
    };
    flags.finish()?;
    Ok(task)
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag} needs a number, got `{s}`"))
}

/// The arguments after the command; each accessor removes what it used, so leftovers are errors.
struct Flags {
    args: Vec<String>,
}

impl Flags {
    fn new(args: &[String]) -> Self {
        Self {
            args: args.to_vec(),
        }
    }

    /// `--name VALUE` or `--name=VALUE`.
    fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let prefix = format!("{name}=");
        let Some(i) = self
            .args
            .iter()
            .position(|a| a == name || a.starts_with(&prefix))
        else {
            return Ok(None);
        };
        let arg = self.args.remove(i);
        if let Some(v) = arg.strip_prefix(&prefix) {
            return Ok(Some(v.to_owned()));
        }
        if i < self.args.len() && !self.args[i].starts_with("--") {
            Ok(Some(self.args.remove(i)))
        } else {
            Err(format!("{name} needs a value"))
        }
    }

    /// `--name` without a value: whether it was given.
    fn switch(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        self.args.len() != before
    }

    /// Everything after a `--`, removed from the arguments.
    fn rest_after_dashes(&mut self) -> Vec<String> {
        match self.args.iter().position(|a| a == "--") {
            Some(i) => {
                let rest = self.args.split_off(i + 1);
                self.args.pop();
                rest
            }
            None => Vec::new(),
        }
    }

    /// The first argument that is not a flag.
    fn positional(&mut self) -> Option<String> {
        let i = self.args.iter().position(|a| !a.starts_with('-'))?;
        Some(self.args.remove(i))
    }

    fn finish(self) -> Result<(), String> {
        match self.args.first() {
            None => Ok(()),
            Some(extra) => Err(format!("unexpected argument `{extra}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Task, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn commands() {
        assert_eq!(p(""), Ok(Task::Help));
        assert_eq!(p("ci"), Ok(Task::Ci));
        assert_eq!(p("tidy"), Ok(Task::Tidy));
        assert_eq!(
            p("fuzz"),
            Ok(Task::Fuzz {
                target: None,
                secs: 60
            })
        );
        assert_eq!(
            p("fuzz session --time 5"),
            Ok(Task::Fuzz {
                target: Some("session".into()),
                secs: 5
            })
        );
        assert_eq!(
            p("fuzz --time=7 data"),
            Ok(Task::Fuzz {
                target: Some("data".into()),
                secs: 7
            })
        );
        assert_eq!(
            p("fuzz-smoke"),
            Ok(Task::Fuzz {
                target: None,
                secs: 20
            })
        );
        assert_eq!(
            p("bench --baseline main"),
            Ok(Task::Bench {
                baseline: Some("main".into())
            })
        );
        assert_eq!(p("bench"), Ok(Task::Bench { baseline: None }));
    }

    #[test]
    fn loadtest() {
        let Ok(Task::Loadtest(o)) =
            p("loadtest --adapter tokio --sessions 4 --messages 9 --size 64k")
        else {
            panic!("loadtest parses")
        };
        assert_eq!(o.adapters, ["tokio"]);
        assert_eq!((o.sessions, o.messages, o.size.as_str()), (4, 9, "64k"));
        let Ok(Task::Loadtest(all)) = p("loadtest") else {
            panic!("loadtest parses")
        };
        assert_eq!(all.adapters.len(), ADAPTERS.len());
        let Ok(Task::Loadtest(pair)) = p("loadtest --adapter smtpd,smtpd-nochecks,smtpd") else {
            panic!("a list parses")
        };
        assert_eq!(pair.adapters, ["smtpd", "smtpd-nochecks", "smtpd"]);
        assert!(p("loadtest --adapter smtpd,bogus").is_err());
        assert_eq!(
            (all.sessions, all.messages, all.size.as_str()),
            (50, 10_000, "1k")
        );
    }

    #[test]
    fn queuetest() {
        assert_eq!(
            p("queuetest"),
            Ok(Task::Queuetest(QueuetestOptions {
                sizes: vec!["1k".into(), "100k".into()],
                sessions: 50,
                messages: 5000,
                rounds: 2,
                compare: None
            }))
        );
        let Ok(Task::Queuetest(o)) =
            p("queuetest --size 4k --messages 10 --rounds 1 --compare /tmp/smtpd")
        else {
            panic!("queuetest parses")
        };
        assert_eq!((o.sizes, o.messages, o.rounds), (vec!["4k".into()], 10, 1));
        assert_eq!(o.compare.as_deref(), Some("/tmp/smtpd"));
        assert!(
            p("queuetest --rounds x")
                .unwrap_err()
                .contains("needs a number")
        );
    }

    #[test]
    fn torture() {
        assert_eq!(
            p("torture"),
            Ok(Task::Torture(TortureOptions {
                smoke: false,
                debug: false,
                extra: vec![]
            }))
        );
        assert_eq!(
            p("torture --smoke -- --only auth --smoke"),
            Ok(Task::Torture(TortureOptions {
                smoke: true,
                debug: false,
                extra: vec!["--only".into(), "auth".into(), "--smoke".into()]
            }))
        );
        assert!(
            p("torture --fast")
                .unwrap_err()
                .contains("unexpected argument `--fast`")
        );
    }

    #[test]
    fn errors() {
        assert!(p("frobnicate").unwrap_err().contains("unknown command"));
        assert!(p("fuzz --time").unwrap_err().contains("needs a value"));
        assert!(
            p("fuzz --time soon")
                .unwrap_err()
                .contains("needs a number")
        );
        assert!(
            p("ci --verbose")
                .unwrap_err()
                .contains("unexpected argument")
        );
        assert!(
            p("loadtest --adapter nginx")
                .unwrap_err()
                .contains("unknown adapter")
        );
        assert!(
            p("fuzz a b")
                .unwrap_err()
                .contains("unexpected argument `b`")
        );
    }
}
