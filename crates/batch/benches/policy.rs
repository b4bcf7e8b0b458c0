//! Cost of the batch policy's bookkeeping per proposal: enqueue, the flush
//! decision and the EMA update, at low load (every proposal flushed alone,
//! nothing in flight) and under overload (full batches while work is in flight).

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metastore_batch::{BatchConfig, BatchPolicy};

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    const PROPOSALS: usize = 4096;
    group.throughput(Throughput::Elements(PROPOSALS as u64));
    for (name, in_flight) in [("idle", 0usize), ("overload", 10_000)] {
        group.bench_function(BenchmarkId::new("enqueue+decide+flush", name), |b| {
            b.iter(|| {
                let mut p = BatchPolicy::new(&BatchConfig::default());
                let now = Instant::now();
                let mut flushed = 0;
                for _ in 0..PROPOSALS {
                    p.on_enqueue(now);
                    if let Some(f) = p.decide(now, 0, in_flight) {
                        flushed += f.take;
                        p.on_flush(&f);
                    }
                }
                black_box(flushed)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
