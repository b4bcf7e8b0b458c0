//! The figures of a node as JavaScript sees them (`stats()`).

use metastore_raft::transport::NetStats;
use metastore_raft::{EngineKind, NodeStats as CoreNodeStats, Role};
use napi_derive::napi;

use crate::batcher::BatchStatsView;

#[napi(string_enum = "kebab-case")]
pub enum RaftRole {
    Follower,
    Candidate,
    Leader,
    PreCandidate,
}

impl From<Role> for RaftRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Follower => RaftRole::Follower,
            Role::Candidate => RaftRole::Candidate,
            Role::Leader => RaftRole::Leader,
            Role::PreCandidate => RaftRole::PreCandidate,
        }
    }
}

#[napi(string_enum = "lowercase")]
pub enum Engine {
    /// Volatile: a restarted node starts empty and catches up from the others.
    Memory,
    /// Durable, in `data_dir/node-<id>`.
    RocksDb,
}

impl From<EngineKind> for Engine {
    fn from(engine: EngineKind) -> Self {
        match engine {
            EngineKind::Memory => Engine::Memory,
            EngineKind::RocksDb => Engine::RocksDb,
        }
    }
}

#[napi(object, js_name = "RaftStats")]
pub struct RaftStatsView {
    pub id: u32,
    pub role: RaftRole,
    /// 0 while no leader is known.
    pub leader_id: u32,
    pub term: f64,
    pub commit_index: f64,
    pub applied_index: f64,
    pub last_index: f64,
    /// Raft `Ready`s written to the log since start (each one write of new
    /// entries and hard state); the synced ones are `storage.syncs`.
    pub log_writes: f64,
    /// This node's writes answered with the result of an earlier attempt of
    /// the same request (sent again after an unknown outcome), since start.
    pub duplicate_writes: f64,
}

#[napi(object, js_name = "StorageStats")]
pub struct StorageStatsView {
    pub engine: Engine,
    pub log_entries: f64,
    pub approximate_bytes: f64,
    /// Syncs of the write-ahead log since start (rocksdb with `sync: true`; 0 in memory).
    pub syncs: f64,
    /// Wall time spent in those syncs, microseconds: `syncMicros / syncs` is
    /// the mean fsync latency.
    pub sync_micros: f64,
}

/// What a node's network end did since it started (gRPC only).
#[napi(object, js_name = "TransportStats")]
pub struct TransportStatsView {
    pub messages_sent: f64,
    pub bytes_sent: f64,
    pub messages_received: f64,
    pub bytes_received: f64,
    /// Dropped because a peer's queue was full or it was unreachable (raft retransmits).
    pub messages_dropped: f64,
    /// Streams refused (another cluster or node, no hello, malformed or
    /// oversized frames), and connections that ended without a hello (not
    /// HTTP/2, a failed TLS handshake, silent).
    pub refused: f64,
    pub connects: f64,
    pub connect_failures: f64,
    /// Snapshots that reached a peer (on their own streams, in chunks).
    pub snapshots_sent: f64,
    /// Snapshots that arrived here.
    pub snapshots_received: f64,
}

impl From<NetStats> for TransportStatsView {
    fn from(s: NetStats) -> Self {
        TransportStatsView {
            messages_sent: s.messages_sent as f64,
            bytes_sent: s.bytes_sent as f64,
            messages_received: s.messages_received as f64,
            bytes_received: s.bytes_received as f64,
            messages_dropped: s.messages_dropped as f64,
            refused: s.refused as f64,
            connects: s.connects as f64,
            connect_failures: s.connect_failures as f64,
            snapshots_sent: s.snapshots_sent as f64,
            snapshots_received: s.snapshots_received as f64,
        }
    }
}

#[napi(object)]
pub struct NodeStats {
    pub raft: RaftStatsView,
    pub batch: BatchStatsView,
    pub storage: StorageStatsView,
    /// The node's network end; absent over in-process channels.
    pub transport: Option<TransportStatsView>,
}

impl From<CoreNodeStats> for NodeStats {
    fn from(s: CoreNodeStats) -> Self {
        NodeStats {
            raft: RaftStatsView {
                id: s.raft.id as u32,
                role: s.raft.role.into(),
                leader_id: s.raft.leader_id as u32,
                term: s.raft.term as f64,
                commit_index: s.raft.commit_index as f64,
                applied_index: s.raft.applied_index as f64,
                last_index: s.raft.last_index as f64,
                log_writes: s.raft.log_writes as f64,
                duplicate_writes: s.raft.duplicate_writes as f64,
            },
            batch: s.batch.into(),
            storage: StorageStatsView {
                engine: s.storage.engine.into(),
                log_entries: s.storage.log_entries as f64,
                approximate_bytes: s.storage.approximate_bytes as f64,
                syncs: s.storage.syncs as f64,
                sync_micros: s.storage.sync_micros as f64,
            },
            transport: None,
        }
    }
}
