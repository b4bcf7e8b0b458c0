// A child process embedding one member of a group, driven by its parent over
// stdin and stdout, one JSON object per line. Argument: the JSON of a
// `MemberSpec`. It prints `{"ready":true}` once open, then answers each
// request `{id, op, key?, value?}` (op `stats`: the store's whole `stats()`)
// with `{id, ok, result}` or
// `{id, ok: false, code, outcome, message}`. SIGTERM closes the store first.
import { createInterface } from 'node:readline'

import { defaultConfig, MetaStore, MetaStoreError } from '../../ts/index.js'

export interface MemberSpec {
  nodeId: number
  /** How this member reaches each member (itself included, for the record). */
  initialCluster: Record<number, string>
  /** Where it listens, when the others reach it through something else (a proxy). */
  listen?: string
  /** The group's cluster token (the core's default when absent). */
  clusterToken?: string
  dataDir: string
  tickIntervalMs?: number
  proposalTimeoutMs?: number
  requestTimeoutMs?: number
  /** Applied entries between snapshots (log compaction). */
  snapshotCount?: number
  sync?: boolean
}

export interface MemberRequest {
  id: number
  op: 'put' | 'get' | 'delete' | 'status' | 'stats'
  key?: string
  value?: string
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as MemberSpec
  const config = defaultConfig()
  config.server.raft.tickIntervalMs = spec.tickIntervalMs ?? 10
  config.server.storage.sync = spec.sync ?? false
  if (spec.proposalTimeoutMs !== undefined) config.server.raft.proposalTimeoutMs = spec.proposalTimeoutMs
  if (spec.requestTimeoutMs !== undefined) config.server.raft.requestTimeoutMs = spec.requestTimeoutMs
  if (spec.snapshotCount !== undefined) config.server.raft.snapshotCount = spec.snapshotCount
  const store = await MetaStore.open({
    config,
    engine: 'rocksdb',
    dataDir: spec.dataDir,
    nodeId: spec.nodeId,
    initialCluster: spec.initialCluster,
    ...(spec.listen !== undefined && { listen: spec.listen }),
    ...(spec.clusterToken !== undefined && { clusterToken: spec.clusterToken }),
    leaderTimeoutMs: 60_000,
  })
  const reply = (msg: object): void => void process.stdout.write(`${JSON.stringify(msg)}\n`)
  const answer = async (req: MemberRequest): Promise<unknown> => {
    switch (req.op) {
      case 'put':
        return store.put(req.key!, req.value!)
      case 'get':
        return (await store.get(req.key!))?.toString() ?? null
      case 'delete':
        return store.delete(req.key!)
      case 'status': {
        const { raft } = store.stats()
        return { role: raft.role, leaderId: raft.leaderId, term: raft.term, appliedIndex: raft.appliedIndex }
      }
      case 'stats':
        return store.stats()
    }
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    const req = JSON.parse(line) as MemberRequest
    answer(req).then(
      (result) => reply({ id: req.id, ok: true, result }),
      (err: unknown) => {
        const e = err instanceof MetaStoreError ? err : undefined
        reply({ id: req.id, ok: false, code: e?.code, outcome: e?.outcome, message: String((err as Error)?.message ?? err) })
      },
    )
  })
  process.once('SIGTERM', () => {
    void store.close().then(() => process.exit(0))
  })
  reply({ ready: true })
}

main().catch((err: unknown) => {
  process.stderr.write(`member failed: ${String((err as Error)?.stack ?? err)}\n`)
  process.exit(1)
})
