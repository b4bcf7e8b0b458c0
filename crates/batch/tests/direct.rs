//! The batcher whose callers flush an idle proposal themselves
//! (`ProposalBatcher::start_direct`).

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use crossbeam_channel::{unbounded, Receiver};
use metastore_batch::{BatchConfig, BatchError, BatcherHandle, ProposalBatcher};

/// Each batch's count and the thread that flushed it.
type Flushed = Receiver<(usize, thread::ThreadId)>;

/// A sink that sends each batch's count and the thread that flushed it.
fn thread_sink() -> (impl FnMut(Vec<u8>, usize) + Send + 'static, Flushed) {
    let (tx, rx) = unbounded();
    let sink = move |_: Vec<u8>, n: usize| tx.send((n, thread::current().id())).unwrap();
    (sink, rx)
}

const NO_HANG: Duration = Duration::from_secs(10);

#[test]
fn a_direct_batcher_flushes_an_idle_proposal_on_the_callers_thread() {
    let (sink, rx) = thread_sink();
    let b = ProposalBatcher::start_direct(no_deadline(8), sink).unwrap();
    let h = b.handle();
    let me = thread::current().id();
    for i in 0..20 {
        b.propose(msg(0, i)).unwrap();
        // Flushed before `propose` returned, by this thread.
        assert_eq!(rx.try_recv(), Ok((1, me)), "proposal {i}");
        h.complete(1);
    }
    assert_eq!(b.try_propose(msg(0, 20)), Ok(None));
    assert_eq!(rx.try_recv(), Ok((1, me)), "try_propose too");
    let s = b.stats();
    assert_eq!((s.total_batches, s.flushes_by_idle), (21, 21));
    b.stop();
}

#[test]
fn a_direct_batcher_leaves_proposals_behind_work_in_flight_to_its_thread() {
    let (sink, rx) = thread_sink();
    let b = ProposalBatcher::start_direct(no_deadline(4), sink).unwrap();
    let h = b.handle();
    let me = thread::current().id();
    b.propose(msg(0, 0)).unwrap();
    assert_eq!(rx.try_recv(), Ok((1, me)));
    for i in 1..=4 {
        b.propose(msg(0, i)).unwrap();
    }
    let (n, by) = rx.recv_timeout(NO_HANG).unwrap();
    assert_eq!(n, 4, "grouped behind the one in flight");
    assert_ne!(by, me, "flushed by the batcher's thread");
    h.complete(5);
    // Idle again, but after a batch of 4: a burst may follow, whose first
    // proposal the batcher's thread flushes (and the rest may join it).
    b.propose(msg(0, 5)).unwrap();
    let (n, by) = rx.recv_timeout(NO_HANG).unwrap();
    assert_eq!(n, 1);
    assert_ne!(by, me, "after a larger batch, the batcher's thread flushes");
    h.complete(1);
    // After a batch of one, the caller flushes its own again.
    b.propose(msg(0, 6)).unwrap();
    assert_eq!(
        rx.try_recv(),
        Ok((1, me)),
        "idle again after a batch of one"
    );
    b.stop();
}

#[test]
fn the_completion_that_ends_the_work_in_flight_flushes_the_waiting_batch() {
    for direct in [false, true] {
        let (sink, rx) = thread_sink();
        let b = if direct {
            ProposalBatcher::start_direct(no_deadline(8), sink).unwrap()
        } else {
            ProposalBatcher::start(no_deadline(8), sink).unwrap()
        };
        let h = b.handle();
        b.propose(msg(0, 0)).unwrap();
        assert_eq!(rx.recv_timeout(NO_HANG).unwrap().0, 1);
        b.propose(msg(0, 1)).unwrap();
        b.propose(msg(0, 2)).unwrap();
        // Neither size (8) nor deadline (an hour) will flush these two.
        while b.stats().buffer_len < 2 {
            thread::yield_now();
        }
        assert!(
            rx.try_recv().is_err(),
            "direct {direct}: held while in flight"
        );
        // Time for the batcher to take them in and sleep: the completion
        // must wake it (without the pause this checks less, never fails).
        thread::sleep(Duration::from_millis(100));
        h.complete(1);
        assert_eq!(
            rx.recv_timeout(NO_HANG).map(|r| r.0),
            Ok(2),
            "direct {direct}: the completion woke the batcher"
        );
        assert_eq!(b.stats().flushes_by_idle, 2);
        b.stop();
    }
}

#[test]
fn a_direct_batcher_keeps_each_producers_order_under_racing_completions() {
    let log = Log::default();
    let handle: Arc<Mutex<Option<BatcherHandle>>> = Arc::default();
    let (done_tx, done_rx) = unbounded::<usize>();
    // Completions come from another thread, racing the producers.
    let completer = {
        let handle = Arc::clone(&handle);
        thread::spawn(move || {
            for n in done_rx {
                if let Some(h) = handle.lock().unwrap().as_ref() {
                    h.complete(n);
                }
            }
        })
    };
    let direct_flushes = Arc::new(Mutex::new((0usize, 0usize)));
    let loop_thread: Arc<Mutex<Option<thread::ThreadId>>> = Arc::default();
    let sink = {
        let (log, direct_flushes) = (log.clone(), Arc::clone(&direct_flushes));
        let loop_thread = Arc::clone(&loop_thread);
        move |batch: Vec<u8>, n: usize| {
            log.record(&batch, n);
            let by_loop = thread::current().name() == Some("metastore-batcher");
            if by_loop {
                *loop_thread.lock().unwrap() = Some(thread::current().id());
            }
            let mut c = direct_flushes.lock().unwrap();
            if by_loop {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
            done_tx.send(n).unwrap();
        }
    };
    // Batches of one: a caller flushes directly only after a batch of one,
    // so larger batches would leave the direct path to chance.
    let one = BatchConfig {
        max_batch_size: 1,
        ..no_deadline(1)
    };
    let b = Arc::new(ProposalBatcher::start_direct(one, sink).unwrap());
    *handle.lock().unwrap() = Some(b.handle());
    let (producers, per) = (4, 2_000);
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let b = Arc::clone(&b);
            thread::spawn(move || (0..per).for_each(|i| b.propose(msg(p, i)).unwrap()))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    b.stop();
    handle.lock().unwrap().take();
    drop(b);
    completer.join().unwrap();
    assert_each_once_in_order(&log.proposals(), producers, &vec![per; producers]);
    let (direct, by_loop) = *direct_flushes.lock().unwrap();
    assert!(
        direct > 0 && by_loop > 0,
        "both paths taken: {direct} direct, {by_loop} by the batcher's thread"
    );
}

#[test]
fn stop_from_inside_a_direct_flush_does_not_deadlock() {
    let log = Log::default();
    let (sink, slot) = stopping_sink(&log, 1);
    let b = Arc::new(ProposalBatcher::start_direct(BatchConfig::default(), sink).unwrap());
    *slot.lock().unwrap() = Arc::downgrade(&b);
    // Nothing in flight: flushed directly, and its sink stops the batcher.
    b.propose(msg(0, 0)).unwrap();
    assert!(b.is_closed());
    assert_eq!(b.propose(msg(0, 1)), Err(BatchError::Closed));
    b.stop();
    assert_each_once_in_order(&log.proposals(), 1, &[1]);
}
