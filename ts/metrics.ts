/**
 * A node's figures in the Prometheus text format, for an embedding service to
 * expose (`store.metrics()`) and for `metastore serve`'s `GET /metrics`.
 *
 * Each scrape renders one `stats()` snapshot into a registry of its own, never
 * prom-client's global one, so that a service's other metrics and several
 * stores in one process stay apart. Figures that only grow (since the node
 * started) are counters; the others are gauges. Every sample carries the
 * node's id as `node_id`.
 */
import { Counter, Gauge, Registry } from 'prom-client'

import type { RaftRole } from './native.js'
import type { StoreStats } from './store.js'

/** The content type of the text `metricsText` returns. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE

const ROLES = Object.keys({
  follower: true,
  candidate: true,
  'pre-candidate': true,
  leader: true,
} satisfies Record<RaftRole, true>) as RaftRole[]

/** Samples of one metric: a plain value, or values by label. */
type Samples = number | { labels: Record<string, string>; value: number }[]

interface Figure {
  name: string
  help: string
  kind: 'counter' | 'gauge'
  labels?: string[]
  /** Undefined when this node does not have the figure (no network end over in-process channels). */
  read: (s: StoreStats) => Samples | undefined
}

const counter = (name: string, help: string, read: Figure['read'], labels?: string[]): Figure => ({
  name,
  help,
  kind: 'counter',
  read,
  labels,
})
const gauge = (name: string, help: string, read: Figure['read'], labels?: string[]): Figure => ({
  name,
  help,
  kind: 'gauge',
  read,
  labels,
})

const seconds = (us: number): number => us / 1e6

const FIGURES: readonly Figure[] = [
  gauge(
    'metastore_raft_role',
    'The Raft role of this node: 1 for the current one, 0 for the others.',
    (s) => ROLES.map((role) => ({ labels: { role }, value: s.raft.role === role ? 1 : 0 })),
    ['role'],
  ),
  gauge('metastore_raft_term', 'The Raft term this node is in.', (s) => s.raft.term),
  gauge('metastore_raft_leader_id', 'The id of the leader as far as this node knows; 0 while none is known.', (s) => s.raft.leaderId),
  gauge('metastore_raft_commit_index', 'The highest log index this node knows to be committed.', (s) => s.raft.commitIndex),
  gauge('metastore_raft_applied_index', 'The highest log index this node has applied to its key-value state.', (s) => s.raft.appliedIndex),
  gauge('metastore_raft_last_index', "The index of the last entry in this node's log.", (s) => s.raft.lastIndex),
  counter('metastore_raft_log_writes_total', 'Raft Readies written to the log (new entries and hard state).', (s) => s.raft.logWrites),
  counter(
    'metastore_raft_duplicate_writes_total',
    'Writes answered with the result of an earlier attempt of the same request.',
    (s) => s.raft.duplicateWrites,
  ),
  counter('metastore_batch_proposals_total', 'Proposals that entered the batch loop.', (s) => s.batch.totalProposals),
  counter('metastore_batch_batches_total', 'Batches the batch loop proposed as Raft entries.', (s) => s.batch.totalBatches),
  counter(
    'metastore_batch_flushes_total',
    'Batches flushed, by what flushed them.',
    (s) => [
      { labels: { reason: 'size' }, value: s.batch.flushesBySize },
      { labels: { reason: 'deadline' }, value: s.batch.flushesByDeadline },
      { labels: { reason: 'idle' }, value: s.batch.flushesByIdle },
      { labels: { reason: 'stop' }, value: s.batch.flushesByStop },
    ],
    ['reason'],
  ),
  gauge('metastore_batch_average_size', 'Mean proposals per batch since start.', (s) => s.batch.avgBatchSize),
  gauge('metastore_batch_target_size', 'The batch size the policy aims at under the current load.', (s) => s.batch.currentBatchSize),
  gauge('metastore_batch_timeout_seconds', 'The flush deadline the policy uses under the current load.', (s) => s.batch.currentTimeoutMs / 1000),
  gauge('metastore_batch_load', 'Load of the batch loop (moving average of buffer usage, 0 to 1).', (s) => s.batch.currentLoad),
  gauge('metastore_batch_buffered_proposals', 'Proposals waiting in the batch buffer.', (s) => s.batch.bufferLen),
  gauge(
    'metastore_batch_latency_seconds',
    'Time from propose to flush of a proposal, at the quantile.',
    (s) => [
      { labels: { quantile: '0.5' }, value: seconds(s.batch.latency.p50Us) },
      { labels: { quantile: '0.9' }, value: seconds(s.batch.latency.p90Us) },
      { labels: { quantile: '0.99' }, value: seconds(s.batch.latency.p99Us) },
      { labels: { quantile: '0.999' }, value: seconds(s.batch.latency.p999Us) },
      { labels: { quantile: '1' }, value: seconds(s.batch.latency.maxUs) },
    ],
    ['quantile'],
  ),
  gauge(
    'metastore_storage_engine',
    'The storage engine of this node: 1 for the one in use.',
    (s) => [{ labels: { engine: s.storage.engine }, value: 1 }],
    ['engine'],
  ),
  gauge('metastore_storage_log_entries', 'Entries in the Raft log kept by the engine.', (s) => s.storage.logEntries),
  gauge('metastore_storage_bytes', 'Approximate bytes the engine holds.', (s) => s.storage.approximateBytes),
  counter('metastore_storage_syncs_total', 'Syncs (fsync) of the write-ahead log.', (s) => s.storage.syncs),
  counter('metastore_storage_sync_seconds_total', 'Wall time spent in syncs of the write-ahead log.', (s) => seconds(s.storage.syncMicros)),
  counter('metastore_transport_messages_sent_total', 'Raft messages sent to other members.', (s) => s.transport?.messagesSent),
  counter('metastore_transport_sent_bytes_total', 'Bytes of Raft messages sent to other members.', (s) => s.transport?.bytesSent),
  counter('metastore_transport_messages_received_total', 'Raft messages received from other members.', (s) => s.transport?.messagesReceived),
  counter('metastore_transport_received_bytes_total', 'Bytes of Raft messages received from other members.', (s) => s.transport?.bytesReceived),
  counter(
    'metastore_transport_messages_dropped_total',
    "Raft messages dropped because a peer's queue was full or it was unreachable (Raft sends them again).",
    (s) => s.transport?.messagesDropped,
  ),
  counter(
    'metastore_transport_refused_streams_total',
    'Incoming streams refused (another cluster or node, no hello, malformed or oversized frames), ' +
      'and connections that ended without a hello (not HTTP/2, a failed TLS handshake, silent).',
    (s) => s.transport?.refused,
  ),
  counter(
    'metastore_transport_snapshots_sent_total',
    'Snapshots that reached another member, each on a stream of its own.',
    (s) => s.transport?.snapshotsSent,
  ),
  counter('metastore_transport_snapshots_received_total', 'Snapshots that arrived from another member.', (s) => s.transport?.snapshotsReceived),
  counter('metastore_transport_connects_total', 'Connections made to other members.', (s) => s.transport?.connects),
  counter('metastore_transport_connect_failures_total', 'Connection attempts to other members that failed.', (s) => s.transport?.connectFailures),
  counter('metastore_client_retries_total', 'Attempts of writes sent again after an unknown or dropped outcome.', (s) => s.client.retries),
  counter(
    'metastore_client_unknown_outcomes_total',
    'Attempts of writes that ended with an unknown outcome.',
    (s) => s.client.unknownOutcomes,
  ),
]

/** The names of every metric `metricsText` can render. */
export const METRIC_NAMES: readonly string[] = FIGURES.map((f) => f.name)

/** Renders one snapshot of node `nodeId`'s stats as Prometheus text (format 0.0.4). */
export async function metricsText(nodeId: number, stats: StoreStats): Promise<string> {
  const registry = new Registry()
  registry.setDefaultLabels({ node_id: String(nodeId) })
  for (const figure of FIGURES) {
    const samples = figure.read(stats)
    if (samples === undefined) continue
    const options = { name: figure.name, help: figure.help, labelNames: figure.labels ?? [], registers: [registry] }
    const metric = figure.kind === 'counter' ? new Counter(options) : new Gauge(options)
    if (typeof samples === 'number') {
      set(metric, {}, samples)
    } else {
      for (const { labels, value } of samples) set(metric, labels, value)
    }
  }
  return registry.metrics()
}

function set(metric: Counter | Gauge, labels: Record<string, string>, value: number): void {
  if (metric instanceof Gauge) metric.set(labels, value)
  else metric.inc(labels, value)
}
