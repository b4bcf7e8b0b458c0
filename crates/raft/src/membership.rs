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
use metastore_batch::codec::varint;

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

const VERSION: u8 = 1;
const TAG_CHANGE: u8 = 1;
const TAG_CANCEL: u8 = 2;
const CHANGE_ADD: u8 = 1;
const CHANGE_PROMOTE: u8 = 2;
const CHANGE_REMOVE: u8 = 3;
const CHANGE_REMOVE_FORCED: u8 = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    varint::put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_id(out: &mut Vec<u8>, id: &RequestId) {
    varint::put(out, id.node);
    out.extend_from_slice(&id.epoch.to_le_bytes());
    varint::put(out, id.token);
}

fn put_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::AddLearner { id, address } => {
            out.push(CHANGE_ADD);
            varint::put(out, *id);
            put_str(out, address);
        }
        Change::Promote { id } => {
            out.push(CHANGE_PROMOTE);
            varint::put(out, *id);
        }
        Change::Remove { id, force } => {
            out.push(if *force {
                CHANGE_REMOVE_FORCED
            } else {
                CHANGE_REMOVE
            });
            varint::put(out, *id);
        }
    }
}

/// Reads what the `put_*` functions wrote; `None` at the first malformed byte.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        varint::get(self.data, &mut self.pos)
    }

    fn u64_le(&mut self) -> Option<u64> {
        let bytes = self.data.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u128_be(&mut self) -> Option<u128> {
        let bytes = self.data.get(self.pos..self.pos + 16)?;
        self.pos += 16;
        Some(u128::from_be_bytes(bytes.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.varint()?).ok()?;
        let bytes = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn id(&mut self) -> Option<RequestId> {
        Some(RequestId {
            node: self.varint()?,
            epoch: self.u64_le()?,
            token: self.varint()?,
        })
    }

    fn change(&mut self) -> Option<Change> {
        let kind = self.u8()?;
        let id = self.varint()?;
        Some(match kind {
            CHANGE_ADD => Change::AddLearner {
                id,
                address: self.str()?,
            },
            CHANGE_PROMOTE => Change::Promote { id },
            CHANGE_REMOVE => Change::Remove { id, force: false },
            CHANGE_REMOVE_FORCED => Change::Remove { id, force: true },
            _ => return None,
        })
    }

    fn done(&self) -> bool {
        self.pos == self.data.len()
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Request::Change { by, change } => {
                out.push(TAG_CHANGE);
                put_id(&mut out, by);
                put_change(&mut out, change);
            }
            Request::Cancel {
                index,
                why,
                message,
            } => {
                out.push(TAG_CANCEL);
                varint::put(&mut out, *index);
                out.push(match why {
                    Refusal::LearnerBehind => 1,
                    Refusal::Refused | Refusal::Wait => 2,
                });
                put_str(&mut out, message);
            }
        }
        out
    }

    /// `None` for bytes that are no request (every node skips them alike).
    pub fn decode(data: &[u8]) -> Option<Request> {
        let mut r = Reader { data, pos: 0 };
        if r.u8()? != VERSION {
            return None;
        }
        let request = match r.u8()? {
            TAG_CHANGE => Request::Change {
                by: r.id()?,
                change: r.change()?,
            },
            TAG_CANCEL => Request::Cancel {
                index: r.varint()?,
                why: match r.u8()? {
                    1 => Refusal::LearnerBehind,
                    2 => Refusal::Refused,
                    _ => return None,
                },
                message: r.str()?,
            },
            _ => return None,
        };
        r.done().then_some(request)
    }
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

    /// `version u8 | cluster id u128 BE | members | initial | removed | pending`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.cluster_id.0.to_be_bytes());
        varint::put(&mut out, self.members.len() as u64);
        for (id, address) in &self.members {
            varint::put(&mut out, *id);
            put_str(&mut out, address);
        }
        for set in [&self.initial, &self.removed] {
            varint::put(&mut out, set.len() as u64);
            for id in set {
                varint::put(&mut out, *id);
            }
        }
        match &self.pending {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                varint::put(&mut out, p.index);
                put_id(&mut out, &p.by);
                put_change(&mut out, &p.change);
            }
        }
        out
    }

    /// Decodes what [`encode`](Self::encode) wrote; the error says what is
    /// wrong with the bytes.
    pub fn decode(data: &[u8]) -> std::result::Result<Membership, String> {
        let mut r = Reader { data, pos: 0 };
        let bad = |what: &str| format!("membership record: {what}");
        match r.u8() {
            Some(VERSION) => {}
            Some(v) => return Err(bad(&format!("unknown version {v}"))),
            None => return Err(bad("empty")),
        }
        let cluster_id = ClusterId(r.u128_be().ok_or_else(|| bad("truncated cluster id"))?);
        let mut members = BTreeMap::new();
        let n = r.varint().ok_or_else(|| bad("truncated member count"))?;
        for _ in 0..n {
            let id = r.varint().ok_or_else(|| bad("truncated member id"))?;
            let address = r.str().ok_or_else(|| bad("truncated member address"))?;
            members.insert(id, address);
        }
        let mut ids = || -> std::result::Result<BTreeSet<u64>, String> {
            let n = r.varint().ok_or_else(|| bad("truncated id count"))?;
            (0..n)
                .map(|_| r.varint().ok_or_else(|| bad("truncated id")))
                .collect()
        };
        let initial = ids()?;
        let removed = ids()?;
        let pending = match r.u8() {
            Some(0) => None,
            Some(1) => Some(Pending {
                index: r.varint().ok_or_else(|| bad("truncated pending index"))?,
                by: r.id().ok_or_else(|| bad("truncated pending requester"))?,
                change: r.change().ok_or_else(|| bad("malformed pending change"))?,
            }),
            _ => return Err(bad("malformed pending flag")),
        };
        if !r.done() {
            return Err(bad("trailing bytes"));
        }
        Ok(Membership {
            cluster_id,
            members,
            initial,
            removed,
            pending,
        })
    }

    /// Appends the record to snapshot data (length-prefixed).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let bytes = self.encode();
        varint::put(out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    }

    /// Reads what [`encode_into`](Self::encode_into) appended at `pos`.
    pub fn decode_from(data: &[u8], pos: &mut usize) -> Result<Membership> {
        let bad = |what: String| Error::Storage(format!("corrupt snapshot data: {what}"));
        let n = varint::get(data, pos)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("truncated membership length".into()))?;
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| bad("truncated membership record".into()))?;
        let m = Membership::decode(&data[*pos..end]).map_err(bad)?;
        *pos = end;
        Ok(m)
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
        let add = |id: u64, address: &str| Change::AddLearner {
            id,
            address: address.into(),
        };
        assert_eq!(m.check(&add(5, "e:5"), &cs), Ok(true));
        assert_eq!(m.check(&Change::Promote { id: 4 }, &cs), Ok(true));
        assert_eq!(
            m.check(
                &Change::Remove {
                    id: 2,
                    force: false
                },
                &cs
            ),
            Ok(true)
        );
        // A change in effect already is answered as done (a retry).
        assert_eq!(m.check(&add(4, "d:4"), &cs), Ok(false));
        assert_eq!(m.check(&Change::Promote { id: 2 }, &cs), Ok(false));
        assert_eq!(
            m.check(
                &Change::Remove {
                    id: 9,
                    force: false
                },
                &cs
            ),
            Ok(false)
        );
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
            (
                Change::Remove {
                    id: 8,
                    force: false,
                },
                "ERR_CHANGE_REFUSED",
                "not a member",
            ),
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
        let add = Membership::conf_change(&pending(Change::AddLearner {
            id: 4,
            address: "d:4".into(),
        }));
        assert_eq!(
            add.enter_joint(),
            None,
            "adding a learner is a simple change"
        );
        for change in [
            Change::Promote { id: 4 },
            Change::Remove {
                id: 2,
                force: false,
            },
        ] {
            let cc = Membership::conf_change(&pending(change));
            assert_eq!(cc.enter_joint(), Some(true), "joint, left automatically");
            assert_eq!(cc.context.as_ref(), 40u64.to_be_bytes());
        }
    }
}
