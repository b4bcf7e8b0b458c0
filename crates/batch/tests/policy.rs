//! The batch policy driven with a fake clock: instants are a base plus
//! offsets, so nothing sleeps and nothing depends on the machine's speed.

use std::time::{Duration, Instant};

use metastore_batch::{BatchConfig, BatchPolicy, Flush, FlushReason};
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One proposal at a time: propose, flush, complete, repeat.
fn sequential(p: &mut BatchPolicy, start: Instant, n: u64) -> Instant {
    let mut now = start;
    for _ in 0..n {
        now += ms(10);
        p.on_enqueue(now);
        let f = p
            .decide(now, 0, 0)
            .expect("nothing in flight: flush at once");
        assert_eq!((f.reason, f.take), (FlushReason::Idle, 1));
        p.on_flush(&f);
        assert_eq!(p.buffered(), 0);
    }
    now
}

#[test]
fn sequential_low_load_keeps_minimum_and_adds_no_wait() {
    let mut p = BatchPolicy::new(&BatchConfig::default());
    let base = Instant::now();
    let mut now = base;
    for _ in 0..1000 {
        now += ms(10);
        p.on_enqueue(now);
        // Flushed at the very instant it arrived.
        let f = p.decide(now, 0, 0).unwrap();
        assert_eq!(
            f,
            Flush {
                reason: FlushReason::Idle,
                take: 1,
                pending: 1
            }
        );
        p.on_flush(&f);
        // While it is in flight there is nothing else to do.
        assert_eq!(p.decide(now, 0, 1), None);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.batch_size(), 1);
        assert!(p.load() < 0.01, "load {}", p.load());
        assert!(
            p.timeout() < Duration::from_micros(5100),
            "timeout {:?}",
            p.timeout()
        );
    }
}

fn overload(p: &mut BatchPolicy, mut now: Instant, rounds: usize) -> Instant {
    let max = p.max_batch_size();
    for _ in 0..rounds {
        let (load, size, timeout) = (p.load(), p.batch_size(), p.timeout());
        for _ in 0..max {
            p.on_enqueue(now);
        }
        // Far more pending than one batch while the previous one is in flight.
        let f = p.decide(now, 10_000, 1).expect("a full buffer flushes");
        assert_eq!((f.reason, f.take), (FlushReason::Size, max));
        p.on_flush(&f);
        assert!(p.load() > load && p.batch_size() >= size && p.timeout() >= timeout);
        now += ms(1);
    }
    now
}

#[test]
fn sustained_overload_drives_size_and_timeout_to_their_maxima() {
    let mut p = BatchPolicy::new(&BatchConfig::default());
    overload(&mut p, Instant::now(), 30);
    assert!(p.load() > 0.99, "load {}", p.load());
    assert!(p.load() > 0.7);
    assert!(p.batch_size() >= 250, "batch size {}", p.batch_size());
    assert!(
        p.timeout() >= Duration::from_micros(19_900),
        "timeout {:?}",
        p.timeout()
    );
    assert!(p.batch_size() <= 256 && p.timeout() <= ms(20));
}

#[test]
fn load_is_sampled_before_the_buffer_is_emptied() {
    // The Go batcher sampled after flushing, so its load never left 0.
    let mut p = BatchPolicy::new(&BatchConfig::default());
    let now = Instant::now();
    for _ in 0..256 {
        p.on_enqueue(now);
    }
    let f = p.decide(now, 0, 1).unwrap();
    assert_eq!(f.pending, 257);
    p.on_flush(&f);
    assert!((p.load() - 0.3).abs() < 1e-12, "load {}", p.load());
    // Queued proposals count as pending too.
    let mut q = BatchPolicy::new(&BatchConfig::default());
    q.on_enqueue(now);
    let f = q.decide(now, 127, 0).unwrap();
    assert_eq!(f.pending, 128);
    q.on_flush(&f);
    assert!((q.load() - 0.15).abs() < 1e-12, "load {}", q.load());
}

#[test]
fn proposals_in_raft_count_as_load() {
    // A closed-loop client with many requests outstanding: each proposal that
    // arrives is alone in the buffer, but hundreds are still in Raft. Counting
    // only the buffer would flush them one by one forever (load stuck at 0).
    let mut p = BatchPolicy::new(&BatchConfig::default());
    let now = Instant::now();
    for _ in 0..50 {
        for _ in 0..p.batch_size() {
            p.on_enqueue(now);
        }
        let f = p.decide(now, 0, 1000).unwrap();
        p.on_flush(&f);
    }
    assert!(p.load() > 0.99, "load {}", p.load());
    assert!(p.batch_size() >= 250, "batch size {}", p.batch_size());
    // With the batch size near its maximum, a lone proposal now waits for
    // company while work is in flight, and leaves at once when none is.
    p.on_enqueue(now);
    assert!(p.decide(now, 0, 1000).is_none());
    assert_eq!(p.decide(now, 0, 0).unwrap().reason, FlushReason::Idle);
}

#[test]
fn load_decays_after_a_burst() {
    let mut p = BatchPolicy::new(&BatchConfig::default());
    let now = overload(&mut p, Instant::now(), 30);
    let mut last = p.load();
    let mut t = now;
    for _ in 0..40 {
        t = sequential(&mut p, t, 1);
        assert!(p.load() < last, "load must fall: {} -> {}", last, p.load());
        last = p.load();
    }
    assert!(p.load() < 0.01, "load {}", p.load());
    assert_eq!(p.batch_size(), 1);
    assert!(p.timeout() < Duration::from_micros(5100));
}

#[test]
fn deadline_fires_exactly_at_first_enqueue_plus_timeout() {
    let cfg = BatchConfig {
        min_batch_size: 8,
        ..Default::default()
    };
    let mut p = BatchPolicy::new(&cfg);
    let t0 = Instant::now();
    p.on_enqueue(t0);
    assert_eq!(
        p.decide(t0, 0, 1),
        None,
        "in flight and below batch size: wait"
    );
    let timeout = p.timeout();
    assert_eq!(timeout, ms(5));
    assert_eq!(p.next_deadline(), Some(t0 + timeout));
    // A later proposal does not move the deadline of the oldest.
    p.on_enqueue(t0 + ms(2));
    assert_eq!(p.next_deadline(), Some(t0 + timeout));
    assert_eq!(p.decide(t0 + timeout - Duration::from_nanos(1), 0, 1), None);
    let f = p.decide(t0 + timeout, 0, 1).unwrap();
    assert_eq!((f.reason, f.take), (FlushReason::Deadline, 2));
    p.on_flush(&f);
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn group_commit_accumulates_while_in_flight() {
    let cfg = BatchConfig {
        min_batch_size: 4,
        ..Default::default()
    };
    let mut p = BatchPolicy::new(&cfg);
    let t = Instant::now();
    for i in 0..3 {
        p.on_enqueue(t);
        assert_eq!(p.decide(t, 0, 1), None, "{i} buffered");
    }
    p.on_enqueue(t);
    let f = p.decide(t, 0, 1).unwrap();
    assert_eq!((f.reason, f.take), (FlushReason::Size, 4));
    // Once nothing is in flight, a partial buffer goes out at once.
    p.on_flush(&f);
    p.on_enqueue(t);
    assert_eq!(
        p.decide(t, 0, 0).map(|f| (f.reason, f.take)),
        Some((FlushReason::Idle, 1))
    );
}

#[test]
fn a_flush_never_takes_more_than_max() {
    let cfg = BatchConfig {
        max_batch_size: 16,
        ..Default::default()
    };
    let mut p = BatchPolicy::new(&cfg);
    let t = Instant::now();
    for _ in 0..40 {
        p.on_enqueue(t);
    }
    let mut taken = vec![];
    while let Some(f) = p.drain(0) {
        assert_eq!(f.reason, FlushReason::Stop);
        taken.push(f.take);
        p.on_flush(&f);
    }
    assert_eq!(taken, vec![16, 16, 8]);
}

#[test]
fn disabled_flushes_each_proposal_alone_at_once() {
    let cfg = BatchConfig {
        enable: false,
        ..Default::default()
    };
    let mut p = BatchPolicy::new(&cfg);
    let t = Instant::now();
    for _ in 0..5 {
        p.on_enqueue(t);
    }
    let mut reasons = vec![];
    while let Some(f) = p.decide(t, 1000, 3) {
        assert_eq!(f.take, 1);
        reasons.push(f.reason);
        p.on_flush(&f);
        assert_eq!((p.batch_size(), p.timeout()), (1, Duration::ZERO));
    }
    assert_eq!(reasons, vec![FlushReason::Size; 5]);
    p.on_enqueue(t);
    p.on_enqueue(t);
    assert_eq!(
        p.decide(t, 0, 0).map(|f| (f.reason, f.take)),
        Some((FlushReason::Idle, 1))
    );
    assert_eq!(
        p.drain(0).map(|f| (f.reason, f.take)),
        Some((FlushReason::Stop, 1))
    );
}

#[derive(Clone, Debug)]
enum Op {
    Enqueue(u16),
    Advance(u32),
    Decide { queued: u16, in_flight: u16 },
    Drain { queued: u16 },
    Adjust(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u16..600).prop_map(Op::Enqueue),
        (0u32..50_000).prop_map(Op::Advance),
        (any::<u16>(), prop_oneof![Just(0u16), any::<u16>()])
            .prop_map(|(queued, in_flight)| Op::Decide { queued, in_flight }),
        any::<u16>().prop_map(|queued| Op::Drain { queued }),
        any::<u32>().prop_map(Op::Adjust),
    ]
}

fn config() -> impl Strategy<Value = BatchConfig> {
    (
        any::<bool>(),
        1usize..64,
        0usize..512,
        1u64..50_000,
        0u64..50_000,
        prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
    )
        .prop_map(|(enable, min, extra, min_us, extra_us, t)| BatchConfig {
            enable,
            min_batch_size: min,
            max_batch_size: min + extra,
            min_timeout: Duration::from_micros(min_us),
            max_timeout: Duration::from_micros(min_us + extra_us),
            load_threshold: t,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_for_any_event_sequence(cfg in config(), ops in prop::collection::vec(op(), 1..200)) {
        prop_assert!(cfg.validate().is_ok());
        let mut p = BatchPolicy::new(&cfg);
        let mut now = Instant::now();
        for op in ops {
            let decision = match op {
                Op::Enqueue(n) => { (0..n).for_each(|_| p.on_enqueue(now)); None }
                Op::Advance(us) => { now += Duration::from_micros(us.into()); None }
                Op::Decide { queued, in_flight } => {
                    let d = p.decide(now, queued.into(), in_flight.into());
                    match d {
                        Some(f) => {
                            if in_flight == 0 { prop_assert_eq!(f.reason, FlushReason::Idle); }
                            prop_assert_eq!(f.pending, p.buffered() + usize::from(queued) + usize::from(in_flight));
                        }
                        None if p.buffered() > 0 => {
                            // Waiting is only allowed with work in flight, below the
                            // batch size, and with a deadline still ahead.
                            prop_assert!(in_flight > 0);
                            prop_assert!(p.buffered() < p.batch_size());
                            let deadline = p.next_deadline().expect("a buffered proposal has a deadline");
                            prop_assert!(deadline > now);
                            let at = p.decide(deadline, queued.into(), in_flight.into());
                            prop_assert_eq!(at.map(|f| f.reason), Some(FlushReason::Deadline));
                        }
                        None => prop_assert_eq!(p.next_deadline(), None),
                    }
                    d
                }
                Op::Drain { queued } => {
                    let d = p.drain(queued.into());
                    prop_assert_eq!(d.is_some(), p.buffered() > 0);
                    d
                }
                Op::Adjust(pending) => { p.adjust(pending as usize); None }
            };
            if let Some(f) = decision {
                prop_assert!(f.take >= 1);
                prop_assert!(f.take <= p.buffered());
                prop_assert!(f.take <= cfg.max_batch_size);
                if !cfg.enable { prop_assert_eq!(f.take, 1); }
                let before = p.buffered();
                p.on_flush(&f);
                prop_assert_eq!(p.buffered(), before - f.take);
            }
            prop_assert!((0.0..=1.0).contains(&p.load()));
            if cfg.enable {
                prop_assert!(p.batch_size() >= cfg.min_batch_size && p.batch_size() <= cfg.max_batch_size);
                prop_assert!(p.timeout() >= cfg.min_timeout && p.timeout() <= cfg.max_timeout);
            } else {
                prop_assert_eq!(p.batch_size(), 1);
                prop_assert_eq!(p.timeout(), Duration::ZERO);
            }
        }
    }

    #[test]
    fn size_and_timeout_grow_with_load(cfg in config(), a in 0u32..=1000, b in 0u32..=1000) {
        // Steady pending -> steady load; more pending never means a smaller batch.
        let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
        let mut p = BatchPolicy::new(&cfg);
        let mut q = BatchPolicy::new(&cfg);
        for _ in 0..50 { p.adjust(lo); q.adjust(hi); }
        prop_assert!(p.load() <= q.load());
        prop_assert!(p.batch_size() <= q.batch_size());
        prop_assert!(p.timeout() <= q.timeout());
    }
}
