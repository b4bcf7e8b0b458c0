//! N-API glue for MetaStore. No logic lives here: each export converts JS
//! values, calls `metastore-batch` or `metastore-raft`, and maps errors to a
//! stable `code` once, in `error.rs`. Every export uses `catch_unwind` so a
//! Rust panic becomes a JS error instead of aborting the Node.js process.

mod batcher;
mod cluster;
mod codec;
mod config;
mod error;
mod stats;
