//! loadgen's per-message work outside the kernel: patching the stamp into a
//! premasked frame (send), and parsing and checking an echo in place
//! (receive), for 16 B to 16 KiB payloads. The modules are loadgen's own
//! source files, compiled into this bench.

#[allow(dead_code, unused_imports)]
#[path = "../loadgen/frames.rs"]
mod frames;
#[allow(dead_code, unused_imports)]
#[path = "../loadgen/inbound.rs"]
mod inbound;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use frames::FrameTemplate;
use inbound::{Echo, Expected, Handler, Inbound};
use tungstenite::protocol::frame::{
    coding::{Data, OpCode},
    Frame,
};
use wsloop::wire::{payload_template, Encoding, Stamp};

/// Counts what the reader hands out, as loadgen's connection does.
#[derive(Default)]
struct Count {
    intact: u64,
}

impl Handler for Count {
    fn echo(&mut self, echo: Echo) {
        if let Echo::Intact(_) = echo {
            self.intact += 1;
        }
    }
    fn ping(&mut self, _: &[u8]) {}
    fn pong(&mut self, _: &[u8]) {}
    fn close(&mut self, _: Option<u16>) {}
}

fn stamp(seq: u64) -> Stamp {
    Stamp { seq, intended_ns: 1_000_000 + seq, sent_ns: 1_000_100 + seq, connection: 7 }
}

fn bench_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadgen");
    for size in [64usize, 512, 16 << 10] {
        for encoding in [Encoding::Binary, Encoding::Text] {
            let name = encoding.as_str();
            let payload = payload_template(encoding, size);
            group.throughput(Throughput::Elements(1));

            let mut template = FrameTemplate::data(&payload, encoding, [0x11, 0x22, 0x33, 0x44]);
            let mut seq = 0;
            group.bench_function(BenchmarkId::new(format!("patch_stamp/{name}"), size), |b| {
                b.iter(|| {
                    seq += 1;
                    template.stamp(&stamp(seq)).len()
                })
            });

            // What the server sends back: the same payload, unmasked, stamp in place.
            let mut echoed = payload.clone();
            stamp(42).write(encoding, &mut echoed);
            let opcode = OpCode::Data(if encoding == Encoding::Text { Data::Text } else { Data::Binary });
            let mut wire = Vec::new();
            Frame::message(echoed, opcode, true).format(&mut wire).expect("format into a Vec");
            let expected = Expected { encoding, payload: &payload };
            let mut reader = Inbound::default();
            let mut count = Count::default();
            group.bench_function(BenchmarkId::new(format!("parse_check_echo/{name}"), size), |b| {
                b.iter(|| reader.feed(&wire, &expected, &mut count).expect("a valid frame"))
            });
            assert!(count.intact > 0, "the echo must check out as intact");
        }
    }
    group.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
