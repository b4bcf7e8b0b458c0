// `store.metrics()`, and `metastore serve` / `metastore status` as a user runs
// them: three serve processes on loopback, used through their HTTP API.
import { describe, expect, it } from 'vitest'

import { MetaStore } from '../ts/index.js'
import { METRIC_NAMES } from '../ts/metrics.js'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** The samples of a Prometheus text exposition. */
function samples(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]))
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const found = samples(text).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`)
  return found[0]!.value
}

describe('store.metrics()', () => {
  it("renders a single node's stats as Prometheus text, each metric described and labelled with the node id", async () => {
    const store = await MetaStore.open({ engine: 'memory' })
    try {
      for (let i = 0; i < 20; i++) await store.put(`k${i}`, 'v')
      const before = await store.metrics()
      for (let i = 0; i < 20; i++) await store.delete(`k${i}`)
      const after = await store.metrics()

      // A single node has no network end; every other figure is there, with its HELP and TYPE.
      const local = METRIC_NAMES.filter((n) => !n.startsWith('metastore_transport_'))
      for (const name of local) {
        expect(after).toMatch(new RegExp(`^# HELP ${name} \\S.*$`, 'm'))
        expect(after).toMatch(new RegExp(`^# TYPE ${name} ${name.endsWith('_total') ? 'counter' : 'gauge'}$`, 'm'))
      }
      expect(after).not.toContain('metastore_transport_')
      expect(new Set(samples(after).map((s) => s.name))).toEqual(new Set(local))
      for (const s of samples(after)) expect(s.labels.node_id).toBe('1')

      expect(value(after, 'metastore_raft_role', { role: 'leader' })).toBe(1)
      expect(value(after, 'metastore_raft_role', { role: 'follower' })).toBe(0)
      expect(value(after, 'metastore_raft_leader_id')).toBe(1)
      expect(value(after, 'metastore_storage_engine', { engine: 'memory' })).toBe(1)
      expect(value(before, 'metastore_batch_proposals_total')).toBeGreaterThanOrEqual(20)
      expect(value(after, 'metastore_batch_proposals_total')).toBeGreaterThanOrEqual(40)
      expect(value(after, 'metastore_raft_applied_index')).toBeGreaterThanOrEqual(value(before, 'metastore_raft_applied_index') + 20)
      expect(value(after, 'metastore_raft_commit_index')).toBeGreaterThanOrEqual(value(after, 'metastore_raft_applied_index'))
    } finally {
      await store.close()
    }
  })

  it('rejects with ERR_CLOSED once the store is closed', async () => {
    const store = await MetaStore.open({ engine: 'memory' })
    await store.close()
    await expect(store.metrics()).rejects.toMatchObject({ code: 'ERR_CLOSED' })
  })
})
