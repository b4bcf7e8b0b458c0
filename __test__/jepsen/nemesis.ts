// The nemesis of a Jepsen-style run: in a bounded loop, applies one fault at a
// time to a 3-node LocalCluster, holds it, heals it, and rests. It records
// each fault it actually applied with its window on the history's clock.
import type { LocalCluster } from '../../ts/index.js'
import {
  retried,
  startFaultLoop,
  type AppliedFault,
  type FaultLoop,
  type FaultLoopResult,
  type FaultRecord,
  type NemesisSchedule,
} from './fault-loop.js'
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

export type Fault = FaultRecord<FaultKind>

export interface NemesisOptions extends NemesisSchedule<FaultKind> {
  cluster: LocalCluster
  /** How long a fault is held, ms. */
  holdMs?: [number, number]
}

/** Faults not applied (no leader known, ...) wait for the next round. */
export type NemesisResult = FaultLoopResult<FaultKind, Fault>

export type Nemesis = FaultLoop<NemesisResult>

export function startNemesis(opts: NemesisOptions): Nemesis {
  const { cluster, recorder } = opts
  const rng = new Random(opts.seed * 104729 + 1)
  const [holdMin, holdMax] = opts.holdMs ?? [300, 2_000]
  const ids = cluster.ids()
  const errors: string[] = []

  const leaderId = async (): Promise<number | undefined> => {
    try {
      return (await cluster.leader(2_000)).nodeId
    } catch {
      return undefined
    }
  }

  /** Restarts `id`, a bounded number of times; false when it would not come back. */
  const restart = (id: number): Promise<boolean> => retried(`restart of node ${id}`, 10, () => cluster.restart(id), errors)

  const isolate = (id: number): (() => void) => {
    const others = ids.filter((o) => o !== id)
    for (const o of others) cluster.cut(id, o)
    return () => {
      for (const o of others) cluster.heal(id, o)
    }
  }

  /** Applies a fault of `kind`; returns its nodes, when it took force and how to heal it, or why it was not applied. */
  const apply = async (kind: FaultKind): Promise<AppliedFault | string> => {
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

  /** Whatever happened, leaves every link healed and every node it stopped running again. */
  const healAll = async (): Promise<void> => {
    for (const a of ids) for (const b of ids) if (a < b) cluster.heal(a, b)
    for (const a of ids) for (const b of ids) if (a !== b) cluster.release(a, b)
    if (!opts.kinds.includes('stop-restart')) return
    for (const id of ids) if (!cluster.isRunning(id)) await restart(id)
  }

  return startFaultLoop({
    recorder,
    rng,
    kinds: opts.kinds,
    deadline: opts.deadline,
    maxFaults: opts.maxFaults,
    quietMs: opts.quietMs,
    minHoldMs: holdMin,
    holdMs: () => rng.int(holdMin, holdMax),
    apply,
    retrySkipped: false,
    record: (kind, { nodes, start }, end) => ({ kind, nodes, start, end }),
    healAll,
    errors,
  })
}
