//! MetaStore's Raft core: a [`RaftNode`] built on raft-rs `RawNode`, fed by the
//! adaptive proposal batcher of `metastore-batch`, with a memory and a RocksDB
//! storage engine, an in-process transport and a [`LocalCluster`] that runs a
//! whole group inside one process.
//!
//! Data flow of a write: [`RaftNode::submit`] encodes the op as a
//! [`command`] carrying its request id, the batcher packs commands into one
//! log entry, the node thread proposes it, persists each `Ready` in one write,
//! applies committed entries in log order and resolves the caller's token
//! through the [`CompletionSink`].

pub mod bell;
#[cfg(feature = "test-support")]
pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod identity;
pub mod incarnation;
pub mod kv;
pub mod member;
pub mod membership;
pub mod node;
pub mod session;
pub mod stats;
pub mod storage;
pub mod transport;

#[cfg(feature = "test-support")]
pub use client::SyncClient;
pub use cluster::LocalCluster;
pub use command::{CommandOp, SessionStamp};
pub use config::{ClusterConfig, EngineKind, NodeConfig, RaftSettings, StorageConfig};
pub use error::Error;
pub use member::{Member, MemberConfig, TlsFiles};
pub use metastore_batch::{BatchConfig, BatchStats, ErrorCode, ErrorOutcome};
pub use node::{Completion, CompletionSink, Op, Outcome, RaftNode, Request};
pub use stats::{NodeStats, PeerState, RaftStats, Role, StorageStats, SyncClock};
