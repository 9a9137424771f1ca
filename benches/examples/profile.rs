//! Runs one workload once, for `valgrind --tool=callgrind`: instruction counts per function.
//!
//! `cargo build --release -p smtp-benches --example profile`, then
//! `valgrind --tool=callgrind target/release/examples/profile WORKLOAD`.
use std::hint::black_box;

use smtp_benches::{
    LineLengths, command_corpus, decode_in_place, frame_and_parse, memchr_split, memcpy_in_reads,
    text_body, unstuff_lines_in_place,
};

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "data" => {
            let body = text_body(0x4ea1, 5_000_000, 10, LineLengths::Realistic);
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
        _ => eprintln!("usage: profile data|command"),
    }
}
