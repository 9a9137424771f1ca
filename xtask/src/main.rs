//! Project automation, run as `cargo xtask <command>` (see the cargo-xtask pattern).
//!
//! Commands: `ci`, `tidy`, `fuzz`, `fuzz-smoke`, `bench`, `loadtest`, `queuetest`, `torture`. `cargo xtask help` lists
//! their flags. Everything runs from the workspace root, whatever the current directory.

mod flags;
mod fuzz;
mod loadtest;
mod queuetest;
mod tidy;
mod torture;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use xshell::{Shell, cmd};

use crate::flags::Task;

/// Errors are reported, not matched on, so one boxed type is enough.
pub(crate) type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match flags::parse(&args) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match task {
        Task::Help => {
            println!("{}", flags::USAGE);
            Ok(())
        }
        Task::Ci => ci(&sh),
        Task::Tidy => {
            tidy::check(&project_root())?;
            println!("tidy: ok");
            Ok(())
        }
        Task::Fuzz { target, secs } => {
            let targets = match target {
                Some(t) => vec![t],
                None => tidy::fuzz_targets(&project_root())?,
            };
            fuzz::run(&sh, &targets, secs)
        }
        Task::Bench { baseline } => {
            match baseline {
                Some(name) => {
                    cmd!(sh, "cargo bench -p smtp-benches -- --save-baseline {name}").run()?;
                }
                None => cmd!(sh, "cargo bench -p smtp-benches").run()?,
            }
            Ok(())
        }
        Task::Loadtest(opts) => loadtest::run(&sh, &opts),
        Task::Queuetest(opts) => queuetest::run(&sh, &opts),
        Task::Torture(opts) => torture::run(&sh, &opts),
    }
}

/// The whole CI pipeline, in order, stopping at the first failure.
fn ci(sh: &Shell) -> Result<()> {
    let root = project_root();
    let started = Instant::now();
    step("fmt", || Ok(cmd!(sh, "cargo fmt --all -- --check").run()?))?;
    step("clippy", || {
        Ok(cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?)
    })?;
    step("test", || Ok(cmd!(sh, "cargo test --workspace").run()?))?;
    step("doc", || {
        Ok(cmd!(sh, "cargo doc --workspace --no-deps")
            .env("RUSTDOCFLAGS", "-D warnings")
            .run()?)
    })?;
    step("tidy", || tidy::check(&root))?;
    // Packages the published crates together: each one's path dependencies on the others are
    // served from a temporary local registry of the fresh packages, so this works before any
    // of them is on crates.io. Verification builds each .crate on its own, from the packaged
    // sources and the versions a new user would resolve: it catches a file left out of the
    // package, a missing version on a path dependency and a feature that only builds inside
    // the workspace. It does not run the packaged tests (their dev-dependencies on unpublished
    // crates are stripped) and cannot tell whether the names are still free on crates.io.
    step("package", || {
        forget_packaged_sources()?;
        forget_packaged_builds(&root.join("target"))?;
        let packages = tidy::PUBLISHED.iter().flat_map(|name| ["-p", name]);
        Ok(cmd!(sh, "cargo package --allow-dirty {packages...}").run()?)
    })?;
    step("fuzz corpus replay", || {
        Ok(cmd!(sh, "cargo test --manifest-path fuzz/Cargo.toml").run()?)
    })?;
    if std::env::var_os("XTASK_SKIP_FUZZ").is_some_and(|v| v == "1") {
        println!("==> fuzz smoke: skipped (XTASK_SKIP_FUZZ=1)");
    } else {
        step("fuzz smoke", || {
            fuzz::run(sh, &tidy::fuzz_targets(&root)?, fuzz::SMOKE_SECS)
        })?;
    }
    // On the debug binaries `cargo test` built: a release build of smtpd and everything below
    // it was the longest step of CI (a third of the run on two cores). The smoke checks are about
    // behaviour under hostile load, not speed; Argon2 is optimized in dev builds (Cargo.toml), so
    // the AUTH storm checks what it checks in release. Benches are not built either: clippy
    // `--all-targets` has type-checked them.
    step("torture smoke", || {
        torture::run(
            sh,
            &flags::TortureOptions {
                smoke: true,
                debug: true,
                extra: Vec::new(),
            },
        )
    })?;
    println!("==> ci: all steps passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Runs one named CI step and prints how long it took.
/// Removes what earlier `cargo package` runs unpacked from their temporary registries
/// (`$CARGO_HOME/registry/{src,cache}/-HASH/smtpkit-*`). Cargo unpacks a `.crate` only when no
/// copy of the same name and version is there yet, so without this the verification of one
/// crate builds against another crate's sources from an earlier run, not the fresh package.
/// Registries of crates.io are named after their host and are never touched.
fn forget_packaged_sources() -> Result<()> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cargo"),
            None => return Ok(()),
        },
    };
    for kind in ["src", "cache"] {
        let Ok(registries) = std::fs::read_dir(home.join("registry").join(kind)) else {
            continue;
        };
        for registry in registries.flatten() {
            if !registry.file_name().to_string_lossy().starts_with('-') {
                continue;
            }
            for entry in std::fs::read_dir(registry.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !tidy::PUBLISHED
                    .iter()
                    .any(|p| name.starts_with(&format!("{p}-")))
                {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}

/// Makes cargo rebuild what earlier `cargo package` runs compiled from their temporary
/// registries. Cargo stamps packaged files with one fixed time, so a fresh package of the same
/// version looks unchanged to the build of an earlier one (which named those sources in its
/// dep-info) and the stale library would be linked: removing the unit's fingerprint forces the
/// build. Units built from the workspace's own sources are left alone.
fn forget_packaged_builds(target: &Path) -> Result<()> {
    let Ok(deps) = std::fs::read_dir(target.join("debug").join("deps")) else {
        return Ok(());
    };
    for entry in deps.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(unit) = name.strip_suffix(".d") else {
            continue;
        };
        let Some((krate, _hash)) = unit.rsplit_once('-') else {
            continue;
        };
        if !tidy::PUBLISHED.iter().any(|p| p.replace('-', "_") == krate) {
            continue;
        }
        let dep_info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !dep_info.contains("/registry/src/-") {
            continue;
        }
        let fingerprint = target
            .join("debug")
            .join(".fingerprint")
            .join(unit.replacen(krate, &krate.replace('_', "-"), 1));
        if fingerprint.is_dir() {
            std::fs::remove_dir_all(&fingerprint)?;
        }
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    let took = started.elapsed();
    match &result {
        Ok(()) => println!("==> {name}: ok in {took:.1?}"),
        Err(e) => println!("==> {name}: FAILED after {took:.1?}: {e}"),
    }
    result.map_err(|e| format!("step `{name}` failed: {e}").into())
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
