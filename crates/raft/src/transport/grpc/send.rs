//! The send side the node calls: each `Ready`'s messages, encoded and
//! grouped per peer into its bounded queue (snapshots on streams of their
//! own), then written out at once when the calling thread drives the runtime.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;

use super::client::send_snapshot;
use super::driver::{NetDriver, RuntimeLease};
use super::{Outbound, Shared, Transport};
use crate::membership::Membership;

pub(super) struct GrpcTransport {
    pub(super) shared: Arc<Shared>,
    pub(super) driver: Option<Arc<NetDriver>>,
}

impl Transport for GrpcTransport {
    fn set_members(&self, membership: &Membership) {
        self.shared.set_members(membership);
    }

    fn send(&self, msgs: Vec<Message>) {
        // On the thread that drives the runtime, the batches are queued
        // inside it and leave now, before the node goes on to persist what
        // it sent. Queued from inside, a batch wakes its peer's task on the
        // runtime's own queue; from outside, each wake would also write the
        // runtime's eventfd, and its next wait would return at once for it.
        if let Some(driver) = &self.driver {
            if tokio::runtime::Handle::try_current().is_err() && driver.driven_here() {
                driver.run_now(|| self.queue(msgs));
                return;
            }
        }
        self.queue(msgs);
    }

    fn lend_runtime(&self) -> Option<RuntimeLease> {
        self.driver.as_ref().map(NetDriver::lend)
    }
}

impl GrpcTransport {
    /// Encodes `msgs` and queues them per peer.
    fn queue(&self, msgs: Vec<Message>) {
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
