//! The node's side of membership changes (see [`crate::membership`]): the
//! requests of this node's callers, applying membership entries and
//! configuration changes, and the leader carrying out a pending change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState, Entry};
use raft::{StateRole, INVALID_ID};

use super::worker::Worker;
use super::{MemberEntry, Outcome};
use crate::command::RequestId;
use crate::error::{Error, Result};
use crate::membership::{is_joint, Change, Membership, Pending, Refusal, Request, ENTRY_CONTEXT};
use crate::storage::Engine;

/// How long a leader waits for a leadership transfer it started (to remove
/// itself) before it starts another.
const TRANSFER_RETRY: Duration = Duration::from_secs(2);

/// This node's membership bookkeeping.
pub(super) struct Changes {
    /// Callers of this node waiting for a change, by token, with their
    /// deadlines and timeouts.
    waiting: HashMap<u64, (Instant, Duration)>,
    /// The pending change (its request index) this node, as leader,
    /// proposed the configuration change or cancel for, and in which term.
    acted_on: Option<(u64, u64)>,
    /// When this leader last started handing leadership over to be removed.
    transfer_started: Option<Instant>,
    /// The tick at which this node last became leader.
    pub leading_since: u64,
    /// The tick at which each peer was last heard from.
    pub heard: HashMap<u64, u64>,
    /// The membership record changed since the transport last heard of it.
    pub dirty: bool,
    /// Answers of this node's callers, held until the members they name are
    /// published (a caller reading `members()` next sees them).
    answers: Vec<(u64, Result<Outcome>)>,
    /// Tokens of this node's callers that asked again for the change in
    /// progress (a retry), with its request index: they get its answer.
    joined: Vec<(u64, u64)>,
}

impl Changes {
    pub fn new() -> Self {
        Changes {
            waiting: HashMap::new(),
            acted_on: None,
            transfer_started: None,
            leading_since: 0,
            heard: HashMap::new(),
            // The transport learns the record at start.
            dirty: true,
            answers: Vec::new(),
            joined: Vec::new(),
        }
    }
}

/// The members of `m` in configuration `cs`, for callers.
pub(super) fn member_entries(m: &Membership, cs: &ConfState) -> Vec<MemberEntry> {
    m.members
        .iter()
        .map(|(id, address)| MemberEntry {
            id: *id,
            address: address.clone(),
            voter: cs.voters.contains(id) || cs.voters_outgoing.contains(id),
        })
        .collect()
}

impl<E: Engine> Worker<E> {
    /// A caller of this node asks for `change`.
    pub(super) fn on_change_request(&mut self, token: u64, change: Change, timeout: Duration) {
        let result = self.propose_change(token, change);
        match result {
            Ok(()) => {
                self.changes
                    .waiting
                    .insert(token, (Instant::now() + timeout, timeout));
            }
            Err(e) => self.outbox.read(token, Err(e)),
        }
    }

    fn propose_change(&mut self, token: u64, change: Change) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let store = self.raft_group.store();
        if store.membership().is_none() {
            return Err(Error::ChangeRefused(format!(
                "node {} keeps no membership record: the members of a group that runs in one \
                 process (LocalCluster, or MetaStore.open without nodeId) are fixed, and a \
                 joining node has no record until the group added it",
                self.id
            )));
        }
        // The rest is checked when the group applies the request, in log
        // order: this node's view may lag behind a change just completed.
        // An address this node dials another member at is refused here too
        // (the group checks only the addresses every node agrees on).
        Membership::check_form(&change)?;
        if let (Change::AddLearner { id, address }, Some(m)) = (&change, store.membership()) {
            let judged_here =
                |other: &u64| m.initial.contains(other) && !m.members.contains_key(id);
            if let Some(other) = m.holder_of(address, true).filter(judged_here) {
                return Err(Error::ChangeRefused(format!(
                    "address {address} is node {other}'s"
                )));
            }
        }
        if self.raft_group.raft.leader_id == INVALID_ID {
            return Err(Error::ProposalDropped(
                "no leader is known; the change was not proposed".into(),
            ));
        }
        let by = RequestId {
            node: self.id,
            epoch: self.epoch,
            token,
        };
        let data = Request::Change { by, change }.encode();
        self.raft_group
            .propose(ENTRY_CONTEXT.to_vec(), data)
            .map_err(|e| Error::ProposalDropped(format!("the change was not proposed: {e}")))
    }

    fn mine(&self, by: &RequestId) -> bool {
        by.node == self.id && by.epoch == self.epoch
    }

    /// Answers a caller of this node waiting for the change `by` asked for.
    fn answer_change(&mut self, by: &RequestId, result: Result<Outcome>) {
        if self.mine(by) && self.changes.waiting.remove(&by.token).is_some() {
            self.changes.answers.push((by.token, result));
        }
    }

    /// Answers the change requested at `index`: its requester and the
    /// callers of this node that asked for it again meanwhile.
    fn answer_pending(&mut self, p: &Pending, result: Result<Outcome>) {
        let joined: Vec<u64> = self
            .changes
            .joined
            .iter()
            .filter(|(index, _)| *index == p.index)
            .map(|(_, t)| *t)
            .collect();
        self.changes.joined.retain(|(index, _)| *index != p.index);
        for token in joined {
            if self.changes.waiting.remove(&token).is_some() {
                self.changes.answers.push((token, result.clone()));
            }
        }
        self.answer_change(&p.by, result);
    }

    /// Times out the callers whose deadline passed: their change may still
    /// happen.
    pub(super) fn expire_changes(&mut self, now: Instant) {
        if self.changes.waiting.is_empty() {
            return;
        }
        let expired: Vec<(u64, Duration)> = self
            .changes
            .waiting
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(t, (_, timeout))| (*t, *timeout))
            .collect();
        for (t, timeout) in expired {
            self.changes.waiting.remove(&t);
            self.outbox.read(t, Err(Error::Timeout(timeout)));
        }
    }

    /// Everyone waiting ends with `err` (the node stopped or failed).
    pub(super) fn reject_changes(&mut self, err: &Error) {
        for (t, result) in self.changes.answers.drain(..) {
            self.outbox.read(t, result);
        }
        for (t, _) in self.changes.waiting.drain() {
            self.outbox.read(t, Err(err.clone().in_flight()));
        }
    }

    /// Applies a membership entry (a request or a cancel) at `index`.
    pub(super) fn apply_membership_entry(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let store = self.raft_group.store();
        let (Some(request), Some(mut m)) = (Request::decode(data), store.membership().cloned())
        else {
            // Not a request, or a group that keeps no record: skipped alike everywhere.
            return Ok(());
        };
        match request {
            Request::Change { by, change } => {
                let cs = store.conf_state();
                match m.check(&change, &cs) {
                    Ok(true) => {
                        m.pending = Some(Pending { index, by, change });
                        self.raft_group.mut_store().set_membership(m)?;
                    }
                    Ok(false) => {
                        let members = member_entries(&m, &cs);
                        self.answer_change(&by, Ok(Outcome::Membership(members)));
                    }
                    // The same change asked again while it runs: the
                    // asker waits for it.
                    Err(_)
                        if self.mine(&by)
                            && m.pending.as_ref().is_some_and(|p| p.change == change) =>
                    {
                        let at = m.pending.as_ref().map_or(0, |p| p.index);
                        self.changes.joined.push((at, by.token));
                    }
                    Err(e) => self.answer_change(&by, Err(e)),
                }
            }
            Request::Cancel {
                index: of,
                why,
                message,
            } => {
                if let Some(p) = m.pending.take_if(|p| p.index == of) {
                    self.raft_group.mut_store().set_membership(m)?;
                    let e = match why {
                        Refusal::LearnerBehind => Error::LearnerBehind(message),
                        Refusal::Refused | Refusal::Wait => Error::ChangeRefused(message),
                    };
                    self.answer_pending(&p, Err(e));
                }
            }
        }
        Ok(())
    }

    /// Applies a configuration change entry. Only the one carrying out the
    /// pending change, or leaving a joint configuration, changes anything;
    /// any other (an outdated proposal) is skipped alike on every node.
    pub(super) fn apply_conf_change_entry(&mut self, e: &Entry) -> Result<()> {
        let store = self.raft_group.store();
        let Some(mut m) = store.membership().cloned() else {
            return Ok(());
        };
        let Ok(cc) = ConfChangeV2::parse_from_bytes(&e.data) else {
            return Ok(());
        };
        let before = store.conf_state();
        let leaving = cc.changes.is_empty();
        if leaving {
            if !is_joint(&before) {
                return Ok(());
            }
        } else {
            let context = <[u8; 8]>::try_from(cc.context.as_ref())
                .ok()
                .map(u64::from_be_bytes);
            let matches = m.pending.as_ref().is_some_and(|p| Some(p.index) == context);
            if !matches || is_joint(&before) {
                return Ok(());
            }
        }
        let cs = match self.raft_group.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                // raft-rs refused it the same way on every node.
                if let Some(p) = m.pending.take() {
                    self.raft_group.mut_store().set_membership(m)?;
                    let e = Error::ChangeRefused(format!("{}: {err}", p.change));
                    self.answer_pending(&p, Err(e));
                }
                return Ok(());
            }
        };
        self.raft_group.mut_store().set_conf_state(cs.clone())?;
        if !is_joint(&cs) {
            if let Some(p) = m.pending.take() {
                m.carry_out(&p);
                let members = member_entries(&m, &cs);
                self.answer_pending(&p, Ok(Outcome::Membership(members)));
            }
        }
        self.raft_group.mut_store().set_membership(m)?;
        self.changes.dirty = true;
        Ok(())
    }

    /// Tells the transport about a changed membership and publishes it,
    /// then answers the callers whose change completed; a node that finds
    /// itself removed stops serving.
    pub(super) fn after_membership_change(&mut self) {
        if std::mem::take(&mut self.changes.dirty) {
            if let Some(m) = self.raft_group.store().membership() {
                self.transport.set_members(m);
                let removed = m.removed.contains(&self.id);
                self.publish_peers(Instant::now());
                if removed && self.failed.is_none() {
                    self.fail(Error::Removed(self.id));
                }
            }
        }
        for (t, result) in self.changes.answers.drain(..) {
            self.outbox.read(t, result);
        }
    }

    /// The leader carries out the pending change (see the module doc of
    /// [`crate::membership`]); called once per loop iteration.
    pub(super) fn drive_membership(&mut self) {
        let raft = &self.raft_group.raft;
        if raft.state != StateRole::Leader || self.failed.is_some() {
            return;
        }
        let store = raft.raft_log.store();
        let Some(m) = store.membership() else {
            return;
        };
        // raft-rs takes one configuration change at a time (it would turn
        // another into an empty entry).
        // Nothing to do without a change in progress (a joint configuration
        // always has one: the change completes when the group leaves it).
        if m.pending.is_none() || raft.has_pending_conf() {
            return;
        }
        let cs = store.conf_state();
        let term = raft.term;
        if is_joint(&cs) {
            // raft-rs leaves a joint configuration by itself when the leader
            // that entered it applies it; a leader that took over in the
            // middle may not, so it leaves explicitly.
            let _ = self
                .raft_group
                .propose_conf_change(Vec::new(), ConfChangeV2::default());
            return;
        }
        let Some(p) = m.pending.clone() else {
            return;
        };
        if self.changes.acted_on == Some((p.index, term)) {
            return;
        }
        let refusal = match &p.change {
            Change::AddLearner { .. } => None,
            Change::Promote { id } => self.learner_behind(*id),
            Change::Remove { id, force } => {
                if *id == self.id {
                    self.hand_over_leadership(&cs);
                    return;
                }
                if *force {
                    None
                } else {
                    self.removal_loses_quorum(*id, &cs)
                }
            }
        };
        let proposed = match refusal {
            Some((Refusal::Wait, _)) => return,
            Some((why, message)) => {
                let data = Request::Cancel {
                    index: p.index,
                    why,
                    message,
                }
                .encode();
                self.raft_group.propose(ENTRY_CONTEXT.to_vec(), data)
            }
            None => self
                .raft_group
                .propose_conf_change(Vec::new(), Membership::conf_change(&p)),
        };
        if proposed.is_ok() {
            self.changes.acted_on = Some((p.index, term));
        }
    }

    /// Whether the leader heard from `peer` within an election timeout;
    /// `None` while it has led for less than that (it cannot tell yet).
    fn answers_leader(&self, peer: u64) -> Option<bool> {
        let window = self.settings.election_ticks;
        if self.ticks < self.changes.leading_since + window {
            return None;
        }
        Some(
            peer == self.id
                || self
                    .changes
                    .heard
                    .get(&peer)
                    .is_some_and(|t| self.ticks < t + window),
        )
    }

    /// Why learner `id` may not be promoted yet, if it may not: it must
    /// answer the leader (a voter that never answers could cost the group
    /// its quorum) and be close to the commit index.
    fn learner_behind(&self, id: u64) -> Option<(Refusal, String)> {
        match self.answers_leader(id) {
            None => return Some((Refusal::Wait, String::new())),
            Some(false) => {
                return Some((
                    Refusal::LearnerBehind,
                    format!(
                        "node {id} has not answered the leader within an election timeout; \
                         promote it once it runs and caught up"
                    ),
                ))
            }
            Some(true) => {}
        }
        let raft = &self.raft_group.raft;
        let commit = raft.raft_log.committed;
        let matched = raft.prs().get(id).map_or(0, |p| p.matched);
        let lag = commit.saturating_sub(matched);
        let max = self.settings.promote_max_lag;
        (lag > max).then(|| {
            (
                Refusal::LearnerBehind,
                format!(
                    "node {id} is {lag} entries behind the leader's commit index {commit} \
                     (at most {max} for a promotion); promote it once it caught up"
                ),
            )
        })
    }

    /// Why removing voter `id` would leave the group without a live quorum,
    /// if it would.
    fn removal_loses_quorum(&self, id: u64, cs: &ConfState) -> Option<(Refusal, String)> {
        if !cs.voters.contains(&id) {
            return None;
        }
        if self.answers_leader(self.id).is_none() {
            // A new leader has not heard from everyone yet: wait.
            return Some((Refusal::Wait, String::new()));
        }
        let remaining: Vec<u64> = cs.voters.iter().copied().filter(|v| *v != id).collect();
        let live = remaining
            .iter()
            .filter(|v| self.answers_leader(**v) == Some(true))
            .count();
        let quorum = remaining.len() / 2 + 1;
        (live < quorum).then(|| {
            (
                Refusal::Refused,
                format!(
                    "removing node {id} would leave {} voters of which {live} answer the leader, \
                     fewer than a quorum ({quorum}); remove with force to do it anyway",
                    remaining.len()
                ),
            )
        })
    }

    /// The leader is to be removed: it hands leadership to the voter with
    /// the most of the log first; the new leader then carries out the change.
    fn hand_over_leadership(&mut self, cs: &ConfState) {
        let now = Instant::now();
        if self
            .changes
            .transfer_started
            .is_some_and(|t| now.duration_since(t) < TRANSFER_RETRY)
        {
            return;
        }
        let raft = &self.raft_group.raft;
        let to = cs
            .voters
            .iter()
            .filter(|v| **v != self.id)
            .max_by_key(|v| raft.prs().get(**v).map_or(0, |p| p.matched))
            .copied();
        if let Some(to) = to {
            self.raft_group.transfer_leader(to);
            self.changes.transfer_started = Some(now);
        }
    }
}
