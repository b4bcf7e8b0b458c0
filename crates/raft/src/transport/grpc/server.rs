//! The serving side: each stream's hello checked, then its frames handed
//! to the node; everything malformed refused and counted.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tonic::{Request, Response, Status, Streaming};

use super::conn::{conn_state, ConnState};
use super::pb::{self, frame::Body, peer_server::Peer, snapshot_frame::Body as SnapshotBody};
use super::{Inbound, Shared, HELLO_TIMEOUT};
use crate::identity::ClusterId;
use crate::incarnation::Seen;

pub(super) struct PeerService {
    pub(super) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<pb::Done>, Status> {
        let shared = &self.shared;
        let conn = conn_state(&request);
        let refuse = |status| refused(shared, conn.as_deref(), status);
        let mut stream = request.into_inner();
        let first = async {
            stream.message().await.map(|f| match f?.body? {
                Body::Hello(hello) => Some(hello),
                Body::Batch(_) => None,
            })
        };
        let from = greet(shared, conn.as_deref(), first).await?;
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
        let refuse = |status| refused(shared, conn.as_deref(), status);
        let mut stream = request.into_inner();
        let first = async {
            stream.message().await.map(|f| match f?.body? {
                SnapshotBody::Hello(hello) => Some(hello),
                _ => None,
            })
        };
        let from = greet(shared, conn.as_deref(), first).await?;
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

/// Counts a refused stream (and marks its connection, which is then not
/// counted again when it ends).
fn refused(shared: &Shared, conn: Option<&ConnState>, status: Status) -> Status {
    if let Some(conn) = conn {
        conn.refused.store(true, Relaxed);
    }
    shared.refuse(status)
}

/// Waits (at most `HELLO_TIMEOUT`) for a stream's first frame, which must be
/// a hello this node accepts; returns its sender and marks the connection
/// greeted, or the refusal.
async fn greet(
    shared: &Arc<Shared>,
    conn: Option<&ConnState>,
    first: impl Future<Output = Result<Option<pb::Hello>, Status>>,
) -> Result<u64, Status> {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, first).await {
        Ok(Ok(Some(hello))) => hello,
        Ok(Err(status)) => return Err(refused(shared, conn, status)),
        _ => {
            return Err(refused(
                shared,
                conn,
                Status::invalid_argument("the first frame of a stream must be a hello"),
            ))
        }
    };
    let from = check_hello(shared, &hello).map_err(|s| refused(shared, conn, s))?;
    if let Some(conn) = conn {
        conn.greeted.store(true, Relaxed);
    }
    Ok(from)
}

/// The sender of a stream whose hello names this cluster, this node, and a
/// peer; the refusal otherwise.
fn check_hello(shared: &Arc<Shared>, hello: &pb::Hello) -> Result<u64, Status> {
    let from = hello.from;
    let joining = !shared.peers_known.load(Relaxed);
    if joining && from != shared.id && from != 0 {
        // A joining node takes its group's id from the first hello.
        if let Ok(bytes) = <[u8; 16]>::try_from(hello.cluster_id.as_slice()) {
            let _ = shared.cluster_id.set(ClusterId(u128::from_be_bytes(bytes)));
        }
    }
    let ours = shared.cluster_id.get().map(|c| c.0.to_be_bytes());
    if ours.is_none_or(|c| hello.cluster_id != c) {
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
    if !known && joining && crate::membership::check_address(&hello.address).is_ok() {
        // Until it has the membership record, a joining node answers the
        // leader where its hello says.
        shared.set_peer(from, hello.address.clone());
    } else if !known {
        return Err(Status::permission_denied(format!(
            "node {from} is not a peer of node {}",
            shared.id
        )));
    }
    if let Seen::Changed { before } = shared.peer_incarnations.see(from, hello.incarnation) {
        return Err(Status::permission_denied(format!(
            "node {from} is not the node {} knew under that id (incarnation {} instead of {before}): \
             its data dir was lost or replaced, and a node whose state is gone rejoins only as a \
             new member under a new id",
            shared.id, hello.incarnation
        )));
    }
    Ok(from)
}
