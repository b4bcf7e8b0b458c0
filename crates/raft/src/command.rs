//! Binary encoding of one client command inside a batch.
//!
//! ```text
//! tag u8 | node varint | epoch u64 LE | token varint | [session] | body
//!   session (tags 0xB1..=0xB3 only): id u64 LE | seq varint | seq - floor varint
//!   Put:    klen varint | key | value
//!   Delete: key
//!   Raw:    payload
//! ```
//!
//! The request id is `(node, epoch, token)`: it routes the result back to the
//! waiting caller. `epoch` is drawn afresh each time a node starts, so
//! entries replayed from an earlier incarnation of the same node (its own log
//! on RocksDB, or the log it catches up from peers on the memory engine) can
//! never resolve a request of the current one.
//!
//! A command may also carry a client [session stamp](SessionStamp): the
//! state machine applies each `(session, seq)` at most once, so a client may
//! send a write again, under a new token, when it cannot tell whether the
//! first attempt was applied (see [`crate::session`]).
//!
//! The tag bytes avoid `{` (legacy JSON batches) so a lone command is rarely
//! wrapped.

use crate::error::{Error, Result};
use metastore_batch::codec::varint;

const TAG_PUT: u8 = 0xA1;
const TAG_DELETE: u8 = 0xA2;
const TAG_RAW: u8 = 0xA3;
/// Added to a tag when the command carries a session stamp.
const SESSION_BIT: u8 = 0x10;

/// Who proposed a command, and which of its requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub node: u64,
    pub epoch: u64,
    pub token: u64,
}

/// Which client request a write is, for applying it at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionStamp {
    /// The client session, chosen at random by the client (never 0).
    pub session: u64,
    /// The request's number in its session; every attempt of one request
    /// carries the same number.
    pub seq: u64,
    /// The lowest `seq` the client still waits on when it sends this
    /// (`floor <= seq`): results below it may be forgotten.
    pub floor: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOp<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    Raw(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    pub id: RequestId,
    pub session: Option<SessionStamp>,
    pub op: CommandOp<'a>,
}

/// Encodes a command from borrowed parts, in one allocation of the exact size.
/// A stamp with `floor > seq` is encoded with `floor = seq`.
pub fn encode_command(id: RequestId, session: Option<SessionStamp>, op: CommandOp<'_>) -> Vec<u8> {
    let (tag, body_len) = match op {
        CommandOp::Put { key, value } => (
            TAG_PUT,
            varint::len(key.len() as u64) + key.len() + value.len(),
        ),
        CommandOp::Delete { key } => (TAG_DELETE, key.len()),
        CommandOp::Raw(data) => (TAG_RAW, data.len()),
    };
    let stamp = session.map(|s| (s.session, s.seq, s.seq - s.floor.min(s.seq)));
    let stamp_len = stamp.map_or(0, |(_, seq, gap)| 8 + varint::len(seq) + varint::len(gap));
    let mut buf = Vec::with_capacity(
        1 + varint::len(id.node) + 8 + varint::len(id.token) + stamp_len + body_len,
    );
    buf.push(if stamp.is_some() {
        tag | SESSION_BIT
    } else {
        tag
    });
    varint::put(&mut buf, id.node);
    buf.extend_from_slice(&id.epoch.to_le_bytes());
    varint::put(&mut buf, id.token);
    if let Some((session, seq, gap)) = stamp {
        buf.extend_from_slice(&session.to_le_bytes());
        varint::put(&mut buf, seq);
        varint::put(&mut buf, gap);
    }
    match op {
        CommandOp::Put { key, value } => {
            varint::put(&mut buf, key.len() as u64);
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
        }
        CommandOp::Delete { key } => buf.extend_from_slice(key),
        CommandOp::Raw(data) => buf.extend_from_slice(data),
    }
    buf
}

fn corrupt(what: &str) -> Error {
    Error::CorruptBatch(format!("malformed command: {what}"))
}

fn header(data: &[u8]) -> Result<(u8, RequestId, usize)> {
    let tag = *data.first().ok_or_else(|| corrupt("empty"))?;
    let mut pos = 1;
    let node = varint::get(data, &mut pos).ok_or_else(|| corrupt("node id"))?;
    let epoch_bytes = data.get(pos..pos + 8).ok_or_else(|| corrupt("epoch"))?;
    let mut e = [0u8; 8];
    e.copy_from_slice(epoch_bytes);
    pos += 8;
    let token = varint::get(data, &mut pos).ok_or_else(|| corrupt("token"))?;
    Ok((
        tag,
        RequestId {
            node,
            epoch: u64::from_le_bytes(e),
            token,
        },
        pos,
    ))
}

/// The request id alone (the proposer uses it to track what it proposed).
pub fn request_id(data: &[u8]) -> Result<RequestId> {
    header(data).map(|(_, id, _)| id)
}

fn stamp(data: &[u8], pos: &mut usize) -> Result<SessionStamp> {
    let bytes = data.get(*pos..*pos + 8).ok_or_else(|| corrupt("session"))?;
    let mut s = [0u8; 8];
    s.copy_from_slice(bytes);
    *pos += 8;
    let seq = varint::get(data, pos).ok_or_else(|| corrupt("session seq"))?;
    let gap = varint::get(data, pos).ok_or_else(|| corrupt("session floor"))?;
    let floor = seq
        .checked_sub(gap)
        .ok_or_else(|| corrupt("session floor"))?;
    Ok(SessionStamp {
        session: u64::from_le_bytes(s),
        seq,
        floor,
    })
}

pub fn decode(data: &[u8]) -> Result<Command<'_>> {
    let (mut tag, id, mut pos) = header(data)?;
    let mut session = None;
    if (TAG_PUT | SESSION_BIT..=TAG_RAW | SESSION_BIT).contains(&tag) {
        session = Some(stamp(data, &mut pos)?);
        tag &= !SESSION_BIT;
    }
    let op = match tag {
        TAG_PUT => {
            let klen = varint::get(data, &mut pos).ok_or_else(|| corrupt("key length"))?;
            let end = usize::try_from(klen)
                .ok()
                .and_then(|k| pos.checked_add(k))
                .filter(|&e| e <= data.len())
                .ok_or_else(|| corrupt("key length"))?;
            CommandOp::Put {
                key: &data[pos..end],
                value: &data[end..],
            }
        }
        TAG_DELETE => CommandOp::Delete { key: &data[pos..] },
        TAG_RAW => CommandOp::Raw(&data[pos..]),
        t => return Err(corrupt(&format!("unknown tag {t:#x}"))),
    };
    Ok(Command { id, session, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_op() {
        let id = RequestId {
            node: 3,
            epoch: 0xdead_beef_0123_4567,
            token: 1 << 40,
        };
        let value = b"v\xff\x00".to_vec();
        let ops = [
            CommandOp::Put {
                key: b"k",
                value: &value,
            },
            CommandOp::Put {
                key: b"",
                value: b"",
            },
            CommandOp::Delete { key: b"key" },
            CommandOp::Raw(b"{\"is_batch\":true}"),
        ];
        let stamp = SessionStamp {
            session: u64::MAX - 5,
            seq: 300,
            floor: 17,
        };
        for session in [None, Some(stamp)] {
            for op in ops {
                let buf = encode_command(id, session, op);
                let cmd = decode(&buf).unwrap();
                assert_eq!(cmd.id, id);
                assert_eq!(cmd.session, session);
                assert_eq!(request_id(&buf).unwrap(), id);
                assert_eq!(cmd.op, op);
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xa1",
            b"\xa1\x01\x00",
            b"\xa1\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\xff",
            b"\x07\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01",
            // A session stamp cut short, and one whose floor is above its seq.
            b"\xb1\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x05",
            b"\xb2\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x05\x00\x00\x00\x00\x00\x00\x00\x02\x03k",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_put_round_trips(node: u64, epoch: u64, token: u64, key: Vec<u8>, value: Vec<u8>, stamp: Option<(u64, u64, u64)>) {
            let id = RequestId { node, epoch, token };
            let session = stamp.map(|(session, a, b)| SessionStamp { session, seq: a.max(b), floor: a.min(b) });
            let buf = encode_command(id, session, CommandOp::Put { key: &key, value: &value });
            let cmd = decode(&buf).unwrap();
            proptest::prop_assert_eq!(cmd.id, id);
            proptest::prop_assert_eq!(cmd.session, session);
            proptest::prop_assert_eq!(cmd.op, CommandOp::Put { key: &key, value: &value });
        }

        #[test]
        fn any_bytes_decode_without_panic(data: Vec<u8>) {
            let _ = decode(&data);
        }
    }
}
