//! `cargo xtask tidy`: repository invariants that neither the compiler nor clippy checks.
//!
//! Also a test (`cargo test -p xtask`), so `cargo test --workspace` enforces it. Each check
//! collects every violation, with file and line, before failing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// Crates that would mean smtpkit-proto does IO or runs tasks (architecture invariant: sans-IO).
const FORBIDDEN_DEPS: &[&str] = &["tokio", "smol", "mio", "async-io", "async-std", "socket2"];

/// Code that reads the clock, opens sockets, spawns threads, prints or panics on `None`.
/// The core must get time, bytes and errors from its caller.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "std::net::TcpStream",
    "std::thread::spawn",
    "println!",
    "dbg!",
    ".unwrap()",
];

/// The crates meant for crates.io, in dependency order. `cargo xtask ci` packages them;
/// every other member of `crates/` must say `publish = false`.
pub(crate) const PUBLISHED: &[&str] = &[
    "smtpkit-proto",
    "smtpkit-server",
    "smtpkit-tokio",
    "smtpkit-smol",
    "smtpkit-mio",
];

/// What crates.io shows for a crate, and what the license asks to ship with it.
const PUBLISHED_KEYS: &[&str] = &["description", "readme", "keywords", "categories"];
const PUBLISHED_FILES: &[&str] = &["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// Runs every check; the error lists all violations.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    core_dependencies(root, &mut problems)?;
    core_sources(root, &mut problems)?;
    fuzz_targets_listed(root, &mut problems)?;
    transcripts_end_in_newline(root, &mut problems)?;
    no_trailing_whitespace(root, &mut problems)?;
    published_crates(root, &mut problems)?;
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = format!("tidy found {} problem(s):", problems.len());
    for p in &problems {
        let _ = write!(message, "\n  {p}");
    }
    Err(message.into())
}

/// The names of `fuzz/fuzz_targets/*.rs`, sorted.
pub(crate) fn fuzz_targets(root: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = files_with_extension(&root.join("fuzz/fuzz_targets"), "rs")?
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

fn core_dependencies(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "smtpkit-proto",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    problems.extend(forbidden_deps(&String::from_utf8_lossy(&output.stdout)));
    Ok(())
}

/// Forbidden crates in `cargo tree --prefix none` output (one `name vX.Y.Z ...` per line).
fn forbidden_deps(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN_DEPS.contains(name))
        .map(|name| {
            format!("smtpkit-proto depends on `{name}` (cargo tree -p smtpkit-proto -i {name})")
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn core_sources(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let src = root.join("crates/smtpkit-proto/src");
    for file in files_with_extension(&src, "rs")? {
        let text = fs::read_to_string(&file)?;
        for (line, pattern) in forbidden_code(&text) {
            problems.push(format!(
                "{}:{line}: `{pattern}` in smtpkit-proto outside tests",
                relative(root, &file)
            ));
        }
    }
    Ok(())
}

/// `(line number, pattern)` for each forbidden pattern in `text`. Scanning stops at the
/// `#[cfg(test)]` line (the test module comes last) and skips `//` lines (comments, doc examples).
fn forbidden_code(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        for pattern in FORBIDDEN_IN_CORE {
            if line.contains(pattern) {
                found.push((i + 1, *pattern));
            }
        }
    }
    found
}

fn fuzz_targets_listed(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let manifest = fs::read_to_string(root.join("fuzz/Cargo.toml"))?;
    let readme = fs::read_to_string(root.join("fuzz/README.md"))?;
    let bins = bin_names(&manifest);
    for target in fuzz_targets(root)? {
        if !bins.contains(&target) {
            problems.push(format!(
                "fuzz/fuzz_targets/{target}.rs: no [[bin]] named `{target}` in fuzz/Cargo.toml"
            ));
        }
        let row = format!("| `{target}` |");
        if !readme.lines().any(|l| l.starts_with(&row)) {
            problems.push(format!(
                "fuzz/fuzz_targets/{target}.rs: no `{row}` row in the fuzz/README.md table"
            ));
        }
    }
    Ok(())
}

/// The `name = "..."` of every `[[bin]]` section in a manifest.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            let value = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"'));
            if let Some(name) = value {
                names.push(name.to_owned());
            }
        }
    }
    names
}

fn published_crates(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(root.join("crates"))? {
        let dir = entry?.path();
        let manifest_path = dir.join("Cargo.toml");
        let Ok(manifest) = fs::read_to_string(&manifest_path) else {
            continue;
        };
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let unpublished = manifest.lines().any(|l| l.trim() == "publish = false");
        let listed = PUBLISHED.contains(&name);
        if unpublished && listed {
            problems.push(format!(
                "crates/{name}: in PUBLISHED but says `publish = false`"
            ));
        }
        if unpublished || listed {
            if !listed {
                continue;
            }
        } else {
            problems.push(format!(
                "crates/{name}: add it to PUBLISHED in xtask/src/tidy.rs, or say `publish = false`"
            ));
            continue;
        }
        for key in PUBLISHED_KEYS {
            if !manifest.lines().any(|l| l.starts_with(&format!("{key} ="))) {
                problems.push(format!(
                    "crates/{name}/Cargo.toml: no `{key}` (crates.io shows it)"
                ));
            }
        }
        for file in PUBLISHED_FILES {
            if !dir.join(file).exists() {
                problems.push(format!("crates/{name}: no {file} to ship in the package"));
            }
        }
    }
    Ok(())
}

fn transcripts_end_in_newline(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let dir = root.join("crates/smtpkit-proto/tests/transcripts");
    for file in files_with_extension(&dir, "smtp")? {
        let bytes = fs::read(&file)?;
        if !bytes.ends_with(b"\n") {
            let line = bytes.split(|&b| b == b'\n').count();
            problems.push(format!(
                "{}:{line}: transcript does not end with a newline",
                relative(root, &file)
            ));
        }
    }
    Ok(())
}

fn no_trailing_whitespace(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let mut files = Vec::new();
    rust_sources(root, &mut files)?;
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file)?;
        for (i, line) in text.lines().enumerate() {
            if line.ends_with([' ', '\t']) {
                problems.push(format!(
                    "{}:{}: trailing whitespace",
                    relative(root, &file),
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

/// Every `*.rs` under `dir`, skipping build output, VCS data and hidden directories.
fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let skip = name.starts_with('.')
                || matches!(
                    name.as_ref(),
                    "target" | "artifacts" | "corpus" | "regressions"
                );
            if !skip {
                rust_sources(&path, out)?;
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Files in `dir` (recursively) whose name ends in `.ext`; none if `dir` does not exist.
fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_with_extension(&path, ext)?);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository passes tidy: `cargo test --workspace` fails on any violation.
    #[test]
    fn tidy() {
        if let Err(e) = check(&crate::project_root()) {
            panic!("{e}");
        }
    }

    #[test]
    fn finds_forbidden_code() {
        let text = "use std::time::Instant;\n\
                    // Instant::now() in a comment is fine\n\
                    fn f() { let t = Instant::now(); x.unwrap(); }\n\
                    #[cfg(test)]\n\
                    mod tests { fn g() { println!(); } }\n";
        assert_eq!(
            forbidden_code(text),
            [(3, "Instant::now"), (3, ".unwrap()")]
        );
    }

    #[test]
    fn finds_forbidden_deps() {
        let tree = "smtpkit-proto v0.1.0 (/x)\nmemchr v2.8.3\ntokio v1.48.0\nnom v8.0.0\ntokio v1.48.0 (*)\n";
        assert_eq!(forbidden_deps(tree).len(), 1);
        assert!(forbidden_deps(tree)[0].contains("`tokio`"));
        assert!(forbidden_deps("mio-extras v1\nsmolstr v0.2\n").is_empty());
    }

    #[test]
    fn reads_bin_names() {
        let manifest = "[package]\nname = \"smtp-fuzz\"\n\n[[bin]]\nname = \"command\"\npath = \"x\"\n\
                        [[bin]]\nname=\"reply\"\n[dependencies]\nname = \"nope\"\n";
        assert_eq!(bin_names(manifest), ["command", "reply"]);
    }
}
