//! Binary encoding of one client command inside a batch.
//!
//! ```text
//! tag u8 | node varint | epoch u64 LE | token varint | body
//!   Put:    klen varint | key | value
//!   Delete: key
//!   Raw:    payload
//! ```
//!
//! The request id is `(node, epoch, token)`. `epoch` is drawn afresh each time
//! a node starts, so entries replayed from an earlier incarnation of the same
//! node (its own log on RocksDB, or the log it catches up from peers on the
//! memory engine) can never resolve a request of the current one. The tag
//! bytes avoid `{` (legacy JSON batches) so a lone command is rarely wrapped.

use crate::error::{Error, Result};
use metastore_batch::codec::varint;

const TAG_PUT: u8 = 0xA1;
const TAG_DELETE: u8 = 0xA2;
const TAG_RAW: u8 = 0xA3;

/// Who proposed a command, and which of its requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub node: u64,
    pub epoch: u64,
    pub token: u64,
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
    pub op: CommandOp<'a>,
}

/// Encodes a command from borrowed parts, in one allocation of the exact size.
pub fn encode_command(id: RequestId, op: CommandOp<'_>) -> Vec<u8> {
    let (tag, body_len) = match op {
        CommandOp::Put { key, value } => (
            TAG_PUT,
            varint::len(key.len() as u64) + key.len() + value.len(),
        ),
        CommandOp::Delete { key } => (TAG_DELETE, key.len()),
        CommandOp::Raw(data) => (TAG_RAW, data.len()),
    };
    let mut buf =
        Vec::with_capacity(1 + varint::len(id.node) + 8 + varint::len(id.token) + body_len);
    buf.push(tag);
    varint::put(&mut buf, id.node);
    buf.extend_from_slice(&id.epoch.to_le_bytes());
    varint::put(&mut buf, id.token);
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

pub fn decode(data: &[u8]) -> Result<Command<'_>> {
    let (tag, id, mut pos) = header(data)?;
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
    Ok(Command { id, op })
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
        for op in ops {
            let buf = encode_command(id, op);
            let cmd = decode(&buf).unwrap();
            assert_eq!(cmd.id, id);
            assert_eq!(request_id(&buf).unwrap(), id);
            assert_eq!(cmd.op, op);
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
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_put_round_trips(node: u64, epoch: u64, token: u64, key: Vec<u8>, value: Vec<u8>) {
            let id = RequestId { node, epoch, token };
            let buf = encode_command(id, CommandOp::Put { key: &key, value: &value });
            let cmd = decode(&buf).unwrap();
            proptest::prop_assert_eq!(cmd.id, id);
            proptest::prop_assert_eq!(cmd.op, CommandOp::Put { key: &key, value: &value });
        }

        #[test]
        fn any_bytes_decode_without_panic(data: Vec<u8>) {
            let _ = decode(&data);
        }
    }
}
