//! Snapshots installed off the node thread.
//!
//! When a snapshot message arrives, the node asks the engine to prepare its
//! install ([`Engine::prepare_snapshot`](crate::storage::Engine)) and holds
//! the message meanwhile. A preparing thread writes the snapshot's KV pairs
//! (sorted already) into an SST file in the node's directory and syncs it.
//! Once it is ready the node steps the message, and the `Ready` that carries
//! the snapshot installs it with a small write and an ingestion of that
//! file, instead of a write batch holding every pair.
//!
//! Crash safety: the install's write batch (which deletes the old KV pairs
//! and log, and records the snapshot's applied index, conf state and
//! sessions) also records the file as pending, synced; the file is ingested
//! next, then the record is deleted, then the file. A database opened with a
//! pending file ingests it again (ingesting the same pairs twice leaves the
//! same state) before anything reads the KV pairs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use protobuf::Message as _;
use raft::eraftpb::Snapshot;
use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter, WriteBatch, DB};

use super::sessions::SessionStore;
use super::{
    log_key, RocksEngine, CF_KV, CF_LOG, CF_META, CF_SESSIONS, KEY_APPLIED, KEY_CONF_STATE,
    KEY_IDENTITY, KEY_MEMBERSHIP, KEY_PENDING_INSTALL,
};
use crate::identity::Identity;
use crate::membership::Membership;
use crate::session::Sessions;

use crate::error::{Error, Result};
use crate::kv::decode_snapshot;

/// Snapshots smaller than this install inline: one write batch is cheap.
pub(super) const PREPARE_MIN_BYTES: usize = 1 << 20;
/// Pairs written between checks for cancellation.
const CANCEL_EVERY: usize = 4096;

/// The file a prepared snapshot's pairs are in (`None`: it has none).
pub(super) type Prepared = Option<PathBuf>;

struct Job {
    index: u64,
    term: u64,
    done: Receiver<Result<Prepared>>,
    thread: JoinHandle<()>,
    cancel: Arc<AtomicBool>,
}

/// The snapshot being prepared, or prepared and not yet installed.
#[derive(Default)]
pub(super) struct Installs {
    job: Option<Job>,
    ready: Option<(u64, u64, Prepared)>,
}

fn file_name(index: u64, term: u64) -> String {
    format!("snapshot-{term}-{index}.sst")
}

impl Installs {
    /// Starts preparing `snap` unless it is being prepared or is ready.
    pub fn prepare(&mut self, dir: &Path, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        if self.is_for(index, term) {
            return Ok(());
        }
        self.discard();
        let path = dir.join(file_name(index, term));
        let data = snap.data.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("metastore-install".into())
            .spawn(move || {
                let _ = tx.send(write_sst(&path, &data, &stop));
            })
            .map_err(|e| Error::Internal(format!("cannot start a snapshot install: {e}")))?;
        self.job = Some(Job {
            index,
            term,
            done,
            thread,
            cancel,
        });
        Ok(())
    }

    fn is_for(&self, index: u64, term: u64) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| (j.index, j.term) == (index, term))
            || self
                .ready
                .as_ref()
                .is_some_and(|r| (r.0, r.1) == (index, term))
    }

    /// Whether the install of the snapshot at `index`/`term` may go ahead:
    /// prepared, failed to prepare (it installs inline then), or never asked.
    pub fn settled(&mut self, index: u64, term: u64) -> bool {
        let Some(job) = &self.job else {
            return true;
        };
        if (job.index, job.term) != (index, term) {
            return true;
        }
        let outcome = match job.done.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => {
                Err(Error::Internal("the install thread ended".into()))
            }
        };
        if let Some(job) = self.job.take() {
            let _ = job.thread.join();
        }
        if let Ok(prepared) = outcome {
            self.ready = Some((index, term, prepared));
        }
        true
    }

    /// The prepared file of the snapshot at `index`/`term`, taken for its
    /// install; `None` when it was not prepared (install it inline).
    pub fn take(&mut self, index: u64, term: u64) -> Option<Prepared> {
        match self.ready.take() {
            Some((i, t, prepared)) if (i, t) == (index, term) => Some(prepared),
            other => {
                self.ready = other;
                None
            }
        }
    }

    /// Drops what is being prepared or prepared (and its file).
    pub fn discard(&mut self) {
        if let Some(job) = self.job.take() {
            job.cancel.store(true, Relaxed);
            let _ = job.thread.join();
            if let Ok(Ok(Some(path))) = job.done.try_recv() {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some((_, _, Some(path))) = self.ready.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Installs {
    fn drop(&mut self) {
        self.discard();
    }
}

impl RocksEngine {
    /// Adds to `wb` the replacement of the whole state by `snap`; returns
    /// the snapshot's sessions and membership, to take once `wb` is
    /// written, and the prepared file of its KV pairs, to ingest then (when
    /// it was prepared, `wb` records the file as pending instead of holding
    /// the pairs).
    pub(super) fn stage_snapshot(
        &mut self,
        wb: &mut WriteBatch,
        snap: &Snapshot,
    ) -> Result<(Sessions, Option<Membership>, Option<PathBuf>)> {
        let meta = snap.get_metadata();
        let prepared = self.installs.take(meta.index, meta.term);
        let data = decode_snapshot(&snap.data)?;
        let kv = self.cf(CF_KV)?;
        // Delete every current key: [b"", last_key ++ 0x00) covers them all.
        let mut it = self.db.raw_iterator_cf(kv);
        it.seek_to_last();
        if let Some(last) = it.key() {
            let mut end = last.to_vec();
            end.push(0);
            wb.delete_range_cf(kv, &b""[..], &end[..]);
        }
        it.status().map_err(|e| self.err("cannot read kv", e))?;
        drop(it);
        let mut pending = None;
        match prepared {
            Some(Some(path)) => {
                let bytes = path.to_str().ok_or_else(|| {
                    self.corrupt(format!("snapshot file {} is no UTF-8 path", path.display()))
                })?;
                wb.put_cf(self.cf(CF_META)?, KEY_PENDING_INSTALL, bytes.as_bytes());
                pending = Some(path);
            }
            // Prepared, and without pairs.
            Some(None) => {}
            None => {
                for (k, v) in data.pairs {
                    wb.put_cf(kv, k, v);
                }
            }
        }
        SessionStore::stage_snapshot(wb, self.cf(CF_SESSIONS)?, &data.sessions, meta.index);
        wb.delete_range_cf(self.cf(CF_LOG)?, log_key(0), log_key(u64::MAX));
        let meta_cf = self.cf(CF_META)?;
        let cs = meta
            .get_conf_state()
            .write_to_bytes()
            .map_err(|e| self.err("cannot encode conf state", e))?;
        wb.put_cf(meta_cf, KEY_CONF_STATE, cs);
        wb.put_cf(meta_cf, KEY_APPLIED, meta.index.to_be_bytes());
        match &data.membership {
            Some(m) => wb.put_cf(meta_cf, KEY_MEMBERSHIP, m.encode()),
            None => wb.delete_cf(meta_cf, KEY_MEMBERSHIP),
        }
        if let Some(node_id) = self.joining {
            // A joining node's first snapshot tells it whose group it joined.
            let m = data.membership.as_ref().ok_or_else(|| {
                Error::Storage(format!(
                    "node {node_id} joins a group whose snapshot has no membership record"
                ))
            })?;
            wb.put_cf(
                meta_cf,
                KEY_IDENTITY,
                Identity::new(m.cluster_id, node_id, &[]).encode(),
            );
        }
        self.put_truncated(wb, meta.index, meta.term)?;
        Ok((data.sessions, data.membership, pending))
    }

    /// Ingests the prepared file a written install recorded as pending,
    /// then forgets it (see `install.rs`).
    pub(super) fn finish_install(&self, path: &Path) -> Result<()> {
        ingest(&self.db, CF_KV, path)?;
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.cf(CF_META)?, KEY_PENDING_INSTALL);
        self.write(wb, false)?;
        std::fs::remove_file(path)
            .map_err(|e| self.err(&format!("cannot remove {}", path.display()), e))
    }
}

/// Writes the pairs of snapshot `data` into an SST file at `path`, synced.
fn write_sst(path: &Path, data: &[u8], cancel: &AtomicBool) -> Result<Prepared> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Storage(format!("{what} {}: {e}", path.display()))
    };
    let decoded = decode_snapshot(data)?;
    if decoded.pairs.is_empty() {
        return Ok(None);
    }
    let opts = Options::default();
    let mut writer = SstFileWriter::create(&opts);
    writer
        .open(path)
        .map_err(|e| fail("cannot create snapshot file", &e))?;
    for (n, (k, v)) in decoded.pairs.iter().enumerate() {
        if n % CANCEL_EVERY == 0 && cancel.load(Relaxed) {
            drop(writer);
            let _ = std::fs::remove_file(path);
            return Err(Error::Closed);
        }
        writer
            .put(k, v)
            .map_err(|e| fail("cannot write snapshot file", &e))?;
    }
    writer
        .finish()
        .map_err(|e| fail("cannot finish snapshot file", &e))?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail("cannot sync snapshot file", &e))?;
    Ok(Some(path.to_path_buf()))
}

/// Ingests the prepared file at `path` into column family `cf` (copying it,
/// so that a crash before the pending record is deleted can ingest it again).
pub(super) fn ingest(db: &DB, cf: &str, path: &Path) -> Result<()> {
    let handle = db
        .cf_handle(cf)
        .ok_or_else(|| Error::Storage(format!("column family {cf} missing")))?;
    let mut opts = IngestExternalFileOptions::default();
    opts.set_move_files(false);
    db.ingest_external_file_cf_opts(handle, &opts, vec![path])
        .map_err(|e| Error::Storage(format!("cannot ingest {}: {e}", path.display())))
}

/// Removes snapshot files no pending install names (left by a crash while
/// preparing).
pub(super) fn remove_stray_files(dir: &Path, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot-") && name.ends_with(".sst") && Some(path.as_path()) != keep {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use raft::eraftpb::{Entry, Snapshot};
    use raft::{Storage, StorageError};
    use rocksdb::WriteBatch;

    use super::super::{RocksEngine, KEY_PENDING_INSTALL};
    use crate::identity::{Bootstrap, ClusterId, Identity};
    use crate::storage::{Durability, Engine};

    fn snapshot_of(pairs: u32) -> (Snapshot, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::new(ClusterId::random(), 1, &[1, 2, 3]);
        let mut engine = RocksEngine::open(dir.path(), &identity, Bootstrap::New).unwrap();
        let entry = Entry {
            index: 2,
            term: 1,
            ..Default::default()
        };
        engine
            .persist(None, &[entry], None, Durability::Unsynced)
            .unwrap();
        for k in 0..pairs {
            engine
                .apply_put(format!("k{k:06}").as_bytes(), &[9; 100], false)
                .unwrap();
        }
        engine.finish_apply(2).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match engine.snapshot(0, 2) {
                Ok(snap) => return (snap, identity),
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                    assert!(Instant::now() < deadline);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn follower(dir: &std::path::Path, identity: &Identity) -> RocksEngine {
        let me = Identity::new(identity.cluster_id, 2, &[1, 2, 3]);
        RocksEngine::open(dir, &me, Bootstrap::New).unwrap()
    }

    fn prepared(engine: &mut RocksEngine, snap: &Snapshot) {
        assert!(
            engine.prepare_snapshot(snap),
            "a large snapshot is prepared"
        );
        let meta = snap.get_metadata();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.snapshot_prepared(meta.index, meta.term) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn snapshot_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
            .count()
    }

    #[test]
    fn a_prepared_snapshot_installs_by_ingesting_its_file() {
        let (snap, identity) = snapshot_of(20_000);
        assert!(snap.data.len() >= super::PREPARE_MIN_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let mut engine = follower(dir.path(), &identity);
        engine.apply_put(b"old", b"gone", false).unwrap();
        engine.finish_apply(0).unwrap();
        prepared(&mut engine, &snap);
        assert_eq!(snapshot_files(dir.path()), 1, "the prepared file");
        engine
            .persist(Some(&snap), &[], None, Durability::Synced)
            .unwrap();
        assert_eq!(engine.applied_index(), 2);
        assert_eq!(engine.get(b"k019999").unwrap(), Some(vec![9; 100]));
        assert_eq!(engine.get(b"old").unwrap(), None, "the old state is gone");
        assert_eq!(snapshot_files(dir.path()), 0, "the file is removed");
        assert_eq!(engine.read_meta(KEY_PENDING_INSTALL).unwrap(), None);
    }

    #[test]
    fn an_install_cut_short_before_its_ingestion_finishes_when_the_database_opens() {
        let (snap, identity) = snapshot_of(20_000);
        let dir = tempfile::tempdir().unwrap();
        let mut engine = follower(dir.path(), &identity);
        prepared(&mut engine, &snap);
        // The install's write lands; the process dies before the ingestion.
        let mut wb = WriteBatch::default();
        let (_, _, file) = engine.stage_snapshot(&mut wb, &snap).unwrap();
        assert!(file.is_some());
        engine.write(wb, true).unwrap();
        drop(engine);
        let me = Identity::new(identity.cluster_id, 2, &[1, 2, 3]);
        let engine = RocksEngine::open(dir.path(), &me, Bootstrap::Existing).unwrap();
        assert_eq!(engine.applied_index(), 2);
        assert_eq!(engine.get(b"k000000").unwrap(), Some(vec![9; 100]));
        assert_eq!(engine.get(b"k019999").unwrap(), Some(vec![9; 100]));
        assert_eq!(snapshot_files(dir.path()), 0);
        assert_eq!(engine.read_meta(KEY_PENDING_INSTALL).unwrap(), None);
    }

    #[test]
    fn a_small_snapshot_installs_inline_and_a_stray_file_is_removed_at_open() {
        let (snap, identity) = snapshot_of(10);
        let dir = tempfile::tempdir().unwrap();
        let mut engine = follower(dir.path(), &identity);
        assert!(!engine.prepare_snapshot(&snap));
        engine
            .persist(Some(&snap), &[], None, Durability::Synced)
            .unwrap();
        assert_eq!(engine.get(b"k000009").unwrap(), Some(vec![9; 100]));
        drop(engine);
        std::fs::write(dir.path().join("snapshot-3-9.sst"), b"left by a crash").unwrap();
        let me = Identity::new(identity.cluster_id, 2, &[1, 2, 3]);
        drop(RocksEngine::open(dir.path(), &me, Bootstrap::Existing).unwrap());
        assert_eq!(snapshot_files(dir.path()), 0);
    }
}
