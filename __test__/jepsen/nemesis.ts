// The nemesis of a Jepsen-style run: in a bounded loop, applies one fault at a
// time to a 3-node LocalCluster, holds it, heals it, and rests. It records
// each fault it actually applied with its window on the history's clock.
import { setTimeout as sleep } from 'node:timers/promises'

import type { LocalCluster } from '../../ts/index.js'
import type { FaultWindow, HistoryRecorder } from './history.js'
import { Random } from './random.js'

/**
 * - `stop-restart`: stop a node (any, the leader included), restart it.
 *   RocksDB only: a memory node restarts empty, and a node that lost its state
 *   must not rejoin as a voter.
 * - `isolate`: cut every link of a node, then heal them.
 * - `isolate-leader`: the same, on the node that leads now.
 * - `cut-link`: cut the link between two nodes, then heal it.
 * - `delay-link`: hold the leader's messages to one follower, then deliver
 *   them in order (a slow one-way link): the follower's writes commit
 *   without it hearing so, time out, and are sent again.
 */
export type FaultKind = 'stop-restart' | 'isolate' | 'isolate-leader' | 'cut-link' | 'delay-link'

export const FAULT_KINDS: readonly FaultKind[] = ['stop-restart', 'isolate', 'isolate-leader', 'cut-link', 'delay-link']

export interface Fault extends FaultWindow {
  kind: FaultKind
  nodes: number[]
}

export interface NemesisOptions {
  cluster: LocalCluster
  recorder: HistoryRecorder
  kinds: readonly FaultKind[]
  /** No fault starts after this time (recorder clock, ns); a held fault is healed by then. */
  deadline: number
  maxFaults: number
  seed: number
  /** How long a fault is held, ms. */
  holdMs?: [number, number]
  /** Rest between faults, ms. */
  quietMs?: [number, number]
}

export interface NemesisResult {
  faults: Fault[]
  /** Faults applied, by kind. */
  counts: Partial<Record<FaultKind, number>>
  /** Faults not applied, with why (no leader known, ...). */
  skipped: string[]
  /** Healing that failed (a node that would not restart, ...): the group may be left degraded. */
  errors: string[]
}

export interface Nemesis {
  readonly done: Promise<NemesisResult>
  /** Ends the loop early; the fault in force is still healed. */
  stop(): void
}

const NS_PER_MS = 1_000_000

export function startNemesis(opts: NemesisOptions): Nemesis {
  const { cluster, recorder } = opts
  if (opts.kinds.length === 0) throw new RangeError('the nemesis needs at least one fault kind')
  const rng = new Random(opts.seed * 104729 + 1)
  const [holdMin, holdMax] = opts.holdMs ?? [300, 2_000]
  const [quietMin, quietMax] = opts.quietMs ?? [200, 500]
  const ids = cluster.ids()
  const result: NemesisResult = { faults: [], counts: {}, skipped: [], errors: [] }
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

  const timeLeft = (): boolean => !stopped && recorder.now() < opts.deadline

  const leaderId = async (): Promise<number | undefined> => {
    try {
      return (await cluster.leader(2_000)).nodeId
    } catch {
      return undefined
    }
  }

  /** Restarts `id`, a bounded number of times; false when it would not come back. */
  const restart = async (id: number): Promise<boolean> => {
    let last: unknown
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        cluster.restart(id)
        return true
      } catch (err) {
        last = err
        await sleep(200)
      }
    }
    result.errors.push(`restart of node ${id} failed: ${(last as Error)?.message ?? String(last)}`)
    return false
  }

  const isolate = (id: number): (() => void) => {
    const others = ids.filter((o) => o !== id)
    for (const o of others) cluster.cut(id, o)
    return () => {
      for (const o of others) cluster.heal(id, o)
    }
  }

  /** Applies a fault of `kind`; returns its nodes, when it took force and how to heal it, or why it was not applied. */
  const apply = async (kind: FaultKind): Promise<{ nodes: number[]; start: number; heal: () => Promise<void> } | string> => {
    switch (kind) {
      case 'stop-restart': {
        const running = ids.filter((id) => cluster.isRunning(id))
        if (running.length < ids.length) return 'a node is down'
        const id = rng.pick(ids)
        const start = recorder.now()
        try {
          cluster.stop(id)
        } catch (err) {
          return `stop of node ${id} failed: ${(err as Error).message}`
        }
        return { nodes: [id], start, heal: async () => void (await restart(id)) }
      }
      case 'isolate': {
        const id = rng.pick(ids)
        const start = recorder.now()
        const heal = isolate(id)
        return { nodes: [id], start, heal: async () => heal() }
      }
      case 'isolate-leader': {
        const id = await leaderId()
        if (id === undefined) return 'no leader known'
        const start = recorder.now()
        const heal = isolate(id)
        return { nodes: [id], start, heal: async () => heal() }
      }
      case 'cut-link': {
        const [a, b] = rng.shuffle(ids)
        const start = recorder.now()
        cluster.cut(a, b)
        return { nodes: [a, b], start, heal: async () => cluster.heal(a, b) }
      }
      case 'delay-link': {
        const leader = await leaderId()
        if (leader === undefined) return 'no leader known'
        const follower = rng.pick(ids.filter((id) => id !== leader))
        const start = recorder.now()
        cluster.hold(leader, follower)
        return { nodes: [leader, follower], start, heal: async () => cluster.release(leader, follower) }
      }
    }
  }

  const loop = async (): Promise<NemesisResult> => {
    // Every kind comes up once per round, in a shuffled order.
    let round: FaultKind[] = []
    for (let i = 0; i < opts.maxFaults * 4 && result.faults.length < opts.maxFaults; i++) {
      await rest(rng.int(quietMin, quietMax))
      // A fault starts only if it can be held for the shortest hold.
      if (!timeLeft() || opts.deadline - recorder.now() < holdMin * NS_PER_MS) break
      if (round.length === 0) round = rng.shuffle(opts.kinds)
      const kind = round.shift()!
      const applied = await apply(kind)
      if (typeof applied === 'string') {
        result.skipped.push(`${kind}: ${applied}`)
        continue
      }
      try {
        await rest(rng.int(holdMin, holdMax))
      } finally {
        await applied.heal()
      }
      result.faults.push({ kind, nodes: applied.nodes, start: applied.start, end: recorder.now() })
      result.counts[kind] = (result.counts[kind] ?? 0) + 1
    }
    return result
  }

  /** Whatever happened, leaves every link healed and every node it stopped running again. */
  const healAll = async (): Promise<void> => {
    for (const a of ids) for (const b of ids) if (a < b) cluster.heal(a, b)
    for (const a of ids) for (const b of ids) if (a !== b) cluster.release(a, b)
    if (!opts.kinds.includes('stop-restart')) return
    for (const id of ids) if (!cluster.isRunning(id)) await restart(id)
  }

  const done = loop().then(
    async (r) => (await healAll(), r),
    async (err: unknown) => {
      await healAll()
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
