//! Proposals per second through `ProposalBatcher` with a sink that reports
//! completion at once, from 1 and 4 producer threads (100-byte proposals).

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test or bench

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metastore_batch::{BatchConfig, BatcherHandle, ProposalBatcher};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher");
    g.throughput(Throughput::Elements(1));
    for producers in [1usize, 4] {
        let flushed = Arc::new(AtomicU64::new(0));
        let handle: Arc<OnceLock<BatcherHandle>> = Arc::default();
        let sink = {
            let (flushed, handle) = (Arc::clone(&flushed), Arc::clone(&handle));
            move |_batch: Vec<u8>, n: usize| {
                flushed.fetch_add(n as u64, Ordering::Release);
                if let Some(h) = handle.get() {
                    h.complete(n);
                }
            }
        };
        let batcher = Arc::new(ProposalBatcher::start(BatchConfig::default(), sink).unwrap());
        let _ = handle.set(batcher.handle());

        g.bench_function(
            BenchmarkId::new("propose", format!("{producers}_producers")),
            |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(producers as u64);
                    let target = flushed.load(Ordering::Acquire) + per * producers as u64;
                    let start = Instant::now();
                    let threads: Vec<_> = (0..producers)
                        .map(|_| {
                            let batcher = Arc::clone(&batcher);
                            thread::spawn(move || {
                                for _ in 0..per {
                                    batcher.propose(vec![b'x'; 100]).unwrap();
                                }
                            })
                        })
                        .collect();
                    threads.into_iter().for_each(|t| t.join().unwrap());
                    // Until the last one has reached the sink.
                    while flushed.load(Ordering::Acquire) < target {
                        thread::yield_now();
                    }
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * producers as u64) as f64)
                })
            },
        );
        let s = batcher.stats();
        batcher.stop();
        eprintln!(
            "batcher {producers} producer(s): {} proposals in {} batches (avg {:.1}; idle {}, size {}, deadline {}), \
             propose->flush p50 {}us p99 {}us",
            s.total_proposals,
            s.total_batches,
            s.avg_batch_size,
            s.flushes_by_idle,
            s.flushes_by_size,
            s.flushes_by_deadline,
            s.latency.p50_us,
            s.latency.p99_us
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
