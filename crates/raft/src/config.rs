//! Configuration of a node and of a local cluster, and its rules. The
//! `Default` impls here and in `metastore_batch::BatchConfig` are the one
//! source of MetaStore's defaults: the binding hands them to the TypeScript
//! config loader, and `configs/config.yaml` is tested to equal them. They are
//! production defaults (raft-rs's own are not: `max_size_per_msg = 0` sends
//! one entry per append message).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use metastore_batch::BatchConfig;

use crate::error::{Error, Result};

/// Raft timing and flow control.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftSettings {
    /// Wall time of one raft tick.
    pub tick_interval: Duration,
    /// Ticks without a leader message before a follower campaigns
    /// (randomized in `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Byte limit of one append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Applied entries between two log compactions (the KV state is the snapshot).
    pub snapshot_count: u64,
    /// Bytes of applied log that also trigger a compaction; it keeps a tail
    /// of at most a quarter of this (and a tenth of `snapshot_count` entries).
    pub max_log_size: u64,
    /// Deadline of every request; past it the request rejects with ERR_TIMEOUT.
    pub proposal_timeout: Duration,
    /// A learner is promoted only when its match index is at most this many
    /// entries behind the leader's commit index.
    pub promote_max_lag: u64,
    /// How long a client sends a write again after attempts whose outcome
    /// is unknown (the TypeScript facade; each attempt may take up to
    /// `proposal_timeout`). Not used by the node itself.
    pub request_timeout: Duration,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_interval: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            snapshot_count: 10_000,
            max_log_size: 16 << 20,
            proposal_timeout: Duration::from_secs(5),
            promote_max_lag: 256,
            request_timeout: Duration::from_secs(15),
        }
    }
}

impl RaftSettings {
    pub fn validate(&self) -> Result<()> {
        if self.tick_interval.is_zero() {
            return Err(Error::invalid("raft.tick_interval", "must be > 0"));
        }
        if self.election_tick == 0 {
            return Err(Error::invalid("raft.election_tick", "must be >= 1"));
        }
        if self.heartbeat_tick == 0 {
            return Err(Error::invalid("raft.heartbeat_tick", "must be >= 1"));
        }
        if self.heartbeat_tick >= self.election_tick {
            return Err(Error::invalid(
                "raft.heartbeat_tick",
                format!(
                    "({}) must be < election_tick ({})",
                    self.heartbeat_tick, self.election_tick
                ),
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(Error::invalid("raft.max_inflight_msgs", "must be >= 1"));
        }
        if self.snapshot_count == 0 {
            return Err(Error::invalid("raft.snapshot_count", "must be >= 1"));
        }
        if self.max_log_size == 0 {
            return Err(Error::invalid("raft.max_log_size", "must be >= 1"));
        }
        if self.promote_max_lag == 0 {
            return Err(Error::invalid("raft.promote_max_lag", "must be >= 1"));
        }
        if self.proposal_timeout.is_zero() {
            return Err(Error::invalid("raft.proposal_timeout", "must be > 0"));
        }
        if self.proposal_timeout > self.request_timeout {
            return Err(Error::invalid(
                "raft.proposal_timeout",
                format!(
                    "({:?}) must be <= request_timeout ({:?})",
                    self.proposal_timeout, self.request_timeout
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// raft-rs `MemStorage` plus an ordered map. Volatile: a restarted node
    /// starts empty and catches up from the others. It also forgets its vote,
    /// which Raft assumes durable; pre-vote makes a double vote unlikely but
    /// not impossible, so use RocksDB where that matters.
    Memory,
    /// RocksDB in `data_dir/node-<id>`.
    RocksDb,
}

impl EngineKind {
    /// The name used in config files (`memory`, `rocksdb`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EngineKind::Memory => "memory",
            EngineKind::RocksDb => "rocksdb",
        }
    }
}

impl FromStr for EngineKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [EngineKind::Memory, EngineKind::RocksDb]
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "storage.engine",
                    format!("must be one of memory, rocksdb, got '{s}'"),
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub engine: EngineKind,
    /// Root directory; each node uses `data_dir/node-<id>` (RocksDB only).
    pub data_dir: PathBuf,
    /// fsync the raft log when raft requires it (`Ready::must_sync`). When
    /// false, changes of term and vote are still synced.
    pub sync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: EngineKind::RocksDb,
            data_dir: PathBuf::from("./data"),
            sync: true,
        }
    }
}

impl StorageConfig {
    /// The directory of node `id`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    pub fn validate(&self) -> Result<()> {
        if self.engine == EngineKind::RocksDb && self.data_dir.as_os_str().is_empty() {
            return Err(Error::invalid(
                "storage.data_dir",
                "must be set for the rocksdb engine",
            ));
        }
        Ok(())
    }
}

/// How the nodes of a [`LocalCluster`](crate::LocalCluster) reach each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// In-process channels.
    #[default]
    Local,
    /// gRPC over loopback sockets, as between hosts.
    Grpc,
}

/// A group of `nodes` nodes with ids `1..=nodes`, all in this process.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub raft: RaftSettings,
    pub batch: BatchConfig,
    pub storage: StorageConfig,
    pub transport: TransportKind,
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 {
            return Err(Error::invalid("nodes", "must be >= 1"));
        }
        self.raft.validate()?;
        self.batch.validate()?;
        self.storage.validate()
    }

    /// The config of node `id` of this cluster.
    pub fn node_config(&self, id: u64) -> NodeConfig {
        NodeConfig {
            id,
            peers: (1..=self.nodes as u64).collect(),
            raft: self.raft.clone(),
            batch: self.batch.clone(),
            storage: self.storage.clone(),
        }
    }
}

/// One node. `peers` is the initial voter set and includes `id`.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub peers: Vec<u64>,
    pub raft: RaftSettings,
    pub batch: BatchConfig,
    pub storage: StorageConfig,
}

impl NodeConfig {
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::invalid("id", "must be >= 1"));
        }
        if self.peers.contains(&0) {
            return Err(Error::invalid("peers", "node ids must be >= 1"));
        }
        if !self.peers.contains(&self.id) {
            return Err(Error::invalid(
                "peers",
                format!("must contain the node's own id ({})", self.id),
            ));
        }
        let mut sorted = self.peers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.peers.len() {
            return Err(Error::invalid("peers", "must not contain duplicates"));
        }
        self.raft.validate()?;
        self.batch.validate()?;
        self.storage.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ClusterConfig {
            nodes: 1,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.storage.engine, EngineKind::RocksDb);
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn engine_names() {
        for e in [EngineKind::Memory, EngineKind::RocksDb] {
            assert_eq!(e.as_str().parse::<EngineKind>(), Ok(e));
        }
        assert_eq!(
            "disk".parse::<EngineKind>().unwrap_err().to_string(),
            "invalid config: storage.engine: must be one of memory, rocksdb, got 'disk'"
        );
    }
}
