//! Moving raft messages between nodes. A node hands each `Ready`'s messages to
//! its [`Transport`] and receives [`Inbound`] events on its mailbox: messages
//! from peers, and the transport's reports about its own sends (raft-rs wants
//! to hear about unreachable peers and about snapshot delivery).

use raft::eraftpb::Message;

use crate::membership::Membership;

pub mod grpc;
pub mod local;

pub use self::grpc::{GrpcNet, NetConfig, NetStats, RuntimeLease, TlsPem};
pub use self::local::{LocalRouter, LocalTransport};

/// Sends raft messages to their `to` node. Never blocks on a slow peer;
/// undeliverable messages are dropped (raft retransmits) and reported to the
/// sender's mailbox as [`Inbound::Unreachable`].
pub trait Transport: Send + Sync {
    fn send(&self, msgs: Vec<Message>);

    /// The group's membership record changed (or was first read): dial the
    /// members where it says, and refuse everyone else. A transport whose
    /// peers are fixed ignores it.
    fn set_members(&self, _membership: &Membership) {}

    /// The runtime this transport's I/O runs on, for the node thread to drive
    /// while it waits (see [`crate::bell`]); `None`: the node waits on a
    /// runtime of its own.
    fn lend_runtime(&self) -> Option<RuntimeLease> {
        None
    }
}

/// What arrives in a node's mailbox.
#[derive(Debug)]
pub enum Inbound {
    /// Messages from one peer, in send order.
    Raft(Vec<Message>),
    /// A message to `peer` could not be delivered.
    Unreachable(u64),
    /// Delivery of a snapshot to `peer` finished (`ok`) or failed.
    SnapshotStatus { peer: u64, ok: bool },
}
