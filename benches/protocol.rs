//! The per-message hot path over in-memory streams: read, unmask, validate,
//! dispatch to the application, write, for 16 B, 512 B and 16 KiB payloads,
//! text and binary. One message per wakeup, as at 500 connections with one
//! message in flight each, so each iteration is one `cycle::serve` call:
//! exactly the code a readable event runs, minus the two syscalls.

mod support;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::MemSocket;
use tungstenite::{
    protocol::{
        frame::{
            coding::{Data, OpCode},
            Frame,
        },
        Role,
    },
    WebSocket,
};
use wsloop::{cycle, metrics::Metrics, ws::websocket_config, Config};

/// Frames prepared per benchmark (cycled through).
const FRAMES: usize = 64;

/// `FRAMES` masked client frames of `size` bytes, and where each ends.
fn client_frames(size: usize, text: bool) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for i in 0..FRAMES {
        let payload: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
        let mut frame = Frame::message(payload, opcode, true);
        frame.header_mut().mask = Some([0x12, 0x34, 0x56, (i as u8) | 1]);
        frame.format(&mut bytes).expect("format into a Vec");
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
                let socket = MemSocket { input, ..MemSocket::default() };
                let mut ws = WebSocket::from_raw_socket(socket, Role::Server, Some(websocket_config(&config)));
                let mut metrics = Metrics::default();
                let mut close_code = 0;
                let mut next = 0;
                let name =
                    format!("{}{}", if text { "text" } else { "binary" }, if latency { "" } else { "/no-latency" });
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_function(BenchmarkId::new(name, size), |b| {
                    b.iter(|| {
                        let s = ws.get_mut();
                        if next == 0 {
                            s.pos = 0;
                        }
                        s.readable_until = ends[next];
                        next = (next + 1) % FRAMES;
                        s.output.clear();
                        let wakeup = cycle::serve(&mut ws, &mut close_code, &config, &mut metrics);
                        // What drive_open does after the flush.
                        if let Some(start) = wakeup.first_complete {
                            metrics.record_latency(cycle::nanos(Instant::now() - start), wakeup.served);
                        }
                        assert_eq!(wakeup.served, 1);
                        wakeup.outcome
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
