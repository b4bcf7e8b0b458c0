//! Who a node's durable state belongs to.
//!
//! Raft's safety assumes that a node id always means the same durable
//! history: a node that forgets its log or its vote, or that brings the log
//! of another group, can make the group lose acknowledged writes. So a group
//! gets a random cluster id when it is bootstrapped, and each node's storage
//! records the cluster id, the node's id and the group's initial voters. A
//! node whose storage holds anything else, or nothing where the group expects
//! its state, refuses to start ([`Error::DataDirMismatch`]).

use std::fmt;

use crate::error::{Error, Result};

/// A group's 128-bit random id, drawn at bootstrap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// A fresh id, from the process's random hashing keys, the clock and a
    /// counter.
    pub fn random() -> Self {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static DRAWN: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = DRAWN.fetch_add(1, Ordering::Relaxed);
        let half = |salt: u8| {
            let mut h = RandomState::new().build_hasher();
            h.write_u8(salt);
            h.write_u128(now);
            h.write_u64(n);
            h.write_u32(std::process::id());
            h.finish()
        };
        ClusterId(u128::from(half(0)) << 64 | u128::from(half(1)))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// What a node's storage records about whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: ClusterId,
    pub node_id: u64,
    /// The voters the group was bootstrapped with, sorted; empty for a node
    /// that joined a running group.
    pub initial_voters: Vec<u64>,
}

/// Whether a start may create the node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A new group: the node's storage is empty and gets the identity.
    New,
    /// The node is an existing member: its state must be there.
    Existing,
    /// A new member of a running group: its storage starts empty, without
    /// a configuration, and gets the group's identity, membership and state
    /// from the first snapshot the leader sends it.
    Join,
}

const IDENTITY_VERSION: u8 = 1;

impl Identity {
    pub fn new(cluster_id: ClusterId, node_id: u64, voters: &[u64]) -> Self {
        let mut initial_voters = voters.to_vec();
        initial_voters.sort_unstable();
        initial_voters.dedup();
        Identity {
            cluster_id,
            node_id,
            initial_voters,
        }
    }

    /// `version u8 | cluster id u128 BE | node id u64 BE | voter count u32 BE
    /// | voters u64 BE *`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 16 + 8 + 4 + 8 * self.initial_voters.len());
        out.push(IDENTITY_VERSION);
        out.extend_from_slice(&self.cluster_id.0.to_be_bytes());
        out.extend_from_slice(&self.node_id.to_be_bytes());
        let count = u32::try_from(self.initial_voters.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for v in &self.initial_voters {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// Decodes what [`encode`](Self::encode) wrote; the error says what is
    /// wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err("empty".into());
        };
        if version != IDENTITY_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let (cluster, rest) = rest
            .split_first_chunk::<16>()
            .ok_or("truncated cluster id")?;
        let (node, rest) = rest.split_first_chunk::<8>().ok_or("truncated node id")?;
        let (count, rest) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated voter count")?;
        let count = u32::from_be_bytes(*count) as usize;
        let (voters, tail) = rest.as_chunks::<8>();
        if !tail.is_empty() || voters.len() != count {
            return Err(format!(
                "{count} voters announced, {} bytes follow",
                rest.len()
            ));
        }
        Ok(Identity {
            cluster_id: ClusterId(u128::from_be_bytes(*cluster)),
            node_id: u64::from_be_bytes(*node),
            initial_voters: voters.iter().map(|v| u64::from_be_bytes(*v)).collect(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.initial_voters.is_empty() {
            return write!(
                f,
                "node {} of cluster {} (joined a running group)",
                self.node_id, self.cluster_id
            );
        }
        write!(
            f,
            "node {} of cluster {} (initial voters {:?})",
            self.node_id, self.cluster_id, self.initial_voters
        )
    }
}

/// The error for a data dir at `dir` that holds `holds` where `asked` was
/// asked for.
pub(crate) fn mismatch(dir: &std::path::Path, holds: impl Into<String>, asked: &Identity) -> Error {
    Error::DataDirMismatch {
        dir: dir.display().to_string(),
        holds: holds.into(),
        asked: asked.to_string(),
    }
}

/// Checks a stored identity against the one asked for.
pub(crate) fn check(dir: &std::path::Path, stored: &Identity, asked: &Identity) -> Result<()> {
    if stored == asked {
        Ok(())
    } else {
        Err(mismatch(dir, stored.to_string(), asked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_bad_bytes_are_errors() {
        let id = Identity::new(ClusterId::random(), 2, &[3, 1, 2]);
        assert_eq!(id.initial_voters, vec![1, 2, 3]);
        assert_eq!(Identity::decode(&id.encode()), Ok(id.clone()));
        let bytes = id.encode();
        for cut in 0..bytes.len() {
            assert!(Identity::decode(&bytes[..cut]).is_err(), "{cut} bytes");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Identity::decode(&other).is_err());
    }

    #[test]
    fn cluster_ids_differ() {
        assert_ne!(ClusterId::random(), ClusterId::random());
    }
}
