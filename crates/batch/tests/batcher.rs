//! The batcher thread end to end. No test asserts on elapsed time: where a
//! scenario needs proposals to pile up, a gate holds the sink until they have.

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test or bench

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use crossbeam_channel::{bounded, unbounded};
use metastore_batch::codec::{FLAG_LZ4, MAGIC};
use metastore_batch::{BatchConfig, BatchError, BatcherHandle, Compression, ProposalBatcher};

#[test]
fn handles_are_shareable() {
    fn check<T: Clone + Send + Sync>() {}
    fn check_batcher<T: Send + Sync>() {}
    check::<BatcherHandle>();
    check_batcher::<ProposalBatcher>();
}

#[test]
fn invalid_config_is_refused() {
    let cfg = BatchConfig {
        min_batch_size: 300,
        ..Default::default()
    };
    let err = ProposalBatcher::start(cfg, |_: Vec<u8>, _: usize| {})
        .err()
        .expect("refused");
    assert_eq!(err.code(), "ERR_INVALID_CONFIG");
    assert_eq!(
        err.to_string(),
        "min_batch_size: min_batch_size (300) must be <= max_batch_size (256)"
    );
}

#[test]
fn too_large_proposals_are_refused() {
    let log = Log::default();
    let cfg = BatchConfig {
        max_proposal_bytes: 10,
        ..Default::default()
    };
    let b = ProposalBatcher::start(cfg, log.sink()).unwrap();
    assert_eq!(
        b.propose(vec![0; 11]),
        Err(BatchError::TooLarge { size: 11, max: 10 })
    );
    assert_eq!(
        b.try_propose(vec![0; 11]),
        Err(BatchError::TooLarge { size: 11, max: 10 })
    );
    assert_eq!(b.propose(vec![7; 10]), Ok(()));
    b.stop();
    assert_eq!(log.proposals(), vec![vec![7; 10]]);
}

#[test]
fn stop_is_idempotent_and_later_proposals_are_closed() {
    let log = Log::default();
    let b = ProposalBatcher::start(BatchConfig::default(), log.sink()).unwrap();
    b.propose(b"before".to_vec()).unwrap();
    assert!(!b.is_closed());
    b.stop();
    assert!(b.is_closed());
    b.stop();
    assert_eq!(b.propose(b"after".to_vec()), Err(BatchError::Closed));
    assert_eq!(b.try_propose(b"after".to_vec()), Err(BatchError::Closed));
    assert_eq!(BatchError::Closed.code(), "ERR_CLOSED");
    b.handle().complete(1); // harmless after stop
    assert_eq!(log.proposals(), vec![b"before".to_vec()]);
    let s = b.stats();
    assert_eq!((s.total_proposals, s.buffer_len), (1, 0));
}

#[test]
fn drop_flushes_everything() {
    let log = Log::default();
    {
        let b = ProposalBatcher::start(no_deadline(64), log.sink()).unwrap();
        for i in 0..1000 {
            b.propose(msg(0, i)).unwrap();
        }
    }
    assert_each_once_in_order(&log.proposals(), 1, &[1000]);
}

#[test]
fn stop_drains_the_queue_from_many_producers() {
    let log = Log::default();
    let (sink, gate) = gated(&log);
    // A small maximum so the drain takes many batches; the queue holds all.
    let cfg = BatchConfig {
        max_batch_size: 16,
        queue_capacity: 8192,
        ..no_deadline(4)
    };
    let b = Arc::new(ProposalBatcher::start(cfg, sink).unwrap());
    b.propose(msg(0, 0)).unwrap();
    gate.entered.recv().unwrap();
    // The batcher is stuck in the sink; everything else piles up in the queue.
    let per = 1000;
    let producers: Vec<_> = (1..=4)
        .map(|p| {
            let b = Arc::clone(&b);
            thread::spawn(move || (0..per).for_each(|i| b.propose(msg(p, i)).unwrap()))
        })
        .collect();
    producers.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(b.stats().buffer_len, 4 * per);
    let stopper = {
        let b = Arc::clone(&b);
        thread::spawn(move || b.stop())
    };
    // Let the batcher go on only once it is stopping, so the whole queue is
    // drained by the stop.
    while !b.is_closed() {
        thread::yield_now();
    }
    gate.open.send(()).unwrap();
    stopper.join().unwrap();

    let seen = log.proposals();
    assert_each_once_in_order(&seen, 5, &[1, per, per, per, per]);
    assert!(log.batches().iter().all(|batch| batch.len() <= 16));
    let s = b.stats();
    assert_stats_add_up(&s, &log);
    assert_eq!(s.total_proposals, 4001);
    assert_eq!(s.buffer_len, 0);
    assert_eq!((s.flushes_by_idle, s.flushes_by_stop), (1, 4000 / 16));
    assert_eq!(b.propose(b"late".to_vec()), Err(BatchError::Closed));
}

#[test]
fn proposals_accepted_before_a_concurrent_stop_are_never_lost() {
    let log = Log::default();
    let cfg = BatchConfig {
        max_batch_size: 32,
        queue_capacity: 64,
        ..Default::default()
    };
    let b = Arc::new(ProposalBatcher::start(cfg, log.sink()).unwrap());
    let (progress_tx, progress) = unbounded::<()>();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let b = Arc::clone(&b);
            let progress_tx = progress_tx.clone();
            thread::spawn(move || {
                let mut accepted = 0;
                loop {
                    match b.propose(msg(p, accepted)) {
                        Ok(()) => accepted += 1,
                        Err(BatchError::Closed) => return accepted,
                        Err(e) => panic!("{e}"),
                    }
                    if accepted == 500 {
                        progress_tx.send(()).unwrap();
                    }
                }
            })
        })
        .collect();
    // Stop while every producer is still proposing, from two threads at once.
    (0..4).for_each(|_| progress.recv().unwrap());
    let stoppers: Vec<_> = (0..2)
        .map(|_| {
            let b = Arc::clone(&b);
            thread::spawn(move || b.stop())
        })
        .collect();
    let accepted: Vec<usize> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    stoppers.into_iter().for_each(|t| t.join().unwrap());
    assert!(accepted.iter().all(|&n| n >= 500));
    assert_each_once_in_order(&log.proposals(), 4, &accepted);
    assert_stats_add_up(&b.stats(), &log);
}

#[test]
fn sequential_proposals_go_out_alone_and_at_once() {
    let (tx, rx) = unbounded();
    // A batch size of 8 with hour-long timeouts: only the idle trigger can
    // flush a lone proposal.
    let b = ProposalBatcher::start(no_deadline(8), move |batch: Vec<u8>, n: usize| {
        tx.send((batch, n)).unwrap()
    })
    .unwrap();
    let h = b.handle();
    for i in 0..50 {
        b.propose(msg(0, i)).unwrap();
        let (batch, n) = rx.recv().unwrap();
        assert_eq!(
            (batch, n),
            (msg(0, i), 1),
            "a single proposal is stored raw"
        );
        h.complete(n);
    }
    let s = b.stats();
    assert_eq!(
        (s.total_batches, s.flushes_by_idle, s.avg_batch_size),
        (50, 50, 1.0)
    );
    assert_eq!(s.current_batch_size, 8);
    assert!(s.current_load < 0.01);
    b.stop();
}

#[test]
fn the_next_batch_accumulates_while_one_is_in_flight() {
    let log = Log::default();
    let (tx, rx) = unbounded();
    let recorder = log.clone();
    let sink = move |batch: Vec<u8>, n: usize| {
        recorder.record(&batch, n);
        tx.send(n).unwrap();
    };
    let b = ProposalBatcher::start(no_deadline(4), sink).unwrap();
    let h = b.handle();
    b.propose(msg(0, 0)).unwrap();
    assert_eq!(rx.recv().unwrap(), 1); // idle: out at once, now in flight
    for i in 1..=4 {
        b.propose(msg(0, i)).unwrap();
    }
    assert_eq!(rx.recv().unwrap(), 4); // grouped behind the one in flight
    h.complete(5);
    b.propose(msg(0, 5)).unwrap();
    assert_eq!(rx.recv().unwrap(), 1); // idle again
    b.stop();
    let sizes: Vec<usize> = log.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 4, 1]);
    let s = b.stats();
    assert_eq!(
        (
            s.flushes_by_idle,
            s.flushes_by_size,
            s.flushes_by_deadline,
            s.flushes_by_stop
        ),
        (2, 1, 0, 0)
    );
}

#[test]
fn a_waiting_proposal_is_flushed_by_its_deadline() {
    let (tx, rx) = unbounded();
    let cfg = BatchConfig {
        min_batch_size: 100,
        min_timeout: Duration::from_millis(2),
        max_timeout: Duration::from_millis(4),
        ..Default::default()
    };
    let b = ProposalBatcher::start(cfg, move |_: Vec<u8>, n: usize| tx.send(n).unwrap()).unwrap();
    b.propose(b"first".to_vec()).unwrap();
    assert_eq!(rx.recv().unwrap(), 1); // idle; never completed, so in flight
    b.propose(b"second".to_vec()).unwrap();
    assert_eq!(rx.recv().unwrap(), 1); // far below the batch size: only the deadline flushes it
    let s = b.stats();
    assert_eq!((s.flushes_by_idle, s.flushes_by_deadline), (1, 1));
    b.stop();
}

#[test]
fn a_slow_sink_under_concurrent_load_gets_larger_batches() {
    let log = Log::default();
    let (sink, gate) = gated(&log);
    let b = Arc::new(ProposalBatcher::start(BatchConfig::default(), sink).unwrap());
    b.propose(msg(0, 0)).unwrap();
    gate.entered.recv().unwrap();
    let producers: Vec<_> = (1..=4)
        .map(|p| {
            let b = Arc::clone(&b);
            thread::spawn(move || (0..500).for_each(|i| b.propose(msg(p, i)).unwrap()))
        })
        .collect();
    producers.into_iter().for_each(|t| t.join().unwrap());
    gate.open.send(()).unwrap();
    // No completion is ever reported, so the batcher groups what piled up.
    b.stop();
    let s = b.stats();
    assert_stats_add_up(&s, &log);
    assert_eq!(s.total_proposals, 2001);
    assert!(s.avg_batch_size > 1.0, "avg {}", s.avg_batch_size);
    assert!(
        s.total_batches <= 1 + 2000usize.div_ceil(256) as u64 + 1,
        "{} batches",
        s.total_batches
    );
    assert!(log.batches().iter().all(|batch| batch.len() <= 256));
    assert_each_once_in_order(&log.proposals(), 5, &[1, 500, 500, 500, 500]);
}

#[test]
fn disabled_batching_flushes_one_proposal_per_entry() {
    let log = Log::default();
    let (sink, gate) = gated(&log);
    let cfg = BatchConfig {
        enable: false,
        ..Default::default()
    };
    let b = ProposalBatcher::start(cfg, sink).unwrap();
    b.propose(msg(0, 0)).unwrap();
    gate.entered.recv().unwrap();
    for i in 1..20 {
        b.propose(msg(0, i)).unwrap();
    }
    gate.open.send(()).unwrap();
    b.stop();
    assert!(log.batches().iter().all(|batch| batch.len() == 1));
    assert_each_once_in_order(&log.proposals(), 1, &[20]);
    let s = b.stats();
    assert_eq!(
        (s.total_batches, s.current_batch_size, s.current_timeout),
        (20, 1, Duration::ZERO)
    );
}

#[test]
fn a_full_queue_pushes_back() {
    let log = Log::default();
    let (sink, gate) = gated(&log);
    let cfg = BatchConfig {
        queue_capacity: 2,
        ..Default::default()
    };
    let b = Arc::new(ProposalBatcher::start(cfg, sink).unwrap());
    b.propose(msg(0, 0)).unwrap();
    gate.entered.recv().unwrap();
    assert_eq!(b.try_propose(msg(0, 1)), Ok(None));
    assert_eq!(b.try_propose(msg(0, 2)), Ok(None));
    assert_eq!(
        b.try_propose(msg(0, 3)),
        Ok(Some(msg(0, 3))),
        "full: handed back"
    );
    assert_eq!(b.stats().buffer_len, 2);
    // A blocking propose waits for room instead of dropping.
    let blocked = {
        let b = Arc::clone(&b);
        thread::spawn(move || b.propose(msg(0, 3)))
    };
    gate.open.send(()).unwrap();
    assert_eq!(blocked.join().unwrap(), Ok(()));
    b.stop();
    assert_each_once_in_order(&log.proposals(), 1, &[4]);
}

#[test]
fn batches_are_compressed_as_configured() {
    let log = Log::default();
    let (raw_tx, raw) = unbounded();
    let recorder = log.clone();
    let mut first = true;
    let (entered_tx, entered) = bounded(1);
    let (open_tx, open) = bounded::<()>(1);
    let sink = move |batch: Vec<u8>, n: usize| {
        recorder.record(&batch, n);
        raw_tx.send(batch).unwrap();
        if std::mem::take(&mut first) {
            entered_tx.send(()).unwrap();
            open.recv().unwrap();
        }
    };
    let cfg = BatchConfig {
        compression: Compression::Lz4,
        compress_min_bytes: 256,
        ..Default::default()
    };
    let b = ProposalBatcher::start(cfg, sink).unwrap();
    b.propose(b"x".to_vec()).unwrap();
    entered.recv().unwrap();
    let payload = vec![b'a'; 100];
    for _ in 0..50 {
        b.propose(payload.clone()).unwrap();
    }
    open_tx.send(()).unwrap();
    b.stop();
    assert_eq!(raw.recv().unwrap(), b"x");
    let packed = raw.recv().unwrap();
    assert_eq!(packed[..3], [MAGIC, 1, FLAG_LZ4]);
    assert!(packed.len() < 500);
    assert_eq!(log.proposals().len(), 51);
    assert!(log.proposals()[1..].iter().all(|p| *p == payload));
}

#[test]
fn stop_from_inside_the_sink_does_not_deadlock() {
    let log = Log::default();
    let (sink, slot) = stopping_sink(&log, 10);
    let b = Arc::new(ProposalBatcher::start(BatchConfig::default(), sink).unwrap());
    *slot.lock().unwrap() = Arc::downgrade(&b);
    let mut accepted = 0;
    while b.propose(msg(0, accepted)).is_ok() {
        accepted += 1;
    }
    b.stop();
    assert!(accepted >= 10);
    assert_each_once_in_order(&log.proposals(), 1, &[accepted]);
}

#[test]
fn stats_report_the_policy_and_latency() {
    let log = Log::default();
    let b = ProposalBatcher::start(BatchConfig::default(), log.sink()).unwrap();
    let s = b.stats();
    assert_eq!(
        (s.total_batches, s.current_batch_size, s.current_timeout),
        (0, 1, Duration::from_millis(5))
    );
    assert_eq!(s.current_load, 0.0);
    for i in 0..100 {
        b.propose(msg(0, i)).unwrap();
    }
    b.stop();
    let s = b.stats();
    assert_stats_add_up(&s, &log);
    assert_eq!(s.total_proposals, 100);
    assert!(s.latency.p50_us <= s.latency.p90_us && s.latency.p90_us <= s.latency.p99_us);
    assert!(s.latency.p99_us <= s.latency.p999_us && s.latency.p999_us <= s.latency.max_us);
}
