//! Integration tests of metastore-raft. One binary with a module per topic,
//! so a test build links RocksDB once instead of once per file.

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

#[macro_use]
mod common;

mod basic;
mod batching;
mod durability;
mod engine_failure;
mod errors;
mod failover;
mod grpc;
mod identity;
mod leadership;
mod membership;
mod order;
mod outcomes;
mod restart;
mod sessions;
mod snapshot;
mod tls;
