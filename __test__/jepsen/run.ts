// One Jepsen-style run: a 3-node LocalCluster, clients bound to every node
// under a nemesis, the history checked for linearizability with porcupine.
// Shared by __test__/jepsen.spec.ts and scripts/jepsen.ts; no vitest here.
import { defaultConfig, LocalCluster, type Engine, type MetaStoreConfig } from '../../ts/index.js'
import { NS_PER_MS, HistoryRecorder } from './history.js'
import { FAULT_KINDS, startNemesis, type FaultKind, type NemesisResult } from './nemesis.js'
import { drainLoad, examineHistory, settlesWithin, summaryLine, type RunOptions, type RunReport } from './phases.js'
import { startWorkload } from './workload.js'

export interface JepsenOptions extends RunOptions {
  engine: Engine
  /** RocksDB data dir (a fresh one per run). */
  dataDir?: string
  /** Operations per client, at most. */
  maxOpsPerClient?: number
  /** Default: every kind the engine allows (no stop-restart on memory). */
  kinds?: readonly FaultKind[]
  /** How long the nemesis holds a fault, ms (default 300-2000: some heal before a request times out, some after). */
  holdMs?: [number, number]
  /** Adjusts the run's config. */
  config?: (c: MetaStoreConfig) => void
}

/** `hung` counts requests that had not settled a while after the cluster closed. */
export interface JepsenReport extends RunReport {
  engine: Engine
  /** Attempts whose outcome was unknown, the retries they caused, and the duplicates the nodes answered. */
  client: ClientFigures
  nemesis: NemesisResult
}

/** The kinds a run may use on `engine`: a memory node is never restarted. */
export function faultKinds(engine: Engine): FaultKind[] {
  return FAULT_KINDS.filter((k) => engine === 'rocksdb' || k !== 'stop-restart')
}

/** Fast elections and short proposal timeouts, so that faults show in a short run. */
export function jepsenConfig(patch: (c: MetaStoreConfig) => void = () => {}): MetaStoreConfig {
  const config = defaultConfig()
  config.server.raft.tickIntervalMs = 10
  config.server.raft.proposalTimeoutMs = 1_000
  config.server.raft.requestTimeoutMs = 3_000
  // Compact now and then, so that a node that was away may catch up by snapshot.
  config.server.raft.snapshotCount = 2_000
  config.server.storage.sync = false
  patch(config)
  return config
}

/** What the clients' retries did (see `StoreStats.client`), and the duplicates the running nodes answered. */
export interface ClientFigures {
  retries: number
  unknownOutcomes: number
  /** Summed over the nodes running at the end (a restart resets a node's count). */
  duplicateWrites: number
}

function clientFigures(cluster: LocalCluster): ClientFigures {
  const figures: ClientFigures = { retries: 0, unknownOutcomes: 0, duplicateWrites: 0 }
  for (const id of cluster.ids()) {
    if (!cluster.isRunning(id)) continue
    const stats = cluster.node(id).stats()
    figures.retries = stats.client.retries
    figures.unknownOutcomes = stats.client.unknownOutcomes
    figures.duplicateWrites += stats.raft.duplicateWrites
  }
  return figures
}

export async function runJepsen(opts: JepsenOptions): Promise<JepsenReport> {
  const started = Date.now()
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31)
  const clients = opts.clients ?? 9
  const config = jepsenConfig(opts.config)
  const recorder = new HistoryRecorder()
  const cluster = await LocalCluster.start({ nodes: 3, engine: opts.engine, dataDir: opts.dataDir, config })
  let nemesisResult: NemesisResult
  let client: ClientFigures = { retries: 0, unknownOutcomes: 0, duplicateWrites: 0 }
  let hung = 0
  const loadStart = recorder.now()
  const loadMs = opts.seconds * 1000
  try {
    const ids = cluster.ids()
    const loadEnd = loadStart + loadMs * NS_PER_MS
    // The last stretch is quiet: the group must serve again once healed.
    const tailMs = Math.min(2_000, loadMs / 5)
    const workload = startWorkload({
      handles: Array.from({ length: clients }, (_, i) => cluster.node(ids[i % ids.length])),
      keys: opts.keys ?? 4,
      opsPerKey: opts.opsPerKey,
      recorder,
      deadline: loadEnd,
      maxOpsPerClient: opts.maxOpsPerClient ?? Math.ceil(opts.seconds * 2_000),
      seed,
    })
    const nemesis = startNemesis({
      cluster,
      recorder,
      kinds: opts.kinds ?? faultKinds(opts.engine),
      deadline: loadEnd - tailMs * NS_PER_MS,
      maxFaults: opts.maxFaults ?? Math.max(4, Math.ceil(opts.seconds)),
      seed,
      holdMs: opts.holdMs,
      quietMs: opts.quietMs,
    })
    const { raft } = config.server
    const drained = await drainLoad(recorder, loadEnd, raft.requestTimeoutMs + raft.proposalTimeoutMs, workload, nemesis)
    nemesisResult = drained.nemesis
    if (!drained.settled) {
      // Still pending: closing the cluster rejects them (ERR_CLOSED), recorded as they come.
      await cluster.close()
      if (!(await settlesWithin(workload.done, 10_000))) hung = recorder.abandonPending('HUNG')
    }
  } finally {
    client = clientFigures(cluster)
    await cluster.close()
  }
  // Anything called and not recorded (there should be none) counts as hung.
  const history = await examineHistory(recorder, nemesisResult.faults, {
    label: opts.engine,
    timeoutS: opts.checkTimeoutS ?? 60,
    keep: opts.keep,
  })
  hung += history.abandoned
  const totalMs = Date.now() - started
  const kinds = Object.entries(nemesisResult.counts)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ')
  const summary = summaryLine(
    { label: opts.engine, seed, who: `${clients} clients`, loadMs, totalMs },
    history,
    `attempts: ${client.unknownOutcomes} unknown, ${client.retries} sent again, ${client.duplicateWrites} answered as duplicates` +
      `; hung ${hung}; faults ${nemesisResult.faults.length} (${kinds || 'none'})` +
      (nemesisResult.skipped.length ? `, skipped ${nemesisResult.skipped.length}` : '') +
      (nemesisResult.errors.length ? `, nemesis errors: ${nemesisResult.errors.join('; ')}` : ''),
  )
  return {
    engine: opts.engine,
    seed,
    clients,
    loadMs,
    totalMs,
    ops: history.ops,
    keys: history.keys,
    failed: history.failed,
    client,
    hung,
    nemesis: nemesisResult,
    overlapping: history.overlapping,
    verdict: history.verdict,
    summary,
  }
}
