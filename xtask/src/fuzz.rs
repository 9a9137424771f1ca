//! `cargo xtask fuzz`: cargo-fuzz on the stable toolchain.

use std::time::Instant;

use xshell::{Shell, cmd};

use crate::Result;

/// Seconds per target in `ci` and `fuzz-smoke`.
pub(crate) const SMOKE_SECS: u64 = 20;

/// Fuzzes each of `targets` for `secs` seconds, installing cargo-fuzz first if it is missing.
pub(crate) fn run(sh: &Shell, targets: &[String], secs: u64) -> Result<()> {
    ensure_cargo_fuzz(sh)?;
    let _dir = sh.push_dir("fuzz");
    for target in targets {
        // libFuzzer adds new inputs to the first corpus directory: a scratch one under target/,
        // so the committed seeds in corpus/<target> stay small and hand-picked.
        let scratch = format!("target/corpus/{target}");
        sh.create_dir(&scratch)?;
        let seeds = format!("corpus/{target}");
        let time = format!("-max_total_time={secs}");
        println!("--> fuzz {target} for {secs} s");
        let started = Instant::now();
        cmd!(
            sh,
            "cargo fuzz run {target} {scratch} {seeds} -- -dict=smtp.dict {time} -print_final_stats=1"
        )
        // Stable rustc accepts cargo-fuzz's -Z flags only with this set; no nightly needed.
        .env("RUSTC_BOOTSTRAP", "1")
        // cargo-fuzz builds with sanitizer flags into fuzz/target; an inherited target dir
        // would mix those artifacts with normal builds (and an empty one makes it panic).
        .env_remove("CARGO_TARGET_DIR")
        .run()
        .map_err(|e| format!("fuzz target `{target}` failed (crash input in fuzz/artifacts/{target}/): {e}"))?;
        println!("--> fuzz {target}: ok in {:.1?}", started.elapsed());
    }
    Ok(())
}

fn ensure_cargo_fuzz(sh: &Shell) -> Result<()> {
    if cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        return Ok(());
    }
    println!("--> installing cargo-fuzz");
    cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    Ok(())
}
