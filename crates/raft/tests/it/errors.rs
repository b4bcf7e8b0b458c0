//! Bad input and failure paths: named error codes, never a panic or a hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use metastore_raft::storage::rocksdb::{CF_KV, CF_LOG, CF_META, CF_SESSIONS, KEY_HARD_STATE};
use metastore_raft::{ClusterConfig, Completion, CompletionSink, EngineKind, LocalCluster, Op};

#[test]
fn too_large_is_rejected_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, EngineKind::Memory, dir.path());
    cfg.batch.max_proposal_bytes = 1024;
    let c = start(cfg);
    assert_code(c.put(1, "k", vec![7u8; 2000]), "ERR_TOO_LARGE");
    // The node is fine afterwards.
    c.put(1, "k", vec![7u8; 100]).unwrap();
}

#[test]
fn closed_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let node = c.node(1).unwrap();
    c.close().unwrap();
    assert_code(
        node.submit(
            1,
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        ),
        "ERR_CLOSED",
    );
    assert_code(node.submit(2, Op::Get { key: b"k".to_vec() }), "ERR_CLOSED");
    assert_code(c.put(1, "k", "v"), "ERR_CLOSED");
    assert!(node.is_closed());
    assert_code(c.restart(1), "ERR_CLOSED");
}

#[test]
fn stopping_a_node_rejects_its_pending_requests_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let f = follower(&c);
    // Cut off, the follower can neither commit writes nor confirm reads.
    c.isolate(f);
    let pending: Vec<_> = (0..5)
        .map(|i| {
            let op = if i % 2 == 0 {
                Op::Put {
                    key: key(i),
                    value: value(i, 0),
                }
            } else {
                Op::Get { key: key(i) }
            };
            c.submit(f, op).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    c.stop(f).unwrap();
    for p in pending {
        assert_code(p.wait(), "ERR_CLOSED");
    }
    assert_code(c.put(f, "k", "v"), "ERR_CLOSED");
}

fn start_err(cfg: ClusterConfig) -> metastore_raft::Error {
    let sink = Arc::new(|_id: u64| -> CompletionSink { Arc::new(|_: Vec<Completion>| {}) });
    match LocalCluster::start(cfg, sink) {
        Ok(_) => panic!("cluster started on bad input"),
        Err(e) => e,
    }
}

#[test]
fn invalid_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(0, EngineKind::Memory, dir.path());
    let e = start_err(cfg.clone());
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    assert!(e.to_string().contains("nodes"), "{e}");
    cfg.nodes = 3;
    cfg.raft.election_tick = 1;
    let e = start_err(cfg.clone());
    assert_eq!(e.code(), "ERR_INVALID_CONFIG");
    assert!(e.to_string().contains("election_tick"), "{e}");
    cfg.raft = raft_settings();
    cfg.batch.min_batch_size = cfg.batch.max_batch_size + 1;
    assert_eq!(start_err(cfg).code(), "ERR_INVALID_CONFIG");
}

#[test]
fn data_dir_that_is_a_file_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = start_err(config(1, EngineKind::RocksDb, &file));
    assert_eq!(e.code(), "ERR_STORAGE");
    assert!(
        e.to_string().contains("not-a-dir"),
        "message names the path: {e}"
    );
}

/// Writes some data with a one-node RocksDB cluster, then closes it.
fn populated(dir: &std::path::Path) -> ClusterConfig {
    let cfg = config(1, EngineKind::RocksDb, dir);
    let c = start(cfg.clone());
    c.put(1, "k", "v").unwrap();
    c.close().unwrap();
    cfg
}

#[test]
fn garbage_in_current_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = populated(dir.path());
    std::fs::write(
        dir.path().join("node-1").join("CURRENT"),
        b"\x00garbage\xff",
    )
    .unwrap();
    let e = start_err(cfg);
    assert_eq!(e.code(), "ERR_STORAGE");
    assert!(
        e.to_string().contains("node-1"),
        "message names the path: {e}"
    );
}

#[test]
fn garbage_in_meta_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = populated(dir.path());
    {
        let path = dir.path().join("node-1");
        let opts = rocksdb::Options::default();
        let db = rocksdb::DB::open_cf(&opts, &path, [CF_LOG, CF_META, CF_KV, CF_SESSIONS]).unwrap();
        db.put_cf(
            db.cf_handle(CF_META).unwrap(),
            KEY_HARD_STATE,
            b"\xff\xff\xff garbage",
        )
        .unwrap();
    }
    let e = start_err(cfg);
    assert_eq!(e.code(), "ERR_STORAGE");
    let msg = e.to_string();
    assert!(
        msg.contains("hard state") && msg.contains("node-1"),
        "{msg}"
    );
}

#[test]
fn completions_arrive_in_batches_with_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let calls: Arc<Mutex<Vec<Vec<Completion>>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let sink = Arc::new(move |_id: u64| -> CompletionSink {
        let seen = Arc::clone(&seen);
        Arc::new(move |c: Vec<Completion>| seen.lock().unwrap().push(c))
    });
    let c = LocalCluster::start(config(1, EngineKind::Memory, dir.path()), sink).unwrap();
    c.wait_for_leader(Duration::from_secs(10)).unwrap();
    let node = c.node(1).unwrap();
    for t in 0..200u64 {
        node.submit(
            1000 + t,
            Op::Put {
                key: t.to_be_bytes().to_vec(),
                value: vec![1],
            },
        )
        .unwrap();
    }
    wait_until(Duration::from_secs(10), "200 completions", || {
        calls.lock().unwrap().iter().map(Vec::len).sum::<usize>() == 200
    });
    let calls = calls.lock().unwrap();
    let mut tokens: Vec<u64> = calls.iter().flatten().map(|c| c.token).collect();
    assert!(calls.iter().flatten().all(|c| c.result.is_ok()));
    tokens.sort_unstable();
    assert_eq!(tokens, (1000..1200).collect::<Vec<_>>());
    assert!(calls.len() < 200, "completions are delivered many per call");
    drop(calls);
    c.close().unwrap();
}

#[test]
fn an_id_outside_the_cluster_is_unknown_and_a_stopped_node_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    assert_code(c.stop(0), "ERR_UNKNOWN_NODE");
    assert_code(c.restart(4), "ERR_UNKNOWN_NODE");
    let e = c.put(4, "k", "v").expect_err("no node 4");
    assert_eq!(e.code(), "ERR_UNKNOWN_NODE");
    assert!(
        e.to_string().contains("node 4 is not in this cluster"),
        "{e}"
    );
    let f = follower(&c);
    c.stop(f).unwrap();
    assert_code(c.put(f, "k", "v"), "ERR_CLOSED");
    c.close().unwrap();
}
