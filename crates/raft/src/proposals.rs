//! Bookkeeping of the requests a node is waiting on: writes it proposed
//! (pending until applied, dropped, timed out or closed) and linearizable
//! reads (waiting for a read index, then for the applied index to reach it).
//!
//! Invariant: a token leaves `pending` exactly once, and whoever removes it
//! produces exactly one completion for it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// Tokens are mostly counters; a multiply-shift mix spreads them well and is
/// much cheaper than SipHash on the hot path.
#[derive(Default)]
pub(crate) struct TokenHasher(u64);

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

pub(crate) type TokenSet = HashSet<u64, BuildHasherDefault<TokenHasher>>;
pub(crate) type Tokens = Arc<[u64]>;

/// A batch the node could not propose yet (no leader known).
pub(crate) struct HeldBatch {
    pub data: Vec<u8>,
    pub tokens: Tokens,
}

#[derive(Default)]
pub(crate) struct Proposals {
    pending: TokenSet,
    /// Batches in arrival order; deadlines are monotonic because every batch
    /// gets the same timeout.
    deadlines: VecDeque<(Instant, Tokens)>,
    /// Batches this node appended as leader, by log index: if a different
    /// entry is applied at that index, they were dropped.
    at_index: BTreeMap<u64, Tokens>,
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

    /// Times out every pending token whose deadline passed.
    pub fn expire(&mut self, now: Instant, mut timed_out: impl FnMut(u64)) {
        while self.deadlines.front().is_some_and(|(d, _)| *d <= now) {
            let Some((_, tokens)) = self.deadlines.pop_front() else {
                break;
            };
            for &t in tokens.iter() {
                if self.pending.remove(&t) {
                    timed_out(t);
                }
            }
        }
        // Held batches whose every token is gone need not be proposed at all.
        let pending = &self.pending;
        self.held
            .retain(|b| b.tokens.iter().any(|t| pending.contains(t)));
    }

    /// Rejects everything (the node is stopping or failed).
    pub fn drain(&mut self, mut rejected: impl FnMut(u64)) {
        for t in self.pending.drain() {
            rejected(t);
        }
        self.deadlines.clear();
        self.at_index.clear();
        self.held.clear();
    }
}

/// A get waiting for its linearizable read.
pub(crate) struct ReadRequest {
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
pub(crate) struct Reads {
    next_ctx: u64,
    /// Gets not yet asked for a read index.
    pub incoming: Vec<ReadRequest>,
    waiting: HashMap<u64, ReadGroup>,
    /// Read index known; served once `applied >= index`.
    ready: Vec<(u64, ReadGroup)>,
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

    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.incoming.is_empty() && self.waiting.is_empty() && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        p.expire(now + Duration::from_secs(1), |t| timed.push(t));
        assert!(timed.is_empty());
        p.expire(now + Duration::from_secs(2), |t| timed.push(t));
        assert_eq!(timed, vec![4, 5]);
        assert_eq!(p.pending_len(), 0);
        assert_eq!(p.register(&vec![7, 7].into(), now), 1);
    }
}
