//! `NativeCluster`: the Raft nodes of a group in this process (a
//! `LocalCluster` of N nodes, or one member of a group spread over
//! processes). Requests carry a JS token; results come back through one JS
//! callback per apply round (many tokens at once), packed into typed arrays so
//! resolving a promise costs no object allocation on the Rust side.

use std::sync::{Arc, Mutex};

use metastore_raft::cluster::SinkFactory;
use metastore_raft::membership::Change;
use metastore_raft::node::MemberEntry;
use metastore_raft::{
    CommandOp, Completion, CompletionSink, Error as RaftError, ErrorCode as Code, ErrorOutcome,
    LocalCluster, Member, Outcome, RaftNode, Request, SessionStamp,
};
use napi::Result;
use napi::{
    bindgen_prelude::{Buffer, Either, Float64Array, FnArgs, Function, Uint8Array},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use crate::{
    config::{cluster_config, member_config, ClusterOptions, MemberOptions},
    error::{from_raft, js_error, ErrorCode},
    stats::{NodeStats, TransportStatsView},
};

/// The status byte of each completion sent to JS. `Value` and the failures
/// also push entries to `extras` (the value, or the error code then its
/// message). A failure's status says its outcome.
#[napi]
pub enum CompletionStatus {
    Written = 0,
    /// Written, and the key had a value before.
    WrittenExisted = 1,
    Value = 2,
    NoValue = 3,
    /// Failed, and certainly not applied.
    FailedNotApplied = 4,
    /// Failed, and may have been applied.
    FailedUnknown = 5,
    /// A membership change completed; `extras` gets the members as JSON
    /// (`[{ id, address, role }]`).
    Membership = 6,
}

type CompletionArgs = FnArgs<(
    Float64Array,
    Uint8Array,
    Float64Array,
    Vec<Either<Buffer, String>>,
)>;
type CompletionFn = ThreadsafeFunction<Vec<Completion>, (), CompletionArgs, Status, false>;

fn pack(completions: Vec<Completion>) -> CompletionArgs {
    let n = completions.len();
    let mut tokens = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut indexes = Vec::with_capacity(n);
    let mut extras = Vec::new();
    for c in completions {
        tokens.push(c.token as f64);
        let (status, index) = match c.result {
            Ok(Outcome::Written {
                index,
                existed: true,
            }) => (CompletionStatus::WrittenExisted, index),
            Ok(Outcome::Written {
                index,
                existed: false,
            }) => (CompletionStatus::Written, index),
            Ok(Outcome::Value(Some(value))) => {
                extras.push(Either::A(Buffer::from(value)));
                (CompletionStatus::Value, 0)
            }
            Ok(Outcome::Value(None)) => (CompletionStatus::NoValue, 0),
            Ok(Outcome::Membership(members)) => {
                extras.push(Either::B(members_json(&members)));
                (CompletionStatus::Membership, 0)
            }
            Err(err) => {
                extras.push(Either::B(err.code().to_string()));
                extras.push(Either::B(err.to_string()));
                let status = match err.outcome() {
                    ErrorOutcome::NotApplied => CompletionStatus::FailedNotApplied,
                    ErrorOutcome::Unknown => CompletionStatus::FailedUnknown,
                };
                (status, 0)
            }
        };
        statuses.push(status as u8);
        indexes.push(index as f64);
    }
    FnArgs::from((
        Float64Array::new(tokens),
        Uint8Array::new(statuses),
        Float64Array::new(indexes),
        extras,
    ))
}

/// `[{"id":1,"address":"host:port","role":"voter"}, ...]`.
fn members_json(members: &[MemberEntry]) -> String {
    let rows: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "address": m.address,
                "role": if m.voter { "voter" } else { "learner" },
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// A membership change, as `changeMembership` takes it.
#[napi(object)]
pub struct MembershipChange {
    /// `add` (as a learner), `promote` or `remove`.
    #[napi(ts_type = "'add' | 'promote' | 'remove'")]
    pub kind: String,
    pub id: u32,
    /// Where the members dial the new node (`add` only).
    pub address: Option<String>,
    /// Remove even when the voters left would not hold a live quorum.
    pub force: Option<bool>,
}

/// A request `submitMany` refused before it reached the node (`ERR_CLOSED`,
/// `ERR_TOO_LARGE`).
#[napi(object)]
pub struct SubmitFailure {
    pub token: f64,
    pub code: ErrorCode,
    pub message: String,
    pub outcome: crate::error::RequestOutcome,
}

/// The kind byte of each request in a `submitMany` buffer (ts/submitter.ts
/// writes them).
#[napi]
#[derive(Clone, Copy)]
pub enum RequestKind {
    Put = 0,
    Delete = 1,
    Get = 2,
    Raw = 3,
}

impl RequestKind {
    fn from_byte(byte: u8) -> Option<RequestKind> {
        [
            RequestKind::Put,
            RequestKind::Delete,
            RequestKind::Get,
            RequestKind::Raw,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// Reads the requests packed by ts/submitter.ts, all little-endian:
///
/// ```text
/// session u64 | floor f64 | request*
/// request: kind u8 | token f64 | seq f64 | len u32 | bytes [| len u32 | value]
/// ```
///
/// The value follows for a put only. A session of 0 means none; otherwise
/// every write is a [`Request::SessionWrite`] with its `seq` and the shared
/// `floor`. Tokens and sequence numbers are integers below 2^53 (exact in an
/// f64).
fn parse_requests(mut buf: &[u8]) -> std::result::Result<Vec<(u64, Request<'_>)>, &'static str> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], &'static str> {
        if buf.len() < n {
            return Err("truncated");
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Ok(head)
    }
    fn bytes<'a>(buf: &mut &'a [u8]) -> std::result::Result<&'a [u8], &'static str> {
        let len = u32::from_le_bytes(take(buf, 4)?.try_into().map_err(|_| "truncated")?);
        take(buf, len as usize)
    }
    fn integer(buf: &mut &[u8], what: &'static str) -> std::result::Result<u64, &'static str> {
        let n = f64::from_le_bytes(take(buf, 8)?.try_into().map_err(|_| "truncated")?);
        if (0.0..9_007_199_254_740_992.0).contains(&n) && n.fract() == 0.0 {
            Ok(n as u64)
        } else {
            Err(what)
        }
    }
    let session = u64::from_le_bytes(take(&mut buf, 8)?.try_into().map_err(|_| "truncated")?);
    let floor = integer(&mut buf, "bad floor")?;
    let mut requests = Vec::new();
    while !buf.is_empty() {
        let kind = take(&mut buf, 1)?[0];
        let token = integer(&mut buf, "bad token")?;
        let seq = integer(&mut buf, "bad seq")?;
        let first = bytes(&mut buf)?;
        let op = match RequestKind::from_byte(kind).ok_or("unknown request kind")? {
            RequestKind::Put => CommandOp::Put {
                key: first,
                value: bytes(&mut buf)?,
            },
            RequestKind::Delete => CommandOp::Delete { key: first },
            RequestKind::Get => {
                requests.push((token, Request::Get(first)));
                continue;
            }
            RequestKind::Raw => CommandOp::Raw(first),
        };
        let request = if session == 0 {
            Request::Write(op)
        } else {
            let stamp = SessionStamp {
                session,
                seq,
                floor: floor.min(seq),
            };
            Request::SessionWrite(op, stamp)
        };
        requests.push((token, request));
    }
    Ok(requests)
}

/// The nodes a `NativeCluster` drives: a whole group in this process, or
/// this process's one member of a group spread over processes.
enum Inner {
    Local(LocalCluster),
    Member(Member),
}

impl Inner {
    fn running_node(&self, id: u64) -> metastore_raft::error::Result<Arc<RaftNode>> {
        match self {
            Inner::Local(c) => c.running_node(id),
            Inner::Member(m) if m.node().id() != id => Err(RaftError::UnknownNode {
                id,
                nodes: m.node().peers().len() as u64,
            }),
            Inner::Member(m) if m.node().is_closed() => Err(RaftError::Closed),
            // A member that stopped by itself says why to every call, so
            // that its process can tell (its stats would only stop moving).
            Inner::Member(m) if m.node().failure().is_some() => {
                Err(m.node().failure().unwrap_or(RaftError::Closed))
            }
            Inner::Member(m) => Ok(Arc::clone(m.node())),
        }
    }

    fn leader(&self) -> Option<u64> {
        match self {
            Inner::Local(c) => c.leader(),
            Inner::Member(m) => {
                let s = m.node().raft_stats();
                (!m.node().is_closed() && s.leader_id != 0).then_some(s.leader_id)
            }
        }
    }

    fn ids(&self) -> Vec<u64> {
        match self {
            Inner::Local(c) => c.ids(),
            Inner::Member(m) => m.node().peers().iter().map(|p| p.id).collect(),
        }
    }

    /// The in-process cluster, for what only it can do (stop, restart, cut).
    fn local(&self, what: &str) -> Result<&LocalCluster, String> {
        match self {
            Inner::Local(c) => Ok(c),
            Inner::Member(_) => Err(js_error(
                Code::InvalidConfig,
                format!("{what} is for a LocalCluster; this process runs one member of a group"),
            )),
        }
    }

    fn close(&self) -> metastore_raft::error::Result<()> {
        match self {
            Inner::Local(c) => c.close(),
            Inner::Member(m) => {
                m.close();
                Ok(())
            }
        }
    }
}

/// A member of the group, as `members()` reports it.
#[napi(object)]
pub struct MemberInfo {
    pub id: u32,
    /// Where the others dial it (empty for a node of a `LocalCluster`).
    pub address: String,
    /// A voter counts towards quorums; a learner only receives the log.
    #[napi(ts_type = "'voter' | 'learner'")]
    pub role: String,
    pub is_leader: bool,
    /// The highest log index known to be on that member; known when the
    /// node asked leads (as of at most 50 ms ago), absent elsewhere.
    pub match_index: Option<f64>,
    /// Entries of the leader's log that member lacks; known, like
    /// `matchIndex`, when the node asked leads.
    pub lag: Option<f64>,
}

/// The JS callback as a thread-safe function shared by every node's sink
/// (dropped on close), and the factory of those sinks.
#[allow(clippy::type_complexity)]
fn completion_sinks(
    on_complete: Function<
        FnArgs<(
            Float64Array,
            Uint8Array,
            Float64Array,
            Vec<Either<Buffer, String>>,
        )>,
        (),
    >,
) -> Result<(Arc<Mutex<Option<Arc<CompletionFn>>>>, SinkFactory), String> {
    let tsfn: CompletionFn = on_complete
        .build_threadsafe_function::<Vec<Completion>>()
        .callee_handled::<false>()
        .build_callback(|ctx| Ok(pack(ctx.value)))
        .map_err(|e| js_error(Code::Internal, e.to_string()))?;
    let on_complete = Arc::new(Mutex::new(Some(Arc::new(tsfn))));
    let shared = Arc::clone(&on_complete);
    let sinks: SinkFactory = Arc::new(move |_node: u64| -> CompletionSink {
        let tsfn = shared.lock().ok().and_then(|guard| guard.clone());
        Arc::new(move |completions: Vec<Completion>| {
            if let Some(tsfn) = &tsfn {
                tsfn.call(completions, ThreadsafeFunctionCallMode::NonBlocking);
            }
        })
    });
    Ok((on_complete, sinks))
}

#[napi]
pub struct NativeCluster {
    inner: Inner,
    /// Dropped on close so the callback no longer keeps the event loop alive.
    on_complete: Arc<Mutex<Option<Arc<CompletionFn>>>>,
}

#[napi]
impl NativeCluster {
    /// Starts `options.nodes` nodes (ids 1..=n). `onComplete(tokens, statuses,
    /// indexes, extras)` receives results in batches.
    // The callback's type is spelled out: napi derives its TypeScript
    // signature from these tokens, which an alias would hide.
    #[allow(clippy::type_complexity)]
    #[napi(factory, catch_unwind)]
    pub fn start_member(
        options: MemberOptions,
        on_complete: Function<
            FnArgs<(
                Float64Array,
                Uint8Array,
                Float64Array,
                Vec<Either<Buffer, String>>,
            )>,
            (),
        >,
    ) -> Result<NativeCluster, String> {
        let config = member_config(&options)?;
        let (on_complete, sinks) = completion_sinks(on_complete)?;
        let member = Member::start(config, sinks(u64::from(options.node_id))).map_err(from_raft)?;
        Ok(NativeCluster {
            inner: Inner::Member(member),
            on_complete,
        })
    }

    /// Starts `options.nodes` nodes (ids 1..=n). `onComplete(tokens, statuses,
    /// indexes, extras)` receives results in batches.
    #[allow(clippy::type_complexity)]
    #[napi(factory, catch_unwind)]
    pub fn start(
        options: ClusterOptions,
        on_complete: Function<
            FnArgs<(
                Float64Array,
                Uint8Array,
                Float64Array,
                Vec<Either<Buffer, String>>,
            )>,
            (),
        >,
    ) -> Result<NativeCluster, String> {
        let config = cluster_config(&options)?;
        let (on_complete, sinks) = completion_sinks(on_complete)?;
        let inner = LocalCluster::start(config, sinks).map_err(from_raft)?;
        Ok(NativeCluster {
            inner: Inner::Local(inner),
            on_complete,
        })
    }

    /// Submits the requests packed in `ops` (see [`parse_requests`]) to `node`,
    /// in order, in one call. Returns the requests refused up front; the others
    /// answer through `onComplete`. A malformed buffer submits nothing.
    #[napi(catch_unwind)]
    pub fn submit_many(&self, node: u32, ops: Uint8Array) -> Result<Vec<SubmitFailure>, String> {
        let requests = parse_requests(&ops).map_err(|what| {
            js_error(Code::Internal, format!("malformed request buffer: {what}"))
        })?;
        let node = self.inner.running_node(node as u64).map_err(from_raft)?;
        let mut failures = Vec::new();
        node.submit_many(requests, |token, err| {
            failures.push(SubmitFailure {
                token: token as f64,
                code: err.error_code().into(),
                message: err.to_string(),
                outcome: err.outcome().into(),
            })
        });
        Ok(failures)
    }

    #[napi(catch_unwind)]
    pub fn leader(&self) -> Option<u32> {
        self.inner.leader().map(|id| id as u32)
    }

    #[napi(catch_unwind)]
    pub fn ids(&self) -> Vec<u32> {
        self.inner.ids().into_iter().map(|id| id as u32).collect()
    }

    /// Asks node `node`'s group to hand leadership to voter `to`; returns
    /// at once (the caller watches `leader()`).
    #[napi(catch_unwind)]
    pub fn transfer_leader(&self, node: u32, to: u32) -> Result<(), String> {
        self.inner
            .running_node(u64::from(node))
            .and_then(|n| n.transfer_leader(u64::from(to)))
            .map_err(from_raft)
    }

    /// Asks node `node`'s group for a membership change; the result comes
    /// through the completion callback with `token` (status `Membership`,
    /// or a failure).
    #[napi(catch_unwind)]
    pub fn change_membership(
        &self,
        node: u32,
        token: f64,
        change: MembershipChange,
        timeout_ms: f64,
    ) -> Result<(), String> {
        let id = u64::from(change.id);
        let change = match change.kind.as_str() {
            "add" => Change::AddLearner {
                id,
                address: change.address.unwrap_or_default(),
            },
            "promote" => Change::Promote { id },
            "remove" => Change::Remove {
                id,
                force: change.force.unwrap_or(false),
            },
            other => {
                return Err(js_error(
                    Code::ChangeRefused,
                    format!("unknown membership change '{other}' (add, promote, remove)"),
                ))
            }
        };
        if !(timeout_ms.is_finite() && timeout_ms > 0.0) {
            return Err(js_error(
                Code::InvalidConfig,
                format!("timeoutMs must be a positive number of milliseconds, got {timeout_ms}"),
            ));
        }
        self.inner
            .running_node(u64::from(node))
            .and_then(|n| {
                n.change_membership(
                    token as u64,
                    change,
                    std::time::Duration::from_secs_f64(timeout_ms / 1000.0),
                )
            })
            .map_err(from_raft)
    }

    #[napi(catch_unwind)]
    pub fn is_running(&self, node: u32) -> bool {
        self.inner.running_node(node as u64).is_ok()
    }

    /// The members as node `node` sees them (for a member, the node of
    /// this process): addresses, roles, and each one's match index when
    /// that node leads.
    #[napi(catch_unwind)]
    pub fn members(&self, node: u32) -> Result<Vec<MemberInfo>, String> {
        let asked = self
            .inner
            .running_node(u64::from(node))
            .map_err(from_raft)?;
        let leader = asked.raft_stats().leader_id;
        Ok(asked
            .peers()
            .into_iter()
            .map(|p| MemberInfo {
                id: p.id as u32,
                address: p.address.unwrap_or_default(),
                role: if p.voter { "voter" } else { "learner" }.to_string(),
                is_leader: leader != 0 && leader == p.id,
                match_index: p.match_index.map(|i| i as f64),
                lag: p.lag.map(|l| l as f64),
            })
            .collect())
    }

    #[napi(catch_unwind)]
    pub fn stats(&self, node: u32) -> Result<NodeStats, String> {
        let id = node as u64;
        let node = self.inner.running_node(id).map_err(from_raft)?;
        let mut stats = NodeStats::from(node.stats());
        stats.transport = match &self.inner {
            Inner::Local(c) => c.net_stats(id),
            Inner::Member(m) => Some(m.net_stats()),
        }
        .map(TransportStatsView::from);
        Ok(stats)
    }

    #[napi(catch_unwind)]
    pub fn stop_node(&self, node: u32) -> Result<(), String> {
        self.inner
            .local("stop")?
            .stop(node as u64)
            .map_err(from_raft)
    }

    #[napi(catch_unwind)]
    pub fn restart_node(&self, node: u32) -> Result<(), String> {
        self.inner
            .local("restart")?
            .restart(node as u64)
            .map_err(from_raft)
    }

    #[napi(catch_unwind)]
    pub fn cut(&self, a: u32, b: u32) -> Result<(), String> {
        self.inner.local("cut")?.cut(a as u64, b as u64);
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn heal(&self, a: u32, b: u32) -> Result<(), String> {
        self.inner.local("heal")?.heal(a as u64, b as u64);
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn hold(&self, from: u32, to: u32) -> Result<(), String> {
        let cluster = self.inner.local("hold")?;
        cluster.hold(from as u64, to as u64).map_err(from_raft)
    }

    #[napi(catch_unwind)]
    pub fn release(&self, from: u32, to: u32) -> Result<(), String> {
        let cluster = self.inner.local("release")?;
        cluster.release(from as u64, to as u64).map_err(from_raft)
    }

    /// Stops every node (pending requests reject with ERR_CLOSED) and releases
    /// the callback once those rejections are queued. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&self) -> Result<(), String> {
        let result = self.inner.close().map_err(from_raft);
        if let Ok(mut guard) = self.on_complete.lock() {
            guard.take();
        }
        result
    }
}
