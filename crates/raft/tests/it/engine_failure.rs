//! A storage error or a panic on the node thread rejects what is pending and
//! stops the node; nothing panics into the caller and nothing hangs. A write
//! whose entry was committed is acknowledged even when the state write of its
//! apply round fails, and a restart applies it again from the log.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crossbeam_channel::Receiver;
use metastore_raft::identity::{Bootstrap, ClusterId, Identity};
use metastore_raft::storage::{Durability, Engine, RocksEngine, SyncOutcome};
use metastore_raft::transport::LocalRouter;
use metastore_raft::{Completion, EngineKind, Error, NodeConfig, Op, Outcome, RaftNode, SyncClock};
use raft::eraftpb::{Entry, HardState, Snapshot};

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;

/// RocksDB, with apply rounds whose state write fails or panics on demand
/// (it is then never written).
struct Faulty {
    inner: RocksEngine,
    mode: Arc<AtomicU8>,
}

storage_of_inner!(Faulty);

impl Engine for Faulty {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }
    fn persist(
        &mut self,
        s: Option<&Snapshot>,
        e: &[Entry],
        hs: Option<&HardState>,
        durability: Durability,
    ) -> Result<(), Error> {
        self.inner.persist(s, e, hs, durability)
    }
    fn sync_clock(&self) -> Arc<SyncClock> {
        self.inner.sync_clock()
    }
    fn durable_by_sync(&self) -> bool {
        self.inner.durable_by_sync()
    }
    fn start_sync(&mut self) -> Result<bool, Error> {
        self.inner.start_sync()
    }
    fn sync_outcomes(
        &mut self,
        bell: &metastore_raft::bell::Bell,
    ) -> Option<Receiver<SyncOutcome>> {
        self.inner.sync_outcomes(bell)
    }
    fn sync_finished(&mut self, outcome: SyncOutcome) -> Result<(), Error> {
        self.inner.sync_finished(outcome)
    }
    fn finish_apply(&mut self, applied: u64) -> Result<(), Error> {
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(Error::Storage("injected: disk full in /nowhere".into())),
            PANIC => panic!("injected panic in apply"),
            _ => self.inner.finish_apply(applied),
        }
    }
    engine_methods_of_inner!();
}

/// A one-node group in `dir` on the engine `open` makes of its node
/// directory, and the receiving end of its sink.
fn start_node<E: Engine>(
    dir: &Path,
    open: impl FnOnce(&Path) -> E,
) -> (RaftNode, Receiver<Completion>) {
    let mut cluster = config(1, EngineKind::RocksDb, dir);
    cluster.storage.sync = true;
    let engine = open(&cluster.storage.node_dir(1));
    let cfg = NodeConfig {
        id: 1,
        peers: vec![1],
        raft: cluster.raft,
        batch: cluster.batch,
        storage: cluster.storage,
    };
    let router = LocalRouter::new();
    let inbox = router.register(1);
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink: metastore_raft::CompletionSink = Arc::new(move |cs| {
        for c in cs {
            let _ = tx.send(c);
        }
    });
    let node = RaftNode::start_with_engine(cfg, engine, router.transport(1), inbox, sink).unwrap();
    wait_until(Duration::from_secs(10), "the node leads", || {
        node.stats().raft.leader_id == 1
    });
    (node, rx)
}

fn put(node: &RaftNode, rx: &Receiver<Completion>, token: u64, value: &[u8]) -> Completion {
    node.submit(
        token,
        Op::Put {
            key: b"k".to_vec(),
            value: value.to_vec(),
        },
    )
    .unwrap();
    let c = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the write resolves");
    assert_eq!(c.token, token);
    c
}

fn faulty_node(mode: u8, expected_code: &str) {
    let dir = tempfile::tempdir().unwrap();
    let switch = Arc::new(AtomicU8::new(OK));
    let identity = Identity::new(ClusterId::random(), 1, &[1]);
    let (node, rx) = start_node(dir.path(), |node_dir| Faulty {
        inner: RocksEngine::open(node_dir, &identity, Bootstrap::New).unwrap(),
        mode: Arc::clone(&switch),
    });
    let c = put(&node, &rx, 1, b"v");
    let Ok(Outcome::Written { index, .. }) = c.result else {
        panic!("{:?}", c.result);
    };
    // Answered before its round's state write: let that write land first.
    wait_until(
        Duration::from_secs(10),
        "the first write is applied",
        || node.stats().raft.applied_index >= index,
    );

    switch.store(mode, Ordering::SeqCst);
    // Committed and durable in the log before its round's state write
    // fails: acknowledged, and the node stops.
    let c = put(&node, &rx, 2, b"w");
    assert!(
        matches!(c.result, Ok(Outcome::Written { existed: true, .. })),
        "{:?}",
        c.result
    );
    // The node stays down: later requests reject at once instead of hanging.
    node.submit(3, Op::Get { key: b"k".to_vec() }).unwrap();
    let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(c.result.expect_err("node is failed").code(), expected_code);
    let c = put(&node, &rx, 4, b"x");
    assert_eq!(c.result.expect_err("node is failed").code(), expected_code);
    node.close();
    assert_code(node.submit(5, Op::Get { key: b"k".to_vec() }), "ERR_CLOSED");
    drop(node);

    // The acknowledged write is applied again from the log on restart; the
    // rejected one is not there.
    let (node, rx) = start_node(dir.path(), |node_dir| {
        RocksEngine::open(node_dir, &identity, Bootstrap::Existing).unwrap()
    });
    node.submit(6, Op::Get { key: b"k".to_vec() }).unwrap();
    let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(c.result.unwrap(), Outcome::Value(Some(b"w".to_vec())));
    node.close();
}

#[test]
fn storage_error_stops_the_node_and_keeps_what_it_acknowledged() {
    faulty_node(FAIL, "ERR_STORAGE");
}

#[test]
fn panic_on_the_node_thread_stops_the_node_and_keeps_what_it_acknowledged() {
    faulty_node(PANIC, "ERR_INTERNAL");
}
