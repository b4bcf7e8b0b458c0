//! Every error a write ends with says what its caller may conclude: not
//! applied (it never reached the log, or its entry was dropped), or unknown
//! (it was proposed, and may have been applied or may still be).

use std::time::Duration;

use crate::common::*;
use metastore_raft::{EngineKind, ErrorOutcome, Op};

fn put_op(value: &[u8]) -> Op {
    Op::Put {
        key: b"k".to_vec(),
        value: value.to_vec(),
    }
}

#[test]
fn a_write_proposed_when_its_node_stops_has_an_unknown_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::RocksDb, dir.path()));
    let l = leader(&c);
    c.isolate(l);
    let before = c.node(l).unwrap().raft_stats().last_index;
    let pending = c.submit(l, put_op(b"v")).unwrap();
    // The leader appended it to its log; without a quorum it cannot commit.
    wait_until(
        Duration::from_secs(10),
        "the leader appends the write",
        || c.node(l).unwrap().raft_stats().last_index > before,
    );
    c.stop(l).unwrap();
    let e = pending.wait().expect_err("the node stopped");
    assert_eq!(e.code(), "ERR_CLOSED", "{e}");
    assert_eq!(e.outcome(), ErrorOutcome::Unknown, "{e}");
    assert!(!e.is_retryable());
    c.close().unwrap();
}

#[test]
fn a_write_held_for_lack_of_a_leader_is_not_applied_when_its_node_stops() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::RocksDb, dir.path()));
    let f = follower(&c);
    isolate_until_leaderless(&c, f);
    let pending = c.submit(f, put_op(b"held")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.stop(f).unwrap();
    let e = pending.wait().expect_err("the node stopped");
    assert_eq!(e.code(), "ERR_CLOSED", "{e}");
    assert_eq!(e.outcome(), ErrorOutcome::NotApplied, "{e}");
    // And indeed it never shows up.
    c.heal_all();
    c.restart(f).unwrap();
    put_retry(&c, b"barrier", b"1");
    wait_converged(&c);
    for id in c.ids() {
        assert_eq!(get(&c, id, b"k"), None, "node {id}");
    }
    c.close().unwrap();
}

#[test]
fn a_request_refused_by_a_closed_node_was_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(1, EngineKind::Memory, dir.path()));
    let node = c.node(1).unwrap();
    node.close();
    let e = node.submit(1, put_op(b"v")).expect_err("closed");
    assert_eq!(e.outcome(), ErrorOutcome::NotApplied);
    c.close().unwrap();
}
