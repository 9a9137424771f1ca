//! Runs one workload once, for `valgrind --tool=callgrind`: instruction counts per function.
//!
//! `cargo build --release -p smtp-benches --example profile`, then
//! `valgrind --tool=callgrind --branch-sim=yes --toggle-collect='smtp_benches::FUNCTION'
//! target/release/examples/profile WORKLOAD`, where WORKLOAD is a 5 MB body (`realistic`,
//! `long`, `base64`, `qp`: memcpy, the line-at-a-time un-stuffer and the decoder run over it
//! in 8 KiB reads) or the command corpus (`command`: memchr split, then framing and parsing).
use std::hint::black_box;

use smtp_benches::{
    LineLengths, base64_message, command_corpus, decode_in_place, frame_and_parse, memchr_split,
    memcpy_in_reads, quoted_printable_message, text_body, unstuff_lines_in_place,
};

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
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
        _ => eprintln!("usage: profile realistic|long|base64|qp|command"),
    }
}
