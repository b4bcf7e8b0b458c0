//! What the current apply round did to each key it wrote: a key written twice
//! in one round must see its own first write, which the round's batch does
//! not show until it is written.
//!
//! Every put of every node goes through here, so the keys are copied into one
//! buffer that lives across rounds, and the table holds their ranges: no
//! allocation per key, and a hash made for short keys rather than SipHash.

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Key bytes kept across rounds: a round of a few thousand puts under load
/// holds tens of kilobytes.
const KEEP_BYTES: usize = 1 << 20;

#[derive(Default)]
pub(super) struct RoundKeys {
    bytes: Vec<u8>,
    /// The key's range in `bytes`, and whether it has a value now.
    table: HashTable<(Range<usize>, bool)>,
    hasher: DefaultHashBuilder,
}

impl RoundKeys {
    /// The round wrote `key`: it has a value (`present`) or was deleted.
    /// Returns whether it had one after the round's earlier writes, `None` if
    /// the round had not written it: one lookup per write.
    pub fn replace(&mut self, key: &[u8], present: bool) -> Option<bool> {
        let hash = self.hasher.hash_one(key);
        let RoundKeys {
            bytes,
            table,
            hasher,
        } = self;
        if let Some(found) = table.find_mut(hash, |(r, _)| &bytes[r.clone()] == key) {
            return Some(std::mem::replace(&mut found.1, present));
        }
        let range = bytes.len()..bytes.len() + key.len();
        bytes.extend_from_slice(key);
        table.insert_unique(hash, (range, present), |(r, _)| {
            hasher.hash_one(&bytes[r.clone()])
        });
        None
    }

    /// The round ended. The memory stays for the next one, unless a large
    /// round (a catch-up after a restart) left more than rounds under load use.
    pub fn clear(&mut self) {
        if self.bytes.capacity() > KEEP_BYTES {
            *self = RoundKeys::default();
        } else {
            self.bytes.clear();
            self.table.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RoundKeys {
        fn get(&self, key: &[u8]) -> Option<bool> {
            let hash = self.hasher.hash_one(key);
            self.table
                .find(hash, |(r, _)| &self.bytes[r.clone()] == key)
                .map(|&(_, present)| present)
        }

        fn set(&mut self, key: &[u8], present: bool) {
            self.replace(key, present);
        }
    }

    #[test]
    fn a_key_sees_its_last_write_in_the_round_and_nothing_after_it() {
        let mut keys = RoundKeys::default();
        assert_eq!(keys.get(b"a"), None);
        keys.set(b"a", true);
        keys.set(b"ab", false);
        assert_eq!(keys.get(b"a"), Some(true));
        assert_eq!(keys.get(b"ab"), Some(false));
        keys.set(b"a", false);
        assert_eq!(keys.get(b"a"), Some(false), "the second write wins");
        assert_eq!(keys.get(b""), None);
        keys.clear();
        assert_eq!(keys.get(b"a"), None, "a new round starts empty");
    }

    #[test]
    fn many_keys_survive_the_table_growing() {
        let mut keys = RoundKeys::default();
        for i in 0u32..10_000 {
            keys.set(&i.to_be_bytes(), i % 3 == 0);
        }
        for i in 0u32..10_000 {
            assert_eq!(keys.get(&i.to_be_bytes()), Some(i % 3 == 0), "key {i}");
        }
        assert_eq!(keys.get(&10_000u32.to_be_bytes()), None);
    }

    #[test]
    fn a_large_round_does_not_keep_its_memory() {
        let mut keys = RoundKeys::default();
        for i in 0u32..100_000 {
            keys.set(&[&i.to_be_bytes()[..], &[0; 12]].concat(), true);
        }
        keys.clear();
        assert_eq!(keys.bytes.capacity(), 0);
        keys.set(b"k", true);
        keys.clear();
        assert!(keys.bytes.capacity() > 0, "a small round keeps its buffer");
        assert_eq!(keys.get(b"k"), None);
    }

    proptest::proptest! {
        /// Rounds of writes to keys that share prefixes, against a map.
        #[test]
        fn answers_as_a_map_of_the_round_would(
            rounds in proptest::collection::vec(
                proptest::collection::vec((proptest::collection::vec(0u8..3, 0..4), proptest::bool::ANY), 0..40),
                1..4,
            )
        ) {
            let mut keys = RoundKeys::default();
            for writes in rounds {
                let mut model = std::collections::HashMap::new();
                for (key, present) in writes {
                    proptest::prop_assert_eq!(keys.get(&key), model.get(&key).copied());
                    let before = model.insert(key.clone(), present);
                    proptest::prop_assert_eq!(keys.replace(&key, present), before);
                }
                for (key, present) in &model {
                    proptest::prop_assert_eq!(keys.get(key), Some(*present));
                }
                keys.clear();
            }
        }
    }
}
