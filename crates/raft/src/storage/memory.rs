//! The memory engine: raft-rs `MemStorage` for the log and raft metadata, and
//! an ordered map for the KV state. Volatile: a restarted node starts empty
//! (with the bootstrap voter set) and catches up by log or snapshot.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::{Durability, Engine, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
use crate::config::EngineKind;
use crate::error::{Error, Result};
use crate::kv::{decode_snapshot, SnapshotWriter};
use crate::membership::Membership;
use crate::session::Sessions;
use crate::stats::StorageStats;

pub struct MemoryEngine {
    log: MemStorage,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sum of key and value lengths in `kv`.
    kv_bytes: u64,
    sessions: Sessions,
    membership: Option<Membership>,
    applied: u64,
}

impl MemoryEngine {
    /// A fresh engine whose initial voter set is `peers` (see
    /// [`BOOTSTRAP_INDEX`]).
    pub fn new(peers: &[u64]) -> Self {
        let log = MemStorage::new();
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = BOOTSTRAP_INDEX;
        meta.term = BOOTSTRAP_TERM;
        meta.set_conf_state(ConfState::from((peers.to_vec(), Vec::<u64>::new())));
        // An empty storage always takes a snapshot.
        let _ = log.wl().apply_snapshot(snap);
        MemoryEngine {
            log,
            kv: BTreeMap::new(),
            kv_bytes: 0,
            sessions: Sessions::default(),
            membership: None,
            applied: BOOTSTRAP_INDEX,
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let data = decode_snapshot(&snap.data)?;
        self.log
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(|e| Error::Storage(format!("memory engine: cannot apply snapshot: {e}")))?;
        self.kv.clear();
        self.kv_bytes = 0;
        self.sessions.replace(data.sessions);
        self.membership = data.membership;
        for (k, v) in data.pairs {
            self.kv_bytes += (k.len() + v.len()) as u64;
            self.kv.insert(k.to_vec(), v.to_vec());
        }
        self.applied = snap.get_metadata().index;
        Ok(())
    }
}

impl Storage for MemoryEngine {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.log.last_index()
    }

    /// The KV state at the applied index (MemStorage's own snapshot has no data).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.log.term(self.applied)?;
        meta.set_conf_state(self.log.initial_state()?.conf_state);
        let mut w = SnapshotWriter::new(&self.sessions, self.membership.as_ref());
        for (k, v) in &self.kv {
            w.push(k, v);
        }
        snap.data = w.finish().into();
        Ok(snap)
    }
}

impl Engine for MemoryEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Memory
    }

    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        _durability: Durability,
    ) -> Result<()> {
        if let Some(snap) = snapshot {
            self.install_snapshot(snap)?;
        }
        let mut log = self.log.wl();
        if !entries.is_empty() {
            log.append(entries).map_err(|e| {
                Error::Storage(format!("memory engine: cannot append entries: {e}"))
            })?;
        }
        if let Some(hs) = hard_state {
            log.set_hardstate(hs.clone());
        }
        Ok(())
    }

    fn apply_put(&mut self, key: &[u8], value: &[u8], _want: bool) -> Result<Option<bool>> {
        self.kv_bytes += (key.len() + value.len()) as u64;
        match self.kv.get_mut(key) {
            Some(old) => {
                self.kv_bytes -= (key.len() + old.len()) as u64;
                old.clear();
                old.extend_from_slice(value);
                Ok(Some(true))
            }
            None => {
                self.kv.insert(key.to_vec(), value.to_vec());
                Ok(Some(false))
            }
        }
    }

    fn apply_delete(&mut self, key: &[u8], _want: bool) -> Result<Option<bool>> {
        match self.kv.remove(key) {
            Some(old) => {
                self.kv_bytes -= (key.len() + old.len()) as u64;
                Ok(Some(true))
            }
            None => Ok(Some(false)),
        }
    }

    fn sessions(&mut self) -> &mut Sessions {
        &mut self.sessions
    }

    fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    fn set_membership(&mut self, membership: Membership) -> Result<()> {
        self.membership = Some(membership);
        Ok(())
    }

    fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        self.log.wl().set_conf_state(cs);
        Ok(())
    }

    fn conf_state(&self) -> ConfState {
        self.log
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default()
    }

    fn finish_apply(&mut self, applied: u64) -> Result<()> {
        self.applied = applied;
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(key).cloned())
    }

    fn compact(&mut self, index: u64) -> Result<()> {
        let index = index.min(self.applied);
        let mut log = self.log.wl();
        // MemStorage::compact keeps `index` itself, so its term stays known.
        log.compact(index)
            .map_err(|e| Error::Storage(format!("memory engine: cannot compact: {e}")))
    }

    fn log_entries(&self) -> u64 {
        let first = self.log.first_index().unwrap_or(1);
        let last = self.log.last_index().unwrap_or(0);
        (last + 1).saturating_sub(first)
    }

    fn stats(&self) -> StorageStats {
        StorageStats {
            engine: EngineKind::Memory,
            log_entries: self.log_entries(),
            approximate_bytes: self.kv_bytes,
            syncs: 0,
            sync_micros: 0,
        }
    }
}
