//! A node id always means the same durable history: data dirs of another
//! group, and members whose state is gone, are refused before they can
//! diverge from the group or forget what it acknowledged.

use std::time::Duration;

use crate::common::*;
use metastore_raft::{EngineKind, Error, SyncClient};

fn mismatch_names(r: Result<SyncClient, Error>, dir: &std::path::Path) {
    let e = r.err().expect("the start is refused");
    assert_eq!(e.code(), "ERR_DATA_DIR_MISMATCH", "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
}

#[test]
fn a_data_dir_of_a_one_node_store_is_not_taken_over_by_a_three_node_group() {
    let dir = tempfile::tempdir().unwrap();
    let one = start(config(1, EngineKind::RocksDb, dir.path()));
    put_retry(&one, b"k", b"old");
    one.close().unwrap();
    drop(one);

    // Node 1's dir holds a group whose only voter is node 1.
    let three = SyncClient::start(config(3, EngineKind::RocksDb, dir.path()));
    mismatch_names(three, &dir.path().join("node-1"));
    // Nothing was bootstrapped beside it, and the store is intact.
    assert!(!dir.path().join("node-2").exists());
    let one = start(config(1, EngineKind::RocksDb, dir.path()));
    assert_eq!(get(&one, 1, b"k"), Some(b"old".to_vec()));
    one.close().unwrap();
}

#[test]
fn a_node_dir_of_another_cluster_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a, &b] {
        let c = start(config(3, EngineKind::RocksDb, dir.path()));
        put_retry(&c, b"k", b"v");
        c.close().unwrap();
    }
    std::fs::remove_dir_all(a.path().join("node-3")).unwrap();
    std::fs::rename(b.path().join("node-3"), a.path().join("node-3")).unwrap();
    let r = SyncClient::start(config(3, EngineKind::RocksDb, a.path()));
    let e = r.err().expect("refused");
    assert_eq!(e.code(), "ERR_DATA_DIR_MISMATCH", "{e}");
    assert!(e.to_string().contains("node 3 of cluster"), "{e}");
}

#[test]
fn a_member_whose_dir_was_wiped_does_not_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::RocksDb, dir.path()));
    put_retry(&c, b"k", b"v");
    let f = follower(&c);
    c.stop(f).unwrap();
    let node_dir = dir.path().join(format!("node-{f}"));
    std::fs::remove_dir_all(&node_dir).unwrap();
    let e = c.restart(f).expect_err("refused");
    assert_eq!(e.code(), "ERR_DATA_DIR_MISMATCH", "{e}");
    assert!(
        e.to_string().contains(&node_dir.display().to_string()),
        "{e}"
    );
    assert!(!node_dir.exists(), "nothing was bootstrapped in its place");
    // The others keep serving.
    put_retry(&c, b"k", b"w");
    c.close().unwrap();
    drop(c);
    // Nor does the whole group start with the hole.
    mismatch_names(
        SyncClient::start(config(3, EngineKind::RocksDb, dir.path())),
        &node_dir,
    );
}

#[test]
fn a_memory_node_of_a_group_cannot_restart_but_a_lone_one_can() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let f = follower(&c);
    assert_code(c.restart(f), "ERR_STATE_LOST");
    assert_eq!(c.running().len(), 3, "the refused node was not stopped");
    c.close().unwrap();

    let one = start(config(1, EngineKind::Memory, dir.path()));
    put_retry(&one, b"k", b"v");
    one.restart(1).unwrap();
    leader(&one);
    assert_eq!(
        get(&one, 1, b"k"),
        None,
        "a lone memory node restarts empty"
    );
    one.close().unwrap();
}

/// The way a restarted memory node used to lose an acknowledged write: it
/// came back empty as a voter and, with the one node that also lacked the
/// write, elected a leader without it. Its restart is now refused, and the
/// write survives the same partitions.
#[test]
fn an_acknowledged_write_survives_the_partitions_that_lost_it_to_a_memory_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let l = leader(&c);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != l).collect();
    let (a, b) = (others[0], others[1]);
    c.isolate(b);
    put_retry(&c, b"k", b"v1");
    c.cut(l, a);
    assert_code(c.restart(a), "ERR_STATE_LOST");
    c.isolate(l);
    c.heal(a, b);
    wait_until(Duration::from_secs(10), "a and b elect a leader", || {
        c.leader().is_some_and(|x| x == a || x == b)
    });
    c.heal_all();
    put_retry(&c, b"barrier", b"1");
    wait_converged(&c);
    for id in c.ids() {
        assert_eq!(get(&c, id, b"k"), Some(b"v1".to_vec()), "node {id}");
    }
    c.close().unwrap();
}
