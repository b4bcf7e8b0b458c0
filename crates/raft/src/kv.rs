//! The KV state machine: applying a committed entry to an engine, and the
//! snapshot format (the client sessions and the serialized KV map).

use metastore_batch::for_each_proposal;

use crate::command::{self, CommandOp, RequestId};
use crate::error::{Error, Result};
use crate::membership::Membership;
use crate::session::{Record, Sessions, Verdict};
use crate::storage::Engine;
use metastore_batch::codec::varint;

/// What one applied command produced, for the proposer to resolve its caller.
pub(crate) struct Applied {
    pub id: RequestId,
    /// Where and how the write was applied: by this entry, or, for a
    /// duplicate of a session's write, by the first attempt. `None`: a
    /// session write the client had stopped waiting for, not applied now.
    pub result: Option<Record>,
}

/// Applies the commands of the entry at `index` in order. Every node applies
/// the same bytes the same way, so a command that does not decode is skipped
/// identically everywhere rather than stopping the node. The commands for
/// which `waited(id)` holds are reported to `applied`, in order.
///
/// Every node records the result of a session's write, in case a retry asks
/// for it later. Whether its key existed costs the RocksDB engine a read, so
/// it is asked for writes someone waits on here and for the session writes
/// for which `keeps_existed(id)` holds: the node passes its own writes (a
/// client retries on the node it first asked) and, while it leads, all of
/// them (the leader is who sends snapshots). Elsewhere the record keeps
/// `existed: None`, and a retry answered from it learns the write was
/// applied but not whether its key existed (an unknown outcome).
pub(crate) fn apply_entry<E: Engine>(
    engine: &mut E,
    index: u64,
    data: &[u8],
    waited: impl Fn(&RequestId) -> bool,
    keeps_existed: impl Fn(&RequestId) -> bool,
    applied: &mut Vec<Applied>,
) -> Result<()> {
    let mut result = Ok(());
    // A frame that does not decode is skipped as a whole (the same on every node).
    let _ = for_each_proposal(data, |raw| {
        if result.is_err() {
            return;
        }
        let Ok(cmd) = command::decode(raw) else {
            return;
        };
        let want = waited(&cmd.id);
        if let Some(stamp) = &cmd.session {
            let earlier = match engine.sessions().check(stamp, index) {
                Verdict::Apply => None,
                Verdict::Duplicate(first) => Some(Some(first)),
                Verdict::Forgotten => Some(None),
            };
            if let Some(result) = earlier {
                if want {
                    applied.push(Applied { id: cmd.id, result });
                }
                return;
            }
        }
        let ask = want || (cmd.session.is_some() && keeps_existed(&cmd.id));
        let existed = match cmd.op {
            CommandOp::Put { key, value } => engine.apply_put(key, value, ask),
            CommandOp::Delete { key } => engine.apply_delete(key, ask),
            CommandOp::Raw(_) => Ok(Some(false)),
        };
        let record = match existed {
            Ok(existed) => Record { index, existed },
            Err(e) => {
                result = Err(e);
                return;
            }
        };
        if let Some(stamp) = &cmd.session {
            if let Err(e) = engine.record_session(stamp, record) {
                result = Err(e);
                return;
            }
        }
        if want {
            applied.push(Applied {
                id: cmd.id,
                result: Some(record),
            });
        }
    });
    result
}

/// Version 1 held the KV pairs alone; version 2 starts with the sessions;
/// version 3 adds the membership record.
const SNAPSHOT_VERSION: u8 = 3;

/// Serializes the state machine as snapshot data:
/// `version u8 | sessions | has_membership u8 | [membership] |
/// (klen varint | key | vlen varint | value)*`, sessions in
/// [`Sessions::encode`]'s form, the membership in
/// [`Membership::encode_into`]'s, pairs in key order.
#[derive(Default)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
}

impl SnapshotWriter {
    pub fn new(sessions: &Sessions, membership: Option<&Membership>) -> Self {
        let mut buf = vec![SNAPSHOT_VERSION];
        sessions.encode(&mut buf);
        match membership {
            Some(m) => {
                buf.push(1);
                m.encode_into(&mut buf);
            }
            None => buf.push(0),
        }
        SnapshotWriter { buf }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        varint::put(&mut self.buf, key.len() as u64);
        self.buf.extend_from_slice(key);
        varint::put(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A decoded snapshot.
pub struct SnapshotData<'a> {
    pub sessions: Sessions,
    /// Absent from groups that keep none (in-process clusters) and from
    /// older versions.
    pub membership: Option<Membership>,
    pub pairs: Vec<(&'a [u8], &'a [u8])>,
}

/// Decodes snapshot data, or an error naming what is wrong.
pub fn decode_snapshot(data: &[u8]) -> Result<SnapshotData<'_>> {
    let bad = |what: &str| Error::Storage(format!("corrupt snapshot data: {what}"));
    let mut snap = SnapshotData {
        sessions: Sessions::default(),
        membership: None,
        pairs: Vec::new(),
    };
    if data.is_empty() {
        // A snapshot of an empty state machine may carry no bytes at all.
        return Ok(snap);
    }
    let mut pos = 1;
    match data[0] {
        1 => {}
        2 => snap.sessions = Sessions::decode(data, &mut pos)?,
        SNAPSHOT_VERSION => {
            snap.sessions = Sessions::decode(data, &mut pos)?;
            match data.get(pos) {
                Some(0) => pos += 1,
                Some(1) => {
                    pos += 1;
                    snap.membership = Some(Membership::decode_from(data, &mut pos)?);
                }
                _ => return Err(bad("malformed membership flag")),
            }
        }
        v => return Err(bad(&format!("unknown version {v}"))),
    }
    let out = &mut snap.pairs;
    fn take<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
        let n = usize::try_from(varint::get(data, pos)?).ok()?;
        let end = pos.checked_add(n).filter(|&e| e <= data.len())?;
        let s = &data[*pos..end];
        *pos = end;
        Some(s)
    }
    while pos < data.len() {
        let k = take(data, &mut pos).ok_or_else(|| bad("truncated key"))?;
        let v = take(data, &mut pos).ok_or_else(|| bad("truncated value"))?;
        out.push((k, v));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::command::{encode_command, SessionStamp};
    use crate::identity::{Bootstrap, ClusterId, Identity};
    use crate::storage::{MemoryEngine, RocksEngine};
    use metastore_batch::encode_batch;

    /// Applies `put k` stamped `seq` as an entry at `index`, proposed by node
    /// 2 and waited for when `wait`; returns what the waiter is told.
    fn put<E: Engine>(
        engine: &mut E,
        index: u64,
        seq: u64,
        wait: bool,
        keeps: bool,
    ) -> Option<Record> {
        let id = RequestId {
            node: 2,
            epoch: 1,
            token: index,
        };
        let stamp = SessionStamp {
            session: 5,
            seq,
            floor: 1,
        };
        let data = encode_batch(&[encode_command(
            id,
            Some(stamp),
            CommandOp::Put {
                key: b"k",
                value: b"v",
            },
        )]);
        let mut applied = Vec::new();
        apply_entry(engine, index, &data, |_| wait, |_| keeps, &mut applied).unwrap();
        engine.finish_apply(index).unwrap();
        applied.pop().and_then(|a| a.result)
    }

    #[test]
    fn a_duplicate_answers_the_first_result_with_existed_where_it_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::new(ClusterId::random(), 1, &[1, 2, 3]);
        let mut rocks = RocksEngine::open(dir.path(), &identity, Bootstrap::New).unwrap();
        let mut memory = MemoryEngine::new(&[1, 2, 3]);
        for keeps in [true, false] {
            let seq = if keeps { 1 } else { 2 };
            let first = 10 * seq;
            assert!(
                put(&mut rocks, first, seq, false, keeps).is_none(),
                "nobody waits"
            );
            put(&mut memory, first, seq, false, keeps);
            let existed = Some(seq == 2);
            let rocks_existed = if keeps { existed } else { None };
            assert_eq!(
                put(&mut rocks, first + 1, seq, true, true),
                Some(Record {
                    index: first,
                    existed: rocks_existed
                }),
                "rocksdb, keeps {keeps}"
            );
            assert_eq!(
                put(&mut memory, first + 1, seq, true, true),
                Some(Record {
                    index: first,
                    existed
                }),
                "memory always knows"
            );
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let mut sessions = Sessions::default();
        let stamp = SessionStamp {
            session: 3,
            seq: 8,
            floor: 2,
        };
        sessions.check(&stamp, 40);
        sessions.record(
            &stamp,
            Record {
                index: 40,
                existed: Some(true),
            },
        );
        let membership = Membership::initial(
            ClusterId(3),
            [(1, "a:1".to_string()), (4, "d:4".into())].into(),
        );
        let mut w = SnapshotWriter::new(&sessions, Some(&membership));
        w.push(b"a", b"1");
        w.push(b"", b"");
        w.push(b"\xff", &[7u8; 300]);
        let data = w.finish();
        let snap = decode_snapshot(&data).unwrap();
        assert_eq!(snap.sessions, sessions);
        assert_eq!(snap.membership, Some(membership));
        assert_eq!(
            snap.pairs,
            vec![
                (&b"a"[..], &b"1"[..]),
                (&b""[..], &b""[..]),
                (&b"\xff"[..], &[7u8; 300][..])
            ]
        );
        assert!(decode_snapshot(&data[..data.len() - 1]).is_err());
        assert!(decode_snapshot(&[9]).is_err());
        assert!(decode_snapshot(&[]).unwrap().pairs.is_empty());
        // Version 1 (no sessions) still reads.
        let v1 = [1, 1, b'k', 1, b'v'];
        let snap = decode_snapshot(&v1).unwrap();
        assert!(snap.sessions.is_empty());
        assert_eq!(snap.pairs, vec![(&b"k"[..], &b"v"[..])]);
    }

    proptest::proptest! {
        #[test]
        fn any_map_round_trips(pairs: std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
            let mut w = SnapshotWriter::new(&Sessions::default(), None);
            for (k, v) in &pairs {
                w.push(k, v);
            }
            let data = w.finish();
            let back: Vec<(Vec<u8>, Vec<u8>)> =
                decode_snapshot(&data).unwrap().pairs.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(back, pairs.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn any_bytes_decode_without_panic(data: Vec<u8>) {
            let _ = decode_snapshot(&data);
        }
    }
}
