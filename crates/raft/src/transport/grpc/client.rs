//! The dialling side: one stream per peer fed straight from its queue, and
//! snapshots on streams of their own.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::pb::{self, frame::Body, peer_client::PeerClient, snapshot_frame::Body as SnapshotBody};
use super::{
    Inbound, Outbound, Shared, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_BACKOFF,
    MIN_BACKOFF,
};

/// Dials `address` whenever there is something to send to peer `id`, and
/// streams the queued batches to it, until the link is dropped.
pub(super) async fn run_link(
    shared: Arc<Shared>,
    id: u64,
    address: String,
    queue: mpsc::Receiver<Outbound>,
) {
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
            body: Some(Body::Hello(shared.hello(id))),
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

/// How this node dials `address`.
pub(super) fn endpoint(
    shared: &Shared,
    address: &str,
) -> Result<Endpoint, tonic::transport::Error> {
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

/// The size of the data chunks of a snapshot stream.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Sends snapshot message `m` on a stream of its own and tells raft-rs
/// whether it arrived.
pub(super) async fn send_snapshot(shared: Arc<Shared>, m: Message) {
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
        SnapshotBody::Hello(shared.hello(to)),
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
