//! DATA content decoding against a plain memcpy of the same bytes in the same pieces.
//!
//! See `benches/README.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use smtp_benches::{
    Body, LineLengths, SessionStats, base64_message, body, data_session, decode_in_place,
    decode_in_reads, memcpy_in_reads, quoted_printable_message, run_session, server_config,
    text_body, unstuff_lines_in_place,
};
use smtpkit_proto::InBuf;

const MB: usize = 1_000_000;
const KIB: usize = 1024;
const READS: [(&str, usize); 2] = [("8KiB", 8 * KIB), ("64KiB", 64 * KIB)];

/// The baselines (memcpy of the same reads, the line-at-a-time un-stuffer) and the decoder,
/// in place and behind the copy of each read: the functions of every body group.
fn decode_benches<M: criterion::measurement::Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    body: &Body,
    reads: &[(&str, usize)],
) {
    let mut buf = Vec::new();
    for &(name, read) in reads {
        let stats = decode_in_reads(&body.wire, read, &mut buf);
        assert_eq!(stats.content, body.content_len);
        assert_eq!(stats.end, Some(body.wire.len()));
        let stats = unstuff_lines_in_place(&body.wire, read);
        assert_eq!(stats.content, body.content_len);
        assert_eq!(stats.end, Some(body.wire.len()));
        group.bench_function(format!("memcpy/{name}"), |b| {
            b.iter(|| memcpy_in_reads(black_box(&body.wire), read, &mut buf))
        });
        group.bench_function(format!("line_unstuffer/{name}"), |b| {
            b.iter(|| unstuff_lines_in_place(black_box(&body.wire), read))
        });
        group.bench_function(format!("dot_decoder/{name}"), |b| {
            b.iter(|| decode_in_place(black_box(&body.wire), read))
        });
        group.bench_function(format!("memcpy_and_dot_decoder/{name}"), |b| {
            b.iter(|| decode_in_reads(black_box(&body.wire), read, &mut buf))
        });
    }
}

/// One group per corpus: `name`, its wire bytes as throughput, ten samples (each iteration of
/// a 50 MB body takes milliseconds).
fn corpus_group(c: &mut Criterion, name: &str, body: &Body, reads: &[(&str, usize)]) {
    eprintln!(
        "{name}: {} wire bytes, {} lines ({:.0} octets on average), {} stuffed",
        body.wire.len(),
        body.lines,
        body.content_len as f64 / body.lines as f64,
        body.stuffed
    );
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.throughput(Throughput::Bytes(body.wire.len() as u64));
    decode_benches(&mut group, body, reads);
    group.finish();
}

fn data_corpora(c: &mut Criterion) {
    let realistic = text_body(0x4ea1, 50 * MB, 10, LineLengths::Realistic);
    corpus_group(c, "data_realistic_50MB", &realistic, &READS[..1]);
    let base64 = base64_message(0xb64, 10 * MB);
    corpus_group(c, "data_base64_10MB", &base64, &READS[..1]);
    let qp = quoted_printable_message(0x9b, 10 * MB);
    corpus_group(c, "data_quoted_printable_10MB", &qp, &READS[..1]);
}

fn data_50mb(c: &mut Criterion) {
    let body = body(0xda7a, 50 * MB, 10);
    corpus_group(c, "data_50MB", &body, &READS);

    // The whole server in DATA mode: framing of the few commands, then every content chunk
    // reported as an event, as an adapter's loop sees it.
    let input = data_session(&body);
    let config = server_config(2 * 50 * MB as u64);
    let mut group = c.benchmark_group("server_data_50MB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(input.len() as u64));
    let mut buf = Vec::new();
    for (name, read) in READS {
        let mut inbuf = InBuf::new(read, read);
        let mut stats = SessionStats::default();
        run_session(&config, Instant::now(), &input, &mut inbuf, &mut stats);
        assert_eq!((stats.rejected, stats.closed), (0, 1));
        assert_eq!(stats.content, body.content_len);
        group.bench_function(format!("memcpy/{name}"), |b| {
            b.iter(|| memcpy_in_reads(black_box(&input), read, &mut buf))
        });
        group.bench_function(format!("server/{name}"), |b| {
            b.iter(|| {
                let mut stats = SessionStats::default();
                run_session(
                    &config,
                    Instant::now(),
                    black_box(&input),
                    &mut inbuf,
                    &mut stats,
                );
                stats
            })
        });
    }
    group.finish();
}

fn data_small(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_small");
    group.measurement_time(Duration::from_secs(2));
    for (size_name, size) in [("1KiB", KIB), ("64KiB", 64 * KIB)] {
        for (stuff_name, per_mille) in [("0pct", 0), ("10pct", 100)] {
            let body = body(0x5a11 + size as u64 + per_mille as u64, size, per_mille);
            group.throughput(Throughput::Bytes(body.wire.len() as u64));
            let label = format!("{size_name}_{stuff_name}");
            eprintln!(
                "{label} body: {} wire bytes, {} lines, {} stuffed",
                body.wire.len(),
                body.lines,
                body.stuffed
            );
            let mut buf = Vec::new();
            let read = 8 * KIB;
            group.bench_function(format!("{label}/memcpy/8KiB"), |b| {
                b.iter(|| memcpy_in_reads(black_box(&body.wire), read, &mut buf))
            });
            group.bench_function(format!("{label}/dot_decoder/8KiB"), |b| {
                b.iter(|| decode_in_reads(black_box(&body.wire), read, &mut buf))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, data_corpora, data_50mb, data_small);
criterion_main!(benches);
