//! The group's membership as its state machine keeps it: who the members
//! are and where they are dialled, which ids were removed, and the change in
//! progress.
//!
//! # How a change runs
//!
//! raft-rs decides who votes (its `ConfState`, changed by `ConfChangeV2`
//! entries), but it checks nothing an operator would: it accepts a reused
//! id, and while one change is pending it silently turns the next into an
//! empty entry. So a change goes through the log twice:
//!
//! 1. **The request** ([`Request::Change`]), proposed by whichever node was
//!    asked (a follower's proposal reaches the leader like any other). Every
//!    node applies it the same way: it is checked against this record (one
//!    change at a time, ids never reused, addresses unique, ...) and either
//!    refused, which answers the asking node at once, or recorded as
//!    [`Membership::pending`].
//! 2. **The configuration change**, proposed by the leader while a change is
//!    pending (a new leader takes over a pending change from the record). Its
//!    context is the request's log index. Before proposing, the leader checks
//!    what only it knows: that a learner to promote is caught up, that a
//!    removal leaves a live quorum, and, for its own removal, it hands
//!    leadership over first. A refusal goes through the log as
//!    [`Request::Cancel`].
//!
//! Adding a learner changes no quorum and is a simple change. Promoting and
//! removing go through a joint configuration (see `docs/design.md`), which
//! raft-rs leaves by itself once the leader applied it, and which the leader
//! leaves explicitly if raft-rs did not (a leader that took over in the middle
//! of one). The change completes, and the asking node answers, when the group
//! is in a single configuration again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use raft::eraftpb::ConfState;
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

use crate::command::RequestId;
use crate::error::{Error, Result};
use crate::identity::ClusterId;

mod codec;

/// Marks a normal entry whose data is a [`Request`] (entry contexts are
/// otherwise empty).
pub const ENTRY_CONTEXT: &[u8] = b"metastore/membership/1";

/// One change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new member, as a learner: it receives the log but does not vote.
    AddLearner { id: u64, address: String },
    /// A learner becomes a voter.
    Promote { id: u64 },
    /// A member leaves; its id is never used again. `force`: even when the
    /// voters left would not hold a quorum of live members.
    Remove { id: u64, force: bool },
}

impl Change {
    pub fn node(&self) -> u64 {
        match self {
            Change::AddLearner { id, .. } | Change::Promote { id } | Change::Remove { id, .. } => {
                *id
            }
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddLearner { id, address } => write!(f, "add node {id} at {address}"),
            Change::Promote { id } => write!(f, "promote node {id}"),
            Change::Remove { id, .. } => write!(f, "remove node {id}"),
        }
    }
}

/// Why the leader refused a pending change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    LearnerBehind,
    Refused,
    /// Not a refusal: the leader cannot tell yet (never encoded).
    Wait,
}

/// What a membership entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A change asked for by `by` (who is answered when it completes).
    Change { by: RequestId, change: Change },
    /// The leader refused the pending change requested at `index`.
    Cancel {
        index: u64,
        why: Refusal,
        message: String,
    },
}

/// The change in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The log index of its request.
    pub index: u64,
    pub by: RequestId,
    pub change: Change,
}

/// The membership record; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub cluster_id: ClusterId,
    /// Every member, voter or learner, and the address it is dialled at.
    /// The address of a member added by a change is the same on every node;
    /// that of an initial member is the one this node's group was
    /// bootstrapped with here (each node's own `initial_cluster`: nodes may
    /// reach each other by their own routes), or the one a snapshot brought.
    pub members: BTreeMap<u64, String>,
    /// The voters the group was bootstrapped with: their addresses above may
    /// differ from node to node, so no rule applied by every node reads them.
    pub initial: BTreeSet<u64>,
    /// Ids removed from the group.
    pub removed: BTreeSet<u64>,
    pub pending: Option<Pending>,
}

/// `host:port` with a port in 1..=65535 and a non-empty host; the rule
/// otherwise.
pub fn check_address(address: &str) -> std::result::Result<(), String> {
    let bad = || format!("'{address}' is not host:port (for example 10.0.0.1:7001 or host-a:7001)");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// Whether `cs` is a joint configuration.
pub fn is_joint(cs: &ConfState) -> bool {
    !cs.voters_outgoing.is_empty()
}

impl Membership {
    /// A group's first membership.
    pub fn initial(cluster_id: ClusterId, members: BTreeMap<u64, String>) -> Self {
        Membership {
            cluster_id,
            initial: members.keys().copied().collect(),
            members,
            removed: BTreeSet::new(),
            pending: None,
        }
    }

    /// The rules a change must follow whatever the group's state: a node id
    /// of at least 1, a well-formed address.
    pub fn check_form(change: &Change) -> Result<()> {
        if change.node() == 0 {
            return Err(Error::ChangeRefused("node ids must be >= 1".into()));
        }
        if let Change::AddLearner { address, .. } = change {
            check_address(address).map_err(Error::ChangeRefused)?;
        }
        Ok(())
    }

    /// Checks a requested change against this record and the configuration
    /// `cs`: `Ok(true)` to carry it out, `Ok(false)` when it is in effect
    /// already (a retry of a change that completed: answered at once, so a
    /// caller may send a change again after an unknown outcome), or the rule
    /// it breaks. The same on every node.
    pub fn check(&self, change: &Change, cs: &ConfState) -> Result<bool> {
        Self::check_form(change)?;
        if self.in_effect(change, cs) {
            return Ok(false);
        }
        if let Some(p) = &self.pending {
            return Err(Error::ChangeInProgress(format!(
                "cannot {change}: '{}' (requested at log index {}) is still in progress; \
                 one membership change at a time",
                p.change, p.index
            )));
        }
        let id = change.node();
        let names = || {
            let ids: Vec<String> = self.members.keys().map(u64::to_string).collect();
            ids.join(", ")
        };
        let member = self.members.contains_key(&id);
        match change {
            Change::AddLearner { address, .. } => {
                if self.removed.contains(&id) {
                    return Err(Error::ChangeRefused(format!(
                        "node {id} was removed from this group, and ids are never reused: \
                         give the new member a new id"
                    )));
                }
                if member {
                    return Err(Error::ChangeRefused(format!(
                        "node {id} is a member already (members: {})",
                        names()
                    )));
                }
                if let Some(other) = self.holder_of(address, false) {
                    return Err(Error::ChangeRefused(format!(
                        "address {address} is node {other}'s"
                    )));
                }
            }
            Change::Promote { .. } => {
                if !member {
                    return Err(not_a_member(id, &names()));
                }
                if !cs.learners.contains(&id) {
                    return Err(Error::ChangeRefused(format!(
                        "node {id} is a voter already"
                    )));
                }
            }
            Change::Remove { .. } => {
                if !member {
                    return Err(not_a_member(id, &names()));
                }
                if cs.voters == [id] {
                    return Err(Error::ChangeRefused(format!(
                        "node {id} is the group's only voter"
                    )));
                }
            }
        }
        Ok(true)
    }

    /// The member at `address`, among those whose addresses every node
    /// agrees on, or among all of this node's when `local`.
    pub fn holder_of(&self, address: &str, local: bool) -> Option<u64> {
        self.members
            .iter()
            .find(|(id, a)| *a == address && (local || !self.initial.contains(id)))
            .map(|(id, _)| *id)
    }

    /// Whether `change` holds already: the node is a member at that address,
    /// a voter, or removed.
    fn in_effect(&self, change: &Change, cs: &ConfState) -> bool {
        match change {
            Change::AddLearner { id, address } => self.members.get(id) == Some(address),
            Change::Promote { id } => {
                self.members.contains_key(id) && cs.voters.contains(id) && !is_joint(cs)
            }
            Change::Remove { id, .. } => self.removed.contains(id),
        }
    }

    /// The configuration change that carries out `pending` (`context`: its
    /// request's index).
    pub fn conf_change(pending: &Pending) -> ConfChangeV2 {
        let (change_type, transition) = match &pending.change {
            // A learner changes no quorum: a simple change.
            Change::AddLearner { .. } => {
                (ConfChangeType::AddLearnerNode, ConfChangeTransition::Auto)
            }
            Change::Promote { .. } => (ConfChangeType::AddNode, ConfChangeTransition::Implicit),
            Change::Remove { .. } => (ConfChangeType::RemoveNode, ConfChangeTransition::Implicit),
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = pending.change.node();
        let mut cc = ConfChangeV2::default();
        cc.set_transition(transition);
        cc.changes = vec![single].into();
        cc.context = pending.index.to_be_bytes().to_vec().into();
        cc
    }

    /// The record after `pending`'s configuration change was applied.
    pub fn carry_out(&mut self, pending: &Pending) {
        match &pending.change {
            Change::AddLearner { id, address } => {
                self.members.insert(*id, address.clone());
            }
            Change::Promote { .. } => {}
            Change::Remove { id, .. } => {
                self.members.remove(id);
                self.removed.insert(*id);
            }
        }
    }
}

fn not_a_member(id: u64, names: &str) -> Error {
    Error::ChangeRefused(format!("node {id} is not a member (members: {names})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Membership {
        Membership::initial(
            ClusterId(7),
            [(1, "a:1".to_string()), (2, "b:2".into()), (3, "c:3".into())].into(),
        )
    }

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState::from((voters.to_vec(), learners.to_vec()))
    }

    fn add(id: u64, address: &str) -> Change {
        Change::AddLearner {
            id,
            address: address.into(),
        }
    }

    fn remove(id: u64) -> Change {
        Change::Remove { id, force: false }
    }

    fn by() -> RequestId {
        RequestId {
            node: 2,
            epoch: 9,
            token: 4,
        }
    }

    #[test]
    fn records_and_requests_round_trip_and_bad_bytes_are_refused() {
        let mut m = record();
        m.removed.insert(5);
        m.pending = Some(Pending {
            index: 12,
            by: by(),
            change: Change::AddLearner {
                id: 4,
                address: "d:4".into(),
            },
        });
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes), Ok(m.clone()));
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err(), "{cut} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Membership::decode(&longer).is_err());
        for r in [
            Request::Change {
                by: by(),
                change: Change::Remove { id: 3, force: true },
            },
            Request::Cancel {
                index: 3,
                why: Refusal::LearnerBehind,
                message: "behind".into(),
            },
        ] {
            let bytes = r.encode();
            assert_eq!(Request::decode(&bytes), Some(r));
            for cut in 0..bytes.len() {
                assert_eq!(Request::decode(&bytes[..cut]), None, "{cut} bytes");
            }
        }
    }

    #[test]
    fn the_rules_of_a_change() {
        let mut m = record();
        m.removed.insert(9);
        let cs = conf(&[1, 2, 3], &[4]);
        m.members.insert(4, "d:4".into());
        assert_eq!(m.check(&add(5, "e:5"), &cs), Ok(true));
        assert_eq!(m.check(&Change::Promote { id: 4 }, &cs), Ok(true));
        assert_eq!(m.check(&remove(2), &cs), Ok(true));
        // A change in effect already is answered as done (a retry).
        assert_eq!(m.check(&add(4, "d:4"), &cs), Ok(false));
        assert_eq!(m.check(&Change::Promote { id: 2 }, &cs), Ok(false));
        assert_eq!(m.check(&remove(9), &cs), Ok(false));
        // The addresses of the initial members may differ from node to node
        // (routes), so the group does not judge them; the asking node does.
        assert_eq!(m.check(&add(5, "a:1"), &cs), Ok(true));
        assert_eq!(m.holder_of("a:1", true), Some(1));
        assert_eq!(m.holder_of("a:1", false), None);
        for (change, code, says) in [
            (add(9, "e:5"), "ERR_CHANGE_REFUSED", "never reused"),
            (add(2, "e:5"), "ERR_CHANGE_REFUSED", "a member already"),
            (add(5, "d:4"), "ERR_CHANGE_REFUSED", "node 4's"),
            (add(5, "e"), "ERR_CHANGE_REFUSED", "not host:port"),
            (add(0, "e:5"), "ERR_CHANGE_REFUSED", ">= 1"),
            (
                Change::Promote { id: 8 },
                "ERR_CHANGE_REFUSED",
                "not a member",
            ),
            (remove(8), "ERR_CHANGE_REFUSED", "not a member"),
        ] {
            let e = m.check(&change, &cs).unwrap_err();
            assert_eq!(e.code(), code, "{change}");
            assert!(e.to_string().contains(says), "{change}: {e}");
        }
        let only = Membership::initial(ClusterId(1), [(1, "a:1".to_string())].into());
        let e = only
            .check(&Change::Remove { id: 1, force: true }, &conf(&[1], &[]))
            .unwrap_err();
        assert!(e.to_string().contains("only voter"), "{e}");
        m.pending = Some(Pending {
            index: 3,
            by: by(),
            change: Change::Promote { id: 4 },
        });
        let e = m.check(&add(5, "e:5"), &cs).unwrap_err();
        assert_eq!(e.code(), "ERR_CHANGE_IN_PROGRESS");
        assert!(e.to_string().contains("promote node 4"), "{e}");
    }

    #[test]
    fn voter_changes_go_through_a_joint_configuration() {
        let pending = |change| Pending {
            index: 40,
            by: by(),
            change,
        };
        let add = Membership::conf_change(&pending(add(4, "d:4")));
        assert_eq!(
            add.enter_joint(),
            None,
            "adding a learner is a simple change"
        );
        for change in [Change::Promote { id: 4 }, remove(2)] {
            let cc = Membership::conf_change(&pending(change));
            assert_eq!(cc.enter_joint(), Some(true), "joint, left automatically");
            assert_eq!(cc.context.as_ref(), 40u64.to_be_bytes());
        }
    }
}
