import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { decodeFromCompressedBase64 } from 'hdr-histogram-js'

import { onCleanup } from '../cleanup.js'
import { runSplit, type DriveOptions, type LoadResult, type Progress } from '../load.js'
import type { Drivers, LoadSpec } from '../scenarios.js'
import type { Engine } from './metastore.js'
import type { EncodedLoadResult, MemberLoadMessage, MemberLoadRequest, MemberLoadSpec, MemberSample } from './member-load.js'
import { freePorts, HOST } from './ports.js'
import type { SelfDrivenTarget, TargetSample } from './target.js'

const MEMBER = join(__dirname, 'member-load.ts')
/** `--import tsx` resolves from here. */
const REPO = resolve(__dirname, '..', '..')
const NODES = 3
/** Spawning node with tsx, loading the addon and opening RocksDB, on a loaded 2-core machine. */
const START_TIMEOUT_MS = 60_000
const LEADER_TIMEOUT_MS = 30_000
const SAMPLE_TIMEOUT_MS = 10_000
/** How long after its window and drain a drive may take to answer (encoding, a busy machine). */
const DRIVE_GRACE_MS = 15_000
const STOP_GRACE_MS = 5_000

export interface ProcessesSpec {
  engine: Engine
  batch: boolean
  drivers: Drivers
}

type Waiter = { resolve: (result: unknown) => void; reject: (err: Error) => void; progress?: (p: Progress) => void }

/** One member process (member-load.ts) and the requests waiting on it. */
class MemberProcess {
  readonly nodeId: number
  readonly child: ChildProcess
  /** The end of its stderr, for the error when it dies. */
  stderr = ''
  readonly ready: Promise<void>
  readonly exited: Promise<void>
  #next = 1
  readonly #waiting = new Map<number, Waiter>()

  constructor(spec: MemberLoadSpec) {
    this.nodeId = spec.nodeId
    this.child = spawn(process.execPath, ['--import', 'tsx', MEMBER, JSON.stringify(spec)], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    // A request written as the process dies meets EPIPE; the exit answers it.
    this.child.stdin!.on('error', () => {})
    this.child.stderr!.setEncoding('utf8')
    this.child.stderr!.on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4000)))
    let opened: () => void = () => {}
    const ready = new Promise<void>((resolve) => (opened = resolve))
    this.exited = new Promise((resolve) => {
      this.child.once('exit', () => resolve())
      this.child.once('error', (err) => {
        this.stderr += `\nspawn error: ${err.message}`
        resolve()
      })
    })
    const died = this.exited.then(() => {
      throw new Error(this.#death())
    })
    void this.exited.then(() => {
      for (const w of this.#waiting.values()) w.reject(new Error(this.#death()))
      this.#waiting.clear()
    })
    this.ready = Promise.race([ready, died])
    this.ready.catch(() => {})

    let buffered = ''
    this.child.stdout!.setEncoding('utf8')
    this.child.stdout!.on('data', (chunk: string) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      for (const line of lines) {
        let msg: MemberLoadMessage
        try {
          msg = JSON.parse(line) as MemberLoadMessage
        } catch {
          this.stderr = `${this.stderr}\n${line}`.slice(-4000)
          continue
        }
        if ('ready' in msg) opened()
        else if ('progress' in msg) this.#waiting.get(msg.id)?.progress?.(msg.progress)
        else {
          const w = this.#waiting.get(msg.id)
          this.#waiting.delete(msg.id)
          if (msg.ok) w?.resolve(msg.result)
          else w?.reject(new Error(`member ${this.nodeId}: ${msg.error}`))
        }
      }
    })
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  #death(): string {
    const how = this.child.signalCode ?? `code ${this.child.exitCode}`
    return `member ${this.nodeId} exited (${how}): ${this.stderr.trim().slice(-500)}`
  }

  /** Sends one request; rejects when the answer takes longer than `timeoutMs` or the process dies. */
  request<T>(req: DistributiveOmit<MemberLoadRequest, 'id'>, timeoutMs: number, progress?: (p: Progress) => void): Promise<T> {
    if (!this.running) return Promise.reject(new Error(this.#death()))
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id)
        reject(new Error(`member ${this.nodeId} did not answer ${req.op} within ${timeoutMs} ms`))
      }, timeoutMs)
      const done = <A extends unknown[]>(f: (...a: A) => void) => (...a: A) => {
        clearTimeout(timer)
        f(...a)
      }
      this.#waiting.set(id, { resolve: done(resolve as (r: unknown) => void), reject: done(reject), progress })
      this.child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`)
    })
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal)
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

function decode(r: EncodedLoadResult): LoadResult {
  return {
    ...r,
    histograms: {
      latency: decodeFromCompressedBase64(r.histograms.latency),
      ...(r.histograms.service !== undefined && { service: decodeFromCompressedBase64(r.histograms.service) }),
    },
  }
}

/** A group of three member processes on loopback, each with a load generator beside its member. */
class ProcessGroup {
  readonly #members: MemberProcess[]
  readonly #dirs: string[]
  #unregister: () => void = () => {}

  private constructor(members: MemberProcess[], dirs: string[]) {
    this.#members = members
    this.#dirs = dirs
  }

  static async start(spec: ProcessesSpec, dir: string): Promise<ProcessGroup> {
    const ports = await freePorts(NODES)
    const initialCluster = Object.fromEntries(ports.map((p, i) => [i + 1, `${HOST}:${p}`]))
    // A token of its own, so a member of another group left on a reused port is refused.
    const clusterToken = `metastore-bench-${randomBytes(4).toString('hex')}`
    const dirs = ports.map((_, i) => join(dir, `n${i + 1}`))
    for (const d of dirs) mkdirSync(d, { recursive: true })
    const members = dirs.map(
      (dataDir, i) =>
        new MemberProcess({
          nodeId: i + 1,
          initialCluster,
          clusterToken,
          dataDir,
          engine: spec.engine,
          batch: spec.batch,
          leaderTimeoutMs: LEADER_TIMEOUT_MS,
        }),
    )
    const group = new ProcessGroup(members, dirs)
    group.#unregister = onCleanup(() => group.#kill('SIGKILL'))
    try {
      const opening = new AbortController()
      try {
        await Promise.race([
          Promise.all(members.map((m) => m.ready)),
          sleep(START_TIMEOUT_MS, undefined, { signal: opening.signal }).then(() => {
            throw new Error(`the member processes did not open within ${START_TIMEOUT_MS} ms`)
          }),
        ])
      } finally {
        opening.abort()
      }
      await group.#agreedLeader()
    } catch (err) {
      await group.stop()
      throw err
    }
    return group
  }

  /** Every member's sample. */
  sample(): Promise<MemberSample[]> {
    return Promise.all(this.#members.map((m) => m.request<MemberSample>({ op: 'sample' }, SAMPLE_TIMEOUT_MS)))
  }

  /** Waits until one member leads and the others know it. */
  async #agreedLeader(): Promise<void> {
    const deadline = Date.now() + LEADER_TIMEOUT_MS
    for (;;) {
      const samples = await this.sample()
      const leader = samples.find((s) => s.role === 'leader')
      if (leader && samples.every((s) => s.leaderId === leader.nodeId)) return
      if (Date.now() > deadline) throw new Error(`no leader all members agree on within ${LEADER_TIMEOUT_MS} ms`)
      await sleep(50)
    }
  }

  /**
   * Runs `load` in the member processes `drivers` names: the leader's alone,
   * or all three, each with its share against its own member (followers
   * first, so a remainder of the in-flight count goes to a follower and `c1`
   * measures a forwarded write). The results are merged into one.
   */
  async drive(drivers: Drivers, load: LoadSpec, d: DriveOptions): Promise<LoadResult> {
    const samples = await this.sample()
    const leader = samples.find((s) => s.role === 'leader')?.nodeId
    if (leader === undefined) throw new Error('no member leads')
    const byId = (id: number) => this.#members.find((m) => m.nodeId === id)!
    const chosen =
      drivers === 'leader' ? [byId(leader)] : [...this.#members.filter((m) => m.nodeId !== leader), byId(leader)]
    const counts = new Map<number, Progress>()
    const base = d.progress ? { ...d.progress } : undefined
    const onProgress = (id: number) => (p: Progress) => {
      counts.set(id, p)
      if (!d.progress || !base) return
      d.progress.acked = base.acked + [...counts.values()].reduce((sum, c) => sum + c.acked, 0)
      d.progress.errors = base.errors + [...counts.values()].reduce((sum, c) => sum + c.errors, 0)
    }
    const merged = await runSplit(load, chosen.length, d.seqStart ?? 0, async (share, i, seqStart) => {
      const m = chosen[i]!
      const r = await m.request<EncodedLoadResult>(
        { op: 'drive', load: share, durationMs: d.durationMs, drainMs: d.drainMs, seqStart },
        d.durationMs + d.drainMs + DRIVE_GRACE_MS,
        onProgress(m.nodeId),
      )
      return decode(r)
    })
    if (d.progress && base) {
      d.progress.acked = base.acked + merged.acked
      d.progress.errors = base.errors + merged.errors
    }
    return merged
  }

  #kill(signal: NodeJS.Signals): void {
    for (const m of this.#members) m.kill(signal)
  }

  /** SIGTERM (the member closes its store), then SIGKILL after a grace period; removes the data dirs. */
  async stop(): Promise<void> {
    this.#kill('SIGTERM')
    const all = Promise.all(this.#members.map((m) => m.exited))
    if ((await Promise.race([all, sleep(STOP_GRACE_MS, 'timeout' as const)])) === 'timeout') {
      this.#kill('SIGKILL')
      await Promise.race([all, sleep(STOP_GRACE_MS)])
    }
    this.#unregister()
    for (const d of this.#dirs) rmSync(d, { recursive: true, force: true })
  }
}

/** The figures of the whole group from one sample of each member. */
function groupSample(samples: MemberSample[]): TargetSample {
  type Stats = {
    raft: { logWrites: number }
    batch: { totalProposals: number; totalBatches: number }
    storage: { syncs: number; syncMicros: number }
    transport?: { messagesSent: number; bytesSent: number; messagesReceived: number; bytesReceived: number }
  }
  const stats = (s: MemberSample) => s.stats as Stats
  const sum = (f: (s: Stats) => number | undefined) => samples.reduce((total, s) => total + (f(stats(s)) ?? 0), 0)
  const leader = samples.find((s) => s.role === 'leader')
  const proposals = sum((s) => s.batch.totalProposals)
  const batches = sum((s) => s.batch.totalBatches)
  return {
    externalCpuUs: samples.reduce((total, s) => total + s.cpuUs, 0),
    // Every member batches the puts of its own load generator; a follower forwards each batch as one entry.
    batch: { proposals, batches, avgBatchSize: batches > 0 ? proposals / batches : NaN },
    ...(leader && {
      log: {
        writes: stats(leader).raft.logWrites,
        syncs: stats(leader).storage.syncs,
        syncMicros: stats(leader).storage.syncMicros,
      },
    }),
    transport: {
      messagesSent: sum((s) => s.transport?.messagesSent),
      bytesSent: sum((s) => s.transport?.bytesSent),
      messagesReceived: sum((s) => s.transport?.messagesReceived),
      bytesReceived: sum((s) => s.transport?.bytesReceived),
    },
    leaderId: leader?.nodeId,
    detail: { leaderId: leader?.nodeId, nodes: samples },
  }
}

/**
 * MetaStore as three member processes on loopback (gRPC between members),
 * each with a load generator in its process; the runner only starts them,
 * tells them when to drive and collects their results and counters.
 */
export async function startProcesses(spec: ProcessesSpec, dir: string): Promise<SelfDrivenTarget> {
  const group = await ProcessGroup.start(spec, dir)
  return {
    drive: (load, d) => group.drive(spec.drivers, load, d),
    sample: async () => groupSample(await group.sample()),
    close: () => group.stop(),
  }
}
