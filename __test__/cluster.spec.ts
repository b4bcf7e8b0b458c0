import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { LocalCluster, MetaStore as Store, MetaStoreError, type MetaStore } from '../ts/index.js'
import { freePorts } from './harness/processes.js'
import { eventually, FAILOVER_ERRORS, tempDir, testConfig } from './helpers.js'

/** Every key's value as seen by one node (linearizable reads through that node). */
async function snapshot(node: MetaStore, keys: string[]): Promise<(string | undefined)[]> {
  return Promise.all(keys.map(async (k) => (await node.get(k))?.toString()))
}

for (const engine of ['memory', 'rocksdb'] as const) {
  describe(`LocalCluster of 3 on ${engine}`, () => {
    const dir = tempDir()

    it('commits writes made on the leader and on followers; every node converges', async () => {
      const cluster = await LocalCluster.start({ nodes: 3, engine, dataDir: join(dir, 'basic'), config: testConfig() })
      try {
        const leader = await cluster.leader()
        const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
        expect(follower.stats().raft.role).toBe('follower')
        await Promise.all(Array.from({ length: 300 }, (_, i) => leader.put(`k${i}`, `leader${i}`)))
        const fromFollower = await Promise.all(Array.from({ length: 300 }, (_, i) => follower.put(`f${i}`, `follower${i}`)))
        expect(fromFollower.every((r) => r.index > 0)).toBe(true)
        expect(await follower.delete('k0')).toBe(true)

        const keys = [...Array.from({ length: 300 }, (_, i) => `k${i}`), ...Array.from({ length: 300 }, (_, i) => `f${i}`)]
        const expected = keys.map((k) => (k === 'k0' ? undefined : k.startsWith('k') ? `leader${k.slice(1)}` : `follower${k.slice(1)}`))
        for (const id of cluster.ids()) expect(await snapshot(cluster.node(id), keys)).toEqual(expected)
        await eventually(() => new Set(cluster.ids().map((id) => cluster.node(id).stats().raft.appliedIndex)).size === 1)
      } finally {
        await cluster.close()
      }
    })

    it('elects a new leader when the leader stops under load; no request hangs', async () => {
      const cluster = await LocalCluster.start({ nodes: 3, engine, dataDir: join(dir, 'failover'), config: testConfig() })
      try {
        const old = await cluster.leader()
        const others = cluster.ids().filter((id) => id !== old.nodeId)
        const acked = new Map<string, string>()
        const failures: string[] = []
        let stop = false
        const writer = async (node: MetaStore, w: number) => {
          for (let i = 0; !stop; i++) {
            const key = `w${w}-${i}`
            try {
              await node.put(key, `v${i}`)
              acked.set(key, `v${i}`)
            } catch (err) {
              failures.push((err as MetaStoreError).code)
              await sleep(5) // back off, as a client would, instead of spinning on microtasks
            }
          }
        }
        const writers = [
          ...Array.from({ length: 16 }, (_, w) => writer(old, w)),
          ...Array.from({ length: 16 }, (_, w) => writer(cluster.node(others[w % 2]), 100 + w)),
        ]
        await eventually(() => acked.size > 500)
        cluster.stop(old.nodeId)
        await eventually(async () => {
          const leader = await cluster.leader().catch(() => undefined)
          return leader !== undefined && leader.nodeId !== old.nodeId
        })
        const before = acked.size
        await eventually(() => acked.size > before + 500)
        stop = true
        await Promise.all(writers) // every request settled: resolved or rejected
        for (const code of failures) expect(FAILOVER_ERRORS).toContain(code)

        const survivor = await cluster.leader()
        const keys = [...acked.keys()]
        expect(await snapshot(survivor, keys)).toEqual(keys.map((k) => acked.get(k)))
      } finally {
        await cluster.close()
      }
    })

    it('keeps the log within max_log_size, however few entries it holds', async () => {
      const config = testConfig((c) => (c.server.raft.maxLogSize = 1024 * 1024))
      const cluster = await LocalCluster.start({ nodes: 3, engine, dataDir: join(dir, 'log-size'), config })
      try {
        const leader = await cluster.leader()
        const big = Buffer.alloc(128 * 1024, 7)
        // 40 puts one after another: 40 entries of 128 KiB, 5 MiB of log.
        for (let i = 0; i < 40; i++) await leader.put(`big${i}`, big)
        // At most 1 MiB of them (8 entries), plus the odd leader no-op.
        expect(leader.stats().storage.logEntries).toBeLessThanOrEqual(10)
        expect(await leader.get('big0')).toEqual(big)
      } finally {
        await cluster.close()
      }
    })

    it('a node that was down catches up, by snapshot after compaction', async () => {
      const config = testConfig((c) => (c.server.raft.snapshotCount = 50))
      const cluster = await LocalCluster.start({ nodes: 3, engine, dataDir: join(dir, 'catchup'), config })
      try {
        const leader = await cluster.leader()
        const lagging = cluster.ids().find((id) => id !== leader.nodeId)!
        const others = cluster.ids().filter((id) => id !== lagging)
        // A memory node cannot restart (its state is gone), so there it is cut off instead.
        if (engine === 'rocksdb') cluster.stop(lagging)
        else for (const id of others) cluster.cut(lagging, id)
        for (let round = 0; round < 10; round++) {
          await Promise.all(Array.from({ length: 50 }, (_, i) => leader.put(`c${round}-${i}`, `r${round}`)))
        }
        expect(leader.stats().storage.logEntries).toBeLessThan(500)
        if (engine === 'rocksdb') cluster.restart(lagging)
        else for (const id of others) cluster.heal(lagging, id)
        const node = cluster.node(lagging)
        await eventually(() => node.stats().raft.appliedIndex >= leader.stats().raft.appliedIndex)
        const keys = Array.from({ length: 10 }, (_, r) => `c${r}-49`)
        expect(await snapshot(node, keys)).toEqual(keys.map((_, r) => `r${r}`))
      } finally {
        await cluster.close()
      }
    })
  })
}

describe('LocalCluster on rocksdb, restarts', () => {
  const dir = tempDir()

  it('keeps every acknowledged write across a node restart and a full cluster restart', async () => {
    const dataDir = join(dir, 'restart')
    let cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', dataDir, config: testConfig() })
    const leader = await cluster.leader()
    await Promise.all(Array.from({ length: 300 }, (_, i) => leader.put(`k${i}`, `v${i}`)))
    const restarted = cluster.ids().find((id) => id !== leader.nodeId)!
    cluster.stop(restarted)
    await Promise.all(Array.from({ length: 100 }, (_, i) => leader.put(`later${i}`, `x${i}`)))
    cluster.restart(restarted)
    const keys = [...Array.from({ length: 300 }, (_, i) => `k${i}`), ...Array.from({ length: 100 }, (_, i) => `later${i}`)]
    const values = [...Array.from({ length: 300 }, (_, i) => `v${i}`), ...Array.from({ length: 100 }, (_, i) => `x${i}`)]
    expect(await snapshot(cluster.node(restarted), keys)).toEqual(values)
    await cluster.close()

    cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', dataDir, config: testConfig() })
    try {
      for (const id of cluster.ids()) expect(await snapshot(cluster.node(id), keys)).toEqual(values)
    } finally {
      await cluster.close()
    }
  })

  it('loses no acknowledged write when the process is killed with SIGKILL mid-load', async () => {
    const dataDir = join(dir, 'sigkill')
    const child = spawn(process.execPath, [join(__dirname, 'fixtures', 'writer.cjs'), dataDir], { stdio: ['ignore', 'pipe', 'inherit'] })
    const acked: string[] = []
    let buffered = ''
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      acked.push(...lines.filter((l) => l.startsWith('k')))
    })
    await eventually(() => acked.length >= 2000, 60_000)
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))

    const cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', dataDir, config: testConfig() })
    try {
      const leader = await cluster.leader()
      const values = await snapshot(leader, acked)
      const lost = acked.filter((k, i) => values[i] !== `value-${k}`)
      expect(lost).toEqual([])
      // The writer had compacted its log before it was killed.
      const { raft, storage } = leader.stats()
      expect(raft.lastIndex - storage.logEntries).toBeGreaterThan(1)
    } finally {
      await cluster.close()
    }
  })
})

describe('node identity', () => {
  const dir = tempDir()

  it("refuses a store's data dir as a cluster's, and leaves the store intact", async () => {
    const dataDir = join(dir, 'taken')
    let store = await Store.open({ engine: 'rocksdb', dataDir, config: testConfig() })
    await store.put('k', 'old')
    await store.close()
    const err = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', dataDir, config: testConfig() }).catch((e) => e)
    expect(err).toBeInstanceOf(MetaStoreError)
    expect(err.code).toBe('ERR_DATA_DIR_MISMATCH')
    expect(err.message).toContain(join(dataDir, 'node-1'))
    store = await Store.open({ engine: 'rocksdb', dataDir, config: testConfig() })
    expect((await store.get('k'))?.toString()).toBe('old')
    await store.close()
  })

  it('keeps a store and a cluster started from one config in separate node dirs', async () => {
    const config = testConfig((c) => (c.server.storage.dataDir = join(dir, 'shared-config')))
    const store = await Store.open({ engine: 'rocksdb', config })
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', config })
    try {
      await store.put('k', 'store')
      await (await cluster.leader()).put('k', 'cluster')
      expect((await store.get('k'))?.toString()).toBe('store')
    } finally {
      await store.close()
      await cluster.close()
    }
  })

  it('refuses to restart a memory node of a multi-node cluster', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config: testConfig() })
    try {
      const leader = await cluster.leader()
      const follower = cluster.ids().find((id) => id !== leader.nodeId)!
      let err: unknown
      try {
        cluster.restart(follower)
      } catch (e) {
        err = e
      }
      expect(err).toMatchObject({ code: 'ERR_STATE_LOST' })
      expect(cluster.isRunning(follower)).toBe(true)
      expect(() => cluster.stop(0)).toThrow(expect.objectContaining({ code: 'ERR_UNKNOWN_NODE' }))
      await leader.put('k', 'v')
    } finally {
      await cluster.close()
    }
  })
})

describe('LocalCluster over loopback gRPC', () => {
  const dir = tempDir()

  it('commits on the leader and through followers, converges, and survives a leader stop', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', transport: 'grpc', dataDir: join(dir, 'grpc'), config: testConfig() })
    try {
      const leader = await cluster.leader()
      const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
      await Promise.all(Array.from({ length: 200 }, (_, i) => leader.put(`k${i}`, `v${i}`)))
      await Promise.all(Array.from({ length: 200 }, (_, i) => follower.put(`f${i}`, `w${i}`)))
      for (const id of cluster.ids()) {
        expect(await snapshot(cluster.node(id), ['k0', 'k199', 'f0', 'f199'])).toEqual(['v0', 'v199', 'w0', 'w199'])
      }
      cluster.stop(leader.nodeId)
      const next = await cluster.leader()
      expect(next.nodeId).not.toBe(leader.nodeId)
      expect((await next.put('after', 'stop')).index).toBeGreaterThan(0)
      expect(() => cluster.hold(1, 2)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_CONFIG' }))
    } finally {
      await cluster.close()
    }
  })
})

describe('leadership transfer', () => {
  const dir = tempDir()

  it('moves leadership to each member in turn, asked of a follower or the leader; the leader reports each member\'s progress; refuses a node that is no voter', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'rocksdb', dataDir: join(dir, 'transfer'), config: testConfig() })
    try {
      let written = 0
      for (const askFollower of [true, false]) {
        for (const to of cluster.ids()) {
          const leader = await cluster.leader()
          const asked = askFollower ? cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!) : leader
          const moved = await asked.transferLeadership(to)
          expect(moved).toMatchObject({ id: to, isLeader: true, role: 'voter' })
          await eventually(() => cluster.ids().every((id) => cluster.node(id).leader()?.id === to))
          await cluster.node(to).put(`t${written}`, `v${written}`)
          written++
        }
      }
      for (const id of cluster.ids()) {
        for (let i = 0; i < written; i++) expect((await cluster.node(id).get(`t${i}`))?.toString()).toBe(`v${i}`)
      }
      const leader = await cluster.leader()
      // The leader knows each member's progress; a follower does not.
      await eventually(() => leader.members().every((m) => m.matchIndex !== undefined && m.lag === 0))
      expect(leader.members().map((m) => m.role)).toEqual(['voter', 'voter', 'voter'])
      const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
      expect(follower.members().every((m) => m.matchIndex === undefined && m.lag === undefined)).toBe(true)
      await expect(leader.transferLeadership(9)).rejects.toMatchObject({ code: 'ERR_UNKNOWN_NODE', outcome: 'not-applied' })
      await expect(leader.transferLeadership(1, { timeout: 5 } as never)).rejects.toThrow(/unknown option 'timeout'/)
      expect((await cluster.leader()).nodeId).toBe(leader.nodeId)
    } finally {
      await cluster.close()
    }
  })
})

describe('membership changes in one process', () => {
  const dir = tempDir()

  /** What `call` throws synchronously (a bad argument is refused before anything is sent). */
  function thrown(call: () => unknown): unknown {
    try {
      call()
    } catch (err) {
      return err
    }
    return undefined
  }

  it('addMember, promoteMember and removeMember refuse bad arguments with a TypeError naming them', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config: testConfig() })
    try {
      const node = await cluster.leader()
      const address = '127.0.0.1:7004'
      const bad: [() => unknown, string][] = [
        [() => node.addMember(4, address, { learner: false } as never), 'addMember: a new member joins as a learner (learner: true)'],
        [() => node.addMember(4, address, { voter: true } as never), "addMember: unknown option 'voter' (options: learner, timeoutMs)"],
        [() => node.addMember(4, 7004 as never), 'addMember: the address must be a host:port string, got number'],
        [() => node.addMember(0, address), 'addMember: the node id must be an integer 1..4294967295, got 0'],
        [() => node.addMember(4.5, address), 'addMember: the node id must be an integer 1..4294967295, got 4.5'],
        [() => node.addMember(2 ** 32, address), 'addMember: the node id must be an integer 1..4294967295, got 4294967296'],
        [() => node.addMember('4' as never, address), 'addMember: the node id must be an integer 1..4294967295, got 4'],
        [() => node.addMember(4, address, { timeoutMs: 0 }), 'addMember: timeoutMs must be a positive number of milliseconds, got 0'],
        [() => node.promoteMember(4, { timeout: 5 } as never), "promoteMember: unknown option 'timeout' (options: timeoutMs)"],
        [() => node.promoteMember(-1), 'promoteMember: the node id must be an integer 1..4294967295, got -1'],
        [() => node.promoteMember(4, { timeoutMs: Number.NaN }), 'promoteMember: timeoutMs must be a positive number of milliseconds, got NaN'],
        [() => node.removeMember(4, { force: 'yes' } as never), 'removeMember: force must be a boolean, got string'],
        [() => node.removeMember(4, { forced: true } as never), "removeMember: unknown option 'forced' (options: force, timeoutMs)"],
        [() => node.removeMember(Number.NaN), 'removeMember: the node id must be an integer 1..4294967295, got NaN'],
      ]
      for (const [call, message] of bad) {
        const err = thrown(call)
        expect(err, message).toBeInstanceOf(TypeError)
        expect((err as Error).message).toContain(message)
      }
    } finally {
      await cluster.close()
    }
  })

  it('a LocalCluster node refuses every change with ERR_CHANGE_REFUSED, not applied: its members are fixed', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config: testConfig() })
    try {
      const leader = await cluster.leader()
      const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
      for (const node of [leader, follower]) {
        const changes = [
          () => node.addMember(4, '127.0.0.1:7004'),
          () => node.addMember(4, '127.0.0.1:7004', { learner: true, timeoutMs: 5_000 }),
          () => node.promoteMember(follower.nodeId),
          () => node.removeMember(follower.nodeId),
          () => node.removeMember(follower.nodeId, { force: true }),
        ]
        for (const change of changes) {
          const err = await change().catch((e: unknown) => e)
          expect(err).toBeInstanceOf(MetaStoreError)
          expect(err).toMatchObject({ code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied', retryable: false })
          expect((err as Error).message).toMatch(/no membership record/)
        }
      }
      for (const id of cluster.ids()) {
        expect(cluster.node(id).members().map(({ id, role }) => ({ id, role }))).toEqual(cluster.ids().map((id) => ({ id, role: 'voter' })))
      }
      expect((await follower.put('after', 'v')).index).toBeGreaterThan(0)
      // A closed handle rejects (it does not throw) with ERR_CLOSED, not applied, as a write does.
      await follower.close()
      await expect(follower.addMember(4, '127.0.0.1:7004')).rejects.toMatchObject({ code: 'ERR_CLOSED', outcome: 'not-applied' })
      await expect(follower.removeMember(4)).rejects.toMatchObject({ code: 'ERR_CLOSED', outcome: 'not-applied' })
    } finally {
      await cluster.close()
    }
  })

  it('a one-member group adds a learner, refuses what it must, removes it and never takes its id again', async () => {
    const [port] = await freePorts(1)
    const own = `127.0.0.1:${port}`
    // A learner that never answered the leader is not promoted: as a voter it could cost the group its quorum.
    const config = testConfig((c) => (c.server.raft.promoteMaxLag = 1))
    const store = await Store.open({ config, engine: 'rocksdb', dataDir: join(dir, 'one'), nodeId: 1, initialCluster: { 1: own } })
    try {
      // Nothing listens at the learner's address: a learner need not be up to be added.
      const learner = '127.0.0.1:1'
      const added = await store.addMember(2, learner)
      expect(added).toEqual([
        { id: 1, address: own, role: 'voter' },
        { id: 2, address: learner, role: 'learner' },
      ])
      // members() is published before the change answers.
      const view = (): object[] => store.members().map(({ id, address, role }) => ({ id, address, role }))
      expect(view()).toEqual(added)
      for (let i = 0; i < 5; i++) await store.put(`k${i}`, 'v')
      const behind = await store.promoteMember(2).catch((e: unknown) => e)
      expect(behind).toMatchObject({ code: 'ERR_LEARNER_BEHIND', outcome: 'not-applied' })
      expect((behind as Error).message).toMatch(/has not answered the leader/)
      const refused: [() => Promise<unknown>, RegExp][] = [
        [() => store.addMember(3, learner), /node 2/], // the address is taken
        [() => store.addMember(1, '127.0.0.1:2'), /member already/],
        [() => store.addMember(3, 'no-port'), /not host:port/],
        [() => store.promoteMember(9), /not a member/],
        [() => store.removeMember(9), /not a member/],
        [() => store.removeMember(1), /only voter/],
      ]
      for (const [change, message] of refused) {
        const err = await change().catch((e: unknown) => e)
        expect(err).toMatchObject({ code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
        expect((err as Error).message).toMatch(message)
      }
      expect(view()).toEqual(added)
      // A change in effect already answers as done, so a caller may send one again after an unknown outcome.
      expect(await store.promoteMember(1)).toEqual(added)
      expect(await store.addMember(2, learner)).toEqual(added)
      const removed = await store.removeMember(2)
      expect(removed).toEqual([{ id: 1, address: own, role: 'voter' }])
      expect(view()).toEqual(removed)
      const reused = await store.addMember(2, '127.0.0.1:2').catch((e: unknown) => e)
      expect(reused).toMatchObject({ code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
      expect((reused as Error).message).toMatch(/never reused/)
      expect(view()).toEqual(removed)
      expect(await store.removeMember(2)).toEqual(removed)
      expect((await store.put('after', 'v')).index).toBeGreaterThan(0)
    } finally {
      await store.close()
    }
  })
})

describe('error outcomes', () => {
  it('a write proposed when its node stops ends with an unknown outcome; one refused after close was not applied', async () => {
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config: testConfig() })
    try {
      const leader = await cluster.leader()
      for (const id of cluster.ids()) if (id !== leader.nodeId) cluster.cut(leader.nodeId, id)
      const before = leader.stats().raft.lastIndex
      const pending = leader.put('k', 'v').catch((e: unknown) => e)
      await eventually(() => leader.stats().raft.lastIndex > before)
      cluster.stop(leader.nodeId)
      const err = await pending
      expect(err).toBeInstanceOf(MetaStoreError)
      expect(err).toMatchObject({ code: 'ERR_CLOSED', outcome: 'unknown', retryable: false })
      const refused = await leader.put('k', 'w').catch((e: unknown) => e)
      expect(refused).toMatchObject({ code: 'ERR_CLOSED', outcome: 'not-applied' })
    } finally {
      await cluster.close()
    }
  })
})

describe('exactly-once writes', () => {
  it('sends a write again when an attempt times out, applies it once and answers its first result', async () => {
    const config = testConfig((c) => {
      c.server.raft.proposalTimeoutMs = 200
      c.server.raft.requestTimeoutMs = 20_000
    })
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config })
    try {
      const leader = await cluster.leader()
      const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
      expect((await follower.put('k', 'v')).existed).toBe(false)
      await follower.put('x', '1')
      // The follower's writes reach the leader and commit, but it hears
      // nothing back: its attempts time out, and it sends them again.
      cluster.hold(leader.nodeId, follower.nodeId)
      const before = leader.stats().raft.commitIndex
      const deleted = follower.delete('k')
      const put = follower.put('x', '2')
      await eventually(async () => (await leader.get('k')) === undefined && (await leader.get('x'))?.toString() === '2')
      const committed = leader.stats().raft.commitIndex
      expect(committed).toBeGreaterThan(before)
      await eventually(() => follower.stats().client.retries >= 2)
      cluster.release(leader.nodeId, follower.nodeId)
      // Applied twice, the delete would answer false and the put existed = false.
      expect(await deleted).toBe(true)
      const { index, existed } = await put
      expect(existed).toBe(true)
      expect(index).toBeLessThanOrEqual(committed)
      expect((await follower.get('k')) ?? 'absent').toBe('absent')
    } finally {
      await cluster.close()
    }
  })

  it('ends with an unknown outcome when the attempts run out', async () => {
    const config = testConfig((c) => {
      c.server.raft.proposalTimeoutMs = 100
      c.server.raft.requestTimeoutMs = 400
    })
    const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config })
    try {
      const leader = await cluster.leader()
      const follower = cluster.node(cluster.ids().find((id) => id !== leader.nodeId)!)
      for (const id of cluster.ids()) if (id !== follower.nodeId) cluster.cut(follower.nodeId, id)
      const started = Date.now()
      const err = await follower.put('k', 'v').catch((e: unknown) => e)
      expect(Date.now() - started).toBeGreaterThanOrEqual(400)
      // The last attempt found no leader; an earlier one, forwarded, may have been applied.
      expect(err).toMatchObject({ outcome: 'unknown', retryable: false })
      expect(['ERR_TIMEOUT', 'ERR_PROPOSAL_DROPPED']).toContain((err as MetaStoreError).code)
      expect((err as Error).message).toMatch(/after \d+ attempts/)
      expect(follower.stats().client.retries).toBeGreaterThan(0)
      // A write that was certainly not applied is not sent again.
      const retries = follower.stats().client.retries
      const tooLarge = await leader.put('big', Buffer.alloc(2 << 20)).catch((e: unknown) => e)
      expect(tooLarge).toMatchObject({ code: 'ERR_TOO_LARGE', outcome: 'not-applied' })
      expect(follower.stats().client.retries).toBe(retries)
    } finally {
      await cluster.close()
    }
  })
})

describe('batching on and off', () => {
  it('gives identical final state', async () => {
    const states: (string | undefined)[][] = []
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`)
    for (const enable of [true, false]) {
      const config = testConfig((c) => (c.server.raft.batch.enable = enable))
      const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', config })
      try {
        const leader = await cluster.leader()
        for (let round = 0; round < 5; round++) {
          await Promise.all(keys.map((k, i) => (i % 7 === round ? leader.delete(k) : leader.put(k, `${k}-${round}`))))
        }
        const stats = leader.stats().batch
        if (enable) expect(stats.avgBatchSize).toBeGreaterThan(1)
        else expect(stats.avgBatchSize).toBe(1)
        states.push(await snapshot(leader, keys))
      } finally {
        await cluster.close()
      }
    }
    expect(states[0]).toEqual(states[1])
  })
})
