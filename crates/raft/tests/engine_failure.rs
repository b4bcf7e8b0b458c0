//! A storage error or a panic on the node thread rejects what is pending and
//! stops the node; nothing panics into the caller and nothing hangs.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use metastore_raft::storage::{Durability, Engine, MemoryEngine};
use metastore_raft::transport::LocalRouter;
use metastore_raft::{EngineKind, Error, NodeConfig, Op, RaftNode, StorageStats};
use raft::eraftpb::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;

/// The memory engine, with apply rounds that fail or panic on demand.
struct Faulty {
    inner: MemoryEngine,
    mode: Arc<AtomicU8>,
}

impl Storage for Faulty {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max: impl Into<Option<u64>>,
        ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max, ctx)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}

impl Engine for Faulty {
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
        self.inner.persist(s, e, hs, durability)
    }
    fn apply_put(&mut self, key: &[u8], value: &[u8], want: bool) -> Result<Option<bool>, Error> {
        self.inner.apply_put(key, value, want)
    }
    fn apply_delete(&mut self, key: &[u8], want: bool) -> Result<Option<bool>, Error> {
        self.inner.apply_delete(key, want)
    }
    fn finish_apply(&mut self, applied: u64) -> Result<(), Error> {
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(Error::Storage("injected: disk full in /nowhere".into())),
            PANIC => panic!("injected panic in apply"),
            _ => self.inner.finish_apply(applied),
        }
    }
    fn applied_index(&self) -> u64 {
        self.inner.applied_index()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key)
    }
    fn compact(&mut self, index: u64) -> Result<(), Error> {
        self.inner.compact(index)
    }
    fn log_entries(&self) -> u64 {
        self.inner.log_entries()
    }
    fn stats(&self) -> StorageStats {
        self.inner.stats()
    }
}

fn faulty_node(mode: u8, expected_code: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = config(1, EngineKind::Memory, dir.path());
    let cfg = NodeConfig {
        id: 1,
        peers: vec![1],
        raft: cluster.raft,
        batch: cluster.batch,
        storage: cluster.storage,
    };
    let router = LocalRouter::new();
    let inbox = router.register(1);
    let switch = Arc::new(AtomicU8::new(OK));
    let engine = Faulty {
        inner: MemoryEngine::new(&[1]),
        mode: Arc::clone(&switch),
    };
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
    node.submit(
        1,
        Op::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    )
    .unwrap();
    let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(c.token, 1);
    assert!(c.result.is_ok(), "{:?}", c.result);

    switch.store(mode, Ordering::SeqCst);
    node.submit(
        2,
        Op::Put {
            key: b"k".to_vec(),
            value: b"w".to_vec(),
        },
    )
    .unwrap();
    let c = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the failing write resolves");
    assert_eq!(c.token, 2);
    let e = c.result.expect_err("the failing write is rejected");
    assert_eq!(e.code(), expected_code, "{e}");
    // The node stays down: later requests reject at once instead of hanging.
    node.submit(3, Op::Get { key: b"k".to_vec() }).unwrap();
    let c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(c.result.expect_err("node is failed").code(), expected_code);
    node.close();
    assert_code(node.submit(4, Op::Get { key: b"k".to_vec() }), "ERR_CLOSED");
}

#[test]
fn storage_error_rejects_and_stops_the_node() {
    faulty_node(FAIL, "ERR_STORAGE");
}

#[test]
fn panic_on_the_node_thread_rejects_and_stops_the_node() {
    faulty_node(PANIC, "ERR_INTERNAL");
}
