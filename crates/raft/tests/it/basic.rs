//! Put/get/delete semantics on one and three nodes, both engines.

use crate::common::*;
use metastore_raft::{EngineKind, Op, Outcome, Role};

fn written(o: Outcome) -> (u64, bool) {
    match o {
        Outcome::Written { index, existed } => (index, existed),
        other => panic!("expected Written, got {other:?}"),
    }
}

fn crud_on(c: &metastore_raft::SyncClient, node: u64) {
    // Keys are per node so the same checks can run on several nodes of a group.
    let k = |s: &str| format!("{node}/{s}").into_bytes();
    let (i1, existed) = written(c.put(node, k("a"), "1").unwrap());
    assert!(!existed, "first put of a key: existed = false");
    let (i2, existed) = written(c.put(node, k("a"), "2").unwrap());
    assert!(existed, "overwrite: existed = true");
    assert!(i2 > i1, "log indexes grow: {i1} then {i2}");
    assert_eq!(c.get(node, k("a")).unwrap(), Some(b"2".to_vec()));
    assert_eq!(c.get(node, k("missing")).unwrap(), None);
    assert!(
        written(c.delete(node, k("a")).unwrap()).1,
        "delete of a present key: existed = true"
    );
    assert!(
        !written(c.delete(node, k("a")).unwrap()).1,
        "delete of an absent key: existed = false"
    );
    assert_eq!(c.get(node, k("a")).unwrap(), None);
    // Binary keys and values survive untouched; empty values are values.
    let bin = [
        node.to_be_bytes().as_slice(),
        &[0u8, 0xff, b'{', 0x80, 0xc1],
    ]
    .concat();
    let v = vec![0xffu8; 3000];
    assert!(!written(c.put(node, bin.clone(), v.clone()).unwrap()).1);
    assert_eq!(c.get(node, bin).unwrap(), Some(v));
    c.put(node, k("empty"), "").unwrap();
    assert_eq!(c.get(node, k("empty")).unwrap(), Some(Vec::new()));
    // Raw commands go through the log without touching the map.
    let (_, existed) = written(c.call(node, Op::Raw(b"opaque".to_vec())).unwrap());
    assert!(!existed);
}

#[test]
fn single_node_memory() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(1, EngineKind::Memory, dir.path()));
    assert_eq!(c.leader(), Some(1));
    crud_on(&c, 1);
    let s = c.node(1).unwrap().stats();
    assert_eq!(s.raft.role, Role::Leader);
    assert_eq!(s.raft.applied_index, s.raft.commit_index);
    c.close().unwrap();
}

#[test]
fn single_node_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, EngineKind::RocksDb, dir.path());
    cfg.storage.sync = true;
    let c = start(cfg);
    crud_on(&c, 1);
    assert!(dir.path().join("node-1").join("CURRENT").exists());
    c.close().unwrap();
}

fn three_nodes(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, engine, dir.path()));
    let l = leader(&c);
    crud_on(&c, l);
    // Proposals made on a follower are forwarded and resolve on the follower.
    let f = follower(&c);
    crud_on(&c, f);
    // Followers apply the leader's writes without reading whether the key
    // existed (nobody waits there); their own writes must still see them.
    let shared = b"shared".to_vec();
    assert!(!written(c.put(l, shared.clone(), "1").unwrap()).1);
    assert!(written(c.put(f, shared.clone(), "2").unwrap()).1);
    assert!(written(c.delete(l, shared.clone()).unwrap()).1);
    assert!(!written(c.delete(f, shared.clone()).unwrap()).1);
    assert!(!written(c.put(f, shared.clone(), "3").unwrap()).1);
    assert!(written(c.put(l, shared, "4").unwrap()).1);
    for i in 0..20 {
        let node = c.ids()[i % 3];
        c.put(node, key(i), value(i, 0)).unwrap();
    }
    wait_converged(&c);
    for id in c.ids() {
        for i in 0..20 {
            assert_eq!(get(&c, id, &key(i)), Some(value(i, 0)), "node {id} key {i}");
        }
        for n in [l, f] {
            assert_eq!(get(&c, id, format!("{n}/a").as_bytes()), None);
            assert_eq!(
                get(&c, id, format!("{n}/empty").as_bytes()),
                Some(Vec::new())
            );
        }
    }
    let stats: Vec<_> = c
        .ids()
        .iter()
        .map(|&id| c.node(id).unwrap().stats().raft)
        .collect();
    assert_eq!(stats.iter().filter(|s| s.role == Role::Leader).count(), 1);
    assert!(stats
        .iter()
        .all(|s| s.applied_index == stats[0].applied_index));
    assert!(stats
        .iter()
        .all(|s| s.leader_id == stats[0].leader_id && s.leader_id != 0));
    c.close().unwrap();
    c.close().unwrap(); // idempotent
}

#[test]
fn three_nodes_memory() {
    three_nodes(EngineKind::Memory);
}

#[test]
fn three_nodes_rocksdb() {
    three_nodes(EngineKind::RocksDb);
}

#[test]
fn follower_reads_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let l = leader(&c);
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != l).collect();
    for i in 0..30 {
        c.put(l, key(i), value(i, 1)).unwrap();
        // A read on any node issued after the write resolved sees it.
        let f = followers[i % followers.len()];
        assert_eq!(
            c.get(f, key(i)).unwrap(),
            Some(value(i, 1)),
            "follower {f} key {i}"
        );
    }
}

/// Thousands of writes in flight on eight keys, from the leader and a
/// follower: every answer's `existed` is what replaying the log in order
/// gives. An apply round holds many batches that write the same keys, and
/// followers apply without reading; each answer must still see every write
/// before it.
fn existed_follows_log_order(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, engine, dir.path());
    cfg.storage.sync = true;
    let c = start(cfg);
    let (l, f) = (leader(&c), follower(&c));
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pending = Vec::new();
    for seq in 0..3000 {
        let r = random();
        let node = if r % 5 == 0 { f } else { l };
        let key = format!("key{}", (r >> 8) % 8).into_bytes();
        let put = (r >> 16) % 3 != 0;
        let op = if put {
            Op::Put {
                key: key.clone(),
                value: b"v".to_vec(),
            }
        } else {
            Op::Delete { key: key.clone() }
        };
        pending.push((node, seq, key, put, c.submit(node, op).unwrap()));
    }
    let mut answers: Vec<_> = pending
        .into_iter()
        .map(|(node, seq, key, put, p)| {
            let (index, existed) = written(p.wait().unwrap());
            (index, node, seq, key, put, existed)
        })
        .collect();
    // An entry holds one node's batch, in the order that node took them.
    answers.sort_by_key(|&(index, node, seq, ..)| (index, node, seq));
    let mut present = std::collections::HashMap::new();
    for (index, node, seq, key, put, existed) in answers {
        let before = present.insert(key, put).unwrap_or(false);
        assert_eq!(
            existed, before,
            "write {seq} (node {node}, log index {index}): existed"
        );
    }
    for (key, put) in present {
        assert_eq!(get(&c, l, &key).is_some(), put);
    }
    c.close().unwrap();
}

#[test]
fn memory_existed_follows_log_order() {
    existed_follows_log_order(EngineKind::Memory);
}

#[test]
fn rocksdb_existed_follows_log_order() {
    existed_follows_log_order(EngineKind::RocksDb);
}
