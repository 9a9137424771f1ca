//! Reply encoding (single and multi-line) and parsing of an EHLO response.
//!
//! See `benches/README.md`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtp_benches::server_config;
use smtpkit_proto::{EnhancedCode, Event, Reply, ReplyCode, Server};

/// The EHLO response a default server sends, taken from a real session so the parse benchmark
/// reads what clients of this server read.
fn ehlo_response() -> Vec<u8> {
    let now = Instant::now();
    let mut server = Server::new(server_config(25 * 1024 * 1024), now);
    let connect = server.handle_input(now, b"");
    assert_eq!(connect.event, Some(Event::Connect));
    server.accept(now).expect("connect decision");
    let greeting = server.poll_transmit().len();
    server.advance_transmit(greeting);
    let input = b"EHLO client.example.com\r\n";
    let hello = server.handle_input(now, input);
    assert!(matches!(hello.event, Some(Event::Hello { .. })));
    server.accept(now).expect("hello decision");
    server.poll_transmit().to_vec()
}

fn reply(c: &mut Criterion) {
    let single = Reply::new(ReplyCode::OK, "Recipient OK")
        .expect("valid text")
        .with_enhanced(EnhancedCode::RECIPIENT_OK);
    let ehlo_bytes = ehlo_response();
    let (ehlo, used) = Reply::parse(&ehlo_bytes)
        .expect("the server's EHLO reply parses")
        .expect("complete");
    assert_eq!(used, ehlo_bytes.len());
    eprintln!(
        "EHLO response: {} lines, {} bytes",
        ehlo.lines().count(),
        ehlo_bytes.len()
    );
    let mut out = Vec::with_capacity(1024);
    ehlo.encode(false, &mut out);
    assert_eq!(
        out, ehlo_bytes,
        "encoding the parsed EHLO reply gives it back"
    );

    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_single_line", |b| {
        b.iter(|| {
            out.clear();
            black_box(&single).encode(true, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("encode_ehlo", |b| {
        b.iter(|| {
            out.clear();
            black_box(&ehlo).encode(false, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("parse_ehlo", |b| {
        b.iter(|| Reply::parse(black_box(&ehlo_bytes)))
    });
    group.finish();
}

criterion_group!(benches, reply);
criterion_main!(benches);
