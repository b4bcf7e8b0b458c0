//! Point-in-time figures of a node. The node thread publishes them into
//! atomics after each loop iteration, so reading stats never waits on it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use metastore_batch::BatchStats;
use raft::StateRole;

use crate::config::EngineKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
    PreCandidate,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Candidate,
            2 => Role::Leader,
            3 => Role::PreCandidate,
            _ => Role::Follower,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::Follower => 0,
            Role::Candidate => 1,
            Role::Leader => 2,
            Role::PreCandidate => 3,
        }
    }
}

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Self {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
            StateRole::PreCandidate => Role::PreCandidate,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStats {
    pub id: u64,
    pub role: Role,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    /// `Ready`s written to the log (entries, hard state or snapshot), since
    /// start. The syncs among them are `StorageStats::syncs`.
    pub log_writes: u64,
    /// This node's writes answered with the result of an earlier attempt of
    /// the same request (a retry after an unknown outcome, applied once), since
    /// start.
    pub duplicate_writes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStats {
    pub engine: EngineKind,
    /// Entries currently in the raft log (after compaction).
    pub log_entries: u64,
    /// Approximate bytes of KV data plus log (engine estimate).
    pub approximate_bytes: u64,
    /// Syncs of the write-ahead log since start (rocksdb with sync on).
    pub syncs: u64,
    /// Wall time spent in those syncs, in microseconds.
    pub sync_micros: u64,
}

/// Counts an engine's syncs and the time they take; shared between the
/// engine (and its sync thread) and the node's stats.
#[derive(Debug, Default)]
pub struct SyncClock {
    count: AtomicU64,
    micros: AtomicU64,
}

impl SyncClock {
    pub fn record(&self, took: std::time::Duration) {
        self.count.fetch_add(1, Relaxed);
        self.micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct NodeStats {
    pub raft: RaftStats,
    pub batch: BatchStats,
    pub storage: StorageStats,
}

/// A member of the group as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub id: u64,
    /// Where the members dial it, from the group's membership record
    /// (`None` in a group that keeps none).
    pub address: Option<String>,
    /// A voter counts towards quorums; a learner only receives the log.
    pub voter: bool,
    /// The highest log index known to be on that member: known on the
    /// leader only (`None` elsewhere).
    pub match_index: Option<u64>,
    /// Entries of the leader's log that member lacks (its last index minus
    /// the match index): known on the leader only.
    pub lag: Option<u64>,
}

/// Figures written by the node thread, read by any thread.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    /// The configuration and, on the leader, each member's progress.
    peers: Mutex<Vec<PeerState>>,
    failure: Mutex<Option<crate::error::Error>>,
    role: AtomicU8,
    leader_id: AtomicU64,
    term: AtomicU64,
    commit_index: AtomicU64,
    applied_index: AtomicU64,
    last_index: AtomicU64,
    log_writes: AtomicU64,
    duplicate_writes: AtomicU64,
    log_entries: AtomicU64,
    approximate_bytes: AtomicU64,
    pub(crate) syncs: Arc<SyncClock>,
}

impl SharedStats {
    pub(crate) fn new(syncs: Arc<SyncClock>) -> Self {
        SharedStats {
            syncs,
            ..SharedStats::default()
        }
    }

    pub(crate) fn publish_raft(&self, s: &RaftStats) {
        self.role.store(s.role.to_u8(), Relaxed);
        self.leader_id.store(s.leader_id, Relaxed);
        self.term.store(s.term, Relaxed);
        self.commit_index.store(s.commit_index, Relaxed);
        self.applied_index.store(s.applied_index, Relaxed);
        self.last_index.store(s.last_index, Relaxed);
        self.log_writes.store(s.log_writes, Relaxed);
        self.duplicate_writes.store(s.duplicate_writes, Relaxed);
    }

    pub(crate) fn publish_peers(&self, peers: Vec<PeerState>) {
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    pub(crate) fn peers(&self) -> Vec<PeerState> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn publish_log_entries(&self, n: u64) {
        self.log_entries.store(n, Relaxed);
    }

    pub(crate) fn publish_storage(&self, s: &StorageStats) {
        self.log_entries.store(s.log_entries, Relaxed);
        self.approximate_bytes.store(s.approximate_bytes, Relaxed);
    }

    /// A stopped node keeps its last figures but reports no role of power.
    /// The node stopped serving because of `err` (a storage failure, a
    /// panic, its removal from the group).
    pub(crate) fn mark_failed(&self, err: crate::error::Error) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
        self.mark_stopped();
    }

    pub(crate) fn failure(&self) -> Option<crate::error::Error> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn mark_stopped(&self) {
        self.role.store(Role::Follower.to_u8(), Relaxed);
        self.leader_id.store(0, Relaxed);
    }

    pub(crate) fn raft(&self, id: u64) -> RaftStats {
        RaftStats {
            id,
            role: Role::from_u8(self.role.load(Relaxed)),
            leader_id: self.leader_id.load(Relaxed),
            term: self.term.load(Relaxed),
            commit_index: self.commit_index.load(Relaxed),
            applied_index: self.applied_index.load(Relaxed),
            last_index: self.last_index.load(Relaxed),
            log_writes: self.log_writes.load(Relaxed),
            duplicate_writes: self.duplicate_writes.load(Relaxed),
        }
    }

    pub(crate) fn storage(&self, engine: EngineKind) -> StorageStats {
        StorageStats {
            engine,
            log_entries: self.log_entries.load(Relaxed),
            approximate_bytes: self.approximate_bytes.load(Relaxed),
            syncs: self.syncs.count.load(Relaxed),
            sync_micros: self.syncs.micros.load(Relaxed),
        }
    }
}
