//! Write-ahead log files written ahead: a sync that rewrites blocks the file
//! already has costs the disk less than one that grows the file.
//!
//! Appending to a file and then `fdatasync` commits the file system's journal
//! too (the file's size and extents changed); rewriting blocks already written
//! flushes the data alone. RocksDB reuses a WAL file once every column family
//! holding records in it has flushed (`recycle_log_file_num`), telling its new
//! records from the old ones left past them by the log number each record
//! carries. At open no file can be reused yet (those of an earlier process
//! are deleted), so [`write_ahead`] makes one: it fills the first file with
//! records no column family holds, retires it and switches the WAL to it.

use std::path::Path;

use rocksdb::{WriteBatch, DB};

/// How many bytes of WAL a database that syncs has written ahead at open.
/// A put at 1 in flight adds about 0.4 KB to the WAL, one at 256 in flight
/// about 0.3 KB; past these bytes the file grows until the WAL next switches
/// (a memtable flush), after which the reused files are as large as the WAL
/// grew between switches.
pub(super) const WAL_AHEAD_BYTES: usize = 32 << 20;

/// How many retired WAL files RocksDB keeps for reuse.
pub(super) const REUSED_WAL_FILES: usize = 4;

/// The key in the default column family (which holds nothing else) whose
/// write and deletion give each flush that switches the WAL something to
/// flush.
const SWITCH_KEY: &[u8] = b"wal_ahead";

const RECORD: usize = 1 << 20;

/// Writes `bytes` of records that no column family holds into the current
/// WAL file, syncs them, and switches the WAL until the live file is one
/// that large: the first switch retires the written file into the reuse list
/// (every column family is flushed), a later one takes it back.
pub(super) fn write_ahead(db: &DB, dir: &Path, bytes: usize) -> Result<(), String> {
    let filler = vec![0u8; RECORD];
    for _ in 0..bytes.div_ceil(RECORD) {
        let mut wb = WriteBatch::default();
        wb.put_log_data(&filler);
        db.write(wb).map_err(|e| e.to_string())?;
    }
    db.flush_wal(true).map_err(|e| e.to_string())?;
    // RocksDB adds a retired file to its reuse list once the flush that
    // retired it has finished; a switch before that makes a new file.
    for _ in 0..4 {
        // Written and deleted before the flush: no memtable keeps a record
        // of the live file.
        db.put(SWITCH_KEY, []).map_err(|e| e.to_string())?;
        db.delete(SWITCH_KEY).map_err(|e| e.to_string())?;
        flush_all(db).map_err(|e| e.to_string())?;
        if live_wal_len(dir)? >= bytes as u64 {
            break;
        }
    }
    Ok(())
}

/// The size of the live WAL file: the one with the highest number (a
/// reused file takes the new number).
pub(super) fn live_wal_len(dir: &Path) -> Result<u64, String> {
    let mut live = None;
    for f in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let f = f.map_err(|e| e.to_string())?;
        let name = f.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if live.is_none_or(|(n, _)| number > n) {
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            live = Some((number, len));
        }
    }
    Ok(live.map_or(0, |(_, len)| len))
}

/// Flushes every column family, so that none holds records of the current
/// WAL file.
fn flush_all(db: &DB) -> Result<(), rocksdb::Error> {
    db.flush()?;
    for name in [
        super::CF_LOG,
        super::CF_META,
        super::CF_KV,
        super::CF_SESSIONS,
    ] {
        if let Some(cf) = db.cf_handle(name) {
            db.flush_cf(cf)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Bootstrap, ClusterId, Identity};
    use crate::storage::{Durability, Engine, RocksEngine};
    use raft::eraftpb::Entry;
    use raft::{GetEntriesContext, Storage};

    /// Set in the child process: the data dir, and the identity's cluster id.
    const CHILD_DIR: &str = "METASTORE_TEST_WAL_AHEAD_DIR";
    /// The child's exit status once its writes are synced.
    const CRASHED: i32 = 86;
    const TEST: &str =
        "storage::rocksdb::wal_ahead::tests::synced_writes_rewrite_the_wal_written_ahead_and_survive_a_crash";

    fn identity() -> Identity {
        Identity::new(ClusterId(7), 1, &[1])
    }

    fn entries(range: std::ops::RangeInclusive<u64>, fill: u8) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term: 1,
                data: vec![fill; 1024].into(),
                ..Default::default()
            })
            .collect()
    }

    /// In a child process: writes into the WAL written ahead, one synced
    /// write at a time and a conflicting tail, reports the live file's size
    /// before and after, and exits without closing the database (as a crash
    /// would: nothing trims the file to what was written into it).
    fn write_and_crash(dir: &Path) -> ! {
        let mut engine = RocksEngine::open(dir, &identity(), Bootstrap::New).unwrap();
        engine.write_wal_ahead().unwrap();
        let before = live_wal_len(dir).unwrap();
        for batch in entries(2..=2001, 1).chunks(10) {
            engine
                .persist(None, batch, None, Durability::Synced)
                .unwrap();
        }
        engine
            .persist(None, &entries(1990..=2100, 3), None, Durability::Synced)
            .unwrap();
        let after = live_wal_len(dir).unwrap();
        std::fs::write(dir.join("sizes"), format!("{before} {after}")).unwrap();
        std::process::exit(CRASHED);
    }

    /// A database that syncs writes its WAL ahead at open, and the syncs that
    /// follow rewrite that file's blocks instead of growing it. The file
    /// holds the filler records past the new ones: a crash must lose nothing
    /// synced, and the leftovers must neither come back nor stop the
    /// database from opening.
    #[test]
    fn synced_writes_rewrite_the_wal_written_ahead_and_survive_a_crash() {
        if let Some(dir) = std::env::var_os(CHILD_DIR) {
            write_and_crash(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(CRASHED), "the writer process: {status}");
        let sizes = std::fs::read_to_string(dir.path().join("sizes")).unwrap();
        let (before, after) = sizes.split_once(' ').unwrap();
        let (before, after): (u64, u64) = (before.parse().unwrap(), after.parse().unwrap());
        assert!(
            before >= WAL_AHEAD_BYTES as u64,
            "the live WAL file has {before} bytes, not the {WAL_AHEAD_BYTES} written ahead"
        );
        assert_eq!(
            after, before,
            "about 2 MB of synced writes grew the live WAL file"
        );

        let engine = RocksEngine::open(dir.path(), &identity(), Bootstrap::Existing).unwrap();
        assert_eq!(engine.last_index().unwrap(), 2100);
        let got = engine
            .entries(2, 2101, None, GetEntriesContext::empty(false))
            .unwrap();
        let want: Vec<_> = entries(2..=1989, 1)
            .into_iter()
            .chain(entries(1990..=2100, 3))
            .collect();
        assert_eq!(got.len(), want.len());
        for (e, want) in got.iter().zip(&want) {
            assert_eq!(
                (e.index, &e.data),
                (want.index, &want.data),
                "entry {}",
                want.index
            );
        }
    }
}
