//! The conformance suite against every adapter: one line per adapter, plus a check that the
//! adapters' transcripts are identical.

use smtp_test::adapters::{Mio, Smol, Tokio};

smtp_test::conformance_suite!(tokio_adapter, smtp_test::adapters::Tokio);
smtp_test::conformance_suite!(smol_adapter, smtp_test::adapters::Smol);
smtp_test::conformance_suite!(mio_adapter, smtp_test::adapters::Mio);

/// Every adapter read the same bytes and made the same application calls in every
/// conversation (the per-adapter tests check them against the expectations; this one shows
/// the two transcripts side by side when adapters disagree).
#[test]
fn adapters_agree() {
    let mut differences = smtp_test::compare::<Tokio, Smol>();
    differences.extend(smtp_test::compare::<Tokio, Mio>());
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
