// A child process embedding one member of a group, driven by its parent over
// stdin and stdout, one JSON object per line. Argument: the JSON of a
// `MemberSpec`. It prints `{"ready":true}` once open (or `{"failed":{code,
// message}}` when the open fails, then exits 1), then answers each request
// `{id, op, key?, value?, node?, address?, force?, timeoutMs?}` (op `stats`:
// the store's whole `stats()`; the membership ops take `node`, the id they
// act on) with `{id, ok, result}` or `{id, ok: false, code, outcome,
// message}`. SIGTERM closes the store first.
import { createInterface } from 'node:readline'

import { defaultConfig, MetaStore, MetaStoreError } from '../../ts/index.js'

export interface MemberSpec {
  nodeId: number
  /** How this member reaches each member (itself included, for the record); empty with `join`. */
  initialCluster: Record<number, string>
  /** Start empty and wait to be added to a running group (needs `advertise`; listens there unless `listen`). */
  join?: boolean
  /** Where the others dial it (given with `join`). */
  advertise?: string
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
  /** How far behind the leader's commit index a learner may be and still be promoted. */
  promoteMaxLag?: number
  sync?: boolean
  /** How long the open waits for a leader (60 s when absent; a joining node does not wait). */
  leaderTimeoutMs?: number
}

export interface MemberRequest {
  id: number
  op:
    | 'put'
    | 'get'
    | 'delete'
    | 'status'
    | 'stats'
    | 'members'
    | 'addMember'
    | 'promoteMember'
    | 'removeMember'
    | 'transferLeadership'
  key?: string
  value?: string
  /** The node a membership op or a transfer acts on. */
  node?: number
  /** Where the group dials the node added (`addMember`). */
  address?: string
  /** `removeMember` even without a live quorum left. */
  force?: boolean
  timeoutMs?: number
}

const reply = (msg: object): void => void process.stdout.write(`${JSON.stringify(msg)}\n`)

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as MemberSpec
  const config = defaultConfig()
  config.server.raft.tickIntervalMs = spec.tickIntervalMs ?? 10
  config.server.storage.sync = spec.sync ?? false
  if (spec.proposalTimeoutMs !== undefined) config.server.raft.proposalTimeoutMs = spec.proposalTimeoutMs
  if (spec.requestTimeoutMs !== undefined) config.server.raft.requestTimeoutMs = spec.requestTimeoutMs
  if (spec.snapshotCount !== undefined) config.server.raft.snapshotCount = spec.snapshotCount
  if (spec.promoteMaxLag !== undefined) config.server.raft.promoteMaxLag = spec.promoteMaxLag
  const store = await MetaStore.open({
    config,
    engine: 'rocksdb',
    dataDir: spec.dataDir,
    nodeId: spec.nodeId,
    ...(spec.join === true ? { join: true } : { initialCluster: spec.initialCluster }),
    ...(spec.advertise !== undefined && { advertise: spec.advertise }),
    ...(spec.listen !== undefined && { listen: spec.listen }),
    ...(spec.clusterToken !== undefined && { clusterToken: spec.clusterToken }),
    leaderTimeoutMs: spec.leaderTimeoutMs ?? 60_000,
  }).catch((err: unknown) => {
    const e = err instanceof MetaStoreError ? err : undefined
    reply({ failed: { code: e?.code, message: String((err as Error)?.message ?? err) } })
    throw err
  })
  const answer = async (req: MemberRequest): Promise<unknown> => {
    const timeout = req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {}
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
      case 'members':
        return store.members()
      case 'addMember':
        return store.addMember(req.node!, req.address!, { learner: true, ...timeout })
      case 'promoteMember':
        return store.promoteMember(req.node!, timeout)
      case 'removeMember':
        return store.removeMember(req.node!, { ...(req.force !== undefined && { force: req.force }), ...timeout })
      case 'transferLeadership':
        return store.transferLeadership(req.node!, timeout)
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
