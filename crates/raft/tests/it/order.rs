//! Writes keep their order through a node that learns of its leader late:
//! batches held for lack of a leader go out in the order they came.

use std::time::Duration;

use crate::common::*;
use metastore_raft::{EngineKind, Op, Outcome};

#[test]
fn batches_held_until_the_leader_is_heard_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let l = leader(&c);
    let f = follower(&c);
    // The follower loses its leader, then hears from everyone but the leader.
    isolate_until_leaderless(&c, f);
    c.hold(l, f).unwrap();
    c.heal_all();
    let put = |v: &str| Op::Put {
        key: b"k".to_vec(),
        value: v.as_bytes().to_vec(),
    };
    let first = c.submit(f, put("1")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let second = c.submit(f, put("2")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        c.node(f).unwrap().raft_stats().leader_id,
        0,
        "still no leader: both batches are held"
    );
    c.release(l, f).unwrap();
    let index = |r| match r {
        Ok(Outcome::Written { index, .. }) => index,
        other => panic!("{other:?}"),
    };
    let (i1, i2) = (index(first.wait()), index(second.wait()));
    assert!(i1 < i2, "B1 at {i1}, B2 at {i2}");
    wait_converged(&c);
    for id in c.ids() {
        assert_eq!(get(&c, id, b"k"), Some(b"2".to_vec()), "node {id}");
    }
    c.close().unwrap();
}
