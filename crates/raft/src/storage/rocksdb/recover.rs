//! Opening a node's database: whose it is (the identity check), and the raft
//! state recovered from it.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, HardState};
use raft::Storage;
use rocksdb::{Options, WriteBatch, DB};

use super::sessions::SessionStore;
use super::{
    be_u64, install, RocksEngine, CF_KV, CF_LOG, CF_META, CF_SESSIONS, KEY_APPLIED, KEY_CONF_STATE,
    KEY_HARD_STATE, KEY_IDENTITY, KEY_MEMBERSHIP, KEY_PENDING_INSTALL, KEY_TRUNCATED,
};
use crate::error::{Error, Result};
use crate::identity::{self, Bootstrap, Identity};
use crate::membership::Membership;
use crate::storage::{BOOTSTRAP_INDEX, BOOTSTRAP_TERM};

/// What a database without a cluster identity holds, in errors.
pub(super) const NO_IDENTITY: &str =
    "raft state without a cluster identity (written before identities were recorded)";
/// What an empty data dir holds, where an existing member's state is expected.
pub(super) const EMPTY: &str =
    "nothing, where the group expects this member's state (a member whose \
    state is gone must not rejoin under its id: it could vote twice in a term or forget writes \
    the group acknowledged)";

/// Whether `dir` holds a RocksDB database (its `CURRENT` file).
pub(super) fn holds_database(dir: &Path) -> bool {
    dir.join("CURRENT").is_file()
}

impl RocksEngine {
    /// The identity stored in the database at `dir`: `None` when there is
    /// none (no database), an error when the database holds raft state but
    /// no identity. Opens the database read-only and closes it again.
    pub fn stored_identity(dir: &Path) -> Result<Option<Identity>> {
        Ok(Self::stored_state(dir)?.map(|(identity, _)| identity))
    }

    /// The identity stored in the database at `dir`, as
    /// [`stored_identity`](Self::stored_identity) finds it, and the
    /// membership record beside it, if any.
    pub fn stored_state(dir: &Path) -> Result<Option<(Identity, Option<Membership>)>> {
        if !holds_database(dir) {
            return Ok(None);
        }
        let db =
            DB::open_cf_for_read_only(&Options::default(), dir, [CF_LOG, CF_META, CF_KV], false)
                .map_err(|e| {
                    Error::Storage(format!("cannot open RocksDB at {}: {e}", dir.display()))
                })?;
        let meta = db.cf_handle(CF_META).ok_or_else(|| {
            Error::Storage(format!(
                "{}: column family {CF_META} missing",
                dir.display()
            ))
        })?;
        let read = |key: &[u8]| {
            db.get_cf(meta, key)
                .map_err(|e| Error::Storage(format!("cannot read {}: {e}", dir.display())))
        };
        let corrupt = |what: &str, e: String| {
            Error::Storage(format!("corrupted {what} in {}: {e}", dir.display()))
        };
        let identity = match read(KEY_IDENTITY)? {
            Some(bytes) => Identity::decode(&bytes).map_err(|e| corrupt("cluster identity", e))?,
            None if read(KEY_CONF_STATE)?.is_some() || read(KEY_HARD_STATE)?.is_some() => {
                return Err(Error::DataDirMismatch {
                    dir: dir.display().to_string(),
                    holds: NO_IDENTITY.into(),
                    asked: "a node of a new or existing cluster".into(),
                })
            }
            None => return Ok(None),
        };
        let membership = read(KEY_MEMBERSHIP)?
            .map(|b| Membership::decode(&b))
            .transpose()
            .map_err(|e| corrupt("membership record", e))?;
        Ok(Some((identity, membership)))
    }

    pub(super) fn recover(&mut self, identity: &Identity, bootstrap: Bootstrap) -> Result<()> {
        // A snapshot install that may not have ingested its file finishes
        // first; other snapshot files are leftovers of preparations.
        let pending = match self.read_meta(KEY_PENDING_INSTALL)? {
            Some(b) => Some(PathBuf::from(String::from_utf8(b).map_err(|_| {
                self.corrupt("the pending snapshot file is no UTF-8 path")
            })?)),
            None => None,
        };
        if let Some(path) = &pending {
            if !path.is_file() {
                return Err(self.corrupt(format!(
                    "the snapshot file {} of an unfinished install is missing",
                    path.display()
                )));
            }
            self.finish_install(path)?;
        }
        install::remove_stray_files(&self.path, None);
        let stored = self.read_meta(KEY_IDENTITY)?;
        let hs = self.read_meta(KEY_HARD_STATE)?;
        let cs = self.read_meta(KEY_CONF_STATE)?;
        let truncated = self.read_meta(KEY_TRUNCATED)?;
        let applied = self.read_meta(KEY_APPLIED)?;

        if let Some(b) = &hs {
            self.hard_state = HardState::parse_from_bytes(b)
                .map_err(|e| self.corrupt(format!("hard state: {e}")))?;
        }
        if let Some(b) = &truncated {
            match (b.get(..8).and_then(be_u64), b.get(8..).and_then(be_u64)) {
                (Some(i), Some(t)) => (self.truncated_index, self.truncated_term) = (i, t),
                _ => return Err(self.corrupt("truncated state has the wrong length")),
            }
        }
        if let Some(b) = &applied {
            self.applied =
                be_u64(b).ok_or_else(|| self.corrupt("applied index has the wrong length"))?;
        }

        // First and last log keys.
        let log = self.cf(CF_LOG)?;
        let mut it = self.db.raw_iterator_cf(log);
        it.seek_to_last();
        let last_key = it.key().map(<[u8]>::to_vec);
        it.seek_to_first();
        let first_key = it.key().map(<[u8]>::to_vec);
        it.status()
            .map_err(|e| self.err("cannot read the raft log", e))?;
        drop(it);
        self.last_index = self.truncated_index;
        if let (Some(first), Some(last)) = (first_key, last_key) {
            let first =
                be_u64(&first).ok_or_else(|| self.corrupt("raft log key of the wrong length"))?;
            let last =
                be_u64(&last).ok_or_else(|| self.corrupt("raft log key of the wrong length"))?;
            if first != self.truncated_index + 1 {
                return Err(self.corrupt(format!(
                    "raft log starts at {first}, expected {}",
                    self.truncated_index + 1
                )));
            }
            self.last_index = last;
        }

        if let Some(b) = self.read_meta(KEY_MEMBERSHIP)? {
            self.membership = Some(Membership::decode(&b).map_err(|e| self.corrupt(e))?);
        }
        match cs {
            Some(b) => {
                self.conf_state = ConfState::parse_from_bytes(&b)
                    .map_err(|e| self.corrupt(format!("conf state: {e}")))?;
                if self.conf_state.voters.is_empty() {
                    return Err(self.corrupt("conf state has no voters"));
                }
                self.conf_index = self.applied;
            }
            None if bootstrap == Bootstrap::Join
                && stored.is_none()
                && self.last_index == 0
                && self.applied == 0 =>
            {
                // A joining node waits for the group's first snapshot; its
                // hard state (a term heard from the leader) may be there.
                self.joining = Some(identity.node_id);
                return self.check_invariants();
            }
            None if hs.is_none() && self.last_index == 0 && self.applied == 0 => {
                if bootstrap != Bootstrap::New {
                    return Err(identity::mismatch(&self.path, EMPTY, identity));
                }
                // A new database: bootstrap with the identity and the initial
                // voter set, as if a snapshot at BOOTSTRAP_INDEX held them,
                // in one synced write.
                self.conf_state =
                    ConfState::from((identity.initial_voters.clone(), Vec::<u64>::new()));
                (self.truncated_index, self.truncated_term) = (BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
                (self.last_index, self.applied) = (BOOTSTRAP_INDEX, BOOTSTRAP_INDEX);
                self.hard_state.term = BOOTSTRAP_TERM;
                self.hard_state.commit = BOOTSTRAP_INDEX;
                let mut wb = WriteBatch::default();
                let meta = self.cf(CF_META)?;
                let bytes = self
                    .conf_state
                    .write_to_bytes()
                    .map_err(|e| self.err("cannot encode conf state", e))?;
                wb.put_cf(meta, KEY_CONF_STATE, bytes);
                wb.put_cf(meta, KEY_IDENTITY, identity.encode());
                wb.put_cf(meta, KEY_APPLIED, BOOTSTRAP_INDEX.to_be_bytes());
                self.put_truncated(&mut wb, BOOTSTRAP_INDEX, BOOTSTRAP_TERM)?;
                self.put_hard_state(&mut wb, &self.hard_state.clone())?;
                self.write(wb, true)?;
                return self.check_invariants();
            }
            None => return Err(self.corrupt("conf state missing")),
        }
        match stored {
            Some(b) => {
                let stored = Identity::decode(&b)
                    .map_err(|e| self.corrupt(format!("cluster identity: {e}")))?;
                identity::check(&self.path, &stored, identity)?;
            }
            None => return Err(identity::mismatch(&self.path, NO_IDENTITY, identity)),
        }
        self.load_sessions()?;
        self.check_invariants()
    }

    /// Reads the client sessions.
    fn load_sessions(&mut self) -> Result<()> {
        let it = self.db.raw_iterator_cf(self.cf(CF_SESSIONS)?);
        let path = self.path.display().to_string();
        let loaded = SessionStore::load(it, |what| {
            Error::Storage(format!("corrupt database {path}: {what}"))
        })?;
        self.sessions = loaded;
        Ok(())
    }

    /// Invariants of the recovered state that raft-rs would otherwise panic on.
    fn check_invariants(&mut self) -> Result<()> {
        if self.applied < self.truncated_index || self.applied > self.last_index {
            return Err(self.corrupt(format!(
                "applied index {} outside the log [{}, {}]",
                self.applied, self.truncated_index, self.last_index
            )));
        }
        // Everything applied was committed; the commit index itself is only
        // written lazily.
        self.hard_state.commit = self.hard_state.commit.max(self.applied);
        if self.hard_state.commit > self.last_index {
            return Err(self.corrupt(format!(
                "commit index {} beyond the last log index {}",
                self.hard_state.commit, self.last_index
            )));
        }
        if self.last_index > self.truncated_index {
            // The term of the last entry must be readable.
            self.term(self.last_index).map_err(|e| self.corrupt(e))?;
        }
        Ok(())
    }
}
