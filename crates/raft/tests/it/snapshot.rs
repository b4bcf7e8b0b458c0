//! A node that was down while the others wrote catches up: by snapshot when
//! the log it needs was compacted away, by log otherwise.

use crate::common::*;
use metastore_raft::{EngineKind, SyncClient};
use std::path::Path;

#[derive(Clone, Copy)]
enum Down {
    Stopped,
    Isolated,
}

/// First index of the leader's log.
fn leader_first_index(c: &SyncClient) -> u64 {
    let s = c.node(leader(c)).unwrap().stats();
    s.raft.last_index + 1 - s.storage.log_entries.min(s.raft.last_index)
}

/// Takes a follower down, writes `writes` keys, brings it back and checks it
/// converged. Returns the follower's last log index when it went down.
fn lag_and_catch_up(c: &SyncClient, down: Down, writes: usize) -> u64 {
    for i in 0..10 {
        put_retry(c, &key(i), &value(i, 0));
    }
    wait_converged(c);
    let f = follower(c);
    let lag_last = c.node(f).unwrap().stats().raft.last_index;
    match down {
        Down::Stopped => c.stop(f).unwrap(),
        Down::Isolated => c.isolate(f),
    }
    for i in 0..writes {
        put_retry(c, &key(i), &value(i, 1));
    }
    match down {
        Down::Stopped => c.restart(f).unwrap(),
        Down::Isolated => c.heal_all(),
    }
    put_retry(c, b"barrier", b"1");
    wait_converged(c);
    for i in 0..writes {
        assert_eq!(
            get(c, f, &key(i)),
            Some(value(i, 1)),
            "key {i} on caught-up node {f}"
        );
    }
    assert_eq!(get(c, f, b"barrier"), Some(b"1".to_vec()));
    let applied: Vec<_> = c
        .ids()
        .iter()
        .map(|&id| c.node(id).unwrap().stats().raft.applied_index)
        .collect();
    assert!(
        applied.iter().all(|&a| a == applied[0]),
        "applied indexes differ: {applied:?}"
    );
    lag_last
}

fn cluster(engine: EngineKind, dir: &Path, snapshot_count: u64) -> SyncClient {
    let mut cfg = config(3, engine, dir);
    cfg.raft.snapshot_count = snapshot_count;
    start(cfg)
}

fn by_snapshot(engine: EngineKind, down: Down) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(engine, dir.path(), 50);
    let lag_last = lag_and_catch_up(&c, down, 300);
    // The leader compacts every 50 applied entries, synchronously with
    // applying, so by the time its 300 writes were acknowledged the entries
    // the lagging node needed were gone: it caught up through a snapshot.
    let first = leader_first_index(&c);
    assert!(
        first > lag_last + 1,
        "leader log starts at {first}, lagging node had up to {lag_last}"
    );
    if engine == EngineKind::RocksDb {
        // What the snapshot left on disk opens again: the installed state,
        // and a log that starts after it.
        let cfg = c.config().clone();
        c.close().unwrap();
        let c = start(cfg);
        put_retry(&c, b"after-restart", b"1");
        wait_converged(&c);
        for id in c.ids() {
            assert_eq!(get(&c, id, &key(299)), Some(value(299, 1)), "node {id}");
        }
        c.close().unwrap();
        return;
    }
    c.close().unwrap();
}

fn by_log(engine: EngineKind, down: Down) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(engine, dir.path(), 10_000);
    lag_and_catch_up(&c, down, 100);
    assert_eq!(
        leader_first_index(&c),
        2,
        "no compaction below snapshot_count"
    );
    c.close().unwrap();
}

#[test]
fn isolated_memory_node_catches_up_by_snapshot() {
    by_snapshot(EngineKind::Memory, Down::Isolated);
}

#[test]
fn stopped_rocksdb_node_catches_up_by_snapshot() {
    by_snapshot(EngineKind::RocksDb, Down::Stopped);
}

#[test]
fn isolated_rocksdb_node_catches_up_by_snapshot() {
    by_snapshot(EngineKind::RocksDb, Down::Isolated);
}

#[test]
fn isolated_memory_node_catches_up_by_log() {
    by_log(EngineKind::Memory, Down::Isolated);
}

#[test]
fn stopped_rocksdb_node_catches_up_by_log() {
    by_log(EngineKind::RocksDb, Down::Stopped);
}

#[test]
fn isolated_rocksdb_node_catches_up_by_log() {
    by_log(EngineKind::RocksDb, Down::Isolated);
}

/// Batched entries are large: the log is discarded once it holds
/// `max_log_size` bytes, whatever `snapshot_count` says.
fn compacts_by_size(engine: EngineKind, max_log_size: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, engine, dir.path());
    if let Some(bytes) = max_log_size {
        cfg.raft.max_log_size = bytes;
    }
    let limit = cfg.raft.max_log_size;
    let c = start(cfg);
    let big = vec![7u8; 256 << 10];
    for i in 0..128 {
        put_retry(&c, &key(i), &big);
    }
    wait_converged(&c);
    // 32 MiB written: without the size bound all 128 entries would stay.
    // With it the log holds at most `limit` bytes of them, plus the odd
    // leader no-op or barrier.
    let most = limit / big.len() as u64 + 2;
    for id in c.ids() {
        let s = c.node(id).unwrap().stats();
        assert!(
            s.storage.log_entries <= most,
            "node {id} keeps {} entries of 256 KiB (at most {most} expected)",
            s.storage.log_entries
        );
    }
    assert!(leader_first_index(&c) > 1, "the leader compacted");
    assert_eq!(get(&c, leader(&c), &key(0)), Some(big));
    c.close().unwrap();
}

#[test]
fn memory_log_compacts_by_size() {
    compacts_by_size(EngineKind::Memory, None);
}

#[test]
fn rocksdb_log_compacts_by_size() {
    compacts_by_size(EngineKind::RocksDb, None);
}

#[test]
fn rocksdb_log_compacts_by_a_configured_size() {
    compacts_by_size(EngineKind::RocksDb, Some(4 << 20));
}
