//! DATA content decoding against a plain memcpy of the same bytes in the same pieces.
//!
//! See `benches/README.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use smtp_benches::{
    Body, SessionStats, body, data_session, decode_in_place, decode_in_reads, memcpy_in_reads,
    run_session, server_config,
};
use smtpkit_proto::InBuf;

const MB: usize = 1_000_000;
const KIB: usize = 1024;
const READS: [(&str, usize); 2] = [("8KiB", 8 * KIB), ("64KiB", 64 * KIB)];

/// memcpy, decoder with reads, decoder in place: the three functions of every data group.
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
        group.bench_function(format!("memcpy/{name}"), |b| {
            b.iter(|| memcpy_in_reads(black_box(&body.wire), read, &mut buf))
        });
        group.bench_function(format!("dot_decoder/{name}"), |b| {
            b.iter(|| decode_in_reads(black_box(&body.wire), read, &mut buf))
        });
        group.bench_function(format!("dot_decoder_no_copy/{name}"), |b| {
            b.iter(|| decode_in_place(black_box(&body.wire), read))
        });
    }
}

fn data_50mb(c: &mut Criterion) {
    let body = body(0xda7a, 50 * MB, 10);
    eprintln!(
        "50 MB body: {} wire bytes, {} lines, {} stuffed",
        body.wire.len(),
        body.lines,
        body.stuffed
    );
    let mut group = c.benchmark_group("data_50MB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(body.wire.len() as u64));
    decode_benches(&mut group, &body, &READS);
    group.finish();

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

criterion_group!(benches, data_50mb, data_small);
criterion_main!(benches);
