//! Client sessions: each write applied at most once, however often it is sent.
//!
//! A client that cannot tell whether a write was applied (its node timed out
//! or stopped after proposing it) sends it again. Without help the state
//! machine would apply it twice, and a retried delete would answer
//! `existed = false`. So, as in Raft's client sessions (Ongaro's thesis,
//! section 6.3), a write may carry a [`SessionStamp`]: the client's session
//! id, the request's sequence number (the same for every attempt) and the
//! client's floor (the lowest sequence number it still waits on). For each
//! session the state machine keeps the result of every applied sequence
//! number at or above the floor. A stamp already recorded is a duplicate:
//! it is not applied again and answers with the first result (its index and
//! `existed`). A stamp below the floor is one the client stopped waiting for;
//! it is not applied and answers [`Verdict::Forgotten`].
//!
//! Everything here is part of the replicated state: it changes only as
//! entries apply, the same way on every node, and travels in snapshots.
//! Sessions expire by log index, never by a node's clock: a session that no
//! entry has touched for [`SESSION_TTL`] indexes is dropped when the applied
//! index reaches a multiple of [`SWEEP_EVERY`]. A client's retries end within
//! its request deadline (seconds), far inside that window; a stamp of an
//! expired session starts the session afresh.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use metastore_batch::codec::varint;

use crate::command::SessionStamp;
use crate::error::{Error, Result};

/// Log indexes after which an untouched session is dropped.
pub const SESSION_TTL: u64 = 1_000_000;
/// Sessions are swept for expiry when the applied index is a multiple of this.
pub const SWEEP_EVERY: u64 = 4096;
/// Results kept per session at most: beyond it the lowest is forgotten (as
/// if the client had raised its floor), so a client that never raises its
/// floor cannot grow the state without bound.
pub const MAX_RECORDS: usize = 1 << 20;

/// The first result of an applied write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The log index it was applied at.
    pub index: u64,
    /// Whether its key existed before (false for raw commands); `None`
    /// where this node did not find out (see [`crate::kv::apply_entry`]).
    pub existed: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Sequence numbers below this are forgotten.
    pub floor: u64,
    /// The index of the last entry with a command of this session.
    pub last_index: u64,
    /// Results of applied sequence numbers `>= floor`.
    pub records: Records,
}

/// Results by sequence number. A client numbers its requests in order and
/// its floor follows, so results mostly arrive at the back and leave at the
/// front: a sorted deque beats a tree here (no allocation per result).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records(VecDeque<(u64, Record)>);

impl Records {
    fn position(&self, seq: u64) -> Result<usize, usize> {
        match self.0.back() {
            Some(&(last, _)) if last < seq => Err(self.0.len()),
            None => Err(0),
            _ => self.0.binary_search_by_key(&seq, |&(s, _)| s),
        }
    }

    pub fn get(&self, seq: u64) -> Option<Record> {
        let i = self.position(seq).ok()?;
        self.0.get(i).map(|&(_, r)| r)
    }

    pub fn insert(&mut self, seq: u64, record: Record) {
        match self.position(seq) {
            Ok(i) => self.0[i].1 = record,
            Err(i) if i == self.0.len() => self.0.push_back((seq, record)),
            Err(i) => self.0.insert(i, (seq, record)),
        }
    }

    /// Forgets the results below `floor`.
    fn drop_below(&mut self, floor: u64) {
        while self.0.front().is_some_and(|&(s, _)| s < floor) {
            self.0.pop_front();
        }
    }

    fn pop_first(&mut self) -> Option<(u64, Record)> {
        self.0.pop_front()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(seq, result)` in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Record)> + '_ {
        self.0.iter().copied()
    }
}

/// Session ids are random, so their low bits hash them well enough.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type SessionMap = HashMap<u64, Session, BuildHasherDefault<IdHasher>>;

/// What to do with a stamped write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: apply it, then [`Sessions::record`] its result.
    Apply,
    /// Applied before, with this result: do not apply again.
    Duplicate(Record),
    /// Below the session's floor: the client stopped waiting for it, and its
    /// result is gone. Not applied now; an earlier attempt may have been.
    Forgotten,
}

/// The sessions of one state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    map: SessionMap,
    ttl: u64,
    max_records: usize,
    /// Sessions changed since [`take_changed`](Self::take_changed), with the
    /// floor they had then; tracked for engines that persist per round.
    changed: Option<HashMap<u64, u64, BuildHasherDefault<IdHasher>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_limits(SESSION_TTL, MAX_RECORDS)
    }
}

impl Sessions {
    /// Sessions with other bounds (tests).
    pub fn with_limits(ttl: u64, max_records: usize) -> Self {
        Sessions {
            map: SessionMap::default(),
            ttl,
            max_records: max_records.max(1),
            changed: None,
        }
    }

    /// Tracks which sessions change, for [`take_changed`](Self::take_changed).
    pub fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashMap::default);
    }

    fn touch(&mut self, id: u64) -> &mut Session {
        let session = self.map.entry(id).or_default();
        if let Some(changed) = &mut self.changed {
            changed.entry(id).or_insert(session.floor);
        }
        session
    }

    /// Decides what to do with a stamped write in the entry at `index`, and
    /// takes its floor (forgetting the results below it).
    pub fn check(&mut self, stamp: &SessionStamp, index: u64) -> Verdict {
        let session = self.touch(stamp.session);
        session.last_index = index;
        if stamp.floor > session.floor {
            session.floor = stamp.floor;
            session.records.drop_below(stamp.floor);
        }
        if stamp.seq < session.floor {
            Verdict::Forgotten
        } else if let Some(r) = session.records.get(stamp.seq) {
            Verdict::Duplicate(r)
        } else {
            Verdict::Apply
        }
    }

    /// Records the result of a write [`check`](Self::check) said to apply.
    pub fn record(&mut self, stamp: &SessionStamp, record: Record) {
        let max = self.max_records;
        let session = self.touch(stamp.session);
        session.records.insert(stamp.seq, record);
        if session.records.len() > max {
            if let Some((lowest, _)) = session.records.pop_first() {
                session.floor = lowest + 1;
            }
        }
    }

    /// Drops the sessions untouched for `ttl` indexes, when `applied` (the
    /// index just applied) is a multiple of [`SWEEP_EVERY`].
    pub fn sweep(&mut self, applied: u64) {
        if !applied.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let ttl = self.ttl;
        let mut expired = Vec::new();
        self.map.retain(|id, s| {
            let keep = s.last_index.saturating_add(ttl) > applied;
            if !keep {
                expired.push((*id, s.floor));
            }
            keep
        });
        if let Some(changed) = &mut self.changed {
            for (id, floor) in expired {
                changed.entry(id).or_insert(floor);
            }
        }
    }

    /// The sessions changed since the last call, each with the floor it had
    /// then, and its state now (`None`: expired).
    pub fn take_changed(&mut self) -> Vec<(u64, u64, Option<&Session>)> {
        let Some(changed) = &mut self.changed else {
            return Vec::new();
        };
        let changed = std::mem::take(changed);
        changed
            .into_iter()
            .map(|(id, floor)| (id, floor, self.map.get(&id)))
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<&Session> {
        self.map.get(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every session, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        let mut ids: Vec<u64> = self.map.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| Some((id, self.map.get(&id)?)))
    }

    /// Replaces every session (a snapshot was installed); change tracking
    /// stays as it was.
    pub fn replace(&mut self, other: Sessions) {
        self.map = other.map;
        if let Some(changed) = &mut self.changed {
            changed.clear();
        }
    }

    /// Puts a session back as it was stored.
    pub fn insert(&mut self, id: u64, session: Session) {
        self.map.insert(id, session);
    }

    /// The snapshot form: `count varint | (id u64 LE | meta | n varint |
    /// (seq varint | record)*)*`, sessions in id order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        varint::put(out, self.map.len() as u64);
        for (id, s) in self.iter() {
            out.extend_from_slice(&id.to_le_bytes());
            encode_meta(s, out);
            varint::put(out, s.records.len() as u64);
            for (seq, r) in s.records.iter() {
                varint::put(out, seq);
                encode_record(&r, out);
            }
        }
    }

    /// Reads what [`encode`](Self::encode) wrote from `data[*pos..]`.
    pub fn decode(data: &[u8], pos: &mut usize) -> Result<Sessions> {
        let bad = || Error::Storage("corrupt snapshot data: sessions".into());
        let mut sessions = Sessions::default();
        let count = varint::get(data, pos).ok_or_else(bad)?;
        for _ in 0..count {
            let id = data.get(*pos..*pos + 8).ok_or_else(bad)?;
            let id = u64::from_le_bytes(id.try_into().map_err(|_| bad())?);
            *pos += 8;
            let mut session = decode_meta(data, pos).ok_or_else(bad)?;
            let n = varint::get(data, pos).ok_or_else(bad)?;
            for _ in 0..n {
                let seq = varint::get(data, pos).ok_or_else(bad)?;
                let record = decode_record(data, pos).ok_or_else(bad)?;
                session.records.insert(seq, record);
            }
            sessions.map.insert(id, session);
        }
        Ok(sessions)
    }
}

/// `floor varint | last_index varint`.
pub fn encode_meta(s: &Session, out: &mut Vec<u8>) {
    varint::put(out, s.floor);
    varint::put(out, s.last_index);
}

/// A session without records from [`encode_meta`]'s bytes at `data[*pos..]`.
pub fn decode_meta(data: &[u8], pos: &mut usize) -> Option<Session> {
    Some(Session {
        floor: varint::get(data, pos)?,
        last_index: varint::get(data, pos)?,
        records: Records::default(),
    })
}

/// `index varint | existed u8` (0 no, 1 yes, 2 not known).
pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    varint::put(out, r.index);
    out.push(match r.existed {
        Some(false) => 0,
        Some(true) => 1,
        None => 2,
    });
}

pub fn decode_record(data: &[u8], pos: &mut usize) -> Option<Record> {
    let index = varint::get(data, pos)?;
    let existed = match data.get(*pos)? {
        0 => Some(false),
        1 => Some(true),
        2 => None,
        _ => return None,
    };
    *pos += 1;
    Some(Record { index, existed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u64, floor: u64) -> SessionStamp {
        SessionStamp {
            session: 9,
            seq,
            floor,
        }
    }

    #[test]
    fn a_duplicate_answers_the_first_result_and_is_not_applied() {
        let mut s = Sessions::default();
        assert_eq!(s.check(&stamp(1, 1), 10), Verdict::Apply);
        let first = Record {
            index: 10,
            existed: Some(false),
        };
        s.record(&stamp(1, 1), first);
        assert_eq!(s.check(&stamp(1, 1), 12), Verdict::Duplicate(first));
        assert_eq!(s.check(&stamp(2, 1), 12), Verdict::Apply);
    }

    #[test]
    fn the_floor_forgets_results_below_it() {
        let mut s = Sessions::default();
        for seq in 1..=3 {
            assert_eq!(s.check(&stamp(seq, 1), seq), Verdict::Apply);
            s.record(
                &stamp(seq, 1),
                Record {
                    index: seq,
                    existed: Some(true),
                },
            );
        }
        // The client got 1 and 2 back and sends 4 with floor 3.
        assert_eq!(s.check(&stamp(4, 3), 5), Verdict::Apply);
        assert_eq!(s.get(9).unwrap().records.len(), 1);
        assert_eq!(s.check(&stamp(2, 3), 6), Verdict::Forgotten);
        // A stale floor never lowers it.
        assert_eq!(s.check(&stamp(1, 1), 7), Verdict::Forgotten);
        assert!(matches!(s.check(&stamp(3, 3), 8), Verdict::Duplicate(_)));
    }

    #[test]
    fn the_record_bound_raises_the_floor() {
        let mut s = Sessions::with_limits(SESSION_TTL, 2);
        for seq in 1..=3 {
            assert_eq!(s.check(&stamp(seq, 1), seq), Verdict::Apply);
            s.record(
                &stamp(seq, 1),
                Record {
                    index: seq,
                    existed: Some(false),
                },
            );
        }
        assert_eq!(s.get(9).unwrap().floor, 2);
        assert_eq!(s.check(&stamp(1, 1), 4), Verdict::Forgotten);
        assert!(matches!(s.check(&stamp(2, 1), 4), Verdict::Duplicate(_)));
    }

    #[test]
    fn sessions_expire_by_log_index_at_sweep_points_only() {
        let mut s = Sessions::with_limits(5000, MAX_RECORDS);
        s.track_changes();
        s.check(&stamp(1, 1), 100);
        s.check(
            &SessionStamp {
                session: 7,
                seq: 1,
                floor: 1,
            },
            4000,
        );
        s.take_changed();
        s.sweep(SWEEP_EVERY + 1);
        assert_eq!(s.len(), 2, "not a sweep point");
        s.sweep(2 * SWEEP_EVERY);
        assert_eq!(s.len(), 1, "session 9 was idle for more than 5000 indexes");
        assert!(s.get(9).is_none());
        let changed = s.take_changed();
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].0, changed[0].2), (9, None));
        // An expired session starts afresh.
        assert_eq!(s.check(&stamp(1, 1), 9000), Verdict::Apply);
    }

    #[test]
    fn changes_are_reported_with_the_floor_they_started_from() {
        let mut s = Sessions::default();
        s.track_changes();
        s.check(&stamp(1, 1), 1);
        s.record(
            &stamp(1, 1),
            Record {
                index: 1,
                existed: Some(false),
            },
        );
        s.check(&stamp(3, 2), 2);
        let changed = s.take_changed();
        assert_eq!(changed.len(), 1);
        let (id, floor, now) = changed[0];
        assert_eq!((id, floor, now.unwrap().floor), (9, 0, 2));
        assert!(s.take_changed().is_empty());
    }

    #[test]
    fn round_trips_through_the_snapshot_form() {
        let mut s = Sessions::default();
        for (id, seq) in [(u64::MAX, 5), (1, 1), (1, 2), (77, 1 << 40)] {
            let st = SessionStamp {
                session: id,
                seq,
                floor: 1,
            };
            s.check(&st, seq + 3);
            s.record(
                &st,
                Record {
                    index: seq + 3,
                    existed: Some(seq % 2 == 0),
                },
            );
        }
        let mut buf = vec![0xEE];
        s.encode(&mut buf);
        let mut pos = 1;
        let back = Sessions::decode(&buf, &mut pos).unwrap();
        assert_eq!(pos, buf.len());
        assert_eq!(back, s);
        for cut in 1..buf.len() {
            let mut pos = 1;
            assert!(Sessions::decode(&buf[..cut], &mut pos).is_err(), "{cut}");
        }
    }
}
