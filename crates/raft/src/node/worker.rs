//! The node thread: its state, the event loop, inbound messages, ticks,
//! failure and shutdown. Each loop iteration drains what is queued, then runs
//! [`Worker::end_iteration`]: the `Ready` rounds (`ready.rs`), reads, timeouts,
//! log compaction, stats, and the delivery of the iteration's answers. With
//! nothing queued the thread waits on its bell ([`crate::bell`]), driving
//! its transport's runtime meanwhile.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, Receiver, TryRecvError};
use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole, INVALID_ID};

use super::apply::AppliedLog;
use super::membership::Changes;
use super::outbox::Outbox;
use super::panic_message;
use super::persist::AsyncWriter;
use super::proposals::Proposals;
use super::read::Reads;
use crate::bell::{Bell, Inbox, Timer};
use crate::config::NodeConfig;
use crate::error::Error;
use crate::stats::{PeerState, RaftStats, SharedStats};
use crate::storage::{Engine, SyncOutcome};
use crate::transport::{Inbound, Transport};

/// What the handle sends to its node thread besides batches.
pub(super) enum NodeMsg {
    Get {
        token: u64,
        key: Vec<u8>,
    },
    /// Hand leadership to voter `to` (a follower forwards it to the leader).
    TransferLeader {
        to: u64,
    },
    ChangeMembership {
        token: u64,
        change: crate::membership::Change,
        timeout: Duration,
    },
    Stop,
}

/// What the batcher hands to the node thread: one encoded batch of `count`
/// commands.
pub(super) struct ProposedBatch {
    pub data: Vec<u8>,
    pub count: usize,
}

/// Items taken from one channel per loop iteration before handling `Ready`,
/// so one busy source cannot starve the others.
const DRAIN_LIMIT: usize = 4096;
/// How often the engine's size estimate (a RocksDB property query) is refreshed.
const STORAGE_STATS_EVERY: Duration = Duration::from_millis(200);
/// How often the members and their progress are published.
const PEERS_EVERY: Duration = Duration::from_millis(50);

/// Which writes are synced before what depends on them goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SyncPolicy {
    /// Every `Ready` raft requires on disk (`storage.sync: true`).
    Always,
    /// Only changes of term or vote (`storage.sync: false`): a node that
    /// forgot its vote after a power loss could vote twice in a term, and
    /// these writes come once per election, not once per request.
    TermAndVote,
    /// Nothing (the memory engine keeps nothing across a crash).
    Never,
}

/// The node's settings, fixed for its life.
pub(super) struct Settings {
    pub tick_interval: Duration,
    /// How long a request may wait for its outcome.
    pub proposal_timeout: Duration,
    /// Which `Ready`s that raft requires on disk are synced.
    pub sync: SyncPolicy,
    /// Ticks after which a read index request with no answer is asked again.
    pub reissue_ticks: u64,
    /// A one-voter group campaigns at once instead of waiting for an
    /// election timeout.
    pub single_voter: bool,
    /// See [`crate::config::RaftSettings::promote_max_lag`].
    pub promote_max_lag: u64,
    /// Ticks of an election timeout.
    pub election_ticks: u64,
}

/// The figures the node thread publishes for [`RaftNode::stats`](super::RaftNode::stats).
pub(super) struct StatsPublisher {
    shared: Arc<SharedStats>,
    /// `Ready`s written to the log.
    log_writes: u64,
    pub duplicate_writes: u64,
    storage_published_at: Option<Instant>,
    peers_published_at: Option<Instant>,
    /// Whether the peers last published were a leader's view (with progress).
    peers_leading: bool,
}

/// The state owned by the node thread.
pub(super) struct Worker<E: Engine> {
    pub id: u64,
    /// This start's request-id epoch (see [`crate::command`]).
    pub epoch: u64,
    pub settings: Settings,
    pub raft_group: RawNode<E>,
    pub transport: Arc<dyn Transport>,
    /// This node's writes, from proposal to outcome.
    pub writes: Proposals,
    pub reads: Reads,
    pub writer: AsyncWriter,
    pub applied_log: AppliedLog,
    pub outbox: Outbox,
    pub(super) stats: StatsPublisher,
    pub ticks: u64,
    /// The term and vote of the last hard state written.
    pub term_and_vote: (u64, u64),
    /// The leader as of the last check, to notice a change.
    pub last_leader: u64,
    /// Set once the node hit a storage error or a panic: from then on it only
    /// rejects requests, until it is stopped.
    pub failed: Option<Error>,
    /// A snapshot message held while the engine prepares its install.
    held_snapshot: Option<Message>,
    /// Membership changes asked for here, and the leader's part in them.
    pub(super) changes: Changes,
    /// As leader: the followers that forwarded proposals not yet committed,
    /// each with the log's last index when it last forwarded one. Each
    /// commit goes to them at once (they wait to apply their entries); the
    /// other followers learn it with the next append or heartbeat.
    forwarders: HashMap<u64, u64>,
    /// The commit index last sent to forwarders.
    commit_told: u64,
}

impl<E: Engine> Worker<E> {
    pub fn new(
        cfg: &NodeConfig,
        epoch: u64,
        sync: SyncPolicy,
        raft_group: RawNode<E>,
        transport: Arc<dyn Transport>,
        outbox: Outbox,
        stats: Arc<SharedStats>,
    ) -> Self {
        let term_and_vote = (raft_group.raft.term, raft_group.raft.vote);
        let mut worker = Worker {
            id: cfg.id,
            epoch,
            settings: Settings {
                tick_interval: cfg.raft.tick_interval,
                proposal_timeout: cfg.raft.proposal_timeout,
                sync,
                reissue_ticks: (cfg.raft.heartbeat_tick as u64 * 2).max(2),
                single_voter: {
                    let voters = raft_group.raft.prs().conf().voters().ids();
                    voters.len() == 1 && voters.contains(cfg.id)
                },
                promote_max_lag: cfg.raft.promote_max_lag,
                election_ticks: cfg.raft.election_tick as u64,
            },
            raft_group,
            transport,
            writes: Proposals::default(),
            reads: Reads::default(),
            writer: AsyncWriter::default(),
            applied_log: AppliedLog::new(cfg.raft.snapshot_count, cfg.raft.max_log_size),
            outbox,
            stats: StatsPublisher {
                shared: stats,
                log_writes: 0,
                duplicate_writes: 0,
                storage_published_at: None,
                peers_published_at: None,
                peers_leading: false,
            },
            ticks: 0,
            term_and_vote,
            last_leader: INVALID_ID,
            failed: None,
            held_snapshot: None,
            changes: Changes::new(),
            forwarders: HashMap::new(),
            commit_told: 0,
        };
        worker.publish_stats(Instant::now());
        worker
    }

    /// Runs the node until it is told to stop. `own`: the runtime the thread
    /// waits on when its transport lends none.
    pub fn run(
        mut self,
        inbox: Inbox,
        batches: Receiver<ProposedBatch>,
        mailbox: Receiver<NodeMsg>,
        own: tokio::runtime::Runtime,
    ) {
        let Inbox { rx: inbox, bell } = inbox;
        let lease = self.transport.lend_runtime();
        let runtime = lease.as_ref().map_or(&own, |l| l.runtime());
        let mut synced = self
            .raft_group
            .mut_store()
            .sync_outcomes(&bell)
            .unwrap_or_else(never);
        loop {
            let r = catch_unwind(AssertUnwindSafe(|| {
                self.serve(&inbox, &batches, &mailbox, &mut synced, &bell, runtime)
            }));
            match r {
                Ok(()) => break,
                Err(p) => {
                    let msg = panic_message(&*p);
                    let err =
                        Error::Internal(format!("node {} stopped after a panic: {msg}", self.id));
                    self.fail(err);
                    // Keep rejecting until stopped.
                }
            }
        }
        self.shutdown(&batches, &mailbox);
    }

    /// The event loop; returns when told to stop.
    fn serve(
        &mut self,
        inbox: &Receiver<Inbound>,
        batches: &Receiver<ProposedBatch>,
        mailbox: &Receiver<NodeMsg>,
        synced: &mut Receiver<SyncOutcome>,
        bell: &Bell,
        runtime: &tokio::runtime::Runtime,
    ) {
        if self.settings.single_voter
            && self.failed.is_none()
            && self.raft_group.raft.state != StateRole::Leader
        {
            // A one-node group need not wait for an election timeout.
            let _ = self.raft_group.campaign();
        }
        let interval = self.settings.tick_interval;
        let mut next_tick = Instant::now() + interval;
        let mut timer = Timer::default();
        loop {
            let mut stop = false;
            let mut events = false;
            let now = Instant::now();
            if now >= next_tick {
                self.on_tick();
                next_tick = (next_tick + interval).max(now);
                events = true;
            }
            match synced.try_recv() {
                Ok(r) => {
                    self.on_synced(r);
                    events = true;
                }
                Err(TryRecvError::Disconnected) => {
                    self.on_synced(Err("the WAL sync thread is gone".into()));
                    *synced = never();
                    events = true;
                }
                Err(TryRecvError::Empty) => {}
            }
            for m in inbox.try_iter().take(DRAIN_LIMIT) {
                self.on_inbound(m);
                events = true;
            }
            for b in batches.try_iter().take(DRAIN_LIMIT) {
                self.on_batch(b);
                events = true;
            }
            for _ in 0..DRAIN_LIMIT {
                match mailbox.try_recv() {
                    Ok(NodeMsg::Stop) | Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                    Ok(c) => {
                        self.on_command(c);
                        events = true;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if !events && !stop {
                bell.wait(runtime, next_tick, &mut timer);
                continue;
            }
            // Queued work means this node is under load: sync in the
            // background rather than block it.
            let busy = !inbox.is_empty() || !batches.is_empty();
            self.end_iteration(busy);
            if stop {
                return;
            }
        }
    }

    fn on_command(&mut self, c: NodeMsg) {
        match c {
            NodeMsg::Get { token, key } => self.on_get(token, key),
            NodeMsg::TransferLeader { to } => self.raft_group.transfer_leader(to),
            NodeMsg::ChangeMembership {
                token,
                change,
                timeout,
            } => self.on_change_request(token, change, timeout),
            NodeMsg::Stop => {}
        }
    }

    /// As leader, sends a commit that moved to the followers waiting for
    /// their forwarded proposals to commit (`forwarders`).
    pub(super) fn tell_forwarders(&mut self) {
        if self.forwarders.is_empty() {
            return;
        }
        let raft = &mut self.raft_group.raft;
        if raft.state != StateRole::Leader {
            self.forwarders.clear();
            return;
        }
        let committed = raft.raft_log.committed;
        if committed <= self.commit_told {
            return;
        }
        self.commit_told = committed;
        self.forwarders.retain(|&to, &mut waits_for| {
            if raft.prs().get(to).is_some() {
                raft.send_append(to);
            }
            waits_for > committed
        });
    }

    pub(super) fn on_inbound(&mut self, m: Inbound) {
        if self.failed.is_some() {
            return;
        }
        match m {
            Inbound::Raft(msgs) => {
                // Who answers the leader, for its membership checks.
                if let (Some(m), StateRole::Leader) = (msgs.first(), self.raft_group.raft.state) {
                    self.changes.heard.insert(m.from, self.ticks);
                }
                for m in msgs {
                    if m.get_msg_type() == MessageType::MsgPropose {
                        let from = m.from;
                        let _ = self.raft_group.step(m);
                        if self.raft_group.raft.state == StateRole::Leader {
                            let last = self.raft_group.raft.raft_log.last_index();
                            self.forwarders.insert(from, last);
                        }
                        continue;
                    }
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        // While one is being prepared, others are dropped:
                        // the leader sends another if it is still needed
                        // once this one is in, and replacing it could keep
                        // every preparation from finishing.
                        if self.held_snapshot.is_some() {
                            continue;
                        }
                        if self
                            .raft_group
                            .mut_store()
                            .prepare_snapshot(m.get_snapshot())
                        {
                            self.held_snapshot = Some(m);
                            continue;
                        }
                    }
                    if let Some(e) = self.lost_state(&m) {
                        self.fail(e);
                        return;
                    }
                    // Errors are stale or foreign messages; raft-rs ignores them.
                    let _ = self.raft_group.step(m);
                }
            }
            Inbound::Unreachable(peer) => self.raft_group.report_unreachable(peer),
            Inbound::SnapshotStatus { peer, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raft_group.report_snapshot(peer, status)
            }
        }
    }

    /// A leader's heartbeat says what it knows this node has: a commit index
    /// beyond this node's log means it acknowledged entries it no longer
    /// has (its data dir was lost or replaced). raft-rs would panic on it.
    fn lost_state(&self, m: &Message) -> Option<Error> {
        let last = self.raft_group.raft.raft_log.last_index();
        (m.get_msg_type() == MessageType::MsgHeartbeat
            && m.term >= self.raft_group.raft.term
            && m.commit > last)
            .then(|| {
                Error::StateLost(format!(
                    "node {} has lost its state: its leader, node {}, knows it acknowledged the \
                     log up to index {}, but its log ends at {last}; a node whose state is gone \
                     rejoins only as a new member under a new id",
                    self.id, m.from, m.commit
                ))
            })
    }

    fn on_tick(&mut self) {
        if self.failed.is_some() {
            return;
        }
        self.raft_group.tick();
        self.ticks += 1;
        self.reissue_overdue_reads();
    }

    /// After the events of one loop iteration: the `Ready` rounds, then the
    /// answers they produced go out.
    pub(super) fn end_iteration(&mut self, busy: bool) {
        self.step_prepared_snapshot();
        if self.failed.is_none() {
            if let Err(e) = self.handle_readies(busy) {
                self.fail(e);
            }
        }
        self.outbox.deliver();
    }

    /// Steps the held snapshot message once its install is prepared.
    fn step_prepared_snapshot(&mut self) {
        let Some(m) = &self.held_snapshot else {
            return;
        };
        let meta = m.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        if !self.raft_group.mut_store().snapshot_prepared(index, term) {
            return;
        }
        if let Some(m) = self.held_snapshot.take() {
            let _ = self.raft_group.step(m);
        }
    }

    /// A `Ready` that writes to the log (for the `log_writes` figure).
    pub fn count_log_write(&mut self) {
        self.stats.log_writes += 1;
    }

    pub fn publish_stats(&mut self, now: Instant) {
        let raft = &self.raft_group.raft;
        let store = self.raft_group.store();
        let stats = &mut self.stats;
        stats.shared.publish_raft(&RaftStats {
            id: self.id,
            role: raft.state.into(),
            leader_id: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: store.applied_index(),
            last_index: raft.raft_log.last_index(),
            log_writes: stats.log_writes,
            duplicate_writes: stats.duplicate_writes,
        });
        if stats
            .storage_published_at
            .is_none_or(|t| now.duration_since(t) >= STORAGE_STATS_EVERY)
        {
            stats.shared.publish_storage(&store.stats());
            stats.storage_published_at = Some(now);
        } else {
            stats.shared.publish_log_entries(store.log_entries());
        }
        // At once when leadership came or went: progress is the leader's alone.
        let leads = raft.state == StateRole::Leader;
        if leads != stats.peers_leading
            || stats
                .peers_published_at
                .is_none_or(|t| now.duration_since(t) >= PEERS_EVERY)
        {
            self.publish_peers(now);
        }
    }

    /// Publishes the members, their addresses and (on the leader) progress.
    pub(super) fn publish_peers(&mut self, now: Instant) {
        let raft = &self.raft_group.raft;
        let mut peers = peer_states(raft);
        if let Some(m) = self.raft_group.store().membership() {
            for p in &mut peers {
                p.address = m.members.get(&p.id).cloned();
            }
        }
        let stats = &mut self.stats;
        stats.shared.publish_peers(peers);
        stats.peers_published_at = Some(now);
        stats.peers_leading = raft.state == StateRole::Leader;
    }

    /// Stops serving after a storage error or a panic: everything pending
    /// rejects with `err`, and so does everything that arrives until stop.
    pub fn fail(&mut self, err: Error) {
        if self.failed.is_some() {
            return;
        }
        self.reject_all(&err);
        self.stats.shared.mark_failed(err.clone());
        self.failed = Some(err);
    }

    fn reject_all(&mut self, err: &Error) {
        let outbox = &mut self.outbox;
        self.writes.drain(|t, proposed| {
            let e = if proposed {
                err.clone().in_flight()
            } else {
                err.clone()
            };
            outbox.write(t, Err(e))
        });
        self.reads.drain(|t| outbox.read(t, Err(err.clone())));
        self.reject_changes(err);
    }

    fn shutdown(&mut self, batches: &Receiver<ProposedBatch>, mailbox: &Receiver<NodeMsg>) {
        // `close` stopped the batcher before sending Stop, so every batch it
        // flushed is already in the channel.
        self.failed = Some(Error::Closed);
        for b in batches.try_iter() {
            self.on_batch(b);
        }
        for c in mailbox.try_iter() {
            match c {
                NodeMsg::Get { token, key } => self.on_get(token, key),
                NodeMsg::ChangeMembership { token, .. } => {
                    self.outbox.read(token, Err(Error::Closed))
                }
                _ => {}
            }
        }
        self.reject_all(&Error::Closed);
        self.outbox.deliver();
        self.stats.shared.mark_stopped();
    }
}

/// The configuration, with each member's match index when `raft` leads.
fn peer_states<T: raft::Storage>(raft: &raft::Raft<T>) -> Vec<PeerState> {
    let leads = raft.state == StateRole::Leader;
    let last = raft.raft_log.last_index();
    let conf = raft.prs().conf();
    let voters = conf.voters().ids();
    let mut out: Vec<PeerState> = voters
        .iter()
        .map(|id| (id, true))
        .chain(conf.learners().iter().map(|id| (*id, false)))
        .map(|(id, voter)| {
            let matched = raft.prs().get(id).map(|p| p.matched).filter(|_| leads);
            PeerState {
                id,
                address: None,
                voter,
                match_index: matched,
                lag: matched.map(|m| last.saturating_sub(m)),
            }
        })
        .collect();
    out.sort_by_key(|p| p.id);
    out.dedup_by_key(|p| p.id);
    out
}
