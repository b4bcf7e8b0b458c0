// Clients of a Jepsen-style run: each bound to one node, each sequential (one
// operation in flight), doing put/get/delete on a few keys. Every put writes
// a value no other put writes, so a read names the write it saw.
//
// The keys change every `opsPerKey` operations or so (generation g uses keys
// g0/k0..g0/kN, then g1/k0, ...), as Jepsen's independent keys do: porcupine
// checks each key on its own, and its memory grows with the square of a key's
// operation count (about 700k operations on 4 keys took more than 15 GB).
import { setTimeout as sleep } from 'node:timers/promises'

import type { MetaStore } from '../../ts/index.js'
import type { HistoryRecorder, OpName } from './history.js'
import { Random } from './random.js'

/** What a client needs of a node: a MetaStore, or anything that answers the same three calls. */
export type WorkloadHandle = Pick<MetaStore, 'put' | 'get' | 'delete'>

export interface WorkloadOptions {
  /** One handle per client: client i uses handles[i] for its whole run. */
  handles: readonly WorkloadHandle[]
  /**
   * Whether client i's node can take a request now; while it cannot (a
   * process killed and not yet restarted), the client waits instead of
   * filling the history with requests that were never sent.
   */
  available?: (client: number) => boolean
  /** Keys in use at a time. */
  keys: number
  /** Operations on a key before the clients move to fresh keys. */
  opsPerKey?: number
  recorder: HistoryRecorder
  /** No operation is called after this time (recorder clock, ns). */
  deadline: number
  /** Operations per client, at most. */
  maxOpsPerClient: number
  seed: number
  /** Pause between operations, ms: it keeps the history to a size porcupine checks in seconds. */
  thinkMs?: [number, number]
  /**
   * Pause after a failed operation, ms, doubling with each further failure in
   * a row up to 8 times: a client backs off instead of spinning on a stopped
   * node (and filling the history with unknown writes).
   */
  backoffMs?: [number, number]
  /** Share of gets and deletes; the rest are puts. */
  mix?: { get: number; delete: number }
}

/** A running workload: `done` settles when every client has finished its last operation. */
export interface Workload {
  readonly done: Promise<void>
  /** Stops calling new operations; the ones in flight still finish. */
  stop(): void
}

export function startWorkload(opts: WorkloadOptions): Workload {
  const { recorder } = opts
  const [thinkMin, thinkMax] = opts.thinkMs ?? [1, 3]
  const [backoffMin, backoffMax] = opts.backoffMs ?? [10, 40]
  const mix = opts.mix ?? { get: 0.4, delete: 0.15 }
  const opsPerKey = opts.opsPerKey ?? 5_000
  let stopped = false
  let calls = 0 // by every client: it sets the generation of keys

  const client = async (id: number, node: WorkloadHandle): Promise<void> => {
    const rng = new Random(opts.seed * 7919 + id)
    let failures = 0 // in a row
    for (let n = 0; n < opts.maxOpsPerClient && !stopped && recorder.now() < opts.deadline; n++) {
      if (opts.available?.(id) === false) {
        await sleep(backoffMax)
        continue
      }
      const generation = Math.floor(calls++ / (opsPerKey * opts.keys))
      const key = `g${generation}/k${rng.int(0, opts.keys - 1)}`
      const r = rng.next()
      const op: OpName = r < mix.get ? 'get' : r < mix.get + mix.delete ? 'delete' : 'put'
      const value = op === 'put' ? `c${id}-${n}` : undefined
      const p = recorder.begin(id, op, key, value)
      try {
        if (op === 'put') recorder.wrote(p, (await node.put(key, value!)).existed)
        else if (op === 'delete') recorder.wrote(p, await node.delete(key))
        else recorder.read(p, (await node.get(key))?.toString())
      } catch (err) {
        recorder.failed(p, err)
        failures++
        await sleep(rng.int(backoffMin, backoffMax) * 2 ** Math.min(failures - 1, 3))
        continue
      }
      failures = 0
      await sleep(rng.int(thinkMin, thinkMax))
    }
  }

  const done = Promise.all(opts.handles.map((h, i) => client(i, h))).then(() => undefined)
  return {
    done,
    stop() {
      stopped = true
    },
  }
}
