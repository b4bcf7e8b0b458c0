//! A whole Raft group in one process: nodes `1..=n` connected by the
//! in-process transport, with stop/restart and link faults for tests. A
//! single-node `MetaStore` is a `LocalCluster` of one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, EngineKind};
use crate::error::{Error, Result};
use crate::node::{CompletionSink, RaftNode};
use crate::stats::Role;
use crate::transport::LocalRouter;

/// Makes the completion sink of node `id`; called again on each restart.
pub type SinkFactory = Arc<dyn Fn(u64) -> CompletionSink + Send + Sync>;

pub struct LocalCluster {
    cfg: ClusterConfig,
    router: Arc<LocalRouter>,
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
        let cluster = LocalCluster {
            cfg,
            router: LocalRouter::new(),
            sinks: sink,
            nodes: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
        };
        for id in cluster.ids() {
            if let Err(e) = cluster.start_node(id) {
                let _ = cluster.close();
                return Err(e);
            }
        }
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    fn nodes(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<RaftNode>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_node(&self, id: u64) -> Result<()> {
        let inbox = self.router.register(id);
        match RaftNode::start(
            self.cfg.node_config(id),
            self.router.transport(id),
            inbox,
            (self.sinks)(id),
        ) {
            Ok(node) => {
                self.nodes().insert(id, Arc::new(node));
                Ok(())
            }
            Err(e) => {
                self.router.unregister(id);
                Err(e)
            }
        }
    }

    fn check_id(&self, id: u64) -> Result<()> {
        if id == 0 || id > self.cfg.nodes as u64 {
            return Err(Error::invalid(
                "id",
                format!("node {id} is not in this cluster (1..={})", self.cfg.nodes),
            ));
        }
        Ok(())
    }

    /// The running node `id`; `None` when stopped or unknown.
    pub fn node(&self, id: u64) -> Option<Arc<RaftNode>> {
        self.nodes().get(&id).cloned()
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
        self.router.unregister(id);
        if let Some(node) = node {
            node.close();
        }
        Ok(())
    }

    /// (Re)starts node `id`, stopping it first if it runs. On RocksDB it
    /// reopens the same directory; on memory it starts empty and catches up.
    pub fn restart(&self, id: u64) -> Result<()> {
        self.stop(id)?;
        if self.cfg.storage.engine == EngineKind::Memory {
            // The leader still believes the node holds the entries it acked;
            // it must probe it from scratch (see `Inbound::PeerLostState`).
            self.router.announce_lost_state(id);
        }
        self.start_node(id)
    }

    /// Drops all messages between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.router.cut(a, b);
    }

    pub fn heal(&self, a: u64, b: u64) {
        self.router.heal(a, b);
    }

    /// Cuts every link of `id`.
    pub fn isolate(&self, id: u64) {
        self.router.isolate(id, &self.ids());
    }

    pub fn heal_all(&self) {
        self.router.heal_all();
    }

    /// Stops every node. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let nodes = std::mem::take(&mut *self.nodes());
        for id in nodes.keys() {
            self.router.unregister(*id);
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
