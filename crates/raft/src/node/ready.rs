//! One loop iteration's `Ready` rounds, in the order raft-rs requires for
//! asynchronous persistence: send the messages that need no durability,
//! persist the snapshot, entries and hard state in one write (`persist.rs`
//! holds back the messages that must wait for it), apply the committed
//! entries (`apply.rs`), then advance.

use std::time::Instant;

use raft::{StateRole, INVALID_ID};

use raft::eraftpb::HardState;

use super::worker::{SyncPolicy, Worker};
use crate::error::Result;
use crate::storage::{Durability, Engine};

/// `Ready` rounds per loop iteration at most, so inbound work is not starved.
const MAX_READY_ROUNDS: usize = 64;

impl<E: Engine> Worker<E> {
    /// Everything the node does after taking in one iteration's events.
    pub(super) fn handle_readies(&mut self, busy: bool) -> Result<()> {
        self.on_leader_change();
        self.after_membership_change();
        self.drive_membership();
        self.ask_read_index();
        let mut rounds = 0;
        self.tell_forwarders();
        while self.raft_group.has_ready() && rounds < MAX_READY_ROUNDS {
            self.handle_ready(busy)?;
            rounds += 1;
            self.tell_forwarders();
        }
        self.on_leader_change();
        self.after_membership_change();
        self.serve_reads()?;
        let now = Instant::now();
        self.expire_writes(now);
        self.expire_reads(now);
        self.expire_changes(now);
        self.maybe_compact()?;
        self.publish_stats(now);
        Ok(())
    }

    /// A new leader: proposals held for lack of one go out, and reads are
    /// asked again (the old leader may have dropped them). A new leader also
    /// drops reads until it committed an entry of its term; ask again then.
    fn on_leader_change(&mut self) {
        let leader = self.raft_group.raft.leader_id;
        let mut reissue = false;
        if leader != self.last_leader {
            if self.last_leader != INVALID_ID {
                let why = format!(
                    "node {} forwarded it to node {}, which no longer leads as far as node {} knows",
                    self.id, self.last_leader, self.id
                );
                self.forget_forwarded(&why);
            }
            self.last_leader = leader;
            reissue = leader != INVALID_ID;
            self.changes.leading_since = self.ticks;
        }
        let raft = &self.raft_group.raft;
        if raft.state == StateRole::Leader
            && raft.commit_to_current_term()
            && self.reads.first_commit_of_term(raft.term)
        {
            reissue = true;
        }
        if reissue {
            self.reissue_all_reads();
        }
        self.propose_held();
    }

    /// Whether a `Ready` that raft requires on disk is synced, under the
    /// node's [`SyncPolicy`]; `hs` is the hard state it writes, if any.
    fn must_sync(&mut self, hs: Option<&HardState>) -> bool {
        let before = self.term_and_vote;
        if let Some(hs) = hs {
            self.term_and_vote = (hs.term, hs.vote);
        }
        match self.settings.sync {
            SyncPolicy::Always => true,
            SyncPolicy::TermAndVote => self.term_and_vote != before,
            SyncPolicy::Never => false,
        }
    }

    fn handle_ready(&mut self, busy: bool) -> Result<()> {
        let mut ready = self.raft_group.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        self.on_read_states(ready.take_read_states());
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        if snapshot.is_some() || !ready.entries().is_empty() || ready.hs().is_some() {
            self.count_log_write();
        }
        let must_sync = ready.must_sync() && self.must_sync(ready.hs());
        let committed = ready.take_committed_entries();
        // Inline when nothing else would happen during the sync: nothing
        // queued, nothing waiting for a sync or to apply, and at most one
        // request of this node's own in flight (a leader with more expects
        // acknowledgements and proposals meanwhile; measured at 256 in
        // flight: about 15% more puts/s than syncing inline whenever idle).
        // A snapshot, rare and replacing the whole state, is always inline.
        let quiet = !busy
            && self.writer.is_empty()
            && committed.is_empty()
            && self.writes.pending_len() <= 1;
        let inline = must_sync && (snapshot.is_some() || quiet);
        let durability = if inline {
            Durability::Synced
        } else {
            Durability::Unsynced
        };
        self.raft_group.mut_store().persist(
            snapshot.as_ref(),
            ready.entries(),
            ready.hs(),
            durability,
        )?;
        if let Some(s) = &snapshot {
            self.writes.forget_indexes_up_to(s.get_metadata().index);
            let why = format!(
                "node {} installed a snapshot that may hold the entry it forwarded",
                self.id
            );
            self.forget_forwarded(&why);
            // The snapshot replaced the log, and the membership.
            self.applied_log.clear();
            self.changes.dirty = true;
        }
        let number = ready.number();
        self.writer.push(
            number,
            must_sync && !inline,
            ready.take_persisted_messages(),
        );
        self.raft_group.advance_append_async(ready);
        if inline {
            // A synced write makes everything written before it durable too.
            self.release_persisted(number);
        } else if must_sync {
            self.maybe_start_sync()?;
        }
        // The committed entries are durable already (raft-rs hands out only
        // persisted ones), so they apply while this write syncs, and their
        // answers go out before this `Ready`'s acknowledgements: on a
        // follower whose forwarded write just committed, the acknowledgement
        // of the commit is of no use to anyone, and sending it first put a
        // socket write and a turn of the runtime before the answer.
        self.apply(committed)?;
        if !inline {
            // `Ready`s that need no sync leave as soon as none before them waits.
            self.release_persisted(0);
            self.maybe_start_sync()?;
        }
        // After `on_persist_ready`: a snapshot's `Ready` that needs no sync
        // (the memory engine) moves the applied index only once persisted.
        self.raft_group.advance_apply();
        Ok(())
    }
}
