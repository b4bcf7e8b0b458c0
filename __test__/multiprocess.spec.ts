// A group of three OS processes on loopback, each embedding one member and
// talking to the others over gRPC: writes and reads through every member, a
// leader killed with SIGKILL under load, a leader paused with SIGSTOP, and a
// partition made by fault proxies between the processes.
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { startGroup, startProxiedGroup, type MemberProcess } from './harness/processes.js'
import { eventually, tempDir } from './helpers.js'

async function leaderOf(members: MemberProcess[]): Promise<number> {
  let leader = 0
  await eventually(async () => {
    const seen = await Promise.all(members.filter((m) => m.running).map((m) => m.request('status')))
    const ids = seen.filter((r) => r.ok && r.result.role === 'leader').map((r) => r.result.leaderId as number)
    leader = ids[0] ?? 0
    return leader !== 0
  }, 30_000)
  return leader
}

async function put(m: MemberProcess, key: string, value: string): Promise<void> {
  const r = await m.request('put', key, value)
  expect(r, `put ${key} on member ${m.id}`).toMatchObject({ ok: true })
}

describe('a group of three processes over gRPC', () => {
  const dir = tempDir('metastore-multiprocess-')

  it('writes through every member and reads them back linearizably on every member', async () => {
    const members = await startGroup(3, `${dir}/basic`)
    try {
      for (const m of members) for (let i = 0; i < 20; i++) await put(m, `k${m.id}-${i}`, `v${m.id}-${i}`)
      for (const reader of members) {
        for (const writer of members) {
          const r = await reader.request('get', `k${writer.id}-19`)
          expect(r).toMatchObject({ ok: true, result: `v${writer.id}-19` })
        }
      }
      const deleted = await members[2]!.request('delete', 'k1-0')
      expect(deleted).toMatchObject({ ok: true, result: true })
      expect(await members[0]!.request('get', 'k1-0')).toMatchObject({ ok: true, result: null })
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('elects a new leader when the leader is killed with SIGKILL under load; no acknowledged write is lost', async () => {
    const members = await startGroup(3, `${dir}/kill`)
    try {
      const old = await leaderOf(members)
      const killed = members.find((m) => m.id === old)!
      const writers = members.filter((m) => m.id !== old)
      const acked: string[] = []
      let stop = false
      const load = writers.map(async (m) => {
        for (let i = 0; !stop && i < 100_000; i++) {
          const key = `m${m.id}-${i}`
          const r = await m.request('put', key, key)
          if (r.ok) acked.push(key)
        }
      })
      await eventually(() => acked.length >= 200, 30_000)
      await killed.kill('SIGKILL')
      const before = acked.length
      const next = await leaderOf(writers)
      expect(next).not.toBe(old)
      await eventually(() => acked.length >= before + 200, 30_000)
      stop = true
      await Promise.all(load)

      await killed.start()
      // Every acknowledged write, read through the restarted member.
      for (let i = 0; i < acked.length; i += 200) {
        const keys = acked.slice(i, i + 200)
        const got = await Promise.all(keys.map((k) => killed.request('get', k)))
        const lost = keys.filter((k, j) => !(got[j]!.ok && got[j]!.result === k))
        expect(lost, 'acknowledged writes missing after the kill').toEqual([])
      }
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
    }
  }, 180_000)

  it('a leader paused with SIGSTOP for three election timeouts steps down when resumed and serves no stale read', async () => {
    const members = await startGroup(3, `${dir}/pause`)
    try {
      const old = await leaderOf(members)
      const paused = members.find((m) => m.id === old)!
      const others = members.filter((m) => m !== paused)
      await put(paused, 'k', 'before')
      await paused.kill('SIGSTOP')
      // Sent while it sleeps: answered once it runs again.
      const pending = paused.request('put', 'during', 'pause')
      const next = await leaderOf(others)
      expect(next).not.toBe(old)
      await put(others[0]!, 'k', 'after')
      // Three election timeouts (10 ms ticks, election_tick 10: at most 200 ms each).
      await sleep(600)
      await paused.kill('SIGCONT')
      expect(await paused.request('get', 'k'), 'a read on the resumed node').toMatchObject({ ok: true, result: 'after' })
      await eventually(async () => {
        const s = await paused.request('status')
        return s.ok && s.result.role !== 'leader'
      })
      const r = await pending
      if (r.ok) expect(await others[0]!.request('get', 'during')).toMatchObject({ ok: true, result: 'pause' })
      else expect(['unknown', 'not-applied']).toContain(r.outcome)
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGCONT')))
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
    }
  }, 120_000)

  it('through fault proxies: a partitioned leader cannot commit, the majority can, and healing converges', async () => {
    const { members, proxies } = await startProxiedGroup(3, `${dir}/partition`, { proposalTimeoutMs: 500, requestTimeoutMs: 1_500 })
    try {
      await put(members[0]!, 'k', 'v0')
      const old = await leaderOf(members)
      const minority = members.find((m) => m.id === old)!
      const majority = members.filter((m) => m !== minority)
      const cut = [...proxies].filter(([link]) => link.startsWith(`${old}->`) || link.endsWith(`->${old}`))
      for (const [, proxy] of cut) proxy.cut()
      const stuck = await minority.request('put', 'k', 'minority')
      expect(stuck, 'a write on the cut-off leader').toMatchObject({ ok: false })
      expect(['unknown', 'not-applied']).toContain(stuck.outcome)
      const next = await leaderOf(majority)
      expect(next).not.toBe(old)
      await put(majority[0]!, 'k', 'majority')
      for (const [, proxy] of cut) proxy.heal()
      await eventually(async () => {
        const seen = await Promise.all(members.map((m) => m.request('get', 'k')))
        return seen.every((r) => r.ok && r.result === 'majority')
      }, 30_000)
      const carried = [...proxies.values()].reduce((n, p) => n + p.stats().bytesForward, 0)
      expect(carried, 'bytes the proxies carried').toBeGreaterThan(0)
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
      await Promise.all([...proxies.values()].map((p) => p.close()))
    }
  }, 120_000)
})
