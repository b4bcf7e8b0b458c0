//! Where the node thread collects the answers to its own requests during one
//! loop iteration, and delivers them in one go.

use metastore_batch::BatcherHandle;

use super::{Completion, CompletionSink, Outcome};
use crate::error::Result;

/// Completions of the current loop iteration, and how many writes left the
/// batcher's pipeline with them.
///
/// Every write the batcher flushed ends here exactly once: with a completion
/// ([`Outbox::write`]) or, for a command the node could not track,
/// uncounted ([`Outbox::untracked_writes`]). The batcher learns of both in
/// [`Outbox::deliver`], which is what lets it flush the next batch at once
/// when nothing is left in flight.
pub(super) struct Outbox {
    completions: Vec<Completion>,
    /// Writes that ended this iteration, reported to the batcher in one call.
    ended_writes: usize,
    sink: CompletionSink,
    batcher: BatcherHandle,
}

impl Outbox {
    pub fn new(sink: CompletionSink, batcher: BatcherHandle) -> Self {
        Outbox {
            completions: Vec::new(),
            ended_writes: 0,
            sink,
            batcher,
        }
    }

    /// A write of this node ended with `result`.
    pub fn write(&mut self, token: u64, result: Result<Outcome>) {
        self.completions.push(Completion { token, result });
        self.ended_writes += 1;
    }

    /// A read of this node ended with `result`.
    pub fn read(&mut self, token: u64, result: Result<Outcome>) {
        self.completions.push(Completion { token, result });
    }

    /// `n` flushed commands that no request waits on left the pipeline.
    pub fn untracked_writes(&mut self, n: usize) {
        self.ended_writes += n;
    }

    /// Hands what was collected to the batcher and the sink.
    pub fn deliver(&mut self) {
        if self.ended_writes > 0 {
            self.batcher.complete(self.ended_writes);
            self.ended_writes = 0;
        }
        if !self.completions.is_empty() {
            (self.sink)(std::mem::take(&mut self.completions));
        }
    }
}
