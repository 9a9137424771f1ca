//! `cargo xtask torture`: builds `smtpd` and `smtp-load` (in release unless `--debug`) and runs
//! `smtp-load torture` against the binary, which prints one table row per check and exits
//! non-zero when any check fails. The scenarios live in `crates/smtp-load/src/torture/` (they
//! need TLS and an async client, which xtask keeps out of its own dependencies).

use xshell::{Shell, cmd};

use crate::Result;
use crate::flags::TortureOptions;

pub(crate) fn run(sh: &Shell, opts: &TortureOptions) -> Result<()> {
    let release = (!opts.debug).then_some("--release");
    cmd!(
        sh,
        "cargo build {release...} -p smtpd --bin smtpd -p smtp-load --bin smtp-load"
    )
    .run()?;
    let profile = if opts.debug { "debug" } else { "release" };
    let bin = crate::loadtest::target_dir(&crate::project_root()).join(profile);
    let load = bin.join("smtp-load");
    let smtpd = bin.join("smtpd");
    let smoke = opts.smoke.then_some("--smoke");
    let extra = &opts.extra;
    cmd!(sh, "{load} torture --smtpd {smtpd} {smoke...} {extra...}")
        .run()
        .map_err(|_| "torture: some checks failed (see the table above)")?;
    Ok(())
}
