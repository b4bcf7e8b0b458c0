import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { MetaStore, MetaStoreError } from '../ts/index.js'
import { tempDir, testConfig } from './helpers.js'

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(MetaStoreError)
    return (err as MetaStoreError).code
  }
  return undefined
}

for (const engine of ['memory', 'rocksdb'] as const) {
  describe(`MetaStore on ${engine}`, () => {
    const dir = tempDir()

    it('puts, gets and deletes with results a caller can use', async () => {
      const store = await MetaStore.open({ engine, dataDir: join(dir, 'crud'), config: testConfig() })
      try {
        const first = await store.put('k1', 'v1')
        expect(first.existed).toBe(false)
        const second = await store.put('k1', 'v2')
        expect(second.existed).toBe(true)
        expect(second.index).toBeGreaterThan(first.index)
        expect(String(await store.get('k1'))).toBe('v2')
        expect(await store.get('missing')).toBeUndefined()
        expect(await store.delete('k1')).toBe(true)
        expect(await store.delete('k1')).toBe(false)
        expect(await store.get('k1')).toBeUndefined()

        const key = Buffer.from([0, 255, 0xc1, 10])
        const value = Buffer.from([0xc1, 0, 1, 2, 255])
        await store.put(key, value)
        expect(await store.get(key)).toEqual(value)

        const stats = store.stats()
        expect(stats.raft.role).toBe('leader')
        expect(stats.raft.appliedIndex).toBeGreaterThanOrEqual(second.index)
        expect(stats.storage.engine).toBe(engine)
      } finally {
        await store.close()
      }
    })

    it('batches concurrent writes and keeps sequential writes unbatched', async () => {
      const store = await MetaStore.open({ engine, dataDir: join(dir, 'batch'), config: testConfig(), sync: true })
      try {
        for (let i = 0; i < 50; i++) await store.put(`seq${i}`, 'x')
        const sequential = store.stats().batch
        expect(sequential.avgBatchSize).toBe(1)
        expect(sequential.flushesByIdle).toBe(sequential.totalBatches)
        const seqRaft = store.stats().raft
        // One put at a time: each needs its own log write (synced on rocksdb with sync on).
        expect(seqRaft.logWrites).toBeGreaterThanOrEqual(50)
        const storage = store.stats().storage
        if (engine === 'rocksdb') {
          expect(storage.syncs).toBeGreaterThanOrEqual(50) // the WAL fsyncs, timed
          expect(storage.syncMicros).toBeGreaterThan(0)
        } else {
          expect(storage.syncs).toBe(0) // nothing to sync in memory
        }

        await Promise.all(Array.from({ length: 2000 }, (_, i) => store.put(`con${i}`, `v${i}`)))
        const after = store.stats().batch
        const batches = after.totalBatches - sequential.totalBatches
        const concurrentAvg = (after.totalProposals - sequential.totalProposals) / batches
        expect(concurrentAvg).toBeGreaterThan(4)
        const writes = store.stats().raft.logWrites - seqRaft.logWrites
        expect(writes).toBeGreaterThan(0)
        // The log follows the batches, not the puts: at most one write for a
        // batch's entries and one for its commit (fewer when a round takes
        // several batches). How large the batches get depends on how fast
        // the node drains them against this thread's submissions (on a busy
        // machine 4-8 puts each, 250-600 log writes), so the bound is on
        // writes per batch, and the batches' size is checked above.
        expect(writes).toBeLessThanOrEqual(2 * batches + 2)
        expect(String(await store.get('con1999'))).toBe('v1999')
      } finally {
        await store.close()
      }
    })

    it('rejects bad input without crashing', async () => {
      const store = await MetaStore.open({
        engine,
        dataDir: join(dir, 'bad'),
        config: testConfig((c) => (c.server.raft.batch.maxProposalBytes = 1024)),
      })
      expect(await codeOf(store.put('big', Buffer.alloc(4096)))).toBe('ERR_TOO_LARGE')
      expect(() => store.put(42 as never, 'x')).toThrow(TypeError)
      await store.put('ok', 'still works')
      await store.close()
      await store.close()
      expect(await codeOf(store.put('k', 'v'))).toBe('ERR_CLOSED')
      expect(await codeOf(store.get('k'))).toBe('ERR_CLOSED')
      expect(() => store.stats()).toThrow(MetaStoreError)
    })

    it('keeps the order of requests made in one tick; a refused one fails alone', async () => {
      const store = await MetaStore.open({
        engine,
        dataDir: join(dir, 'tick'),
        config: testConfig((c) => (c.server.raft.batch.maxProposalBytes = 512 << 10)),
      })
      try {
        const big = Buffer.alloc(300 << 10, 7) // several of these outgrow one flush buffer
        const text = 'ключ 🙂 ✓ \u0000 end'
        // Writes of one tick apply in call order; reads are not ordered
        // against writes still in flight, so they come after.
        const results = [
          store.put('a', '1'),
          store.put('a', '2'),
          store.put('huge', Buffer.alloc(600 << 10)),
          store.put(text, text),
          store.put('big1', big),
          store.put('big2', big),
          store.put('big3', big),
          store.delete('a'),
          store.delete('a'),
        ]
        const settled = await Promise.allSettled(results)
        const value = (i: number) => (settled[i] as PromiseFulfilledResult<any>).value
        expect(settled.map((s) => s.status)).toEqual([...Array(2).fill('fulfilled'), 'rejected', ...Array(6).fill('fulfilled')])
        expect(((settled[2] as PromiseRejectedResult).reason as MetaStoreError).code).toBe('ERR_TOO_LARGE')
        expect(value(0).existed).toBe(false)
        expect(value(1).existed).toBe(true)
        expect([value(7), value(8)]).toEqual([true, false])
        expect(await store.get('a')).toBeUndefined()
        expect((await store.get(text))?.toString('utf8')).toBe(text)
        expect(await store.get('big3')).toEqual(big)
        const indexes = [0, 1, 3, 4, 5, 6, 7].map((i) => value(i).index as number)
        expect([...indexes].sort((x, y) => x - y)).toEqual(indexes)
      } finally {
        await store.close()
      }
    })

    it('settles requests made just before close', async () => {
      const store = await MetaStore.open({ engine, dataDir: join(dir, 'close'), config: testConfig() })
      const pending = Array.from({ length: 100 }, (_, i) => store.put(`k${i}`, 'v'))
      await store.close()
      const codes = await Promise.all(pending.map((p) => codeOf(p)))
      for (const code of codes) expect([undefined, 'ERR_CLOSED']).toContain(code)
    })
  })
}

describe('MetaStore.open options', () => {
  it('names a bad option, and starts nothing', async () => {
    const bad = async (options: object): Promise<unknown> => MetaStore.open(options as never).then(() => undefined, (e: unknown) => e)
    expect(await bad({ nodeID: 1 })).toMatchObject({ code: 'ERR_INVALID_CONFIG', key: 'nodeID' })
    expect(await bad({ nodeId: 1 })).toMatchObject({ code: 'ERR_INVALID_CONFIG', key: 'initialCluster' })
    expect(await bad({ nodeId: 4, initialCluster: { 1: '127.0.0.1:1' } })).toMatchObject({ code: 'ERR_INVALID_CONFIG', key: 'nodeId' })
    expect(await bad({ nodeId: 1, initialCluster: { x: 'a:1' } })).toMatchObject({ key: 'initialCluster.x' })
    expect(await bad({ listen: '0.0.0.0:1' })).toMatchObject({ key: 'listen' })
    const shared = await bad({ nodeId: 1, initialCluster: { 1: '127.0.0.1:7', 2: '127.0.0.1:7' }, engine: 'rocksdb' })
    expect(shared).toMatchObject({ code: 'ERR_INVALID_CONFIG' })
    expect((shared as Error).message).toBe("<options>: initialCluster.2 ('127.0.0.1:7') is also node 1's address")
    const noPort = await bad({ nodeId: 1, initialCluster: { 1: '127.0.0.1:7', 2: 'host-b' }, engine: 'rocksdb' })
    expect((noPort as Error).message).toMatch(/^<options>: initialCluster\.2 \('host-b'\) must be host:port/)
    const volatile = await bad({ nodeId: 1, initialCluster: { 1: '127.0.0.1:7', 2: '127.0.0.1:8' }, engine: 'memory' })
    expect((volatile as Error).message).toMatch(/storage\.engine: a member of a multi-node group must keep its state/)
  })
})

describe('MetaStore on rocksdb, durability and bad data dirs', () => {
  const dir = tempDir()

  it('keeps every acknowledged write across a reopen', async () => {
    const dataDir = join(dir, 'reopen')
    let store = await MetaStore.open({ engine: 'rocksdb', dataDir, config: testConfig() })
    await Promise.all(Array.from({ length: 500 }, (_, i) => store.put(`k${i}`, `v${i}`)))
    await store.delete('k7')
    await store.close()
    store = await MetaStore.open({ engine: 'rocksdb', dataDir, config: testConfig() })
    try {
      for (let i = 0; i < 500; i++) {
        expect(String(await store.get(`k${i}`) ?? '<none>')).toBe(i === 7 ? '<none>' : `v${i}`)
      }
      expect((await store.put('k1', 'again')).existed).toBe(true)
    } finally {
      await store.close()
    }
  })

  it('reports an unwritable data dir as ERR_STORAGE naming the path', async () => {
    const file = join(dir, 'not-a-dir')
    writeFileSync(file, 'plain file')
    const err = await MetaStore.open({ engine: 'rocksdb', dataDir: file, config: testConfig() }).catch((e) => e)
    expect(err).toBeInstanceOf(MetaStoreError)
    expect(err.code).toBe('ERR_STORAGE')
    expect(err.message).toContain('not-a-dir')
  })

  it('reports a corrupted data dir as ERR_STORAGE', async () => {
    const dataDir = join(dir, 'corrupt')
    const store = await MetaStore.open({ engine: 'rocksdb', dataDir, config: testConfig() })
    await store.put('k', 'v')
    await store.close()
    writeFileSync(join(dataDir, 'node-1', 'CURRENT'), 'garbage\n')
    const err = await MetaStore.open({ engine: 'rocksdb', dataDir, config: testConfig() }).catch((e) => e)
    expect(err).toBeInstanceOf(MetaStoreError)
    expect(err.code).toBe('ERR_STORAGE')
  })

  it('rejects invalid options with ERR_INVALID_CONFIG', async () => {
    const bad = testConfig((c) => {
      c.server.raft.batch.minBatchSize = 300
    })
    const err = await MetaStore.open({ engine: 'memory', config: bad }).catch((e) => e)
    expect(err).toBeInstanceOf(MetaStoreError)
    expect(err.code).toBe('ERR_INVALID_CONFIG')
    expect(err.message).toContain('server.raft.batch.minBatchSize (300) must be <= maxBatchSize (256)')
  })
})
