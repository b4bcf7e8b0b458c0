//! The network transport: raft messages over gRPC (tonic), one client stream
//! per peer.
//!
//! A [`GrpcNet`] is one node's end of the network: it listens on the node's
//! peer address, dials each peer lazily, and hands what arrives to the node's
//! mailbox. Per peer, outbound batches wait in a bounded queue; when it is
//! full they are dropped (raft retransmits) and the peer is reported
//! unreachable, so a slow or dead peer never blocks the node thread. A
//! connection that fails is dialled again with a backoff from 50 ms to 5 s.
//!
//! Every stream starts with a hello naming the cluster id and both node ids.
//! A stream of another cluster, from a node that is not a peer, to another
//! node, that stalls before its hello, or that carries bytes that do not
//! decode, is refused with an error status and counted in [`NetStats`]; it
//! never reaches the node. So is a connection that ends, or is closed for
//! staying silent, without any stream having said hello: bytes that are not
//! HTTP/2, a TLS handshake that fails, a half-open connection.
//!
//! A snapshot message travels on a stream of its own (the `Snapshot` RPC),
//! its data in chunks, so it never holds up the heartbeats and appends behind
//! it nor needs a frame of its size; raft-rs hears that it arrived once the
//! receiving node has it, and that it failed otherwise.
//!
//! With [`TlsPem`] the members talk mutual TLS (rustls, ring provider): each
//! presents a certificate signed by the group's CA and accepts only peers
//! that do the same.
//!
//! Here: the net, its settings and figures. The send side the node calls
//! is in `send.rs`, the dialling side in `client.rs`, the serving side in
//! `server.rs`, accepted connections in `conn.rs`, and who drives the
//! runtime in `driver.rs`.
//!
//! The peer table can change while the net runs ([`GrpcNet::set_peer`],
//! [`GrpcNet::remove_peer`]), for membership changes.
//!
//! The net's runtime is driven by its node's thread (`driver.rs`): what the
//! node sends is written to the peers' streams before the node goes on, and
//! what arrives is read while the node waits for work.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::Status;

use self::client::run_link;
use self::conn::PeerConn;
use self::driver::NetDriver;
pub use self::driver::RuntimeLease;
use self::send::GrpcTransport;
use self::server::PeerService;
use super::{Inbound, Transport};
use crate::bell::Doorbell;
use crate::error::{Error, Result};
use crate::identity::ClusterId;
use crate::incarnation::PeerIncarnations;
use crate::membership::Membership;

mod client;
mod conn;
mod driver;
mod send;
mod server;

#[allow(clippy::all, unreachable_pub, unused_qualifications)]
pub mod pb {
    tonic::include_proto!("metastore.peer.v1");
}

use pb::peer_server::PeerServer;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings find half-open connections.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One node's place in the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub node_id: u64,
    /// `None` for a node that joins a running group: it takes the cluster id
    /// of the first peer whose hello it accepts, and the group's members
    /// from its membership record once it has one ([`Transport::set_members`]).
    pub cluster_id: Option<ClusterId>,
    /// Where the others dial this node, told in every hello.
    pub advertise: String,
    /// This node's incarnation, told in every hello (see [`crate::incarnation`]).
    pub incarnation: u64,
    /// The incarnations heard from peers; a peer that says another one is refused.
    pub peer_incarnations: Arc<PeerIncarnations>,
    /// Where to listen for peers (port 0: any free port).
    pub listen: SocketAddr,
    /// Every other member: id and the `host:port` to dial.
    pub peers: HashMap<u64, String>,
    /// Where this node dials some members whatever the membership record
    /// says (its own routes to the initial members: its `initial_cluster`).
    pub routes: HashMap<u64, String>,
    /// The largest frame either side accepts; above raft's `max_size_per_msg`
    /// (a snapshot travels in one message).
    pub max_frame_bytes: usize,
    /// Batches queued per peer before new ones are dropped.
    pub queue_capacity: usize,
    /// The largest snapshot (its data) a node accepts.
    pub max_snapshot_bytes: u64,
    /// Mutual TLS between members; plain HTTP/2 when `None`.
    pub tls: Option<TlsPem>,
}

/// The PEM text of mutual TLS: this node's certificate (chain) and private
/// key, and the CA certificate that signs every member's.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsPem").finish_non_exhaustive()
    }
}

impl NetConfig {
    pub fn new(node_id: u64, cluster_id: ClusterId, listen: SocketAddr) -> Self {
        NetConfig {
            node_id,
            cluster_id: Some(cluster_id),
            advertise: String::new(),
            incarnation: 0,
            peer_incarnations: Arc::new(PeerIncarnations::in_memory()),
            listen,
            peers: HashMap::new(),
            routes: HashMap::new(),
            max_frame_bytes: 256 << 20,
            queue_capacity: 1024,
            max_snapshot_bytes: 8 << 30,
            tls: None,
        }
    }
}

/// What the transport did since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Messages dropped because a peer's queue was full or it was unreachable.
    pub messages_dropped: u64,
    /// Streams refused (wrong cluster or node, no hello, malformed or
    /// oversized frames), and connections that ended without any stream
    /// saying hello (not HTTP/2, failed TLS handshake, silent).
    pub refused: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Snapshots that reached the peer, and that arrived here.
    pub snapshots_sent: u64,
    pub snapshots_received: u64,
}

#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_dropped: AtomicU64,
    refused: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_received: AtomicU64,
}

/// The encoded messages of one `Ready` for one peer (snapshots travel on
/// their own streams).
struct Outbound {
    messages: Vec<Vec<u8>>,
}

struct PeerLink {
    address: String,
    queue: mpsc::Sender<Outbound>,
}

struct Shared {
    id: u64,
    /// Unset until a joining node accepts its first hello.
    cluster_id: OnceLock<ClusterId>,
    advertise: String,
    incarnation: u64,
    peer_incarnations: Arc<PeerIncarnations>,
    /// See [`NetConfig::routes`].
    routes: HashMap<u64, String>,
    /// Whether the peers are known (from the configuration or the
    /// membership record); a joining node that knows none accepts a hello
    /// from any node of its group, and dials it back where it says.
    peers_known: AtomicBool,
    max_frame_bytes: usize,
    queue_capacity: usize,
    peers: RwLock<HashMap<u64, PeerLink>>,
    /// The mailbox of the node now running here, if any.
    mailbox: Mutex<Option<Doorbell<Inbound>>>,
    /// Peers cut off by a test: nothing is sent to or taken from them.
    blocked: RwLock<HashSet<u64>>,
    counters: Counters,
    /// How this node dials its peers when they talk TLS.
    client_tls: Option<ClientTlsConfig>,
    max_snapshot_bytes: u64,
    /// Where snapshot sends run.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn deliver(&self, event: Inbound) {
        let mailbox = self.mailbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = mailbox.as_ref() {
            let _ = tx.send(event);
        }
    }

    /// A batch for `peer` did not leave: drop it, and tell the node.
    fn undelivered(&self, peer: u64, batch: &Outbound) {
        self.counters
            .messages_dropped
            .fetch_add(batch.messages.len() as u64, Relaxed);
        self.deliver(Inbound::Unreachable(peer));
    }

    fn is_blocked(&self, peer: u64) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(|p| p.into_inner());
        !blocked.is_empty() && blocked.contains(&peer)
    }

    /// The hello this node opens a stream to `to` with.
    fn hello(&self, to: u64) -> pb::Hello {
        pb::Hello {
            cluster_id: self
                .cluster_id
                .get()
                .map(|c| c.0.to_be_bytes().to_vec())
                .unwrap_or_default(),
            from: self.id,
            to,
            address: self.advertise.clone(),
            incarnation: self.incarnation,
        }
    }

    /// Adds peer `id` at `address`, or moves it there.
    fn set_peer(self: &Arc<Self>, id: u64, address: String) {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if peers.get(&id).is_some_and(|l| l.address == address) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        self.runtime
            .spawn(run_link(Arc::clone(self), id, address.clone(), rx));
        // Replacing the link drops its queue, which ends its task.
        peers.insert(id, PeerLink { address, queue: tx });
    }

    /// The membership record says who the peers are, and where.
    fn set_members(self: &Arc<Self>, m: &Membership) {
        let _ = self.cluster_id.set(m.cluster_id);
        for (id, address) in &m.members {
            if *id != self.id {
                let route = self.routes.get(id).unwrap_or(address);
                self.set_peer(*id, route.clone());
            }
        }
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| m.members.contains_key(id));
        self.peers_known.store(true, Relaxed);
    }

    fn refuse(&self, status: Status) -> Status {
        self.counters.refused.fetch_add(1, Relaxed);
        status
    }
}

/// One node's end of the network; see the module doc.
pub struct GrpcNet {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    driver: Option<Arc<NetDriver>>,
    /// The thread that drives the runtime while no node does.
    thread: Option<JoinHandle<()>>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl GrpcNet {
    /// Binds `cfg.listen` and starts serving; nothing is dialled until there
    /// is something to send.
    pub fn start(cfg: NetConfig) -> Result<GrpcNet> {
        let listener = std::net::TcpListener::bind(cfg.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                Error::invalid("listen", format!("cannot listen on {}: {e}", cfg.listen))
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::invalid("listen", format!("{}: {e}", cfg.listen)))?;
        let (driver, thread) = NetDriver::start(cfg.node_id)?;
        let runtime = driver.handle();
        let (server_tls, client_tls) = match &cfg.tls {
            Some(pem) => {
                let (server, client) = tls_configs(pem);
                (Some(server), Some(client))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            client_tls,
            max_snapshot_bytes: cfg.max_snapshot_bytes,
            runtime: runtime.clone(),
            id: cfg.node_id,
            cluster_id: cfg.cluster_id.map(OnceLock::from).unwrap_or_default(),
            advertise: cfg.advertise.clone(),
            incarnation: cfg.incarnation,
            peer_incarnations: Arc::clone(&cfg.peer_incarnations),
            routes: cfg.routes.clone(),
            peers_known: AtomicBool::new(cfg.cluster_id.is_some()),
            max_frame_bytes: cfg.max_frame_bytes,
            queue_capacity: cfg.queue_capacity.max(1),
            peers: RwLock::new(HashMap::new()),
            mailbox: Mutex::new(None),
            blocked: RwLock::new(HashSet::new()),
            counters: Counters::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = PeerServer::new(PeerService {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(cfg.max_frame_bytes)
        .max_encoding_message_size(cfg.max_frame_bytes);
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Error::invalid("listen", format!("{local_addr}: {e}")))?;
            let conns = Arc::clone(&shared);
            let incoming = TcpListenerStream::new(listener).map(move |accepted| {
                accepted.map(|io| {
                    let _ = io.set_nodelay(true);
                    PeerConn::new(io, Arc::clone(&conns))
                })
            });
            let mut server = Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
            if let Some(tls) = server_tls {
                server = server.tls_config(tls).map_err(|e| {
                    Error::invalid(
                        "cluster.tls",
                        format!("the certificate or key is not usable: {}", source_text(&e)),
                    )
                })?;
            }
            if let Some(tls) = &shared.client_tls {
                // Parses the CA and identity now, so a bad file fails the start.
                Endpoint::from_static("https://localhost")
                    .tls_config(tls.clone())
                    .map_err(|e| {
                        Error::invalid(
                            "cluster.tls",
                            format!("the CA certificate is not usable: {}", source_text(&e)),
                        )
                    })?;
            }
            runtime.spawn(server.add_service(service).serve_with_incoming_shutdown(
                incoming,
                async {
                    let _ = stop_rx.await;
                },
            ));
        }
        let net = GrpcNet {
            shared,
            local_addr,
            driver: Some(driver),
            thread: Some(thread),
            shutdown: Mutex::new(Some(stop_tx)),
        };
        for (id, address) in cfg.peers {
            net.set_peer(id, address);
        }
        Ok(net)
    }

    /// The address peers reach this node on (the bound port when `listen`
    /// asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Routes what arrives to `mailbox` (the node now running here).
    pub fn attach(&self, mailbox: Doorbell<Inbound>) {
        *self
            .shared
            .mailbox
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(mailbox);
    }

    /// Drops what arrives until the next `attach` (the node stopped).
    pub fn detach(&self) {
        *self
            .shared
            .mailbox
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The transport the node sends with.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(GrpcTransport {
            shared: Arc::clone(&self.shared),
            driver: self.driver.clone(),
        })
    }

    /// Adds peer `id` at `address`, or moves it there.
    pub fn set_peer(&self, id: u64, address: String) {
        if self.driver.is_some() {
            self.shared.set_peer(id, address);
        }
    }

    /// Forgets peer `id`: nothing more is sent to it, and its streams are refused.
    pub fn remove_peer(&self, id: u64) {
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.remove(&id);
    }

    /// Peer ids and the addresses they are dialled at.
    pub fn peers(&self) -> Vec<(u64, String)> {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = peers
            .iter()
            .map(|(id, l)| (*id, l.address.clone()))
            .collect();
        out.sort_unstable();
        out
    }

    /// Cuts this node off from `peer` in both directions, or heals the cut
    /// (fault tests).
    pub fn block(&self, peer: u64, blocked: bool) {
        let mut set = self
            .shared
            .blocked
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if blocked {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    pub fn stats(&self) -> NetStats {
        let c = &self.shared.counters;
        NetStats {
            messages_sent: c.messages_sent.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            messages_received: c.messages_received.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            messages_dropped: c.messages_dropped.load(Relaxed),
            refused: c.refused.load(Relaxed),
            connects: c.connects.load(Relaxed),
            connect_failures: c.connect_failures.load(Relaxed),
            snapshots_sent: c.snapshots_sent.load(Relaxed),
            snapshots_received: c.snapshots_received.load(Relaxed),
        }
    }

    /// Stops listening and dialling. Idempotent; also on drop.
    pub fn close(&mut self) {
        if let Some(stop) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        self.shared
            .peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.detach();
        if let Some(driver) = self.driver.take() {
            driver.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            driver.shut_down();
        }
    }
}

impl Drop for GrpcNet {
    fn drop(&mut self) {
        self.close();
    }
}

/// The server and client halves of mutual TLS from the same PEM files.
fn tls_configs(pem: &TlsPem) -> (ServerTlsConfig, ClientTlsConfig) {
    let identity = Identity::from_pem(&pem.cert, &pem.key);
    let ca = Certificate::from_pem(&pem.ca);
    (
        ServerTlsConfig::new()
            .identity(identity.clone())
            .client_ca_root(ca.clone())
            .timeout(HELLO_TIMEOUT),
        ClientTlsConfig::new()
            .identity(identity)
            .ca_certificate(ca)
            .timeout(CONNECT_TIMEOUT),
    )
}

/// An error and its causes, on one line.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
