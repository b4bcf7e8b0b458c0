//! Batching is invisible to the state machine, and visible in the stats.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::*;
use metastore_raft::{EngineKind, Op, SyncClient};

/// Each of 8 threads runs its own deterministic sequence on its own keys,
/// against the leader, so the final state does not depend on interleaving.
fn run_workload(c: &Arc<SyncClient>) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let l = leader(c);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = Arc::clone(c);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let k = format!("t{t}-k{}", i % 10).into_bytes();
                    let op = if i % 7 == 3 {
                        Op::Delete { key: k }
                    } else {
                        Op::Put {
                            key: k,
                            value: format!("t{t}-v{i}").into_bytes(),
                        }
                    };
                    c.call(l, op).expect("write under steady leadership");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_converged(c);
    let mut state = BTreeMap::new();
    for id in c.ids() {
        for t in 0..8 {
            for k in 0..10 {
                let key = format!("t{t}-k{k}").into_bytes();
                let v = get(c, id, &key);
                if let Some(prev) = state.insert(key.clone(), v.clone()) {
                    assert_eq!(
                        prev,
                        v,
                        "nodes disagree on {:?}",
                        String::from_utf8_lossy(&key)
                    );
                }
            }
        }
    }
    state
}

#[test]
fn batch_on_and_off_give_identical_state() {
    let mut states = Vec::new();
    let mut avg = Vec::new();
    for enable in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(3, EngineKind::Memory, dir.path());
        cfg.batch.enable = enable;
        let c = Arc::new(start(cfg));
        states.push(run_workload(&c));
        let l = leader(&c);
        avg.push(c.node(l).unwrap().stats().batch.avg_batch_size);
        c.close().unwrap();
    }
    assert_eq!(states[0], states[1]);
    assert!(states[0].values().any(Option::is_some));
    // Concurrent writers accumulate while a batch replicates.
    assert!(avg[0] > 1.0, "avg batch size with batching on: {}", avg[0]);
    assert_eq!(avg[1], 1.0, "batching off sends every proposal alone");
}

#[test]
fn sequential_writes_flush_alone_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let l = leader(&c);
    for i in 0..50 {
        c.put(l, key(i), value(i, 0)).unwrap();
    }
    let s = c.node(l).unwrap().stats().batch;
    assert_eq!(s.total_proposals, 50);
    assert_eq!(s.avg_batch_size, 1.0, "{s:?}");
    // Each write found the pipeline idle (the previous one completed), so
    // none waited for a deadline.
    assert_eq!(s.flushes_by_idle, 50, "{s:?}");
    assert_eq!(s.flushes_by_deadline, 0, "{s:?}");
}

#[test]
fn concurrent_load_batches_on_rocksdb_with_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, EngineKind::RocksDb, dir.path());
    cfg.storage.sync = true;
    let c = Arc::new(start(cfg));
    let l = leader(&c);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..25 {
                    c.put(l, format!("t{t}-{i}"), "v")
                        .expect("write under steady leadership");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = c.node(l).unwrap().stats();
    assert_eq!(s.batch.total_proposals, 400);
    assert!(s.batch.avg_batch_size > 1.0, "{:?}", s.batch);
    assert!(s.batch.total_batches < 400);
    wait_converged(&c);
    let f = follower(&c);
    assert_eq!(get(&c, f, b"t15-24"), Some(b"v".to_vec()));
}
