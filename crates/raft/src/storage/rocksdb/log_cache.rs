//! A contiguous tail of the persisted log, kept in memory.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// Recent entries kept in memory: the leader re-reads them to send appends
/// and to apply them right after persisting, so most reads never hit RocksDB.
const CACHE_MAX_ENTRIES: usize = 4096;
const CACHE_MAX_BYTES: usize = 32 << 20;

/// The last entries written (at most [`CACHE_MAX_ENTRIES`] and
/// [`CACHE_MAX_BYTES`]), contiguous, so a read of the tail never hits RocksDB.
#[derive(Default)]
pub(super) struct LogCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl LogCache {
    pub fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    pub fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first()?;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.index) else {
            return;
        };
        // Drop a conflicting tail, or everything if the new entries do not follow on.
        match self.first() {
            Some(cf) if first > cf && first <= cf + self.entries.len() as u64 => {
                for e in self.entries.drain((first - cf) as usize..) {
                    self.bytes -= e.data.len();
                }
            }
            _ => {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        for e in entries {
            self.bytes += e.data.len();
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > CACHE_MAX_ENTRIES || self.bytes > CACHE_MAX_BYTES {
            match self.entries.pop_front() {
                Some(e) => self.bytes -= e.data.len(),
                None => break,
            }
        }
    }

    pub fn compact(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.data.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}
