//! Adaptive batch proposals for MetaStore: many client proposals travel as
//! one Raft entry.
//!
//! - [`config`]: `server.raft.batch` settings and their rules.
//! - [`policy`]: the batch policy, a pure state machine (load EMA, batch
//!   size, timeout, flush triggers) driven with an injectable clock.
//! - [`codec`]: the binary batch frame, plus the Go MetaStore's legacy JSON.
//! - [`batcher`]: the thread that drives the policy and hands batches to a sink.
//! - [`stats`]: counters and latency percentiles of the loop.
//!
//! No Raft, no N-API and no I/O here.

pub mod batcher;
pub mod codec;
pub mod config;
pub mod error;
pub mod policy;
pub mod stats;

pub use batcher::{BatchSink, BatcherHandle, ProposalBatcher};
pub use codec::{
    decode_batch, encode_batch, encode_batch_with, for_each_proposal, is_batch_proposal,
    EncodeOptions,
};
pub use config::{BatchConfig, Compression};
pub use error::{BatchError, ErrorCode, ErrorOutcome};
pub use policy::{BatchPolicy, Clock, Flush, FlushReason, SystemClock};
pub use stats::{BatchStats, LatencySummary};
