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

/// A completion sink may close its own node; the node cannot wait for
/// itself then, but a `close` from another thread waits until the engine is
/// closed, so the data dir opens again at once (it used to fail on RocksDB's
/// LOCK file).
#[test]
fn a_node_closed_by_its_own_sink_releases_its_data_dir_to_the_next_close() {
    use metastore_raft::identity::{Bootstrap, ClusterId, Identity};
    use metastore_raft::storage::RocksEngine;
    use metastore_raft::transport::LocalRouter;
    use metastore_raft::{CompletionSink, NodeConfig, Op, RaftNode};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let cfg: NodeConfig = config(1, EngineKind::RocksDb, dir.path()).node_config(1);
    let identity = Identity::new(ClusterId::random(), 1, &[1]);
    for round in 0..20 {
        let bootstrap = if round == 0 {
            Bootstrap::New
        } else {
            Bootstrap::Existing
        };
        let node: Arc<OnceLock<Arc<RaftNode>>> = Arc::default();
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(1);
        let sink: CompletionSink = {
            let node = Arc::clone(&node);
            Arc::new(move |_| {
                if let Some(n) = node.get() {
                    n.close();
                    let _ = closed_tx.try_send(());
                }
            })
        };
        let router = LocalRouter::new();
        let inbox = router.register(1);
        let started = RaftNode::start(
            cfg.clone(),
            &identity,
            bootstrap,
            None,
            router.transport(1),
            inbox,
            sink,
        )
        .unwrap();
        let started = Arc::new(started);
        let _ = node.set(Arc::clone(&started));
        wait_until(Duration::from_secs(10), "the node leads", || {
            started.raft_stats().role == metastore_raft::Role::Leader
        });
        started
            .submit(
                1,
                Op::Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
            )
            .unwrap();
        closed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the sink closed its node");
        started.close();
        let reopened = RocksEngine::open(&cfg.storage.node_dir(1), &identity, Bootstrap::Existing);
        assert!(reopened.is_ok(), "round {round}: {:?}", reopened.err());
    }
}
