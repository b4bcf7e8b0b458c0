//! A blocking client over a [`LocalCluster`] for Rust tests and benches:
//! submit an op, wait for its completion on a channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::cluster::LocalCluster;
use crate::command::{CommandOp, SessionStamp};
use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::node::{Completion, CompletionSink, Op, Outcome, RaftNode, Request};

type Waiters = Mutex<HashMap<u64, Sender<Result<Outcome>>>>;

/// Owns a cluster whose completion sinks route each token to its waiter.
pub struct SyncClient {
    cluster: LocalCluster,
    waiters: Arc<Waiters>,
    next_token: AtomicU64,
    /// How long `call` waits; past the node's own proposal timeout.
    wait: Duration,
}

/// A request in flight; `wait` blocks for its outcome.
pub struct Pending {
    token: u64,
    rx: Receiver<Result<Outcome>>,
    waiters: Arc<Waiters>,
    wait: Duration,
}

impl Pending {
    pub fn wait(self) -> Result<Outcome> {
        let r = self.rx.recv_timeout(self.wait);
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
        r.unwrap_or(Err(Error::Timeout(self.wait)))
    }
}

impl SyncClient {
    pub fn start(cfg: ClusterConfig) -> Result<SyncClient> {
        let wait = cfg.raft.proposal_timeout * 2 + Duration::from_secs(2);
        let waiters: Arc<Waiters> = Arc::default();
        let w = Arc::clone(&waiters);
        let factory = Arc::new(move |_id: u64| -> CompletionSink {
            let w = Arc::clone(&w);
            Arc::new(move |done: Vec<Completion>| {
                let mut map = w.lock().unwrap_or_else(|p| p.into_inner());
                for c in done {
                    if let Some(tx) = map.remove(&c.token) {
                        let _ = tx.send(c.result);
                    }
                }
            })
        });
        let cluster = LocalCluster::start(cfg, factory)?;
        Ok(SyncClient {
            cluster,
            waiters,
            next_token: AtomicU64::new(1),
            wait,
        })
    }

    pub fn cluster(&self) -> &LocalCluster {
        &self.cluster
    }

    /// Submits `op` to node `node` without waiting.
    pub fn submit(&self, node: u64, op: Op) -> Result<Pending> {
        self.submit_with(node, |n, token| n.submit(token, op))
    }

    /// Submits a write of a client session to node `node` and waits for its
    /// outcome (a get is refused).
    pub fn session_write(&self, node: u64, op: &Op, stamp: SessionStamp) -> Result<Outcome> {
        let op = match op {
            Op::Put { key, value } => CommandOp::Put { key, value },
            Op::Delete { key } => CommandOp::Delete { key },
            Op::Raw(data) => CommandOp::Raw(data),
            Op::Get { .. } => return Err(Error::invalid("op", "a get has no session")),
        };
        self.submit_with(node, |n, token| {
            let mut failed = None;
            n.submit_many([(token, Request::SessionWrite(op, stamp))], |_, e| {
                failed = Some(e)
            });
            failed.map_or(Ok(()), Err)
        })?
        .wait()
    }

    fn submit_with(
        &self,
        node: u64,
        submit: impl FnOnce(&RaftNode, u64) -> Result<()>,
    ) -> Result<Pending> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, tx);
        let submitted = self
            .cluster
            .running_node(node)
            .and_then(|n| submit(&n, token));
        if let Err(e) = submitted {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            return Err(e);
        }
        Ok(Pending {
            token,
            rx,
            waiters: Arc::clone(&self.waiters),
            wait: self.wait,
        })
    }

    /// Submits `op` to node `node` and waits for its outcome.
    pub fn call(&self, node: u64, op: Op) -> Result<Outcome> {
        self.submit(node, op)?.wait()
    }

    pub fn put(
        &self,
        node: u64,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Outcome> {
        self.call(
            node,
            Op::Put {
                key: key.into(),
                value: value.into(),
            },
        )
    }

    pub fn delete(&self, node: u64, key: impl Into<Vec<u8>>) -> Result<Outcome> {
        self.call(node, Op::Delete { key: key.into() })
    }

    pub fn get(&self, node: u64, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        match self.call(node, Op::Get { key: key.into() })? {
            Outcome::Value(v) => Ok(v),
            other => Err(Error::Internal(format!("get answered {other:?}"))),
        }
    }
}

impl std::ops::Deref for SyncClient {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}
