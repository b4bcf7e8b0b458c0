import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { decodeBatch, MetaStoreError, ProposalBatcher } from '../ts/index.js'

function collect() {
  const batches: { proposals: string[]; count: number }[] = []
  const onBatch = (batch: Buffer, count: number) => {
    batches.push({ proposals: decodeBatch(batch).map(String), count })
  }
  return { batches, onBatch, all: () => batches.flatMap((b) => b.proposals) }
}

describe('ProposalBatcher', () => {
  it('delivers every proposal once, in order, and stop loses none', async () => {
    const { batches, onBatch, all } = collect()
    const batcher = new ProposalBatcher({ maxBatchSize: 64 }, onBatch)
    batcher.start()
    const sent = Array.from({ length: 20_000 }, (_, i) => `p${i}`)
    for (const p of sent) batcher.propose(p)
    await batcher.stop()
    expect(all()).toEqual(sent)
    for (const b of batches) expect(b.proposals.length).toBe(b.count)
    expect(batches.length).toBeLessThan(sent.length)
  })

  it('batches under load and reports stats that add up', async () => {
    const { batches, onBatch } = collect()
    const batcher = new ProposalBatcher({}, onBatch)
    batcher.start()
    for (let i = 0; i < 5_000; i++) batcher.propose(Buffer.from([i & 255, i >> 8]))
    await batcher.stop()
    const s = batcher.stats()
    expect(s.totalProposals).toBe(5_000)
    expect(s.totalBatches).toBe(batches.length)
    expect(s.flushesBySize + s.flushesByDeadline + s.flushesByIdle + s.flushesByStop).toBe(s.totalBatches)
    expect(s.avgBatchSize).toBeCloseTo(5_000 / s.totalBatches, 5)
    expect(s.avgBatchSize).toBeGreaterThan(1)
    expect(s.latency.count).toBe(5_000)
    expect(s.latency.p99Us).toBeGreaterThanOrEqual(s.latency.p50Us)
  })

  it('sends a lone proposal at once, alone, when nothing is in flight', async () => {
    const { batches, onBatch } = collect()
    const batcher = new ProposalBatcher({ minTimeoutMs: 10_000, maxTimeoutMs: 10_000 }, onBatch)
    batcher.start()
    for (let i = 0; i < 3; i++) {
      batcher.propose(`solo${i}`)
      // Without the idle flush this would wait for the 10 s deadline.
      while (batches.length <= i) await sleep(1)
    }
    expect(batches.map((b) => b.count)).toEqual([1, 1, 1])
    expect(batcher.stats().flushesByIdle).toBe(3)
    await batcher.stop()
  })

  it('with enable: false every proposal is its own batch', async () => {
    const { batches, onBatch } = collect()
    const batcher = new ProposalBatcher({ enable: false }, onBatch)
    batcher.start()
    for (let i = 0; i < 500; i++) batcher.propose(`x${i}`)
    await batcher.stop()
    expect(batches.length).toBe(500)
    expect(batches.every((b) => b.count === 1)).toBe(true)
  })

  it('rejects bad input with clear errors and no crash', async () => {
    const batcher = new ProposalBatcher({ maxProposalBytes: 16 }, () => {})
    expect(() => batcher.propose('early')).toThrow(MetaStoreError)
    batcher.start()
    expect(() => batcher.propose(42 as never)).toThrow(TypeError)
    expect(() => batcher.propose({} as never)).toThrow(TypeError)
    try {
      batcher.propose(Buffer.alloc(17))
      expect.unreachable()
    } catch (err) {
      expect((err as MetaStoreError).code).toBe('ERR_TOO_LARGE')
    }
    await batcher.stop()
    await batcher.stop() // idempotent
    try {
      batcher.propose('late')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(MetaStoreError)
      expect((err as MetaStoreError).code).toBe('ERR_CLOSED')
    }
  })

  it('rejects an invalid config with ERR_INVALID_CONFIG naming the key', () => {
    try {
      new ProposalBatcher({ minBatchSize: 300, maxBatchSize: 256 }, () => {})
      expect.unreachable()
    } catch (err) {
      expect((err as MetaStoreError).code).toBe('ERR_INVALID_CONFIG')
      expect((err as Error).message).toContain('min_batch_size')
    }
  })
})
