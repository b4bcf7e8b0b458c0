// `npx vitest bench --run bench/store.bench.ts`: put and get through the
// TypeScript facade on the memory engine, for a single-node store and for the
// leader of a 3-node in-process cluster. "x256" iterations issue 256 requests
// at once and wait for all of them, so requests/s there is hz x 256.
// vitest does not run beforeAll/afterAll around benches, so each group opens
// its store in the bench `setup` hook and closes it after its last bench.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { bench, describe } from 'vitest'

import { defaultConfig, LocalCluster, MetaStore } from '../ts/index.js'
import { Workload } from './workload.js'

const CONCURRENT = 256
const workload = new Workload(4096)

interface Opened {
  store: MetaStore
  close(): Promise<void>
}

/** A store opened by the first bench of a group and closed after the group's `benches` runs. */
function group(open: (dir: string) => Promise<Opened>, benches: number) {
  let opening: Promise<Opened> | undefined
  let current: MetaStore | undefined
  let left = benches
  let dir = ''
  const options = {
    time: 1_000,
    warmupTime: 200,
    setup: async () => {
      dir ||= mkdtempSync(join(tmpdir(), 'metastore-vitest-bench-'))
      opening ??= open(dir).then(async (o) => {
        // Keys for the get benches, so reads return values.
        await Promise.all(workload.keys.map((k, i) => o.store.put(k, workload.value(i))))
        return o
      })
      current = (await opening).store
    },
    teardown: async (_task: unknown, mode?: 'run' | 'warmup') => {
      if (mode !== 'run' || --left > 0 || !opening) return
      await (await opening).close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  let seq = 0
  return {
    options,
    put: () => current!.put(workload.key(seq), workload.value(seq++)),
    get: () => current!.get(workload.key(seq++)),
  }
}

function paths(g: ReturnType<typeof group>): void {
  bench('put, sequential', async () => {
    await g.put()
  }, g.options)
  bench(`put x${CONCURRENT} concurrent`, async () => {
    await Promise.all(Array.from({ length: CONCURRENT }, g.put))
  }, g.options)
  bench('get, sequential', async () => {
    await g.get()
  }, g.options)
  bench(`get x${CONCURRENT} concurrent`, async () => {
    await Promise.all(Array.from({ length: CONCURRENT }, g.get))
  }, g.options)
}

const BENCHES_PER_GROUP = 4

describe('MetaStore, memory, 1 node', () => {
  paths(
    group(async (dataDir) => {
      const store = await MetaStore.open({ engine: 'memory', dataDir, config: defaultConfig() })
      return { store, close: () => store.close() }
    }, BENCHES_PER_GROUP),
  )
})

describe('LocalCluster, memory, 3 nodes, on the leader', () => {
  paths(
    group(async (dataDir) => {
      const cluster = await LocalCluster.start({ nodes: 3, engine: 'memory', dataDir, config: defaultConfig() })
      return { store: await cluster.leader(), close: () => cluster.close() }
    }, BENCHES_PER_GROUP),
  )
})
