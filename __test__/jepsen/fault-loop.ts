// The loop of a nemesis, whatever its faults act on (nemesis.ts: a
// LocalCluster; process-nemesis.ts: member processes and their proxies): rest,
// apply one fault, hold it, heal it, record its window on the history's clock.
// Bounded in count and by a deadline; whatever happens, everything is healed
// at the end.
import { setTimeout as sleep } from 'node:timers/promises'

import { NS_PER_MS, type FaultWindow, type HistoryRecorder } from './history.js'
import type { Random } from './random.js'

/** What every nemesis is given, whatever its faults act on. */
export interface NemesisSchedule<K extends string> {
  recorder: HistoryRecorder
  kinds: readonly K[]
  /** No fault starts after this time (recorder clock, ns); a held fault is healed by then. */
  deadline: number
  maxFaults: number
  seed: number
  /** Rest between faults, ms. */
  quietMs?: [number, number]
}

/** A fault held and healed: its kind, the nodes it acted on, and its window. */
export interface FaultRecord<K extends string> extends FaultWindow {
  kind: K
  nodes: number[]
}

/** A fault in force. */
export interface AppliedFault {
  nodes: number[]
  /** When it took force (recorder clock, ns). */
  start: number
  /** Runs while the fault is held; resolves by the end of the hold (`untilMs` on Date.now()'s clock). */
  watch?: (untilMs: number) => Promise<void>
  heal: () => Promise<void>
}

export interface FaultLoopResult<K extends string, F extends FaultRecord<K>> {
  faults: F[]
  /** Faults applied, by kind. */
  counts: Partial<Record<K, number>>
  /** Faults not applied, with why (no leader known, ...). */
  skipped: string[]
  /** A fault that did not show, or healing that failed: the run proves less than it should, the group may be left degraded. */
  errors: string[]
}

export interface FaultLoop<R> {
  readonly done: Promise<R>
  /** Ends the loop early; the fault in force is still healed. */
  stop(): void
}

export interface FaultLoopOptions<K extends string, A extends AppliedFault, F extends FaultRecord<K>>
  extends Omit<NemesisSchedule<K>, 'seed'> {
  /** Draws the rests, the order of the kinds and the holds. */
  rng: Random
  /** A fault starts only if it can be held this long before the deadline, ms. */
  minHoldMs: number
  /** How long a fault of `kind` is held, ms. */
  holdMs: (kind: K) => number
  /** Applies a fault of `kind`; returns it, or why it was not applied. */
  apply: (kind: K) => Promise<A | string>
  /** A kind that could not be applied goes to the end of the round; otherwise it waits for the next round. */
  retrySkipped: boolean
  /** The record of a fault held and healed at `end`. */
  record: (kind: K, applied: A, end: number) => F
  /** Leaves every fault healed; runs once the loop is over, however it ended. */
  healAll: () => Promise<void>
  /** Where applying and healing note what went wrong; the result's `errors`. */
  errors: string[]
}

export function startFaultLoop<K extends string, A extends AppliedFault, F extends FaultRecord<K>>(
  opts: FaultLoopOptions<K, A, F>,
): FaultLoop<FaultLoopResult<K, F>> {
  const { recorder, rng } = opts
  if (opts.kinds.length === 0) throw new RangeError('the nemesis needs at least one fault kind')
  const [quietMin, quietMax] = opts.quietMs ?? [200, 500]
  const result: FaultLoopResult<K, F> = { faults: [], counts: {}, skipped: [], errors: opts.errors }
  let stopped = false
  let wake: (() => void) | undefined

  /** Sleeps `ms`, but not past the deadline nor past `stop()`. */
  const rest = async (ms: number): Promise<void> => {
    const left = Math.min(ms, (opts.deadline - recorder.now()) / NS_PER_MS)
    if (left <= 0 || stopped) return
    const ac = new AbortController()
    wake = () => ac.abort()
    await sleep(left, undefined, { signal: ac.signal }).catch(() => undefined)
    wake = undefined
  }

  const loop = async (): Promise<FaultLoopResult<K, F>> => {
    // Every kind comes up once per round, in a shuffled order.
    let round: K[] = []
    for (let i = 0; i < opts.maxFaults * 4 && result.faults.length < opts.maxFaults; i++) {
      await rest(rng.int(quietMin, quietMax))
      // A fault starts only if it can be held for the shortest hold.
      const left = opts.deadline - recorder.now()
      if (stopped || left <= 0 || left < opts.minHoldMs * NS_PER_MS) break
      if (round.length === 0) round = rng.shuffle(opts.kinds)
      const kind = round.shift()!
      const applied = await opts.apply(kind)
      if (typeof applied === 'string') {
        result.skipped.push(`${kind}: ${applied}`)
        if (opts.retrySkipped) round.push(kind)
        continue
      }
      const holdMs = opts.holdMs(kind)
      try {
        await Promise.all([rest(holdMs), applied.watch?.(Date.now() + holdMs)])
      } finally {
        await applied.heal()
      }
      result.faults.push(opts.record(kind, applied, recorder.now()))
      result.counts[kind] = (result.counts[kind] ?? 0) + 1
    }
    return result
  }

  const done = loop().then(
    async (r) => (await opts.healAll(), r),
    async (err: unknown) => {
      await opts.healAll()
      throw err
    },
  )
  return {
    done,
    stop() {
      stopped = true
      wake?.()
    },
  }
}

/**
 * Runs `step` (a restart, ...) up to `attempts` times, 200 ms apart; false,
 * with the last error noted in `errors` as `${what} failed: ...`, when it never
 * succeeded.
 */
export async function retried(what: string, attempts: number, step: () => unknown, errors: string[]): Promise<boolean> {
  let last: unknown
  for (let attempt = 0; attempt < attempts; attempt++) {
    try {
      await step()
      return true
    } catch (err) {
      last = err
      await sleep(200)
    }
  }
  errors.push(`${what} failed: ${(last as Error)?.message ?? String(last)}`)
  return false
}
