//! Client sessions: a write sent again under the same stamp is applied once
//! and answers with its first result, on any node, after restarts and after
//! a snapshot.

use crate::common::*;
use metastore_raft::{EngineKind, Op, Outcome, SessionStamp, SyncClient};

const SESSION: u64 = 0x5e55_1011;

fn stamp(seq: u64, floor: u64) -> SessionStamp {
    SessionStamp {
        session: SESSION,
        seq,
        floor,
    }
}

fn put(k: &[u8], v: &[u8]) -> Op {
    Op::Put {
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

fn del(k: &[u8]) -> Op {
    Op::Delete { key: k.to_vec() }
}

/// The first result of a session write, sent to the leader.
fn written(c: &SyncClient, op: &Op, stamp: SessionStamp) -> (u64, bool) {
    match c.session_write(leader(c), op, stamp) {
        Ok(Outcome::Written { index, existed }) => (index, existed),
        other => panic!("{op:?} {stamp:?} answered {other:?}"),
    }
}

/// Sends `op` again under `stamp` through `node` and returns its answer.
fn again(c: &SyncClient, node: u64, op: &Op, stamp: SessionStamp) -> (u64, bool) {
    match c.session_write(node, op, stamp) {
        Ok(Outcome::Written { index, existed }) => (index, existed),
        other => panic!("retry of {op:?} {stamp:?} on node {node} answered {other:?}"),
    }
}

/// Sends `op` again under `stamp` through `node`, which may not know
/// whether the key existed (RocksDB, a node that neither proposed nor led):
/// it answers the first result, or says the write was applied at its index
/// with an unknown outcome; never a result of applying it again.
fn again_anywhere(c: &SyncClient, node: u64, op: &Op, stamp: SessionStamp, first: (u64, bool)) {
    match c.session_write(node, op, stamp) {
        Ok(Outcome::Written { index, existed }) => assert_eq!((index, existed), first),
        Err(e) if e.code() == "ERR_SESSION_EXPIRED" => {
            assert_eq!(e.outcome(), metastore_raft::ErrorOutcome::Unknown);
            let at = format!("applied at log index {},", first.0);
            assert!(e.to_string().contains(&at), "{e}");
        }
        other => panic!("retry of {op:?} {stamp:?} on node {node} answered {other:?}"),
    }
}

/// put k=1 (seq 1), delete k (seq 2), put k=3 (seq 3) through the leader;
/// then seq 1 and 2 again on every node: the leader (which proposed them)
/// answers their first results, and no retry changes anything.
fn retries_apply_once(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, engine, dir.path()));
    let proposer = leader(&c);
    let first_put = written(&c, &put(b"k", b"1"), stamp(1, 1));
    let first_delete = written(&c, &del(b"k"), stamp(2, 1));
    let last = written(&c, &put(b"k", b"3"), stamp(3, 1));
    assert!(!first_put.1);
    assert!(first_delete.1, "k existed when deleted");
    assert!(!last.1, "k was deleted before the last put");
    assert_eq!(leader(&c), proposer, "no leader change in this test");
    for node in c.ids() {
        if node == proposer || engine == EngineKind::Memory {
            assert_eq!(again(&c, node, &put(b"k", b"1"), stamp(1, 1)), first_put);
            assert_eq!(again(&c, node, &del(b"k"), stamp(2, 1)), first_delete);
        } else {
            again_anywhere(&c, node, &put(b"k", b"1"), stamp(1, 1), first_put);
            again_anywhere(&c, node, &del(b"k"), stamp(2, 1), first_delete);
        }
        assert_eq!(
            get(&c, node, b"k"),
            Some(b"3".to_vec()),
            "node {node}: the retries changed nothing"
        );
    }
    // A new sequence number is a new write.
    let next = written(&c, &del(b"k"), stamp(4, 1));
    assert!(next.1 && next.0 > last.0);
    c.close().unwrap();
}

#[test]
fn a_retried_write_applies_once_and_answers_its_first_result_memory() {
    retries_apply_once(EngineKind::Memory);
}

#[test]
fn a_retried_write_applies_once_and_answers_its_first_result_rocksdb() {
    retries_apply_once(EngineKind::RocksDb);
}

#[test]
fn a_write_below_the_floor_is_not_applied_and_its_outcome_stays_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    written(&c, &put(b"k", b"1"), stamp(1, 1));
    // The client has its answer for 1 and says so with floor 2.
    written(&c, &put(b"other", b"x"), stamp(2, 2));
    let late = c.session_write(leader(&c), &put(b"k", b"late"), stamp(1, 2));
    match late {
        Err(e) => {
            assert_eq!(e.code(), "ERR_SESSION_EXPIRED", "{e}");
            assert_eq!(e.outcome(), metastore_raft::ErrorOutcome::Unknown);
        }
        Ok(o) => panic!("a forgotten write answered {o:?}"),
    }
    assert_eq!(get(&c, leader(&c), b"k"), Some(b"1".to_vec()));
    c.close().unwrap();
}

#[test]
fn sessions_survive_a_restart_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(3, EngineKind::RocksDb, dir.path());
    let c = start(cfg.clone());
    let proposer = leader(&c);
    let first = written(&c, &put(b"k", b"1"), stamp(1, 1));
    written(&c, &put(b"k", b"2"), stamp(2, 1));
    c.close().unwrap();

    let c = start(cfg);
    assert_eq!(again(&c, proposer, &put(b"k", b"1"), stamp(1, 1)), first);
    for node in c.ids() {
        again_anywhere(&c, node, &put(b"k", b"1"), stamp(1, 1), first);
        assert_eq!(get(&c, node, b"k"), Some(b"2".to_vec()));
    }
    c.close().unwrap();
}

/// A node that was down while its session wrote, and then caught up by
/// snapshot, answers a retry from the snapshot's sessions.
fn survives_a_snapshot(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, engine, dir.path());
    cfg.raft.snapshot_count = 50;
    let c = start(cfg);
    let lagging = follower(&c);
    isolate_until_leaderless(&c, lagging);
    let lag_last = c.node(lagging).unwrap().stats().raft.last_index;
    let first = written(&c, &put(b"k", b"1"), stamp(1, 1));
    for i in 0..300 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    let s = c.node(leader(&c)).unwrap().stats();
    let leader_first = s.raft.last_index + 1 - s.storage.log_entries;
    assert!(
        leader_first > lag_last + 1,
        "the log the lagging node needs was compacted ({leader_first} > {lag_last} + 1)"
    );
    c.heal_all();
    put_retry(&c, b"barrier", b"1");
    wait_converged(&c);
    assert_eq!(
        again(&c, lagging, &put(b"k", b"1"), stamp(1, 1)),
        first,
        "node {lagging} caught up by snapshot"
    );
    c.close().unwrap();
}

#[test]
fn sessions_travel_in_snapshots_memory() {
    survives_a_snapshot(EngineKind::Memory);
}

#[test]
fn sessions_travel_in_snapshots_rocksdb() {
    survives_a_snapshot(EngineKind::RocksDb);
}
