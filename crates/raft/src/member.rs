//! One node of a group whose members run in separate processes or hosts,
//! embedded in this process and reaching its peers over gRPC.
//!
//! Every member is started with the same initial cluster (node ids and the
//! addresses the others dial them at) and cluster token. A member whose data
//! dir is empty bootstraps; its cluster id is derived from the token and the
//! initial member ids, so all members of one group agree on it without
//! talking, and a node of another group (another token or member ids) is
//! refused at the handshake. A member whose data dir holds state must hold this
//! cluster's and this node's (see [`crate::identity`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::bell;
use crate::config::{EngineKind, NodeConfig};
use crate::error::{Error, Result};
use crate::identity::{self, Bootstrap, ClusterId, Identity};
use crate::incarnation::{self, PeerIncarnations};
use crate::membership::{check_address, Membership};
use crate::node::{CompletionSink, RaftNode};
use crate::storage::RocksEngine;
use crate::transport::{GrpcNet, NetConfig, NetStats, TlsPem};

/// The cluster token of a group that names none.
pub const DEFAULT_CLUSTER_TOKEN: &str = "metastore";

#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// This node; `node.peers` is set from `initial_cluster`.
    pub node: NodeConfig,
    /// Where to listen for peers.
    pub listen: SocketAddr,
    /// Every initial member: id and the `host:port` the others dial it at.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Tells groups with the same members apart.
    pub cluster_token: String,
    /// The address the others dial this node at, when given; it must be
    /// this node's `initial_cluster` address.
    pub advertise: Option<String>,
    /// Mutual TLS between members, when given.
    pub tls: Option<TlsFiles>,
    /// Start empty and wait to be added to a running group
    /// (`addMember` on one of its nodes): the node gets the group's
    /// identity, members and state from the leader's first snapshot. Needs
    /// `advertise` (`initial_cluster` may be left empty). Ignored once the
    /// data dir holds the node's state.
    pub join: bool,
}

/// The PEM files of mutual TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate (chain), signed by the CA.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA that signs every member's certificate.
    pub ca_file: PathBuf,
}

impl TlsFiles {
    fn read(&self) -> Result<TlsPem> {
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::invalid(
                    format!("cluster.tls.{key}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        Ok(TlsPem {
            cert: read("cert_file", &self.cert_file)?,
            key: read("key_file", &self.key_file)?,
            ca: read("ca_file", &self.ca_file)?,
        })
    }
}

impl MemberConfig {
    pub fn validate(&self) -> Result<()> {
        let id = self.node.id;
        if self.join {
            let advertise = self.advertise.as_deref().ok_or_else(|| {
                Error::invalid(
                    "cluster.advertise",
                    "a joining node must say where the group dials it",
                )
            })?;
            check_address(advertise).map_err(|rule| Error::invalid("cluster.advertise", rule))?;
            if self.node.storage.engine == EngineKind::Memory {
                return Err(Error::invalid(
                    "storage.engine",
                    "a joining node must keep its state across restarts (rocksdb)",
                ));
            }
            return Ok(());
        }
        if !self.initial_cluster.contains_key(&id) {
            return Err(Error::invalid(
                "cluster.initial_cluster",
                format!(
                    "does not name this node ({id}); it names {:?}",
                    self.initial_cluster.keys().collect::<Vec<_>>()
                ),
            ));
        }
        let mut seen = BTreeMap::new();
        for (member, address) in &self.initial_cluster {
            if *member == 0 {
                return Err(Error::invalid(
                    "cluster.initial_cluster",
                    "node ids must be >= 1",
                ));
            }
            check_address(address).map_err(|rule| {
                Error::invalid(format!("cluster.initial_cluster.{member}"), rule)
            })?;
            if let Some(other) = seen.insert(address.as_str(), member) {
                return Err(Error::invalid(
                    format!("cluster.initial_cluster.{member}"),
                    format!("address {address} is also node {other}'s"),
                ));
            }
        }
        if let Some(advertise) = &self.advertise {
            let own = &self.initial_cluster[&id];
            if advertise != own {
                return Err(Error::invalid(
                    "cluster.advertise",
                    format!(
                        "'{advertise}' is not this node's address in initial_cluster ('{own}'): \
                         the others dial what initial_cluster says"
                    ),
                ));
            }
        }
        if self.node.storage.engine == EngineKind::Memory && self.initial_cluster.len() > 1 {
            return Err(Error::invalid(
                "storage.engine",
                "a member of a multi-node group must keep its state across restarts (rocksdb): \
                 a memory node would restart empty under its old id",
            ));
        }
        Ok(())
    }

    /// Checks the state a data dir holds against this configuration: it
    /// must be this node's, and, when `initial_cluster` names the voters the
    /// group was bootstrapped with, of the group this token names. An
    /// `initial_cluster` that differs from the group's membership record is
    /// ignored (the record is the group's own, kept up to date by its
    /// changes), with a line on stderr.
    fn check_stored(
        &self,
        dir: &std::path::Path,
        stored: &Identity,
        membership: Option<&Membership>,
    ) -> Result<()> {
        let id = self.node.id;
        let asked = if self.join {
            Identity::new(stored.cluster_id, id, &stored.initial_voters)
        } else {
            Identity::new(self.derived_cluster_id(), id, &self.node.peers)
        };
        let same_voters = asked.initial_voters == stored.initial_voters;
        if stored.node_id != id || (same_voters && asked.cluster_id != stored.cluster_id) {
            return Err(identity::mismatch(dir, stored.to_string(), &asked));
        }
        if let Some(m) = membership {
            if !self.join && m.members != self.initial_cluster {
                eprintln!(
                    "metastore: node {id}: ignoring cluster.initial_cluster {:?}: the group's \
                     membership record says {:?}",
                    self.initial_cluster, m.members
                );
            }
        }
        Ok(())
    }

    /// The cluster id a new group with these member ids and token gets.
    /// Addresses are left out: each member may reach the others by its own
    /// routes (a proxy, a NAT), as long as the ids agree.
    pub fn derived_cluster_id(&self) -> ClusterId {
        let mut text = format!("metastore-cluster/{}", self.cluster_token);
        for id in self.initial_cluster.keys() {
            text.push_str(&format!("/{id}"));
        }
        ClusterId(fnv1a_128(text.as_bytes()))
    }
}

/// FNV-1a, 128 bits: a stable hash, the same in every process and version.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// A running member: its node and its network end.
pub struct Member {
    node: Arc<RaftNode>,
    /// Taken by `close`.
    net: Mutex<Option<GrpcNet>>,
    local_addr: SocketAddr,
    cluster_id: ClusterId,
}

impl Member {
    pub fn start(mut cfg: MemberConfig, sink: CompletionSink) -> Result<Member> {
        cfg.validate()?;
        let id = cfg.node.id;
        cfg.node.peers = if cfg.join {
            vec![id]
        } else {
            cfg.initial_cluster.keys().copied().collect()
        };
        cfg.node.validate()?;
        let dir = cfg.node.storage.node_dir(id);
        // What the data dir holds decides over the configuration.
        let stored = match cfg.node.storage.engine {
            EngineKind::Memory => None,
            EngineKind::RocksDb => RocksEngine::stored_state(&dir)?,
        };
        let (identity, bootstrap, membership) = match stored {
            Some((stored, membership)) => {
                cfg.check_stored(&dir, &stored, membership.as_ref())?;
                let initial = (!stored.initial_voters.is_empty())
                    .then(|| Membership::initial(stored.cluster_id, cfg.initial_cluster.clone()));
                (stored, Bootstrap::Existing, membership.or(initial))
            }
            None if cfg.join => (Identity::new(ClusterId(0), id, &[]), Bootstrap::Join, None),
            None => {
                let cluster_id = cfg.derived_cluster_id();
                let m = Membership::initial(cluster_id, cfg.initial_cluster.clone());
                (
                    Identity::new(cluster_id, id, &cfg.node.peers),
                    Bootstrap::New,
                    Some(m),
                )
            }
        };
        let mut net_cfg = NetConfig::new(id, identity.cluster_id, cfg.listen);
        match cfg.node.storage.engine {
            EngineKind::Memory => net_cfg.incarnation = incarnation::random(),
            EngineKind::RocksDb => {
                net_cfg.incarnation = incarnation::load_or_create(&dir)?;
                net_cfg.peer_incarnations = Arc::new(PeerIncarnations::load(&dir)?);
            }
        }
        if bootstrap == Bootstrap::Join {
            net_cfg.cluster_id = None;
        }
        net_cfg.advertise = cfg
            .advertise
            .clone()
            .or_else(|| cfg.initial_cluster.get(&id).cloned())
            .unwrap_or_default();
        net_cfg.tls = cfg.tls.as_ref().map(TlsFiles::read).transpose()?;
        // This node's own routes to the initial members win over the
        // addresses a snapshot brought (another node's routes).
        net_cfg.routes = cfg
            .initial_cluster
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, address)| (*peer, address.clone()))
            .collect();
        net_cfg.peers = membership
            .as_ref()
            .map(|m| m.members.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(peer, _)| *peer != id)
            .map(|(peer, address)| {
                let route = net_cfg.routes.get(&peer).cloned();
                (peer, route.unwrap_or(address))
            })
            .collect();
        let net = GrpcNet::start(net_cfg)?;
        let (tx, inbox) = bell::inbox();
        net.attach(tx);
        let cluster_id = identity.cluster_id;
        let node = RaftNode::start(
            cfg.node,
            &identity,
            bootstrap,
            membership,
            net.transport(),
            inbox,
            sink,
        )?;
        Ok(Member {
            node: Arc::new(node),
            local_addr: net.local_addr(),
            net: Mutex::new(Some(net)),
            cluster_id,
        })
    }

    pub fn node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// The address peers reach this node on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the network end counted (the last figures after close are zero).
    pub fn net_stats(&self) -> NetStats {
        let net = self.net.lock().unwrap_or_else(|p| p.into_inner());
        net.as_ref().map(GrpcNet::stats).unwrap_or_default()
    }

    /// Cuts this node off from `peer` in both directions, or heals the cut
    /// (fault tests).
    pub fn block(&self, peer: u64, blocked: bool) {
        let net = self.net.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(net) = net.as_ref() {
            net.block(peer, blocked);
        }
    }

    /// Stops the node (pending requests settle with their outcomes), then
    /// the network. Idempotent.
    pub fn close(&self) {
        self.node.close();
        let net = self.net.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(net);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(members: &[(u64, &str)]) -> MemberConfig {
        MemberConfig {
            node: NodeConfig {
                id: 1,
                peers: vec![],
                raft: Default::default(),
                batch: Default::default(),
                storage: Default::default(),
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            initial_cluster: members
                .iter()
                .map(|(i, a)| (*i, (*a).to_string()))
                .collect(),
            cluster_token: "t".into(),
            advertise: None,
            tls: None,
            join: false,
        }
    }

    #[test]
    fn the_initial_cluster_is_checked() {
        let ok = cfg(&[(1, "a:1"), (2, "b:2"), (3, "10.0.0.3:7001")]);
        assert!(ok.validate().is_ok());
        for (bad, key) in [
            (cfg(&[(2, "a:1")]), "cluster.initial_cluster"),
            (cfg(&[(1, "a:1"), (2, "b")]), "cluster.initial_cluster.2"),
            (cfg(&[(1, "a:1"), (2, ":7")]), "cluster.initial_cluster.2"),
            (cfg(&[(1, "a:1"), (2, "b:0")]), "cluster.initial_cluster.2"),
            (cfg(&[(1, "a:1"), (2, "a:1")]), "cluster.initial_cluster.2"),
            (
                MemberConfig {
                    advertise: Some("b:2".into()),
                    ..cfg(&[(1, "a:1"), (2, "b:2")])
                },
                "cluster.advertise",
            ),
        ] {
            match bad.validate() {
                Err(Error::InvalidConfig { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{:?}: {other:?}", bad.initial_cluster),
            }
        }
    }

    #[test]
    fn the_cluster_id_depends_on_token_and_member_ids_only() {
        let a = cfg(&[(1, "a:1"), (2, "b:2")]);
        let mut b = cfg(&[(2, "b:2"), (1, "a:1")]);
        b.node.id = 2;
        assert_eq!(a.derived_cluster_id(), b.derived_cluster_id());
        let mut c = a.clone();
        c.cluster_token = "u".into();
        assert_ne!(a.derived_cluster_id(), c.derived_cluster_id());
        let d = cfg(&[(1, "a:1"), (3, "b:2")]);
        assert_ne!(a.derived_cluster_id(), d.derived_cluster_id());
        let routed = cfg(&[(1, "a:1"), (2, "proxy:9")]);
        assert_eq!(a.derived_cluster_id(), routed.derived_cluster_id());
    }
}
