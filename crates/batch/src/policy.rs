//! The adaptive batch policy as a pure state machine.
//!
//! Like raft-rs's `RawNode` it never sleeps, spawns or reads a clock: every
//! event carries its `now`, so its dynamics are tested with a fake clock. The
//! driver (`batcher.rs`) feeds it enqueues, asks [`BatchPolicy::decide`] after
//! every event, and sleeps until [`BatchPolicy::next_deadline`] otherwise.
//!
//! The seed's algorithm: load is an EMA of buffer usage, and batch size and
//! timeout are interpolated below and above `load_threshold`. Unlike the seed,
//! usage is sampled at each flush decision from the pending count (buffered
//! plus still queued), before anything is taken; the Go code sampled an empty
//! buffer, so its load was always 0.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::BatchConfig;

/// Weight of the newest usage sample in the load EMA (the seed's alpha).
pub const LOAD_ALPHA: f64 = 0.3;

/// Source of `now` for the driver; tests inject a fake one.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Why a batch was flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// The buffer reached the current batch size.
    Size,
    /// The oldest buffered proposal waited the current timeout.
    Deadline,
    /// Nothing of ours was in flight, so waiting would only add latency.
    Idle,
    /// The batcher is stopping and drains everything.
    Stop,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Size => "size",
            FlushReason::Deadline => "deadline",
            FlushReason::Idle => "idle",
            FlushReason::Stop => "stop",
        }
    }
}

/// A flush decision: take the `take` oldest buffered proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    pub reason: FlushReason,
    /// 1..=min(buffered, max_batch_size); always 1 with batching disabled.
    pub take: usize,
    /// Buffered, queued and in-flight proposals when the decision was made:
    /// the load sample.
    pub pending: usize,
}

/// Batch size, timeout and load of the batch loop, plus the enqueue times of
/// the buffered proposals (oldest first) that deadlines are measured from.
#[derive(Clone, Debug)]
pub struct BatchPolicy {
    enable: bool,
    min_size: usize,
    mid_size: usize,
    max_size: usize,
    min_timeout: Duration,
    mid_timeout: Duration,
    max_timeout: Duration,
    threshold: f64,
    load: f64,
    batch_size: usize,
    timeout: Duration,
    enqueued: VecDeque<Instant>,
}

/// Where `x` lies in `lo..=hi`, as 0..=1; an empty range counts as its start,
/// so thresholds of 0 and 1 need no division by zero.
fn fraction(x: f64, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn lerp(a: f64, b: f64, f: f64) -> f64 {
    a + (b - a) * f
}

impl BatchPolicy {
    /// Expects a validated config; out-of-range values are clamped rather
    /// than trusted, so the policy never panics.
    pub fn new(config: &BatchConfig) -> Self {
        let max_size = config.max_batch_size.max(1);
        let min_size = config.min_batch_size.clamp(1, max_size);
        let max_timeout = config.max_timeout;
        let min_timeout = config.min_timeout.min(max_timeout);
        let threshold = if config.load_threshold.is_nan() {
            BatchConfig::default().load_threshold
        } else {
            config.load_threshold.clamp(0.0, 1.0)
        };
        // The seed's midpoints are max/2; lifting them to the minimum keeps
        // size and timeout monotonic in load when min > max/2.
        let mut policy = BatchPolicy {
            enable: config.enable,
            min_size,
            mid_size: (max_size / 2).max(min_size),
            max_size,
            min_timeout,
            mid_timeout: (max_timeout / 2).max(min_timeout),
            max_timeout,
            threshold,
            load: 0.0,
            batch_size: min_size,
            timeout: min_timeout,
            enqueued: VecDeque::new(),
        };
        policy.recompute();
        policy
    }

    /// A proposal entered the buffer; `now` is when it was proposed.
    pub fn on_enqueue(&mut self, now: Instant) {
        self.enqueued.push_back(now);
    }

    /// Should the buffer be flushed now? `queued` counts proposals still in
    /// the input queue, `in_flight` flushed proposals not yet completed.
    /// Pure: commit a decision with [`on_flush`](Self::on_flush).
    pub fn decide(&self, now: Instant, queued: usize, in_flight: usize) -> Option<Flush> {
        let oldest = *self.enqueued.front()?;
        let buffered = self.enqueued.len();
        let reason = if in_flight == 0 {
            // Nothing to group with: waiting would be pure latency.
            FlushReason::Idle
        } else if buffered >= self.batch_size {
            FlushReason::Size
        } else if self.deadline_of(oldest).is_some_and(|d| now >= d) {
            FlushReason::Deadline
        } else {
            return None;
        };
        Some(self.flush_of(reason, queued, in_flight))
    }

    /// The flush that drains the buffer while stopping, regardless of size,
    /// deadline or in-flight work; `None` once the buffer is empty.
    pub fn drain(&self, queued: usize) -> Option<Flush> {
        if self.enqueued.is_empty() {
            return None;
        }
        Some(self.flush_of(FlushReason::Stop, queued, 0))
    }

    /// The load sample counts every proposal that wants the pipeline: buffered,
    /// still queued, and already in Raft. Counting only what waits here would
    /// repeat the original defect in another form: with a small batch size each
    /// proposal leaves at once, so the buffer looks empty, the load stays 0 and
    /// the batch size never grows, however many requests are outstanding.
    fn flush_of(&self, reason: FlushReason, queued: usize, in_flight: usize) -> Flush {
        let buffered = self.enqueued.len();
        // Take everything ready, up to the maximum: one larger Raft entry
        // beats several small ones. Disabled: each proposal alone.
        let take = if self.enable {
            buffered.min(self.max_size)
        } else {
            1
        };
        Flush {
            reason,
            take,
            pending: buffered.saturating_add(queued).saturating_add(in_flight),
        }
    }

    /// Commits a decision: forgets the taken proposals and feeds the load
    /// sample of the decision into the EMA.
    pub fn on_flush(&mut self, flush: &Flush) {
        let take = flush.take.min(self.enqueued.len());
        self.enqueued.drain(..take);
        self.adjust(flush.pending);
    }

    /// When the oldest buffered proposal reaches the current timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.enqueued
            .front()
            .and_then(|&oldest| self.deadline_of(oldest))
    }

    fn deadline_of(&self, oldest: Instant) -> Option<Instant> {
        oldest.checked_add(self.timeout)
    }

    /// One EMA step with `usage = min(1, pending / max_batch_size)`, then
    /// batch size and timeout follow the new load.
    pub fn adjust(&mut self, pending: usize) {
        let usage = (pending as f64 / self.max_size as f64).min(1.0);
        self.load = (LOAD_ALPHA * usage + (1.0 - LOAD_ALPHA) * self.load).clamp(0.0, 1.0);
        self.recompute();
    }

    fn recompute(&mut self) {
        if !self.enable {
            self.batch_size = 1;
            self.timeout = Duration::ZERO;
            return;
        }
        let (f, sizes, timeouts) = if self.load > self.threshold {
            (
                fraction(self.load, self.threshold, 1.0),
                (self.mid_size, self.max_size),
                (self.mid_timeout, self.max_timeout),
            )
        } else {
            (
                fraction(self.load, 0.0, self.threshold),
                (self.min_size, self.mid_size),
                (self.min_timeout, self.mid_timeout),
            )
        };
        // Floor, not round: the tiny load of a sequential stream of single
        // proposals must not lift the batch size off its minimum.
        let size = lerp(sizes.0 as f64, sizes.1 as f64, f).floor() as usize;
        self.batch_size = size.clamp(self.min_size, self.max_size);
        let nanos = lerp(
            timeouts.0.as_nanos() as f64,
            timeouts.1.as_nanos() as f64,
            f,
        )
        .floor();
        self.timeout = Duration::from_nanos(nanos as u64).clamp(self.min_timeout, self.max_timeout);
    }

    /// The EMA of buffer usage, in 0..=1.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Buffered proposals that trigger a `Size` flush (1 when disabled).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How long the oldest buffered proposal may wait (zero when disabled).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Proposals enqueued and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.enqueued.len()
    }

    pub fn max_batch_size(&self) -> usize {
        self.max_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_points() {
        let mut p = BatchPolicy::new(&BatchConfig::default());
        assert_eq!((p.batch_size(), p.timeout()), (1, Duration::from_millis(5)));
        p.load = 0.7;
        p.recompute();
        assert_eq!(
            (p.batch_size(), p.timeout()),
            (128, Duration::from_millis(10))
        );
        p.load = 0.85;
        p.recompute();
        assert_eq!(p.batch_size(), 192);
        assert_eq!(p.timeout(), Duration::from_millis(15));
        p.load = 1.0;
        p.recompute();
        assert_eq!(
            (p.batch_size(), p.timeout()),
            (256, Duration::from_millis(20))
        );
    }

    #[test]
    fn degenerate_thresholds() {
        for t in [0.0, 1.0] {
            let mut p = BatchPolicy::new(&BatchConfig {
                load_threshold: t,
                ..Default::default()
            });
            for load in [0.0, 0.5, 1.0] {
                p.load = load;
                p.recompute();
                assert!((1..=256).contains(&p.batch_size()));
                assert!(
                    p.timeout() >= Duration::from_millis(5)
                        && p.timeout() <= Duration::from_millis(20)
                );
            }
        }
        let mut p = BatchPolicy::new(&BatchConfig {
            load_threshold: 0.0,
            ..Default::default()
        });
        p.load = 1.0;
        p.recompute();
        assert_eq!(p.batch_size(), 256);
    }

    #[test]
    fn midpoint_never_below_minimum() {
        let mut p = BatchPolicy::new(&BatchConfig {
            min_batch_size: 200,
            ..Default::default()
        });
        let mut last = 0;
        for i in 0..=100 {
            p.load = i as f64 / 100.0;
            p.recompute();
            assert!(p.batch_size() >= last, "size must grow with load");
            last = p.batch_size();
        }
        assert_eq!(last, 256);
    }
}
