//! Linearizable reads (ReadIndex, raft-rs `ReadOnlyOption::Safe`). The gets
//! that arrive in one loop iteration share one read index request; once
//! raft-rs answers it with a read state, they are served as soon as the
//! applied index reaches the read index, on leader and followers alike.
//!
//! raft-rs drops a read index request silently when no leader is known or the
//! leader has not yet committed an entry of its term, so a request with no
//! answer is asked again: on a leader change, on that first commit, and every
//! few ticks.

use std::collections::HashMap;
use std::time::Instant;

use raft::ReadState;

use super::worker::Worker;
use super::Outcome;
use crate::error::{Error, Result};
use crate::storage::Engine;

/// A get waiting for its linearizable read.
pub(super) struct ReadRequest {
    pub token: u64,
    pub key: Vec<u8>,
}

struct ReadGroup {
    reqs: Vec<ReadRequest>,
    deadline: Instant,
    /// Tick at which the read index request was last sent.
    issued_at: u64,
}

/// ReadIndex bookkeeping. All gets that arrive in one loop iteration share one
/// read index request, identified by a context counter.
#[derive(Default)]
pub(super) struct Reads {
    next_ctx: u64,
    /// Gets not yet asked for a read index.
    incoming: Vec<ReadRequest>,
    waiting: HashMap<u64, ReadGroup>,
    /// Read index known; served once `applied >= index`.
    ready: Vec<(u64, ReadGroup)>,
    /// The term in which this node, as leader, last re-asked waiting reads
    /// after committing its first entry of the term.
    asked_in_term: u64,
}

impl Reads {
    /// Groups the incoming gets under a new context; returns it, or `None`
    /// when there is nothing to ask.
    pub fn start_group(&mut self, deadline: Instant, tick: u64) -> Option<u64> {
        if self.incoming.is_empty() {
            return None;
        }
        self.next_ctx += 1;
        let reqs = std::mem::take(&mut self.incoming);
        self.waiting.insert(
            self.next_ctx,
            ReadGroup {
                reqs,
                deadline,
                issued_at: tick,
            },
        );
        Some(self.next_ctx)
    }

    /// Contexts to ask again: raft-rs silently drops a read index request when
    /// no leader is known or the leader has not committed in its term yet.
    pub fn take_reissue(&mut self, tick: u64, every: u64, all: bool) -> Vec<u64> {
        let mut out = Vec::new();
        for (ctx, g) in self.waiting.iter_mut() {
            if all || tick >= g.issued_at + every {
                g.issued_at = tick;
                out.push(*ctx);
            }
        }
        out
    }

    pub fn on_read_state(&mut self, ctx: u64, index: u64) {
        if let Some(g) = self.waiting.remove(&ctx) {
            self.ready.push((index, g));
        }
    }

    /// Takes the requests whose read index is applied.
    pub fn take_servable(&mut self, applied: u64, mut serve: impl FnMut(ReadRequest)) {
        if self.ready.iter().all(|(i, _)| *i > applied) {
            return;
        }
        let mut keep = Vec::new();
        for (index, g) in self.ready.drain(..) {
            if index <= applied {
                g.reqs.into_iter().for_each(&mut serve);
            } else {
                keep.push((index, g));
            }
        }
        self.ready = keep;
    }

    pub fn expire(&mut self, now: Instant, mut timed_out: impl FnMut(u64)) {
        self.waiting.retain(|_, g| {
            if g.deadline <= now {
                g.reqs.iter().for_each(|r| timed_out(r.token));
                false
            } else {
                true
            }
        });
        self.ready.retain(|(_, g)| {
            if g.deadline <= now {
                g.reqs.iter().for_each(|r| timed_out(r.token));
                false
            } else {
                true
            }
        });
    }

    pub fn drain(&mut self, mut rejected: impl FnMut(u64)) {
        for r in self.incoming.drain(..) {
            rejected(r.token);
        }
        for (_, g) in self.waiting.drain() {
            g.reqs.iter().for_each(|r| rejected(r.token));
        }
        for (_, g) in self.ready.drain(..) {
            g.reqs.iter().for_each(|r| rejected(r.token));
        }
    }

    /// This node leads `term` and has committed an entry of it: true the
    /// first time that is seen while reads wait, which must then be asked
    /// again (a new leader drops read index requests until that commit).
    pub fn first_commit_of_term(&mut self, term: u64) -> bool {
        if self.waiting.is_empty() || self.asked_in_term == term {
            return false;
        }
        self.asked_in_term = term;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.incoming.is_empty() && self.waiting.is_empty() && self.ready.is_empty()
    }
}

/// The context of read index request `ctx` of node `node`. The leader keeps
/// one pending request per context, so contexts of different nodes must
/// differ: `node u64 BE | ctx u64 BE`.
fn read_context(node: u64, ctx: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&ctx.to_be_bytes());
    out
}

/// The counter of a read context made by [`read_context`] for `node`.
fn own_read_context(node: u64, bytes: &[u8]) -> Option<u64> {
    let (owner, ctx) = bytes.split_at_checked(8)?;
    if owner != node.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(ctx.try_into().ok()?))
}

impl<E: Engine> Worker<E> {
    pub(super) fn on_get(&mut self, token: u64, key: Vec<u8>) {
        match &self.failed {
            Some(e) => self.outbox.read(token, Err(e.clone())),
            None => self.reads.incoming.push(ReadRequest { token, key }),
        }
    }

    /// Asks one read index for the gets that arrived since the last time.
    pub(super) fn ask_read_index(&mut self) {
        let deadline = Instant::now() + self.settings.proposal_timeout;
        if let Some(ctx) = self.reads.start_group(deadline, self.ticks) {
            self.raft_group.read_index(read_context(self.id, ctx));
        }
    }

    /// Asks again the read index requests unanswered for a while.
    pub(super) fn reissue_overdue_reads(&mut self) {
        let every = self.settings.reissue_ticks;
        for ctx in self.reads.take_reissue(self.ticks, every, false) {
            self.raft_group.read_index(read_context(self.id, ctx));
        }
    }

    /// Asks again every unanswered read index request.
    pub(super) fn reissue_all_reads(&mut self) {
        for ctx in self.reads.take_reissue(self.ticks, 0, true) {
            self.raft_group.read_index(read_context(self.id, ctx));
        }
    }

    pub(super) fn on_read_states(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if let Some(ctx) = own_read_context(self.id, &rs.request_ctx) {
                self.reads.on_read_state(ctx, rs.index);
            }
        }
    }

    /// Answers the gets whose read index is applied.
    pub(super) fn serve_reads(&mut self) -> Result<()> {
        let engine = self.raft_group.store();
        let applied = engine.applied_index();
        let outbox = &mut self.outbox;
        let mut failure = None;
        self.reads.take_servable(applied, |r| {
            let result = engine.get(&r.key).map(Outcome::Value);
            if let Err(e) = &result {
                failure = Some(e.clone());
            }
            outbox.read(r.token, result);
        });
        failure.map_or(Ok(()), Err)
    }

    pub(super) fn expire_reads(&mut self, now: Instant) {
        if !self.reads.is_empty() {
            let timeout = self.settings.proposal_timeout;
            let outbox = &mut self.outbox;
            self.reads
                .expire(now, |t| outbox.read(t, Err(Error::Timeout(timeout))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_of_different_nodes_never_collide() {
        assert_ne!(read_context(2, 1), read_context(3, 1));
        assert_eq!(own_read_context(2, &read_context(2, 41)), Some(41));
        assert_eq!(own_read_context(3, &read_context(2, 41)), None);
        assert_eq!(own_read_context(2, &[0; 8]), None);
        assert_eq!(own_read_context(2, &[]), None);
    }
}
