//! Written `Ready`s on their way to durability.
//!
//! raft-rs's asynchronous persistence (`advance_append_async`,
//! `on_persist_ready`) lets the node go on while a write syncs, provided two
//! rules hold: a `Ready`'s persisted messages (a follower's acknowledgements,
//! votes) leave only once its write is durable, and `on_persist_ready` is
//! called in `Ready` order. [`AsyncWriter`] keeps both: it queues the written
//! `Ready`s, knows which one the sync in flight covers, and releases them in
//! order as syncs land. One sync is in flight at a time; the next one covers
//! everything written meanwhile (group commit).

use std::collections::VecDeque;

use raft::eraftpb::Message;

use super::worker::Worker;
use crate::error::Result;
use crate::storage::{Engine, SyncOutcome};

/// A written `Ready` not yet known durable, and the messages that must not
/// leave before it is.
struct Unsynced {
    number: u64,
    /// Whether raft requires this `Ready` on disk (entries, term or vote).
    /// One that is not still waits for the ones before it.
    must_sync: bool,
    messages: Vec<Message>,
}

/// The queue of written `Ready`s waiting for a sync, oldest first.
#[derive(Default)]
pub(super) struct AsyncWriter {
    unsynced: VecDeque<Unsynced>,
    /// The last `Ready` number the sync in flight covers.
    syncing: Option<u64>,
}

impl AsyncWriter {
    /// Nothing written waits for a sync.
    pub fn is_empty(&self) -> bool {
        self.unsynced.is_empty()
    }

    /// Records `Ready` `number`, just written; `must_sync` unless it is
    /// durable already or needs no durability.
    pub fn push(&mut self, number: u64, must_sync: bool, messages: Vec<Message>) {
        self.unsynced.push_back(Unsynced {
            number,
            must_sync,
            messages,
        });
    }

    /// Everything written up to `Ready` `covered` is durable: releases those
    /// `Ready`s and the ones after them that need no sync, handing their
    /// messages to `send` in order. Returns the last `Ready` released, for
    /// `on_persist_ready`.
    pub fn release(&mut self, covered: u64, mut send: impl FnMut(Vec<Message>)) -> Option<u64> {
        let mut last = None;
        while self
            .unsynced
            .front()
            .is_some_and(|u| u.number <= covered || !u.must_sync)
        {
            let Some(u) = self.unsynced.pop_front() else {
                break;
            };
            last = Some(u.number);
            if !u.messages.is_empty() {
                send(u.messages);
            }
        }
        last
    }

    /// The `Ready` a sync started now would cover, unless one is in flight
    /// (the next one starts when it lands) or nothing waits.
    pub fn sync_to_start(&self) -> Option<u64> {
        match self.syncing {
            Some(_) => None,
            None => self.unsynced.back().map(|u| u.number),
        }
    }

    /// A sync covering `Ready` `last` is in flight.
    pub fn sync_started(&mut self, last: u64) {
        self.syncing = Some(last);
    }

    /// The sync in flight landed; returns the last `Ready` it covers.
    pub fn sync_landed(&mut self) -> Option<u64> {
        self.syncing.take()
    }
}

impl<E: Engine> Worker<E> {
    /// The sync in flight landed: the `Ready`s it covers are durable.
    pub(super) fn on_synced(&mut self, outcome: SyncOutcome) {
        let finished = self.raft_group.mut_store().sync_finished(outcome);
        let covered = self.writer.sync_landed();
        if let Err(e) = finished {
            self.fail(e);
            return;
        }
        if self.failed.is_some() {
            return;
        }
        if let Some(covered) = covered {
            self.release_persisted(covered);
        }
        if let Err(e) = self.maybe_start_sync() {
            self.fail(e);
        }
    }

    /// Everything written up to `Ready` `covered` is durable: tell raft-rs,
    /// and send the messages that waited for it.
    pub(super) fn release_persisted(&mut self, covered: u64) {
        let transport = &self.transport;
        if let Some(n) = self.writer.release(covered, |m| transport.send(m)) {
            self.raft_group.on_persist_ready(n);
        }
    }

    /// Starts a sync covering every `Ready` written so far, if none is in
    /// flight and something waits.
    pub(super) fn maybe_start_sync(&mut self) -> Result<()> {
        let Some(last) = self.writer.sync_to_start() else {
            return Ok(());
        };
        if self.raft_group.mut_store().start_sync()? {
            self.writer.sync_started(last);
        } else {
            // Nothing to sync: durable already.
            self.release_persisted(last);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: u64) -> Vec<Message> {
        vec![Message {
            to,
            ..Default::default()
        }]
    }

    fn release(w: &mut AsyncWriter, covered: u64) -> (Option<u64>, Vec<u64>) {
        let mut sent = Vec::new();
        let last = w.release(covered, |ms| sent.extend(ms.iter().map(|m| m.to)));
        (last, sent)
    }

    #[test]
    fn a_ready_that_needs_no_sync_waits_for_the_ones_before_it() {
        let mut w = AsyncWriter::default();
        w.push(1, true, msg(1));
        w.push(2, false, msg(2));
        // Nothing durable yet: `Ready` 2 must not overtake 1.
        assert_eq!(release(&mut w, 0), (None, vec![]));
        assert_eq!(release(&mut w, 1), (Some(2), vec![1, 2]));
        assert!(w.is_empty());
    }

    #[test]
    fn a_leading_ready_that_needs_no_sync_leaves_at_once() {
        let mut w = AsyncWriter::default();
        w.push(1, false, msg(1));
        w.push(2, true, msg(2));
        assert_eq!(release(&mut w, 0), (Some(1), vec![1]));
        assert!(!w.is_empty());
    }

    #[test]
    fn one_sync_in_flight_and_the_next_covers_what_was_written_meanwhile() {
        let mut w = AsyncWriter::default();
        assert_eq!(w.sync_to_start(), None);
        w.push(1, true, msg(1));
        assert_eq!(w.sync_to_start(), Some(1));
        w.sync_started(1);
        w.push(2, true, msg(2));
        w.push(3, true, vec![]);
        assert_eq!(w.sync_to_start(), None, "a sync is in flight");
        assert_eq!(w.sync_landed(), Some(1));
        assert_eq!(release(&mut w, 1), (Some(1), vec![1]));
        assert_eq!(w.sync_to_start(), Some(3));
        w.sync_started(3);
        assert_eq!(w.sync_landed(), Some(3));
        assert_eq!(release(&mut w, 3), (Some(3), vec![2]));
        assert!(w.is_empty());
        assert_eq!(w.sync_to_start(), None);
    }
}
