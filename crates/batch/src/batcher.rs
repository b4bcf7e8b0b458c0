//! The thread that drives [`BatchPolicy`]: it moves proposals from a bounded
//! queue into a buffer, asks the policy after every event whether to flush,
//! encodes each batch and hands it to the sink. Everything adaptive lives in
//! the policy; this file only waits, moves bytes and counts.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError, TrySendError};

use crate::codec::{encode_batch_with, EncodeOptions};
use crate::config::BatchConfig;
use crate::error::BatchError;
use crate::policy::{BatchPolicy, Clock, Flush, SystemClock};
use crate::stats::{BatchStats, StatsRecorder};

/// Receives each encoded batch (one Raft entry) and how many proposals it
/// holds, on the batcher thread, strictly in proposal order.
pub trait BatchSink: Send + 'static {
    fn on_batch(&mut self, batch: Vec<u8>, count: usize);
}

impl<F: FnMut(Vec<u8>, usize) + Send + 'static> BatchSink for F {
    fn on_batch(&mut self, batch: Vec<u8>, count: usize) {
        self(batch, count)
    }
}

struct Queued {
    /// When `propose` was called: latency and deadlines count from here.
    at: Instant,
    data: Vec<u8>,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

struct Shared {
    /// Producers send under the read lock. The loop takes the sender out
    /// (write lock) only once it has drained everything while closing, so a
    /// proposal whose `propose` returned `Ok` is always flushed.
    input: RwLock<Option<Sender<Queued>>>,
    closing: AtomicBool,
    /// Proposals in the loop's buffer, for `stats`.
    buffered: AtomicUsize,
    /// Flushed proposals not yet completed by the consumer. Completions
    /// only count down; they wake the loop when it asked for that.
    in_flight: AtomicUsize,
    /// Set while the loop sleeps on a batch that the end of the work in
    /// flight would flush (`FlushReason::Idle`): the completion that brings
    /// `in_flight` to 0 wakes it. Any other completion needs no wake: one
    /// futex wake per request was a tenth of a request's latency at 1 in
    /// flight.
    wake_when_idle: AtomicBool,
    /// 0 while the loop listens on the queue itself. Otherwise the loop is
    /// accumulating a batch while work is in flight and sleeps on the control
    /// channel only: the producer whose proposal brings the queue to this
    /// length wakes it. One wake per batch instead of one per proposal
    /// (measured: most of the JS thread's cost per `put` was that futex wake).
    wake_at: AtomicUsize,
    stats: Mutex<StatsRecorder>,
    /// Wakes the loop to look at its queue, in-flight count and `closing`
    /// again. Kept here so the channel outlives every handle.
    control: Sender<()>,
}

impl Shared {
    fn wake_if_due(&self, queued: usize) {
        fence(Ordering::SeqCst);
        let at = self.wake_at.load(Ordering::SeqCst);
        if at != 0
            && queued >= at
            && self
                .wake_at
                .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let _ = self.control.send(());
        }
    }

    fn complete(&self, proposals: usize) {
        let before = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(proposals))
            })
            .unwrap_or_default();
        if before <= proposals && self.wake_when_idle.swap(false, Ordering::SeqCst) {
            let _ = self.control.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Set while this thread runs the sink for a proposal it flushed
    /// itself: `stop` from inside that sink must not wait for the loop,
    /// which may be waiting for the lock this thread holds.
    static FLUSHING_DIRECTLY: Cell<bool> = const { Cell::new(false) };
}

/// Batches proposals on a dedicated thread ("metastore-batcher").
pub struct ProposalBatcher {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    max_proposal_bytes: usize,
    /// Set by [`start_direct`](Self::start_direct): the loop's state, for a
    /// producer that flushes an idle proposal itself.
    direct: Option<Arc<dyn DirectFlush>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

/// Lets the consumer of batches report completions from any thread.
#[derive(Clone)]
pub struct BatcherHandle {
    shared: Arc<Shared>,
}

impl BatcherHandle {
    /// `proposals` flushed proposals are no longer in flight (applied,
    /// rejected or otherwise done). When nothing is left in flight the next
    /// proposal is flushed at once (`FlushReason::Idle`). Reporting more than
    /// was flushed saturates at zero; after stop this does nothing.
    pub fn complete(&self, proposals: usize) {
        self.shared.complete(proposals);
    }
}

impl ProposalBatcher {
    /// Validates `config` and starts the batcher thread.
    pub fn start(config: BatchConfig, sink: impl BatchSink) -> Result<ProposalBatcher, BatchError> {
        Self::start_with_clock(config, sink, Arc::new(SystemClock))
    }

    /// As [`start`](Self::start), and a proposal that finds nothing queued,
    /// buffered or in flight, right after a batch of one, is flushed by its
    /// producer, in `propose`, on the producer's thread: the flush the loop
    /// would make at once (`FlushReason::Idle`) without waking the loop's
    /// thread for it. At one request in flight that wake was the largest
    /// cost between a caller and the sink. For a sink that neither blocks
    /// nor panics (a channel send): it then runs on the producers' threads
    /// too.
    pub fn start_direct(
        config: BatchConfig,
        sink: impl BatchSink,
    ) -> Result<ProposalBatcher, BatchError> {
        Self::start_inner(config, sink, Arc::new(SystemClock), true)
    }

    /// As [`start`](Self::start) with the clock the policy and the latency
    /// figures read. Waiting itself is always real time.
    pub fn start_with_clock(
        config: BatchConfig,
        sink: impl BatchSink,
        clock: Arc<dyn Clock>,
    ) -> Result<ProposalBatcher, BatchError> {
        Self::start_inner(config, sink, clock, false)
    }

    fn start_inner<S: BatchSink>(
        config: BatchConfig,
        sink: S,
        clock: Arc<dyn Clock>,
        direct: bool,
    ) -> Result<ProposalBatcher, BatchError> {
        config.validate()?;
        let (tx, input) = bounded(config.queue_capacity);
        let (control_tx, control) = unbounded();
        let policy = BatchPolicy::new(&config);
        let shared = Arc::new(Shared {
            input: RwLock::new(Some(tx)),
            closing: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            wake_when_idle: AtomicBool::new(false),
            wake_at: AtomicUsize::new(0),
            stats: Mutex::new(StatsRecorder::new(&policy)),
            control: control_tx,
        });
        let core = Arc::new(Core {
            shared: Arc::clone(&shared),
            state: Mutex::new(CoreState {
                sink,
                buffer: Vec::with_capacity(policy.max_batch_size().min(1024)),
                policy,
                encode: EncodeOptions::from(&config),
                last_take: 1,
            }),
        });
        let batch_loop = BatchLoop {
            shared: Arc::clone(&shared),
            input,
            control,
            clock: Arc::clone(&clock),
            core: Arc::clone(&core),
        };
        let thread = thread::Builder::new()
            .name("metastore-batcher".into())
            .spawn(move || batch_loop.run())
            // Only resource exhaustion gets here; the batcher is unusable.
            .map_err(|_| BatchError::Closed)?;
        Ok(ProposalBatcher {
            shared,
            clock,
            max_proposal_bytes: config.max_proposal_bytes,
            direct: direct.then_some(core as Arc<dyn DirectFlush>),
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn admit(&self, data: &[u8]) -> Result<(), BatchError> {
        if data.len() > self.max_proposal_bytes {
            return Err(BatchError::TooLarge {
                size: data.len(),
                max: self.max_proposal_bytes,
            });
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(BatchError::Closed);
        }
        Ok(())
    }

    /// Flushes `q` on this thread if the batcher was started direct and has
    /// nothing else: nothing queued (an earlier proposal of this thread may
    /// be), buffered or in flight, and its last batch held one proposal.
    /// Otherwise hands `q` back. The checks here need no lock, so a busy
    /// batcher costs its producers no contention; `flush_if_idle` makes
    /// them again under the loop's lock.
    fn flush_directly(&self, tx: &Sender<Queued>, q: Queued) -> Result<(), Queued> {
        match &self.direct {
            Some(core)
                if tx.is_empty()
                    && self.shared.in_flight.load(Ordering::SeqCst) == 0
                    && !self.shared.closing.load(Ordering::Acquire) =>
            {
                core.flush_if_idle(tx, q, self.clock.now())
            }
            _ => Err(q),
        }
    }

    /// Queues a proposal. A full queue blocks the caller (back-pressure);
    /// nothing is dropped. `TooLarge` above `max_proposal_bytes`, `Closed`
    /// once stopping.
    pub fn propose(&self, data: Vec<u8>) -> Result<(), BatchError> {
        self.admit(&data)?;
        let input = read(&self.shared.input);
        let tx = input.as_ref().ok_or(BatchError::Closed)?;
        let q = Queued {
            at: self.clock.now(),
            data,
        };
        let Err(q) = self.flush_directly(tx, q) else {
            return Ok(());
        };
        tx.send(q).map_err(|_| BatchError::Closed)?;
        self.shared.wake_if_due(tx.len());
        Ok(())
    }

    /// As [`propose`](Self::propose) but never blocks: `Ok(Some(data))` hands
    /// the proposal back when the queue is full.
    pub fn try_propose(&self, data: Vec<u8>) -> Result<Option<Vec<u8>>, BatchError> {
        self.admit(&data)?;
        let input = read(&self.shared.input);
        let tx = input.as_ref().ok_or(BatchError::Closed)?;
        let q = Queued {
            at: self.clock.now(),
            data,
        };
        let Err(q) = self.flush_directly(tx, q) else {
            return Ok(None);
        };
        match tx.try_send(q) {
            Ok(()) => {
                self.shared.wake_if_due(tx.len());
                Ok(None)
            }
            Err(TrySendError::Full(q)) => Ok(Some(q.data)),
            Err(TrySendError::Disconnected(_)) => Err(BatchError::Closed),
        }
    }

    pub fn handle(&self) -> BatcherHandle {
        BatcherHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn stats(&self) -> BatchStats {
        let buffered = self.shared.buffered.load(Ordering::Relaxed);
        let queued = read(&self.shared.input).as_ref().map_or(0, Sender::len);
        lock(&self.shared.stats).snapshot(buffered + queued)
    }

    /// True once `stop` has been called: new proposals get `Closed`.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Flushes everything accepted so far (`FlushReason::Stop`, in order,
    /// several batches if needed), then ends and joins the thread. Later
    /// proposals get `Closed`. Idempotent and safe from any thread; every
    /// caller returns after the drain. Called from the sink it cannot wait
    /// for the loop: the drain then finishes after the sink returns.
    pub fn stop(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.shared.control.send(());
        if thread::current().id() == self.thread_id || FLUSHING_DIRECTLY.get() {
            return;
        }
        let mut thread = lock(&self.thread);
        if let Some(t) = thread.take() {
            // A panicking sink already ended the loop; nothing left to drain.
            let _ = t.join();
        }
    }
}

impl Drop for ProposalBatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the loop owns, under a lock that a producer flushing directly takes
/// too. Proposals leave the queue only under it, so a direct flush cannot
/// overtake one its producer queued earlier.
struct CoreState<S> {
    sink: S,
    policy: BatchPolicy,
    encode: EncodeOptions,
    /// Mirrors the policy's buffered proposals; never more than max_batch_size.
    buffer: Vec<Queued>,
    /// Proposals in the last batch. A producer flushes directly only after
    /// a batch of one: after a larger one the load comes in bursts (many
    /// requests answered at once, then sent again), and a burst's first
    /// proposal flushed alone would keep the rest waiting a whole round for
    /// it, where the loop's wake lets them join it.
    last_take: usize,
}

struct Core<S> {
    shared: Arc<Shared>,
    state: Mutex<CoreState<S>>,
}

/// A producer's way into the loop's state, whatever the sink's type.
trait DirectFlush: Send + Sync {
    fn flush_if_idle(&self, tx: &Sender<Queued>, q: Queued, now: Instant) -> Result<(), Queued>;
}

impl<S: BatchSink> DirectFlush for Core<S> {
    fn flush_if_idle(&self, tx: &Sender<Queued>, q: Queued, now: Instant) -> Result<(), Queued> {
        // Never wait for the loop: if it is busy, it takes `q` from the queue.
        let mut state = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(q),
        };
        let shared = &*self.shared;
        if !state.buffer.is_empty()
            || state.last_take > 1
            || !tx.is_empty()
            || shared.in_flight.load(Ordering::SeqCst) != 0
        {
            return Err(q);
        }
        state.enqueue(q, shared);
        // With nothing in flight the policy flushes at once (Idle).
        let Some(flush) = state.policy.decide(now, 0, 0) else {
            let _ = shared.control.send(());
            return Ok(());
        };
        FLUSHING_DIRECTLY.set(true);
        state.flush(flush, now, shared);
        FLUSHING_DIRECTLY.set(false);
        Ok(())
    }
}

impl<S: BatchSink> CoreState<S> {
    /// Moves queued proposals into the buffer, leaving the rest queued so a
    /// full queue still pushes back. `false` once the queue is closed and empty.
    fn pull(&mut self, input: &Receiver<Queued>, shared: &Shared) -> bool {
        while self.buffer.len() < self.policy.max_batch_size() {
            match input.try_recv() {
                Ok(q) => self.enqueue(q, shared),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn enqueue(&mut self, q: Queued, shared: &Shared) {
        self.policy.on_enqueue(q.at);
        self.buffer.push(q);
        shared.buffered.store(self.buffer.len(), Ordering::Relaxed);
    }

    fn flush(&mut self, flush: Flush, now: Instant, shared: &Shared) {
        let take = flush.take.min(self.buffer.len());
        let taken = &self.buffer[..take];
        let batch = encode_batch_with(taken, &self.encode);
        self.policy.on_flush(&flush);
        // Stats first: once the sink has seen a batch, so has `stats()`.
        lock(&shared.stats).on_flush(
            flush.reason,
            take,
            taken.iter().map(|q| now.saturating_duration_since(q.at)),
            &self.policy,
        );
        self.buffer.drain(..take);
        self.last_take = take;
        shared.buffered.store(self.buffer.len(), Ordering::Relaxed);
        shared.in_flight.fetch_add(take, Ordering::SeqCst);
        self.sink.on_batch(batch, take);
    }
}

struct BatchLoop<S> {
    shared: Arc<Shared>,
    input: Receiver<Queued>,
    control: Receiver<()>,
    clock: Arc<dyn Clock>,
    core: Arc<Core<S>>,
}

impl<S: BatchSink> BatchLoop<S> {
    fn run(self) {
        let mut input_open = true;
        loop {
            while self.control.try_recv().is_ok() {}
            let mut state = lock(&self.core.state);
            if input_open {
                input_open = state.pull(&self.input, &self.shared);
            }
            let closing = !input_open || self.shared.closing.load(Ordering::Acquire);
            let now = self.clock.now();
            let queued = self.input.len();
            let decision = if closing {
                state.policy.drain(queued)
            } else {
                let in_flight = self.shared.in_flight.load(Ordering::SeqCst);
                state.policy.decide(now, queued, in_flight)
            };
            if let Some(flush) = decision {
                state.flush(flush, now, &self.shared);
            } else if !input_open {
                return; // drained: queue disconnected and empty, buffer empty
            } else if closing {
                self.close_input(&mut state);
            } else {
                self.wait(state);
            }
        }
    }

    /// Closing with an empty buffer: take the sender out so the queue
    /// disconnects once empty. A producer still inside `propose` holds the
    /// read lock; its proposal is about to arrive, so wait briefly for it.
    fn close_input(&self, state: &mut CoreState<S>) {
        let closed = match self.shared.input.try_write() {
            Ok(mut input) => {
                input.take();
                true
            }
            Err(TryLockError::Poisoned(p)) => {
                p.into_inner().take();
                true
            }
            Err(TryLockError::WouldBlock) => false,
        };
        if !closed {
            if let Ok(q) = self.input.recv_timeout(Duration::from_millis(1)) {
                state.enqueue(q, &self.shared);
            }
        }
    }

    /// Sleeps, without the lock, until a proposal, a wake or the policy's
    /// deadline; the next round takes what arrived. While a batch
    /// accumulates behind work in flight, it sleeps until enough proposals
    /// are queued to fill it or the work in flight ends instead (see
    /// `Shared::wake_at` and `Shared::wake_when_idle`).
    fn wait(&self, state: MutexGuard<'_, CoreState<S>>) {
        let timeout = state
            .policy
            .next_deadline()
            .map(|d| d.saturating_duration_since(self.clock.now()));
        let missing = state.policy.batch_size().saturating_sub(state.buffer.len());
        let shared = &*self.shared;
        if !state.buffer.is_empty() {
            // Waiting with a buffer means work is in flight and the batch
            // is not full: the policy flushes at neither.
            shared.wake_at.store(missing, Ordering::SeqCst);
            shared.wake_when_idle.store(true, Ordering::SeqCst);
            drop(state);
            if self.input.len() < missing && shared.in_flight.load(Ordering::SeqCst) > 0 {
                let _ = match timeout {
                    Some(t) => self.control.recv_timeout(t).ok(),
                    None => self.control.recv().ok(),
                };
            }
            shared.wake_when_idle.store(false, Ordering::SeqCst);
            shared.wake_at.store(0, Ordering::SeqCst);
            return;
        }
        drop(state);
        let mut sel = Select::new();
        sel.recv(&self.input);
        sel.recv(&self.control);
        // Readiness only: what arrived is taken under the lock.
        let _ = match timeout {
            Some(t) => sel.ready_timeout(t).ok(),
            None => Some(sel.ready()),
        };
    }
}
