//! The file system's own cost of Maildir delivery, with no SMTP and no sync: for each of
//! MESSAGES messages of SIZE octets, create a file in `tmp/`, write it, close it and rename
//! it into `new/`, the least any Maildir writer does per message.
//!
//! `maildir_floor DIR MESSAGES SIZE` prints one line: the CPU it used per message, user and
//! system apart (from `/proc/self/stat`), and messages per second.
//!
//! `benches/postfix/compare.sh` runs it as the `maildir-floor=PATH` row beside the servers,
//! so the stored path's cost over the sink path can be read against what the kernel charges
//! for the files alone in the same minutes. On the project's shared virtual machines that
//! charge moves between about 25 and 250 µs of system time per file from one minute to the
//! next, whatever writes the files (the same with `O_TMPFILE` and `linkat`).
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, messages, size] = &args[..] else {
        eprintln!("usage: maildir_floor DIR MESSAGES SIZE");
        std::process::exit(2);
    };
    let (Ok(messages), Ok(size)) = (messages.parse::<usize>(), size.parse::<usize>()) else {
        eprintln!("MESSAGES and SIZE are numbers");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    for d in [&tmp, &new] {
        fs::create_dir_all(d).unwrap_or_else(|e| fail("mkdir", d, e));
    }
    // Lines of 78 octets, as in real mail; the content does not change the cost.
    let body: Vec<u8> = (0..size)
        .map(|i| {
            if i % 80 >= 78 {
                b"\r\n"[i % 80 - 78]
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let before = cpu_ticks();
    let start = Instant::now();
    for i in 0..messages {
        let name = format!("{i}.floor");
        let (from, to) = (tmp.join(&name), new.join(&name));
        let mut file = fs::File::create_new(&from).unwrap_or_else(|e| fail("create", &from, e));
        file.write_all(&body)
            .unwrap_or_else(|e| fail("write", &from, e));
        drop(file);
        fs::rename(&from, &to).unwrap_or_else(|e| fail("rename", &to, e));
    }
    let secs = start.elapsed().as_secs_f64();
    let after = cpu_ticks();
    let per_msg = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second() / messages as f64;
    println!(
        "user {:.1} µs/msg, system {:.1} µs/msg, {:.0} msgs/s",
        per_msg(after.0 - before.0),
        per_msg(after.1 - before.1),
        messages as f64 / secs
    );
}

fn fail(what: &str, path: &Path, e: std::io::Error) -> ! {
    eprintln!("{what} {}: {e}", path.display());
    std::process::exit(1);
}

/// This process's user and system CPU, in clock ticks.
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let field = |n: usize| {
        rest.split(' ')
            .nth(n)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    };
    (field(11), field(12))
}

/// `getconf CLK_TCK`: 100 on every Linux the project runs on (std cannot ask `sysconf`).
fn ticks_per_second() -> f64 {
    100.0
}
