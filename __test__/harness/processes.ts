// Groups whose members are real OS processes on loopback, each embedding one
// node (harness/member.ts), for tests with real sockets and real kills.
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'

import type { MemberRequest, MemberSpec } from './member.js'
import { FaultProxy } from './proxy.js'

export interface Reply {
  ok: boolean
  result?: any
  code?: string
  outcome?: string
  message?: string
}

const MEMBER = join(__dirname, 'member.ts')

/** `n` loopback ports free right now (each bound once, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const s = createServer()
          s.once('error', reject)
          s.listen(0, '127.0.0.1', () => resolve(s))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as import('node:net').AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

/** How a member process ended. */
export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface MemberProcessOptions {
  /**
   * A command the member is started under, e.g. `['ip', 'netns', 'exec', ns]`:
   * it must exec node itself, so that signals reach the member.
   */
  prefix?: string[]
}

/** One member process. */
export class MemberProcess {
  readonly spec: MemberSpec
  readonly #prefix: string[]
  #child: ChildProcess | undefined
  #next = 1
  readonly #waiting = new Map<number, (r: Reply) => void>()
  #exited: Promise<number | null> = Promise.resolve(null)
  #lastExit: Exit | undefined
  #openFailure: { code?: string; message: string } | undefined

  constructor(spec: MemberSpec, opts: MemberProcessOptions = {}) {
    this.spec = spec
    this.#prefix = opts.prefix ?? []
  }

  get id(): number {
    return this.spec.nodeId
  }

  get running(): boolean {
    return this.#child !== undefined
  }

  /** The running process' pid. */
  get pid(): number | undefined {
    return this.#child?.pid
  }

  /** Requests written to the running process and not answered yet. */
  get inFlight(): number {
    return this.#waiting.size
  }

  /** How the last process ended, if one did. */
  get lastExit(): Exit | undefined {
    return this.#lastExit
  }

  /**
   * The running process' state letter from /proc (Linux): 'T' while stopped
   * by SIGSTOP, 'S' or 'R' while it runs; undefined when it is not running.
   */
  procState(): string | undefined {
    const pid = this.pid
    if (pid === undefined) return undefined
    try {
      // The command may hold spaces and parentheses: the state follows the last ')'.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
    } catch {
      return undefined
    }
  }

  /** Why the last process' open failed, when it did (`{"failed"}` from the member). */
  get openFailure(): { code?: string; message: string } | undefined {
    return this.#openFailure
  }

  /** Starts the process; resolves once its store is open. */
  async start(timeoutMs = 60_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`member ${this.id} did not open within ${timeoutMs} ms`)), timeoutMs)
    })
    try {
      await Promise.race([this.launch(), late])
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Starts the process and returns at once a promise that resolves once its
   * store is open, or rejects when the process exits first (a node whose
   * open waits for a leader it never finds, for one).
   */
  launch(): Promise<void> {
    const command = [...this.#prefix, process.execPath, '--import', 'tsx', MEMBER, JSON.stringify(this.spec)]
    const child = spawn(command[0]!, command.slice(1), {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    this.#child = child
    this.#openFailure = undefined
    this.#exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.#lastExit = { code, signal }
        resolve(code)
      }),
    )
    // A request written as the process dies meets EPIPE; its reply is the exit's.
    child.stdin!.on('error', () => {})
    let buffered = ''
    let ready: () => void = () => {}
    const opened = new Promise<void>((resolve) => (ready = resolve))
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      for (const line of lines) {
        const msg = JSON.parse(line) as Reply & { id?: number; ready?: boolean; failed?: { code?: string; message: string } }
        if (msg.ready) ready()
        else if (msg.failed !== undefined) this.#openFailure = msg.failed
        else if (msg.id !== undefined) {
          this.#waiting.get(msg.id)?.(msg)
          this.#waiting.delete(msg.id)
        }
      }
    })
    void this.#exited.then(() => {
      this.#child = undefined
      // Written to the process before it died: it may have been applied.
      for (const resolve of this.#waiting.values()) {
        resolve({ ok: false, code: 'EXITED', outcome: 'unknown', message: 'the process exited' })
      }
      this.#waiting.clear()
    })
    const exited = this.#exited.then((code) => {
      const why = this.#openFailure === undefined ? '' : `: ${this.#openFailure.code ?? ''} ${this.#openFailure.message}`
      throw new Error(`member ${this.id} exited with ${code} before it opened${why}`)
    })
    return Promise.race([opened, exited])
  }

  request(op: MemberRequest['op'], key?: string, value?: string): Promise<Reply> {
    return this.send({ op, key, value })
  }

  /** Sends a request with any of its fields (the membership ops name `node`, `address`, `force`, `timeoutMs`). */
  send(req: Omit<MemberRequest, 'id'>): Promise<Reply> {
    const child = this.#child
    if (child === undefined) return Promise.resolve({ ok: false, code: 'EXITED', outcome: 'not-applied', message: 'not running' })
    const id = this.#next++
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve)
      child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`)
    })
  }

  /** Sends `signal` and, unless it only pauses the process, waits for it to exit. */
  async kill(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child
    if (child === undefined) return
    child.kill(signal)
    if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') await this.#exited
  }
}

/** Settings every member of a test group gets. */
export type GroupSettings = Pick<MemberSpec, 'tickIntervalMs' | 'proposalTimeoutMs' | 'requestTimeoutMs' | 'snapshotCount' | 'sync'>

/** Settings for the members of a group whose membership a test changes. */
export type MembershipSettings = GroupSettings & Pick<MemberSpec, 'promoteMaxLag'>

/**
 * The member's status, or undefined when it is not running or does not answer
 * within `timeoutMs` (a paused process answers only once resumed).
 */
export async function statusOf(member: MemberProcess, timeoutMs = 1_000): Promise<MemberStatus | undefined> {
  if (!member.running) return undefined
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)))
  try {
    const r = await Promise.race([member.request('status'), late])
    return r?.ok ? (r.result as MemberStatus) : undefined
  } finally {
    clearTimeout(timer)
  }
}

export interface MemberStatus {
  role: string
  leaderId: number
  term: number
  appliedIndex: number
}

/**
 * The id of the member that says it leads (of the highest term, should two
 * say so), polled until one does; undefined after `timeoutMs`.
 */
export async function findLeader(members: readonly MemberProcess[], timeoutMs = 30_000): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs
  for (let attempt = 0; attempt < 10_000 && Date.now() < deadline; attempt++) {
    const seen = await Promise.all(members.map(async (m) => ({ id: m.id, status: await statusOf(m) })))
    const leaders = seen.filter((s) => s.status?.role === 'leader').sort((a, b) => b.status!.term - a.status!.term)
    if (leaders.length > 0) return leaders[0]!.id
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return undefined
}

/** A group of `n` member processes on free loopback ports, data under `dir`. */
export async function startGroup(n: number, dir: string, settings: MembershipSettings = {}): Promise<MemberProcess[]> {
  const ports = await freePorts(n)
  const initialCluster = Object.fromEntries(ports.map((p, i) => [i + 1, `127.0.0.1:${p}`]))
  const members = ports.map((_, i) => new MemberProcess({ ...settings, nodeId: i + 1, initialCluster, dataDir: dir }))
  await startAll(members)
  return members
}

/**
 * A member that starts empty on a free loopback port and waits to be added to
 * a running group (`addMember(id, member.spec.advertise)` on one of its nodes).
 */
export async function joiningMember(id: number, dir: string, settings: MembershipSettings = {}): Promise<MemberProcess> {
  const [port] = await freePorts(1)
  const address = `127.0.0.1:${port}`
  return new MemberProcess({ ...settings, nodeId: id, initialCluster: {}, join: true, advertise: address, dataDir: dir })
}

/**
 * A group whose members reach each other only through fault proxies: member
 * `i` dials member `j` through `proxies.get(`${i}->${j}`)`, so each direction
 * of each pair can be delayed, blackholed or cut on its own.
 */
export async function startProxiedGroup(
  n: number,
  dir: string,
  settings: GroupSettings = {},
): Promise<{ members: MemberProcess[]; proxies: Map<string, FaultProxy> }> {
  const ports = await freePorts(n)
  const proxies = new Map<string, FaultProxy>()
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= n; j++) {
      if (i !== j) proxies.set(`${i}->${j}`, await FaultProxy.start({ target: `127.0.0.1:${ports[j - 1]}` }))
    }
  }
  const members = ports.map((port, k) => {
    const id = k + 1
    const initialCluster = Object.fromEntries(
      ports.map((p, m) => [m + 1, m + 1 === id ? `127.0.0.1:${p}` : proxies.get(`${id}->${m + 1}`)!.address]),
    )
    return new MemberProcess({ ...settings, nodeId: id, initialCluster, listen: `127.0.0.1:${port}`, dataDir: dir })
  })
  try {
    await startAll(members)
  } catch (err) {
    await Promise.all([...proxies.values()].map((p) => p.close()))
    throw err
  }
  return { members, proxies }
}

async function startAll(members: MemberProcess[]): Promise<void> {
  try {
    await Promise.all(members.map((m) => m.start()))
  } catch (err) {
    await Promise.all(members.map((m) => m.kill('SIGKILL')))
    throw err
  }
}
