//! Which life of a node a peer talks to.
//!
//! A node whose data dir is gone must not come back under its id: it would
//! have forgotten its vote and the entries it acknowledged. Its own storage
//! cannot tell (it is empty, as a new group's would be), but its peers can.
//! Each node draws a random incarnation when it first writes its data dir and
//! keeps it there (`incarnation`); it says it in every hello. Each node keeps
//! the incarnation it first heard from each peer (`peer-incarnations`) and
//! refuses a peer that says another one: that peer's state is not the one it
//! had, and it may rejoin only under a new id.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

const OWN: &str = "incarnation";
const PEERS: &str = "peer-incarnations";

/// A fresh incarnation, never 0 (a hello without one says 0).
pub fn random() -> u64 {
    let id = crate::identity::ClusterId::random().0;
    ((id >> 64) as u64 ^ id as u64).max(1)
}

/// This node's incarnation in `dir`: the one kept there, or a new one
/// written there (a node whose data dir is new).
pub fn load_or_create(dir: &Path) -> Result<u64> {
    let path = dir.join(OWN);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| Error::Storage(format!("corrupt incarnation file {}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let n = random();
            write_synced(dir, OWN, &format!("{n}\n"))?;
            Ok(n)
        }
        Err(e) => Err(Error::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
fn write_synced(dir: &Path, name: &str, text: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::Storage(format!("cannot write {}: {e}", dir.join(name).display()))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// The incarnations this node heard from its peers, kept in its data dir
/// (or only in memory, for a node that keeps no data dir).
#[derive(Debug)]
pub struct PeerIncarnations {
    dir: Option<PathBuf>,
    known: Mutex<HashMap<u64, u64>>,
}

/// What a peer's hello says of its incarnation.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// The one heard before, or the first (now kept).
    Known,
    /// Another one than the one heard before.
    Changed { before: u64 },
}

impl PeerIncarnations {
    pub fn in_memory() -> Self {
        PeerIncarnations {
            dir: None,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Those kept in `dir` (none yet when it holds no file).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(PEERS);
        let mut known = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                    let (id, n) = parsed.ok_or_else(|| {
                        Error::Storage(format!("corrupt line '{line}' in {}", path.display()))
                    })?;
                    known.insert(id, n);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Storage(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        }
        Ok(PeerIncarnations {
            dir: Some(dir.to_path_buf()),
            known: Mutex::new(known),
        })
    }

    /// Peer `id` says `incarnation` (0: it says none, as an older peer or a
    /// tool would; nothing is kept then).
    pub fn see(&self, id: u64, incarnation: u64) -> Seen {
        if incarnation == 0 {
            return Seen::Known;
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(&id) {
            Some(&before) if before != incarnation => Seen::Changed { before },
            Some(_) => Seen::Known,
            None => {
                known.insert(id, incarnation);
                if let Some(dir) = &self.dir {
                    let mut lines: Vec<String> =
                        known.iter().map(|(id, n)| format!("{id} {n}")).collect();
                    lines.sort();
                    // Not kept if the write fails: heard again after a restart.
                    let _ = write_synced(dir, PEERS, &(lines.join("\n") + "\n"));
                }
                Seen::Known
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_incarnation_and_its_peers_and_a_changed_peer_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let mine = load_or_create(dir.path()).unwrap();
        assert_ne!(mine, 0);
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            mine,
            "kept across starts"
        );
        let peers = PeerIncarnations::load(dir.path()).unwrap();
        assert_eq!(peers.see(2, 77), Seen::Known);
        assert_eq!(peers.see(2, 77), Seen::Known);
        assert_eq!(peers.see(2, 0), Seen::Known, "a hello without one passes");
        let again = PeerIncarnations::load(dir.path()).unwrap();
        assert_eq!(
            again.see(2, 78),
            Seen::Changed { before: 77 },
            "kept across starts"
        );
        std::fs::write(dir.path().join(PEERS), "2 x\n").unwrap();
        assert!(PeerIncarnations::load(dir.path()).is_err());
        std::fs::write(dir.path().join(OWN), "0\n").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
