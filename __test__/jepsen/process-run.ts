// One Jepsen-style run over processes: three member processes (RocksDB) that
// reach each other through fault proxies, clients on every member speaking
// its stdin protocol, the process nemesis, and the history checked with
// porcupine. Shared by __test__/multiprocess-jepsen.spec.ts and
// scripts/jepsen.ts (--processes); no vitest here.
import { startProxiedGroup, type GroupSettings, type MemberProcess, type Reply } from '../harness/processes.js'
import { NS_PER_MS, HistoryRecorder, overlapping } from './history.js'
import {
  PROCESS_FAULT_KINDS,
  startProcessNemesis,
  type ProcessFaultKind,
  type ProcessNemesisResult,
} from './process-nemesis.js'
import { drainLoad, examineHistory, summaryLine, type RunOptions, type RunReport } from './phases.js'
import { jepsenConfig } from './run.js'
import { startWorkload, type WorkloadHandle } from './workload.js'

export interface ProcessJepsenOptions extends RunOptions {
  /** A fresh directory for the members' RocksDB data. */
  dataDir: string
  kinds?: readonly ProcessFaultKind[]
  /** How long a partition is held, or a killed member kept down, ms. */
  holdMs?: [number, number]
  /** How long a member stays stopped, ms. */
  pauseMs?: [number, number]
}

/** What the operations did while faults of one kind were in force. */
export interface KindFigures {
  faults: number
  /** Operations whose [call, return] intersects one of its windows. */
  overlapping: number
  /** Of those, the ones that failed. */
  failed: number
}

/** `hung` counts requests that had not settled by the end of the drain. */
export interface ProcessJepsenReport extends RunReport {
  /** Requests in flight when their member was killed (error EXITED): writes among them are unknown. */
  exited: { total: number; writes: number; unknownWrites: number }
  nemesis: ProcessNemesisResult
  byKind: Partial<Record<ProcessFaultKind, KindFigures>>
}

/**
 * The member settings of a run: the in-process run's fast elections, with
 * shorter timeouts: a write on a cut-off member gives up within
 * requestTimeoutMs + proposalTimeoutMs (1.5 s), inside the shortest partition,
 * so clients there see errors instead of only a slow success after healing.
 */
export function processSettings(): Required<GroupSettings> {
  const { raft, storage } = jepsenConfig().server
  return {
    tickIntervalMs: raft.tickIntervalMs,
    proposalTimeoutMs: 500,
    requestTimeoutMs: 1_000,
    snapshotCount: raft.snapshotCount,
    sync: storage.sync,
  }
}

/** A member's stdin protocol as a store handle: a failed reply rejects with its code and outcome. */
function handleOf(member: MemberProcess): WorkloadHandle {
  const call = async (op: 'put' | 'get' | 'delete', key: string, value?: string): Promise<any> => {
    const r: Reply = await member.request(op, key, value)
    if (r.ok) return r.result
    throw Object.assign(new Error(r.message ?? r.code ?? 'failed'), { code: r.code, outcome: r.outcome })
  }
  return {
    put: (key, value) => call('put', String(key), String(value)),
    delete: (key) => call('delete', String(key)),
    get: async (key) => {
      const value = (await call('get', String(key))) as string | null
      return value === null ? undefined : Buffer.from(value)
    },
  }
}

export async function runProcessJepsen(opts: ProcessJepsenOptions): Promise<ProcessJepsenReport> {
  const started = Date.now()
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31)
  const clients = opts.clients ?? 9
  const settings = processSettings()
  const recorder = new HistoryRecorder()
  const { members, proxies } = await startProxiedGroup(3, opts.dataDir, settings)
  let nemesisResult: ProcessNemesisResult
  let hung = 0
  const loadStart = recorder.now()
  const loadMs = opts.seconds * 1000
  try {
    const loadEnd = loadStart + loadMs * NS_PER_MS
    // The last stretch is quiet: the group must serve again once healed.
    const tailMs = Math.min(3_000, loadMs / 5)
    const bound = Array.from({ length: clients }, (_, i) => members[i % members.length]!)
    const workload = startWorkload({
      handles: bound.map(handleOf),
      available: (client) => bound[client]!.running,
      keys: opts.keys ?? 4,
      opsPerKey: opts.opsPerKey ?? 2_000,
      recorder,
      deadline: loadEnd,
      maxOpsPerClient: Math.ceil(opts.seconds * 2_000),
      seed,
    })
    const nemesis = startProcessNemesis({
      members,
      proxies,
      recorder,
      kinds: opts.kinds ?? PROCESS_FAULT_KINDS,
      deadline: loadEnd - tailMs * NS_PER_MS,
      maxFaults: opts.maxFaults ?? Math.max(5, Math.ceil(opts.seconds / 2)),
      seed,
      holdMs: opts.holdMs,
      pauseMs: opts.pauseMs,
      quietMs: opts.quietMs,
      joining: { dataDir: opts.dataDir, settings },
    })
    const drained = await drainLoad(recorder, loadEnd, settings.requestTimeoutMs + settings.proposalTimeoutMs, workload, nemesis)
    nemesisResult = drained.nemesis
    if (!drained.settled) hung = recorder.abandonPending('HUNG')
  } finally {
    await Promise.all(members.map((m) => m.kill('SIGCONT')))
    await Promise.all(members.map((m) => m.kill('SIGKILL')))
    await Promise.all([...proxies.values()].map((p) => p.close()))
  }
  // Anything called and not recorded (there should be none) counts as hung.
  const history = await examineHistory(recorder, nemesisResult.faults, {
    label: 'processes',
    timeoutS: opts.checkTimeoutS ?? 60,
    keep: opts.keep,
  })
  hung += history.abandoned
  const totalMs = Date.now() - started
  const { records } = history
  const exitedRecords = records.filter((r) => r.error === 'EXITED')
  const exited = {
    total: exitedRecords.length,
    writes: exitedRecords.filter((r) => r.op !== 'get').length,
    unknownWrites: exitedRecords.filter((r) => r.op !== 'get' && r.outcome === 'unknown').length,
  }
  const byKind: Partial<Record<ProcessFaultKind, KindFigures>> = {}
  for (const kind of Object.keys(nemesisResult.counts) as ProcessFaultKind[]) {
    const windows = nemesisResult.faults.filter((f) => f.kind === kind)
    byKind[kind] = {
      faults: windows.length,
      overlapping: overlapping(records, windows),
      failed: overlapping(records.filter((r) => !r.ok), windows),
    }
  }
  const kinds = Object.entries(byKind)
    .map(([k, f]) => `${k} ${f.faults} (${f.overlapping} ops, ${f.failed} failed)`)
    .join(', ')
  const summary = summaryLine(
    { label: 'processes', seed, who: `${clients} clients on 3 member processes`, loadMs, totalMs },
    history,
    `in flight at a kill: ${exited.total}; hung ${hung}; faults ${nemesisResult.faults.length}: ${kinds || 'none'}` +
      (nemesisResult.skipped.length ? `; skipped ${nemesisResult.skipped.length}` : '') +
      (nemesisResult.errors.length ? `; nemesis errors: ${nemesisResult.errors.join('; ')}` : ''),
  )
  return {
    seed,
    clients,
    loadMs,
    totalMs,
    ops: history.ops,
    failed: history.failed,
    keys: history.keys,
    exited,
    hung,
    nemesis: nemesisResult,
    overlapping: history.overlapping,
    byKind,
    verdict: history.verdict,
    summary,
  }
}
