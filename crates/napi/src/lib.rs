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

/// Rust's allocations in the addon, on every thread that makes them: mimalloc
/// instead of the process's malloc (RocksDB's C++ keeps the latter). Measured
/// in docs/performance.md, "CRC32C and allocations".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
