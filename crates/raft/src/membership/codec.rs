//! The bytes of membership records and requests: what the log, the meta
//! column family and snapshots hold.

use std::collections::{BTreeMap, BTreeSet};

use super::{Change, Membership, Pending, Refusal, Request};
use crate::command::RequestId;
use crate::error::{Error, Result};
use crate::identity::ClusterId;
use metastore_batch::codec::varint;

const VERSION: u8 = 1;
const TAG_CHANGE: u8 = 1;
const TAG_CANCEL: u8 = 2;
const CHANGE_ADD: u8 = 1;
const CHANGE_PROMOTE: u8 = 2;
const CHANGE_REMOVE: u8 = 3;
const CHANGE_REMOVE_FORCED: u8 = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    varint::put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_id(out: &mut Vec<u8>, id: &RequestId) {
    varint::put(out, id.node);
    out.extend_from_slice(&id.epoch.to_le_bytes());
    varint::put(out, id.token);
}

fn put_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::AddLearner { id, address } => {
            out.push(CHANGE_ADD);
            varint::put(out, *id);
            put_str(out, address);
        }
        Change::Promote { id } => {
            out.push(CHANGE_PROMOTE);
            varint::put(out, *id);
        }
        Change::Remove { id, force } => {
            out.push(if *force {
                CHANGE_REMOVE_FORCED
            } else {
                CHANGE_REMOVE
            });
            varint::put(out, *id);
        }
    }
}

/// Reads what the `put_*` functions wrote; `None` at the first malformed byte.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        varint::get(self.data, &mut self.pos)
    }

    fn u64_le(&mut self) -> Option<u64> {
        let bytes = self.data.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u128_be(&mut self) -> Option<u128> {
        let bytes = self.data.get(self.pos..self.pos + 16)?;
        self.pos += 16;
        Some(u128::from_be_bytes(bytes.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.varint()?).ok()?;
        let bytes = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn id(&mut self) -> Option<RequestId> {
        Some(RequestId {
            node: self.varint()?,
            epoch: self.u64_le()?,
            token: self.varint()?,
        })
    }

    fn change(&mut self) -> Option<Change> {
        let kind = self.u8()?;
        let id = self.varint()?;
        Some(match kind {
            CHANGE_ADD => Change::AddLearner {
                id,
                address: self.str()?,
            },
            CHANGE_PROMOTE => Change::Promote { id },
            CHANGE_REMOVE => Change::Remove { id, force: false },
            CHANGE_REMOVE_FORCED => Change::Remove { id, force: true },
            _ => return None,
        })
    }

    fn done(&self) -> bool {
        self.pos == self.data.len()
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Request::Change { by, change } => {
                out.push(TAG_CHANGE);
                put_id(&mut out, by);
                put_change(&mut out, change);
            }
            Request::Cancel {
                index,
                why,
                message,
            } => {
                out.push(TAG_CANCEL);
                varint::put(&mut out, *index);
                out.push(match why {
                    Refusal::LearnerBehind => 1,
                    Refusal::Refused | Refusal::Wait => 2,
                });
                put_str(&mut out, message);
            }
        }
        out
    }

    /// `None` for bytes that are no request (every node skips them alike).
    pub fn decode(data: &[u8]) -> Option<Request> {
        let mut r = Reader { data, pos: 0 };
        if r.u8()? != VERSION {
            return None;
        }
        let request = match r.u8()? {
            TAG_CHANGE => Request::Change {
                by: r.id()?,
                change: r.change()?,
            },
            TAG_CANCEL => Request::Cancel {
                index: r.varint()?,
                why: match r.u8()? {
                    1 => Refusal::LearnerBehind,
                    2 => Refusal::Refused,
                    _ => return None,
                },
                message: r.str()?,
            },
            _ => return None,
        };
        r.done().then_some(request)
    }
}

impl Membership {
    /// `version u8 | cluster id u128 BE | members | initial | removed | pending`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.cluster_id.0.to_be_bytes());
        varint::put(&mut out, self.members.len() as u64);
        for (id, address) in &self.members {
            varint::put(&mut out, *id);
            put_str(&mut out, address);
        }
        for set in [&self.initial, &self.removed] {
            varint::put(&mut out, set.len() as u64);
            for id in set {
                varint::put(&mut out, *id);
            }
        }
        match &self.pending {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                varint::put(&mut out, p.index);
                put_id(&mut out, &p.by);
                put_change(&mut out, &p.change);
            }
        }
        out
    }

    /// Decodes what [`encode`](Self::encode) wrote; the error says what is
    /// wrong with the bytes.
    pub fn decode(data: &[u8]) -> std::result::Result<Membership, String> {
        let mut r = Reader { data, pos: 0 };
        let bad = |what: &str| format!("membership record: {what}");
        match r.u8() {
            Some(VERSION) => {}
            Some(v) => return Err(bad(&format!("unknown version {v}"))),
            None => return Err(bad("empty")),
        }
        let cluster_id = ClusterId(r.u128_be().ok_or_else(|| bad("truncated cluster id"))?);
        let mut members = BTreeMap::new();
        let n = r.varint().ok_or_else(|| bad("truncated member count"))?;
        for _ in 0..n {
            let id = r.varint().ok_or_else(|| bad("truncated member id"))?;
            let address = r.str().ok_or_else(|| bad("truncated member address"))?;
            members.insert(id, address);
        }
        let mut ids = || -> std::result::Result<BTreeSet<u64>, String> {
            let n = r.varint().ok_or_else(|| bad("truncated id count"))?;
            (0..n)
                .map(|_| r.varint().ok_or_else(|| bad("truncated id")))
                .collect()
        };
        let initial = ids()?;
        let removed = ids()?;
        let pending = match r.u8() {
            Some(0) => None,
            Some(1) => Some(Pending {
                index: r.varint().ok_or_else(|| bad("truncated pending index"))?,
                by: r.id().ok_or_else(|| bad("truncated pending requester"))?,
                change: r.change().ok_or_else(|| bad("malformed pending change"))?,
            }),
            _ => return Err(bad("malformed pending flag")),
        };
        if !r.done() {
            return Err(bad("trailing bytes"));
        }
        Ok(Membership {
            cluster_id,
            members,
            initial,
            removed,
            pending,
        })
    }

    /// Appends the record to snapshot data (length-prefixed).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let bytes = self.encode();
        varint::put(out, bytes.len() as u64);
        out.extend_from_slice(&bytes);
    }

    /// Reads what [`encode_into`](Self::encode_into) appended at `pos`.
    pub fn decode_from(data: &[u8], pos: &mut usize) -> Result<Membership> {
        let bad = |what: String| Error::Storage(format!("corrupt snapshot data: {what}"));
        let n = varint::get(data, pos)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("truncated membership length".into()))?;
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| bad("truncated membership record".into()))?;
        let m = Membership::decode(&data[*pos..end]).map_err(bad)?;
        *pos = end;
        Ok(m)
    }
}
