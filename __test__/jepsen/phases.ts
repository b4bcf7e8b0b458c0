// The phases of a Jepsen-style run, whatever runs the nodes (run.ts: a
// LocalCluster in this process; process-run.ts: member processes): load under
// the nemesis, the drain of the operations in flight, and the examination of
// the history once the nodes are gone. No vitest here.
import { NS_PER_MS, overlapping, tally, type FaultWindow, type HistoryRecorder, type OpRecord, type Tally } from './history.js'
import { checkHistory, type CheckOptions, type Verdict } from './lincheck.js'
import type { Workload } from './workload.js'

/** What both runs are told. */
export interface RunOptions {
  /** Seconds of load. */
  seconds: number
  /** Clients, bound to nodes 1, 2, 3, 1, ... */
  clients?: number
  /** Keys the clients share at a time. */
  keys?: number
  /** Operations on a key before the clients move to fresh keys (bounds porcupine's memory). */
  opsPerKey?: number
  /** Faults, at most. */
  maxFaults?: number
  seed?: number
  /** Rest between faults, ms. */
  quietMs?: [number, number]
  /** Seconds each of the two checks may take. */
  checkTimeoutS?: number
  /** Keep the history even when it is linearizable. */
  keep?: boolean
}

/** What both runs report. */
export interface RunReport extends Tally {
  seed: number
  clients: number
  loadMs: number
  totalMs: number
  /** Keys used in all (fresh keys every so many operations). */
  keys: number
  /** Requests that had not settled by the end of the run (recorded as unknown). */
  hung: number
  /** Operations whose [call, return] intersects a fault window. */
  overlapping: number
  verdict: Verdict
  /** A one-line summary. */
  summary: string
}

/** Resolves true if `p` settles within `ms`; the timer never keeps the process alive. */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
    timer.unref()
  })
  return Promise.race([p.then(() => true, () => true), timeout]).finally(() => clearTimeout(timer))
}

/**
 * Waits for the nemesis to finish (stopping the workload if it fails), then
 * for the operations in flight at `loadEnd` to finish, or fail by their own
 * timeout: `requestMs` after the deadline, and 2 s more. When they do not
 * settle, the workload is stopped and `settled` is false.
 */
export async function drainLoad<R>(
  recorder: HistoryRecorder,
  loadEnd: number,
  requestMs: number,
  workload: Workload,
  nemesis: { readonly done: Promise<R> },
): Promise<{ nemesis: R; settled: boolean }> {
  let result: R
  try {
    result = await nemesis.done
  } catch (err) {
    workload.stop()
    throw err
  }
  const drainMs = (loadEnd - recorder.now()) / NS_PER_MS + requestMs + 2_000
  const settled = await settlesWithin(workload.done, drainMs)
  if (!settled) workload.stop()
  return { nemesis: result, settled }
}

/** What the history of a finished run shows. */
export interface HistoryFigures extends Tally {
  records: readonly OpRecord[]
  /** Operations called and never recorded (there should be none), now recorded as hung. */
  abandoned: number
  /** Keys used in all. */
  keys: number
  overlapping: number
  verdict: Verdict
}

/** Once the nodes are gone: the history's figures, and porcupine's verdict on it. */
export async function examineHistory(recorder: HistoryRecorder, faults: readonly FaultWindow[], check: CheckOptions): Promise<HistoryFigures> {
  const abandoned = recorder.abandonPending('HUNG')
  const records = recorder.records()
  const keys = new Set(records.map((r) => r.key)).size
  const { ops, failed } = tally(records)
  const overlap = overlapping(records, faults)
  const verdict = await checkHistory(recorder, check)
  return { records, abandoned, keys, ops, failed, overlapping: overlap, verdict }
}

/**
 * The one-line summary of a run: `who` ran how long, what the operations did,
 * then `details` (the run's own figures), the overlap and the verdict.
 */
export function summaryLine(
  r: { label: string; seed: number; who: string; loadMs: number; totalMs: number },
  h: HistoryFigures,
  details: string,
): string {
  const { ops, failed } = h
  const errors = Object.entries(failed.byError)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ')
  return (
    `jepsen ${r.label} seed ${r.seed}: ${r.who}, ${(r.loadMs / 1000).toFixed(1)} s load, ${(r.totalMs / 1000).toFixed(1)} s total; ` +
    `${ops.total} ops (${ops.ok} ok; put ${ops.put}, get ${ops.get}, delete ${ops.delete}) on ${h.keys} keys; ` +
    `failed: ${failed.unknownWrites} unknown writes, ${failed.notAppliedWrites} not-applied writes, ${failed.reads} reads` +
    (errors ? ` [${errors}]` : '') +
    `; ${details}; ${h.overlapping} ops overlapped faults; ${h.verdict.message}`
  )
}
