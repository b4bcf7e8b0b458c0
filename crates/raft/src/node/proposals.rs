//! This node's writes, from the batch that carries them to their outcome:
//! registered when the batch arrives from the batcher, proposed (or held
//! while no leader is known), and pending until applied, dropped, timed out
//! or closed.
//!
//! Invariant: a token leaves `pending` exactly once, and whoever removes it
//! produces exactly one completion for it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use metastore_batch::for_each_proposal;
use raft::{StateRole, INVALID_ID};

use super::worker::{ProposedBatch, Worker};
use crate::command;
use crate::error::Error;
use crate::storage::Engine;

/// Tokens are mostly counters; a multiply-shift mix spreads them well and is
/// much cheaper than SipHash on the hot path.
#[derive(Default)]
pub(super) struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let x = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

pub(super) type TokenSet = HashSet<u64, BuildHasherDefault<TokenHasher>>;
pub(super) type Tokens = Arc<[u64]>;

/// A batch the node could not propose yet (no leader known).
pub(super) struct HeldBatch {
    pub data: Vec<u8>,
    pub tokens: Tokens,
}

#[derive(Default)]
pub(super) struct Proposals {
    pending: TokenSet,
    /// Batches in arrival order; deadlines are monotonic because every batch
    /// gets the same timeout.
    deadlines: VecDeque<(Instant, Tokens)>,
    /// Batches this node appended as leader, by log index: if a different
    /// entry is applied at that index, they were dropped.
    at_index: BTreeMap<u64, Tokens>,
    /// Batches this node forwarded to a leader, oldest first: it learns no
    /// index for them, so they resolve on apply, or end unknown when the
    /// leader changes or a snapshot may have taken them in.
    forwarded: VecDeque<Tokens>,
    pub held: VecDeque<HeldBatch>,
}

impl Proposals {
    /// Starts tracking a batch. Returns how many of its tokens were already
    /// pending (a caller reusing a token): those get no second completion.
    pub fn register(&mut self, tokens: &Tokens, deadline: Instant) -> usize {
        let dups = tokens.iter().filter(|t| !self.pending.insert(**t)).count();
        self.deadlines.push_back((deadline, Arc::clone(tokens)));
        dups
    }

    /// Removes a token; true if it was pending (the caller then completes it).
    pub fn resolve(&mut self, token: u64) -> bool {
        self.pending.remove(&token)
    }

    pub fn is_pending(&self, token: u64) -> bool {
        self.pending.contains(&token)
    }

    /// Requests of this node still waiting for their outcome.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn track_index(&mut self, index: u64, tokens: &Tokens) {
        self.at_index.insert(index, Arc::clone(tokens));
    }

    /// A batch was forwarded to the leader.
    pub fn track_forwarded(&mut self, tokens: &Tokens) {
        // Batches answered already leave from the front.
        while self
            .forwarded
            .front()
            .is_some_and(|b| b.iter().all(|t| !self.pending.contains(t)))
        {
            self.forwarded.pop_front();
        }
        self.forwarded.push_back(Arc::clone(tokens));
    }

    /// The fate of the forwarded batches can no longer be told from here:
    /// each pending token of theirs goes to `unknown`.
    pub fn forget_forwarded(&mut self, mut unknown: impl FnMut(u64)) {
        for b in std::mem::take(&mut self.forwarded) {
            for &t in b.iter() {
                if self.pending.remove(&t) {
                    unknown(t);
                }
            }
        }
    }

    /// After the entry at `index` was applied: whatever this node proposed at
    /// or below it and is still pending was overwritten by another entry.
    pub fn after_apply(&mut self, index: u64, mut dropped: impl FnMut(u64)) {
        while let Some(entry) = self.at_index.first_entry() {
            if *entry.key() > index {
                break;
            }
            for &t in entry.remove().iter() {
                if self.pending.remove(&t) {
                    dropped(t);
                }
            }
        }
    }

    /// A snapshot replaced the log up to `index`: the fate of batches at or
    /// below it cannot be told from here, so their deadlines decide.
    pub fn forget_indexes_up_to(&mut self, index: u64) {
        self.at_index = self.at_index.split_off(&(index + 1));
    }

    /// The next deadline, if any batch is still tracked.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(d, _)| *d)
    }

    /// Times out every pending token whose deadline passed: `timed_out(token,
    /// proposed)`, where `proposed` is false for a write of a batch still
    /// held (never proposed, so certainly not applied).
    pub fn expire(&mut self, now: Instant, mut timed_out: impl FnMut(u64, bool)) {
        let held: TokenSet = self
            .held
            .iter()
            .flat_map(|b| b.tokens.iter().copied())
            .collect();
        while self.deadlines.front().is_some_and(|(d, _)| *d <= now) {
            let Some((_, tokens)) = self.deadlines.pop_front() else {
                break;
            };
            for &t in tokens.iter() {
                if self.pending.remove(&t) {
                    timed_out(t, !held.contains(&t));
                }
            }
        }
        // Held batches whose every token is gone need not be proposed at all.
        let pending = &self.pending;
        self.held
            .retain(|b| b.tokens.iter().any(|t| pending.contains(t)));
    }

    /// Rejects everything (the node is stopping or failed): `rejected(token,
    /// proposed)`, where `proposed` is false for the writes of batches still
    /// held (never proposed, so certainly not applied).
    pub fn drain(&mut self, mut rejected: impl FnMut(u64, bool)) {
        for b in &self.held {
            for t in b.tokens.iter() {
                if self.pending.remove(t) {
                    rejected(*t, false);
                }
            }
        }
        for t in self.pending.drain() {
            rejected(t, true);
        }
        self.deadlines.clear();
        self.at_index.clear();
        self.forwarded.clear();
        self.held.clear();
    }
}

impl<E: Engine> Worker<E> {
    pub(super) fn on_batch(&mut self, b: ProposedBatch) {
        let mut tokens = Vec::with_capacity(b.count);
        let _ = for_each_proposal(&b.data, |c| {
            if let Ok(id) = command::request_id(c) {
                tokens.push(id.token);
            }
        });
        // Commands that cannot be tracked (never expected: this node encoded
        // them) are released from the batcher's in-flight count at once.
        self.outbox
            .untracked_writes(b.count.saturating_sub(tokens.len()));
        if let Some(e) = &self.failed {
            for token in tokens {
                self.outbox.write(token, Err(e.clone()));
            }
            return;
        }
        let tokens: Tokens = tokens.into();
        let deadline = Instant::now() + self.settings.proposal_timeout;
        let reused = self.writes.register(&tokens, deadline);
        self.outbox.untracked_writes(reused);
        self.propose(b.data, tokens);
    }

    /// Proposes a batch, or holds it while no leader is known. Batches leave
    /// in arrival order: one that arrives while others are held queues
    /// behind them, even if a leader became known in the meantime.
    fn propose(&mut self, data: Vec<u8>, tokens: Tokens) {
        if self.writes.held.is_empty() && self.can_propose() {
            self.propose_now(data, tokens);
        } else {
            self.writes.held.push_back(HeldBatch { data, tokens });
            self.propose_held();
        }
    }

    /// Whether a proposal can go out now: a leader is known and is not
    /// handing over leadership (raft-rs drops proposals then).
    fn can_propose(&self) -> bool {
        let raft = &self.raft_group.raft;
        raft.leader_id != INVALID_ID && raft.lead_transferee.is_none()
    }

    /// Proposes the batches held for lack of a leader, in order, once one is
    /// known.
    pub(super) fn propose_held(&mut self) {
        if self.writes.held.is_empty() || !self.can_propose() {
            return;
        }
        for b in std::mem::take(&mut self.writes.held) {
            if b.tokens.iter().any(|t| self.writes.is_pending(*t)) {
                self.propose_now(b.data, b.tokens);
            }
        }
    }

    fn propose_now(&mut self, data: Vec<u8>, tokens: Tokens) {
        let raft = &self.raft_group.raft;
        let leader = raft.state == StateRole::Leader;
        let before = raft.raft_log.last_index();
        match self.raft_group.propose(Vec::new(), data) {
            Ok(()) => {
                // A follower forwards to the leader and learns nothing of the
                // index; its proposals resolve on apply or time out.
                let after = self.raft_group.raft.raft_log.last_index();
                if leader && after > before {
                    self.writes.track_index(after, &tokens);
                } else if !leader {
                    self.writes.track_forwarded(&tokens);
                }
            }
            Err(e) => {
                let msg = format!("node {} could not propose: {e}", self.id);
                for &t in tokens.iter() {
                    if self.writes.resolve(t) {
                        self.outbox
                            .write(t, Err(Error::ProposalDropped(msg.clone())));
                    }
                }
            }
        }
    }

    /// Times out the writes whose deadline passed: unknown for those
    /// proposed, not applied for those still held for lack of a leader.
    pub(super) fn expire_writes(&mut self, now: Instant) {
        if self.writes.next_deadline().is_some_and(|d| d <= now) || !self.writes.held.is_empty() {
            let timeout = self.settings.proposal_timeout;
            let outbox = &mut self.outbox;
            self.writes.expire(now, |t, proposed| {
                let e = if proposed {
                    Error::Timeout(timeout)
                } else {
                    Error::ProposalDropped(format!(
                        "no leader was known within {timeout:?}; the write was never proposed"
                    ))
                };
                outbox.write(t, Err(e))
            });
        }
    }

    /// The writes this node forwarded end unknown at once (`why`), instead
    /// of at their deadline: the leader they went to may have dropped them
    /// (raft-rs drops proposals while it hands leadership over, and a leader
    /// that lost its term never appends them), or a snapshot may hold them.
    /// A client with a session sends them again at once.
    pub(super) fn forget_forwarded(&mut self, why: &str) {
        let outbox = &mut self.outbox;
        self.writes.forget_forwarded(|t| {
            outbox.write(t, Err(Error::OutcomeUnknown(why.to_string())));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use metastore_batch::{BatchConfig, ProposalBatcher};
    use raft::eraftpb::{Message, MessageType};
    use raft::RawNode;

    use crate::command::{encode_command, CommandOp, RequestId};
    use crate::config::{ClusterConfig, EngineKind};
    use crate::node::outbox::Outbox;
    use crate::stats::SharedStats;
    use crate::storage::MemoryEngine;
    use crate::transport::{Inbound, Transport};

    #[derive(Default)]
    struct Captured(Mutex<Vec<Message>>);

    impl Transport for Captured {
        fn send(&self, msgs: Vec<Message>) {
            self.0.lock().unwrap().extend(msgs);
        }
    }

    type Answers = Arc<Mutex<Vec<crate::node::Completion>>>;

    /// Node 1 of a 3-node memory group, not yet knowing any leader, with its
    /// sent messages and its answers captured.
    fn follower() -> (
        Worker<MemoryEngine>,
        Arc<Captured>,
        ProposalBatcher,
        Answers,
    ) {
        let mut cluster = ClusterConfig {
            nodes: 3,
            ..Default::default()
        };
        cluster.storage.engine = EngineKind::Memory;
        let cfg = cluster.node_config(1);
        let engine = MemoryEngine::new(&cfg.peers);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raft_group =
            RawNode::new(&super::super::raft_config(&cfg, 0), engine, &logger).unwrap();
        let sent = Arc::new(Captured::default());
        let batcher =
            ProposalBatcher::start(BatchConfig::default(), |_: Vec<u8>, _: usize| {}).unwrap();
        let answers: Answers = Arc::default();
        let sink = Arc::clone(&answers);
        let outbox = Outbox::new(
            Arc::new(move |c| sink.lock().unwrap().extend(c)),
            batcher.handle(),
        );
        let stats = Arc::new(SharedStats::new(Arc::default()));
        let transport: Arc<dyn Transport> = sent.clone();
        let worker = Worker::new(
            &cfg,
            7,
            super::super::worker::SyncPolicy::Never,
            raft_group,
            transport,
            outbox,
            stats,
        );
        (worker, sent, batcher, answers)
    }

    fn heartbeat(from: u64, term: u64) -> Message {
        Message {
            msg_type: MessageType::MsgHeartbeat,
            from,
            to: 1,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn a_forwarded_write_ends_unknown_at_once_when_the_leader_changes() {
        let (mut w, sent, _batcher, answers) = follower();
        w.on_inbound(Inbound::Raft(vec![heartbeat(2, 1)]));
        w.end_iteration(false);
        w.on_batch(put(1, b"v"));
        w.end_iteration(false);
        assert!(sent
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgPropose && m.to == 2));
        assert!(answers.lock().unwrap().is_empty(), "waits for its entry");
        // Node 3 leads now: node 2 may have dropped the write (a transfer) or
        // never appended it; node 1 cannot tell, and says so at once.
        w.on_inbound(Inbound::Raft(vec![heartbeat(3, 2)]));
        w.end_iteration(false);
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), 1);
        let e = answers[0].result.clone().unwrap_err();
        assert_eq!(
            (e.code(), e.outcome()),
            ("ERR_TIMEOUT", crate::ErrorOutcome::Unknown)
        );
        assert!(e.to_string().contains("no longer leads"), "{e}");
    }

    #[test]
    fn a_write_held_for_lack_of_a_leader_times_out_not_applied() {
        let (mut w, _sent, _batcher, answers) = follower();
        w.on_batch(put(1, b"v"));
        assert_eq!(w.writes.held.len(), 1);
        w.expire_writes(Instant::now() + Duration::from_secs(60));
        w.outbox.deliver();
        let answers = answers.lock().unwrap();
        let e = answers[0].result.clone().unwrap_err();
        assert_eq!(
            (e.code(), e.outcome()),
            ("ERR_PROPOSAL_DROPPED", crate::ErrorOutcome::NotApplied)
        );
    }

    fn put(token: u64, value: &[u8]) -> ProposedBatch {
        let id = RequestId {
            node: 1,
            epoch: 7,
            token,
        };
        ProposedBatch {
            data: encode_command(id, None, CommandOp::Put { key: b"k", value }),
            count: 1,
        }
    }

    #[test]
    fn a_batch_never_overtakes_one_held_for_lack_of_a_leader() {
        let (mut w, sent, _batcher, _) = follower();
        w.on_batch(put(1, b"first"));
        assert_eq!(w.writes.held.len(), 1, "held: no leader is known");
        // In one loop iteration, node 1 hears from leader 2, then gets a
        // second batch.
        let heartbeat = Message {
            msg_type: MessageType::MsgHeartbeat,
            from: 2,
            to: 1,
            term: 1,
            ..Default::default()
        };
        w.on_inbound(Inbound::Raft(vec![heartbeat]));
        w.on_batch(put(2, b"second"));
        w.end_iteration(false);
        let forwarded: Vec<Vec<u8>> = sent
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgPropose && m.to == 2)
            .flat_map(|m| m.entries.iter().map(|e| e.data.to_vec()))
            .collect();
        assert_eq!(
            forwarded,
            vec![put(1, b"first").data, put(2, b"second").data]
        );
    }

    #[test]
    fn every_token_resolves_once() {
        let mut p = Proposals::default();
        let now = Instant::now();
        let a: Tokens = vec![1, 2, 3].into();
        let b: Tokens = vec![4, 5].into();
        assert_eq!(p.register(&a, now + Duration::from_secs(1)), 0);
        assert_eq!(p.register(&b, now + Duration::from_secs(2)), 0);
        p.track_index(10, &a);
        assert!(p.resolve(2));
        let mut dropped = vec![];
        p.after_apply(10, |t| dropped.push(t));
        assert_eq!(dropped, vec![1, 3]);
        let mut timed = vec![];
        p.expire(now + Duration::from_secs(1), |t, _| timed.push(t));
        assert!(timed.is_empty());
        p.expire(now + Duration::from_secs(2), |t, _| timed.push(t));
        assert_eq!(timed, vec![4, 5]);
        assert_eq!(p.pending_len(), 0);
        assert_eq!(p.register(&vec![7, 7].into(), now), 1);
    }
}
