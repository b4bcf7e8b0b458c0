//! Snapshots built off the node thread.
//!
//! raft-rs asks the engine for a snapshot (`Storage::snapshot`) on the node
//! thread, when a follower needs one. Reading the whole KV column family
//! there would stall heartbeats and proposals for as long as it takes, so the
//! first ask starts a build and answers `SnapshotTemporarilyUnavailable`;
//! raft-rs asks again on a later heartbeat answer and gets the built
//! snapshot.
//!
//! The build reads a RocksDB snapshot: a consistent view taken while the node
//! thread waits (it is the only writer of the KV state), so the data is
//! exactly the state at the applied index recorded in its metadata. The
//! sessions are encoded on the node thread at the same moment. A built
//! snapshot serves every follower that asks while it is not older than the
//! log's start (a follower given an older one could not continue from the
//! log); the log compaction that passes it frees it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use raft::eraftpb::{Snapshot, SnapshotMetadata};
use rocksdb::DB;

use super::CF_KV;
use crate::error::{Error, Result};
use crate::kv::SnapshotWriter;

/// How many pairs the build reads between checks for cancellation.
const CANCEL_EVERY: usize = 4096;

enum State {
    Idle,
    Building {
        done: Receiver<Result<Snapshot>>,
        thread: JoinHandle<()>,
        cancel: Arc<AtomicBool>,
    },
    Built(Snapshot),
}

/// The snapshot being built or last built; see the module doc.
pub(super) struct SnapshotBuilder {
    state: Mutex<State>,
}

/// What a build needs, taken on the node thread.
pub(super) struct BuildStart {
    pub db: Arc<DB>,
    pub metadata: SnapshotMetadata,
    /// Holds the sessions as of `metadata.index` already.
    pub writer: SnapshotWriter,
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        SnapshotBuilder {
            state: Mutex::new(State::Idle),
        }
    }

    /// A built snapshot at an index of at least `min_index`, or `None` after
    /// making sure one is being built (`start` is called, on this thread,
    /// only when none is).
    pub fn get(
        &self,
        min_index: u64,
        start: impl FnOnce() -> Result<BuildStart>,
    ) -> Result<Option<Snapshot>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let State::Building { done, .. } = &*state {
            match done.try_recv() {
                Ok(Ok(snap)) => {
                    finish(&mut state);
                    *state = State::Built(snap);
                }
                Ok(Err(e)) => {
                    finish(&mut state);
                    return Err(e);
                }
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => {
                    finish(&mut state);
                    return Err(Error::Internal(
                        "the snapshot build ended without a result".into(),
                    ));
                }
            }
        }
        if let State::Built(snap) = &*state {
            if snap.get_metadata().index >= min_index {
                return Ok(Some(snap.clone()));
            }
        }
        *state = spawn(start()?)?;
        Ok(None)
    }

    #[cfg(test)]
    pub fn holds_built(&self) -> bool {
        matches!(
            &*self.state.lock().unwrap_or_else(|p| p.into_inner()),
            State::Built(_)
        )
    }

    /// Frees a built snapshot older than `index` (the log's new start).
    pub fn release_older_than(&self, index: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*state, State::Built(snap) if snap.get_metadata().index < index) {
            *state = State::Idle;
        }
    }
}

/// Joins the build thread of `state` (it has sent its result) and leaves
/// `Idle`.
fn finish(state: &mut State) {
    if let State::Building { thread, .. } = std::mem::replace(state, State::Idle) {
        let _ = thread.join();
    }
}

impl Drop for SnapshotBuilder {
    /// Stops a build under way and waits for its thread, which holds the
    /// database open.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let State::Building { thread, cancel, .. } = std::mem::replace(state, State::Idle) {
            cancel.store(true, Relaxed);
            let _ = thread.join();
        }
    }
}

fn spawn(start: BuildStart) -> Result<State> {
    let BuildStart {
        db,
        metadata,
        writer,
    } = start;
    let cancel = Arc::new(AtomicBool::new(false));
    let (taken_tx, taken_rx) = mpsc::sync_channel::<()>(0);
    let (done_tx, done) = mpsc::channel();
    let stop = Arc::clone(&cancel);
    let thread = std::thread::Builder::new()
        .name("metastore-snapshot".into())
        .spawn(move || {
            let view = db.snapshot();
            let _ = taken_tx.send(());
            let _ = done_tx.send(build(&db, &view, metadata, writer, &stop));
        })
        .map_err(|e| Error::Internal(format!("cannot start a snapshot build: {e}")))?;
    // The view must be taken before the node thread writes again.
    taken_rx
        .recv()
        .map_err(|_| Error::Internal("the snapshot build ended before taking its view".into()))?;
    Ok(State::Building {
        done,
        thread,
        cancel,
    })
}

fn build(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    metadata: SnapshotMetadata,
    mut writer: SnapshotWriter,
    cancel: &AtomicBool,
) -> Result<Snapshot> {
    let kv = db
        .cf_handle(CF_KV)
        .ok_or_else(|| Error::Storage("column family kv missing".into()))?;
    let mut it = view.raw_iterator_cf(kv);
    it.seek_to_first();
    let mut n = 0usize;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        writer.push(k, v);
        it.next();
        n += 1;
        if n.is_multiple_of(CANCEL_EVERY) && cancel.load(Relaxed) {
            return Err(Error::Closed);
        }
    }
    it.status()
        .map_err(|e| Error::Storage(format!("cannot read kv for a snapshot: {e}")))?;
    let mut snap = Snapshot::default();
    snap.set_metadata(metadata);
    snap.data = writer.finish().into();
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use raft::eraftpb::Entry;
    use raft::{Storage, StorageError};

    use crate::identity::{Bootstrap, ClusterId, Identity};
    use crate::kv::decode_snapshot;
    use crate::storage::{Durability, Engine, RocksEngine};

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect()
    }

    /// Applies `keys` puts as log index `index`.
    fn apply(engine: &mut RocksEngine, index: u64, keys: std::ops::Range<u32>) {
        engine
            .persist(None, &entries(index, index), None, Durability::Unsynced)
            .unwrap();
        for k in keys {
            engine
                .apply_put(format!("k{k:06}").as_bytes(), &[7; 100], false)
                .unwrap();
        }
        engine.finish_apply(index).unwrap();
    }

    fn poll(engine: &RocksEngine) -> raft::eraftpb::Snapshot {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match engine.snapshot(0, 2) {
                Ok(snap) => return snap,
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                    assert!(Instant::now() < deadline, "the snapshot was never built");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_snapshot_is_built_in_the_background_at_the_state_of_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::new(ClusterId::random(), 1, &[1, 2, 3]);
        let mut engine = RocksEngine::open(dir.path(), &identity, Bootstrap::New).unwrap();
        apply(&mut engine, 2, 0..20_000);
        // The first ask only starts the build.
        assert!(matches!(
            engine.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        // Writes applied meanwhile are not in it: it is the state at index 2.
        apply(&mut engine, 3, 20_000..20_100);
        let snap = poll(&engine);
        assert_eq!(snap.get_metadata().index, 2);
        assert_eq!(snap.get_metadata().term, 1);
        let data = decode_snapshot(&snap.data).unwrap();
        assert_eq!(data.pairs.len(), 20_000);
        assert_eq!(data.pairs[19_999].0, b"k019999");
        // The built one serves later asks while the log still reaches it...
        assert_eq!(engine.snapshot(0, 3).unwrap().get_metadata().index, 2);
        // ...but not an ask for a later index: that starts a new build.
        assert!(engine.snapshot(3, 2).is_err());
        assert_eq!(poll(&engine).get_metadata().index, 3);
        assert_eq!(
            decode_snapshot(&poll(&engine).data).unwrap().pairs.len(),
            20_100
        );
        // A compaction that passes the built snapshot frees it.
        apply(&mut engine, 4, 20_100..20_101);
        engine.compact(3).unwrap();
        assert!(
            engine.snapshots.holds_built(),
            "kept while the log reaches it"
        );
        engine.compact(4).unwrap();
        assert!(
            !engine.snapshots.holds_built(),
            "freed once the log passed it"
        );
    }

    #[test]
    fn an_engine_closed_during_a_build_can_be_opened_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::new(ClusterId::random(), 1, &[1, 2, 3]);
        let mut engine = RocksEngine::open(dir.path(), &identity, Bootstrap::New).unwrap();
        apply(&mut engine, 2, 0..50_000);
        assert!(engine.snapshot(0, 2).is_err());
        drop(engine);
        let engine = RocksEngine::open(dir.path(), &identity, Bootstrap::Existing).unwrap();
        assert_eq!(engine.applied_index(), 2);
    }
}
