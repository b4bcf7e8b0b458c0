//! How N proposals travel in one Raft entry.
//!
//! Frame (all integers LEB128 varints):
//!
//! ```text
//! 0xC1 | version 1 | flags | count | (len | bytes) * count            flags = 0
//! 0xC1 | version 1 | flags | body_len | lz4_block(count | (len | bytes) * count)   flags bit 0
//! ```
//!
//! `0xC1` can never begin (or appear in) valid UTF-8, so no entry of the
//! original Go MetaStore, whose proposals were strings of text or JSON,
//! starts with it. A single proposal is stored raw, as the seed did, unless
//! it starts with the magic or with the legacy batch prefix; then it is
//! wrapped as a frame of one. So `decode_batch(encode_batch(xs)) == xs` for
//! every list of byte strings, and decoding never depends on configuration.

mod legacy;
pub mod varint;

use std::borrow::Cow;

use crate::config::{BatchConfig, Compression};
use crate::error::BatchError;

/// First byte of every batch frame.
pub const MAGIC: u8 = 0xC1;
/// The only frame version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Flags bit 0: the body is one lz4 block.
pub const FLAG_LZ4: u8 = 0x01;
const HEADER_LEN: usize = 3;
/// LZ4 cannot expand a block by more than this (one 0xFF length byte adds
/// 255 bytes of match); a larger claimed length is a lie, not a reason to
/// allocate.
const LZ4_MAX_RATIO: usize = 255;
/// The largest body a compressed frame may hold. The encoder compresses no
/// larger body, so every frame it writes decodes; a claim above it is refused
/// before anything is allocated, which bounds what a few bytes of untrusted
/// input can make the decoder allocate (LZ4 alone allows 255 times the input).
pub const MAX_COMPRESSED_BODY: usize = 64 << 20;

/// How [`encode_batch_with`] writes a batch. Decoding needs none of this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    pub compression: Compression,
    /// Bodies smaller than this are never compressed.
    pub compress_min_bytes: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        let c = BatchConfig::default();
        EncodeOptions {
            compression: c.compression,
            compress_min_bytes: c.compress_min_bytes,
        }
    }
}

impl From<&BatchConfig> for EncodeOptions {
    fn from(c: &BatchConfig) -> Self {
        EncodeOptions {
            compression: c.compression,
            compress_min_bytes: c.compress_min_bytes,
        }
    }
}

fn corrupt(reason: impl Into<String>) -> BatchError {
    BatchError::CorruptBatch(reason.into())
}

/// Encodes without compression.
pub fn encode_batch<T: AsRef<[u8]>>(proposals: &[T]) -> Vec<u8> {
    encode_batch_with(proposals, &EncodeOptions::default())
}

/// Encodes `proposals` as one entry. With lz4 on, a body of at least
/// `compress_min_bytes` is compressed when that makes the entry smaller
/// (a large single proposal too, as a compressed frame of one).
pub fn encode_batch_with<T: AsRef<[u8]>>(proposals: &[T], opts: &EncodeOptions) -> Vec<u8> {
    let compress = |body_len: usize| {
        opts.compression == Compression::Lz4
            && body_len >= opts.compress_min_bytes
            && body_len <= MAX_COMPRESSED_BODY
    };

    if let [only] = proposals {
        let p = only.as_ref();
        if compress(p.len()) {
            let frame = write_frame(proposals);
            if let Some(c) = lz4_frame(&frame[HEADER_LEN..]).filter(|c| c.len() < p.len()) {
                return c;
            }
        }
        if !needs_frame(p) {
            return p.to_vec();
        }
        return write_frame(proposals);
    }

    let frame = write_frame(proposals);
    if compress(frame.len() - HEADER_LEN) {
        if let Some(c) = lz4_frame(&frame[HEADER_LEN..]).filter(|c| c.len() < frame.len()) {
            return c;
        }
    }
    frame
}

/// Could a raw single proposal be misread as a batch?
fn needs_frame(p: &[u8]) -> bool {
    p.first() == Some(&MAGIC) || p.starts_with(legacy::PREFIX)
}

/// The uncompressed frame, in exactly one allocation.
fn write_frame<T: AsRef<[u8]>>(proposals: &[T]) -> Vec<u8> {
    let body_len = proposals
        .iter()
        .fold(varint::len(proposals.len() as u64), |n, p| {
            let len = p.as_ref().len();
            n + varint::len(len as u64) + len
        });
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&[MAGIC, VERSION, 0]);
    varint::put(&mut out, proposals.len() as u64);
    for p in proposals {
        let p = p.as_ref();
        varint::put(&mut out, p.len() as u64);
        out.extend_from_slice(p);
    }
    debug_assert_eq!(out.len(), HEADER_LEN + body_len);
    out
}

/// A compressed frame holding `body`, or `None` if lz4 refused.
fn lz4_frame(body: &[u8]) -> Option<Vec<u8>> {
    let start = HEADER_LEN + varint::len(body.len() as u64);
    let mut out = Vec::with_capacity(start + lz4_flex::block::get_maximum_output_size(body.len()));
    out.extend_from_slice(&[MAGIC, VERSION, FLAG_LZ4]);
    varint::put(&mut out, body.len() as u64);
    out.resize(out.capacity(), 0);
    let n = lz4_flex::block::compress_into(body, &mut out[start..]).ok()?;
    out.truncate(start + n);
    Some(out)
}

/// True for batch frames (even malformed ones) and legacy Go batches: data
/// whose decoding is not simply the data itself.
pub fn is_batch_proposal(data: &[u8]) -> bool {
    data.first() == Some(&MAGIC) || legacy::is_batch(data)
}

/// Splits an entry into its proposals. Frames yield slices of `data`
/// (owned only when decompressed); legacy Go batches yield their strings'
/// bytes; anything else is one raw proposal. A malformed frame is
/// `CorruptBatch`, never a panic.
pub fn decode_batch(data: &[u8]) -> Result<Vec<Cow<'_, [u8]>>, BatchError> {
    if data.first() != Some(&MAGIC) {
        return Ok(legacy::decode(data).unwrap_or_else(|| vec![Cow::Borrowed(data)]));
    }
    match frame_body(data)? {
        Body::Plain(body) => {
            let (count, pos) = read_count(body)?;
            let mut out = Vec::with_capacity(count);
            walk(body, pos, count, |p| out.push(Cow::Borrowed(p)))?;
            Ok(out)
        }
        Body::Decompressed(body) => {
            let (count, pos) = read_count(&body)?;
            let mut out = Vec::with_capacity(count);
            walk(&body, pos, count, |p| out.push(Cow::Owned(p.to_vec())))?;
            Ok(out)
        }
    }
}

/// Calls `f` with each proposal of the entry, in order, without collecting
/// them; returns how many there were. The entry is fully validated before
/// the first call, so on `Err` `f` has not been called.
pub fn for_each_proposal(data: &[u8], mut f: impl FnMut(&[u8])) -> Result<usize, BatchError> {
    if data.first() != Some(&MAGIC) {
        return Ok(match legacy::decode(data) {
            Some(list) => {
                list.iter().for_each(|p| f(p));
                list.len()
            }
            None => {
                f(data);
                1
            }
        });
    }
    let body = frame_body(data)?;
    let body: &[u8] = match &body {
        Body::Plain(b) => b,
        Body::Decompressed(b) => b,
    };
    let (count, pos) = read_count(body)?;
    walk(body, pos, count, |_| {})?;
    walk(body, pos, count, f)?;
    Ok(count)
}

enum Body<'a> {
    Plain(&'a [u8]),
    Decompressed(Vec<u8>),
}

/// Checks the header of a frame and returns its (decompressed) body.
fn frame_body(data: &[u8]) -> Result<Body<'_>, BatchError> {
    let &[_, version, flags, ..] = data else {
        return Err(corrupt(format!("truncated header ({} bytes)", data.len())));
    };
    if version != VERSION {
        return Err(corrupt(format!("unknown frame version {version}")));
    }
    if flags & !FLAG_LZ4 != 0 {
        return Err(corrupt(format!("unknown flags {flags:#04x}")));
    }
    let rest = &data[HEADER_LEN..];
    if flags & FLAG_LZ4 == 0 {
        return Ok(Body::Plain(rest));
    }
    let mut pos = 0;
    let len = varint::read_usize(rest, &mut pos)?;
    let block = &rest[pos..];
    if len > MAX_COMPRESSED_BODY {
        return Err(corrupt(format!(
            "decompressed length {len} is above the {MAX_COMPRESSED_BODY} bytes a frame may hold"
        )));
    }
    if len > block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(64) {
        return Err(corrupt(format!(
            "decompressed length {len} is impossible for {} compressed bytes",
            block.len()
        )));
    }
    let mut body = vec![0; len];
    let n = lz4_flex::block::decompress_into(block, &mut body)
        .map_err(|e| corrupt(format!("bad lz4 block: {e}")))?;
    if n != len {
        return Err(corrupt(format!(
            "decompressed {n} bytes, header says {len}"
        )));
    }
    Ok(Body::Decompressed(body))
}

/// The proposal count and where the first proposal starts. Every proposal
/// takes at least its length byte, so a count beyond the remaining bytes is
/// rejected before anything is allocated for it.
fn read_count(body: &[u8]) -> Result<(usize, usize), BatchError> {
    let mut pos = 0;
    let count = varint::read_usize(body, &mut pos)?;
    let rest = body.len() - pos;
    if count > rest {
        return Err(corrupt(format!(
            "count {count} exceeds the {rest} bytes that follow"
        )));
    }
    Ok((count, pos))
}

fn walk<'a>(
    body: &'a [u8],
    mut pos: usize,
    count: usize,
    mut f: impl FnMut(&'a [u8]),
) -> Result<(), BatchError> {
    for i in 0..count {
        let len = varint::read_usize(body, &mut pos)
            .map_err(|e| corrupt(format!("proposal {i} of {count}: {}", reason(&e))))?;
        let Some(p) = body.get(pos..).and_then(|r| r.get(..len)) else {
            return Err(corrupt(format!(
                "proposal {i} of {count}: length {len} runs past the end ({} bytes left)",
                body.len() - pos
            )));
        };
        pos += len;
        f(p);
    }
    if pos != body.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after {count} proposals",
            body.len() - pos
        )));
    }
    Ok(())
}

fn reason(e: &BatchError) -> &str {
    match e {
        BatchError::CorruptBatch(r) => r,
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(encode_batch::<&[u8]>(&[]), vec![MAGIC, VERSION, 0, 0]);
        assert_eq!(
            encode_batch(&[b"ab", b"c".as_slice()].map(<[u8]>::to_vec)),
            vec![MAGIC, 1, 0, 2, 2, b'a', b'b', 1, b'c']
        );
        assert_eq!(encode_batch(&[b"raw"]), b"raw".to_vec());
        assert_eq!(encode_batch(&[[MAGIC]]), vec![MAGIC, 1, 0, 1, 1, MAGIC]);
    }

    #[test]
    fn decode_borrows_plain_frames() {
        let enc = encode_batch(&[b"x".as_slice(), b"yz"]);
        let dec = decode_batch(&enc).unwrap();
        assert!(dec.iter().all(|p| matches!(p, Cow::Borrowed(_))));
        assert_eq!(
            dec,
            vec![
                Cow::Borrowed(b"x".as_slice()),
                Cow::Borrowed(b"yz".as_slice())
            ]
        );
    }
}
