//! LEB128 varints: 7 bits per byte, least significant group first. Public
//! so the Raft crate's command and snapshot encodings share them.

use crate::error::BatchError;

/// Bytes that `put(v)` writes.
#[inline]
pub fn len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos` and advances past it; `None` when truncated or
/// when it does not fit in a u64 (at most 10 bytes).
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        // The tenth byte holds bit 63 only.
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// [`get`] for frames: failures are `CorruptBatch`.
#[inline]
pub(crate) fn read(buf: &[u8], pos: &mut usize) -> Result<u64, BatchError> {
    let start = *pos;
    get(buf, pos).ok_or_else(|| {
        let reason = if buf.len() - start < 10 && buf[start..].iter().all(|b| b & 0x80 != 0) {
            "truncated varint"
        } else {
            "varint overflows 64 bits"
        };
        BatchError::CorruptBatch(reason.into())
    })
}

/// A varint that must be a length or count within this address space.
#[inline]
pub(crate) fn read_usize(buf: &[u8], pos: &mut usize) -> Result<usize, BatchError> {
    let v = read(buf, pos)?;
    usize::try_from(v).map_err(|_| BatchError::CorruptBatch(format!("length {v} overflows usize")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out.len(), len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn rejects_truncation_and_overflow() {
        let mut pos = 0;
        assert!(read(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read(&[], &mut pos).is_err());
        let mut pos = 0;
        assert!(read(&[0xff; 10], &mut pos).is_err());
        let mut pos = 0;
        assert!(read(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &mut pos
        )
        .is_err());
        let mut pos = 0;
        assert!(read(&[0x80; 11], &mut pos).is_err());
    }
}
