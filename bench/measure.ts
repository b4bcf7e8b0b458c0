import { mkdtempSync, rmSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { describeError, runLoad, runSplit, type DriveOptions, type LatencyFigures, type LoadResult, type Progress } from './load.js'
import { cpuTimes } from './machine.js'
import type { LoadSpec, Scenario } from './scenarios.js'
import { startEtcd } from './systems/etcd.js'
import { startMetaStore } from './systems/metastore.js'
import { startProcesses } from './systems/processes.js'
import type { Target, TargetSample } from './systems/target.js'
import type { Workload } from './workload.js'

export interface MeasureOptions {
  durationMs: number
  warmupMs: number
  drainMs: number
  /** Parent of the per-scenario data dirs. */
  tmpRoot: string
  etcdBinary?: string
  workload: Workload
}

/** What the progress display shows while a scenario runs. */
export interface LiveStatus extends Progress {
  phase: 'start' | 'warm-up' | 'measure' | 'stop'
  phaseStartedAt: number
  phaseMs: number
}

/** The figures of one run of one scenario. */
export interface RunFigures {
  /** Acknowledged puts per second in the measured window. */
  throughput: number
  latency: LatencyFigures
  serviceLatency?: LatencyFigures
  meanSendLagMs?: number
  acked: number
  errors: number
  errorSamples: string[]
  unfinished: number
  /** Proposals per Raft entry on the leader during the window (MetaStore only). */
  avgBatchSize?: number
  /** Proposals per log write (one per Raft `Ready`, one fsync when synced) on the leader during the window (MetaStore only). */
  proposalsPerLogWrite?: number
  /** Mean time of the leader's WAL syncs (fsync) during the window, ms (MetaStore on rocksdb with sync). */
  syncMs?: number
  /** The leader's cumulative `stats().batch.avgBatchSize` at the end (includes warm-up). */
  avgBatchSizeCumulative?: number
  /**
   * CPU time per acknowledged put, microseconds: this process (the client,
   * and MetaStore's threads when it runs here) plus the system's own
   * processes (etcd's, or the member processes with their load generators).
   */
  cpuUsPerOp: number
  /** This process's part: the load generator, or for self-driven systems only the coordination. */
  clientCpuUsPerOp: number
  externalCpuUsPerOp: number
  /** CPU cores busy on average during the window (this process plus the system's). */
  cpuCores: number
  /** CPU cores busy on average during the window with work that is neither this process nor the system's (disturbance). */
  othersCpuCores: number
  /**
   * Traffic between the nodes per acknowledged put, summed over the nodes
   * (multi-process MetaStore; etcd 3-node has bytes only, from its metrics).
   */
  transportPerOp?: { messagesSent?: number; bytesSent: number; messagesReceived?: number; bytesReceived: number }
  /** What else happened in the window that bears on its figures (a change of leader). */
  notes?: string[]
  startupMs: number
  /** The system's own view at the end of the window (MetaStore: the leader's stats, with flush reasons). */
  targetStats?: unknown
}

export type RunOutcome = { ok: true; figures: RunFigures } | { ok: false; error: string }

function drive(load: LoadSpec, target: Target, o: MeasureOptions, d: DriveOptions): Promise<LoadResult> {
  if ('drive' in target) return target.drive(load, d)
  const { workload } = o
  const puts = target.memberPuts ?? [target.put]
  return runSplit(load, puts.length, d.seqStart ?? 0, (share, i, seqStart) =>
    runLoad((seq) => puts[i]!(workload.key(seq), workload.value(seq)), share, { ...d, seqStart }),
  )
}

async function startTarget(s: Scenario, dir: string, o: MeasureOptions): Promise<Target> {
  if (s.system.kind === 'metastore') return startMetaStore(s.system, dir)
  if (s.system.kind === 'procs') return startProcesses(s.system, dir)
  if (!o.etcdBinary) throw new Error('etcd is not installed')
  return startEtcd(o.etcdBinary, s.system.nodes, s.system.drivers, dir)
}

/** Cores busy machine-wide between two samples, minus `ours`; NaN without /proc/stat. */
function othersCores(a: ReturnType<typeof cpuTimes>, b: ReturnType<typeof cpuTimes>, ours: number): number {
  if (!a || !b || b.total === a.total) return NaN
  const busyCores = ((b.busy - a.busy) / (b.total - a.total)) * cpus().length
  return Math.max(0, busyCores - ours)
}

/** Resolves when `p` settles or after `ms`, whichever comes first; never rejects. */
async function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  await Promise.race([p.catch(() => undefined), sleep(ms)])
}

/**
 * One run of one scenario on a fresh system in its own data dir: start,
 * warm up (not recorded), measure, stop, remove the data. Never throws: a
 * failure comes back as `{ ok: false, error }` for the report.
 */
export async function measure(s: Scenario, o: MeasureOptions, live: LiveStatus): Promise<RunOutcome> {
  const phase = (name: LiveStatus['phase'], ms: number) => {
    live.phase = name
    live.phaseStartedAt = performance.now()
    live.phaseMs = ms
  }
  live.acked = 0
  live.errors = 0
  const dir = mkdtempSync(join(o.tmpRoot, `${s.id.replaceAll('/', '-')}-`))
  let target: Target | undefined
  try {
    phase('start', 0)
    const t0 = performance.now()
    target = await startTarget(s, dir, o)
    const startupMs = performance.now() - t0

    phase('warm-up', o.warmupMs)
    await drive(s.load, target, o, { durationMs: o.warmupMs, drainMs: o.drainMs, seqStart: 0 })

    phase('measure', o.durationMs)
    const before: TargetSample = await target.sample()
    const cpu0 = process.cpuUsage()
    const machine0 = cpuTimes()
    const wall0 = performance.now()
    const r = await drive(s.load, target, o, { durationMs: o.durationMs, drainMs: o.drainMs, progress: live, seqStart: 1_000_000 })
    const cpu = process.cpuUsage(cpu0)
    const wallUs = (performance.now() - wall0) * 1000
    const machine1 = cpuTimes()
    const after: TargetSample = await target.sample()

    if (r.acked === 0) return { ok: false, error: r.errorSamples[0] ?? 'no put was acknowledged in the window' }
    const clientCpuUs = cpu.user + cpu.system
    const externalCpuUs = Math.max(0, after.externalCpuUs - before.externalCpuUs)
    const perOp = (us: number) => (r.acked > 0 ? us / r.acked : NaN)
    let avgBatchSize: number | undefined
    if (before.batch && after.batch) {
      const batches = after.batch.batches - before.batch.batches
      avgBatchSize = batches > 0 ? (after.batch.proposals - before.batch.proposals) / batches : NaN
    }
    let proposalsPerLogWrite: number | undefined
    let syncMs: number | undefined
    if (before.log && after.log && before.batch && after.batch) {
      const writes = after.log.writes - before.log.writes
      proposalsPerLogWrite = writes > 0 ? (after.batch.proposals - before.batch.proposals) / writes : NaN
      const syncs = after.log.syncs - before.log.syncs
      syncMs = syncs > 0 ? (after.log.syncMicros - before.log.syncMicros) / syncs / 1000 : undefined
    }
    let transportPerOp: RunFigures['transportPerOp']
    const net0 = before.transport
    const net1 = after.transport
    if (net0 && net1) {
      const counted = (a?: number, b?: number) => (a === undefined || b === undefined ? undefined : perOp(b - a))
      transportPerOp = {
        messagesSent: counted(net0.messagesSent, net1.messagesSent),
        bytesSent: perOp(net1.bytesSent - net0.bytesSent),
        messagesReceived: counted(net0.messagesReceived, net1.messagesReceived),
        bytesReceived: perOp(net1.bytesReceived - net0.bytesReceived),
      }
    }
    const notes: string[] = []
    if (before.leaderId !== after.leaderId) {
      notes.push(`the leader changed during the window (node ${before.leaderId ?? 'none'} before, ${after.leaderId ?? 'none'} after)`)
    }
    return {
      ok: true,
      figures: {
        throughput: r.throughput,
        latency: r.latency,
        serviceLatency: r.serviceLatency,
        meanSendLagMs: r.meanSendLagMs,
        acked: r.acked,
        errors: r.errors,
        errorSamples: r.errorSamples,
        unfinished: r.unfinished,
        avgBatchSize,
        proposalsPerLogWrite,
        syncMs,
        avgBatchSizeCumulative: after.batch?.avgBatchSize,
        cpuUsPerOp: perOp(clientCpuUs + externalCpuUs),
        clientCpuUsPerOp: perOp(clientCpuUs),
        externalCpuUsPerOp: perOp(externalCpuUs),
        cpuCores: (clientCpuUs + externalCpuUs) / wallUs,
        othersCpuCores: othersCores(machine0, machine1, (clientCpuUs + externalCpuUs) / wallUs),
        ...(transportPerOp && { transportPerOp }),
        ...(notes.length > 0 && { notes }),
        startupMs,
        targetStats: after.detail,
      },
    }
  } catch (err) {
    return { ok: false, error: describeError(err) }
  } finally {
    phase('stop', 0)
    if (target) await bounded(target.close(), 15_000)
    rmSync(dir, { recursive: true, force: true })
  }
}
