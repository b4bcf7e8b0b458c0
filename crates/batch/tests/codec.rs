//! The batch codec: round trips, the Go MetaStore's legacy JSON batches,
//! and malformed frames that must fail cleanly.

use std::borrow::Cow;

use metastore_batch::codec::{FLAG_LZ4, MAGIC, VERSION};
use metastore_batch::{
    decode_batch, encode_batch, encode_batch_with, for_each_proposal, is_batch_proposal,
    BatchError, Compression, EncodeOptions,
};
use proptest::prelude::*;

const LEGACY_PREFIX: &[u8] = br#"{"is_batch":true,"proposals":"#;

fn lz4(min: usize) -> EncodeOptions {
    EncodeOptions {
        compression: Compression::Lz4,
        compress_min_bytes: min,
    }
}

fn owned(v: Vec<Cow<'_, [u8]>>) -> Vec<Vec<u8>> {
    v.into_iter().map(Cow::into_owned).collect()
}

fn decoded(data: &[u8]) -> Vec<Vec<u8>> {
    owned(decode_batch(data).expect("decodes"))
}

fn via_for_each(data: &[u8]) -> Result<Vec<Vec<u8>>, BatchError> {
    let mut out = vec![];
    let n = for_each_proposal(data, |p| out.push(p.to_vec()))?;
    assert_eq!(n, out.len());
    Ok(out)
}

fn is_corrupt(data: &[u8]) -> bool {
    matches!(decode_batch(data), Err(BatchError::CorruptBatch(_)))
        && matches!(via_for_each(data), Err(BatchError::CorruptBatch(_)))
}

/// Byte strings that stress the single-proposal rule.
fn proposal() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| { v.insert(0, MAGIC); v }),
        1 => prop::collection::vec(any::<u8>(), 0..50).prop_map(|v| [LEGACY_PREFIX, &v].concat()),
        1 => prop::collection::vec("[a-z<>&\"\\\\é]{0,8}", 0..4).prop_map(|xs| {
            serde_json::json!({ "is_batch": true, "proposals": xs }).to_string().into_bytes()
        }),
        1 => (0u8..4, 1usize..3000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    prop_oneof![Just(EncodeOptions::default()), (0usize..2048).prop_map(lz4),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_inverts_encode(xs in prop::collection::vec(proposal(), 0..12), opts in options()) {
        let enc = encode_batch_with(&xs, &opts);
        prop_assert_eq!(decoded(&enc), xs.clone());
        prop_assert_eq!(via_for_each(&enc).unwrap(), xs.clone());
        if xs.len() != 1 {
            prop_assert!(is_batch_proposal(&enc));
        }
        if opts.compression == Compression::None {
            prop_assert_eq!(encode_batch(&xs), enc);
        }
    }

    #[test]
    fn single_proposals_stay_raw_unless_ambiguous(x in proposal()) {
        let enc = encode_batch(&[&x]);
        let ambiguous = x.first() == Some(&MAGIC) || x.starts_with(LEGACY_PREFIX);
        prop_assert_eq!(enc == x, !ambiguous);
        prop_assert_eq!(is_batch_proposal(&enc), ambiguous);
    }

    #[test]
    fn arbitrary_frames_never_panic(tail in prop::collection::vec(any::<u8>(), 0..300), version in prop_oneof![Just(VERSION), any::<u8>()], flags in 0u8..4) {
        let data = [&[MAGIC, version, flags][..], &tail].concat();
        let a = decode_batch(&data).map(owned);
        let b = via_for_each(&data);
        prop_assert_eq!(a.is_ok(), b.is_ok());
        if let (Ok(a), Ok(b)) = (a, b) { prop_assert_eq!(a, b); }
        prop_assert!(is_batch_proposal(&data));
    }

    #[test]
    fn truncated_frames_are_corrupt(xs in prop::collection::vec(proposal(), 0..8), opts in options(), cut in any::<prop::sample::Index>()) {
        let enc = encode_batch_with(&xs, &opts);
        prop_assume!(enc.first() == Some(&MAGIC));
        // Keep at least the magic byte: without it the bytes are a raw proposal.
        let cut = 1 + cut.index(enc.len() - 1);
        prop_assert!(is_corrupt(&enc[..cut]), "cut at {} of {}", cut, enc.len());
    }

    #[test]
    fn damaged_frames_never_panic(xs in prop::collection::vec(proposal(), 2..8), opts in options(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut enc = encode_batch_with(&xs, &opts);
        let i = at.index(enc.len());
        enc[i] = byte;
        let _ = decode_batch(&enc);
        let _ = via_for_each(&enc);
    }

    #[test]
    fn legacy_batches_from_any_strings(xs in prop::collection::vec(any::<String>(), 2..6)) {
        // serde_json escapes less than Go; both must read back.
        let json = serde_json::json!({ "is_batch": true, "proposals": xs }).to_string();
        prop_assert!(is_batch_proposal(json.as_bytes()));
        let want: Vec<Vec<u8>> = xs.iter().map(|s| s.as_bytes().to_vec()).collect();
        prop_assert_eq!(decoded(json.as_bytes()), want);
    }
}

#[test]
fn empty_list_is_a_frame_of_zero() {
    let enc = encode_batch::<Vec<u8>>(&[]);
    assert_eq!(enc, [MAGIC, VERSION, 0, 0]);
    assert_eq!(decoded(&enc), Vec::<Vec<u8>>::new());
    assert!(is_batch_proposal(&enc));
}

#[test]
fn single_proposal_is_stored_raw_like_the_seed() {
    assert_eq!(encode_batch(&["put k v"]), b"put k v");
    assert_eq!(decoded(b"put k v"), vec![b"put k v".to_vec()]);
    assert_eq!(encode_batch(&[""]), b"");
    assert_eq!(decoded(b""), vec![Vec::<u8>::new()]);
    // Looks like JSON, but not like what Go's json.Marshal wrote for a batch.
    let spaced = br#"{ "is_batch": true, "proposals": ["a", "b"] }"#;
    assert_eq!(encode_batch(&[spaced]), spaced);
    assert_eq!(decoded(spaced), vec![spaced.to_vec()]);
    assert!(!is_batch_proposal(spaced));
}

#[test]
fn ambiguous_single_proposals_are_wrapped() {
    let legacy = br#"{"is_batch":true,"proposals":["a","b"]}"#;
    let enc = encode_batch(&[legacy]);
    assert_eq!(enc[..3], [MAGIC, VERSION, 0]);
    assert_eq!(decoded(&enc), vec![legacy.to_vec()]);
    let magic = [MAGIC, VERSION, 0, 0];
    let enc = encode_batch(&[magic]);
    assert_eq!(decoded(&enc), vec![magic.to_vec()]);
}

#[test]
fn binary_proposals_survive() {
    // The seed's JSON codec replaced invalid UTF-8.
    let xs: Vec<Vec<u8>> = vec![vec![0xff, 0xfe, 0x00, 0x80], (0..=255).collect(), vec![]];
    assert_eq!(decoded(&encode_batch(&xs)), xs);
}

#[test]
fn plain_frames_decode_without_copying() {
    let enc = encode_batch(&["one", "two", "three"]);
    let range = enc.as_ptr_range();
    for p in decode_batch(&enc).unwrap() {
        let Cow::Borrowed(s) = p else {
            panic!("copied")
        };
        assert!(range.contains(&s.as_ptr()));
    }
}

#[test]
fn large_batches_compress_when_it_helps() {
    let xs: Vec<String> = (0..256)
        .map(|i| format!("put /registry/pods/default/pod-{i:05} {{\"phase\":\"Running\"}}"))
        .collect();
    let plain = encode_batch(&xs);
    let packed = encode_batch_with(&xs, &lz4(4096));
    assert_eq!(packed[..3], [MAGIC, VERSION, FLAG_LZ4]);
    assert!(
        packed.len() * 2 < plain.len(),
        "{} vs {}",
        packed.len(),
        plain.len()
    );
    let dec = decode_batch(&packed).unwrap();
    assert!(dec.iter().all(|p| matches!(p, Cow::Owned(_))));
    assert_eq!(
        owned(dec),
        xs.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>()
    );

    // Below the threshold, or when lz4 cannot shrink it, the frame stays plain.
    assert_eq!(
        encode_batch_with(&xs[..2], &lz4(4096)),
        encode_batch(&xs[..2])
    );
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        // xorshift64*: incompressible enough for lz4.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    };
    let noise: Vec<Vec<u8>> = (0..64)
        .map(|_| (0..100).map(|_| next()).collect())
        .collect();
    assert_eq!(encode_batch_with(&noise, &lz4(0))[2], 0);

    // A large single proposal becomes a compressed frame of one.
    let big = vec![b'x'; 10_000];
    let enc = encode_batch_with(&[&big], &lz4(4096));
    assert_eq!(enc[2], FLAG_LZ4);
    assert!(enc.len() < 200);
    assert_eq!(decoded(&enc), vec![big]);
}

#[test]
fn go_json_marshal_batches_decode() {
    // Written exactly as Go's json.Marshal does: HTML-sensitive characters as
    // \u003c \u003e \u0026, U+2028/2029 escaped, other non-ASCII raw, invalid
    // UTF-8 already replaced by \ufffd (the seed's data loss).
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (r#"{"is_batch":true,"proposals":["a","b"]}"#, vec!["a", "b"]),
        (
            r#"{"is_batch":true,"proposals":["{\"key\":\"\u003cdiv\u003e\",\"val\":\"a\u0026b\"}","PUT /k1 v1"]}"#,
            vec![r#"{"key":"<div>","val":"a&b"}"#, "PUT /k1 v1"],
        ),
        (
            r#"{"is_batch":true,"proposals":["日本語 ünï","tab\tnl\nret\r\\ \u0001\u001f","\u2028\u2029"]}"#,
            vec![
                "日本語 ünï",
                "tab\tnl\nret\r\\ \u{1}\u{1f}",
                "\u{2028}\u{2029}",
            ],
        ),
        (
            r#"{"is_batch":true,"proposals":["\ufffd\ufffd","😀",""]}"#,
            vec!["\u{fffd}\u{fffd}", "😀", ""],
        ),
        // Older Go wrote \b and \f as \u0008 and \u000c; Go 1.22+ writes \b \f.
        (
            r#"{"is_batch":true,"proposals":["\u0008\u000c","\b\f"]}"#,
            vec!["\u{8}\u{c}", "\u{8}\u{c}"],
        ),
        // Surrogate pairs, as other JSON writers produce them.
        (
            r#"{"is_batch":true,"proposals":["\ud83d\ude00x","\uD834\uDD1E"]}"#,
            vec!["😀x", "𝄞"],
        ),
    ];
    for (json, want) in cases {
        assert!(is_batch_proposal(json.as_bytes()), "{json}");
        let want: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(decoded(json.as_bytes()), want, "{json}");
        assert_eq!(via_for_each(json.as_bytes()).unwrap(), want, "{json}");
    }
}

#[test]
fn legacy_strings_without_escapes_are_borrowed() {
    let json = br#"{"is_batch":true,"proposals":["plain","x\u0026y"]}"#;
    let dec = decode_batch(json).unwrap();
    assert!(matches!(dec[0], Cow::Borrowed(_)));
    assert_eq!(dec[1].as_ref(), b"x&y");
}

#[test]
fn specific_malformed_frames_are_corrupt() {
    let valid = encode_batch_with(
        &[
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ],
        &lz4(0),
    );
    assert_eq!(valid[2], FLAG_LZ4);
    let mut longer = valid.clone();
    longer[3] += 1; // claimed decompressed length one byte too long
    let mut shorter = valid.clone();
    shorter[3] -= 1;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", vec![MAGIC]),
        ("truncated header", vec![MAGIC, VERSION]),
        ("unknown version", vec![MAGIC, 2, 0, 0]),
        ("unknown flags", vec![MAGIC, VERSION, 0x02, 0]),
        ("missing count", vec![MAGIC, VERSION, 0]),
        ("truncated count varint", vec![MAGIC, VERSION, 0, 0x80]),
        (
            "count overflows u64",
            [&[MAGIC, VERSION, 0][..], &[0xff; 10]].concat(),
        ),
        (
            "absurd count",
            vec![MAGIC, VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, b'a'],
        ),
        (
            "count mismatch",
            vec![MAGIC, VERSION, 0, 3, 1, b'a', 1, b'b'],
        ),
        ("length beyond end", vec![MAGIC, VERSION, 0, 1, 5, b'a']),
        (
            "huge length",
            vec![
                MAGIC, VERSION, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ),
        ("trailing bytes", vec![MAGIC, VERSION, 0, 1, 1, b'a', b'b']),
        (
            "bad lz4 block",
            vec![MAGIC, VERSION, FLAG_LZ4, 10, 0xff, 0xff, 0xff],
        ),
        ("empty lz4 block", vec![MAGIC, VERSION, FLAG_LZ4, 10]),
        (
            "absurd decompressed length",
            vec![
                MAGIC, VERSION, FLAG_LZ4, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x10, b'a',
            ],
        ),
        ("decompressed length too long", longer),
        ("decompressed length too short", shorter),
    ];
    for (what, data) in cases {
        match decode_batch(&data) {
            Err(BatchError::CorruptBatch(reason)) => assert!(!reason.is_empty(), "{what}"),
            other => panic!("{what}: expected CorruptBatch, got {other:?}"),
        }
        assert!(is_corrupt(&data), "{what}");
        assert_eq!(decode_batch(&data).unwrap_err().code(), "ERR_CORRUPT_BATCH");
    }
}

#[test]
fn corrupt_reasons_are_specific() {
    let reason = |d: &[u8]| match decode_batch(d) {
        Err(BatchError::CorruptBatch(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(&[MAGIC, 9, 0, 0]), "unknown frame version 9");
    assert_eq!(reason(&[MAGIC, VERSION, 0x80, 0]), "unknown flags 0x80");
    assert_eq!(
        reason(&[MAGIC, VERSION, 0, 1, 1, b'a', b'b']),
        "1 trailing bytes after 1 proposals"
    );
    assert_eq!(
        reason(&[MAGIC, VERSION, 0, 2, 1, b'a', 5, b'b']),
        "proposal 1 of 2: length 5 runs past the end (1 bytes left)"
    );
    assert_eq!(
        reason(&[MAGIC, VERSION, 0, 9, 0]),
        "count 9 exceeds the 1 bytes that follow"
    );
}

#[test]
fn extremely_compressible_batches_decode() {
    // Near lz4's maximum ratio: the decoder's bound on the claimed length
    // must not reject what the encoder writes.
    let xs = vec![vec![0u8; 1 << 20], vec![0u8; 1 << 20]];
    let enc = encode_batch_with(&xs, &lz4(0));
    assert_eq!(enc[2], FLAG_LZ4);
    assert!(enc.len() < 10_000, "{}", enc.len());
    assert_eq!(decoded(&enc), xs);
}

/// A few hundred kilobytes of valid LZ4 can claim a body of 255 times their
/// size; a frame may hold at most `MAX_COMPRESSED_BODY`, so such a claim is
/// refused before anything is allocated for it. The encoder never
/// compresses a larger body, so what it writes always decodes.
#[test]
fn a_compressed_frame_holds_at_most_max_compressed_body() {
    use metastore_batch::codec::MAX_COMPRESSED_BODY;
    // Zeros compress about 250 times: 80 MiB in about 330 KB.
    let zeros = vec![0u8; 80 << 20];
    let block = lz4_flex::block::compress(&zeros);
    assert!(block.len() < 1 << 20);
    let mut frame = vec![MAGIC, VERSION, FLAG_LZ4];
    let mut len = zeros.len() as u64;
    while len >= 0x80 {
        frame.push((len as u8) | 0x80);
        len >>= 7;
    }
    frame.push(len as u8);
    frame.extend_from_slice(&block);
    match decode_batch(&frame) {
        Err(BatchError::CorruptBatch(reason)) => {
            assert!(reason.contains("a frame may hold"), "{reason}")
        }
        other => panic!("expected CorruptBatch, got {:?}", other.map(|v| v.len())),
    }

    // One proposal of 65 MiB: above the bound, so it stays uncompressed.
    let big = vec![7u8; MAX_COMPRESSED_BODY + (1 << 20)];
    let encoded = encode_batch_with(&[&big[..], b"x"], &lz4(1));
    assert_eq!(encoded[2], 0, "not compressed");
    assert_eq!(decoded(&encoded), vec![big, b"x".to_vec()]);
}
