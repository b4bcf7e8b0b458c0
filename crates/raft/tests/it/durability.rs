//! A node syncs its writes in the background and goes on, but a write is
//! acknowledged only once a majority, the leader among them, has it on disk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::*;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use metastore_raft::bell::{self, Bell, Doorbell};
use metastore_raft::storage::{Durability, Engine, MemoryEngine, SyncOutcome};
use metastore_raft::transport::LocalRouter;
use metastore_raft::{
    Completion, EngineKind, Error, NodeConfig, Op, Outcome, RaftNode, SyncClient,
};
use raft::eraftpb::{Entry, HardState, Snapshot};

/// A disk that can be held, and that records how far each node's log is
/// durable.
#[derive(Default)]
struct Disk {
    /// Held entirely: inline syncs block, background syncs wait.
    closed: Mutex<bool>,
    opened: Condvar,
    /// Only background syncs wait (inline ones complete).
    slow: AtomicBool,
    /// Background syncs waiting, with the log index each makes durable.
    held: Mutex<Vec<(Doorbell<SyncOutcome>, u64)>>,
    /// The last log index written, and the last known durable.
    written: AtomicU64,
    durable: AtomicU64,
}

impl Disk {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
        self.release();
    }

    fn release(&self) {
        for (tx, index) in self.held.lock().unwrap().drain(..) {
            self.durable.fetch_max(index, Ordering::SeqCst);
            let _ = tx.send(Ok(()));
        }
    }

    /// An inline sync: blocks while the disk is closed.
    fn sync_now(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        self.durable
            .fetch_max(self.written.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A background sync, answered on `tx` at once or when the disk is
    /// released.
    fn sync_later(&self, tx: Doorbell<SyncOutcome>) {
        let index = self.written.load(Ordering::SeqCst);
        let closed = self.closed.lock().unwrap();
        if *closed || self.slow.load(Ordering::SeqCst) {
            self.held.lock().unwrap().push((tx, index));
        } else {
            self.durable.fetch_max(index, Ordering::SeqCst);
            let _ = tx.send(Ok(()));
        }
        drop(closed);
    }
}

/// The memory engine on a disk that syncs, and can be held.
struct OnDisk {
    inner: MemoryEngine,
    disk: Arc<Disk>,
    /// Set once the node thread asks where outcomes arrive.
    outcomes: Option<(Doorbell<SyncOutcome>, Receiver<SyncOutcome>)>,
}

storage_of_inner!(OnDisk);

impl Engine for OnDisk {
    fn kind(&self) -> EngineKind {
        EngineKind::Memory
    }
    fn persist(
        &mut self,
        s: Option<&Snapshot>,
        e: &[Entry],
        hs: Option<&HardState>,
        durability: Durability,
    ) -> Result<(), Error> {
        self.inner.persist(s, e, hs, durability)?;
        if let Some(last) = e.last() {
            self.disk.written.store(last.index, Ordering::SeqCst);
        }
        if durability == Durability::Synced {
            self.disk.sync_now();
        }
        Ok(())
    }
    fn durable_by_sync(&self) -> bool {
        true
    }
    fn start_sync(&mut self) -> Result<bool, Error> {
        let tx = self.outcomes.as_ref().map(|o| o.0.clone());
        self.disk
            .sync_later(tx.expect("the node asked for sync_outcomes first"));
        Ok(true)
    }
    fn sync_outcomes(&mut self, bell: &Bell) -> Option<Receiver<SyncOutcome>> {
        let (tx, rx) = bell::channel(bell);
        self.outcomes = Some((tx, rx.clone()));
        Some(rx)
    }
    fn sync_finished(&mut self, outcome: SyncOutcome) -> Result<(), Error> {
        outcome.map_err(Error::Storage)
    }
    fn finish_apply(&mut self, applied: u64) -> Result<(), Error> {
        self.inner.finish_apply(applied)
    }
    engine_methods_of_inner!();
}

struct Node {
    node: RaftNode,
    disk: Arc<Disk>,
    /// Completions, each with how far every node's log was durable when
    /// the completion was handed out.
    done: Receiver<(Completion, Vec<u64>)>,
}

fn start_three() -> Vec<Node> {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = config(3, EngineKind::Memory, dir.path());
    cluster.storage.sync = true;
    // A node waiting on a held disk sends no heartbeats: keep the leader
    // through the holds (2 s election timeout).
    cluster.raft.election_tick = 200;
    let peers = vec![1, 2, 3];
    let router = LocalRouter::new();
    let disks: Vec<Arc<Disk>> = peers.iter().map(|_| Arc::default()).collect();
    let nodes: Vec<Node> = peers
        .iter()
        .map(|&id| {
            let inbox = router.register(id);
            let cfg = NodeConfig {
                id,
                peers: peers.clone(),
                raft: cluster.raft.clone(),
                batch: cluster.batch.clone(),
                storage: cluster.storage.clone(),
            };
            let disk = Arc::clone(&disks[(id - 1) as usize]);
            let engine = OnDisk {
                inner: MemoryEngine::new(&peers),
                disk: Arc::clone(&disk),
                outcomes: None,
            };
            let (tx, done) = crossbeam_channel::unbounded();
            let all = disks.clone();
            let sink: metastore_raft::CompletionSink = Arc::new(move |cs| {
                for c in cs {
                    let durable = all
                        .iter()
                        .map(|d| d.durable.load(Ordering::SeqCst))
                        .collect();
                    let _ = tx.send((c, durable));
                }
            });
            let node = RaftNode::start_with_engine(cfg, engine, router.transport(id), inbox, sink)
                .unwrap();
            Node { node, disk, done }
        })
        .collect();
    wait_until(Duration::from_secs(10), "all agree on a leader", || {
        let id = nodes[0].node.stats().raft.leader_id;
        id != 0 && nodes.iter().all(|n| n.node.stats().raft.leader_id == id)
    });
    nodes
}

fn leader_of(nodes: &[Node]) -> (&Node, Vec<&Node>) {
    let id = nodes[0].node.stats().raft.leader_id;
    let leader = &nodes[(id - 1) as usize];
    let followers = nodes.iter().filter(|n| n.node.id() != id).collect();
    (leader, followers)
}

fn put(n: &Node, token: u64, value: &[u8]) {
    n.node
        .submit(
            token,
            Op::Put {
                key: b"k".to_vec(),
                value: value.to_vec(),
            },
        )
        .unwrap();
}

fn expect_written(n: &Node, token: u64) {
    let (c, _) = n
        .done
        .recv_timeout(Duration::from_secs(10))
        .expect("the write completes once the disks sync");
    assert_eq!(c.token, token);
    assert!(
        matches!(c.result, Ok(Outcome::Written { .. })),
        "{:?}",
        c.result
    );
}

fn expect_pending(n: &Node) {
    match n.done.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("a write completed before a majority had it on disk: {other:?}"),
    }
}

#[test]
fn a_write_completes_only_once_a_majority_synced_it() {
    let nodes = start_three();
    let (leader, followers) = leader_of(&nodes);
    let lead_id = leader.node.id();

    put(leader, 1, b"a");
    expect_written(leader, 1);

    // Only the leader's disk syncs: one copy is not a majority.
    for f in &followers {
        f.disk.close();
    }
    put(leader, 2, b"b");
    expect_pending(leader);
    for f in &followers {
        f.disk.open();
    }
    expect_written(leader, 2);

    // Both followers sync but the leader's disk does not: committed, yet the
    // leader applies (and answers) only what it has on disk itself.
    leader.disk.close();
    put(leader, 3, b"c");
    expect_pending(leader);
    leader.disk.open();
    expect_written(leader, 3);
    assert_eq!(leader.node.stats().raft.leader_id, lead_id);

    for n in &nodes {
        n.node.close();
    }
}

/// Under load, with the followers' background syncs held back now and then:
/// every write the leader acknowledges was, at that moment, on the leader's
/// disk and on at least one follower's.
#[test]
fn every_acknowledged_write_was_durable_on_a_majority() {
    let nodes = start_three();
    let (leader, followers) = leader_of(&nodes);
    let stop = Arc::new(AtomicBool::new(false));
    let jitter = {
        let disks: Vec<Arc<Disk>> = followers.iter().map(|f| Arc::clone(&f.disk)).collect();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for d in &disks {
                    d.slow.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(4));
                for d in &disks {
                    d.slow.store(false, Ordering::SeqCst);
                    d.release();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (waves, per_wave) = (40u64, 100u64);
    let mut token = 0;
    let mut checked = 0;
    for _ in 0..waves {
        for _ in 0..per_wave {
            token += 1;
            put(leader, token, &token.to_be_bytes());
        }
        for _ in 0..per_wave {
            let (c, durable) = leader
                .done
                .recv_timeout(Duration::from_secs(10))
                .expect("every write completes");
            let Ok(Outcome::Written { index, .. }) = c.result else {
                panic!("write {} failed: {:?}", c.token, c.result);
            };
            let on_disk: Vec<u64> = nodes
                .iter()
                .filter(|n| durable[(n.node.id() - 1) as usize] >= index)
                .map(|n| n.node.id())
                .collect();
            assert!(
                on_disk.contains(&leader.node.id()) && on_disk.len() >= 2,
                "write {} at index {index} acknowledged while durable only on {on_disk:?} \
                 (durable: {durable:?})",
                c.token
            );
            checked += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    jitter.join().unwrap();
    assert_eq!(checked, waves * per_wave);
    for n in &nodes {
        n.disk.open();
        n.node.close();
    }
}

/// `sync: false` leaves the log to the OS's write-back, but not a node's
/// term and vote: forgetting a vote after a power loss could let it vote
/// twice in one term. Those writes come once per election.
#[test]
fn without_sync_a_vote_is_still_synced_but_writes_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(config(3, EngineKind::RocksDb, dir.path()));
    let syncs = |c: &SyncClient| -> u64 {
        c.running()
            .iter()
            .map(|&id| c.node(id).map_or(0, |n| n.stats().storage.syncs))
            .sum()
    };
    // Once every node applied an entry of the new term, each has synced
    // that term (a follower may learn it only from the leader's first append).
    put_retry(&c, b"first", b"v");
    wait_converged(&c);
    let after_election = syncs(&c);
    assert!(after_election > 0, "the first election's votes were synced");
    for i in 0..200 {
        put_retry(&c, &key(i), b"v");
    }
    assert_eq!(syncs(&c), after_election, "writes are not synced");
    let old = leader(&c);
    c.stop(old).unwrap();
    let survivors = syncs(&c);
    wait_until(Duration::from_secs(10), "a new leader", || {
        c.leader().is_some_and(|l| l != old)
    });
    assert!(syncs(&c) > survivors, "the new term's votes were synced");
    c.close().unwrap();
}
