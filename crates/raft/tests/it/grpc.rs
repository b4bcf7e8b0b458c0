//! The same group over real sockets: each node behind its own gRPC end on a
//! loopback port.

use std::io::Write as _;
use std::time::Duration;

use crate::common::*;
use metastore_raft::config::TransportKind;
use metastore_raft::transport::grpc::pb::{self, frame::Body, peer_client::PeerClient};
use metastore_raft::{ClusterConfig, EngineKind, SyncClient};

/// Three nodes over gRPC; tests that tune it start it themselves.
fn grpc_config(engine: EngineKind, dir: &std::path::Path) -> ClusterConfig {
    ClusterConfig {
        transport: TransportKind::Grpc,
        ..config(3, engine, dir)
    }
}

fn grpc_cluster(engine: EngineKind, dir: &std::path::Path) -> SyncClient {
    start(grpc_config(engine, dir))
}

#[test]
fn commits_reads_and_fails_over_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let c = grpc_cluster(EngineKind::RocksDb, dir.path());
    for i in 0..50 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    let f = follower(&c);
    // A follower's write is forwarded over the network.
    match c.put(f, b"from-follower".to_vec(), b"1".to_vec()) {
        Ok(metastore_raft::Outcome::Written { .. }) => {}
        other => panic!("a follower's put answered {other:?}"),
    }
    for id in c.ids() {
        assert_eq!(get(&c, id, &key(7)), Some(value(7, 0)), "node {id}");
        assert_eq!(
            get(&c, id, b"from-follower"),
            Some(b"1".to_vec()),
            "node {id}"
        );
    }
    let old = leader(&c);
    c.stop(old).unwrap();
    let new = leader(&c);
    assert_ne!(new, old);
    for i in 0..50 {
        put_retry(&c, &key(i), &value(i, 1));
    }
    c.restart(old).unwrap();
    put_retry(&c, b"barrier", b"1");
    wait_converged(&c);
    assert_eq!(get(&c, old, &key(49)), Some(value(49, 1)));
    let stats = c.net_stats(new).unwrap();
    assert!(
        stats.messages_sent > 0 && stats.messages_received > 0,
        "{stats:?}"
    );
    assert_eq!(stats.refused, 0, "{stats:?}");
    c.close().unwrap();
}

/// Cuts a follower off while the others write `writes` keys, heals, and
/// checks it caught up; returns its last index when cut and the leader's
/// first log index after.
fn cut_off_and_catch_up(c: &SyncClient, writes: usize) -> (u64, u64) {
    let f = follower(c);
    isolate_until_leaderless(c, f);
    let lag_last = c.node(f).unwrap().stats().raft.last_index;
    for i in 0..writes {
        put_retry(c, &key(i), &value(i, 0));
    }
    let s = c.node(leader(c)).unwrap().stats();
    let leader_first = s.raft.last_index + 1 - s.storage.log_entries;
    c.heal_all();
    put_retry(c, b"barrier", b"1");
    wait_converged(c);
    assert_eq!(get(c, f, &key(writes - 1)), Some(value(writes - 1, 0)));
    (lag_last, leader_first)
}

#[test]
fn a_node_cut_off_catches_up_by_log() {
    let dir = tempfile::tempdir().unwrap();
    let c = grpc_cluster(EngineKind::Memory, dir.path());
    let (_, first) = cut_off_and_catch_up(&c, 100);
    assert_eq!(
        first, 2,
        "nothing was compacted (the log starts after the bootstrap index)"
    );
    c.close().unwrap();
}

#[test]
fn a_node_cut_off_catches_up_by_a_snapshot_sent_over_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = grpc_config(EngineKind::RocksDb, dir.path());
    cfg.raft.snapshot_count = 50;
    let c = start(cfg);
    let (lag_last, first) = cut_off_and_catch_up(&c, 300);
    assert!(
        first > lag_last + 1,
        "the log it needed was compacted ({first} > {lag_last} + 1)"
    );
    let received: u64 = c
        .ids()
        .iter()
        .map(|id| c.net_stats(*id).unwrap().snapshots_received)
        .sum();
    assert!(received >= 1, "no snapshot arrived on its own stream");
    c.close().unwrap();
}

#[test]
fn a_snapshot_of_many_chunks_arrives_while_the_leader_keeps_its_term() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = grpc_config(EngineKind::RocksDb, dir.path());
    cfg.raft.snapshot_count = 10;
    let c = start(cfg);
    let f = follower(&c);
    isolate_until_leaderless(&c, f);
    let big = vec![0x42u8; 100 << 10];
    for i in 0..60 {
        put_retry(&c, &key(i), &big);
    }
    let l = leader(&c);
    let term = c.node(l).unwrap().stats().raft.term;
    let before = c.net_stats(f).unwrap();
    c.heal_all();
    put_retry(&c, b"barrier", b"1");
    wait_converged(&c);
    assert_eq!(get(&c, f, &key(59)), Some(big.clone()));
    let after = c.net_stats(f).unwrap();
    assert!(
        after.snapshots_received > before.snapshots_received,
        "{after:?}"
    );
    // Six megabytes, in chunks of one.
    assert!(
        after.bytes_received - before.bytes_received > 6_000_000,
        "{after:?}"
    );
    assert_eq!(c.node(l).unwrap().stats().raft.term, term, "an election");
    assert_eq!(leader(&c), l);
    c.close().unwrap();
}

/// Sends `frames` on one stream to `addr` and returns how the node answered.
pub(crate) async fn stream(
    addr: std::net::SocketAddr,
    frames: Vec<pb::Frame>,
) -> Result<(), tonic::Status> {
    let mut client = PeerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client.raft(tokio_stream::iter(frames)).await.map(|_| ())
}

fn hello(cluster_id: Vec<u8>, from: u64, to: u64) -> pb::Frame {
    pb::Frame {
        body: Some(Body::Hello(pb::Hello {
            cluster_id,
            from,
            to,
            address: String::new(),
            incarnation: 0,
        })),
    }
}

/// Sends `frames` on one snapshot stream to `addr`.
async fn snapshot_stream(
    addr: std::net::SocketAddr,
    frames: Vec<pb::snapshot_frame::Body>,
) -> Result<(), tonic::Status> {
    let mut client = PeerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let frames = frames
        .into_iter()
        .map(|body| pb::SnapshotFrame { body: Some(body) });
    client
        .snapshot(tokio_stream::iter(frames))
        .await
        .map(|_| ())
}

fn batch(messages: Vec<Vec<u8>>) -> pb::Frame {
    pb::Frame {
        body: Some(Body::Batch(pb::Batch { messages })),
    }
}

#[test]
fn bad_input_on_the_peer_port_is_refused_and_counted_while_the_group_serves() {
    let dir = tempfile::tempdir().unwrap();
    let c = grpc_cluster(EngineKind::Memory, dir.path());
    let target = follower(&c);
    let addr = c.peer_address(target).unwrap();
    let ours = c.cluster_id().0.to_be_bytes().to_vec();
    let other = (c.cluster_id().0 ^ 1).to_be_bytes().to_vec();
    let before = c.net_stats(target).unwrap().refused;

    // Random bytes on a raw connection: not even HTTP/2.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    let _ = raw.write_all(&[0x5a; 4096]);
    drop(raw);
    // A half-open connection that never says anything.
    let idle = std::net::TcpStream::connect(addr).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut refusals = vec![
        // Another cluster.
        vec![hello(other.clone(), 1, target)],
        // A node that is no member.
        vec![hello(ours.clone(), 9, target)],
        // Addressed to another node.
        vec![hello(ours.clone(), 1, target % 3 + 1)],
        // No hello first.
        vec![batch(vec![vec![1, 2, 3]])],
        // Bytes that are no raft message.
        vec![hello(ours.clone(), 1, target), batch(vec![vec![0xff; 64]])],
    ];
    if target == 1 {
        // A hello from itself would name a non-peer; use node 2 as the sender.
        refusals[4][0] = hello(ours.clone(), 2, target);
    }
    let sender = if target == 1 { 2 } else { 1 };
    let snapshot_header = |msg_type, data_len| {
        let mut m = raft::eraftpb::Message::default();
        m.set_msg_type(msg_type);
        m.from = sender;
        m.to = target;
        pb::snapshot_frame::Body::Header(pb::SnapshotHeader {
            message: protobuf::Message::write_to_bytes(&m).unwrap(),
            data_len,
        })
    };
    let snapshot_hello = || {
        pb::snapshot_frame::Body::Hello(pb::Hello {
            cluster_id: ours.clone(),
            from: sender,
            to: target,
            address: String::new(),
            incarnation: 0,
        })
    };
    use raft::eraftpb::MessageType::{MsgAppend, MsgSnapshot};
    let snapshot_refusals = vec![
        // A header that is no snapshot.
        vec![snapshot_hello(), snapshot_header(MsgAppend, 0)],
        // More data than the header said.
        vec![
            snapshot_hello(),
            snapshot_header(MsgSnapshot, 4),
            pb::snapshot_frame::Body::Chunk(vec![0; 8]),
        ],
        // Less.
        vec![
            snapshot_hello(),
            snapshot_header(MsgSnapshot, 16),
            pb::snapshot_frame::Body::Chunk(vec![0; 8]),
        ],
        // Larger than a node takes.
        vec![snapshot_hello(), snapshot_header(MsgSnapshot, 1 << 40)],
    ];
    // The refusal of another cluster's hello does not tell this cluster's id.
    let told = rt
        .block_on(stream(addr, vec![hello(other.clone(), 1, target)]))
        .unwrap_err();
    assert!(
        !told.message().contains(&c.cluster_id().to_string()),
        "{told:?}"
    );
    let expected = (refusals.len() + snapshot_refusals.len() + 1) as u64;
    for frames in refusals {
        let answer = rt.block_on(stream(addr, frames));
        assert!(answer.is_err(), "a bad stream was accepted");
        // The group keeps serving meanwhile.
        put_retry(&c, b"during", b"bad input");
    }
    for frames in snapshot_refusals {
        let answer = rt.block_on(snapshot_stream(addr, frames));
        assert!(answer.is_err(), "a bad snapshot stream was accepted");
        put_retry(&c, b"during", b"bad input");
    }
    // The streams, the connection of random bytes, and the silent connection
    // (closed by the node once the hello is overdue).
    let expected = expected + 2;
    wait_until(Duration::from_secs(15), "every refusal counted", || {
        c.net_stats(target).unwrap().refused - before >= expected
    });
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let closed = loop {
        match std::io::Read::read(&mut idle, &mut buf) {
            Ok(0) | Err(_) => break true,
            // The server's HTTP/2 preface and settings, then the close.
            Ok(_) => continue,
        }
    };
    assert!(closed, "the silent connection is still open");
    for i in 0..20 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    wait_converged(&c);
    assert_eq!(get(&c, target, &key(19)), Some(value(19, 0)));
    c.close().unwrap();
}

#[test]
fn an_oversized_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = grpc_cluster(EngineKind::Memory, dir.path());
    let addr = c.peer_address(1).unwrap();
    let ours = c.cluster_id().0.to_be_bytes().to_vec();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = c.net_stats(1).unwrap().refused;
    let huge = batch(vec![vec![0u8; 300 << 20]]);
    let answer = rt.block_on(async {
        let mut client = PeerClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(usize::MAX);
        client
            .raft(tokio_stream::iter(vec![hello(ours, 2, 1), huge]))
            .await
    });
    assert!(answer.is_err());
    wait_until(Duration::from_secs(5), "the refusal is counted", || {
        c.net_stats(1).unwrap().refused > before
    });
    put_retry(&c, b"after", b"1");
    c.close().unwrap();
}

/// A stopped node's network end is driven by a thread of its own: its port
/// still refuses (and counts) a stranger, and the restarted node takes the
/// network back and catches up over it.
#[test]
fn a_stopped_node_s_port_still_answers_and_its_restart_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = grpc_cluster(EngineKind::RocksDb, dir.path());
    let target = follower(&c);
    let addr = c.peer_address(target).unwrap();
    let other = (c.cluster_id().0 ^ 1).to_be_bytes().to_vec();
    c.stop(target).unwrap();
    let before = c.net_stats(target).unwrap().refused;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                stream(addr, vec![hello(other, 1, target)]),
            )
            .await
        })
        .expect("the stopped node's port answered within 5 s");
    assert_eq!(
        answer.unwrap_err().code(),
        tonic::Code::PermissionDenied,
        "the stopped node's port did not answer the stranger with a refusal"
    );
    wait_until(Duration::from_secs(5), "the refusal is counted", || {
        c.net_stats(target).unwrap().refused > before
    });
    for i in 0..20 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    c.restart(target).unwrap();
    for i in 20..40 {
        put_retry(&c, &key(i), &value(i, 0));
    }
    wait_converged(&c);
    assert_eq!(get(&c, target, &key(39)), Some(value(39, 0)));
    assert_eq!(get(&c, target, &key(5)), Some(value(5, 0)));
    c.close().unwrap();
}

/// A leader leaves the commit of its own writes to its next message, but a
/// follower that forwarded a write waits to apply it: that commit goes out
/// at once to that follower (not with the next heartbeat, a second away
/// here), and to no other.
#[test]
fn a_commit_goes_out_at_once_only_to_a_follower_whose_forwarded_write_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = grpc_config(EngineKind::Memory, dir.path());
    cfg.raft.heartbeat_tick = 100;
    cfg.raft.election_tick = 150;
    let c = start(cfg);
    let f = follower(&c);
    wait_converged(&c);
    let l = leader(&c);
    let before = c.net_stats(l).unwrap().messages_sent;
    let started = std::time::Instant::now();
    for i in 0..100 {
        match c.put(f, key(i), value(i, 0)) {
            Ok(metastore_raft::Outcome::Written { .. }) => {}
            other => panic!("a follower's put answered {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "100 writes through a follower took {took:?}: they waited for heartbeats"
    );
    let sent = c.net_stats(l).unwrap().messages_sent - before;
    // An append to each follower and the commit to the one that forwarded,
    // a few heartbeats; the commit sent to both followers would make it 400.
    assert!(
        (300..380).contains(&sent),
        "the leader sent {sent} messages for 100 writes through a follower, one at a time"
    );
    wait_converged(&c);
    let before = c.net_stats(l).unwrap().messages_sent;
    for i in 0..100 {
        match c.put(l, key(i), value(i, 1)) {
            Ok(metastore_raft::Outcome::Written { .. }) => {}
            other => panic!("the leader's put answered {other:?}"),
        }
    }
    let sent = c.net_stats(l).unwrap().messages_sent - before;
    // An append to each follower per write, a few heartbeats; a commit
    // message of its own per write would make it 400.
    assert!(
        (200..300).contains(&sent),
        "the leader sent {sent} messages for 100 writes, one at a time"
    );
    wait_converged(&c);
    assert_eq!(get(&c, f, &key(99)), Some(value(99, 1)));
    c.close().unwrap();
}
