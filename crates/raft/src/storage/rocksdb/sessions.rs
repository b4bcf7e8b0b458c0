//! The client sessions on disk, in the `sessions` column family.
//!
//! ```text
//! id u64 BE | 0                  floor varint | last_index varint
//! id u64 BE | 1 | round u64 BE   (seq varint | index varint | existed u8)*
//! ```
//!
//! The results an apply round records for a session are one value, keyed by
//! the round's last index, so a round costs one write per session however
//! many writes it applied. A value is deleted once the session's floor has
//! passed every sequence number in it; results below the floor that remain
//! in a value are skipped on load. Everything a round changes is staged into
//! the round's own write batch, with its KV writes and applied index.

use std::collections::{HashMap, VecDeque};

use rocksdb::{ColumnFamily, DBRawIterator, WriteBatch};

use crate::command::SessionStamp;
use crate::error::{Error, Result};
use crate::session::{self, Record, Session, Sessions};

fn meta_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k
}

fn results_key(id: u64, round: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8] = 1;
    k[9..].copy_from_slice(&round.to_be_bytes());
    k
}

/// Past every key of session `id`.
fn end_key(id: u64) -> [u8; 9] {
    let mut k = meta_key(id);
    k[8] = 2;
    k
}

/// One stored value of results: its round, and the highest sequence number in it.
type Stored = VecDeque<(u64, u64)>;

#[derive(Default)]
pub(super) struct SessionStore {
    pub sessions: Sessions,
    /// Results recorded in the current round, per session, encoded, with
    /// their highest sequence number.
    round: Vec<(u64, Vec<u8>, u64)>,
    /// The values on disk, per session, in round order.
    stored: HashMap<u64, Stored>,
}

impl SessionStore {
    pub fn new(mut sessions: Sessions, stored: HashMap<u64, Stored>) -> Self {
        sessions.track_changes();
        SessionStore {
            sessions,
            round: Vec::new(),
            stored,
        }
    }

    pub fn record(&mut self, stamp: &SessionStamp, record: Record) {
        self.sessions.record(stamp, record);
        let i = match self
            .round
            .iter()
            .position(|(id, _, _)| *id == stamp.session)
        {
            Some(i) => i,
            None => {
                self.round.push((stamp.session, Vec::new(), 0));
                self.round.len() - 1
            }
        };
        let (_, buf, max) = &mut self.round[i];
        metastore_batch::codec::varint::put(buf, stamp.seq);
        session::encode_record(&record, buf);
        *max = (*max).max(stamp.seq);
    }

    /// Stages what the round that ends at `applied` changed.
    pub fn stage_round(&mut self, wb: &mut WriteBatch, cf: &ColumnFamily, applied: u64) {
        for (id, buf, max) in self.round.drain(..) {
            wb.put_cf(cf, results_key(id, applied), buf);
            self.stored.entry(id).or_default().push_back((applied, max));
        }
        let mut meta = Vec::new();
        for (id, _, now) in self.sessions.take_changed() {
            match now {
                Some(s) => {
                    meta.clear();
                    session::encode_meta(s, &mut meta);
                    wb.put_cf(cf, meta_key(id), &meta);
                    if let Some(stored) = self.stored.get_mut(&id) {
                        while let Some(&(round, max)) = stored.front() {
                            if max >= s.floor {
                                break;
                            }
                            wb.delete_cf(cf, results_key(id, round));
                            stored.pop_front();
                        }
                    }
                }
                None => {
                    wb.delete_range_cf(cf, meta_key(id), end_key(id));
                    self.stored.remove(&id);
                }
            }
        }
    }

    /// Stages the replacement of every session by `sessions` (a snapshot at
    /// `index`); [`replaced`](Self::replaced) takes them once written.
    pub fn stage_snapshot(wb: &mut WriteBatch, cf: &ColumnFamily, sessions: &Sessions, index: u64) {
        wb.delete_range_cf(cf, &[][..], &[0xFF; 18][..]);
        let mut buf = Vec::new();
        for (id, s) in sessions.iter() {
            buf.clear();
            session::encode_meta(s, &mut buf);
            wb.put_cf(cf, meta_key(id), &buf);
            if !s.records.is_empty() {
                buf.clear();
                for (seq, r) in s.records.iter() {
                    metastore_batch::codec::varint::put(&mut buf, seq);
                    session::encode_record(&r, &mut buf);
                }
                wb.put_cf(cf, results_key(id, index), &buf);
            }
        }
    }

    pub fn replaced(&mut self, sessions: Sessions, index: u64) {
        self.stored = sessions
            .iter()
            .filter_map(|(id, s)| {
                let (max, _) = s.records.iter().last()?;
                Some((id, VecDeque::from([(index, max)])))
            })
            .collect();
        self.round.clear();
        self.sessions.replace(sessions);
    }

    /// Reads the sessions from `it` (positioned nowhere yet); `corrupt`
    /// names what is wrong.
    pub fn load(mut it: DBRawIterator<'_>, corrupt: impl Fn(String) -> Error) -> Result<Self> {
        let mut sessions = Sessions::default();
        let mut stored: HashMap<u64, Stored> = HashMap::new();
        let mut current: Option<(u64, Session)> = None;
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let id = k
                .get(..8)
                .and_then(|b| Some(u64::from_be_bytes(b.try_into().ok()?)));
            match (id, k.get(8), k.len()) {
                (Some(id), Some(0), 9) => {
                    let mut pos = 0;
                    let s = session::decode_meta(v, &mut pos)
                        .filter(|_| pos == v.len())
                        .ok_or_else(|| corrupt(format!("session {id:#x}")))?;
                    if let Some((id, s)) = current.replace((id, s)) {
                        sessions.insert(id, s);
                    }
                }
                (Some(id), Some(1), 17) => {
                    let round = u64::from_be_bytes(k[9..].try_into().unwrap_or_default());
                    let bad = || corrupt(format!("session {id:#x}: results of round {round}"));
                    let Some((cur, s)) = current.as_mut().filter(|(cur, _)| *cur == id) else {
                        return Err(bad());
                    };
                    let (mut pos, mut max) = (0, 0);
                    while pos < v.len() {
                        let seq =
                            metastore_batch::codec::varint::get(v, &mut pos).ok_or_else(bad)?;
                        let r = session::decode_record(v, &mut pos).ok_or_else(bad)?;
                        if seq >= s.floor {
                            s.records.insert(seq, r);
                        }
                        max = max.max(seq);
                    }
                    stored.entry(*cur).or_default().push_back((round, max));
                }
                _ => return Err(corrupt("a session key of the wrong form".into())),
            }
            it.next();
        }
        it.status()
            .map_err(|e| corrupt(format!("cannot read the sessions: {e}")))?;
        if let Some((id, s)) = current {
            sessions.insert(id, s);
        }
        Ok(SessionStore::new(sessions, stored))
    }
}
