//! `NativeProposalBatcher`: the core `ProposalBatcher` with a sink that hands
//! each encoded batch to a JS callback, in order, on the JS thread.

use std::sync::{Arc, OnceLock};

use metastore_batch::{BatchConfig, BatchStats, BatcherHandle, ErrorCode as Code, ProposalBatcher};
use napi::Result;
use napi::{
    bindgen_prelude::{Buffer, Either, FnArgs, Function, Uint8Array},
    threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode},
    Status,
};
use napi_derive::napi;

use crate::{
    config::{batch_config, BatchOptions},
    error::{from_batch, js_error},
};

/// What the JS callback receives: a batch, or `null` once everything queued
/// before `stop()` has been delivered.
enum Event {
    Batch(Vec<u8>, usize),
    Drained,
}

type BatchArgs = FnArgs<(Option<Buffer>, u32)>;
type BatchFn = ThreadsafeFunction<Event, (), BatchArgs, Status, false>;

/// Propose-to-flush latency percentiles, in microseconds.
#[napi(object, js_name = "LatencySummary")]
pub struct LatencyView {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub count: f64,
}

/// The batch loop's figures: the seven of the original Go design
/// (`totalProposals` to `bufferLen`), then flush reasons and latency.
#[napi(object, js_name = "BatchStats")]
pub struct BatchStatsView {
    pub total_proposals: f64,
    pub total_batches: f64,
    pub avg_batch_size: f64,
    pub current_load: f64,
    pub current_batch_size: f64,
    pub current_timeout_ms: f64,
    pub buffer_len: f64,
    pub flushes_by_size: f64,
    pub flushes_by_deadline: f64,
    pub flushes_by_idle: f64,
    pub flushes_by_stop: f64,
    pub latency: LatencyView,
}

impl From<BatchStats> for BatchStatsView {
    fn from(s: BatchStats) -> Self {
        BatchStatsView {
            total_proposals: s.total_proposals as f64,
            total_batches: s.total_batches as f64,
            avg_batch_size: s.avg_batch_size,
            current_load: s.current_load,
            current_batch_size: s.current_batch_size as f64,
            current_timeout_ms: s.current_timeout.as_secs_f64() * 1000.0,
            buffer_len: s.buffer_len as f64,
            flushes_by_size: s.flushes_by_size as f64,
            flushes_by_deadline: s.flushes_by_deadline as f64,
            flushes_by_idle: s.flushes_by_idle as f64,
            flushes_by_stop: s.flushes_by_stop as f64,
            latency: LatencyView {
                p50_us: s.latency.p50_us,
                p90_us: s.latency.p90_us,
                p99_us: s.latency.p99_us,
                p999_us: s.latency.p999_us,
                max_us: s.latency.max_us,
                count: s.latency.count as f64,
            },
        }
    }
}

/// Owned bytes: a string's UTF-8 buffer is taken as is, not copied again.
fn into_bytes(data: Either<Uint8Array, String>) -> Vec<u8> {
    match data {
        Either::A(bytes) => bytes.to_vec(),
        Either::B(text) => text.into_bytes(),
    }
}

#[napi]
pub struct NativeProposalBatcher {
    config: BatchConfig,
    on_batch: Option<Arc<BatchFn>>,
    inner: Option<ProposalBatcher>,
    stopped: bool,
}

#[napi]
impl NativeProposalBatcher {
    /// `onBatch(batch, count)` gets each encoded batch; `onBatch(null, 0)` marks
    /// that every batch flushed by `stop()` has been delivered.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        options: BatchOptions,
        on_batch: Function<FnArgs<(Option<Buffer>, u32)>, ()>,
    ) -> Result<Self, String> {
        let config = batch_config(&options)?;
        let on_batch = on_batch
            .build_threadsafe_function::<Event>()
            .callee_handled::<false>()
            .build_callback(|ctx| {
                Ok(match ctx.value {
                    Event::Batch(batch, count) => {
                        FnArgs::from((Some(Buffer::from(batch)), count as u32))
                    }
                    Event::Drained => FnArgs::from((None, 0)),
                })
            })
            .map_err(|e| js_error(Code::Internal, e.to_string()))?;
        Ok(NativeProposalBatcher {
            config,
            on_batch: Some(Arc::new(on_batch)),
            inner: None,
            stopped: false,
        })
    }

    #[napi(catch_unwind)]
    pub fn start(&mut self) -> Result<(), String> {
        if self.stopped {
            return Err(js_error(Code::Closed, "the batcher was stopped"));
        }
        if self.inner.is_some() {
            return Ok(());
        }
        let Some(on_batch) = self.on_batch.clone() else {
            return Err(js_error(Code::Closed, "the batcher was stopped"));
        };
        // The handle exists only once the batcher started; the JS thread (which
        // runs every completion callback) is inside this call until it is set.
        let handle: Arc<OnceLock<BatcherHandle>> = Arc::new(OnceLock::new());
        let sink_handle = handle.clone();
        let sink = move |batch: Vec<u8>, count: usize| {
            let handle = sink_handle.clone();
            // The batch stays "in flight" until the JS callback has returned, so the
            // next batch accumulates while JS works (group commit).
            on_batch.call_with_return_value(
                Event::Batch(batch, count),
                ThreadsafeFunctionCallMode::NonBlocking,
                move |ret, _env| {
                    if let Some(handle) = handle.get() {
                        handle.complete(count);
                    }
                    ret.map(|_| ())
                },
            );
        };
        let batcher = ProposalBatcher::start(self.config.clone(), sink).map_err(from_batch)?;
        let _ = handle.set(batcher.handle());
        self.inner = Some(batcher);
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn propose(&self, data: Either<Uint8Array, String>) -> Result<(), String> {
        match &self.inner {
            Some(batcher) => batcher.propose(into_bytes(data)).map_err(from_batch),
            None if self.stopped => Err(js_error(Code::Closed, "the batcher was stopped")),
            None => Err(js_error(Code::NotStarted, "call start() before propose()")),
        }
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> BatchStatsView {
        self.inner
            .as_ref()
            .map(|b| b.stats())
            .unwrap_or_default()
            .into()
    }

    /// Flushes everything queued, then queues the `null` marker and releases
    /// the callback. Idempotent.
    #[napi(catch_unwind)]
    pub fn stop(&mut self) {
        self.stopped = true;
        if let Some(batcher) = self.inner.as_ref() {
            batcher.stop();
        }
        if let Some(on_batch) = self.on_batch.take() {
            on_batch.call(Event::Drained, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}
