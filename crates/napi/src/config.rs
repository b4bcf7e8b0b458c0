//! JS config objects (camelCase, durations in ms) -> core configs. The
//! TypeScript loader resolves defaults and units; the rules live in Rust
//! (`BatchConfig::validate`) and are exposed through `checkBatchConfig`.

use std::{path::PathBuf, time::Duration};

use metastore_batch::{BatchConfig, Compression};
use metastore_raft::{ClusterConfig, EngineKind, RaftSettings, StorageConfig};
use napi::Result;
use napi_derive::napi;

use crate::error::{invalid_config};

#[napi(object)]
#[derive(Clone)]
pub struct BatchOptions {
  pub enable: bool,
  pub min_batch_size: f64,
  pub max_batch_size: f64,
  pub min_timeout_ms: f64,
  pub max_timeout_ms: f64,
  pub load_threshold: f64,
  pub max_proposal_bytes: f64,
  pub queue_capacity: f64,
  /// `none` or `lz4`.
  pub compression: String,
  pub compress_min_bytes: f64,
}

#[napi(object)]
pub struct RaftOptions {
  pub tick_interval_ms: f64,
  pub election_tick: f64,
  pub heartbeat_tick: f64,
  pub max_size_per_msg: f64,
  pub max_inflight_msgs: f64,
  pub pre_vote: bool,
  pub check_quorum: bool,
  pub snapshot_count: f64,
  pub max_log_size: f64,
  pub proposal_timeout_ms: f64,
  pub batch: BatchOptions,
}

#[napi(object)]
pub struct StorageOptions {
  /// `memory` or `rocksdb`.
  pub engine: String,
  pub data_dir: String,
  pub sync: bool,
}

#[napi(object)]
pub struct ClusterOptions {
  pub nodes: u32,
  pub raft: RaftOptions,
  pub storage: StorageOptions,
}

/// A broken config rule: the snake_case key and the rule it breaks.
#[napi(object)]
pub struct ConfigViolation {
  pub key: String,
  pub rule: String,
}

fn count(key: &'static str, value: f64) -> std::result::Result<usize, ConfigViolation> {
  if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= u32::MAX as f64 {
    Ok(value as usize)
  } else {
    Err(ConfigViolation { key: key.into(), rule: format!("must be a non-negative integer, got {value}") })
  }
}

fn millis(key: &'static str, value: f64) -> std::result::Result<Duration, ConfigViolation> {
  if value.is_finite() && value >= 0.0 {
    Ok(Duration::from_secs_f64(value / 1000.0))
  } else {
    Err(ConfigViolation { key: key.into(), rule: format!("must be a non-negative duration, got {value} ms") })
  }
}

fn to_batch_config(o: &BatchOptions) -> std::result::Result<BatchConfig, ConfigViolation> {
  let compression = match o.compression.as_str() {
    "none" => Compression::None,
    "lz4" => Compression::Lz4,
    other => {
      return Err(ConfigViolation { key: "compression".into(), rule: format!("must be one of none, lz4, got '{other}'") })
    }
  };
  let config = BatchConfig {
    enable: o.enable,
    min_batch_size: count("min_batch_size", o.min_batch_size)?,
    max_batch_size: count("max_batch_size", o.max_batch_size)?,
    min_timeout: millis("min_timeout", o.min_timeout_ms)?,
    max_timeout: millis("max_timeout", o.max_timeout_ms)?,
    load_threshold: o.load_threshold,
    max_proposal_bytes: count("max_proposal_bytes", o.max_proposal_bytes)?,
    queue_capacity: count("queue_capacity", o.queue_capacity)?,
    compression,
    compress_min_bytes: count("compress_min_bytes", o.compress_min_bytes)?,
  };
  match config.validate() {
    Ok(()) => Ok(config),
    Err(metastore_batch::BatchError::InvalidConfig { key, rule }) => Err(ConfigViolation { key: key.into(), rule }),
    Err(other) => Err(ConfigViolation { key: "batch".into(), rule: other.to_string() }),
  }
}

/// Checks a batch config against the core's rules; `null` when valid.
#[napi(catch_unwind)]
pub fn check_batch_config(options: BatchOptions) -> Option<ConfigViolation> {
  to_batch_config(&options).err()
}

pub fn batch_config(options: &BatchOptions) -> Result<BatchConfig, String> {
  to_batch_config(options).map_err(|v| invalid_config(format!("server.raft.batch.{}: {}", v.key, v.rule)))
}

fn raft_settings(o: &RaftOptions) -> std::result::Result<RaftSettings, ConfigViolation> {
  Ok(RaftSettings {
    tick_interval: millis("tick_interval", o.tick_interval_ms)?,
    election_tick: count("election_tick", o.election_tick)?,
    heartbeat_tick: count("heartbeat_tick", o.heartbeat_tick)?,
    max_size_per_msg: count("max_size_per_msg", o.max_size_per_msg)? as u64,
    max_inflight_msgs: count("max_inflight_msgs", o.max_inflight_msgs)?,
    pre_vote: o.pre_vote,
    check_quorum: o.check_quorum,
    snapshot_count: count("snapshot_count", o.snapshot_count)? as u64,
    max_log_size: count("max_log_size", o.max_log_size)? as u64,
    proposal_timeout: millis("proposal_timeout", o.proposal_timeout_ms)?,
  })
}

pub fn cluster_config(o: &ClusterOptions) -> Result<ClusterConfig, String> {
  let raft = raft_settings(&o.raft).map_err(|v| invalid_config(format!("server.raft.{}: {}", v.key, v.rule)))?;
  let batch = batch_config(&o.raft.batch)?;
  let engine = match o.storage.engine.as_str() {
    "memory" => EngineKind::Memory,
    "rocksdb" => EngineKind::RocksDb,
    other => return Err(invalid_config(format!("server.storage.engine: must be one of memory, rocksdb, got '{other}'"))),
  };
  if o.nodes == 0 {
    return Err(invalid_config("nodes: must be at least 1"));
  }
  Ok(ClusterConfig {
    nodes: o.nodes as usize,
    raft,
    batch,
    storage: StorageConfig { engine, data_dir: PathBuf::from(&o.storage.data_dir), sync: o.storage.sync },
  })
}
