// The nemesis of a Jepsen-style run over member processes (harness/processes.ts):
// in a bounded loop it applies one real fault at a time — SIGKILL and restart,
// SIGSTOP and SIGCONT, partitions made by the fault proxies between the
// members, a membership change that grows the group by a voter and shrinks it
// again — holds it, heals it and rests. Each fault is recorded with its
// window on the history's clock and what showed that it took hold.
import { setTimeout as sleep } from 'node:timers/promises'

import { findLeader, joiningMember, type MemberProcess, type MembershipSettings, type Reply } from '../harness/processes.js'
import type { FaultProxy } from '../harness/proxy.js'
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
 * - `kill`: SIGKILL a member (the leader half of the time), restart it on its
 *   data dir once the hold is over.
 * - `pause`: SIGSTOP a member (the leader half of the time), SIGCONT it after
 *   the pause.
 * - `isolate-leader`: cut every proxy to and from the member that leads now.
 * - `isolate-follower`: the same, on a member that does not lead.
 * - `cut-link`: cut both directions between the leader and one follower.
 * - `membership`: start a new member process (a new id each time: ids are
 *   never reused) that joins empty, add it as a learner, promote it once it
 *   caught up (joint consensus: three voters to four), hold, then remove it
 *   (four to three) and stop its process. Asked of the members in turn.
 */
export type ProcessFaultKind = 'kill' | 'pause' | 'isolate-leader' | 'isolate-follower' | 'cut-link' | 'membership'

export const PROCESS_FAULT_KINDS: readonly ProcessFaultKind[] = ['kill', 'pause', 'isolate-leader', 'isolate-follower', 'cut-link', 'membership']

export interface ProcessFault extends FaultRecord<ProcessFaultKind> {
  /** What showed the fault took hold: an exit by SIGKILL, a process seen stopped, a leader elected without the isolated one. */
  evidence: string[]
}

export interface ProcessNemesisOptions extends NemesisSchedule<ProcessFaultKind> {
  members: readonly MemberProcess[]
  /** `${i}->${j}`: the proxy member i dials member j through (startProxiedGroup). */
  proxies: ReadonlyMap<string, FaultProxy>
  /** How long a partition is held, or a killed member kept down, ms. */
  holdMs?: [number, number]
  /** How long a member stays stopped, ms. */
  pauseMs?: [number, number]
  /** Where the members the `membership` fault adds keep their data, and their settings. */
  joining?: { dataDir: string; settings: MembershipSettings }
}

/** Faults not applied (no leader known, ...) go to the end of the round: the kind comes up again. */
export type ProcessNemesisResult = FaultLoopResult<ProcessFaultKind, ProcessFault>

export type ProcessNemesis = FaultLoop<ProcessNemesisResult>

interface Applied extends AppliedFault {
  evidence: string[]
}

export function startProcessNemesis(opts: ProcessNemesisOptions): ProcessNemesis {
  const { members, proxies, recorder } = opts
  const rng = new Random(opts.seed * 104729 + 7)
  const [holdMin, holdMax] = opts.holdMs ?? [1_200, 2_000]
  const [pauseMin, pauseMax] = opts.pauseMs ?? [600, 1_500]
  const errors: string[] = []
  const byId = (id: number): MemberProcess => members.find((m) => m.id === id)!

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
  const restart = (m: MemberProcess): Promise<boolean> => retried(`restart of member ${m.id}`, 3, () => m.start(20_000), errors)

  /** Polls `m`'s process state until it is (or is not) 'T', for at most `ms`. */
  const seenStopped = async (m: MemberProcess, stoppedNow: boolean, ms: number): Promise<boolean> => {
    const until = Date.now() + ms
    for (let i = 0; i < 1_000 && Date.now() < until; i++) {
      if ((m.procState() === 'T') === stoppedNow) return true
      await sleep(5)
    }
    return false
  }

  /** The next id a member added by the `membership` fault gets. */
  let nextId = Math.max(...members.map((m) => m.id)) + 1
  /** Members added by the `membership` fault and not stopped yet. */
  const added: MemberProcess[] = []

  /**
   * A membership request, asked of the members in turn until one answers it
   * for good: a change the group could not take yet (no leader, a learner
   * still catching up) or whose outcome is unknown is asked again (the group
   * answers a change in effect already as done), for at most `ms`.
   */
  const change = async (req: { op: 'addMember' | 'promoteMember' | 'removeMember'; node: number; address?: string }, ms: number): Promise<Reply> => {
    const until = Date.now() + ms
    let last: Reply = { ok: false, message: 'not asked' }
    for (let i = 0; i < 1_000 && Date.now() < until; i++) {
      last = await members[i % members.length]!.send(req)
      if (last.ok) return last
      const again = last.outcome === 'unknown' || ['ERR_PROPOSAL_DROPPED', 'ERR_LEARNER_BEHIND', 'ERR_CHANGE_IN_PROGRESS', 'EXITED'].includes(last.code ?? '')
      if (!again) return last
      await sleep(50)
    }
    return last
  }

  /** The members a membership answer lists, as `id:role`. */
  const shown = (r: Reply): string =>
    (r.result as { id: number; role: string }[]).map((m) => `${m.id}:${m.role}`).join(' ')

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
        else errors.push(`member ${m.id} (pid ${pid}) was sent SIGKILL but exited with ${JSON.stringify(exit)}`)
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
        else errors.push(`member ${m.id} (pid ${m.pid}) was sent SIGSTOP but was not seen stopped`)
        return {
          nodes: [m.id],
          start,
          evidence,
          heal: async () => {
            await m.kill('SIGCONT')
            if (!(await seenStopped(m, false, 2_000))) errors.push(`member ${m.id} did not run again after SIGCONT`)
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
      case 'membership': {
        if (opts.joining === undefined) return 'no data dir for members to add'
        const id = nextId++
        const m = await joiningMember(id, opts.joining.dataDir, opts.joining.settings)
        await m.start(20_000)
        added.push(m)
        const start = recorder.now()
        const evidence: string[] = []
        const add = await change({ op: 'addMember', node: id, address: m.spec.advertise }, 5_000)
        if (!add.ok) {
          errors.push(`adding member ${id} failed: ${add.code} ${add.message}`)
          return { nodes: [id], start, evidence, heal: () => m.kill('SIGKILL').then(() => undefined) }
        }
        evidence.push(`member ${id} added as a learner: ${shown(add)}`)
        const promote = await change({ op: 'promoteMember', node: id }, 5_000)
        if (promote.ok) evidence.push(`member ${id} promoted: ${shown(promote)}`)
        else errors.push(`promoting member ${id} failed: ${promote.code} ${promote.message}`)
        return {
          nodes: [id],
          start,
          evidence,
          heal: async () => {
            const remove = await change({ op: 'removeMember', node: id }, 10_000)
            if (remove.ok) evidence.push(`member ${id} removed: ${shown(remove)}`)
            else errors.push(`removing member ${id} failed: ${remove.code} ${remove.message}`)
            await m.kill('SIGKILL')
            added.splice(added.indexOf(m), 1)
          },
        }
      }
    }
  }

  /** Whatever happened, leaves every proxy healed and every member running. */
  const healAll = async (): Promise<void> => {
    for (const m of added.splice(0)) await m.kill('SIGKILL')
    for (const proxy of proxies.values()) proxy.heal()
    for (const m of members) if (m.running) await m.kill('SIGCONT')
    for (const m of members) if (!m.running) await restart(m)
  }

  return startFaultLoop({
    recorder,
    rng,
    kinds: opts.kinds,
    deadline: opts.deadline,
    maxFaults: opts.maxFaults,
    quietMs: opts.quietMs,
    minHoldMs: Math.min(holdMin, pauseMin),
    holdMs: (kind) => (kind === 'pause' ? rng.int(pauseMin, pauseMax) : rng.int(holdMin, holdMax)),
    apply,
    retrySkipped: true,
    record: (kind, { nodes, start, evidence }, end) => ({ kind, nodes, start, end, evidence }),
    healAll,
    errors,
  })
}
