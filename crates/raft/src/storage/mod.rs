//! Storage engines. Both hold the raft log, the raft metadata and the KV
//! state machine, and implement [`raft::Storage`] so raft-rs reads its log
//! from them directly.
//!
//! The snapshot of a node is its KV state at the applied index: it is
//! serialized on demand when raft asks for one (the node thread is the only
//! writer, and it never applies while raft runs), and log compaction only
//! needs to keep the term of the last discarded entry.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use crate::bell::Bell;
use crate::command::SessionStamp;
use crate::config::EngineKind;
use crate::error::Result;
use crate::membership::Membership;
use crate::session::{Record, Sessions};
use crate::stats::{StorageStats, SyncClock};

pub mod memory;
pub mod rocksdb;

pub use self::memory::MemoryEngine;
pub use self::rocksdb::RocksEngine;

/// Where a new group's log starts: its storage begins as if a snapshot at
/// index 1, term 1 held the initial configuration, so the log proper starts
/// at 2. A node that joins later has nothing at index 1 and so catches up by
/// a snapshot, which carries the configuration (replaying the log from its
/// start would miss the initial voters, which no entry holds).
pub const BOOTSTRAP_INDEX: u64 = 1;
pub const BOOTSTRAP_TERM: u64 = 1;

/// What a background WAL sync reports: done, or why it failed.
pub type SyncOutcome = std::result::Result<(), String>;

/// How [`Engine::persist`] makes its write durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Not synced by this call: the OS writes it back in its own time, or a
    /// later [`Engine::start_sync`] makes it durable.
    Unsynced,
    /// Durable when `persist` returns, with everything written before it.
    Synced,
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

    /// Starts preparing the install of `snap` off the node thread; `true`
    /// when the node should hold the snapshot's message until
    /// [`snapshot_prepared`](Self::snapshot_prepared) says so (the install
    /// then takes little time on the node thread).
    fn prepare_snapshot(&mut self, _snap: &Snapshot) -> bool {
        false
    }

    /// Whether the install of the snapshot at `index`/`term` may go ahead
    /// (prepared, or failed to prepare and installs inline).
    fn snapshot_prepared(&mut self, _index: u64, _term: u64) -> bool {
        true
    }

    /// Where the engine counts its syncs and their time (for stats).
    fn sync_clock(&self) -> Arc<SyncClock> {
        Arc::default()
    }

    /// Whether what `persist` writes needs a sync to survive a crash (the
    /// memory engine keeps nothing across one, so it never syncs).
    fn durable_by_sync(&self) -> bool {
        false
    }

    /// Starts making everything written so far durable in the background.
    /// `true`: its outcome will arrive on [`sync_outcomes`](Self::sync_outcomes);
    /// `false`: there was nothing to sync, and what was written counts as
    /// durable at once. The node keeps one sync in flight at a time.
    fn start_sync(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Where the outcomes of background syncs arrive, one per started sync;
    /// the same channel for the engine's life. Each outcome sent from
    /// another thread rings `bell` (the node thread's) after it is sent.
    fn sync_outcomes(&mut self, _bell: &Bell) -> Option<Receiver<SyncOutcome>> {
        None
    }

    /// Takes an outcome received from [`sync_outcomes`](Self::sync_outcomes).
    fn sync_finished(&mut self, _outcome: SyncOutcome) -> Result<()> {
        Ok(())
    }

    /// Applies a put of the current apply round. Returns whether the key
    /// existed; an engine for which finding out costs a read may skip it
    /// (`None`) unless `want_existed` (someone waits for the answer).
    fn apply_put(&mut self, key: &[u8], value: &[u8], want_existed: bool) -> Result<Option<bool>>;

    /// Applies a delete of the current apply round, like [`apply_put`](Self::apply_put).
    fn apply_delete(&mut self, key: &[u8], want_existed: bool) -> Result<Option<bool>>;

    /// The client sessions of the state machine (see [`crate::session`]);
    /// changed only by apply rounds and snapshots.
    fn sessions(&mut self) -> &mut Sessions;

    /// Records the result of a session's write in the current apply round.
    fn record_session(&mut self, stamp: &SessionStamp, record: Record) -> Result<()> {
        self.sessions().record(stamp, record);
        Ok(())
    }

    /// The group's membership record as of the current apply round (see
    /// [`crate::membership`]); `None` for a node of an in-process cluster,
    /// which keeps none, and for a joining node before its first snapshot.
    fn membership(&self) -> Option<&Membership>;

    /// Replaces the membership record in the current apply round.
    fn set_membership(&mut self, membership: Membership) -> Result<()>;

    /// Replaces the configuration (raft-rs's `ConfState`) in the current
    /// apply round, after raft-rs applied a configuration change.
    fn set_conf_state(&mut self, cs: ConfState) -> Result<()>;

    /// The configuration as of the current apply round.
    fn conf_state(&self) -> ConfState;

    /// Ends an apply round: its writes, the sessions' changes and the new
    /// applied index land together,
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
