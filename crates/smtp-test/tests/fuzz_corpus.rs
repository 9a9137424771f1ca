//! Replays every committed fuzz corpus and regression input (`fuzz/corpus`, `fuzz/regressions`)
//! through the fuzz targets' bodies, so the workspace's own test run covers them on stable.

#[test]
fn fuzz_corpus_replays_clean() {
    let ran = smtp_fuzz::replay_committed();
    assert!(ran >= 4 * 60, "the committed corpus shrank: {ran} inputs");
}
