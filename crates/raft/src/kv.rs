//! The KV state machine: applying a committed entry to an engine, and the
//! snapshot format (the serialized KV map).

use metastore_batch::for_each_proposal;

use crate::command::{self, CommandOp, RequestId};
use crate::error::{Error, Result};
use crate::storage::Engine;
use metastore_batch::codec::varint;

/// What one applied command produced, for the proposer to resolve its caller.
pub(crate) struct Applied {
    pub id: RequestId,
    /// `existed` of a put or delete; false for raw commands.
    pub existed: bool,
}

/// Applies the commands of the entry at `index` in order. Every node applies
/// the same bytes the same way, so a command that does not decode is skipped
/// identically everywhere rather than stopping the node. The commands for
/// which `waited(id)` holds are reported to `applied`, in order; only those
/// need to know whether their key existed.
pub(crate) fn apply_entry<E: Engine>(
    engine: &mut E,
    data: &[u8],
    waited: impl Fn(&RequestId) -> bool,
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
        let existed = match cmd.op {
            CommandOp::Put { key, value } => engine.apply_put(key, value, want),
            CommandOp::Delete { key } => engine.apply_delete(key, want),
            CommandOp::Raw(_) => Ok(Some(false)),
        };
        match existed {
            Ok(existed) if want => applied.push(Applied {
                id: cmd.id,
                existed: existed.unwrap_or(false),
            }),
            Ok(_) => {}
            Err(e) => result = Err(e),
        }
    });
    result
}

const SNAPSHOT_VERSION: u8 = 1;

/// Serializes KV pairs (in key order) as snapshot data:
/// `version u8 | (klen varint | key | vlen varint | value)*`.
#[derive(Default)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
}

impl SnapshotWriter {
    pub fn new() -> Self {
        SnapshotWriter {
            buf: vec![SNAPSHOT_VERSION],
        }
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

/// Decodes snapshot data into KV pairs, or an error naming what is wrong.
pub fn decode_snapshot(data: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let bad = |what: &str| Error::Storage(format!("corrupt snapshot data: {what}"));
    if data.is_empty() {
        // A snapshot of an empty state machine may carry no bytes at all.
        return Ok(Vec::new());
    }
    if data[0] != SNAPSHOT_VERSION {
        return Err(bad(&format!("unknown version {}", data[0])));
    }
    let mut pos = 1;
    let mut out = Vec::new();
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip() {
        let mut w = SnapshotWriter::new();
        w.push(b"a", b"1");
        w.push(b"", b"");
        w.push(b"\xff", &[7u8; 300]);
        let data = w.finish();
        let pairs = decode_snapshot(&data).unwrap();
        assert_eq!(
            pairs,
            vec![
                (&b"a"[..], &b"1"[..]),
                (&b""[..], &b""[..]),
                (&b"\xff"[..], &[7u8; 300][..])
            ]
        );
        assert!(decode_snapshot(&data[..data.len() - 1]).is_err());
        assert!(decode_snapshot(&[9]).is_err());
        assert!(decode_snapshot(&[]).unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_map_round_trips(pairs: std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
            let mut w = SnapshotWriter::new();
            for (k, v) in &pairs {
                w.push(k, v);
            }
            let data = w.finish();
            let back: Vec<(Vec<u8>, Vec<u8>)> =
                decode_snapshot(&data).unwrap().into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(back, pairs.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn any_bytes_decode_without_panic(data: Vec<u8>) {
            let _ = decode_snapshot(&data);
        }
    }
}
