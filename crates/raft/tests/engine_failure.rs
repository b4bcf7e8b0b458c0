//! A storage error or a panic on the node thread rejects what is pending and
//! stops the node; nothing panics into the caller and nothing hangs.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use metastore_raft::storage::{Durability, Engine, MemoryEngine};
use metastore_raft::transport::LocalRouter;
use metastore_raft::{EngineKind, Error, NodeConfig, Op, RaftNode};
use raft::eraftpb::{Entry, HardState, Snapshot};

const OK: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;

/// The memory engine, with apply rounds that fail or panic on demand.
struct Faulty {
    inner: MemoryEngine,
    mode: Arc<AtomicU8>,
}

storage_of_inner!(Faulty);

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
    fn finish_apply(&mut self, applied: u64) -> Result<(), Error> {
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(Error::Storage("injected: disk full in /nowhere".into())),
            PANIC => panic!("injected panic in apply"),
            _ => self.inner.finish_apply(applied),
        }
    }
    engine_methods_of_inner!();
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
