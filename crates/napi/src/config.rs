//! JS config objects (camelCase, durations in ms, sizes in bytes) to core
//! configs, and the core's defaults back to JS. The core owns both the
//! defaults (its `Default` impls, handed to the TypeScript loader by
//! `defaultServerOptions`) and the rules (its `validate` methods); this file
//! converts units and prefixes each broken rule with its key path.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::{path::PathBuf, time::Duration};

use metastore_batch::{BatchConfig, BatchError};
use metastore_raft::config::TransportKind;
use metastore_raft::member::DEFAULT_CLUSTER_TOKEN;
use metastore_raft::{
    ClusterConfig, EngineKind, MemberConfig, NodeConfig, RaftSettings, StorageConfig, TlsFiles,
};
use napi::Result;
use napi_derive::napi;

use crate::error::{from_raft, invalid_config};

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
    pub request_timeout_ms: f64,
    /// A learner is promoted only when at most this many entries behind the
    /// leader's commit index.
    pub promote_max_lag: f64,
    pub batch: BatchOptions,
}

#[napi(object)]
pub struct StorageOptions {
    /// `memory` or `rocksdb`.
    pub engine: String,
    pub data_dir: String,
    pub sync: bool,
}

/// The `server` section of a config file, in the units of the options objects.
#[napi(object)]
pub struct ServerOptions {
    pub raft: RaftOptions,
    pub storage: StorageOptions,
}

#[napi(object)]
pub struct ClusterOptions {
    pub nodes: u32,
    pub raft: RaftOptions,
    pub storage: StorageOptions,
    /// How the nodes reach each other (default: in-process channels).
    pub transport: Option<Transport>,
}

/// The transport of a `LocalCluster`.
#[napi(string_enum = "lowercase")]
pub enum Transport {
    /// In-process channels.
    Local,
    /// gRPC over loopback sockets, as between hosts.
    Grpc,
}

/// PEM files of mutual TLS between members (paths as given, relative to the
/// working directory).
#[napi(object)]
pub struct TlsOptions {
    /// This node's certificate (chain), signed by the CA.
    pub cert_file: String,
    /// Its private key.
    pub key_file: String,
    /// The CA certificate that signs every member's.
    pub ca_file: String,
}

/// One member of a group whose nodes run in separate processes or hosts.
#[napi(object)]
pub struct MemberOptions {
    pub node_id: u32,
    /// `host:port` to listen on for the other members (default: this
    /// node's address in `initial_cluster`).
    pub listen: Option<String>,
    /// Every initial member: node id (decimal) to the `host:port` the
    /// others dial it at.
    pub initial_cluster: HashMap<String, String>,
    /// Tells groups with the same members apart (part of the cluster id;
    /// default `metastore`).
    pub cluster_token: Option<String>,
    /// The `host:port` the others dial this node at; must be its address in
    /// `initial_cluster`.
    pub advertise: Option<String>,
    /// Mutual TLS between members.
    pub tls: Option<TlsOptions>,
    /// Start empty and wait to be added to a running group (needs
    /// `advertise`; `initial_cluster` may be empty). Ignored once the data
    /// dir holds this node's state.
    pub join: Option<bool>,
    pub raft: RaftOptions,
    pub storage: StorageOptions,
}

/// The core's defaults: every key a config file leaves out takes its value
/// from here.
#[napi(catch_unwind)]
pub fn default_server_options() -> ServerOptions {
    // Destructured in full, so a setting added to the core does not compile
    // here until it is handed to JS too.
    let RaftSettings {
        tick_interval,
        election_tick,
        heartbeat_tick,
        max_size_per_msg,
        max_inflight_msgs,
        pre_vote,
        check_quorum,
        snapshot_count,
        max_log_size,
        proposal_timeout,
        request_timeout,
        promote_max_lag,
    } = RaftSettings::default();
    let BatchConfig {
        enable,
        min_batch_size,
        max_batch_size,
        min_timeout,
        max_timeout,
        load_threshold,
        max_proposal_bytes,
        queue_capacity,
        compression,
        compress_min_bytes,
    } = BatchConfig::default();
    let StorageConfig {
        engine,
        data_dir,
        sync,
    } = StorageConfig::default();
    ServerOptions {
        raft: RaftOptions {
            tick_interval_ms: to_millis(tick_interval),
            election_tick: election_tick as f64,
            heartbeat_tick: heartbeat_tick as f64,
            max_size_per_msg: max_size_per_msg as f64,
            max_inflight_msgs: max_inflight_msgs as f64,
            pre_vote,
            check_quorum,
            snapshot_count: snapshot_count as f64,
            max_log_size: max_log_size as f64,
            proposal_timeout_ms: to_millis(proposal_timeout),
            request_timeout_ms: to_millis(request_timeout),
            promote_max_lag: promote_max_lag as f64,
            batch: BatchOptions {
                enable,
                min_batch_size: min_batch_size as f64,
                max_batch_size: max_batch_size as f64,
                min_timeout_ms: to_millis(min_timeout),
                max_timeout_ms: to_millis(max_timeout),
                load_threshold,
                max_proposal_bytes: max_proposal_bytes as f64,
                queue_capacity: queue_capacity as f64,
                compression: compression.as_str().into(),
                compress_min_bytes: compress_min_bytes as f64,
            },
        },
        storage: StorageOptions {
            engine: engine.as_str().into(),
            data_dir: data_dir.to_string_lossy().into_owned(),
            sync,
        },
    }
}

/// A broken rule: the key (relative to its section) and the rule.
struct Violation {
    key: &'static str,
    rule: String,
}

fn to_millis(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn count(key: &'static str, value: f64) -> std::result::Result<usize, Violation> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= u32::MAX as f64 {
        Ok(value as usize)
    } else {
        Err(Violation {
            key,
            rule: format!("must be a non-negative integer, got {value}"),
        })
    }
}

fn millis(key: &'static str, value: f64) -> std::result::Result<Duration, Violation> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value / 1000.0))
    } else {
        Err(Violation {
            key,
            rule: format!("must be a non-negative duration, got {value} ms"),
        })
    }
}

fn to_batch_config(o: &BatchOptions) -> std::result::Result<BatchConfig, Violation> {
    let violation = |err: BatchError| match err {
        BatchError::InvalidConfig { key, rule } => Violation { key, rule },
        other => Violation {
            key: "batch",
            rule: other.to_string(),
        },
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
        compression: o.compression.parse().map_err(violation)?,
        compress_min_bytes: count("compress_min_bytes", o.compress_min_bytes)?,
    };
    config.validate().map_err(violation)?;
    Ok(config)
}

pub fn batch_config(options: &BatchOptions) -> Result<BatchConfig, String> {
    to_batch_config(options)
        .map_err(|v| invalid_config(format!("server.raft.batch.{}: {}", v.key, v.rule)))
}

fn raft_settings(o: &RaftOptions) -> std::result::Result<RaftSettings, Violation> {
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
        request_timeout: millis("request_timeout", o.request_timeout_ms)?,
        promote_max_lag: count("promote_max_lag", o.promote_max_lag)? as u64,
    })
}

/// Converts the raft and storage options (units and key paths).
fn node_parts(
    raft: &RaftOptions,
    storage: &StorageOptions,
) -> Result<(RaftSettings, BatchConfig, StorageConfig), String> {
    let settings = raft_settings(raft)
        .map_err(|v| invalid_config(format!("server.raft.{}: {}", v.key, v.rule)))?;
    let batch = batch_config(&raft.batch)?;
    let engine: EngineKind = storage.engine.parse().map_err(|err| match err {
        metastore_raft::Error::InvalidConfig { key, rule } => {
            invalid_config(format!("server.{key}: {rule}"))
        }
        other => from_raft(other),
    })?;
    let storage = StorageConfig {
        engine,
        data_dir: PathBuf::from(&storage.data_dir),
        sync: storage.sync,
    };
    Ok((settings, batch, storage))
}

/// Converts the options; the rules are checked when the cluster starts
/// (`ClusterConfig::validate`), the batch rules already here so that they
/// name their key the same way for a cluster and a lone batcher.
pub fn cluster_config(o: &ClusterOptions) -> Result<ClusterConfig, String> {
    let (raft, batch, storage) = node_parts(&o.raft, &o.storage)?;
    Ok(ClusterConfig {
        nodes: o.nodes as usize,
        raft,
        batch,
        storage,
        transport: match o.transport {
            None | Some(Transport::Local) => TransportKind::Local,
            Some(Transport::Grpc) => TransportKind::Grpc,
        },
    })
}

/// Converts a member's options; the member rules are checked when it starts
/// (`MemberConfig::validate`).
pub fn member_config(o: &MemberOptions) -> Result<MemberConfig, String> {
    let (raft, batch, storage) = node_parts(&o.raft, &o.storage)?;
    let listen = o
        .listen
        .as_ref()
        .or_else(|| o.initial_cluster.get(&o.node_id.to_string()))
        .or(o.advertise.as_ref())
        .cloned()
        .unwrap_or_default();
    let listen = listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid_config(format!(
                "server.cluster.listen: '{listen}' is not an address to listen on (host:port)"
            ))
        })?;
    let mut initial_cluster = BTreeMap::new();
    for (id, address) in &o.initial_cluster {
        let id = id.parse::<u64>().map_err(|_| {
            invalid_config(format!(
                "server.cluster.initial_cluster: '{id}' is not a node id (a positive integer)"
            ))
        })?;
        initial_cluster.insert(id, address.clone());
    }
    Ok(MemberConfig {
        node: NodeConfig {
            id: u64::from(o.node_id),
            peers: Vec::new(),
            raft,
            batch,
            storage,
        },
        listen,
        initial_cluster,
        cluster_token: o
            .cluster_token
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_TOKEN.to_string()),
        advertise: o.advertise.clone(),
        tls: o.tls.as_ref().map(|t| TlsFiles {
            cert_file: PathBuf::from(&t.cert_file),
            key_file: PathBuf::from(&t.key_file),
            ca_file: PathBuf::from(&t.ca_file),
        }),
        join: o.join.unwrap_or(false),
    })
}
