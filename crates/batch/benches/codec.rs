//! Batch codec against the seed's JSON codec (the baseline), for 1, 16 and
//! 256 proposals of 100 bytes. The JSON side is as Go's: proposals as strings,
//! decoded into one owned String each. The proposals are plain ASCII, the
//! JSON codec's best case (no escapes).

#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test or bench

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metastore_batch::{
    decode_batch, encode_batch, encode_batch_with, for_each_proposal, Compression, EncodeOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SeedBatch {
    is_batch: bool,
    proposals: Vec<String>,
}

const PROPOSAL_BYTES: usize = 100;

fn proposals(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut s = format!("put /registry/pods/default/pod-{i:06} ");
            let fill = PROPOSAL_BYTES - s.len();
            s.extend((0..fill).map(|j| (b'a' + ((i * 7 + j * 13) % 26) as u8) as char));
            s
        })
        .collect()
}

fn seed_encode(xs: &[String]) -> Vec<u8> {
    if let [only] = xs {
        return only.as_bytes().to_vec();
    }
    serde_json::to_vec(&SeedBatch {
        is_batch: true,
        proposals: xs.to_vec(),
    })
    .unwrap()
}

fn seed_decode(data: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<SeedBatch>(data) {
        Ok(b) if b.is_batch => b.proposals,
        _ => vec![String::from_utf8_lossy(data).into_owned()],
    }
}

fn bench(c: &mut Criterion) {
    let lz4 = EncodeOptions {
        compression: Compression::Lz4,
        compress_min_bytes: 4096,
    };
    for (unit, throughput) in [
        (
            "bytes",
            (|n: usize| Throughput::BytesDecimal((n * PROPOSAL_BYTES) as u64))
                as fn(usize) -> Throughput,
        ),
        ("proposals", |n: usize| Throughput::Elements(n as u64)),
    ] {
        let mut g = c.benchmark_group(format!("codec_{unit}"));
        for n in [1usize, 16, 256] {
            let xs = proposals(n);
            g.throughput(throughput(n));
            let frame = encode_batch(&xs);
            let json = seed_encode(&xs);
            assert_eq!(seed_decode(&json), xs);

            g.bench_with_input(BenchmarkId::new("encode/frame", n), &xs, |b, xs| {
                b.iter(|| encode_batch(black_box(xs)))
            });
            g.bench_with_input(BenchmarkId::new("encode/seed_json", n), &xs, |b, xs| {
                b.iter(|| seed_encode(black_box(xs)))
            });
            g.bench_with_input(BenchmarkId::new("decode/frame", n), &frame, |b, d| {
                b.iter(|| decode_batch(black_box(d)).unwrap())
            });
            g.bench_with_input(
                BenchmarkId::new("decode/frame_for_each", n),
                &frame,
                |b, d| {
                    b.iter(|| {
                        let mut sum = 0usize;
                        for_each_proposal(black_box(d), |p| sum += p.len()).unwrap();
                        sum
                    })
                },
            );
            g.bench_with_input(BenchmarkId::new("decode/seed_json", n), &json, |b, d| {
                b.iter(|| seed_decode(black_box(d)))
            });
            if n == 256 {
                let packed = encode_batch_with(&xs, &lz4);
                assert!(packed.len() < frame.len());
                g.bench_with_input(BenchmarkId::new("encode/frame_lz4", n), &xs, |b, xs| {
                    b.iter(|| encode_batch_with(black_box(xs), &lz4))
                });
                g.bench_with_input(BenchmarkId::new("decode/frame_lz4", n), &packed, |b, d| {
                    b.iter(|| decode_batch(black_box(d)).unwrap())
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
