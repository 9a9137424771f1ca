//! Runs one workload once, for `valgrind --tool=callgrind`: instruction counts per function.
//!
//! `cargo build --release -p smtp-benches --example profile`, then
//! `valgrind --tool=callgrind --branch-sim=yes --toggle-collect='smtp_benches::FUNCTION'
//! target/release/examples/profile WORKLOAD`, where WORKLOAD is a 5 MB body (`realistic`,
//! `long`, `base64`, `qp`: memcpy, the line-at-a-time un-stuffer and the decoder run over it
//! in 8 KiB reads) or the command corpus (`command`: memchr split, then framing and parsing).
//!
//! `profile time WORKLOAD [MB]` instead times the same functions over a 50 MB body (or one of
//! MB megabytes: 1 fits in the L2 cache, so the figure is the code's, not the memory's; or the
//! command corpus), alternating them for 30 rounds, and prints the fastest pass of each and the
//! ratios.
//! On a shared machine other work only ever adds time to a pass, so the fastest of many
//! alternated passes is the figure least moved by the load; criterion's means are not.
use std::hint::black_box;
use std::time::{Duration, Instant};

use smtp_benches::{
    LineLengths, base64_message, command_corpus, decode_in_place, frame_and_parse, memchr_split,
    memcpy_in_reads, quoted_printable_message, text_body, unstuff_lines_in_place,
};

/// Rounds of alternated passes in `time` mode: enough for each function to get a pass with
/// no interruption on a loaded machine, few enough to take under a minute.
const ROUNDS: usize = 30;

/// The fastest of [`ROUNDS`] passes of each function, run in turn; printed with `bytes` per
/// second and the ratio to the first function (the baseline).
fn fastest(bytes: usize, passes: &mut [(&str, &mut dyn FnMut())]) {
    let mut best = vec![Duration::MAX; passes.len()];
    for _ in 0..ROUNDS {
        for ((_, pass), best) in passes.iter_mut().zip(&mut best) {
            let start = Instant::now();
            pass();
            *best = (*best).min(start.elapsed());
        }
    }
    let first = best[0];
    for ((name, _), best) in passes.iter().zip(&best) {
        let gib = bytes as f64 / best.as_secs_f64() / f64::from(1u32 << 30);
        let ratio = first.as_secs_f64() / best.as_secs_f64();
        println!("{name:>24}: {gib:6.2} GiB/s, {ratio:.2}x the first");
    }
}

fn time(corpus: &str, size: Option<usize>) {
    if corpus == "command" {
        let corpus = command_corpus(0x5eed_c0de, 4_000);
        let bytes = &corpus.bytes;
        fastest(
            bytes.len(),
            &mut [
                ("memchr_split", &mut || {
                    black_box(memchr_split(bytes));
                }),
                ("frame_and_parse", &mut || {
                    black_box(frame_and_parse(bytes));
                }),
            ],
        );
        return;
    }
    let body = match corpus {
        "realistic" => text_body(
            0x4ea1,
            size.unwrap_or(50_000_000),
            10,
            LineLengths::Realistic,
        ),
        "long" => text_body(0xda7a, size.unwrap_or(50_000_000), 10, LineLengths::Long),
        "base64" => base64_message(0xb64, size.unwrap_or(10_000_000)),
        _ => quoted_printable_message(0x9b, size.unwrap_or(10_000_000)),
    };
    let wire = &body.wire;
    let mut buf = Vec::new();
    fastest(
        wire.len(),
        &mut [
            ("memcpy", &mut || {
                black_box(memcpy_in_reads(wire, 8192, &mut buf));
            }),
            ("line_unstuffer", &mut || {
                black_box(unstuff_lines_in_place(wire, 8192));
            }),
            ("dot_decoder", &mut || {
                black_box(decode_in_place(wire, 8192));
            }),
        ],
    );
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    if which == "time" {
        let size = std::env::args()
            .nth(3)
            .and_then(|mb| mb.parse::<usize>().ok());
        return time(
            &std::env::args().nth(2).unwrap_or_default(),
            size.map(|mb| mb * 1_000_000),
        );
    }
    match which.as_str() {
        corpus @ ("realistic" | "long" | "base64" | "qp") => {
            let body = match corpus {
                "realistic" => text_body(0x4ea1, 5_000_000, 10, LineLengths::Realistic),
                "long" => text_body(0xda7a, 5_000_000, 10, LineLengths::Long),
                "base64" => base64_message(0xb64, 5_000_000),
                _ => quoted_printable_message(0x9b, 5_000_000),
            };
            let mut buf = Vec::new();
            black_box(memcpy_in_reads(&body.wire, 8192, &mut buf));
            black_box(unstuff_lines_in_place(&body.wire, 8192));
            black_box(decode_in_place(&body.wire, 8192));
        }
        "command" => {
            let corpus = command_corpus(0x5eed_c0de, 4_000);
            black_box(memchr_split(&corpus.bytes));
            black_box(frame_and_parse(&corpus.bytes));
            eprintln!("{} commands", corpus.commands);
        }
        _ => eprintln!("usage: profile [time] realistic|long|base64|qp|command [MB]"),
    }
}
