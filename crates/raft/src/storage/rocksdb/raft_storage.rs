//! raft-rs reads its log and state from the engine directly.

use protobuf::Message as _;
use std::sync::Arc;

use raft::eraftpb::{Entry, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::snapshot::BuildStart;
use super::{be_u64, log_key, RocksEngine, CF_LOG};
use crate::kv::SnapshotWriter;
use crate::storage::raft_err;

impl Storage for RocksEngine {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        // raft-rs `limit_size`: the first entry always, then while within max.
        let admit = |e: &Entry, out: &Vec<Entry>, size: &mut u64| {
            *size += u64::from(e.compute_size());
            out.is_empty() || *size <= max
        };
        if self.cache.first().is_some_and(|f| low >= f) {
            for i in low..high {
                let Some(e) = self.cache.get(i) else { break };
                if !admit(e, &out, &mut size) {
                    return Ok(out);
                }
                out.push(e.clone());
            }
            if out.len() as u64 == high - low {
                return Ok(out);
            }
            out.clear();
            size = 0;
        }
        let log = self.cf(CF_LOG).map_err(raft_err)?;
        let mut it = self.db.raw_iterator_cf(log);
        it.seek(log_key(low));
        let mut expect = low;
        while expect < high {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if be_u64(k) != Some(expect) {
                break;
            }
            let e = Entry::parse_from_bytes(v)
                .map_err(|e| raft_err(self.corrupt(format!("log entry {expect}: {e}"))))?;
            if !admit(&e, &out, &mut size) {
                return Ok(out);
            }
            out.push(e);
            expect += 1;
            it.next();
        }
        it.status()
            .map_err(|e| raft_err(self.err("cannot read raft log", e)))?;
        if expect < high {
            return Err(raft_err(
                self.corrupt(format!("log entry {expect} missing")),
            ));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.cache.get(idx) {
            return Ok(e.term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // A follower given a snapshot older than the log's start could not
        // go on from the log.
        // Nor one whose configuration is outdated: a new learner refuses a
        // snapshot whose configuration does not name it.
        let min_index = request_index.max(self.truncated_index).max(self.conf_index);
        let built = self.snapshots.get(min_index, || {
            let metadata = SnapshotMetadata {
                index: self.applied,
                term: self
                    .term(self.applied)
                    .map_err(|e| self.corrupt(format!("no term for the applied index: {e}")))?,
                conf_state: Some(self.conf_state.clone()).into(),
                ..Default::default()
            };
            Ok(BuildStart {
                db: Arc::clone(&self.db),
                metadata,
                writer: SnapshotWriter::new(&self.sessions.sessions, self.membership.as_ref()),
            })
        });
        match built.map_err(raft_err)? {
            Some(snap) => Ok(snap),
            None => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}
