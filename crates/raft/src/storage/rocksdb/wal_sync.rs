//! The thread that makes the WAL durable while the node goes on.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use rocksdb::DB;

use crate::bell::Bell;
use crate::error::{Error, Result};
use crate::stats::SyncClock;
use crate::storage::SyncOutcome;

/// Makes the WAL durable on its own thread: the node thread writes each
/// `Ready` unsynced and goes on (applying, stepping messages, writing the
/// next `Ready`) while the disk flushes; the outcome arrives on `done`. Each
/// sync covers every write made before it was asked for; the node keeps one
/// in flight at a time.
pub(super) struct WalSyncer {
    requests: Option<Sender<()>>,
    pub done: Receiver<SyncOutcome>,
    /// Rung after each outcome: the node thread's, once it runs.
    pub bell: Arc<OnceLock<Bell>>,
    thread: Option<JoinHandle<()>>,
}

impl WalSyncer {
    pub fn start(db: Arc<DB>, path: &Path, clock: Arc<SyncClock>) -> Result<Self> {
        let (requests, asked) = bounded::<()>(1);
        let (report, done) = bounded(1);
        let bell = Arc::new(OnceLock::<Bell>::new());
        let ring = Arc::clone(&bell);
        let thread = std::thread::Builder::new()
            .name("metastore-wal-sync".into())
            .spawn(move || {
                for () in asked {
                    let started = Instant::now();
                    let synced = db.flush_wal(true).map_err(|e| e.to_string());
                    clock.record(started.elapsed());
                    if report.send(synced).is_err() {
                        break;
                    }
                    if let Some(bell) = ring.get() {
                        bell.ring();
                    }
                }
            })
            .map_err(|e| {
                Error::Storage(format!(
                    "cannot start the WAL sync thread for {}: {e}",
                    path.display()
                ))
            })?;
        Ok(WalSyncer {
            requests: Some(requests),
            done,
            bell,
            thread: Some(thread),
        })
    }

    pub fn request(&self) -> std::result::Result<(), String> {
        match &self.requests {
            Some(tx) if tx.send(()).is_ok() => Ok(()),
            _ => Err("the WAL sync thread is gone".into()),
        }
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
