// `npm start` in a clone: three `metastore serve` processes on loopback
// (RocksDB in a temp dir) under a mixed put/get/delete load sent over HTTP
// from this process. At 40% of the run the leader is killed with SIGKILL, and
// the group replaces it while it serves, through the membership API (the
// README's recipe): a new node started with `join: true` is added as a
// learner, promoted once it caught up, and the dead id removed. The killed
// node is then started again on its old data: the group refuses it. A live
// line shows throughput, p99, the leader and each node's applied index; the
// summary says how long writes stalled, how soon a new leader took over, how
// long each step of the replacement took, whether the new member caught up,
// and whether every acknowledged write is still there. Exits 1 if a check
// fails.
//
// Run by tsx from the sources; it is not part of the published package, so
// its progress bar and histogram stay dev dependencies.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

import { Presets, SingleBar } from 'cli-progress'
import { Command, InvalidArgumentError } from 'commander'
import * as hdr from 'hdr-histogram-js'
import { parse, stringify } from 'yaml'

import { freePorts } from '../bench/systems/ports.js'
import { loadConfig } from '../ts/config.js'
import type { NodeStatus } from '../ts/http.js'

const ROOT = join(__dirname, '..')
const CLI = join(ROOT, 'ts', 'cli.ts')
/** Keys each worker owns: one worker writes a key, so the order of its writes is the order they were sent. */
const KEYS_PER_WORKER = 16
/** How long the old node, started again after its removal, is watched. */
const REFUSED_WATCH_MS = 2_000
/** The leader is killed at this fraction of the run. */
const KILL_AT = 0.4
/** How long a step after the load may take (a new leader, the catch-up, the final reads). */
const SETTLE_MS = 30_000
const REQUEST_TIMEOUT_MS = 30_000

interface DemoOptions {
  config: string
  seconds: number
  nodes: number
  inFlight: number
}

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

function atLeast3(value: string): number {
  const n = positiveInt(value)
  if (n < 3) throw new InvalidArgumentError('must be at least 3: the group must outlive the killed leader')
  return n
}

// ---------------------------------------------------------------------------
// HTTP

interface Answer {
  status: number
  body: Buffer
}

/** Keep-alive connections, as many as requests in flight. */
let agent: Agent

function http(address: string, method: string, path: string, body?: string): Promise<Answer> {
  const [host, port] = address.split(':') as [string, string]
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method, path, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      res.once('error', reject)
    })
    req.once('timeout', () => req.destroy(new Error('timed out')))
    req.once('error', reject)
    req.end(body)
  })
}

async function nodeStatus(address: string): Promise<NodeStatus | undefined> {
  try {
    const res = await http(address, 'GET', '/status')
    return res.status === 200 ? (JSON.parse(res.body.toString()) as NodeStatus) : undefined
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------
// The serve processes

class ServeNode {
  #child: ChildProcess | undefined
  #exited: Promise<number | null> = Promise.resolve(null)
  /** Called with each line the process logs. */
  onLine: (node: ServeNode, line: string) => void = () => {}

  constructor(
    readonly id: number,
    readonly config: string,
    readonly http: string,
    /** Where the members dial it. */
    readonly raft: string,
  ) {}

  get running(): boolean {
    return this.#child !== undefined
  }

  start(): void {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--config', this.config], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.#child = child
    this.#exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
    void this.#exited.then(() => {
      if (this.#child === child) this.#child = undefined
    })
    let buffered = ''
    const lines = (chunk: Buffer): void => {
      buffered += chunk.toString()
      const parts = buffered.split('\n')
      buffered = parts.pop()!
      for (const line of parts) this.onLine(this, line)
    }
    child.stdout!.on('data', lines)
    child.stderr!.on('data', lines)
  }

  /** Sends `signal` and resolves with the exit code once the process is gone. */
  async stop(signal: NodeJS.Signals): Promise<number | null> {
    this.#child?.kill(signal)
    return this.#exited
  }
}

/**
 * A config file per node: the base config, with storage, cluster and http set
 * for this run; `n` initial members, and one more that joins later.
 */
async function writeConfigs(base: string, dir: string, n: number): Promise<{ nodes: ServeNode[]; joining: ServeNode }> {
  await loadConfig(base) // a bad base config is reported as the user's file, not as ours
  const ports = await freePorts(2 * (n + 1))
  const raft = (id: number): string => `127.0.0.1:${ports[id - 1]}`
  const initialCluster = Object.fromEntries(Array.from({ length: n }, (_, i) => [i + 1, raft(i + 1)]))
  const nodes: ServeNode[] = []
  for (let id = 1; id <= n + 1; id++) {
    const doc = (parse(readFileSync(base, 'utf8')) ?? {}) as { server?: Record<string, unknown> }
    const server = doc.server ?? {}
    server.storage = { ...(server.storage as object), engine: 'rocksdb', data_dir: join(dir, `node-${id}`) }
    server.cluster = id <= n ? { node_id: id, initial_cluster: initialCluster } : { node_id: id, join: true, advertise: raft(id) }
    const address = `127.0.0.1:${ports[n + id]}`
    server.http = { listen: address }
    const file = join(dir, `node-${id}.yaml`)
    writeFileSync(file, stringify({ ...doc, server }))
    nodes.push(new ServeNode(id, file, address, raft(id)))
  }
  return { nodes: nodes.slice(0, n), joining: nodes[n]! }
}

/**
 * Codes of a membership request worth sending again: nothing was done and the
 * cause may pass, or the outcome is unknown (the group answers a change in
 * effect already as done, so sending it again is safe).
 */
const CHANGE_RETRY = new Set(['ERR_PROPOSAL_DROPPED', 'ERR_LEARNER_BEHIND', 'ERR_NOT_STARTED', 'ERR_CLOSED', 'ERR_TIMEOUT'])

/**
 * One membership change over HTTP, asked of any running member and sent
 * again while its answer says nothing was done and the cause may pass (no
 * leader yet after the kill, a learner still catching up). Resolves with
 * how long it took; throws with the last answer otherwise.
 */
async function change(members: () => ServeNode[], method: string, path: string, body?: string): Promise<number> {
  const t0 = performance.now()
  let last = ''
  for (let i = 0; performance.now() - t0 < SETTLE_MS; i++) {
    const asked = members()[i % members().length]!
    try {
      const res = await http(asked.http, method, path, body)
      if (res.status === 200) return performance.now() - t0
      const answer = JSON.parse(res.body.toString()) as { code: string; outcome: string; message: string }
      last = `${answer.code} (outcome ${answer.outcome}): ${answer.message}`
      if (!CHANGE_RETRY.has(answer.code)) break
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(200)
  }
  throw new Error(`${method} ${path} failed: ${last}`)
}

// ---------------------------------------------------------------------------
// The load and what it may have left in the store

type Outcome = 'acked' | 'not-applied' | 'unknown'

/**
 * What each key may hold, from the writes sent to it: the value of its last
 * acknowledged write, or the value of any write whose outcome is unknown (it
 * may apply late). A write that was certainly not applied must never show.
 */
class Model {
  readonly #acked = new Map<string, string | null>()
  readonly #unknown = new Map<string, Set<string | null>>()
  readonly #notApplied = new Map<string, Set<string | null>>()

  record(key: string, value: string | null, outcome: Outcome): void {
    if (outcome === 'acked') this.#acked.set(key, value)
    else {
      const into = outcome === 'unknown' ? this.#unknown : this.#notApplied
      if (!into.has(key)) into.set(key, new Set())
      into.get(key)!.add(value)
    }
  }

  keys(): string[] {
    return [...new Set([...this.#acked.keys(), ...this.#unknown.keys(), ...this.#notApplied.keys()])]
  }

  /** Why `actual` cannot be the value of `key`, or undefined if it can. */
  check(key: string, actual: string | null): string | undefined {
    const acked = this.#acked.has(key) ? this.#acked.get(key)! : null
    if (actual === acked || this.#unknown.get(key)?.has(actual)) return undefined
    const shown = (v: string | null): string => (v === null ? 'no value' : `'${v}'`)
    const cause = this.#notApplied.get(key)?.has(actual) ? ', the value of a write answered not-applied' : ''
    return `key '${key}' holds ${shown(actual)}${cause}; the last acknowledged write left ${shown(acked)}`
  }
}

interface Counts {
  put: number
  get: number
  delete: number
  notApplied: number
  unknown: number
}

class Load {
  readonly model = new Model()
  readonly counts: Counts = { put: 0, get: 0, delete: 0, notApplied: 0, unknown: 0 }
  readonly total = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 })
  /** Latency of the last second, for the live line. */
  recent = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 })
  /** When each acknowledged write was answered (ms since the start), in order. */
  readonly acks: number[] = []
  #stop = false

  constructor(
    readonly nodes: ServeNode[],
    readonly start: number,
  ) {}

  get ops(): number {
    return this.counts.put + this.counts.get + this.counts.delete
  }

  stop(): void {
    this.#stop = true
  }

  /**
   * One worker: a request at a time, 60% put, 30% get, 10% delete, on keys it
   * alone writes; it starts on node `w mod n` and moves to the next node when
   * its node cannot be reached.
   */
  async worker(w: number): Promise<void> {
    let node = w % this.nodes.length
    for (let seq = 0; !this.#stop; seq++) {
      const key = `w${w}/k${(seq * 7) % KEYS_PER_WORKER}`
      const roll = seq % 10
      const method = roll < 6 ? 'PUT' : roll < 9 ? 'GET' : 'DELETE'
      const value = method === 'PUT' ? `w${w}-s${seq}|${'x'.repeat(80)}` : null
      const t0 = performance.now()
      let outcome: Outcome
      try {
        const res = await http(this.nodes[node]!.http, method, `/v1/kv/${encodeURIComponent(key)}`, value ?? undefined)
        if (res.status === 200 || (method === 'GET' && res.status === 404)) outcome = 'acked'
        else outcome = (JSON.parse(res.body.toString()) as { outcome: Outcome }).outcome
      } catch (err) {
        // Refused: never sent. Anything else (a reset, a timeout): it may have been applied.
        outcome = (err as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 'not-applied' : 'unknown'
      }
      const us = Math.max(1, Math.round((performance.now() - t0) * 1000))
      if (outcome === 'acked') {
        this.total.recordValue(us)
        this.recent.recordValue(us)
        this.counts[method === 'PUT' ? 'put' : method === 'GET' ? 'get' : 'delete']++
        if (method !== 'GET') this.acks.push(performance.now() - this.start)
      } else {
        this.counts[outcome === 'unknown' ? 'unknown' : 'notApplied']++
      }
      if (method !== 'GET') this.model.record(key, value, outcome)
      if (outcome !== 'acked') {
        // This node is down, starting or without a leader: try the next one.
        node = (node + 1) % this.nodes.length
        await sleep(20)
      }
    }
  }
}

/** `ms` as `12 ms` or `1.20 s`. */
function took(ms: number): string {
  return ms < 1_000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`
}

/** The longest time without an acknowledged write in [from, to] (ms since the start). */
function longestStall(acks: number[], from: number, to: number): number {
  let longest = 0
  let previous = from
  for (const t of acks) {
    if (t < from) continue
    if (t > to) break
    longest = Math.max(longest, t - previous)
    previous = t
  }
  return Math.max(longest, to - previous)
}

// ---------------------------------------------------------------------------

async function demo(opts: DemoOptions): Promise<void> {
  agent = new Agent({ keepAlive: true, maxSockets: opts.inFlight })
  const dir = mkdtempSync(join(tmpdir(), 'metastore-demo-'))
  const { nodes, joining } = await writeConfigs(opts.config, dir, opts.nodes)
  /** Every node that ran, for the live line and the logs. */
  const all = [...nodes, joining]
  const log: string[] = []
  const failures: string[] = []
  const t0 = performance.now()
  const since = (): string => `+${((performance.now() - t0) / 1000).toFixed(1)}s`
  let event = 'starting'
  const leaderships: { node: number; at: number }[] = []
  for (const node of all) {
    node.onLine = (n, line) => {
      log.push(`node ${n.id}: ${line}`)
      if (/ to=leader /.test(line)) {
        leaderships.push({ node: n.id, at: performance.now() })
        event = `${since()} node ${n.id} became leader`
      }
    }
  }

  try {
    console.log(`Starting ${opts.nodes} metastore serve processes (config ${opts.config}, RocksDB in ${dir}) ...`)
    for (const node of nodes) node.start()
    let leader = 0
    for (const deadline = Date.now() + 60_000; leader === 0; await sleep(50)) {
      if (Date.now() > deadline) throw new Error(`no leader within 60 s; the nodes logged:\n${log.join('\n')}`)
      const seen = await Promise.all(nodes.map((n) => nodeStatus(n.http)))
      const ids = new Set(seen.map((s) => s?.leaderId ?? 0))
      leader = ids.size === 1 ? [...ids][0]! : 0
    }
    console.log(`Leader: node ${leader}. Load: ${opts.inFlight} requests in flight over HTTP keep-alive for ${opts.seconds} s.`)

    const durationMs = opts.seconds * 1000
    const start = performance.now()
    // The nodes the load is sent to: members that serve (the replacement joins it, the removed node leaves it).
    const serving = [...nodes]
    const load = new Load(serving, start)
    const applied = new Map<number, number | undefined>()
    let shownLeader = leader
    const bar = new SingleBar(
      {
        format: ' {bar} {percentage}% | {rate} ops/s | p99 {p99} ms | leader {leader} | applied {applied} | {event}',
        hideCursor: true,
        noTTYOutput: true,
        notTTYSchedule: 2_000,
      },
      Presets.shades_classic,
    )
    bar.start(100, 0, { rate: 0, p99: '-', leader, applied: '', event })
    let lastOps = 0
    let lastTick = start
    let polling = false
    const ticker = setInterval(() => {
      const now = performance.now()
      const rate = Math.round((load.ops - lastOps) / ((now - lastTick) / 1000))
      const p99 = load.recent.totalCount > 0 ? (load.recent.getValueAtPercentile(99) / 1000).toFixed(1) : '-'
      if (now - lastTick >= 1000) {
        ;[lastOps, lastTick] = [load.ops, now]
        load.recent.reset()
      }
      const shownApplied = all.map((n) => `${n.id}:${applied.get(n.id) ?? 'down'}`).join(' ')
      bar.update(Math.min(100, Math.round(((now - start) / durationMs) * 100)), {
        rate,
        p99,
        leader: shownLeader === 0 ? 'none' : shownLeader,
        applied: shownApplied,
        event,
      })
      if (polling) return
      polling = true
      void Promise.all(all.map((n) => nodeStatus(n.http))).then((seen) => {
        polling = false
        seen.forEach((s, i) => applied.set(all[i]!.id, s?.appliedIndex))
        shownLeader = seen.find((s) => s?.role === 'leader')?.nodeId ?? 0
      })
    }, 250)

    const workers = Array.from({ length: opts.inFlight }, (_, w) => load.worker(w))

    // The fault: SIGKILL the leader. Then the README's recipe replaces it,
    // asked of the surviving members: add a new node as a learner, promote it
    // once it caught up, remove the dead id.
    await sleep(durationMs * KILL_AT)
    const killed = nodes.find((n) => n.id === leader)!
    const killAt = performance.now()
    event = `${since()} SIGKILL node ${killed.id}`
    await killed.stop('SIGKILL')
    serving.splice(serving.indexOf(killed), 1)
    const survivors = (): ServeNode[] => nodes.filter((n) => n !== killed)
    joining.start()
    const steps: string[] = []
    let replacedAt: number | undefined
    try {
      // As an operator would: once the survivors agree on a new leader (a
      // request sent before that may go to the dead one and end unknown).
      for (const deadline = performance.now() + SETTLE_MS; ; await sleep(50)) {
        const seen = await Promise.all(survivors().map((n) => nodeStatus(n.http)))
        const leaders = new Set(seen.map((v) => v?.leaderId ?? 0))
        if (leaders.size === 1 && !leaders.has(0) && !leaders.has(killed.id)) break
        if (performance.now() > deadline) throw new Error(`the survivors agreed on no new leader within ${SETTLE_MS / 1000} s`)
      }
      event = `${since()} adding node ${joining.id}`
      const added = await change(survivors, 'POST', '/v1/members', JSON.stringify({ id: joining.id, address: joining.raft }))
      steps.push(`added node ${joining.id} as a learner in ${took(added)}, ${took(performance.now() - killAt)} after the kill`)
      event = `${since()} promoting node ${joining.id}`
      const promoted = await change(survivors, 'POST', `/v1/members/${joining.id}/promote`)
      steps.push(`promoted it in ${took(promoted)} (sent again while it caught up)`)
      serving.push(joining)
      event = `${since()} removing node ${killed.id}`
      const removed = await change(survivors, 'DELETE', `/v1/members/${killed.id}`)
      steps.push(`removed node ${killed.id} in ${took(removed)}`)
      replacedAt = performance.now()
      event = `${since()} node ${killed.id} replaced by node ${joining.id}`
    } catch (err) {
      failures.push(`replacing node ${killed.id}: ${(err as Error).message}`)
    }
    await sleep(Math.max(0, start + durationMs - performance.now()))
    load.stop()
    await Promise.all(workers)
    clearInterval(ticker)
    bar.update(100)
    bar.stop()
    const elapsedS = (performance.now() - start) / 1000

    // After the load: the leader's applied index is final; the new member must reach it.
    let caughtUp: number | undefined
    let target = 0
    for (const deadline = performance.now() + SETTLE_MS; caughtUp === undefined && performance.now() < deadline; await sleep(50)) {
      const seen = await Promise.all(serving.map((n) => nodeStatus(n.http)))
      const current = seen.find((s) => s?.role === 'leader')
      target = Math.max(target, current?.appliedIndex ?? 0)
      const mine = seen[serving.indexOf(joining)]
      if (current !== undefined && mine !== undefined && mine.appliedIndex >= target) caughtUp = performance.now()
    }

    // The old node started again on its data: its id was removed, so every
    // member refuses it, and it cannot move the group's term.
    const before = (await Promise.all(serving.map((n) => nodeStatus(n.http)))).find((s) => s?.role === 'leader')
    killed.start()
    await sleep(REFUSED_WATCH_MS)
    const after = (await Promise.all(serving.map((n) => nodeStatus(n.http)))).find((s) => s?.role === 'leader')
    const oldView = await nodeStatus(killed.http)
    let refusedLine: string
    if (before === undefined || after === undefined) refusedLine = 'no leader to compare with'
    // Refused, it never hears of a leader: its HTTP end says it is starting (no store yet) or knows none.
    else if (after.term !== before.term || (oldView !== undefined && oldView.leaderId !== 0)) {
      failures.push(`the removed node ${killed.id}, started again, disturbed the group (term ${before.term} -> ${after.term}, it sees leader ${oldView?.leaderId})`)
      refusedLine = 'disturbed the group'
    } else refusedLine = `refused by the members: it knows no leader, and the group's term stayed ${after.term}`

    // Every key holds what the acknowledged writes left (or an unknown write's value).
    const keys = load.model.keys()
    const lost: string[] = []
    const readers = serving
    await Promise.all(
      Array.from({ length: Math.min(opts.inFlight, keys.length) }, async (_, r) => {
        for (let i = r; i < keys.length; i += opts.inFlight) {
          const key = keys[i]!
          const res = await http(readers[i % readers.length]!.http, 'GET', `/v1/kv/${encodeURIComponent(key)}`)
          if (res.status !== 200 && res.status !== 404) throw new Error(`reading ${key} answered ${res.status}: ${res.body}`)
          const problem = load.model.check(key, res.status === 404 ? null : res.body.toString())
          if (problem !== undefined) lost.push(problem)
        }
      }),
    )

    // Summary.
    const newLeader = leaderships.find((l) => l.at > killAt && l.node !== killed.id)
    const stallMs = longestStall(load.acks, killAt - start - 1_000, (replacedAt ?? killAt + SETTLE_MS) - start)
    const c = load.counts
    const ms = (us: number): string => (us / 1000).toFixed(1)
    console.log()
    console.log(`Throughput     ${Math.round(load.ops / elapsedS).toLocaleString('en-US')} ops/s over ${elapsedS.toFixed(1)} s (${opts.inFlight} in flight)`)
    console.log(`Operations     ${c.put} put, ${c.get} get, ${c.delete} delete acknowledged; ${c.notApplied} not applied, ${c.unknown} unknown outcome`)
    console.log(`Latency        p50 ${ms(load.total.getValueAtPercentile(50))} ms, p99 ${ms(load.total.getValueAtPercentile(99))} ms, max ${ms(load.total.maxValue)} ms`)
    console.log(`Leader killed  node ${killed.id} at ${((killAt - start) / 1000).toFixed(1)} s`)
    if (newLeader === undefined) failures.push('no other node became leader after the kill')
    else console.log(`New leader     node ${newLeader.node}, ${((newLeader.at - killAt) / 1000).toFixed(2)} s after the kill`)
    console.log(`Write stall    ${(stallMs / 1000).toFixed(2)} s without an acknowledged write from the kill to the replacement`)
    for (const step of steps) console.log(`Replacement    ${step}`)
    console.log(`Old node       node ${killed.id}, started again after its removal: ${refusedLine}`)
    const changes = leaderships.filter((l) => l.at > start).map((l) => `node ${l.node} at ${((l.at - start) / 1000).toFixed(1)} s`)
    console.log(`Leaders        ${changes.length} elected during the load: ${changes.join(', ')}`)
    if (caughtUp === undefined) failures.push(`node ${joining.id} did not reach the leader's applied index ${target} within ${SETTLE_MS / 1000} s after the load`)
    else console.log(`Catch-up       node ${joining.id}, the new member, has the leader's applied index ${target}`)
    if (lost.length > 0) failures.push(`${lost.length} keys do not hold what the acknowledged writes left:\n  ${lost.slice(0, 10).join('\n  ')}`)
    else console.log(`Durability     all ${keys.length} keys hold what the acknowledged writes left`)
  } finally {
    const codes = await Promise.all(all.map((n) => (n.running ? n.stop('SIGTERM') : Promise.resolve(0))))
    codes.forEach((code, i) => {
      if (code !== 0) failures.push(`node ${all[i]!.id} exited with ${code} on SIGTERM`)
    })
    agent.destroy()
    rmSync(dir, { recursive: true, force: true })
  }
  if (failures.length > 0) {
    console.error(`\nFAILED:\n- ${failures.join('\n- ')}`)
    process.exitCode = 1
  } else {
    console.log('\nAll checks passed: a new leader took over, a new member replaced the killed one, the old one was refused, no acknowledged write was lost.')
  }
}

const program = new Command()
  .name('npm start --')
  .description('run three metastore serve processes under a mixed HTTP load, kill the leader, and check what survived')
  .option('-c, --config <path>', 'base YAML config (raft and batch settings; storage, cluster and http are set per node)', 'configs/config.yaml')
  .option('-s, --seconds <n>', 'load duration in seconds', positiveInt, 20)
  .option('-n, --nodes <n>', 'number of nodes (at least 3)', atLeast3, 3)
  .option('-i, --in-flight <n>', 'requests in flight', positiveInt, 64)
  .action(demo)

program.parseAsync().catch((err: unknown) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : err)
  process.exit(1)
})
