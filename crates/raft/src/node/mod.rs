//! A Raft node: a handle ([`RaftNode`]) in front of one thread that owns the
//! raft-rs `RawNode`, its storage engine and the bookkeeping of the requests
//! waiting on it.
//!
//! # The life of a request
//!
//! 1. **Submit** (this file). [`RaftNode::submit_many`] encodes each write as
//!    a [`command`](crate::command) carrying its request id and hands it to
//!    the proposal batcher (`metastore-batch`); a get goes straight to the
//!    node thread.
//! 2. **Propose** (`proposals.rs`). The batcher flushes a batch as one log
//!    entry; the node thread registers its tokens and proposes it, or holds it
//!    while no leader is known.
//! 3. **Ready** (`ready.rs`). Once per loop iteration the thread takes the
//!    `Ready`s raft-rs has, in the order raft-rs requires for asynchronous
//!    persistence: send the messages that need no durability, then persist.
//! 4. **Persist** (`persist.rs`). Snapshot, entries and hard state go to the
//!    engine in one write. A busy node syncs it on the engine's sync thread
//!    and goes on; the messages that must wait for durability (a follower's
//!    acknowledgements, votes) are held in the [`persist::AsyncWriter`] until
//!    the sync lands and released in `Ready` order. An idle node syncs inline.
//! 5. **Apply** (`apply.rs`). Committed entries (raft-rs hands out only
//!    durable ones) are decoded and applied in log order; the applied log is
//!    compacted once it is large.
//! 6. **Answer** (`outbox.rs`). Completions of this node's own requests are
//!    collected in the [`outbox::Outbox`] and delivered to the
//!    [`CompletionSink`] in one call per loop iteration, which also tells the
//!    batcher how many writes left the pipeline.
//!
//! Linearizable reads take their own path (`read.rs`): gets arriving in one
//! iteration share a ReadIndex request and are served once the applied index
//! reaches the read index. The loop itself, inbound messages, ticks, failure
//! and shutdown are in `worker.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use metastore_batch::ProposalBatcher;
use raft::RawNode;

use crate::bell::{self, Doorbell, Inbox};
use crate::command::{self, CommandOp, RequestId, SessionStamp};
use crate::config::{EngineKind, NodeConfig};
use crate::error::{Error, Result};
use crate::identity::{Bootstrap, Identity};
use crate::membership::Membership;
use crate::stats::{NodeStats, RaftStats, SharedStats};
use crate::storage::{Engine, MemoryEngine, RocksEngine};
use crate::transport::Transport;

mod apply;
mod membership;
mod outbox;
mod persist;
mod proposals;
mod read;
mod ready;
mod worker;

use self::outbox::Outbox;
use self::worker::{NodeMsg, ProposedBatch, SyncPolicy, Worker};

/// A request borrowed from the caller's buffer, for [`RaftNode::submit_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A put, delete or raw command, proposed through the log.
    Write(CommandOp<'a>),
    /// A write of a client session: applied at most once per
    /// `(session, seq)`, so it may be sent again, under a new token, after
    /// an unknown outcome (see [`crate::session`]).
    SessionWrite(CommandOp<'a>, SessionStamp),
    /// A linearizable read of a key.
    Get(&'a [u8]),
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// A linearizable read (ReadIndex); served by followers too.
    Get {
        key: Vec<u8>,
    },
    /// Opaque bytes replicated through the log without touching the KV map.
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A put, delete or raw command was applied at log `index`. `existed`:
    /// whether the key was present before (always false for raw commands).
    Written {
        index: u64,
        existed: bool,
    },
    Value(Option<Vec<u8>>),
    /// A membership change completed; the members after it.
    Membership(Vec<MemberEntry>),
}

/// A member of the group as its membership record has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    pub id: u64,
    /// Where the members dial it.
    pub address: String,
    /// Whether it votes (a learner only receives the log).
    pub voter: bool,
}

/// The answer to the request submitted with `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub token: u64,
    pub result: Result<Outcome, Error>,
}

/// Receives completions, many at once (one call per loop iteration of the
/// node thread), on the node thread. It must not block for long.
pub type CompletionSink = Arc<dyn Fn(Vec<Completion>) + Send + Sync>;

/// A running node. Cheap to share (`Arc`); every method is thread-safe.
pub struct RaftNode {
    id: u64,
    epoch: u64,
    engine: EngineKind,
    /// `true` once closing started. Submitters hold the read side while they
    /// hand a request over, so `close` knows none is left half-way.
    closed: RwLock<bool>,
    batcher: ProposalBatcher,
    mailbox: Doorbell<NodeMsg>,
    stats: Arc<SharedStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by the node thread once it has exited and dropped its engine.
    exited: Arc<Exited>,
}

/// A latch the node thread sets as its last act, so that `close` can wait
/// for the engine to be closed even when another caller took the join.
#[derive(Default)]
struct Exited {
    done: Mutex<bool>,
    cond: Condvar,
}

struct SetOnDrop(Arc<Exited>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

impl Exited {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.cond.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl RaftNode {
    /// Opens the engine named by `cfg.storage` and starts the node thread.
    /// A RocksDB data dir must belong to `identity` (see [`crate::identity`]);
    /// `bootstrap` says whether it may be created. `membership`: the
    /// record a group that keeps one starts with, written when the engine
    /// holds none yet (see [`crate::membership`]). Messages for this node
    /// arrive on `inbox`; completions go to `sink`.
    pub fn start(
        cfg: NodeConfig,
        identity: &Identity,
        bootstrap: Bootstrap,
        membership: Option<Membership>,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
        sink: CompletionSink,
    ) -> Result<RaftNode> {
        cfg.validate()?;
        fn with_membership<E: Engine>(mut engine: E, m: Option<Membership>) -> Result<E> {
            if let (None, Some(m)) = (engine.membership(), m) {
                engine.set_membership(m)?;
                let applied = engine.applied_index();
                engine.finish_apply(applied)?;
            }
            Ok(engine)
        }
        match cfg.storage.engine {
            EngineKind::Memory => {
                let engine = with_membership(MemoryEngine::new(&cfg.peers), membership)?;
                Self::start_with_engine(cfg, engine, transport, inbox, sink)
            }
            EngineKind::RocksDb => {
                let dir = cfg.storage.node_dir(cfg.id);
                let engine = RocksEngine::open(&dir, identity, bootstrap)?;
                if cfg.storage.sync {
                    engine.write_wal_ahead()?;
                }
                let engine = match bootstrap {
                    Bootstrap::Join => engine,
                    _ => with_membership(engine, membership)?,
                };
                Self::start_with_engine(cfg, engine, transport, inbox, sink)
            }
        }
    }

    /// Starts the node on an engine opened by the caller.
    pub fn start_with_engine<E: Engine>(
        cfg: NodeConfig,
        engine: E,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
        sink: CompletionSink,
    ) -> Result<RaftNode> {
        cfg.validate()?;
        let id = cfg.id;
        let kind = engine.kind();
        let raft_cfg = raft_config(&cfg, engine.applied_index());
        raft_cfg
            .validate()
            .map_err(|e| Error::invalid("raft", e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let stats = Arc::new(SharedStats::new(engine.sync_clock()));
        let sync = match (engine.durable_by_sync(), cfg.storage.sync) {
            (false, _) => SyncPolicy::Never,
            (true, false) => SyncPolicy::TermAndVote,
            (true, true) => SyncPolicy::Always,
        };
        // raft-rs panics on storage it finds inconsistent; that is a storage
        // error here, not a reason to take the host process down.
        let raft_group = catch_unwind(AssertUnwindSafe(|| {
            RawNode::new(&raft_cfg, engine, &logger)
        }))
        .map_err(|p| {
            Error::Storage(format!(
                "node {id}: raft rejected the stored state: {}",
                panic_message(&*p)
            ))
        })?
        .map_err(|e| Error::Storage(format!("node {id}: cannot start raft: {e}")))?;

        let (batch_tx, batch_rx) = bell::channel::<ProposedBatch>(&inbox.bell);
        // The sink is a channel send, so a caller whose request finds the
        // pipeline empty may flush it itself (`start_direct`).
        let batcher = ProposalBatcher::start_direct(
            cfg.batch.clone(),
            move |data: Vec<u8>, count: usize| {
                // Fails only once the node thread is gone, after every request
                // was already rejected.
                let _ = batch_tx.send(ProposedBatch { data, count });
            },
        )?;
        let (mailbox_tx, mailbox_rx) = bell::channel(&inbox.bell);
        let epoch = new_epoch();
        let outbox = Outbox::new(sink, batcher.handle());
        let worker = Worker::new(
            &cfg,
            epoch,
            sync,
            raft_group,
            transport,
            outbox,
            Arc::clone(&stats),
        );
        // What the node thread waits on when its transport lends no runtime
        // (a current-thread runtime with a timer: no thread of its own).
        let own_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| {
                batcher.stop();
                Error::Internal(format!("cannot start the runtime of node {id}: {e}"))
            })?;
        let exited = Arc::new(Exited::default());
        let thread = std::thread::Builder::new()
            .name(format!("metastore-raft-{id}"))
            .spawn({
                let exited = Arc::clone(&exited);
                move || {
                    // Set last, even if the thread unwinds: `run` consumes the
                    // worker, so the engine is closed by then.
                    let _exited = SetOnDrop(exited);
                    worker.run(inbox, batch_rx, mailbox_rx, own_runtime);
                }
            })
            .map_err(|e| {
                batcher.stop();
                Error::Internal(format!("cannot spawn the thread of node {id}: {e}"))
            })?;
        Ok(RaftNode {
            id,
            epoch,
            engine: kind,
            closed: RwLock::new(false),
            batcher,
            mailbox: mailbox_tx,
            stats,
            thread: Mutex::new(Some(thread)),
            exited,
        })
    }

    /// Submits a request; its result arrives later through the completion
    /// sink with the same `token`. Tokens must be unique among this node's
    /// unresolved requests, and a token whose request ended with an unknown
    /// outcome ([`Error::outcome`]) must not be used again while this node
    /// runs: its entry may still commit, and would answer the new request.
    /// (To send such a write again, use a [`Request::SessionWrite`] with a
    /// new token and the same stamp.)
    /// Blocks only while the batcher queue is full.
    /// Errors known up front (`TooLarge`, `Closed`) are returned here.
    pub fn submit(&self, token: u64, op: Op) -> Result<()> {
        let mut failed = None;
        let request = match &op {
            Op::Put { key, value } => Request::Write(CommandOp::Put { key, value }),
            Op::Delete { key } => Request::Write(CommandOp::Delete { key }),
            Op::Raw(data) => Request::Write(CommandOp::Raw(data)),
            Op::Get { key } => Request::Get(key),
        };
        self.submit_many([(token, request)], |_, e| failed = Some(e));
        failed.map_or(Ok(()), Err)
    }

    /// Submits many requests in order, taking the node's locks once. A
    /// request refused up front (`TooLarge`, `Closed`) is reported to
    /// `rejected` with its token; the others answer through the sink.
    pub fn submit_many<'a>(
        &self,
        requests: impl IntoIterator<Item = (u64, Request<'a>)>,
        mut rejected: impl FnMut(u64, Error),
    ) {
        let closed = self.closed.read().unwrap_or_else(|p| p.into_inner());
        for (token, request) in requests {
            if *closed {
                rejected(token, Error::Closed);
                continue;
            }
            let id = RequestId {
                node: self.id,
                epoch: self.epoch,
                token,
            };
            let sent = match request {
                Request::Write(op) => self
                    .batcher
                    .propose(command::encode_command(id, None, op))
                    .map_err(Error::from),
                Request::SessionWrite(op, stamp) => self
                    .batcher
                    .propose(command::encode_command(id, Some(stamp), op))
                    .map_err(Error::from),
                Request::Get(key) => self
                    .mailbox
                    .send(NodeMsg::Get {
                        token,
                        key: key.to_vec(),
                    })
                    .map_err(|_| Error::Closed),
            };
            if let Err(e) = sent {
                rejected(token, e);
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn stats(&self) -> NodeStats {
        NodeStats {
            raft: self.stats.raft(self.id),
            batch: self.batcher.stats(),
            storage: self.stats.storage(self.engine),
        }
    }

    /// The members of the group as this node sees them (as of its last
    /// publication, at most [`worker`]'s `PEERS_EVERY` ago), with each one's
    /// match index when this node leads.
    pub fn peers(&self) -> Vec<crate::stats::PeerState> {
        self.stats.peers()
    }

    /// Asks the group to hand leadership to voter `to` (raft-rs's leader
    /// transfer: the leader stops taking proposals, brings `to` up to date
    /// and tells it to campaign at once; a follower forwards the request to
    /// the leader). Returns at once: the transfer shows in this node's stats
    /// when it happened, and raft-rs gives it up after an election timeout.
    /// `UnknownNode` when `to` is not a voter as this node sees the group.
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let peers = self.stats.peers();
        if !peers.iter().any(|p| p.id == to && p.voter) {
            return Err(Error::UnknownNode {
                id: to,
                nodes: peers.len() as u64,
            });
        }
        self.mailbox
            .send(NodeMsg::TransferLeader { to })
            .map_err(|_| Error::Closed)
    }

    /// Asks the group for a membership change (see [`crate::membership`]);
    /// its result arrives through the completion sink with `token`: the
    /// members once the change is applied and the group is in a single
    /// configuration again, or an error saying what the caller may conclude.
    /// `timeout` bounds the wait (then `Timeout`: the change may still
    /// happen).
    pub fn change_membership(
        &self,
        token: u64,
        change: crate::membership::Change,
        timeout: std::time::Duration,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.mailbox
            .send(NodeMsg::ChangeMembership {
                token,
                change,
                timeout,
            })
            .map_err(|_| Error::Closed)
    }

    /// The raft figures alone (no batcher lock, no engine query).
    pub fn raft_stats(&self) -> RaftStats {
        self.stats.raft(self.id)
    }

    /// Why the node stopped serving by itself (a storage failure, a panic,
    /// its removal from the group), if it did.
    pub fn failure(&self) -> Option<Error> {
        self.stats.failure()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node: new requests fail with ERR_CLOSED, and everything
    /// pending (including what is still in the batcher) rejects with
    /// ERR_CLOSED. Returns when the node thread has exited and the engine is
    /// closed, so the same data dir can be opened again at once; called from
    /// the node's own thread (a sink closing its node), it only starts the
    /// stop, and a later `close` from another thread waits for it.
    /// Idempotent.
    pub fn close(&self) {
        let first = {
            let mut closed = self.closed.write().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut *closed, true)
        };
        if first {
            // Flushes whatever is queued into the node thread's channel, before Stop.
            self.batcher.stop();
            let _ = self.mailbox.send(NodeMsg::Stop);
            self.stats.mark_stopped();
        }
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id())
        {
            // A sink that closes its own node must not wait for itself.
            return;
        }
        let handle = thread.take();
        drop(thread);
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.exited.wait();
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("engine", &self.engine)
            .finish()
    }
}

/// raft-rs's settings for node `cfg`, whose engine has applied up to `applied`.
fn raft_config(cfg: &NodeConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: cfg.id,
        election_tick: cfg.raft.election_tick,
        heartbeat_tick: cfg.raft.heartbeat_tick,
        applied,
        max_size_per_msg: cfg.raft.max_size_per_msg,
        max_inflight_msgs: cfg.raft.max_inflight_msgs,
        check_quorum: cfg.raft.check_quorum,
        pre_vote: cfg.raft.pre_vote,
        batch_append: true,
        // The leader tells followers of a commit in its next append or
        // heartbeat, not in a message of its own, unless a follower waits
        // for it (then to that follower alone, `Worker::tell_forwarders`):
        // half the messages at 1 in flight.
        skip_bcast_commit: true,
        ..Default::default()
    }
}

/// A per-start random epoch for request ids (see [`command`]).
fn new_epoch() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u64(STARTS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
