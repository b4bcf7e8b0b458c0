//! What the batcher's test files share: a sink that records and checks every
//! batch, and proposals that name their producer and position.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses its own part; a failed unwrap is a failed test

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use metastore_batch::{decode_batch, BatchConfig, BatchStats, ProposalBatcher};

pub type Batches = Arc<Mutex<Vec<Vec<Vec<u8>>>>>;

/// Records every batch, decoded; checks that `count` matches its contents.
#[derive(Clone, Default)]
pub struct Log(pub Batches);

impl Log {
    pub fn record(&self, batch: &[u8], count: usize) {
        let proposals: Vec<Vec<u8>> = decode_batch(batch)
            .expect("every batch decodes")
            .into_iter()
            .map(|p| p.into_owned())
            .collect();
        assert_eq!(proposals.len(), count, "count passed to the sink");
        self.0.lock().unwrap().push(proposals);
    }

    pub fn sink(&self) -> impl FnMut(Vec<u8>, usize) + Send + 'static {
        let log = self.clone();
        move |batch, count| log.record(&batch, count)
    }

    pub fn batches(&self) -> Vec<Vec<Vec<u8>>> {
        self.0.lock().unwrap().clone()
    }

    pub fn proposals(&self) -> Vec<Vec<u8>> {
        self.batches().concat()
    }
}

/// A sink whose first batch blocks until the test opens the gate.
pub struct Gate {
    pub entered: Receiver<()>,
    pub open: Sender<()>,
}

pub fn gated(log: &Log) -> (impl FnMut(Vec<u8>, usize) + Send + 'static, Gate) {
    let (entered_tx, entered) = bounded(1);
    let (open, open_rx) = bounded::<()>(1);
    let log = log.clone();
    let mut first = true;
    let sink = move |batch: Vec<u8>, count| {
        log.record(&batch, count);
        if std::mem::take(&mut first) {
            entered_tx.send(()).unwrap();
            open_rx.recv().unwrap();
        }
    };
    (sink, Gate { entered, open })
}

/// Long timeouts: only size, idle and stop can flush in these tests.
pub fn no_deadline(min_batch_size: usize) -> BatchConfig {
    BatchConfig {
        min_batch_size,
        min_timeout: Duration::from_secs(3600),
        max_timeout: Duration::from_secs(3600),
        ..Default::default()
    }
}

pub fn msg(producer: usize, i: usize) -> Vec<u8> {
    format!("p{producer}-{i}").into_bytes()
}

pub fn parse(m: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(m).unwrap();
    let (p, i) = s[1..].split_once('-').unwrap();
    (p.parse().unwrap(), i.parse().unwrap())
}

/// Every flushed proposal exactly once, and each producer's in order.
pub fn assert_each_once_in_order(seen: &[Vec<u8>], producers: usize, per_producer: &[usize]) {
    let mut next = vec![0usize; producers];
    for m in seen {
        let (p, i) = parse(m);
        assert_eq!(
            i, next[p],
            "producer {p}: proposal out of order or repeated"
        );
        next[p] += 1;
    }
    assert_eq!(next, per_producer);
}

pub fn assert_stats_add_up(s: &BatchStats, log: &Log) {
    let batches = log.batches();
    let proposals: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(s.total_batches, batches.len() as u64);
    assert_eq!(s.total_proposals, proposals as u64);
    assert_eq!(
        s.flushes_by_size + s.flushes_by_deadline + s.flushes_by_idle + s.flushes_by_stop,
        s.total_batches
    );
    assert_eq!(s.latency.count, s.total_proposals);
    if s.total_batches > 0 {
        assert!((s.avg_batch_size - proposals as f64 / batches.len() as f64).abs() < 1e-9);
    }
}

/// Where a [`stopping_sink`] finds the batcher it stops.
pub type Slot = Arc<Mutex<Weak<ProposalBatcher>>>;

/// A sink that records each batch and, once `after` proposals are recorded,
/// stops the batcher in the returned slot from inside itself.
pub fn stopping_sink(
    log: &Log,
    after: usize,
) -> (impl FnMut(Vec<u8>, usize) + Send + 'static, Slot) {
    let slot: Slot = Arc::default();
    let (log, stops) = (log.clone(), Arc::clone(&slot));
    let sink = move |batch: Vec<u8>, n: usize| {
        log.record(&batch, n);
        if log.proposals().len() >= after {
            if let Some(b) = stops.lock().unwrap().upgrade() {
                b.stop();
            }
        }
    };
    (sink, slot)
}
