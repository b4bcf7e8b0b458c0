import type { LatencyFigures } from './load.js'
import type { MachineInfo } from './machine.js'
import type { RunFigures, RunOutcome } from './measure.js'
import { referenceSystem, type LoadSpec, type Scenario, type SystemSpec } from './scenarios.js'

/** Medians over the runs that succeeded. */
export interface MedianFigures {
  throughput: number
  p50Ms: number
  p99Ms: number
  p999Ms: number
  avgBatchSize?: number
  /** Proposals per leader log write (`Ready`), MetaStore only. */
  proposalsPerLogWrite?: number
  /** Mean fsync time of the leader's WAL syncs, ms (rocksdb with sync). */
  syncMs?: number
  cpuUsPerOp: number
  /** The part of `cpuUsPerOp` spent in this process; for etcd, the etcd3 client. */
  clientCpuUsPerOp: number
  /** Bytes the nodes sent each other per put, summed over the nodes (multi-process MetaStore, etcd 3-node). */
  sentBytesPerOp?: number
  /** Raft messages the nodes sent each other per put, summed over the nodes (multi-process MetaStore). */
  sentMessagesPerOp?: number
  okRuns: number
  /** Failed puts, summed over all runs. */
  errors: number
}

export interface ScenarioReport {
  id: string
  system: SystemSpec
  load: LoadSpec
  /** Why the scenario did not run (etcd not installed, native addon not built). */
  skipped?: string
  runs: RunOutcome[]
  median?: MedianFigures
  /** This scenario over etcd 3-node at the same load, from the same run. */
  vsEtcd3?: { throughput: number; p50: number }
}

export interface TargetCheck {
  target: string
  goal: string
  measured: string
  /** null: not measured in this run. */
  met: boolean | null
}

export interface Report {
  schema: 1
  date: string
  quick: boolean
  command: string
  options: { runs: number; durationMs: number; warmupMs: number; drainMs: number; scenarios?: string }
  machine: MachineInfo
  etcd: { available: boolean; binary?: string; version?: string; note?: string; args?: Record<string, string[][]> }
  workload: { keyBytes: number; valueBytes: number; keySpace: number; nodes: number }
  /** The MetaStore config the scenarios started from (batch and sync set per scenario). */
  metastoreConfig?: unknown
  scenarios: ScenarioReport[]
  targets: TargetCheck[]
  notes: string[]
}

export function median(values: number[]): number {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (xs.length === 0) return NaN
  const mid = xs.length >> 1
  return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2
}

function medianOf(runs: RunOutcome[]): MedianFigures | undefined {
  const ok = runs.filter((r): r is { ok: true; figures: RunFigures } => r.ok).map((r) => r.figures)
  if (ok.length === 0) return undefined
  const m = (f: (x: RunFigures) => number | undefined) => median(ok.map((x) => f(x) ?? NaN))
  const lat = (f: (l: LatencyFigures) => number) => m((x) => f(x.latency))
  const batch = m((x) => x.avgBatchSize)
  const perWrite = m((x) => x.proposalsPerLogWrite)
  const sync = m((x) => x.syncMs)
  const sentBytes = m((x) => x.transportPerOp?.bytesSent)
  const sentMessages = m((x) => x.transportPerOp?.messagesSent)
  return {
    throughput: m((x) => x.throughput),
    p50Ms: lat((l) => l.p50Ms),
    p99Ms: lat((l) => l.p99Ms),
    p999Ms: lat((l) => l.p999Ms),
    ...(Number.isFinite(batch) && { avgBatchSize: batch }),
    ...(Number.isFinite(perWrite) && { proposalsPerLogWrite: perWrite }),
    ...(Number.isFinite(sync) && { syncMs: sync }),
    cpuUsPerOp: m((x) => x.cpuUsPerOp),
    clientCpuUsPerOp: m((x) => x.clientCpuUsPerOp),
    ...(Number.isFinite(sentBytes) && { sentBytesPerOp: sentBytes }),
    ...(Number.isFinite(sentMessages) && { sentMessagesPerOp: sentMessages }),
    okRuns: ok.length,
    errors: ok.reduce((sum, x) => sum + x.errors, 0),
  }
}

/** Fills in medians and ratios to etcd 3-node at the same load, in the same shape (`referenceSystem`). */
export function summarize(scenarios: ScenarioReport[]): void {
  for (const s of scenarios) s.median = medianOf(s.runs)
  for (const s of scenarios) {
    const reference = referenceSystem(s.system)
    const ref = scenarios.find((r) => r.system.id === reference && r.load.id === s.load.id)?.median
    if (!s.median || !ref) continue
    s.vsEtcd3 = { throughput: s.median.throughput / ref.throughput, p50: s.median.p50Ms / ref.p50Ms }
  }
}

export const fmt = {
  rate: (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–'),
  ms: (x: number) => (!Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)),
  ratio: (x: number | undefined) =>
    x === undefined || !Number.isFinite(x) ? '–' : `${x >= 10 ? x.toFixed(0) : x >= 0.1 ? x.toFixed(2) : x.toPrecision(1)}×`,
  num: (x: number | undefined, digits = 1) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits)),
}

/** The performance targets, checked against this run's medians (null when a figure is missing). */
export function checkTargets(scenarios: ScenarioReport[]): TargetCheck[] {
  const get = (id: string) => scenarios.find((s) => s.id === id)?.median
  const checks: TargetCheck[] = []
  const add = (target: string, goal: string, value: number | undefined, measured: (v: number) => string, met: (v: number) => boolean) => {
    const known = value !== undefined && Number.isFinite(value)
    checks.push({ target, goal, measured: known ? measured(value) : 'not measured', met: known ? met(value) : null })
  }
  add('memory, high load, batch on', '≥ 200,000 puts/s', get('memory/batch-on/high')?.throughput, (v) => `${fmt.rate(v)} puts/s`, (v) => v >= 200_000)
  add('rocksdb (sync), high load, batch on', '≥ 100,000 puts/s', get('rocksdb/batch-on/high')?.throughput, (v) => `${fmt.rate(v)} puts/s`, (v) => v >= 100_000)
  for (const engine of ['memory', 'rocksdb']) {
    const on = get(`${engine}/batch-on/high`)?.throughput
    const off = get(`${engine}/batch-off/high`)?.throughput
    add(`${engine}: batching gain at high load`, 'batch on ≥ 10× batch off', on !== undefined && off ? on / off : undefined, (v) => `${fmt.ratio(v)} (${fmt.rate(on!)} vs ${fmt.rate(off!)})`, (v) => v >= 10)
  }
  for (const engine of ['memory', 'rocksdb']) {
    const on = get(`${engine}/batch-on/low`)?.p50Ms
    const off = get(`${engine}/batch-off/low`)?.p50Ms
    add(`${engine}: p50 at 500/s, batch on vs off`, '≤ 1.2×', on !== undefined && off ? on / off : undefined, (v) => `${fmt.ratio(v)} (${fmt.ms(on!)} vs ${fmt.ms(off!)} ms)`, (v) => v <= 1.2)
  }
  add('rocksdb (sync), batch on: p50 at 500/s', '≤ 2 ms', get('rocksdb/batch-on/low')?.p50Ms, (v) => `${fmt.ms(v)} ms`, (v) => v <= 2)
  for (const engine of ['memory', 'rocksdb']) {
    const t = scenarios.find((s) => s.id === `${engine}/batch-on/c256`)?.vsEtcd3?.throughput
    add(`${engine}, batch on: puts/s at 256 in flight vs etcd 3-node`, '≥ 30×', t, (v) => fmt.ratio(v), (v) => v >= 30)
  }
  for (const engine of ['memory', 'rocksdb']) {
    const p = scenarios.find((s) => s.id === `${engine}/batch-on/c1`)?.vsEtcd3?.p50
    add(`${engine}, batch on: p50 at 1 in flight vs etcd 3-node`, '≤ 0.33×', p, (v) => fmt.ratio(v), (v) => v <= 1 / 3)
  }
  for (const [drivers, where] of [['leader', 'in the leader'], ['spread', 'in all three']]) {
    const c256 = scenarios.find((s) => s.id === `procs/${drivers}/c256`)?.vsEtcd3?.throughput
    add(`3 processes, load ${where}: puts/s at 256 in flight vs etcd 3-node`, '≥ 20×', c256, (v) => fmt.ratio(v), (v) => v >= 20)
    const c1 = scenarios.find((s) => s.id === `procs/${drivers}/c1`)?.vsEtcd3?.p50
    add(`3 processes, load ${where}: p50 at 1 in flight vs etcd 3-node`, '≤ 0.5×', c1, (v) => fmt.ratio(v), (v) => v <= 0.5)
  }
  checks.push({
    target: 'codec vs the legacy JSON batch encoding (100-byte proposals)',
    goal: '≥ 10× faster',
    measured: 'see `cargo bench -p metastore-batch` and `npx vitest bench --run bench/codec.bench.ts`',
    met: null,
  })
  return checks
}

export function newScenarioReport(s: Scenario, skipped?: string): ScenarioReport {
  return { id: s.id, system: s.system, load: s.load, ...(skipped !== undefined && { skipped }), runs: [] }
}
