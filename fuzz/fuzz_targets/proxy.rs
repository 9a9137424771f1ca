//! `proxy` fuzz target: see `smtp_fuzz::proxy` for what it feeds and asserts.
//!
//! Built by `cargo fuzz` (which sets `--cfg fuzzing`) it is a libFuzzer target. Built plainly,
//! it replays the files named on its command line, so a crash found in CI can be rerun under a
//! debugger without the fuzzing toolchain.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smtp_fuzz::proxy(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    smtp_fuzz::replay_main(smtp_fuzz::proxy)
}
