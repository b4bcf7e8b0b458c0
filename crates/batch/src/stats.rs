//! What the batch loop reports: the seed's seven figures, flush reasons and
//! propose-to-flush latency percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::policy::{BatchPolicy, FlushReason};

/// Propose-to-flush latency of every flushed proposal, in microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Proposals recorded.
    pub count: u64,
}

/// A snapshot of the batch loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    pub total_proposals: u64,
    pub total_batches: u64,
    pub avg_batch_size: f64,
    pub current_load: f64,
    pub current_batch_size: usize,
    pub current_timeout: Duration,
    /// Proposals accepted and not yet flushed (buffered plus queued).
    pub buffer_len: usize,
    pub flushes_by_size: u64,
    pub flushes_by_deadline: u64,
    pub flushes_by_idle: u64,
    pub flushes_by_stop: u64,
    pub latency: LatencySummary,
}

/// Highest latency kept apart; slower proposals count as this (one minute).
const MAX_TRACKED_US: u64 = 60_000_000;

/// Counters and histogram, written by the batch loop once per flush.
pub(crate) struct StatsRecorder {
    stats: BatchStats,
    latency_us: Histogram<u64>,
}

impl StatsRecorder {
    pub(crate) fn new(policy: &BatchPolicy) -> Self {
        let mut recorder = StatsRecorder {
            stats: BatchStats::default(),
            // Bounds and precision are constants known to be valid.
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .expect("valid histogram bounds"),
        };
        recorder.follow(policy);
        recorder
    }

    fn follow(&mut self, policy: &BatchPolicy) {
        self.stats.current_load = policy.load();
        self.stats.current_batch_size = policy.batch_size();
        self.stats.current_timeout = policy.timeout();
    }

    /// Records one flush of `count` proposals; `policy` has already
    /// committed it, so its figures are the ones now in force.
    pub(crate) fn on_flush(
        &mut self,
        reason: FlushReason,
        count: usize,
        latencies: impl Iterator<Item = Duration>,
        policy: &BatchPolicy,
    ) {
        let s = &mut self.stats;
        s.total_proposals += count as u64;
        s.total_batches += 1;
        s.avg_batch_size = s.total_proposals as f64 / s.total_batches as f64;
        match reason {
            FlushReason::Size => s.flushes_by_size += 1,
            FlushReason::Deadline => s.flushes_by_deadline += 1,
            FlushReason::Idle => s.flushes_by_idle += 1,
            FlushReason::Stop => s.flushes_by_stop += 1,
        }
        for l in latencies {
            self.latency_us
                .saturating_record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
        self.follow(policy);
    }

    pub(crate) fn snapshot(&self, buffer_len: usize) -> BatchStats {
        let h = &self.latency_us;
        let q = |x: f64| h.value_at_quantile(x) as f64;
        BatchStats {
            buffer_len,
            latency: LatencySummary {
                p50_us: q(0.5),
                p90_us: q(0.9),
                p99_us: q(0.99),
                p999_us: q(0.999),
                max_us: h.max() as f64,
                count: h.len(),
            },
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BatchConfig;

    #[test]
    fn counts_and_percentiles() {
        let policy = BatchPolicy::new(&BatchConfig::default());
        let mut r = StatsRecorder::new(&policy);
        assert_eq!(r.snapshot(0).current_batch_size, 1);
        assert_eq!(r.snapshot(0).latency, LatencySummary::default());
        r.on_flush(
            FlushReason::Idle,
            1,
            [Duration::from_micros(100)].into_iter(),
            &policy,
        );
        r.on_flush(
            FlushReason::Size,
            3,
            (1..=3).map(|i| Duration::from_micros(i * 1000)),
            &policy,
        );
        let s = r.snapshot(7);
        assert_eq!(
            (s.total_proposals, s.total_batches, s.buffer_len),
            (4, 2, 7)
        );
        assert_eq!(s.avg_batch_size, 2.0);
        assert_eq!(
            (
                s.flushes_by_idle,
                s.flushes_by_size,
                s.flushes_by_deadline,
                s.flushes_by_stop
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(s.latency.count, 4);
        assert!((s.latency.max_us - 3000.0).abs() <= 3.0);
        assert!((s.latency.p50_us - 1000.0).abs() <= 1.0);
    }
}
