import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { Etcd3 } from 'etcd3'

import { onCleanup } from '../cleanup.js'
import type { Drivers } from '../scenarios.js'
import { freePorts, HOST } from './ports.js'
import type { ClientTarget, TransportSample } from './target.js'

export const ETCD_INSTALL_HINT = 'apt-get install etcd-server (Debian/Ubuntu; etcd 3.4, binary /usr/bin/etcd)'

const START_TIMEOUT_MS = 20_000
const STOP_GRACE_MS = 5_000

export interface EtcdInstall {
  binary: string
  version: string
}

/** The etcd binary to use: `preferred`, else /usr/bin/etcd, else `etcd` on PATH; undefined when none runs. */
export function findEtcd(preferred?: string): EtcdInstall | undefined {
  const candidates = preferred ? [preferred] : ['/usr/bin/etcd', 'etcd']
  for (const binary of candidates) {
    const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 })
    if (r.status === 0) {
      const version = /etcd Version:\s*(\S+)/.exec(r.stdout)?.[1] ?? r.stdout.trim().split('\n')[0]
      return { binary, version }
    }
  }
  return undefined
}

const clockTicks = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number(r.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

/** User + system CPU time of a process in microseconds, from /proc (0 once it is gone). */
function processCpuUs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return ((Number(fields[11]) + Number(fields[12])) / clockTicks) * 1e6
  } catch {
    return 0
  }
}

interface Member {
  name: string
  clientUrl: string
  peerUrl: string
  dataDir: string
  process?: ChildProcess
  stderr: string
}

/** The command line each member runs with (recorded in the report). */
export function etcdArgs(m: Member, initialCluster: string, token: string): string[] {
  return [
    '--name', m.name,
    '--data-dir', m.dataDir,
    '--listen-client-urls', m.clientUrl,
    '--advertise-client-urls', m.clientUrl,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster', initialCluster,
    '--initial-cluster-state', 'new',
    '--initial-cluster-token', token,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    '--log-level', 'error',
  ]
}

/** An etcd cluster of `nodes` processes on loopback, data under `dir`; killed and removed on close or exit. */
export class EtcdCluster {
  readonly members: Member[]
  readonly args: string[][] = []
  #unregister: () => void = () => {}

  private constructor(members: Member[]) {
    this.members = members
  }

  static async start(binary: string, nodes: number, dir: string): Promise<EtcdCluster> {
    const ports = await freePorts(nodes * 2)
    const members: Member[] = Array.from({ length: nodes }, (_, i) => ({
      name: `n${i + 1}`,
      clientUrl: `http://${HOST}:${ports[2 * i]}`,
      peerUrl: `http://${HOST}:${ports[2 * i + 1]}`,
      dataDir: join(dir, `n${i + 1}`),
      stderr: '',
    }))
    const cluster = new EtcdCluster(members)
    cluster.#unregister = onCleanup(() => cluster.#kill('SIGKILL'))
    const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',')
    const token = `metastore-bench-${randomBytes(4).toString('hex')}`
    // The Debian package's ETCD_* settings are for the system service, not for us.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')))
    try {
      for (const m of members) {
        mkdirSync(m.dataDir, { recursive: true })
        const args = etcdArgs(m, initialCluster, token)
        cluster.args.push(args)
        const child = spawn(binary, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
        child.stderr!.setEncoding('utf8')
        child.stderr!.on('data', (chunk: string) => (m.stderr = (m.stderr + chunk).slice(-4000)))
        child.on('error', (err) => (m.stderr += `\nspawn error: ${err.message}`))
        m.process = child
      }
      await cluster.#waitHealthy()
    } catch (err) {
      await cluster.stop()
      throw err
    }
    return cluster
  }

  async #waitHealthy(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      const dead = this.members.find((m) => m.process?.exitCode !== null || m.process?.signalCode !== null)
      if (dead) throw new Error(`etcd ${dead.name} exited during start-up: ${dead.stderr.trim().slice(-500)}`)
      const healthy = await Promise.all(this.members.map((m) => isHealthy(m.clientUrl)))
      if (healthy.every(Boolean)) return
      if (Date.now() > deadline) throw new Error(`etcd not healthy within ${START_TIMEOUT_MS} ms`)
      await sleep(50)
    }
  }

  /** The client URL of the member that is the leader (a member's status names its leader). */
  async leaderUrl(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      for (const m of this.members) {
        const client = new Etcd3({ hosts: m.clientUrl, dialTimeout: 2_000 })
        try {
          const status = await client.maintenance.status()
          if (status.leader !== '0' && status.leader === status.header.member_id) return m.clientUrl
        } catch {
          // Not ready yet; ask again.
        } finally {
          client.close()
        }
      }
      if (Date.now() > deadline) throw new Error(`no etcd leader within ${timeoutMs} ms`)
      await sleep(50)
    }
  }

  /**
   * Bytes the members sent to and received from each other so far (their
   * `etcd_network_peer_{sent,received}_bytes_total`, raft messages as
   * encoded, as MetaStore counts them); undefined when a member does not answer.
   */
  async peerBytes(): Promise<TransportSample | undefined> {
    const texts = await Promise.all(this.members.map((m) => metricsText(m.clientUrl)))
    if (texts.some((t) => t === undefined)) return undefined
    const total = (name: string) => texts.reduce((sum, t) => sum + metricSum(t!, name), 0)
    return { bytesSent: total('etcd_network_peer_sent_bytes_total'), bytesReceived: total('etcd_network_peer_received_bytes_total') }
  }

  /** CPU time of all members so far, in microseconds. */
  cpuUs(): number {
    return this.members.reduce((sum, m) => sum + (m.process?.pid ? processCpuUs(m.process.pid) : 0), 0)
  }

  #kill(signal: NodeJS.Signals): void {
    for (const m of this.members) {
      if (m.process && m.process.exitCode === null && m.process.signalCode === null) m.process.kill(signal)
    }
  }

  /** SIGTERM, then SIGKILL after a grace period; removes the data dirs. */
  async stop(): Promise<void> {
    this.#kill('SIGTERM')
    const exited = (p: ChildProcess) =>
      p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => p.once('exit', () => resolve()))
    const all = Promise.all(this.members.map((m) => (m.process ? exited(m.process) : undefined)))
    const timer = sleep(STOP_GRACE_MS, 'timeout' as const)
    if ((await Promise.race([all, timer])) === 'timeout') {
      this.#kill('SIGKILL')
      await Promise.race([all, sleep(STOP_GRACE_MS)])
    }
    this.#unregister()
    for (const m of this.members) rmSync(m.dataDir, { recursive: true, force: true })
  }
}

async function metricsText(clientUrl: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${clientUrl}/metrics`, { signal: AbortSignal.timeout(2_000) })
    return res.ok ? await res.text() : undefined
  } catch {
    return undefined
  }
}

/** The sum of every series of the Prometheus metric `name` in `text` (one per peer). */
function metricSum(text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const value = Number(line.slice(line.lastIndexOf(' ') + 1))
    if (Number.isFinite(value)) sum += value
  }
  return sum
}

async function isHealthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1_000) })
    const body = (await res.json()) as { health?: string }
    return res.ok && body.health === 'true'
  } catch {
    return false
  }
}

/**
 * etcd with `nodes` members, driven through the etcd3 client connected to the
 * leader (as the MetaStore load goes to the leader's handle), or with
 * `spread` through one client per member, followers first (as each MetaStore
 * member process drives its own member; an etcd follower forwards the
 * proposal to its leader). Every put is one etcd transaction: etcd has no
 * client-side batching to turn on or off.
 */
export async function startEtcd(
  binary: string,
  nodes: number,
  drivers: Drivers,
  dir: string,
): Promise<ClientTarget & { cluster: EtcdCluster }> {
  const cluster = await EtcdCluster.start(binary, nodes, dir)
  const clients: Etcd3[] = []
  try {
    const leader = await cluster.leaderUrl()
    const urls = drivers === 'leader' ? [leader] : [...cluster.members.map((m) => m.clientUrl).filter((u) => u !== leader), leader]
    for (const url of urls) clients.push(new Etcd3({ hosts: url }))
  } catch (err) {
    for (const c of clients) c.close()
    await cluster.stop()
    throw err
  }
  const puts = clients.map((client) => (key: Buffer, value: Buffer) => client.kv.put({ key, value }))
  return {
    cluster,
    put: puts[puts.length - 1]!,
    ...(puts.length > 1 && { memberPuts: puts }),
    sample: async () => {
      const externalCpuUs = cluster.cpuUs()
      const transport = nodes > 1 ? await cluster.peerBytes() : undefined
      return { externalCpuUs, ...(transport && { transport }) }
    },
    close: async () => {
      for (const c of clients) c.close()
      await cluster.stop()
    },
  }
}
