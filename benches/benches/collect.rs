//! smtpkit-server's content helpers against a plain `Vec` append of the same chunks.
//!
//! See `benches/README.md`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_lite::{AsyncReadExt, future};
use smtpkit_server::collect::{Collector, Message};
use smtpkit_server::reader::pipe;

const MIB: usize = 1 << 20;
/// The chunk size an adapter hands out with 64 KiB reads.
const CHUNK: usize = 64 * 1024;

fn message(len: usize) -> Vec<u8> {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    line.iter().copied().cycle().take(len).collect()
}

fn collect(c: &mut Criterion) {
    let body = message(8 * MIB);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group("collect_8MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(body.len() as u64));

    group.bench_function("vec_append", |b| {
        b.iter(|| {
            let mut v = Vec::new();
            for chunk in black_box(&body).chunks(CHUNK) {
                v.extend_from_slice(chunk);
            }
            v
        })
    });
    group.bench_function("collector_memory", |b| {
        b.iter(|| {
            let mut c = Collector::new(16 * MIB, u64::MAX);
            for chunk in black_box(&body).chunks(CHUNK) {
                c.push(chunk).expect("under the maximum");
            }
            let Ok(Message::Memory(v)) = c.finish() else {
                panic!("expected an in-memory message")
            };
            v
        })
    });
    group.bench_function("collector_spill_1MiB", |b| {
        b.iter(|| {
            let mut c = Collector::new(MIB, u64::MAX).with_temp_dir(dir.path());
            for chunk in black_box(&body).chunks(CHUNK) {
                c.push(chunk).expect("under the maximum");
            }
            let Ok(Message::File(f)) = c.finish() else {
                panic!("expected a spilled message")
            };
            f
        })
    });
    group.bench_function("reader_pipe_64KiB", |b| {
        b.iter(|| {
            let (mut writer, mut reader) = pipe(64 * 1024, u64::MAX);
            let body = &body;
            let producer = async move {
                for chunk in black_box(body).chunks(CHUNK) {
                    writer.push(chunk).await.expect("under the maximum");
                }
                writer.finish();
            };
            let consumer = async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0;
                loop {
                    match reader.read(&mut buf).await.expect("a whole message") {
                        0 => return total,
                        n => total += n,
                    }
                }
            };
            let ((), total) = future::block_on(future::zip(producer, consumer));
            assert_eq!(total, body.len());
        })
    });
    group.finish();
}

criterion_group!(benches, collect);
criterion_main!(benches);
