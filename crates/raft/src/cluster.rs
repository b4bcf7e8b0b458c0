//! A whole Raft group in one process: nodes `1..=n` connected by the
//! in-process transport, with stop/restart and link faults for tests. A
//! single-node `MetaStore` is a `LocalCluster` of one.
//!
//! On RocksDB the node dirs decide whether the group is new or restarts:
//! all empty, a new group with a new cluster id; all holding state of the
//! same cluster, that cluster again. Anything else (a dir of another group,
//! an empty dir beside members with state) is refused before any node
//! starts (see [`crate::identity`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bell::{self, Inbox};
use crate::config::{ClusterConfig, EngineKind, TransportKind};
use crate::error::{Error, Result};
use crate::identity::{self, Bootstrap, ClusterId, Identity};
use crate::node::{CompletionSink, RaftNode};
use crate::stats::Role;
use crate::storage::RocksEngine;
use crate::transport::{GrpcNet, LocalRouter, NetConfig, NetStats, Transport};

/// Makes the completion sink of node `id`; called again on each restart.
pub type SinkFactory = Arc<dyn Fn(u64) -> CompletionSink + Send + Sync>;

/// How the nodes reach each other (see [`TransportKind`]).
enum Network {
    Local(Arc<LocalRouter>),
    /// One listening end per node, on a loopback port; it outlives the
    /// node's restarts, like a host's address.
    Grpc(BTreeMap<u64, GrpcNet>),
}

pub struct LocalCluster {
    cfg: ClusterConfig,
    cluster_id: ClusterId,
    network: Network,
    sinks: SinkFactory,
    /// Running nodes only.
    nodes: Mutex<BTreeMap<u64, Arc<RaftNode>>>,
    closed: AtomicBool,
}

impl LocalCluster {
    /// Starts nodes `1..=cfg.nodes`. On error, the nodes already started are
    /// closed again.
    pub fn start(cfg: ClusterConfig, sink: SinkFactory) -> Result<LocalCluster> {
        cfg.validate()?;
        let (cluster_id, bootstrap) = match cfg.storage.engine {
            EngineKind::Memory => (ClusterId::random(), Bootstrap::New),
            EngineKind::RocksDb => Self::find_cluster(&cfg)?,
        };
        let network = match cfg.transport {
            TransportKind::Local => Network::Local(LocalRouter::new()),
            TransportKind::Grpc => Network::Grpc(Self::loopback_nets(&cfg, cluster_id)?),
        };
        let cluster = LocalCluster {
            cluster_id,
            cfg,
            network,
            sinks: sink,
            nodes: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
        };
        for id in cluster.ids() {
            if let Err(e) = cluster.start_node(id, bootstrap) {
                let _ = cluster.close();
                return Err(e);
            }
        }
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// Reads the identities in the node dirs: a new group if all are empty,
    /// the stored cluster if all hold the same one; anything else is refused.
    fn find_cluster(cfg: &ClusterConfig) -> Result<(ClusterId, Bootstrap)> {
        let ids: Vec<u64> = (1..=cfg.nodes as u64).collect();
        let mut found: Vec<(u64, Option<Identity>)> = Vec::with_capacity(ids.len());
        for &id in &ids {
            found.push((id, RocksEngine::stored_identity(&cfg.storage.node_dir(id))?));
        }
        let Some(first) = found.iter().find_map(|(_, i)| i.clone()) else {
            return Ok((ClusterId::random(), Bootstrap::New));
        };
        for (id, stored) in &found {
            let asked = Identity::new(first.cluster_id, *id, &ids);
            let dir = cfg.storage.node_dir(*id);
            match stored {
                Some(s) => identity::check(&dir, s, &asked)?,
                None => {
                    return Err(identity::mismatch(
                        &dir,
                        format!(
                            "nothing, while the other node dirs hold cluster {} (a member \
                             whose state is gone must not rejoin under its id)",
                            first.cluster_id
                        ),
                        &asked,
                    ))
                }
            }
        }
        Ok((first.cluster_id, Bootstrap::Existing))
    }

    /// A gRPC end per node on a free loopback port, each knowing the others.
    fn loopback_nets(cfg: &ClusterConfig, cluster_id: ClusterId) -> Result<BTreeMap<u64, GrpcNet>> {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut nets = BTreeMap::new();
        for id in 1..=cfg.nodes as u64 {
            nets.insert(
                id,
                GrpcNet::start(NetConfig::new(id, cluster_id, loopback))?,
            );
        }
        let addresses: Vec<(u64, String)> = nets
            .iter()
            .map(|(id, net)| (*id, net.local_addr().to_string()))
            .collect();
        for (id, net) in &nets {
            for (peer, address) in &addresses {
                if peer != id {
                    net.set_peer(*peer, address.clone());
                }
            }
        }
        Ok(nets)
    }

    /// Connects node `id` to the network: its mailbox and its transport.
    fn attach(&self, id: u64) -> Result<(Inbox, Arc<dyn Transport>)> {
        match &self.network {
            Network::Local(router) => Ok((router.register(id), router.transport(id))),
            Network::Grpc(nets) => {
                let net = nets
                    .get(&id)
                    .ok_or_else(|| Error::Internal(format!("node {id} has no network end")))?;
                let (tx, inbox) = bell::inbox();
                net.attach(tx);
                Ok((inbox, net.transport()))
            }
        }
    }

    fn detach(&self, id: u64) {
        match &self.network {
            Network::Local(router) => router.unregister(id),
            Network::Grpc(nets) => {
                if let Some(net) = nets.get(&id) {
                    net.detach();
                }
            }
        }
    }

    /// What node `id`'s network end counted (gRPC only).
    pub fn net_stats(&self, id: u64) -> Option<NetStats> {
        match &self.network {
            Network::Local(_) => None,
            Network::Grpc(nets) => nets.get(&id).map(GrpcNet::stats),
        }
    }

    /// The loopback address node `id` listens on for peers (gRPC only).
    pub fn peer_address(&self, id: u64) -> Option<std::net::SocketAddr> {
        match &self.network {
            Network::Local(_) => None,
            Network::Grpc(nets) => nets.get(&id).map(GrpcNet::local_addr),
        }
    }

    fn nodes(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<RaftNode>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_node(&self, id: u64, bootstrap: Bootstrap) -> Result<()> {
        let identity = Identity::new(self.cluster_id, id, &self.ids());
        let (inbox, transport) = self.attach(id)?;
        match RaftNode::start(
            self.cfg.node_config(id),
            &identity,
            bootstrap,
            None,
            transport,
            inbox,
            (self.sinks)(id),
        ) {
            Ok(node) => {
                self.nodes().insert(id, Arc::new(node));
                Ok(())
            }
            Err(e) => {
                self.detach(id);
                Err(e)
            }
        }
    }

    fn check_id(&self, id: u64) -> Result<()> {
        if id == 0 || id > self.cfg.nodes as u64 {
            return Err(Error::UnknownNode {
                id,
                nodes: self.cfg.nodes as u64,
            });
        }
        Ok(())
    }

    /// The running node `id`; `None` when stopped or unknown.
    pub fn node(&self, id: u64) -> Option<Arc<RaftNode>> {
        self.nodes().get(&id).cloned()
    }

    /// The running node `id`: `UnknownNode` if it is no member, `Closed` if
    /// it is stopped or the cluster closed.
    pub fn running_node(&self, id: u64) -> Result<Arc<RaftNode>> {
        self.check_id(id)?;
        self.node(id).ok_or(Error::Closed)
    }

    /// Every member id, running or not.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.cfg.nodes as u64).collect()
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes().keys().copied().collect()
    }

    /// The node that believes it leads with the highest term (a deposed
    /// leader cut off from the group may not know yet).
    pub fn leader(&self) -> Option<u64> {
        self.nodes()
            .values()
            .map(|n| n.raft_stats())
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    pub fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops node `id`; its pending requests reject with ERR_CLOSED. A no-op
    /// for a node already stopped.
    pub fn stop(&self, id: u64) -> Result<()> {
        self.check_id(id)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let node = self.nodes().remove(&id);
        self.detach(id);
        if let Some(node) = node {
            node.close();
        }
        Ok(())
    }

    /// (Re)starts node `id`, stopping it first if it runs. On RocksDB it
    /// reopens the same directory, which must still hold the node's state.
    /// A memory node of a multi-node group cannot restart: its state is gone,
    /// and under its old id it could vote twice in a term or help elect a
    /// leader without writes the group acknowledged (`Error::StateLost`).
    /// A one-node memory group restarts empty.
    pub fn restart(&self, id: u64) -> Result<()> {
        self.check_id(id)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.cfg.storage.engine == EngineKind::Memory && self.cfg.nodes > 1 {
            return Err(Error::StateLost(format!(
                "node {id} of a {}-node group on the memory engine lost its state when it \
                 stopped, and cannot rejoin under its id (use the rocksdb engine for nodes \
                 that restart)",
                self.cfg.nodes
            )));
        }
        self.stop(id)?;
        self.start_node(id, Bootstrap::Existing)
    }

    /// Drops all messages between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.set_cut(a, b, true);
    }

    pub fn heal(&self, a: u64, b: u64) {
        self.set_cut(a, b, false);
    }

    fn set_cut(&self, a: u64, b: u64, cut: bool) {
        match &self.network {
            Network::Local(router) if cut => router.cut(a, b),
            Network::Local(router) => router.heal(a, b),
            Network::Grpc(nets) => {
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(net) = nets.get(&x) {
                        net.block(y, cut);
                    }
                }
            }
        }
    }

    /// Holds what `from` sends to `to` until [`release`](Self::release)
    /// (the local transport only).
    pub fn hold(&self, from: u64, to: u64) -> Result<()> {
        self.local_router("hold")?.hold(from, to);
        Ok(())
    }

    /// Delivers, in order, what `from` sent to `to` while held.
    pub fn release(&self, from: u64, to: u64) -> Result<()> {
        self.local_router("release")?.release(from, to);
        Ok(())
    }

    fn local_router(&self, what: &str) -> Result<&LocalRouter> {
        match &self.network {
            Network::Local(router) => Ok(router),
            Network::Grpc(_) => Err(Error::invalid(
                "transport",
                format!("{what} needs the local transport"),
            )),
        }
    }

    /// Cuts every link of `id`.
    pub fn isolate(&self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    pub fn heal_all(&self) {
        match &self.network {
            Network::Local(router) => router.heal_all(),
            Network::Grpc(_) => {
                for a in self.ids() {
                    for b in self.ids() {
                        if a < b {
                            self.heal(a, b);
                        }
                    }
                }
            }
        }
    }

    /// Stops every node. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let nodes = std::mem::take(&mut *self.nodes());
        for id in nodes.keys() {
            self.detach(*id);
        }
        for node in nodes.values() {
            node.close();
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
