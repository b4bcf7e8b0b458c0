//! `encodeBatch`, `decodeBatch`, `isBatchProposal`.

use napi::bindgen_prelude::{Buffer, Either, Uint8Array};
use napi::Result;
use napi_derive::napi;

use crate::error::from_batch;

/// Encodes proposals into one Raft entry payload (a single proposal is stored raw).
#[napi(catch_unwind)]
pub fn encode_batch(proposals: Vec<Either<Uint8Array, String>>) -> Buffer {
    let slices: Vec<&[u8]> = proposals
        .iter()
        .map(|p| match p {
            Either::A(bytes) => &bytes[..],
            Either::B(text) => text.as_bytes(),
        })
        .collect();
    metastore_batch::encode_batch(&slices).into()
}

/// Decodes an entry payload: a batch frame, a legacy JSON batch or a raw proposal.
#[napi(catch_unwind)]
pub fn decode_batch(data: Uint8Array) -> Result<Vec<Buffer>, String> {
    let proposals = metastore_batch::decode_batch(&data).map_err(from_batch)?;
    Ok(proposals
        .into_iter()
        .map(|p| Buffer::from(p.into_owned()))
        .collect())
}

/// True when `data` holds a batch (binary frame or legacy JSON batch).
#[napi(catch_unwind)]
pub fn is_batch_proposal(data: Uint8Array) -> bool {
    metastore_batch::is_batch_proposal(&data)
}
