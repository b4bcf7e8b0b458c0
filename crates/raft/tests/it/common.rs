//! Shared helpers: fast-ticking configs, bounded polling, and the plumbing
//! of test engines that wrap another engine.
#![allow(dead_code, unused_macros)]

/// `raft::Storage` for a test engine that wraps another engine in
/// `self.inner` and reads its log from it unchanged.
macro_rules! storage_of_inner {
    ($t:ty) => {
        impl raft::Storage for $t {
            fn initial_state(&self) -> raft::Result<raft::RaftState> {
                self.inner.initial_state()
            }
            fn entries(
                &self,
                low: u64,
                high: u64,
                max: impl Into<Option<u64>>,
                ctx: raft::GetEntriesContext,
            ) -> raft::Result<Vec<raft::eraftpb::Entry>> {
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
            fn snapshot(
                &self,
                request_index: u64,
                to: u64,
            ) -> raft::Result<raft::eraftpb::Snapshot> {
                self.inner.snapshot(request_index, to)
            }
        }
    };
}

/// Inside `impl Engine` of such a wrapper: the methods it passes to
/// `self.inner` unchanged.
macro_rules! engine_methods_of_inner {
    () => {
        fn apply_put(
            &mut self,
            key: &[u8],
            value: &[u8],
            want: bool,
        ) -> Result<Option<bool>, metastore_raft::Error> {
            self.inner.apply_put(key, value, want)
        }
        fn apply_delete(
            &mut self,
            key: &[u8],
            want: bool,
        ) -> Result<Option<bool>, metastore_raft::Error> {
            self.inner.apply_delete(key, want)
        }
        fn sessions(&mut self) -> &mut metastore_raft::session::Sessions {
            self.inner.sessions()
        }
        fn record_session(
            &mut self,
            stamp: &metastore_raft::SessionStamp,
            record: metastore_raft::session::Record,
        ) -> Result<(), metastore_raft::Error> {
            self.inner.record_session(stamp, record)
        }
        fn applied_index(&self) -> u64 {
            self.inner.applied_index()
        }
        fn membership(&self) -> Option<&metastore_raft::membership::Membership> {
            self.inner.membership()
        }
        fn set_membership(
            &mut self,
            m: metastore_raft::membership::Membership,
        ) -> Result<(), metastore_raft::Error> {
            self.inner.set_membership(m)
        }
        fn set_conf_state(
            &mut self,
            cs: raft::eraftpb::ConfState,
        ) -> Result<(), metastore_raft::Error> {
            self.inner.set_conf_state(cs)
        }
        fn conf_state(&self) -> raft::eraftpb::ConfState {
            self.inner.conf_state()
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, metastore_raft::Error> {
            self.inner.get(key)
        }
        fn compact(&mut self, index: u64) -> Result<(), metastore_raft::Error> {
            self.inner.compact(index)
        }
        fn log_entries(&self) -> u64 {
            self.inner.log_entries()
        }
        fn stats(&self) -> metastore_raft::StorageStats {
            self.inner.stats()
        }
    };
}

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use metastore_raft::membership::Change;
use metastore_raft::node::MemberEntry;
use metastore_raft::{Completion, Member, MemberConfig};

use metastore_raft::{
    BatchConfig, ClusterConfig, EngineKind, Error, Op, Outcome, RaftSettings, StorageConfig,
    SyncClient,
};

/// 10 ms ticks: elections within ~200-400 ms, heartbeats every 20 ms.
pub fn raft_settings() -> RaftSettings {
    RaftSettings {
        tick_interval: Duration::from_millis(10),
        election_tick: 20,
        heartbeat_tick: 2,
        proposal_timeout: Duration::from_secs(2),
        ..RaftSettings::default()
    }
}

pub fn config(nodes: usize, engine: EngineKind, dir: &Path) -> ClusterConfig {
    ClusterConfig {
        nodes,
        raft: raft_settings(),
        batch: BatchConfig::default(),
        storage: StorageConfig {
            engine,
            data_dir: dir.to_path_buf(),
            sync: false,
        },
        ..ClusterConfig::default()
    }
}

pub fn start(cfg: ClusterConfig) -> SyncClient {
    let client = SyncClient::start(cfg).expect("cluster starts");
    client
        .wait_for_leader(Duration::from_secs(10))
        .expect("a leader is elected");
    client
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The current leader, waiting for one.
pub fn leader(c: &SyncClient) -> u64 {
    c.wait_for_leader(Duration::from_secs(10))
        .expect("a leader")
}

/// Isolates node `id` and waits until it no longer knows a leader (its
/// election timeout passed and its pre-vote found none).
///
/// First it waits until the node knows the leader: just after an election a
/// node that has not yet heard from the new leader reports none too, and a
/// message from the leader already queued for it would still make it a
/// follower after the cut (a write sent to it then would be forwarded, not
/// held).
pub fn isolate_until_leaderless(c: &SyncClient, id: u64) {
    wait_until(
        Duration::from_secs(10),
        "the node hears from its leader",
        || c.node(id).is_some_and(|n| n.raft_stats().leader_id != 0),
    );
    c.isolate(id);
    wait_until(
        Duration::from_secs(10),
        "the isolated node loses its leader",
        || c.node(id).is_some_and(|n| n.raft_stats().leader_id == 0),
    );
}

/// A follower that is running.
pub fn follower(c: &SyncClient) -> u64 {
    let l = leader(c);
    c.running()
        .into_iter()
        .find(|&id| id != l)
        .expect("a running follower")
}

/// What the helpers below retry on: the retryable codes, and `ERR_CLOSED`,
/// which a node stopped mid-test answers; `put_retry` and `delete_retry`
/// send each attempt to the current leader, which may be another node.
const RETRY_ON: [&str; 3] = ["ERR_PROPOSAL_DROPPED", "ERR_TIMEOUT", "ERR_CLOSED"];

fn retry(e: &Error, deadline: Instant) -> bool {
    RETRY_ON.contains(&e.code()) && Instant::now() < deadline
}

/// Puts through the current leader, retrying on `RETRY_ON` (only for tests
/// whose assertions do not depend on `existed`).
pub fn put_retry(c: &SyncClient, key: &[u8], value: &[u8]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let node = leader(c);
        match c.call(
            node,
            Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        ) {
            Ok(Outcome::Written { index, .. }) => return index,
            Ok(other) => panic!("put answered {other:?}"),
            Err(e) if retry(&e, deadline) => continue,
            Err(e) => panic!("put failed: {e} ({})", e.code()),
        }
    }
}

/// Waits until every running node has applied everything the leader has committed.
pub fn wait_converged(c: &SyncClient) {
    wait_until(
        Duration::from_secs(20),
        "all nodes apply the leader's commit index",
        || {
            let Some(l) = c.leader() else { return false };
            let Some(leader) = c.node(l) else {
                return false;
            };
            let commit = leader.stats().raft.commit_index;
            c.running().iter().all(|&id| {
                c.node(id)
                    .is_some_and(|n| n.stats().raft.applied_index >= commit)
            })
        },
    );
}

/// Reads `key` on node `node` (linearizable), retrying on `RETRY_ON`.
pub fn get(c: &SyncClient, node: u64, key: &[u8]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.get(node, key.to_vec()) {
            Ok(v) => return v,
            Err(e) if retry(&e, deadline) => continue,
            Err(e) => panic!("get on node {node} failed: {e} ({})", e.code()),
        }
    }
}

pub fn assert_code(r: Result<impl std::fmt::Debug, Error>, code: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), code, "unexpected error: {e}"),
        Ok(v) => panic!("expected {code}, got {v:?}"),
    }
}

pub fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

pub fn value(i: usize, round: usize) -> Vec<u8> {
    format!("value-{i}-{round}").into_bytes()
}

/// Deletes through the current leader, retrying on `RETRY_ON`.
pub fn delete_retry(c: &SyncClient, key: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let node = leader(c);
        match c.call(node, Op::Delete { key: key.to_vec() }) {
            Ok(_) => return,
            Err(e) if retry(&e, deadline) => continue,
            Err(e) => panic!("delete failed: {e} ({})", e.code()),
        }
    }
}

/// A member and the completions of what was asked of it.
pub struct Running {
    pub member: Member,
    pub done: Mutex<mpsc::Receiver<Completion>>,
    next_token: std::sync::atomic::AtomicU64,
}

impl Running {
    pub fn start(cfg: MemberConfig) -> Result<Running, Error> {
        let (tx, done) = mpsc::channel();
        let tx = Mutex::new(tx);
        let sink = Arc::new(move |batch: Vec<Completion>| {
            let tx = tx.lock().unwrap();
            for c in batch {
                let _ = tx.send(c);
            }
        });
        Ok(Running {
            member: Member::start(cfg, sink)?,
            done: Mutex::new(done),
            next_token: 1.into(),
        })
    }

    pub fn token(&self) -> u64 {
        self.next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The next completion of this member's requests, in whatever order.
    pub fn next_completion(&self) -> Completion {
        self.done
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
    }

    pub fn wait(&self, token: u64) -> Result<Outcome, Error> {
        let c = self.next_completion();
        assert_eq!(c.token, token);
        c.result
    }

    pub fn run(&self, op: Op) -> Result<Outcome, Error> {
        let token = self.token();
        self.member.node().submit(token, op)?;
        self.wait(token)
    }

    pub fn change(&self, change: Change) -> Result<Vec<MemberEntry>, Error> {
        let token = self.token();
        self.member
            .node()
            .change_membership(token, change, Duration::from_secs(20))?;
        match self.wait(token)? {
            Outcome::Membership(members) => Ok(members),
            other => panic!("a change answered {other:?}"),
        }
    }

    pub fn id(&self) -> u64 {
        self.member.node().id()
    }

    pub fn stats(&self) -> metastore_raft::RaftStats {
        self.member.node().raft_stats()
    }

    /// The leader this node knows (0: none).
    pub fn leader(&self) -> u64 {
        self.stats().leader_id
    }

    /// The members and roles this node sees, as `(id, voter)`.
    pub fn roles(&self) -> Vec<(u64, bool)> {
        self.member
            .node()
            .peers()
            .iter()
            .map(|p| (p.id, p.voter))
            .collect()
    }
}

pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}
