//! The engine's own writes, checked against what is on disk.

use super::*;
use crate::identity::{Bootstrap, ClusterId, Identity};

fn identity() -> Identity {
    Identity::new(ClusterId(7), 1, &[1])
}

fn stored_commit(engine: &RocksEngine) -> u64 {
    let bytes = engine.read_meta(KEY_HARD_STATE).unwrap().unwrap();
    HardState::parse_from_bytes(&bytes).unwrap().commit
}

/// A `Ready` that moves only the commit index writes nothing of its own:
/// its hard state goes out with the apply that follows, and a reopened
/// engine has it. A change of term or vote is written at once, and a
/// `Ready` with nothing to persist reaches no WAL.
#[test]
fn a_commit_index_alone_goes_out_with_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = RocksEngine::open(dir.path(), &identity(), Bootstrap::New).unwrap();
    let mut hs = engine.initial_state().unwrap().hard_state;
    let entries: Vec<Entry> = (hs.commit + 1..=hs.commit + 2)
        .map(|index| Entry {
            index,
            term: hs.term,
            data: b"x".to_vec().into(),
            ..Default::default()
        })
        .collect();
    let first_commit = hs.commit;
    engine
        .persist(None, &entries, None, Durability::Synced)
        .unwrap();
    let written = engine.db.latest_sequence_number();

    engine
        .persist(None, &[], None, Durability::Unsynced)
        .unwrap();
    hs.commit += 2;
    engine
        .persist(None, &[], Some(&hs), Durability::Unsynced)
        .unwrap();
    assert_eq!(
        engine.db.latest_sequence_number(),
        written,
        "nothing written"
    );
    assert_eq!(stored_commit(&engine), first_commit);
    assert_eq!(engine.initial_state().unwrap().hard_state.commit, hs.commit);

    engine.apply_put(b"k", b"v", false).unwrap();
    engine.finish_apply(hs.commit).unwrap();
    assert_eq!(stored_commit(&engine), hs.commit, "written with the apply");

    hs.term += 1;
    engine
        .persist(None, &[], Some(&hs), Durability::Unsynced)
        .unwrap();
    let bytes = engine.read_meta(KEY_HARD_STATE).unwrap().unwrap();
    assert_eq!(HardState::parse_from_bytes(&bytes).unwrap().term, hs.term);
    drop(engine);

    let engine = RocksEngine::open(dir.path(), &identity(), Bootstrap::Existing).unwrap();
    let state = engine.initial_state().unwrap().hard_state;
    assert_eq!((state.term, state.commit), (hs.term, hs.commit));
    assert_eq!(engine.applied_index(), hs.commit);
}
