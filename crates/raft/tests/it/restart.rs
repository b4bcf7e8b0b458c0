//! RocksDB durability: a restarted node, and a restarted cluster, keep every
//! acknowledged write.

use crate::common::*;
use metastore_raft::{EngineKind, Outcome};

#[test]
fn restart_one_node_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::RocksDb, dir.path()));
    for i in 0..30 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    let f = follower(&c);
    wait_converged(&c);
    let applied_before = c.node(f).unwrap().stats().raft.applied_index;
    c.stop(f).unwrap();
    assert!(c.node(f).is_none());
    for i in 20..50 {
        put_retry(&c, &key(i), &value(i, 1));
    }
    c.restart(f).unwrap();
    // The node comes back from its own disk, not from zero.
    let applied_after_open = c.node(f).unwrap().stats().raft.applied_index;
    assert!(
        applied_after_open >= applied_before,
        "{applied_after_open} < {applied_before}"
    );
    wait_converged(&c);
    for i in 0..50 {
        let round = usize::from(i >= 20);
        assert_eq!(
            get(&c, f, &key(i)),
            Some(value(i, round)),
            "key {i} on restarted node {f}"
        );
    }
}

#[test]
fn restart_whole_cluster_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, EngineKind::RocksDb, dir.path());
    cfg.storage.sync = true;
    // Compaction during the first run: recovery must handle a truncated log.
    cfg.raft.snapshot_count = 20;
    {
        let c = start(cfg.clone());
        for i in 0..60 {
            put_retry(&c, &key(i), &value(i, 0));
        }
        for i in 0..10 {
            delete_retry(&c, &key(i));
        }
        c.close().unwrap();
    }
    let c = start(cfg);
    // Fresh epoch, same data: every acknowledged write is there.
    for id in c.ids() {
        for i in 0..60 {
            let expect = if i < 10 { None } else { Some(value(i, 0)) };
            assert_eq!(
                get(&c, id, &key(i)),
                expect,
                "node {id} key {i} after a full restart"
            );
        }
    }
    // And the restarted cluster keeps working.
    put_retry(&c, b"after", b"restart");
    wait_converged(&c);
    for id in c.ids() {
        assert_eq!(get(&c, id, b"after"), Some(b"restart".to_vec()));
    }
}

#[test]
fn restart_single_node_rocksdb_keeps_existed_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1, EngineKind::RocksDb, dir.path());
    {
        let c = start(cfg.clone());
        c.put(1, "k", "v1").unwrap();
    } // dropped: closes
    let c = start(cfg);
    assert_eq!(c.get(1, "k").unwrap(), Some(b"v1".to_vec()));
    match c.put(1, "k", "v2").unwrap() {
        Outcome::Written { existed, .. } => assert!(existed),
        other => panic!("{other:?}"),
    }
}
