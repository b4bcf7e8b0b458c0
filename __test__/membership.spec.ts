// Membership changes with real processes: member processes on loopback
// (harness/member.ts, RocksDB, 10 ms ticks) grow from three to five and shrink
// back under a steady write load, replace a failed member the way the README
// tells, survive the leader's SIGKILL in the middle of each kind of change,
// refuse a removed member that comes back, and answer bad requests with
// named errors that say they were not applied.
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { MetaStore, MetaStoreError, type Member } from '../ts/index.js'
import { findLeader, freePorts, joiningMember, MemberProcess, startGroup, startProxiedGroup, type Reply } from './harness/processes.js'
import { eventually, tempDir, testConfig } from './helpers.js'

/** The longest election timeout: raft-rs draws it from [election_tick, 2 × election_tick) ticks of 10 ms. */
const ELECTION_MS = 2 * 10 * 10

/** The pause after each phase of a change under load, whose write rate counts as the phase's. */
const PAUSE_MS = 500

/** Writes in flight on a node being removed end within this (proposal timeout, then the request's). */
const SETTINGS = { proposalTimeoutMs: 1_000, requestTimeoutMs: 3_000 }

/** The longest of `gaps` (none: zero). */
function longest(gaps: { ms: number; since: number }[]): { ms: number; since: number } {
  return gaps.reduce((a, b) => (b.ms > a.ms ? b : a), { ms: 0, since: 0 })
}

function expectOk(r: Reply, what: string): any {
  expect(r, what).toMatchObject({ ok: true })
  return r.result
}

/** What a member says the membership is: `id:role@address`, sorted, and the leader it knows. */
async function viewOf(m: MemberProcess): Promise<{ members: string[]; leader: number } | undefined> {
  const r = await m.send({ op: 'members' })
  if (!r.ok) return undefined
  const rows = r.result as { id: number; address: string; role: string; isLeader: boolean }[]
  return {
    members: rows.map((row) => `${row.id}:${row.role}@${row.address}`).sort(),
    leader: rows.find((row) => row.isLeader)?.id ?? 0,
  }
}

/** Waits until every one of `members` names the same members and the same leader; returns that view. */
async function agreedView(members: readonly MemberProcess[], timeoutMs = 15_000): Promise<{ members: string[]; leader: number }> {
  let seen: ({ members: string[]; leader: number } | undefined)[] = []
  try {
    await eventually(async () => {
      seen = await Promise.all(members.map(viewOf))
      const first = JSON.stringify(seen[0])
      return seen[0] !== undefined && seen[0].leader !== 0 && seen.every((v) => JSON.stringify(v) === first)
    }, timeoutMs)
  } catch (err) {
    throw new Error(`members never agreed: ${JSON.stringify(seen)}`, { cause: err })
  }
  return seen[0]!
}

/** `id:role` for each member in a change's answer, sorted. */
function roles(result: Member[]): string[] {
  return result.map((m) => `${m.id}:${m.role}`).sort()
}

/** The leader's process, once one of `members` says it leads. */
async function leaderOf(members: readonly MemberProcess[]): Promise<MemberProcess> {
  const id = await findLeader(members)
  expect(id, 'a leader').toBeDefined()
  return members.find((m) => m.id === id)!
}

/** Promotes learner `id`, asking again while it is behind (it catches up by a snapshot); bounded. */
async function promoteWhenCaughtUp(m: MemberProcess, id: number): Promise<{ reply: Reply; behind: number }> {
  let behind = 0
  for (let attempt = 0; attempt < 200; attempt++) {
    const reply = await m.send({ op: 'promoteMember', node: id })
    if (reply.ok || reply.code !== 'ERR_LEARNER_BEHIND') return { reply, behind }
    expect(reply.outcome).toBe('not-applied')
    behind++
    await sleep(20)
  }
  throw new Error(`learner ${id} still behind after 200 attempts`)
}

/**
 * Writers that each put unique keys in a loop, through the nodes in
 * `targets` in turn (a client that follows the membership: a node joins the
 * list once added and leaves it before its removal is asked), recording each
 * acknowledged key and when its answer came.
 */
class WriteLoad {
  targets: MemberProcess[]
  /** Each acknowledged key, when its answer came, how long after it was sent, and through which node. */
  readonly acked: { key: string; at: number; ms: number; via: number }[] = []
  readonly failures = new Map<string, number>()
  #stop = false
  #loops: Promise<void>[] = []

  constructor(targets: MemberProcess[]) {
    this.targets = targets
  }

  start(writers: number): void {
    this.#loops = Array.from({ length: writers }, (_, w) => this.#loop(w))
  }

  async #loop(w: number): Promise<void> {
    for (let i = 0; !this.#stop && i < 1_000_000; i++) {
      const target = this.targets[(w + i) % this.targets.length]!
      const key = `w${w}-${i}`
      const sent = Date.now()
      const r = await target.request('put', key, key)
      if (r.ok) this.acked.push({ key, at: Date.now(), ms: Date.now() - sent, via: target.id })
      else this.failures.set(`${r.code}/${r.outcome}`, (this.failures.get(`${r.code}/${r.outcome}`) ?? 0) + 1)
    }
  }

  async stop(): Promise<void> {
    this.#stop = true
    await Promise.all(this.#loops)
  }

  /** Acknowledgements per second between `from` and `to`. */
  rate(from: number, to: number): number {
    const n = this.acked.filter((a) => a.at >= from && a.at < to).length
    return (n * 1000) / Math.max(1, to - from)
  }

  /** The times without an acknowledgement between `from` and `to`: how long each was and when it began. */
  gaps(from: number, to: number): { ms: number; since: number }[] {
    const gaps: { ms: number; since: number }[] = []
    let last = from
    for (const { at } of [...this.acked, { at: to }]) {
      if (at < from || at > to) continue
      gaps.push({ ms: at - last, since: last })
      last = at
    }
    return gaps
  }
}

// The README's recipe (its code block itself runs in readme.spec.ts), over member processes.
/**
 * Replaces member `deadId`, lost with its data, by a node started empty on
 * another host under a new id:
 *
 *   await MetaStore.open({ nodeId: newId, join: true, advertise: address, dataDir })
 *
 * `member` is any live member. Resolves with the members once `deadId` is gone.
 */
async function replaceMember(member: MetaStore, deadId: number, newId: number, address: string): Promise<Member[]> {
  // A learner receives the group's state (a snapshot, then the log) but does not vote.
  await member.addMember(newId, address, { learner: true })
  // It votes once caught up; until then the group answers ERR_LEARNER_BEHIND.
  for (let attempt = 1; ; attempt++) {
    try {
      await member.promoteMember(newId)
      break
    } catch (err) {
      if (!(err instanceof MetaStoreError && err.code === 'ERR_LEARNER_BEHIND') || attempt === 60) throw err
      await sleep(1_000)
    }
  }
  // Its id is never used again: a host that comes back under it is refused.
  return member.removeMember(deadId)
}

describe('membership changes across processes', () => {
  const dir = tempDir('metastore-membership-')

  it('grows from three voters to five and shrinks back to three under a steady write load, losing no acknowledged write', async () => {
    const root = join(dir, 'grow')
    const members = await startGroup(3, root, SETTINGS)
    const all = [...members]
    const load = new WriteLoad([...members])
    try {
      const original = await leaderOf(members)
      load.start(4)
      const steadyFrom = Date.now()
      await sleep(1_000)
      const steady = { rate: load.rate(steadyFrom, Date.now()), gap: longest(load.gaps(steadyFrom, Date.now())) }
      expect(load.acked.length, 'writes acknowledged before any change').toBeGreaterThan(0)

      // Each phase (a node joining: add, catch up, promote; a removal) is
      // followed by a pause, so that its write rate is its own.
      const steps: { what: string; from: number; to: number }[] = []
      const phases: { what: string; from: number; to: number }[] = []
      const timed = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
        const from = Date.now()
        const result = await run()
        steps.push({ what, from, to: Date.now() })
        return result
      }
      const phase = async (what: string, run: () => Promise<void>): Promise<void> => {
        const from = Date.now()
        await run()
        await sleep(PAUSE_MS)
        phases.push({ what, from, to: Date.now() })
      }
      const promotions: string[] = []
      for (const id of [4, 5]) {
        const fresh = await joiningMember(id, root, SETTINGS)
        all.push(fresh)
        await timed(`start ${id}`, () => fresh.start())
        await sleep(PAUSE_MS)
        await phase(`join ${id}`, async () => {
          // Asked of a follower: its request reaches the leader through the log.
          const asked = members.find((m) => m.id !== original.id)!
          const added = await timed(`add ${id}`, () => asked.send({ op: 'addMember', node: id, address: fresh.spec.advertise }))
          expect(roles(expectOk(added, `add ${id}`))).toContain(`${id}:learner`)
          load.targets.push(fresh)
          const { reply, behind } = await timed(`promote ${id}`, () => promoteWhenCaughtUp(original, id))
          expect(roles(expectOk(reply, `promote ${id}`))).toContain(`${id}:voter`)
          promotions.push(`${id} after ${behind} ERR_LEARNER_BEHIND`)
        })
      }

      // Two of the original three go: a follower, then the leader (which hands leadership over first).
      const leader = await leaderOf(all)
      expect(members, 'the leader is one of the original three').toContain(leader)
      const follower = members.find((m) => m !== leader)!
      const survivors = all.filter((m) => m !== leader && m !== follower)
      for (const gone of [follower, leader]) {
        const what = `remove ${gone.id}${gone === leader ? ' (leader)' : ''}`
        await phase(what, async () => {
          load.targets = load.targets.filter((m) => m !== gone)
          const asked = all.find((m) => m.id === 4)!
          const removed = await timed(what, () => asked.send({ op: 'removeMember', node: gone.id }))
          expect(roles(expectOk(removed, `remove ${gone.id}`))).not.toContain(`${gone.id}:voter`)
        })
      }
      // Writes stuck for a proposal timeout end while the others still write.
      await sleep(SETTINGS.proposalTimeoutMs)
      await load.stop()
      const end = Date.now()

      const view = await agreedView(survivors)
      expect(view.members.map((m) => m.split('@')[0])).toEqual(survivors.map((m) => `${m.id}:voter`).sort())
      expect(survivors.map((m) => m.id)).toContain(view.leader)
      // A removed node serves nothing more, and says so.
      for (const gone of [follower, leader]) {
        await eventually(async () => (await gone.request('get', 'w0-0')).code === 'ERR_REMOVED', 10_000)
        expect(await gone.request('put', 'after', 'removal'), `a write on removed node ${gone.id}`).toMatchObject({
          ok: false,
          code: 'ERR_REMOVED',
          outcome: 'not-applied',
        })
      }

      // Every acknowledged write, read back linearizably from a survivor.
      const reader = survivors[0]!
      for (let i = 0; i < load.acked.length; i += 200) {
        const keys = load.acked.slice(i, i + 200).map((a) => a.key)
        const got = await Promise.all(keys.map((k) => reader.request('get', k)))
        const lost = keys.filter((k, j) => !(got[j]!.ok && got[j]!.result === k))
        expect(lost, 'acknowledged writes missing after the changes').toEqual([])
      }

      // The leader's removal apart: the gaps that overlap its hand-over, and all the others.
      const handOver = steps.find(({ what }) => what.endsWith('(leader)'))!
      const overlaps = (g: { ms: number; since: number }): boolean => g.since <= handOver.to && g.since + g.ms >= handOver.from
      const gaps = load.gaps(steadyFrom, end)
      const gap = longest(gaps.filter((g) => !overlaps(g)))
      const handOverGap = longest(gaps.filter(overlaps))
      const during = steps.filter((st) => st.from <= gap.since).at(-1)
      const where = during === undefined ? 'before any change' : `${gap.since - during.from} ms into ${during.what}`
      const slowest = load.acked.reduce((a, b) => (b.ms > a.ms ? b : a))
      const sentIn = steps.filter((st) => st.from <= slowest.at - slowest.ms).at(-1)
      const slowestWhere = sentIn === undefined ? 'before any change' : `sent ${slowest.at - slowest.ms - sentIn.from} ms into ${sentIn.what}`
      const durations = steps.filter(({ what }) => !what.startsWith('start')).map(({ what, from, to }) => `${what} ${to - from} ms`)
      const dips = phases.map(({ what, from, to }) => `${what} ${Math.round((100 * load.rate(from, to)) / steady.rate)}%`)
      console.log(
        `membership under load: ${load.acked.length} writes acked, steady ${Math.round(steady.rate)}/s ` +
          `(longest gap ${steady.gap.ms} ms); ${durations.join(', ')}; promoted ${promotions.join(', ')}; ` +
          `write rate in each phase and the ${PAUSE_MS} ms after it, of the steady rate: ${dips.join(', ')}; ` +
          `longest gap between acks ${gap.ms} ms (${where}), across the leader's hand-over ${handOverGap.ms} ms; ` +
          `slowest acknowledged write ${slowest.ms} ms (through node ${slowest.via}, ${slowestWhere}); ` +
          `failed writes ${JSON.stringify(Object.fromEntries(load.failures))}`,
      )
      // A client that follows the membership sees no write fail; one in flight on a node as it is removed is told so.
      expect([...load.failures.keys()].filter((k) => k !== 'ERR_REMOVED/not-applied'), 'failed writes').toEqual([])
      // Two election timeouts, plus 400 ms for a loaded two-core machine
      // running five node processes and the writers.
      expect(gap.ms, `longest time without an acknowledged write (${where})`).toBeLessThan(2 * ELECTION_MS + 400)
      // A write that reaches the leader while it hands leadership over is
      // dropped, and its node sends it again only after a proposal timeout:
      // when every writer has one in flight then, none is acknowledged for
      // that long. To be two election timeouts, as above, once such a write
      // is sent again at once.
      expect(handOverGap.ms, "longest time without an acknowledged write across the leader's hand-over").toBeLessThan(
        SETTINGS.proposalTimeoutMs + 2 * ELECTION_MS + 400,
      )
    } finally {
      await load.stop()
      await Promise.all(all.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('replaces a failed member with a new node under a new id, as the README tells', async () => {
    const root = join(dir, 'replace')
    const ports = await freePorts(3)
    const initialCluster = Object.fromEntries(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`]))
    // Node 1 lives in this process, so the recipe runs on a MetaStore as a user's service would.
    const processes = [2, 3].map((id) => new MemberProcess({ ...SETTINGS, nodeId: id, initialCluster, dataDir: root }))
    const [member] = await Promise.all([
      MetaStore.open({ config: testConfig(), engine: 'rocksdb', dataDir: root, nodeId: 1, initialCluster, leaderTimeoutMs: 60_000 }),
      ...processes.map((m) => m.start()),
    ])
    const all = [...processes]
    try {
      for (let i = 0; i < 100; i++) await member.put(`before-${i}`, `${i}`)
      // A follower's host dies with its disk.
      const leaderId = member.leader()?.id
      const dead = processes.find((m) => m.id !== leaderId)!
      await dead.kill('SIGKILL')
      rmSync(join(root, `node-${dead.id}`), { recursive: true, force: true })

      const fresh = await joiningMember(4, root, SETTINGS)
      all.push(fresh)
      await fresh.start()
      const result = await replaceMember(member, dead.id, 4, fresh.spec.advertise!)
      const live = processes.filter((m) => m !== dead)
      expect(roles(result)).toEqual([1, live[0]!.id, 4].sort().map((id) => `${id}:voter`))

      expectOk(await fresh.request('put', 'on-new', 'served'), 'a write on the new node')
      expect(await fresh.request('get', 'before-99'), 'a write made before it joined').toMatchObject({ ok: true, result: '99' })
      expect(await fresh.request('get', 'on-new')).toMatchObject({ ok: true, result: 'served' })
      expect((await member.get('on-new'))?.toString()).toBe('served')
      const view = await agreedView([fresh, ...live])
      expect(view.members.map((m) => m.split('@')[0])).toEqual([1, live[0]!.id, 4].sort().map((id) => `${id}:voter`))

      // The dead host, wiped, comes back under its old id: it waits to be added, and the group will not.
      const again = new MemberProcess({ ...dead.spec, initialCluster: {}, join: true, advertise: initialCluster[dead.id] })
      all.push(again)
      await again.start()
      const refused = await member.addMember(dead.id, initialCluster[dead.id]!, { learner: true }).catch((err: unknown) => err)
      expect(refused).toBeInstanceOf(MetaStoreError)
      expect(refused).toMatchObject({ code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
      expect((refused as Error).message).toMatch(/never reused/)
      expect(await again.send({ op: 'members' }), 'the members the wiped node knows').toMatchObject({ ok: true, result: [] })
      expect(member.members().map((m) => m.id).sort()).toEqual([1, live[0]!.id, 4].sort())
    } finally {
      await member.close()
      await Promise.all(all.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('ends in one membership on every node when the leader is killed with SIGKILL right after each kind of change starts', async () => {
    const root = join(dir, 'kill')
    const members = await startGroup(3, root, SETTINGS)
    const fresh = await joiningMember(4, root, SETTINGS)
    const all = [...members, fresh]
    try {
      await fresh.start()
      const address = fresh.spec.advertise!
      // How long a change takes here: the shortest of three adds (two commits
      // each) of learners at addresses where nothing listens, removed again.
      const first = await leaderOf(members)
      const nowhere = (await freePorts(3)).map((p) => `127.0.0.1:${p}`)
      const durations: number[] = []
      for (const [i, id] of [7, 8, 9].entries()) {
        const from = performance.now()
        expectOk(await first.send({ op: 'addMember', node: id, address: nowhere[i] }), `add ${id}`)
        durations.push(performance.now() - from)
        expectOk(await first.send({ op: 'removeMember', node: id }), `remove ${id}`)
      }
      const killAfterMs = Math.min(...durations) / 2

      const outcomes: string[] = []
      /**
       * Asks the leader's process for `req` and kills it halfway through the
       * time a change takes (after the request's commit, before the
       * configuration change's, as a rule), restarts it, and asks a
       * surviving member again, as a caller does after an unknown outcome:
       * the change is made, or found made (`inEffect` says which the
       * members showed just before).
       */
      const killDuring = async (req: Parameters<MemberProcess['send']>[0], inEffect: (view: string[]) => boolean): Promise<Reply> => {
        const running = all.filter((m) => m.running)
        const leader = await leaderOf(running)
        const pending = leader.send(req)
        // The request is in the pipe already; this process may stop for a moment.
        const until = performance.now() + killAfterMs
        while (performance.now() < until) continue
        await leader.kill('SIGKILL')
        expect(leader.lastExit?.signal).toBe('SIGKILL')
        const answer = await pending
        // Killed before it answered, or (a slow moment) after the change was done.
        expect([true, 'EXITED']).toContain(answer.ok || answer.code)
        await leader.start()
        const asked = running.find((m) => m !== leader && m.id !== req.node)!
        const before = (await viewOf(asked))?.members ?? []
        const retried = await asked.send(req)
        expect(retried, `${req.op} ${req.node} asked again`).toMatchObject({ ok: true })
        outcomes.push(`${req.op} ${answer.ok ? 'answered before the kill' : 'cut off'}, ${inEffect(before) ? '' : 'not '}in effect when asked again`)
        return retried
      }

      await killDuring({ op: 'addMember', node: 4, address }, (view) => view.includes(`4:learner@${address}`))
      let view = await agreedView(all)
      expect(view.members).toContain(`4:learner@${address}`)

      await killDuring({ op: 'promoteMember', node: 4 }, (view) => view.includes(`4:voter@${address}`))
      view = await agreedView(all)
      expect(view.members).toContain(`4:voter@${address}`)
      expect(view.members.filter((m) => m.includes(':voter@'))).toHaveLength(4)

      // A follower goes; the leader is killed while it carries the removal out.
      const leader = await leaderOf(all)
      const gone = members.find((m) => m !== leader)!
      await killDuring({ op: 'removeMember', node: gone.id }, (view) => !view.some((m) => m.startsWith(`${gone.id}:`)))
      const rest = all.filter((m) => m !== gone)
      view = await agreedView(rest)
      expect(view.members.map((m) => m.split('@')[0])).toEqual(rest.map((m) => `${m.id}:voter`).sort())

      // The group serves on every member left, the restarted ones included.
      for (const m of rest) expectOk(await m.request('put', `after-${m.id}`, 'x'), `a write on member ${m.id}`)
      for (const m of rest) expect(await m.request('get', `after-${rest[0]!.id}`)).toMatchObject({ ok: true, result: 'x' })
      console.log(`leader killed ${killAfterMs.toFixed(1)} ms into each change: ${outcomes.join(', ')}`)
      expect(outcomes.filter((o) => o.includes('cut off')).length, 'changes the kill cut off').toBeGreaterThan(0)
    } finally {
      await Promise.all(all.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('refuses a removed member that comes back on its data dir; the group keeps its term and serves', async () => {
    const root = join(dir, 'removed')
    const members = await startGroup(3, root, SETTINGS)
    const all = [...members]
    try {
      const leader = await leaderOf(members)
      const [gone, other] = members.filter((m) => m !== leader) as [MemberProcess, MemberProcess]
      for (let i = 0; i < 20; i++) expectOk(await leader.request('put', `before-${i}`, 'x'), 'a write before the removal')
      await gone.kill('SIGKILL')
      const removed = expectOk(await leader.send({ op: 'removeMember', node: gone.id }), `remove ${gone.id} while it is down`)
      expect(roles(removed)).toEqual([leader.id, other.id].sort().map((id) => `${id}:voter`))

      const refusals = async (m: MemberProcess): Promise<number> => expectOk(await m.request('stats'), 'stats').transport.refused
      const before = { leader: await refusals(leader), other: await refusals(other) }
      const term = expectOk(await leader.request('status'), 'status').term as number
      // Its record still names it a member: it opens as before and waits for a leader, which it never finds.
      const back = new MemberProcess({ ...gone.spec, leaderTimeoutMs: 3_000 })
      all.push(back)
      const opened = back.launch().then(
        () => 'opened',
        () => 'failed',
      )
      // Once it dials the others (they refuse it), a second of writes.
      await eventually(async () => (await refusals(leader)) > before.leader && (await refusals(other)) > before.other, 20_000)
      const until = Date.now() + 1_000
      let writes = 0
      for (let i = 0; i < 1_000 && Date.now() < until; i++, writes++) {
        expectOk(await (i % 2 === 0 ? leader : other).request('put', `while-back-${i}`, 'x'), 'a write while the removed node is back')
        const status = expectOk(await leader.request('status'), 'status')
        expect(status, "the leader's role and term").toMatchObject({ role: 'leader', term })
        await sleep(10)
      }
      expect(writes).toBeGreaterThan(0)
      expect(await opened, 'the open of the removed node').toBe('failed')
      expect(back.lastExit?.code).toBe(1)
      expect(back.openFailure?.message).toBeDefined()
      expect(await refusals(leader)).toBeGreaterThan(before.leader)
      expect(expectOk(await other.request('status'), 'status')).toMatchObject({ leaderId: leader.id, term })
      const view = await agreedView([leader, other])
      expect(view.members.map((m) => m.split('@')[0])).toEqual([leader.id, other.id].sort().map((id) => `${id}:voter`))
      console.log(
        `removed node back: open failed with ${back.openFailure?.code} (${back.openFailure?.message}); ` +
          `refused by the leader ${(await refusals(leader)) - before.leader}, by the other ${(await refusals(other)) - before.other}`,
      )
    } finally {
      await Promise.all(all.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('answers concurrent changes, unknown ids, taken addresses and a learner that does not answer with named errors, not applied', async () => {
    const root = join(dir, 'bad')
    const members = await startGroup(3, root, SETTINGS)
    const all = [...members]
    try {
      const leader = await leaderOf(members)
      const followers = members.filter((m) => m !== leader)
      const taken = await viewOf(leader)
      const addressOf = (id: number): string => taken!.members.find((m) => m.startsWith(`${id}:`))!.split('@')[1]!
      // Nothing listens at these: the learners added there never answer.
      const nowhere = (await freePorts(6)).map((p) => `127.0.0.1:${p}`)

      // Two clients on two nodes at once: at most one change runs; the other is told so, or comes after.
      const codes: string[] = []
      let added: number[] = []
      for (let round = 0; round < 3; round++) {
        const a = 10 + 2 * round
        const b = a + 1
        const [ra, rb] = await Promise.all([
          followers[0]!.send({ op: 'addMember', node: a, address: nowhere[2 * round] }),
          followers[1]!.send({ op: 'addMember', node: b, address: nowhere[2 * round + 1] }),
        ])
        for (const r of [ra, rb]) {
          if (r.ok) continue
          expect(r, 'the change that lost').toMatchObject({ code: 'ERR_CHANGE_IN_PROGRESS', outcome: 'not-applied' })
          codes.push(r.code!)
        }
        expect(ra.ok || rb.ok, 'one of two concurrent changes').toBe(true)
        added = [...added, ...(ra.ok ? [a] : []), ...(rb.ok ? [b] : [])]
        const view = await agreedView(members)
        const learners = view.members.filter((m) => m.includes(':learner@')).map((m) => Number(m.split(':')[0]))
        expect(learners.sort(), 'the learners are the adds that succeeded').toEqual([...added].sort())
      }
      expect(codes.length, 'rounds in which the two changes overlapped').toBeGreaterThan(0)

      const refused = async (req: Parameters<MemberProcess['send']>[0], message: RegExp): Promise<void> => {
        const r = await followers[0]!.send(req)
        expect(r, `${req.op} ${req.node}`).toMatchObject({ ok: false, code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
        expect(r.message).toMatch(message)
      }
      await refused({ op: 'promoteMember', node: 99 }, /not a member/)
      await refused({ op: 'removeMember', node: 99 }, /not a member/)
      await refused({ op: 'addMember', node: 20, address: addressOf(followers[1]!.id) }, new RegExp(`is node ${followers[1]!.id}'s`))
      await refused({ op: 'addMember', node: followers[1]!.id, address: nowhere[5] }, /is a member already/)
      await refused({ op: 'addMember', node: 21, address: 'no-port' }, /'no-port' is not host:port/)
      // A change in effect already is answered as done (a caller may send one again after an unknown outcome).
      const unchanged = expectOk(await followers[0]!.send({ op: 'promoteMember', node: leader.id }), `promote voter ${leader.id}`)
      expect(roles(unchanged).filter((r) => r.endsWith(':voter'))).toEqual(members.map((m) => `${m.id}:voter`).sort())

      // A learner that never answered the leader would be a voter that never votes.
      const silent = added[0]!
      const behind = await leader.send({ op: 'promoteMember', node: silent })
      expect(behind, `promote ${silent}`).toMatchObject({ ok: false, code: 'ERR_LEARNER_BEHIND', outcome: 'not-applied' })
      expect(behind.message).toMatch(/has not answered/)
      expect((await viewOf(leader))!.members, `${silent} stays a learner`).toContainEqual(expect.stringMatching(new RegExp(`^${silent}:learner@`)))

      // A removal that would leave no live quorum: refused unless forced.
      const [stopped, asked] = followers as [MemberProcess, MemberProcess]
      await stopped.kill('SIGSTOP')
      await sleep(3 * ELECTION_MS)
      const noQuorum = await leader.send({ op: 'removeMember', node: asked.id })
      expect(noQuorum, `remove ${asked.id} with ${stopped.id} stopped`).toMatchObject({ ok: false, code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
      expect(noQuorum.message).toMatch(/quorum/)
      // Forced, it is carried out once the stopped member is back to make the quorum.
      let settled = false
      const forced = leader.send({ op: 'removeMember', node: asked.id, force: true }).finally(() => (settled = true))
      await sleep(3 * ELECTION_MS)
      expect(settled, 'the forced removal, while the new configuration has no quorum').toBe(false)
      await stopped.kill('SIGCONT')
      const result = expectOk(await forced, `forced removal of ${asked.id}`)
      expect(roles(result).filter((r) => r.endsWith(':voter'))).toEqual([leader.id, stopped.id].sort().map((id) => `${id}:voter`))
      console.log(`concurrent changes: ${codes.length} of 3 rounds overlapped (${codes.join(', ')})`)
    } finally {
      await Promise.all(all.map((m) => m.kill('SIGCONT')))
      await Promise.all(all.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)
  it('leaves a joint configuration after the leader is SIGKILLed between entering and leaving it', async () => {
    // Removing R from {L, F, R} goes through the joint configuration {L, F} & {L, F, R}. With F cut
    // off by its proxies, L and R commit the entry that enters it, but the one that leaves it needs F:
    // the leader is killed right there, F is healed, L restarted, and the group must leave.
    const { members, proxies } = await startProxiedGroup(3, join(dir, 'joint'), SETTINGS)
    try {
      const L = await leaderOf(members)
      const [F, R] = members.filter((m) => m !== L) as [MemberProcess, MemberProcess]
      for (let i = 0; i < 20; i++) expectOk(await L.request('put', `before-${i}`, `${i}`), 'a write before the change')
      const cut = [...proxies].filter(([link]) => link.split('->').map(Number).includes(F.id)).map(([, p]) => p)
      for (const p of cut) p.cut()
      const raft = async (): Promise<{ lastIndex: number; commitIndex: number; term: number }> => expectOk(await L.send({ op: 'stats' }), 'stats').raft
      const before = await raft()
      void L.send({ op: 'removeMember', node: R.id, force: true, timeoutMs: 30_000 })
      // The request, the entry entering the joint configuration, and the one leaving it, which the
      // leader appends only once it applied the second.
      await eventually(async () => (await raft()).lastIndex >= before.lastIndex + 3, 10_000)
      await sleep(300)
      const inside = await raft()
      expect(inside.commitIndex, 'the entry leaving the joint configuration is not committed: it needs F').toBeLessThan(inside.lastIndex)
      await L.kill('SIGKILL')
      expect(L.lastExit?.signal, 'the leader was killed').toBe('SIGKILL')
      for (const p of cut) p.heal()
      await L.start()
      // L and F end in one configuration without R, both voters, under a new term.
      const ids = async (m: MemberProcess): Promise<string> => {
        const r = await m.send({ op: 'members' })
        return r.ok ? (r.result as { id: number; role: string }[]).map((x) => `${x.id}:${x.role}`).sort().join(' ') : ''
      }
      const expected = [L.id, F.id].sort().map((id) => `${id}:voter`).join(' ')
      await eventually(async () => (await ids(L)) === expected && (await ids(F)) === expected, 20_000)
      const leader = await leaderOf([L, F])
      expect((expectOk(await leader.send({ op: 'stats' }), 'stats').raft.term as number), 'a new term left it').toBeGreaterThan(inside.term)
      expectOk(await leader.request('put', 'after', 'left'), 'a write after the joint configuration was left')
      expect(await F.request('get', 'before-19')).toMatchObject({ ok: true, result: '19' })
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
      await Promise.all([...proxies.values()].map((p) => p.close()))
    }
  }, 120_000)
})
