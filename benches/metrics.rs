//! What latency recording costs: the clock reads and the histogram update
//! that `--no-latency` saves, per wakeup.

use std::{hint::black_box, time::Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use wsloop::metrics::Metrics;

fn bench_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency_recording");
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    let mut metrics = Metrics::default();
    let mut value = 1u64;
    group.bench_function("record_latency", |b| {
        b.iter(|| {
            // A spread of values, so the histogram's buckets vary as in real use.
            value = value.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            metrics.record_latency(black_box(10_000 + (value >> 44)), 1)
        })
    });
    group.bench_function("per_wakeup_total", |b| {
        b.iter(|| {
            let start = Instant::now();
            let done = Instant::now();
            metrics.record_latency((done - start).as_nanos() as u64, 1)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_latency);
criterion_main!(benches);
