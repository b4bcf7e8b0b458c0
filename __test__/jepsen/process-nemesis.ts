// The nemesis of a Jepsen-style run over member processes (harness/processes.ts):
// in a bounded loop it applies one real fault at a time — SIGKILL and restart,
// SIGSTOP and SIGCONT, partitions made by the fault proxies between the
// members — holds it, heals it and rests. Each fault is recorded with its
// window on the history's clock and what showed that it took hold.
import { setTimeout as sleep } from 'node:timers/promises'

import { findLeader, type MemberProcess } from '../harness/processes.js'
import type { FaultProxy } from '../harness/proxy.js'
import type { FaultWindow, HistoryRecorder } from './history.js'
import { Random } from './random.js'

/**
 * - `kill`: SIGKILL a member (the leader half of the time), restart it on its
 *   data dir once the hold is over.
 * - `pause`: SIGSTOP a member (the leader half of the time), SIGCONT it after
 *   the pause.
 * - `isolate-leader`: cut every proxy to and from the member that leads now.
 * - `isolate-follower`: the same, on a member that does not lead.
 * - `cut-link`: cut both directions between the leader and one follower.
 */
export type ProcessFaultKind = 'kill' | 'pause' | 'isolate-leader' | 'isolate-follower' | 'cut-link'

export const PROCESS_FAULT_KINDS: readonly ProcessFaultKind[] = ['kill', 'pause', 'isolate-leader', 'isolate-follower', 'cut-link']

export interface ProcessFault extends FaultWindow {
  kind: ProcessFaultKind
  nodes: number[]
  /** What showed the fault took hold: an exit by SIGKILL, a process seen stopped, a leader elected without the isolated one. */
  evidence: string[]
}

export interface ProcessNemesisOptions {
  members: readonly MemberProcess[]
  /** `${i}->${j}`: the proxy member i dials member j through (startProxiedGroup). */
  proxies: ReadonlyMap<string, FaultProxy>
  recorder: HistoryRecorder
  kinds: readonly ProcessFaultKind[]
  /** No fault starts after this time (recorder clock, ns); a held fault is healed by then. */
  deadline: number
  maxFaults: number
  seed: number
  /** How long a partition is held, or a killed member kept down, ms. */
  holdMs?: [number, number]
  /** How long a member stays stopped, ms. */
  pauseMs?: [number, number]
  /** Rest between faults, ms. */
  quietMs?: [number, number]
}

export interface ProcessNemesisResult {
  faults: ProcessFault[]
  /** Faults applied, by kind. */
  counts: Partial<Record<ProcessFaultKind, number>>
  /** Faults not applied, with why (no leader known, ...); the kind comes up again later. */
  skipped: string[]
  /** A fault that did not show, or healing that failed: the run proves less than it should. */
  errors: string[]
}

export interface ProcessNemesis {
  readonly done: Promise<ProcessNemesisResult>
  /** Ends the loop early; the fault in force is still healed. */
  stop(): void
}

const NS_PER_MS = 1_000_000

interface Applied {
  nodes: number[]
  start: number
  evidence: string[]
  /** Runs while the fault is held; resolves by the end of the hold. */
  watch?: (untilMs: number) => Promise<void>
  heal: () => Promise<void>
}

export function startProcessNemesis(opts: ProcessNemesisOptions): ProcessNemesis {
  const { members, proxies, recorder } = opts
  if (opts.kinds.length === 0) throw new RangeError('the nemesis needs at least one fault kind')
  const rng = new Random(opts.seed * 104729 + 7)
  const [holdMin, holdMax] = opts.holdMs ?? [1_200, 2_000]
  const [pauseMin, pauseMax] = opts.pauseMs ?? [600, 1_500]
  const [quietMin, quietMax] = opts.quietMs ?? [200, 500]
  const result: ProcessNemesisResult = { faults: [], counts: {}, skipped: [], errors: [] }
  const byId = (id: number): MemberProcess => members.find((m) => m.id === id)!
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

  const leaderId = (): Promise<number | undefined> => findLeader(members, 2_000)

  /** The proxies carrying traffic between `a` and `b` (both directions), or between `a` and anyone. */
  const links = (a: number, b?: number): FaultProxy[] =>
    [...proxies]
      .filter(([link]) => {
        const [from, to] = link.split('->').map(Number)
        return b === undefined ? from === a || to === a : (from === a && to === b) || (from === b && to === a)
      })
      .map(([, proxy]) => proxy)

  const partition = (cut: FaultProxy[]): (() => Promise<void>) => {
    for (const proxy of cut) proxy.cut()
    return async () => {
      for (const proxy of cut) proxy.heal()
    }
  }

  /** Restarts `m`, a bounded number of times; false when it would not come back. */
  const restart = async (m: MemberProcess): Promise<boolean> => {
    let last: unknown
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await m.start(20_000)
        return true
      } catch (err) {
        last = err
        await sleep(200)
      }
    }
    result.errors.push(`restart of member ${m.id} failed: ${(last as Error)?.message ?? String(last)}`)
    return false
  }

  /** Polls `m`'s process state until it is (or is not) 'T', for at most `ms`. */
  const seenStopped = async (m: MemberProcess, stoppedNow: boolean, ms: number): Promise<boolean> => {
    const until = Date.now() + ms
    for (let i = 0; i < 1_000 && Date.now() < until; i++) {
      if ((m.procState() === 'T') === stoppedNow) return true
      await sleep(5)
    }
    return false
  }

  /** The leader half of the time (when one is known), else any member. */
  const victim = async (): Promise<number> => {
    const leader = rng.next() < 0.5 ? await leaderId() : undefined
    return leader ?? rng.pick(members).id
  }

  const apply = async (kind: ProcessFaultKind): Promise<Applied | string> => {
    if (members.some((m) => !m.running)) return 'a member is down'
    switch (kind) {
      case 'kill': {
        const m = byId(await victim())
        // Under load: a request in flight ends with the process, its outcome unknown.
        for (let i = 0; i < 100 && m.inFlight === 0; i++) await sleep(2)
        const pid = m.pid
        const start = recorder.now()
        await m.kill('SIGKILL')
        const exit = m.lastExit
        const evidence: string[] = []
        if (exit?.signal === 'SIGKILL') evidence.push(`member ${m.id} (pid ${pid}) exited by SIGKILL`)
        else result.errors.push(`member ${m.id} (pid ${pid}) was sent SIGKILL but exited with ${JSON.stringify(exit)}`)
        return {
          nodes: [m.id],
          start,
          evidence,
          heal: async () => {
            if (await restart(m)) evidence.push(`member ${m.id} restarted as pid ${m.pid}`)
          },
        }
      }
      case 'pause': {
        const m = byId(await victim())
        const start = recorder.now()
        await m.kill('SIGSTOP')
        const evidence: string[] = []
        if (await seenStopped(m, true, 1_000)) evidence.push(`member ${m.id} (pid ${m.pid}) seen stopped`)
        else result.errors.push(`member ${m.id} (pid ${m.pid}) was sent SIGSTOP but was not seen stopped`)
        return {
          nodes: [m.id],
          start,
          evidence,
          heal: async () => {
            await m.kill('SIGCONT')
            if (!(await seenStopped(m, false, 2_000))) result.errors.push(`member ${m.id} did not run again after SIGCONT`)
          },
        }
      }
      case 'isolate-leader': {
        const leader = await leaderId()
        if (leader === undefined) return 'no leader known'
        const start = recorder.now()
        const heal = partition(links(leader))
        const evidence: string[] = []
        const others = members.filter((m) => m.id !== leader)
        return {
          nodes: [leader],
          start,
          evidence,
          // The majority elects a leader of its own while the old one is cut off.
          watch: async (untilMs) => {
            const next = await findLeader(others, untilMs - Date.now())
            if (next !== undefined) evidence.push(`member ${next} elected while member ${leader} was cut off`)
          },
          heal,
        }
      }
      case 'isolate-follower': {
        const leader = await leaderId()
        if (leader === undefined) return 'no leader known'
        const id = rng.pick(members.filter((m) => m.id !== leader)).id
        const start = recorder.now()
        return { nodes: [id], start, evidence: [], heal: partition(links(id)) }
      }
      case 'cut-link': {
        const leader = await leaderId()
        if (leader === undefined) return 'no leader known'
        const follower = rng.pick(members.filter((m) => m.id !== leader)).id
        const start = recorder.now()
        return { nodes: [leader, follower], start, evidence: [], heal: partition(links(leader, follower)) }
      }
    }
  }

  const loop = async (): Promise<ProcessNemesisResult> => {
    // Every kind comes up once per round, in a shuffled order; a kind that
    // could not be applied goes to the end of the round.
    let round: ProcessFaultKind[] = []
    for (let i = 0; i < opts.maxFaults * 4 && result.faults.length < opts.maxFaults; i++) {
      await rest(rng.int(quietMin, quietMax))
      // A fault starts only if it can be held for the shortest hold.
      if (stopped || opts.deadline - recorder.now() < Math.min(holdMin, pauseMin) * NS_PER_MS) break
      if (round.length === 0) round = rng.shuffle(opts.kinds)
      const kind = round.shift()!
      const applied = await apply(kind)
      if (typeof applied === 'string') {
        result.skipped.push(`${kind}: ${applied}`)
        round.push(kind)
        continue
      }
      const holdMs = kind === 'pause' ? rng.int(pauseMin, pauseMax) : rng.int(holdMin, holdMax)
      try {
        await Promise.all([rest(holdMs), applied.watch?.(Date.now() + holdMs)])
      } finally {
        await applied.heal()
      }
      result.faults.push({ kind, nodes: applied.nodes, start: applied.start, end: recorder.now(), evidence: applied.evidence })
      result.counts[kind] = (result.counts[kind] ?? 0) + 1
    }
    return result
  }

  /** Whatever happened, leaves every proxy healed and every member running. */
  const healAll = async (): Promise<void> => {
    for (const proxy of proxies.values()) proxy.heal()
    for (const m of members) if (m.running) await m.kill('SIGCONT')
    for (const m of members) if (!m.running) await restart(m)
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
