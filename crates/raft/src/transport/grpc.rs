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
//! The peer table can change while the net runs ([`GrpcNet::set_peer`],
//! [`GrpcNet::remove_peer`]), for membership changes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_channel::Sender;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::transport::server::{Connected, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use super::{Inbound, Transport};
use crate::error::{Error, Result};
use crate::identity::ClusterId;

#[allow(clippy::all, unreachable_pub, unused_qualifications)]
pub mod pb {
    tonic::include_proto!("metastore.peer.v1");
}

use pb::frame::Body;
use pb::peer_client::PeerClient;
use pb::peer_server::{Peer, PeerServer};
use pb::snapshot_frame::Body as SnapshotBody;

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
    pub cluster_id: ClusterId,
    /// Where to listen for peers (port 0: any free port).
    pub listen: SocketAddr,
    /// Every other member: id and the `host:port` to dial.
    pub peers: HashMap<u64, String>,
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
            cluster_id,
            listen,
            peers: HashMap::new(),
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
    cluster_id: ClusterId,
    max_frame_bytes: usize,
    queue_capacity: usize,
    peers: RwLock<HashMap<u64, PeerLink>>,
    /// The mailbox of the node now running here, if any.
    mailbox: Mutex<Option<Sender<Inbound>>>,
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

    fn refuse(&self, status: Status) -> Status {
        self.counters.refused.fetch_add(1, Relaxed);
        status
    }
}

/// One node's end of the network; see the module doc.
pub struct GrpcNet {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl GrpcNet {
    /// Binds `cfg.listen` and starts serving; nothing is dialled until there
    /// is something to send.
    pub fn start(cfg: NetConfig) -> Result<GrpcNet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("metastore-net-{}", cfg.node_id))
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the network runtime: {e}")))?;
        let listener = std::net::TcpListener::bind(cfg.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                Error::invalid("listen", format!("cannot listen on {}: {e}", cfg.listen))
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::invalid("listen", format!("{}: {e}", cfg.listen)))?;
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
            runtime: runtime.handle().clone(),
            id: cfg.node_id,
            cluster_id: cfg.cluster_id,
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
            runtime: Some(runtime),
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
    pub fn attach(&self, mailbox: Sender<Inbound>) {
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
        })
    }

    /// Adds peer `id` at `address`, or moves it there.
    pub fn set_peer(&self, id: u64, address: String) {
        let Some(runtime) = &self.runtime else { return };
        let (tx, rx) = mpsc::channel(self.shared.queue_capacity);
        runtime.spawn(run_link(Arc::clone(&self.shared), id, address.clone(), rx));
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
        // Replacing the link drops its queue, which ends its task.
        peers.insert(id, PeerLink { address, queue: tx });
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
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for GrpcNet {
    fn drop(&mut self) {
        self.close();
    }
}

struct GrpcTransport {
    shared: Arc<Shared>,
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<Message>) {
        let shared = &self.shared;
        let mut by_peer: Vec<(u64, Outbound)> = Vec::new();
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                shared.runtime.spawn(send_snapshot(Arc::clone(shared), m));
                continue;
            }
            let Ok(bytes) = m.write_to_bytes() else {
                shared.counters.messages_dropped.fetch_add(1, Relaxed);
                continue;
            };
            match by_peer.iter_mut().find(|(to, _)| *to == m.to) {
                Some((_, batch)) => batch.messages.push(bytes),
                None => by_peer.push((
                    m.to,
                    Outbound {
                        messages: vec![bytes],
                    },
                )),
            }
        }
        let peers = shared.peers.read().unwrap_or_else(|p| p.into_inner());
        for (to, batch) in by_peer {
            let refused = match peers.get(&to) {
                _ if shared.is_blocked(to) => Some(batch),
                Some(link) => link.queue.try_send(batch).err().map(|e| match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                }),
                None => Some(batch),
            };
            if let Some(batch) = refused {
                shared.undelivered(to, &batch);
            }
        }
    }
}

/// Dials `address` whenever there is something to send to peer `id`, and
/// streams the queued batches to it, until the link is dropped.
async fn run_link(shared: Arc<Shared>, id: u64, address: String, queue: mpsc::Receiver<Outbound>) {
    // Shared with the request body of the stream while one is open, which
    // takes the batches straight from the queue (no task in between).
    let queue = Arc::new(Mutex::new(queue));
    let recv = || std::future::poll_fn(|cx| lock(&queue).poll_recv(cx));
    let mut backoff = MIN_BACKOFF;
    while let Some(first) = recv().await {
        let channel = match endpoint(&shared, &address) {
            Ok(e) => e.connect().await.ok(),
            Err(_) => None,
        };
        let Some(channel) = channel else {
            shared.counters.connect_failures.fetch_add(1, Relaxed);
            shared.undelivered(id, &first);
            while let Ok(batch) = lock(&queue).try_recv() {
                shared.undelivered(id, &batch);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        shared.counters.connects.fetch_add(1, Relaxed);
        backoff = MIN_BACKOFF;
        let hello = pb::Frame {
            body: Some(Body::Hello(pb::Hello {
                cluster_id: shared.cluster_id.0.to_be_bytes().to_vec(),
                from: shared.id,
                to: id,
            })),
        };
        let body = Batches {
            shared: Arc::clone(&shared),
            queue: Arc::clone(&queue),
            hello: Some(hello),
            first: Some(first),
        };
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(shared.max_frame_bytes)
            .max_decoding_message_size(shared.max_frame_bytes);
        let _ = client.raft(body).await;
        if lock(&queue).is_closed() {
            // The link was dropped (the peer removed, or the net closed).
            return;
        }
        shared.deliver(Inbound::Unreachable(id));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The frames of one peer stream: the hello, then each batch as it is
/// queued, counted as sent when h2 takes it. Ends when the link is dropped.
struct Batches {
    shared: Arc<Shared>,
    queue: Arc<Mutex<mpsc::Receiver<Outbound>>>,
    hello: Option<pb::Frame>,
    first: Option<Outbound>,
}

impl tokio_stream::Stream for Batches {
    type Item = pb::Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::Frame>> {
        let this = self.get_mut();
        if let Some(hello) = this.hello.take() {
            return Poll::Ready(Some(hello));
        }
        let batch = match this.first.take() {
            Some(batch) => batch,
            None => match lock(&this.queue).poll_recv(cx) {
                Poll::Ready(Some(batch)) => batch,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let counters = &this.shared.counters;
        counters
            .messages_sent
            .fetch_add(batch.messages.len() as u64, Relaxed);
        counters.bytes_sent.fetch_add(
            batch.messages.iter().map(Vec::len).sum::<usize>() as u64,
            Relaxed,
        );
        Poll::Ready(Some(pb::Frame {
            body: Some(Body::Batch(pb::Batch {
                messages: batch.messages,
            })),
        }))
    }
}

struct PeerService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<pb::Done>, Status> {
        let shared = &self.shared;
        let conn = conn_state(&request);
        let refuse = |status: Status| {
            if let Some(conn) = &conn {
                conn.refused.store(true, Relaxed);
            }
            shared.refuse(status)
        };
        let mut stream = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(pb::Frame {
                body: Some(Body::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(refuse(status)),
            _ => {
                return Err(refuse(Status::invalid_argument(
                    "the first frame of a stream must be a hello",
                )))
            }
        };
        let from = check_hello(shared, &hello).map_err(refuse)?;
        if let Some(conn) = &conn {
            conn.greeted.store(true, Relaxed);
        }
        loop {
            let frame = match stream.message().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(Response::new(pb::Done {})),
                Err(status) => return Err(refuse(status)),
            };
            let Some(Body::Batch(batch)) = frame.body else {
                return Err(refuse(Status::invalid_argument("expected a batch")));
            };
            let mut msgs = Vec::with_capacity(batch.messages.len());
            let mut bytes = 0;
            for raw in &batch.messages {
                bytes += raw.len();
                match Message::parse_from_bytes(raw) {
                    // A forwarded leader transfer names the transferee as
                    // its sender (raft-rs); any other message, the stream's.
                    Ok(m)
                        if m.to == shared.id
                            && (m.from == from
                                || m.get_msg_type() == MessageType::MsgTransferLeader) =>
                    {
                        msgs.push(m)
                    }
                    Ok(m) => {
                        return Err(refuse(Status::invalid_argument(format!(
                            "a message from {} to {} on the stream from {from}",
                            m.from, m.to
                        ))))
                    }
                    Err(e) => {
                        return Err(refuse(Status::invalid_argument(format!(
                            "a raft message that does not decode: {e}"
                        ))))
                    }
                }
            }
            shared
                .counters
                .messages_received
                .fetch_add(msgs.len() as u64, Relaxed);
            shared
                .counters
                .bytes_received
                .fetch_add(bytes as u64, Relaxed);
            if !msgs.is_empty() && !shared.is_blocked(from) {
                shared.deliver(Inbound::Raft(msgs));
            }
        }
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotFrame>>,
    ) -> Result<Response<pb::Done>, Status> {
        let shared = &self.shared;
        let conn = conn_state(&request);
        let refuse = |status: Status| {
            if let Some(conn) = &conn {
                conn.refused.store(true, Relaxed);
            }
            shared.refuse(status)
        };
        let mut stream = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(pb::SnapshotFrame {
                body: Some(SnapshotBody::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(refuse(status)),
            _ => {
                return Err(refuse(Status::invalid_argument(
                    "the first frame of a stream must be a hello",
                )))
            }
        };
        let from = check_hello(shared, &hello).map_err(refuse)?;
        if let Some(conn) = &conn {
            conn.greeted.store(true, Relaxed);
        }
        let header = match stream.message().await {
            Ok(Some(pb::SnapshotFrame {
                body: Some(SnapshotBody::Header(header)),
            })) => header,
            Err(status) => return Err(refuse(status)),
            _ => {
                return Err(refuse(Status::invalid_argument(
                    "a snapshot stream's second frame must be its header",
                )))
            }
        };
        if header.data_len > shared.max_snapshot_bytes {
            return Err(refuse(Status::resource_exhausted(format!(
                "a snapshot of {} bytes; this node takes at most {}",
                header.data_len, shared.max_snapshot_bytes
            ))));
        }
        let mut m = match Message::parse_from_bytes(&header.message) {
            Ok(m)
                if m.from == from
                    && m.to == shared.id
                    && m.get_msg_type() == MessageType::MsgSnapshot =>
            {
                m
            }
            Ok(_) => {
                return Err(refuse(Status::invalid_argument(format!(
                "the header of a snapshot stream from {from} is not a snapshot from {from} to {}",
                shared.id
            ))))
            }
            Err(e) => {
                return Err(refuse(Status::invalid_argument(format!(
                    "a snapshot header that does not decode: {e}"
                ))))
            }
        };
        let want = header.data_len as usize;
        let mut data = Vec::with_capacity(want.min(64 << 20));
        loop {
            match stream.message().await {
                Ok(Some(pb::SnapshotFrame {
                    body: Some(SnapshotBody::Chunk(chunk)),
                })) if data.len() + chunk.len() <= want => data.extend_from_slice(&chunk),
                Ok(None) if data.len() == want => break,
                Ok(None) => {
                    return Err(refuse(Status::invalid_argument(format!(
                        "a snapshot stream ended after {} of its {want} bytes",
                        data.len()
                    ))))
                }
                Ok(Some(_)) => {
                    return Err(refuse(Status::invalid_argument(format!(
                        "a snapshot stream carries more than its {want} bytes, or a frame that is no chunk"
                    ))))
                }
                Err(status) => return Err(refuse(status)),
            }
        }
        shared.counters.messages_received.fetch_add(1, Relaxed);
        shared
            .counters
            .bytes_received
            .fetch_add((header.message.len() + data.len()) as u64, Relaxed);
        if shared.is_blocked(from) {
            return Err(Status::unavailable("cut off"));
        }
        m.mut_snapshot().set_data(data.into());
        shared.counters.snapshots_received.fetch_add(1, Relaxed);
        shared.deliver(Inbound::Raft(vec![m]));
        Ok(Response::new(pb::Done {}))
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

/// What the server knows of one accepted connection, shared with the
/// streams on it (through the request's extensions).
struct ConnState {
    /// A stream on this connection said a valid hello.
    greeted: AtomicBool,
    /// A stream on this connection was refused (and counted).
    refused: AtomicBool,
}

#[derive(Clone)]
struct ConnInfo(Arc<ConnState>);

fn conn_state<T>(request: &Request<T>) -> Option<Arc<ConnState>> {
    let ext = request.extensions();
    ext.get::<ConnInfo>()
        .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
        .map(|c| Arc::clone(&c.0))
}

/// An accepted connection: it ends itself when no stream has said hello
/// within `HELLO_TIMEOUT` (a half-open or silent connection), and counts as
/// refused when it ends without a hello and without a refused stream.
struct PeerConn {
    io: tokio::net::TcpStream,
    state: Arc<ConnState>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    shared: Arc<Shared>,
}

impl PeerConn {
    fn new(io: tokio::net::TcpStream, shared: Arc<Shared>) -> Self {
        PeerConn {
            io,
            state: Arc::new(ConnState {
                greeted: AtomicBool::new(false),
                refused: AtomicBool::new(false),
            }),
            deadline: Box::pin(tokio::time::sleep(HELLO_TIMEOUT)),
            shared,
        }
    }
}

impl Drop for PeerConn {
    fn drop(&mut self) {
        if !self.state.greeted.load(Relaxed) && !self.state.refused.load(Relaxed) {
            self.shared.counters.refused.fetch_add(1, Relaxed);
        }
    }
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(Arc::clone(&self.state))
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.state.greeted.load(Relaxed) && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no stream said hello in time",
            )));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How this node dials `address`.
fn endpoint(shared: &Shared, address: &str) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if shared.client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let e = Endpoint::from_shared(format!("{scheme}://{address}"))?;
    let e = match &shared.client_tls {
        Some(tls) => e.tls_config(tls.clone())?,
        None => e,
    };
    Ok(e.connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// The sender of a stream whose hello names this cluster, this node, and a
/// peer; the refusal otherwise.
fn check_hello(shared: &Shared, hello: &pb::Hello) -> Result<u64, Status> {
    let from = hello.from;
    if hello.cluster_id != shared.cluster_id.0.to_be_bytes() {
        // The message does not say this cluster's id: a stranger must not
        // learn the hello it would need.
        return Err(Status::permission_denied(format!(
            "node {} belongs to another cluster than the one node {from} names",
            shared.id
        )));
    }
    if hello.to != shared.id {
        return Err(Status::invalid_argument(format!(
            "this is node {}, not node {}",
            shared.id, hello.to
        )));
    }
    let known = shared
        .peers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&from);
    if !known {
        return Err(Status::permission_denied(format!(
            "node {from} is not a peer of node {}",
            shared.id
        )));
    }
    Ok(from)
}

/// The size of the data chunks of a snapshot stream.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Sends snapshot message `m` on a stream of its own and tells raft-rs
/// whether it arrived.
async fn send_snapshot(shared: Arc<Shared>, m: Message) {
    let to = m.to;
    let arrived = snapshot_stream(&shared, m).await.is_ok();
    if arrived {
        shared.counters.snapshots_sent.fetch_add(1, Relaxed);
    } else {
        shared.counters.messages_dropped.fetch_add(1, Relaxed);
        shared.deliver(Inbound::Unreachable(to));
    }
    shared.deliver(Inbound::SnapshotStatus {
        peer: to,
        ok: arrived,
    });
}

async fn snapshot_stream(shared: &Shared, mut m: Message) -> Result<(), String> {
    let to = m.to;
    let address = {
        let peers = shared.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.get(&to).map(|l| l.address.clone())
    };
    let address = address.ok_or_else(|| format!("{to} is not a peer"))?;
    if shared.is_blocked(to) {
        return Err(format!("cut off from {to}"));
    }
    let channel = endpoint(shared, &address)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| {
            shared.counters.connect_failures.fetch_add(1, Relaxed);
            e.to_string()
        })?;
    shared.counters.connects.fetch_add(1, Relaxed);
    let data = m.mut_snapshot().take_data();
    let header = m.write_to_bytes().map_err(|e| e.to_string())?;
    let sent = (header.len() + data.len()) as u64;
    let first = [
        SnapshotBody::Hello(pb::Hello {
            cluster_id: shared.cluster_id.0.to_be_bytes().to_vec(),
            from: shared.id,
            to,
        }),
        SnapshotBody::Header(pb::SnapshotHeader {
            message: header,
            data_len: data.len() as u64,
        }),
    ];
    let chunks = (0..data.len().div_ceil(SNAPSHOT_CHUNK)).map(move |i| {
        let end = ((i + 1) * SNAPSHOT_CHUNK).min(data.len());
        SnapshotBody::Chunk(data[i * SNAPSHOT_CHUNK..end].to_vec())
    });
    let frames = first
        .into_iter()
        .chain(chunks)
        .map(|body| pb::SnapshotFrame { body: Some(body) });
    let mut client = PeerClient::new(channel)
        .max_encoding_message_size(shared.max_frame_bytes)
        .max_decoding_message_size(shared.max_frame_bytes);
    client
        .snapshot(tokio_stream::iter(frames))
        .await
        .map_err(|s| s.to_string())?;
    shared.counters.messages_sent.fetch_add(1, Relaxed);
    shared.counters.bytes_sent.fetch_add(sent, Relaxed);
    Ok(())
}
