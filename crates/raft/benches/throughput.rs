//! Pipelined puts through the leader of a 3-node in-process cluster, the
//! shape of load the Node.js binding produces (many requests in flight, one
//! completion-sink call per apply round).
//!
//! `cargo bench -p metastore-raft --bench throughput`

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test or bench

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metastore_raft::{
    BatchConfig, ClusterConfig, Completion, CompletionSink, EngineKind, LocalCluster, Op,
    RaftSettings, StorageConfig,
};

const PUTS: u64 = 20_000;
const WINDOW: u64 = 4_096;

/// Completed requests, with a condvar the submitter waits on.
#[derive(Default)]
struct Done {
    count: AtomicU64,
    failed: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Done {
    fn wait_for(&self, n: u64) {
        let mut g = self.lock.lock().unwrap();
        while self.count.load(Ordering::Acquire) < n {
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }
}

fn cluster(engine: EngineKind, sync: bool, dir: &std::path::Path, done: Arc<Done>) -> LocalCluster {
    let cfg = ClusterConfig {
        nodes: 3,
        raft: RaftSettings {
            tick_interval: Duration::from_millis(20),
            ..RaftSettings::default()
        },
        batch: BatchConfig::default(),
        storage: StorageConfig {
            engine,
            data_dir: dir.to_path_buf(),
            sync,
        },
        ..ClusterConfig::default()
    };
    let sink = Arc::new(move |_id: u64| -> CompletionSink {
        let done = Arc::clone(&done);
        Arc::new(move |cs: Vec<Completion>| {
            let failed = cs.iter().filter(|c| c.result.is_err()).count() as u64;
            done.failed.fetch_add(failed, Ordering::Relaxed);
            done.count.fetch_add(cs.len() as u64, Ordering::Release);
            done.cv.notify_all();
        })
    });
    let c = LocalCluster::start(cfg, sink).expect("cluster");
    c.wait_for_leader(Duration::from_secs(30)).expect("leader");
    c
}

fn pipelined_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipelined_puts_3_nodes");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(PUTS));
    for (name, engine, sync) in [
        ("memory", EngineKind::Memory, false),
        ("rocksdb_nosync", EngineKind::RocksDb, false),
        ("rocksdb_sync", EngineKind::RocksDb, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let done = Arc::new(Done::default());
        let cluster = cluster(engine, sync, dir.path(), Arc::clone(&done));
        let leader = cluster.node(cluster.leader().unwrap()).unwrap();
        let mut token = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let start = done.count.load(Ordering::Acquire);
                for i in 0..PUTS {
                    if i >= WINDOW {
                        done.wait_for(start + i - WINDOW + 1);
                    }
                    token += 1;
                    let key = format!("key-{}", token % 100_000).into_bytes();
                    leader
                        .submit(
                            token,
                            Op::Put {
                                key,
                                value: vec![7u8; 64],
                            },
                        )
                        .unwrap();
                }
                done.wait_for(start + PUTS);
            })
        });
        assert_eq!(
            done.failed.load(Ordering::Relaxed),
            0,
            "puts failed during the bench"
        );
        let s = leader.stats();
        eprintln!(
            "{name}: avg batch size {:.1}, {} batches",
            s.batch.avg_batch_size, s.batch.total_batches
        );
        cluster.close().unwrap();
    }
    group.finish();
}

criterion_group!(benches, pipelined_puts);
criterion_main!(benches);
