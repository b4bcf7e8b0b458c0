//! The RocksDB engine, one database per node in `data_dir/node-<id>`.
//!
//! Column families:
//! - `log`:  raft entries, key = index as big-endian u64 (so keys sort by index)
//! - `meta`: hard state, conf state, truncated index/term, applied index
//! - `kv`:   the KV state machine
//! - `sessions`: the client sessions of the state machine (`sessions.rs`)
//!
//! Each `Ready` is one `WriteBatch` (snapshot, entries, tail deletes, hard
//! state), synced when raft requires it. Each apply round is one batch holding
//! the KV writes and the applied index, so replaying after a crash is
//! idempotent. Nothing read from disk is unwrapped: a damaged database is an
//! [`Error::Storage`] naming the path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::Storage;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use self::install::Installs;
use self::log_cache::LogCache;
use self::recover::{holds_database, EMPTY};
use self::round_keys::RoundKeys;
use self::sessions::SessionStore;
use self::snapshot::SnapshotBuilder;
use self::wal_sync::WalSyncer;
use super::{raft_err, Durability, Engine, SyncOutcome};
use crate::bell::Bell;
use crate::command::SessionStamp;
use crate::config::EngineKind;
use crate::error::{Error, Result};
use crate::identity::{self, Bootstrap, Identity};
use crate::membership::Membership;
use crate::session::{Record, Sessions};
use crate::stats::{StorageStats, SyncClock};

mod install;
mod log_cache;
mod raft_storage;
mod recover;
mod round_keys;
mod sessions;
mod snapshot;
mod wal_ahead;
mod wal_sync;

pub const CF_LOG: &str = "log";
pub const CF_META: &str = "meta";
pub const CF_KV: &str = "kv";
pub const CF_SESSIONS: &str = "sessions";
pub const KEY_HARD_STATE: &[u8] = b"hard_state";
pub const KEY_CONF_STATE: &[u8] = b"conf_state";
/// `index u64 BE | term u64 BE` of the last discarded log entry.
pub const KEY_TRUNCATED: &[u8] = b"truncated";
/// `u64 BE`: the last index whose commands are in `kv`.
pub const KEY_APPLIED: &[u8] = b"applied";
/// The path of a prepared snapshot file whose ingestion into `kv` the
/// install recorded but may not have finished (see `install.rs`).
pub const KEY_PENDING_INSTALL: &[u8] = b"pending_install";
/// Whose state this is: [`Identity::encode`].
pub const KEY_IDENTITY: &[u8] = b"identity";
/// The group's membership record as of `applied`: [`Membership::encode`].
pub const KEY_MEMBERSHIP: &[u8] = b"membership";

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A write whose caller waits asks whether its key existed: a point lookup
/// of a key that is often new. A bloom filter per table file answers
/// "absent" without reading its blocks. (A memtable bloom filter was
/// measured too: it costs more on every insert than it saves on lookups.)
fn kv_options() -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts
}

pub struct RocksEngine {
    db: Arc<DB>,
    path: PathBuf,
    hard_state: HardState,
    /// `hard_state` differs from the one on disk by its commit index alone:
    /// it goes out with the next write instead of a write of its own (a
    /// commit index need not be durable; recovery takes it up to the
    /// applied index, which every apply writes with it).
    hard_state_unwritten: bool,
    conf_state: ConfState,
    /// The applied index at which the configuration last changed: a built
    /// snapshot older than it has an outdated configuration (a new learner
    /// would refuse it).
    conf_index: u64,
    /// The configuration changed in the current apply round.
    conf_changed: bool,
    membership: Option<Membership>,
    /// This node's id while it joins a running group and has no identity
    /// record yet: the first snapshot brings the group's.
    joining: Option<u64>,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    applied: u64,
    /// A contiguous tail of the persisted log.
    cache: LogCache,
    /// The current apply round: its batch, and what it did to each key.
    apply_batch: WriteBatch,
    apply_overlay: RoundKeys,
    /// For the point lookups of the apply rounds and reads: the crate's
    /// default allocates a fresh one in C++ per lookup.
    read_opts: ReadOptions,
    /// The sessions as of `applied` plus the current round; the round's
    /// changes are written with its batch.
    sessions: SessionStore,
    /// The snapshot for followers, built off the node thread.
    snapshots: SnapshotBuilder,
    /// The snapshot to install, prepared off the node thread.
    installs: Installs,
    /// Declared after `db`: dropping it joins the thread holding the other
    /// reference, so the database is closed when the engine is dropped.
    syncer: WalSyncer,
    sync_clock: Arc<SyncClock>,
}

impl RocksEngine {
    /// Opens the database in `dir` and recovers the raft state from it. The
    /// database must belong to `identity`; with [`Bootstrap::New`] an empty
    /// one is created for it, with [`Bootstrap::Existing`] an empty or missing
    /// one is refused ([`Error::DataDirMismatch`]).
    pub fn open(dir: &Path, identity: &Identity, bootstrap: Bootstrap) -> Result<Self> {
        let path = dir.to_path_buf();
        let storage_err = |what: &str, e: &dyn std::fmt::Display| {
            Error::Storage(format!("{what} {}: {e}", path.display()))
        };
        if bootstrap == Bootstrap::Existing && !holds_database(dir) {
            return Err(identity::mismatch(dir, EMPTY, identity));
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| storage_err("cannot create data directory", &e))?;

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_recycle_log_file_num(wal_ahead::REUSED_WAL_FILES);
        let cfs = [
            ColumnFamilyDescriptor::new(CF_LOG, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_KV, kv_options()),
            ColumnFamilyDescriptor::new(CF_SESSIONS, Options::default()),
        ];
        let db = Arc::new(
            DB::open_cf_descriptors(&opts, &path, cfs)
                .map_err(|e| storage_err("cannot open RocksDB at", &e))?,
        );
        let sync_clock = Arc::new(SyncClock::default());
        let syncer = WalSyncer::start(Arc::clone(&db), &path, Arc::clone(&sync_clock))?;

        let mut engine = RocksEngine {
            db,
            path,
            hard_state: HardState::default(),
            hard_state_unwritten: false,
            conf_state: ConfState::default(),
            conf_index: 0,
            conf_changed: false,
            membership: None,
            joining: None,
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
            applied: 0,
            cache: LogCache::default(),
            apply_batch: WriteBatch::default(),
            apply_overlay: RoundKeys::default(),
            read_opts: ReadOptions::default(),
            sessions: SessionStore::new(Sessions::default(), Default::default()),
            snapshots: SnapshotBuilder::new(),
            installs: Installs::default(),
            syncer,
            sync_clock,
        };
        engine.recover(identity, bootstrap)?;
        Ok(engine)
    }

    /// Makes the live WAL file one whose blocks are already written, so that
    /// syncs rewrite them instead of growing the file (`wal_ahead.rs`). For a
    /// database that syncs; it costs about 0.1-0.2 s of writes at open.
    pub fn write_wal_ahead(&self) -> Result<()> {
        wal_ahead::write_ahead(&self.db, &self.path, wal_ahead::WAL_AHEAD_BYTES)
            .map_err(|e| self.err("cannot write the WAL ahead", e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Storage(format!("{what} in {}: {e}", self.path.display()))
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        Error::Storage(format!("corrupt database {}: {what}", self.path.display()))
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| {
            Error::Storage(format!(
                "column family {name} missing in {}",
                self.path.display()
            ))
        })
    }

    fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(CF_META)?, key)
            .map_err(|e| self.err("cannot read meta", e))
    }

    fn write(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let started = Instant::now();
        let written = self
            .db
            .write_opt(wb, &wo)
            .map_err(|e| self.err("write failed", e));
        if sync {
            self.sync_clock.record(started.elapsed());
        }
        written
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let log = self.cf(CF_LOG).map_err(raft_err)?;
        let bytes = self
            .db
            .get_pinned_cf(log, log_key(index))
            .map_err(|e| raft_err(self.err("cannot read raft log", e)))?
            .ok_or_else(|| raft_err(self.corrupt(format!("log entry {index} missing"))))?;
        let e = Entry::parse_from_bytes(&bytes)
            .map_err(|e| raft_err(self.corrupt(format!("log entry {index}: {e}"))))?;
        if e.index != index {
            return Err(raft_err(self.corrupt(format!(
                "log entry under key {index} has index {}",
                e.index
            ))));
        }
        Ok(e)
    }

    fn put_hard_state(&self, wb: &mut WriteBatch, hs: &HardState) -> Result<()> {
        let bytes = hs
            .write_to_bytes()
            .map_err(|e| self.err("cannot encode hard state", e))?;
        wb.put_cf(self.cf(CF_META)?, KEY_HARD_STATE, bytes);
        Ok(())
    }

    fn put_truncated(&self, wb: &mut WriteBatch, index: u64, term: u64) -> Result<()> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&index.to_be_bytes());
        v[8..].copy_from_slice(&term.to_be_bytes());
        wb.put_cf(self.cf(CF_META)?, KEY_TRUNCATED, v);
        Ok(())
    }
}

impl Engine for RocksEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::RocksDb
    }

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        durability: Durability,
    ) -> Result<()> {
        let unsynced = durability == Durability::Unsynced;
        if snapshot.is_none() && entries.is_empty() && unsynced {
            match hard_state {
                // Nothing to write: no empty write reaches the WAL.
                None => return Ok(()),
                Some(hs) if (hs.term, hs.vote) == (self.hard_state.term, self.hard_state.vote) => {
                    self.hard_state = hs.clone();
                    self.hard_state_unwritten = true;
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        let mut wb = WriteBatch::default();
        let (mut truncated_index, mut truncated_term, mut last, mut applied) = (
            self.truncated_index,
            self.truncated_term,
            self.last_index,
            self.applied,
        );
        let mut hs = hard_state
            .cloned()
            .unwrap_or_else(|| self.hard_state.clone());
        let mut cs = None;
        let mut sessions = None;
        let mut membership = None;
        let mut pending = None;
        if let Some(snap) = snapshot {
            let (staged, members, file) = self.stage_snapshot(&mut wb, snap)?;
            sessions = Some(staged);
            membership = Some(members);
            pending = file;
            let meta = snap.get_metadata();
            (truncated_index, truncated_term, last, applied) =
                (meta.index, meta.term, meta.index, meta.index);
            hs.commit = hs.commit.max(meta.index);
            cs = Some(meta.get_conf_state().clone());
        }
        if let (Some(node_id), None, false) = (self.joining, snapshot, entries.is_empty()) {
            return Err(Error::Storage(format!(
                "node {node_id} joins a group whose log starts at index 1: it would replay it \
                 without the group's initial configuration; add it to a group whose log starts \
                 after its bootstrap index (any group made by this version), or after a log \
                 compaction"
            )));
        }
        if let (Some(first), Some(new_last)) = (entries.first(), entries.last()) {
            let (first, new_last) = (first.index, new_last.index);
            if first <= truncated_index || first > last + 1 {
                return Err(self.corrupt(format!(
                    "append of [{first}, {new_last}] does not fit the log ({truncated_index}, {last}]"
                )));
            }
            let log = self.cf(CF_LOG)?;
            if new_last < last {
                wb.delete_range_cf(log, log_key(new_last + 1), log_key(last + 1));
            }
            for e in entries {
                let bytes = e
                    .write_to_bytes()
                    .map_err(|e| self.err("cannot encode log entry", e))?;
                wb.put_cf(log, log_key(e.index), bytes);
            }
            last = new_last;
        }
        if hard_state.is_some() || snapshot.is_some() || self.hard_state_unwritten {
            self.put_hard_state(&mut wb, &hs)?;
        }
        // An install's pending record must be durable before its file is
        // ingested (ready.rs writes a snapshot synced anyway).
        self.write(wb, durability == Durability::Synced || pending.is_some())?;
        if let Some(path) = &pending {
            self.finish_install(path)?;
        }

        self.hard_state = hs;
        self.hard_state_unwritten = false;
        if let Some(sessions) = sessions {
            self.sessions.replaced(sessions, applied);
        }
        if let Some(cs) = cs {
            self.conf_state = cs;
            self.conf_index = applied;
            self.joining = None;
            self.cache.clear();
        }
        if let Some(m) = membership {
            self.membership = m;
        }
        (
            self.truncated_index,
            self.truncated_term,
            self.last_index,
            self.applied,
        ) = (truncated_index, truncated_term, last, applied);
        self.cache.append(entries);
        Ok(())
    }

    fn prepare_snapshot(&mut self, snap: &Snapshot) -> bool {
        snap.data.len() >= install::PREPARE_MIN_BYTES
            && self.installs.prepare(&self.path, snap).is_ok()
    }

    fn snapshot_prepared(&mut self, index: u64, term: u64) -> bool {
        self.installs.settled(index, term)
    }

    fn sync_clock(&self) -> Arc<SyncClock> {
        Arc::clone(&self.sync_clock)
    }

    fn durable_by_sync(&self) -> bool {
        true
    }

    fn start_sync(&mut self) -> Result<bool> {
        self.syncer
            .request()
            .map(|()| true)
            .map_err(|e| self.err("cannot sync the WAL", e))
    }

    fn sync_outcomes(&mut self, bell: &Bell) -> Option<Receiver<SyncOutcome>> {
        let _ = self.syncer.bell.set(bell.clone());
        Some(self.syncer.done.clone())
    }

    fn sync_finished(&mut self, outcome: SyncOutcome) -> Result<()> {
        outcome.map_err(|e| self.err("cannot sync the WAL", e))
    }

    fn apply_put(&mut self, key: &[u8], value: &[u8], want: bool) -> Result<Option<bool>> {
        let earlier = self.apply_overlay.replace(key, true);
        let existed = self.existed(key, earlier, want)?;
        let kv = self
            .db
            .cf_handle(CF_KV)
            .ok_or_else(|| self.corrupt("column family kv missing"))?;
        self.apply_batch.put_cf(kv, key, value);
        Ok(existed)
    }

    fn apply_delete(&mut self, key: &[u8], want: bool) -> Result<Option<bool>> {
        let earlier = self.apply_overlay.replace(key, false);
        let existed = self.existed(key, earlier, want)?;
        // Unknown: delete anyway (a tombstone for an absent key is harmless).
        if existed != Some(false) {
            let kv = self
                .db
                .cf_handle(CF_KV)
                .ok_or_else(|| self.corrupt("column family kv missing"))?;
            self.apply_batch.delete_cf(kv, key);
        }
        Ok(existed)
    }

    fn sessions(&mut self) -> &mut Sessions {
        &mut self.sessions.sessions
    }

    fn record_session(&mut self, stamp: &SessionStamp, record: Record) -> Result<()> {
        self.sessions.record(stamp, record);
        Ok(())
    }

    fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    fn set_membership(&mut self, membership: Membership) -> Result<()> {
        let meta = self
            .db
            .cf_handle(CF_META)
            .ok_or_else(|| self.corrupt("column family meta missing"))?;
        self.apply_batch
            .put_cf(meta, KEY_MEMBERSHIP, membership.encode());
        self.membership = Some(membership);
        Ok(())
    }

    fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        let bytes = cs
            .write_to_bytes()
            .map_err(|e| self.err("cannot encode conf state", e))?;
        let meta = self
            .db
            .cf_handle(CF_META)
            .ok_or_else(|| self.corrupt("column family meta missing"))?;
        self.apply_batch.put_cf(meta, KEY_CONF_STATE, bytes);
        self.conf_state = cs;
        self.conf_changed = true;
        Ok(())
    }

    fn conf_state(&self) -> ConfState {
        self.conf_state.clone()
    }

    fn finish_apply(&mut self, applied: u64) -> Result<()> {
        if std::mem::take(&mut self.conf_changed) {
            self.conf_index = applied;
        }
        // The next round's batch starts at this one's size instead of
        // growing to it again by doubling.
        let size = self.apply_batch.size_in_bytes();
        let next = WriteBatch::with_capacity_bytes(size);
        let mut wb = std::mem::replace(&mut self.apply_batch, next);
        self.apply_overlay.clear();
        let db = Arc::clone(&self.db);
        let cf = db
            .cf_handle(CF_SESSIONS)
            .ok_or_else(|| self.corrupt("column family sessions missing"))?;
        self.sessions.stage_round(&mut wb, cf, applied);
        wb.put_cf(self.cf(CF_META)?, KEY_APPLIED, applied.to_be_bytes());
        if self.hard_state_unwritten {
            self.put_hard_state(&mut wb, &self.hard_state)?;
        }
        // Not synced: the entries are durable in the log and are re-applied
        // after a crash from the applied index written here.
        self.write(wb, false)?;
        self.hard_state_unwritten = false;
        self.applied = applied;
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_pinned_cf_opt(self.cf(CF_KV)?, key, &self.read_opts)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err("cannot read kv", e))
    }

    fn compact(&mut self, index: u64) -> Result<()> {
        let index = index.min(self.applied);
        if index <= self.truncated_index {
            return Ok(());
        }
        let term = self
            .term(index)
            .map_err(|e| self.err("cannot compact", e))?;
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(self.cf(CF_LOG)?, log_key(0), log_key(index + 1));
        self.put_truncated(&mut wb, index, term)?;
        self.write(wb, false)?;
        (self.truncated_index, self.truncated_term) = (index, term);
        // A built snapshot the log no longer reaches serves nobody: free it.
        self.snapshots.release_older_than(index);
        self.cache.compact(index);
        Ok(())
    }

    fn stats(&self) -> StorageStats {
        let mut bytes = 0;
        for name in [CF_LOG, CF_META, CF_KV, CF_SESSIONS] {
            if let Ok(cf) = self.cf(name) {
                for prop in [
                    "rocksdb.estimate-live-data-size",
                    "rocksdb.cur-size-all-mem-tables",
                ] {
                    bytes += self
                        .db
                        .property_int_value_cf(cf, prop)
                        .ok()
                        .flatten()
                        .unwrap_or(0);
                }
            }
        }
        StorageStats {
            engine: EngineKind::RocksDb,
            log_entries: self.log_entries(),
            approximate_bytes: bytes,
            syncs: 0, // read from `sync_clock` by the node's stats
            sync_micros: 0,
        }
    }

    fn log_entries(&self) -> u64 {
        self.last_index - self.truncated_index
    }
}

impl RocksEngine {
    /// Whether `key` has a value before the current command: known from the
    /// round's own earlier writes (`earlier`), else read from the database
    /// only when wanted (followers apply without anyone waiting, and skip it).
    fn existed(&self, key: &[u8], earlier: Option<bool>, want: bool) -> Result<Option<bool>> {
        if earlier.is_some() {
            return Ok(earlier);
        }
        if !want {
            return Ok(None);
        }
        self.db
            .get_pinned_cf_opt(self.cf(CF_KV)?, key, &self.read_opts)
            .map(|v| Some(v.is_some()))
            .map_err(|e| self.err("cannot read kv", e))
    }
}

#[cfg(test)]
mod tests;
