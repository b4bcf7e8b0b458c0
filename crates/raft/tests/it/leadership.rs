//! Leadership transfer: asked of any node, leadership moves to the voter
//! named, over the local and the gRPC transport, with no write lost.

use std::time::Duration;

use crate::common::*;
use metastore_raft::config::TransportKind;
use metastore_raft::{EngineKind, Error};

fn transfer_to_each_member_in_turn(transport: TransportKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(3, EngineKind::RocksDb, dir.path());
    cfg.transport = transport;
    let c = start(cfg);
    let mut written = 0;
    for round in 0..2 {
        for to in c.ids() {
            // Asked of a node other than the leader half the time: a follower
            // forwards the request.
            let asked = if round == 0 { leader(&c) } else { follower(&c) };
            c.node(asked).unwrap().transfer_leader(to).unwrap();
            wait_until(Duration::from_secs(10), "the transfer", || {
                c.ids().iter().all(|id| {
                    let s = c.node(*id).unwrap().stats().raft;
                    s.leader_id == to
                })
            });
            put_retry(&c, &key(written), &value(written, 0));
            written += 1;
        }
    }
    wait_converged(&c);
    for id in c.ids() {
        for i in 0..written {
            assert_eq!(get(&c, id, &key(i)), Some(value(i, 0)), "node {id}");
        }
    }
    c.close().unwrap();
}

#[test]
fn leadership_moves_to_each_member_in_turn() {
    transfer_to_each_member_in_turn(TransportKind::Local);
}

#[test]
fn leadership_moves_to_each_member_in_turn_over_grpc() {
    transfer_to_each_member_in_turn(TransportKind::Grpc);
}

#[test]
fn a_transfer_to_a_node_that_is_no_voter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::Memory, dir.path()));
    let l = leader(&c);
    match c.node(l).unwrap().transfer_leader(7) {
        Err(Error::UnknownNode { id: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(leader(&c), l);
    c.close().unwrap();
}
