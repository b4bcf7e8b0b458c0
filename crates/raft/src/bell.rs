//! How a node thread learns that there is work: every channel into it is a
//! [`Doorbell`], which rings the node's [`Bell`] after each send, and the node
//! thread waits on the bell alone (with the deadline of its next tick), inside
//! a tokio runtime it drives: the gRPC transport's when it lends its runtime
//! (so the node thread itself reads and writes its peers' streams, and a
//! message crosses from a socket to raft without waking another thread), a
//! runtime of its own otherwise.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, SendError, Sender};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// A node thread's doorbell: rung by every sender into the node, awaited
/// by the node thread when it has nothing to do. A ring while the node is
/// busy is kept (one permit), so the next wait returns at once.
#[derive(Clone, Default)]
pub struct Bell(Arc<Notify>);

impl Bell {
    pub fn ring(&self) {
        self.0.notify_one();
    }

    /// Drives `runtime` until the bell rings or `deadline` passes. The tasks
    /// already queued on it run first (what the node just sent leaves before
    /// it waits), then those its I/O wakes.
    pub fn wait(&self, runtime: &Runtime, deadline: Instant) {
        runtime.block_on(async {
            tokio::task::yield_now().await;
            let _ = tokio::time::timeout_at(deadline.into(), self.0.notified()).await;
        });
    }
}

/// The sending end of a channel into a node thread: each send rings the
/// node's bell.
pub struct Doorbell<T> {
    tx: Sender<T>,
    bell: Bell,
}

impl<T> Clone for Doorbell<T> {
    fn clone(&self) -> Self {
        Doorbell {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> Doorbell<T> {
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let sent = self.tx.send(item);
        self.bell.ring();
        sent
    }
}

/// An unbounded channel into the node thread that waits on `bell`.
pub fn channel<T>(bell: &Bell) -> (Doorbell<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Doorbell {
            tx,
            bell: bell.clone(),
        },
        rx,
    )
}

/// Where a node's messages from its peers arrive, with the bell they ring
/// (the node's own: every other channel into the node rings it too).
pub struct Inbox {
    pub(crate) rx: Receiver<crate::transport::Inbound>,
    pub(crate) bell: Bell,
}

/// A new node's inbox and the sender its transport delivers with.
pub fn inbox() -> (Doorbell<crate::transport::Inbound>, Inbox) {
    let bell = Bell::default();
    let (tx, rx) = channel(&bell);
    (tx, Inbox { rx, bell })
}
