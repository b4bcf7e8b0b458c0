// One member of a benchmark group in a process of its own, with a load
// generator next to it, driven by the runner over stdin and stdout, one JSON
// object per line. Argument: the JSON of a `MemberLoadSpec`. It prints
// `{"ready":true}` once its store is open, then answers each request with
// `{id, ok: true, result}` or `{id, ok: false, error}`:
//
// - `sample`: its role, the leader it knows, its CPU time so far and its
//   `stats()`;
// - `drive`: runs a load against its own store from this process (no client
//   protocol in between) and answers with the load result, histograms encoded
//   with hdr-histogram-js; while it runs, `{id, progress}` lines.
//
// SIGTERM, or the end of stdin (the runner is gone), closes the store and exits.
import { createInterface } from 'node:readline'

import { encodeIntoCompressedBase64 } from 'hdr-histogram-js'

import { describeError, runLoad, type LoadResult, type Progress } from '../load.js'
import type { LoadSpec } from '../scenarios.js'
import { Workload } from '../workload.js'
import { loadMetaStore, scenarioConfig, type Engine } from './metastore.js'

export interface MemberLoadSpec {
  nodeId: number
  /** Every member: node id to its loopback `host:port`. */
  initialCluster: Record<number, string>
  clusterToken: string
  dataDir: string
  engine: Engine
  batch: boolean
  /** How long to wait for the group's first leader. */
  leaderTimeoutMs: number
}

export type MemberLoadRequest =
  | { id: number; op: 'sample' }
  | { id: number; op: 'drive'; load: LoadSpec; durationMs: number; drainMs: number; seqStart: number }

/** A `LoadResult` as it crosses the pipe: histograms as compressed base64 (hdr-histogram-js). */
export type EncodedLoadResult = Omit<LoadResult, 'histograms'> & { histograms: { latency: string; service?: string } }

export interface MemberSample {
  nodeId: number
  role: string
  /** The leader this member knows; 0 while none. */
  leaderId: number
  term: number
  /** This process's CPU time so far (user + system, all threads), microseconds. */
  cpuUs: number
  stats: unknown
}

export type MemberLoadMessage =
  | { ready: true }
  | { id: number; ok: true; result: MemberSample | EncodedLoadResult }
  | { id: number; ok: false; error: string }
  | { id: number; progress: Progress }

/** How often a running drive reports its counts. */
const PROGRESS_MS = 500
/** How long closing the store may take before the process exits regardless. */
const CLOSE_MS = 10_000

const send = (msg: MemberLoadMessage): void => void process.stdout.write(`${JSON.stringify(msg)}\n`)

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as MemberLoadSpec
  const { MetaStore } = await loadMetaStore()
  const store = await MetaStore.open({
    config: await scenarioConfig(spec),
    engine: spec.engine,
    dataDir: spec.dataDir,
    nodeId: spec.nodeId,
    initialCluster: spec.initialCluster,
    clusterToken: spec.clusterToken,
    leaderTimeoutMs: spec.leaderTimeoutMs,
  })
  const workload = new Workload()
  const op = (seq: number) => store.put(workload.key(seq), workload.value(seq))

  const sample = (): MemberSample => {
    const stats = store.stats()
    const cpu = process.cpuUsage()
    return { nodeId: store.nodeId, role: stats.raft.role, leaderId: stats.raft.leaderId, term: stats.raft.term, cpuUs: cpu.user + cpu.system, stats }
  }

  const drive = async (req: Extract<MemberLoadRequest, { op: 'drive' }>): Promise<EncodedLoadResult> => {
    const progress: Progress = { acked: 0, errors: 0 }
    const timer = setInterval(() => send({ id: req.id, progress }), PROGRESS_MS)
    try {
      const { histograms, ...rest } = await runLoad(op, req.load, {
        durationMs: req.durationMs,
        drainMs: req.drainMs,
        seqStart: req.seqStart,
        progress,
      })
      return {
        ...rest,
        histograms: {
          latency: encodeIntoCompressedBase64(histograms.latency),
          ...(histograms.service && { service: encodeIntoCompressedBase64(histograms.service) }),
        },
      }
    } finally {
      clearInterval(timer)
    }
  }

  let closing = false
  const close = (): void => {
    if (closing) return
    closing = true
    setTimeout(() => process.exit(1), CLOSE_MS).unref()
    void store.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.once('SIGTERM', close)

  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    const req = JSON.parse(line) as MemberLoadRequest
    const answer = req.op === 'sample' ? Promise.resolve().then(sample) : drive(req)
    answer.then(
      (result) => send({ id: req.id, ok: true, result }),
      (err: unknown) => send({ id: req.id, ok: false, error: describeError(err) }),
    )
  })
  lines.once('close', close)
  send({ ready: true })
}

main().catch((err: unknown) => {
  process.stderr.write(`member failed: ${describeError(err)}\n`)
  process.exit(1)
})
