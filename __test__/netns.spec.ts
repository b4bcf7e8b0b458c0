// A partition made by the kernel: three member processes, each in its own
// network namespace (harness/netns.ts) and listening on an address that exists
// only there, partitioned by blackhole routes. The leader cut off this way
// cannot commit and says what became of its write; the majority elects a
// leader and commits; deleting the routes heals, and every member converges.
// Needs root and `ip netns` (CI runs as root); without them it fails.
import { afterAll, describe, expect, it } from 'vitest'

import { NetnsLab } from './harness/netns.js'
import { findLeader, MemberProcess, type Reply } from './harness/processes.js'
import { eventually, tempDir } from './helpers.js'

/** Each member listens on this port of its own namespace's address. */
const PORT = 7001

function expectOk(r: Reply, what: string): void {
  expect(r, what).toMatchObject({ ok: true })
}

describe('three member processes in network namespaces, partitioned by blackhole routes', () => {
  const dir = tempDir('metastore-netns-')
  let lab: NetnsLab | undefined
  let members: MemberProcess[] = []

  afterAll(async () => {
    await Promise.all(members.map((m) => m.kill('SIGKILL')))
    lab?.destroy()
  })

  it('replicates; a leader cut off by routes cannot commit, the majority can, and deleting the routes converges', async () => {
    // Made here, not in a hook: where namespaces cannot be made, this test fails (it is never skipped).
    const net = (lab = NetnsLab.create(3))
    const ids = [1, 2, 3]
    const initialCluster = Object.fromEntries(ids.map((id) => [id, `${net.address(id)}:${PORT}`]))
    members = ids.map(
      (id) =>
        new MemberProcess(
          { nodeId: id, initialCluster, dataDir: dir, tickIntervalMs: 10, proposalTimeoutMs: 500, requestTimeoutMs: 1_500 },
          { prefix: net.exec(id) },
        ),
    )
    await Promise.all(members.map((m) => m.start()))
    const byId = (id: number): MemberProcess => members.find((m) => m.id === id)!

    // Writes through every member are read back on every member.
    for (const m of members) expectOk(await m.request('put', `k${m.id}`, `v${m.id}`), `put on member ${m.id}`)
    for (const reader of members) {
      for (const writer of members) {
        expect(await reader.request('get', `k${writer.id}`), `member ${reader.id} reads k${writer.id}`).toMatchObject({
          ok: true,
          result: `v${writer.id}`,
        })
      }
    }

    const old = await findLeader(members)
    expect(old, 'a leader').toBeDefined()
    const minority = byId(old!)
    const majority = members.filter((m) => m !== minority)
    const [a, b] = majority.map((m) => m.id) as [number, number]
    expect(await net.connect(old!, net.address(a), PORT), 'before the partition').toBe('connected')

    for (const other of [a, b]) net.blackhole(old!, other)
    // The routes are in force: no TCP connection either way (a blackhole route
    // fails a local connect with EINVAL), while the majority still reach each other.
    expect(net.routes(old!)).toContain(`blackhole ${net.address(a)}`)
    for (const other of [a, b]) {
      expect(await net.connect(old!, net.address(other), PORT), `member ${old} to member ${other}`).toBe('EINVAL')
      expect(await net.connect(other, net.address(old!), PORT), `member ${other} to member ${old}`).toBe('EINVAL')
    }
    expect(await net.connect(a, net.address(b), PORT), 'inside the majority').toBe('connected')

    const stuck = await minority.request('put', 'k', 'minority')
    expect(stuck, 'a write on the cut-off leader').toMatchObject({ ok: false })
    expect(stuck.code, 'its error code').toMatch(/^ERR_/)
    expect(['unknown', 'not-applied'], `its outcome (${stuck.code})`).toContain(stuck.outcome)
    expect(await minority.request('get', 'k1'), 'a read on the cut-off leader').toMatchObject({ ok: false })

    const next = await findLeader(majority)
    expect(next, 'a leader in the majority').toBeDefined()
    expect(next).not.toBe(old)
    expectOk(await byId(a).request('put', 'k', 'majority'), 'put on the majority')
    expectOk(await byId(b).request('put', 'k2', 'majority'), 'put on the majority')

    for (const other of [a, b]) net.unblackhole(old!, other)
    expect(await net.connect(old!, net.address(a), PORT), 'after healing').toBe('connected')
    await eventually(async () => {
      const seen = await Promise.all(members.flatMap((m) => [m.request('get', 'k'), m.request('get', 'k2')]))
      return seen.every((r) => r.ok && r.result === 'majority')
    }, 30_000)
  }, 120_000)
})
