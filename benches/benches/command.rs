//! Command parsing against a memchr line split, and whole sessions through a `Server`.
//!
//! See `benches/README.md`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtp_benches::{
    command_corpus, frame_and_parse, memchr_split, run_sessions, server_config, session_corpus,
};
use smtpkit_proto::InBuf;

/// Sessions in the command corpus: about 1 MB of command lines.
const COMMAND_SESSIONS: usize = 4_000;
/// Sessions in the session corpus: a few MB with the small messages.
const SESSIONS: usize = 400;

fn command_parse(c: &mut Criterion) {
    let corpus = command_corpus(0x5eed_c0de, COMMAND_SESSIONS);
    assert_eq!(frame_and_parse(&corpus.bytes), (corpus.commands, 0));
    eprintln!(
        "command corpus: {} commands, {} bytes, {:.1} bytes/command",
        corpus.commands,
        corpus.bytes.len(),
        corpus.bytes.len() as f64 / corpus.commands as f64
    );
    let bytes = corpus.bytes.as_slice();

    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("memchr_line_split", |b| {
        b.iter(|| memchr_split(black_box(bytes)))
    });
    group.bench_function("frame_and_parse", |b| {
        b.iter(|| frame_and_parse(black_box(bytes)))
    });
    group.finish();

    // The same two, counted in commands: the per-command cost is what a server pays.
    let mut group = c.benchmark_group("command_parse_per_command");
    group.throughput(Throughput::Elements(corpus.commands as u64));
    group.bench_function("memchr_line_split", |b| {
        b.iter(|| memchr_split(black_box(bytes)))
    });
    group.bench_function("frame_and_parse", |b| {
        b.iter(|| frame_and_parse(black_box(bytes)))
    });
    group.finish();
}

fn session(c: &mut Criterion) {
    let corpus = session_corpus(0x5e55_1011, SESSIONS);
    let config = server_config(25 * 1024 * 1024);
    eprintln!(
        "session corpus: {} sessions, {} commands, {} messages, {} bytes",
        corpus.sessions.len(),
        corpus.commands,
        corpus.messages,
        corpus.bytes.len()
    );

    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Bytes(corpus.bytes.len() as u64));
    group.bench_function("memchr_line_split", |b| {
        b.iter(|| memchr_split(black_box(&corpus.bytes)))
    });
    for (name, read) in [("server/8KiB", 8 * 1024), ("server/64KiB", 64 * 1024)] {
        let mut inbuf = InBuf::new(read, read);
        let stats = run_sessions(&config, &corpus, &mut inbuf);
        assert_eq!(stats.rejected, 0);
        assert_eq!(stats.closed, corpus.sessions.len());
        group.bench_function(name, |b| {
            b.iter(|| run_sessions(&config, black_box(&corpus), &mut inbuf))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("session_per_command");
    group.throughput(Throughput::Elements(corpus.commands as u64));
    let read = 64 * 1024;
    let mut inbuf = InBuf::new(read, read);
    group.bench_function("server/64KiB", |b| {
        b.iter(|| run_sessions(&config, black_box(&corpus), &mut inbuf))
    });
    group.finish();
}

criterion_group!(benches, command_parse, session);
criterion_main!(benches);
