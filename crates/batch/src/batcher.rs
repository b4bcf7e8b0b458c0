//! The thread that drives [`BatchPolicy`]: it moves proposals from a bounded
//! queue into a buffer, asks the policy after every event whether to flush,
//! encodes each batch and hands it to the sink. Everything adaptive lives in
//! the policy; this file only waits, moves bytes and counts.

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

/// What the batcher's handles tell its loop, besides new proposals.
enum LoopSignal {
    /// That many flushed proposals are no longer in flight.
    Complete(usize),
    /// Re-read `closing`.
    Wake,
}

struct Shared {
    /// Producers send under the read lock. The loop takes the sender out
    /// (write lock) only once it has drained everything while closing, so a
    /// proposal whose `propose` returned `Ok` is always flushed.
    input: RwLock<Option<Sender<Queued>>>,
    closing: AtomicBool,
    /// Proposals in the loop's buffer, for `stats`.
    buffered: AtomicUsize,
    /// 0 while the loop listens on the queue itself. Otherwise the loop is
    /// accumulating a batch while work is in flight and sleeps on the control
    /// channel only: the producer whose proposal brings the queue to this
    /// length wakes it. One wake per batch instead of one per proposal
    /// (measured: most of the JS thread's cost per `put` was that futex wake).
    wake_at: AtomicUsize,
    stats: Mutex<StatsRecorder>,
    /// Kept here so the control channel outlives every handle.
    control: Sender<LoopSignal>,
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
            let _ = self.control.send(LoopSignal::Wake);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Batches proposals on a dedicated thread ("metastore-batcher").
pub struct ProposalBatcher {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    max_proposal_bytes: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

/// Lets the consumer of batches report completions from any thread.
#[derive(Clone)]
pub struct BatcherHandle {
    control: Sender<LoopSignal>,
}

impl BatcherHandle {
    /// `proposals` flushed proposals are no longer in flight (applied,
    /// rejected or otherwise done). When nothing is left in flight the next
    /// proposal is flushed at once (`FlushReason::Idle`). Reporting more than
    /// was flushed saturates at zero; after stop this does nothing.
    pub fn complete(&self, proposals: usize) {
        let _ = self.control.send(LoopSignal::Complete(proposals));
    }
}

impl ProposalBatcher {
    /// Validates `config` and starts the batcher thread.
    pub fn start(config: BatchConfig, sink: impl BatchSink) -> Result<ProposalBatcher, BatchError> {
        Self::start_with_clock(config, sink, Arc::new(SystemClock))
    }

    /// As [`start`](Self::start) with the clock the policy and the latency
    /// figures read. Waiting itself is always real time.
    pub fn start_with_clock(
        config: BatchConfig,
        sink: impl BatchSink,
        clock: Arc<dyn Clock>,
    ) -> Result<ProposalBatcher, BatchError> {
        config.validate()?;
        let (tx, input) = bounded(config.queue_capacity);
        let (control_tx, control) = unbounded();
        let policy = BatchPolicy::new(&config);
        let shared = Arc::new(Shared {
            input: RwLock::new(Some(tx)),
            closing: AtomicBool::new(false),
            buffered: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(0),
            stats: Mutex::new(StatsRecorder::new(&policy)),
            control: control_tx,
        });
        let batch_loop = BatchLoop {
            shared: Arc::clone(&shared),
            input,
            control,
            sink,
            clock: Arc::clone(&clock),
            buffer: Vec::with_capacity(policy.max_batch_size().min(1024)),
            policy,
            encode: EncodeOptions::from(&config),
            in_flight: 0,
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

    /// Queues a proposal. A full queue blocks the caller (back-pressure);
    /// nothing is dropped. `TooLarge` above `max_proposal_bytes`, `Closed`
    /// once stopping.
    pub fn propose(&self, data: Vec<u8>) -> Result<(), BatchError> {
        self.admit(&data)?;
        let input = read(&self.shared.input);
        let tx = input.as_ref().ok_or(BatchError::Closed)?;
        tx.send(Queued {
            at: self.clock.now(),
            data,
        })
        .map_err(|_| BatchError::Closed)?;
        self.shared.wake_if_due(tx.len());
        Ok(())
    }

    /// As [`propose`](Self::propose) but never blocks: `Ok(Some(data))` hands
    /// the proposal back when the queue is full.
    pub fn try_propose(&self, data: Vec<u8>) -> Result<Option<Vec<u8>>, BatchError> {
        self.admit(&data)?;
        let input = read(&self.shared.input);
        let tx = input.as_ref().ok_or(BatchError::Closed)?;
        match tx.try_send(Queued {
            at: self.clock.now(),
            data,
        }) {
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
            control: self.shared.control.clone(),
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
    /// for its own thread: the drain then finishes after the sink returns.
    pub fn stop(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.shared.control.send(LoopSignal::Wake);
        if thread::current().id() == self.thread_id {
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

struct BatchLoop<S> {
    shared: Arc<Shared>,
    input: Receiver<Queued>,
    control: Receiver<LoopSignal>,
    sink: S,
    clock: Arc<dyn Clock>,
    policy: BatchPolicy,
    encode: EncodeOptions,
    /// Mirrors the policy's buffered proposals; never more than max_batch_size.
    buffer: Vec<Queued>,
    /// Flushed proposals not yet completed by the consumer.
    in_flight: usize,
}

impl<S: BatchSink> BatchLoop<S> {
    fn run(mut self) {
        let mut input_open = true;
        loop {
            while let Ok(c) = self.control.try_recv() {
                self.on_signal(c);
            }
            if input_open {
                input_open = self.pull();
            }
            let closing = !input_open || self.shared.closing.load(Ordering::Acquire);
            let now = self.clock.now();
            let queued = self.input.len();
            let decision = if closing {
                self.policy.drain(queued)
            } else {
                self.policy.decide(now, queued, self.in_flight)
            };
            if let Some(flush) = decision {
                self.flush(flush, now);
            } else if !input_open {
                return; // drained: queue disconnected and empty, buffer empty
            } else if closing {
                self.close_input();
            } else {
                self.wait();
            }
        }
    }

    /// Moves queued proposals into the buffer, leaving the rest queued so a
    /// full queue still pushes back. `false` once the queue is closed and empty.
    fn pull(&mut self) -> bool {
        while self.buffer.len() < self.policy.max_batch_size() {
            match self.input.try_recv() {
                Ok(q) => self.enqueue(q),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn enqueue(&mut self, q: Queued) {
        self.policy.on_enqueue(q.at);
        self.buffer.push(q);
        self.shared
            .buffered
            .store(self.buffer.len(), Ordering::Relaxed);
    }

    fn on_signal(&mut self, c: LoopSignal) {
        if let LoopSignal::Complete(n) = c {
            self.in_flight = self.in_flight.saturating_sub(n);
        }
    }

    fn flush(&mut self, flush: Flush, now: Instant) {
        let take = flush.take.min(self.buffer.len());
        let taken = &self.buffer[..take];
        let batch = encode_batch_with(taken, &self.encode);
        self.policy.on_flush(&flush);
        // Stats first: once the sink has seen a batch, so has `stats()`.
        lock(&self.shared.stats).on_flush(
            flush.reason,
            take,
            taken.iter().map(|q| now.saturating_duration_since(q.at)),
            &self.policy,
        );
        self.buffer.drain(..take);
        self.shared
            .buffered
            .store(self.buffer.len(), Ordering::Relaxed);
        self.in_flight = self.in_flight.saturating_add(take);
        self.sink.on_batch(batch, take);
    }

    /// Closing with an empty buffer: take the sender out so the queue
    /// disconnects once empty. A producer still inside `propose` holds the
    /// read lock; its proposal is about to arrive, so wait briefly for it.
    fn close_input(&mut self) {
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
                self.enqueue(q);
            }
        }
    }

    /// Sleeps until a proposal, a control message or the policy's deadline.
    /// While a batch accumulates behind work in flight, it sleeps until enough
    /// proposals are queued to fill it instead (see `Shared::wake_at`).
    fn wait(&mut self) {
        let timeout = self
            .policy
            .next_deadline()
            .map(|d| d.saturating_duration_since(self.clock.now()));
        let missing = self.policy.batch_size().saturating_sub(self.buffer.len());
        if self.in_flight > 0 && !self.buffer.is_empty() && missing > 0 {
            self.shared.wake_at.store(missing, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.input.len() < missing {
                let woken = match timeout {
                    Some(t) => self.control.recv_timeout(t).ok(),
                    None => self.control.recv().ok(),
                };
                if let Some(c) = woken {
                    self.on_signal(c);
                }
            }
            self.shared.wake_at.store(0, Ordering::SeqCst);
            return;
        }
        let mut sel = Select::new();
        let from_input = sel.recv(&self.input);
        sel.recv(&self.control);
        let op = match timeout {
            Some(t) => match sel.select_timeout(t) {
                Ok(op) => op,
                Err(_) => return, // deadline reached
            },
            None => sel.select(),
        };
        if op.index() == from_input {
            // Err: disconnected; the next `pull` sees it.
            if let Ok(q) = op.recv(&self.input) {
                self.enqueue(q);
            }
        } else if let Ok(c) = op.recv(&self.control) {
            self.on_signal(c);
        }
    }
}
