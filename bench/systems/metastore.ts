import type { Engine } from '../../ts/index.js'
import type { Target } from './target.js'

type MetaStoreModule = typeof import('../../ts/index.js')

// A type-only import: it does not load the addon.
export type { Engine }

export interface MetaStoreSpec {
  engine: Engine
  batch: boolean
}

let loading: Promise<MetaStoreModule> | undefined

/**
 * The package, loaded on first use: without a native build the runner still
 * runs the etcd half and reports why the MetaStore half was skipped.
 */
export function loadMetaStore(): Promise<MetaStoreModule> {
  loading ??= import('../../ts/index.js')
  return loading
}

/** The config a scenario runs with: the defaults, with batching and sync set by the scenario. */
export async function scenarioConfig(spec: MetaStoreSpec) {
  const { defaultConfig } = await loadMetaStore()
  const config = defaultConfig()
  config.server.raft.batch.enable = spec.batch
  // RocksDB scenarios fsync every Ready, as in production; memory has nothing to sync.
  config.server.storage.sync = spec.engine === 'rocksdb'
  return config
}

/** A fresh 3-node in-process cluster in `dataDir`; the load goes to the leader's handle. */
export async function startMetaStore(spec: MetaStoreSpec, dataDir: string): Promise<Target> {
  const { LocalCluster } = await loadMetaStore()
  const config = await scenarioConfig(spec)
  const cluster = await LocalCluster.start({ nodes: 3, engine: spec.engine, dataDir, config })
  let leader
  try {
    leader = await cluster.leader()
  } catch (err) {
    await cluster.close()
    throw err
  }
  const store = leader
  return {
    put: (key, value) => store.put(key, value),
    sample: () => {
      const stats = store.stats()
      const b = stats.batch
      return {
        externalCpuUs: 0,
        batch: { proposals: b.totalProposals, batches: b.totalBatches, avgBatchSize: b.avgBatchSize },
        log: {
          writes: stats.raft.logWrites,
          syncs: stats.storage.syncs,
          syncMicros: stats.storage.syncMicros,
        },
        detail: stats,
      }
    },
    close: () => cluster.close(),
  }
}
