//! The per-message hot path over an in-memory stream: read, parse, unmask,
//! validate, hand to the application, frame the reply, write, for 16 B,
//! 512 B and 16 KiB payloads, text and binary. One message per wakeup, as at
//! 500 connections with one message in flight each, so each iteration is
//! one `wakeup::serve` call: exactly the code a readable event runs on an
//! open connection, minus the two system calls.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsloop::{
    modes::Echo,
    protocol::writer::client_frame,
    testing::{Harness, MemStream},
    Config,
};

/// Frames prepared per benchmark (cycled through).
const FRAMES: usize = 64;

/// `FRAMES` masked client frames of `size` bytes, and where each ends.
fn client_frames(size: usize, text: bool) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for i in 0..FRAMES {
        let payload: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        bytes.extend(client_frame(if text { 0x81 } else { 0x82 }, &payload, [0x12, 0x34, 0x56, (i as u8) | 1]));
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// One wakeup per iteration: the next frame becomes readable and is served.
fn bench_echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_one_message_per_wakeup");
    for size in [16, 512, 16 << 10] {
        for text in [false, true] {
            for latency in [true, false] {
                if !latency && size != 512 {
                    continue;
                }
                let config = Config { no_latency: !latency, ..Config::default() };
                let (input, ends) = client_frames(size, text);
                let stream = MemStream { input, discard_output: true, ..MemStream::default() };
                let mut harness = Harness::new(config, stream);
                let mut next = 0;
                let name =
                    format!("{}{}", if text { "text" } else { "binary" }, if latency { "" } else { "/no-latency" });
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_function(BenchmarkId::new(name, size), |b| {
                    b.iter(|| {
                        let s = &mut harness.stream;
                        if next == 0 {
                            s.pos = 0;
                        }
                        s.readable_until = ends[next];
                        next = (next + 1) % FRAMES;
                        let served = harness.wakeup(&mut Echo);
                        assert_eq!(served.messages, 1);
                        served.end.is_none()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
