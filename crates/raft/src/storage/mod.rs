//! Storage engines. Both hold the raft log, the raft metadata and the KV
//! state machine, and implement [`raft::Storage`] so raft-rs reads its log
//! from them directly.
//!
//! The snapshot of a node is its KV state at the applied index: it is
//! serialized on demand when raft asks for one (the node thread is the only
//! writer, and it never applies while raft runs), and log compaction only
//! needs to keep the term of the last discarded entry.

use std::sync::Arc;

use raft::eraftpb::{Entry, HardState, Snapshot};

use crate::config::EngineKind;
use crate::error::Result;
use crate::stats::{StorageStats, SyncClock};

pub mod memory;
pub mod rocksdb;

pub use self::memory::MemoryEngine;
pub use self::rocksdb::RocksEngine;

/// How [`Engine::persist`] makes its write durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Not synced: the OS writes it back in its own time.
    Unsynced,
    /// Durable when `persist` returns.
    Synced,
    /// Durable when [`Engine::wait_durable`] returns. The engine may sync in
    /// the background meanwhile, so the node applies committed entries while
    /// the disk flushes.
    SyncedByWait,
}

/// What the node thread needs from an engine besides [`raft::Storage`].
///
/// Errors are returned, never panicked: the node turns them into rejected
/// requests and stops itself.
pub trait Engine: raft::Storage + Send + 'static {
    fn kind(&self) -> EngineKind;

    /// Persists one `Ready` atomically: the snapshot (replacing the KV state
    /// and the whole log), then `entries` (dropping any conflicting tail of the
    /// log), then the hard state, as durable as `durability` asks.
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        durability: Durability,
    ) -> Result<()>;

    /// Records the commit index of a `LightReady`. It reaches disk with the next
    /// write (raft can always recompute it; only `applied <= commit` must hold
    /// on disk, which `finish_apply` keeps).
    fn set_commit(&mut self, commit: u64);

    /// Where the engine counts its syncs and their time (for stats).
    fn sync_clock(&self) -> Arc<SyncClock> {
        Arc::default()
    }

    /// Returns once everything `persist` wrote with
    /// [`Durability::SyncedByWait`] is durable.
    fn wait_durable(&mut self) -> Result<()> {
        Ok(())
    }

    /// Applies a put of the current apply round. Returns whether the key
    /// existed; an engine for which finding out costs a read may skip it
    /// (`None`) unless `want_existed` (someone waits for the answer).
    fn apply_put(&mut self, key: &[u8], value: &[u8], want_existed: bool) -> Result<Option<bool>>;

    /// Applies a delete of the current apply round, like [`apply_put`](Self::apply_put).
    fn apply_delete(&mut self, key: &[u8], want_existed: bool) -> Result<Option<bool>>;

    /// Ends an apply round: its writes and the new applied index land together,
    /// so applying again after a crash is idempotent.
    fn finish_apply(&mut self, applied: u64) -> Result<()>;

    fn applied_index(&self) -> u64;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Discards log entries before `index` (`index <= applied`); the term of
    /// `index` stays known. A no-op when already compacted that far.
    fn compact(&mut self, index: u64) -> Result<()>;

    /// Entries in the log now (cheap; published every loop iteration).
    fn log_entries(&self) -> u64;

    /// Log size plus the engine's size estimate (may query the engine).
    fn stats(&self) -> StorageStats;
}

/// The raft-rs storage error for an engine failure; raft-rs turns some of
/// these into panics, which the node thread catches.
pub(crate) fn raft_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(e.to_string().into()))
}
