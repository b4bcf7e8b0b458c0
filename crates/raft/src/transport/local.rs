//! In-process transport: one unbounded crossbeam channel per node (raft's own
//! flow control bounds what is in flight), plus link cuts for fault tests and
//! held links, whose messages wait until released, for tests that need a
//! message to arrive at a chosen moment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use raft::eraftpb::{Message, MessageType};

use super::{Inbound, Transport};
use crate::bell::{self, Doorbell, Inbox};

#[derive(Default)]
struct Links {
    mailboxes: HashMap<u64, Doorbell<Inbound>>,
    /// Cut links, stored as (min id, max id); a cut drops both directions.
    cut: HashSet<(u64, u64)>,
    /// Held directed links (from, to) and what was sent on them, in order.
    held: HashMap<(u64, u64), Vec<Vec<Message>>>,
}

fn link(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

/// The switchboard of a [`LocalCluster`](crate::LocalCluster).
#[derive(Default)]
pub struct LocalRouter {
    links: RwLock<Links>,
}

impl LocalRouter {
    pub fn new() -> Arc<Self> {
        Arc::new(LocalRouter::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Links> {
        self.links.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Links> {
        self.links.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the mailbox of node `id` (replacing an earlier one).
    pub fn register(&self, id: u64) -> Inbox {
        let (tx, inbox) = bell::inbox();
        self.write().mailboxes.insert(id, tx);
        inbox
    }

    /// Removes node `id`: messages to it are dropped from now on.
    pub fn unregister(&self, id: u64) {
        self.write().mailboxes.remove(&id);
    }

    /// The transport node `id` sends with.
    pub fn transport(self: &Arc<Self>, id: u64) -> Arc<dyn Transport> {
        Arc::new(LocalTransport {
            from: id,
            router: Arc::clone(self),
        })
    }

    pub fn cut(&self, a: u64, b: u64) {
        self.write().cut.insert(link(a, b));
    }

    pub fn heal(&self, a: u64, b: u64) {
        self.write().cut.remove(&link(a, b));
    }

    /// Cuts every link of `id` to the nodes registered now and to `peers`.
    pub fn isolate(&self, id: u64, peers: &[u64]) {
        let mut links = self.write();
        let ids: Vec<u64> = links
            .mailboxes
            .keys()
            .copied()
            .chain(peers.iter().copied())
            .collect();
        for other in ids {
            if other != id {
                links.cut.insert(link(id, other));
            }
        }
    }

    /// Holds the messages `from` sends to `to` until [`release`](Self::release).
    pub fn hold(&self, from: u64, to: u64) {
        self.write().held.entry((from, to)).or_default();
    }

    /// Moves the groups `from` sends on held links into their hold.
    fn hold_back(&self, from: u64, groups: &mut Vec<(u64, Vec<Message>)>) {
        let mut links = self.write();
        groups.retain_mut(|(to, group)| match links.held.get_mut(&(from, *to)) {
            Some(held) => {
                held.push(std::mem::take(group));
                false
            }
            None => true,
        });
    }

    /// Delivers what `from` sent to `to` while held, in order, and stops holding.
    pub fn release(&self, from: u64, to: u64) {
        let links = &mut *self.write();
        let Some(groups) = links.held.remove(&(from, to)) else {
            return;
        };
        if let Some(tx) = links.mailboxes.get(&to) {
            for group in groups {
                let _ = tx.send(Inbound::Raft(group));
            }
        }
    }

    pub fn heal_all(&self) {
        self.write().cut.clear();
    }
}

pub struct LocalTransport {
    from: u64,
    router: Arc<LocalRouter>,
}

impl Transport for LocalTransport {
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        // Group by destination so each peer gets one channel send per Ready.
        let mut groups: Vec<(u64, Vec<Message>)> = Vec::new();
        for m in msgs {
            match groups.iter_mut().find(|(to, _)| *to == m.to) {
                Some((_, g)) => g.push(m),
                None => groups.push((m.to, vec![m])),
            }
        }
        let mut links = self.router.read();
        if !links.held.is_empty() {
            // Rare (tests holding a link): park the groups for held links.
            drop(links);
            self.router.hold_back(self.from, &mut groups);
            links = self.router.read();
        }
        let own = links.mailboxes.get(&self.from);
        for (to, group) in groups {
            let has_snapshot = group
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
            let delivered = !links.cut.contains(&link(self.from, to))
                && links
                    .mailboxes
                    .get(&to)
                    .is_some_and(|tx| tx.send(Inbound::Raft(group)).is_ok());
            if let Some(own) = own {
                if !delivered {
                    let _ = own.send(Inbound::Unreachable(to));
                }
                if has_snapshot {
                    let _ = own.send(Inbound::SnapshotStatus {
                        peer: to,
                        ok: delivered,
                    });
                }
            }
        }
    }
}
