#!/usr/bin/env node
/**
 * The `metastore` command.
 *
 *   metastore serve --config node.yaml     runs the member the file describes, with its HTTP end
 *   metastore status --endpoint host:port  prints what a serving node knows of its group
 *   metastore transfer-leader --endpoint host:port --to id
 *                                          hands the group's leadership to member `id`
 *
 * Exit codes: 0 done (serve: stopped by SIGTERM or SIGINT), 1 a failure,
 * 2 a bad command line or config file.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Command, CommanderError, InvalidArgumentError } from 'commander'

import { loadConfig, parseAddress, type ClusterConfig, type MetaStoreConfig } from './config.js'
import { ConfigError, MetaStoreError } from './errors.js'
import { HttpApi, type ErrorBody, type NodeStatus } from './http.js'
import type { MemberInfo, RaftRole } from './native.js'
import { MetaStore } from './store.js'

/** How often `serve` looks at the node's role and leader to log their changes. */
const WATCH_INTERVAL_MS = 50
/** How long `serve` lets requests in flight finish on shutdown before the store closes under them. */
const DRAIN_MS = 2_000
/**
 * How long `transfer-leader` waits for an answer beyond the transfer's own
 * timeout. Without --timeout the node's default applies, which it does not
 * tell; 60 s covers any sane election timeout.
 */
const ANSWER_MARGIN_MS = 5_000
const DEFAULT_TRANSFER_WAIT_MS = 60_000

/** One line per event: ISO time, event name, then `key=value` fields. */
function log(event: string, fields: Record<string, string | number | undefined> = {}): void {
  const parts = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' && /[\s"=]/.test(v) ? JSON.stringify(v) : String(v)}`)
  process.stdout.write(`${[new Date().toISOString(), event, ...parts].join(' ')}\n`)
}

function hostPort(value: string): string {
  try {
    parseAddress(value)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message)
  }
  return value
}

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

// ---------------------------------------------------------------------------
// serve

async function serve(opts: { config: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  const { cluster, httpListen } = serveSettings(config, opts.config)
  let store: MetaStore | undefined
  let stopping = false
  const api = new HttpApi({ store: () => store, maxBodyBytes: config.server.raft.batch.maxProposalBytes })
  log('starting', {
    node: cluster.nodeId,
    config: opts.config,
    engine: config.server.storage.engine,
    data_dir: config.server.storage.dataDir,
  })
  const bound = await api.listen(httpListen)
  log('listening', { node: cluster.nodeId, http: `${bound.address}:${bound.port}` })

  const stop = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log('stopping', { node: cluster.nodeId, signal })
    api.stopAccepting()
    // Requests already in the store get a while to finish; closing the store
    // then rejects the rest, each with its honest outcome.
    await api.drain(DRAIN_MS)
    await store?.close()
    await api.close(DRAIN_MS)
    log('stopped', { node: cluster.nodeId })
    process.exit(0)
  }
  process.once('SIGTERM', () => void stop('SIGTERM'))
  process.once('SIGINT', () => void stop('SIGINT'))

  // A member waits for its group however long the others take to come up.
  store = await MetaStore.open({ config, leaderTimeoutMs: Number.MAX_SAFE_INTEGER })
  if (stopping) return
  log('started', {
    node: cluster.nodeId,
    raft: cluster.listen ?? cluster.advertise ?? cluster.initialCluster?.[cluster.nodeId],
    members: store.members().length,
  })
  watch(store, () => stopping)
}

/** What `serve` needs of a config file beyond what a store needs: the member and its HTTP address. */
function serveSettings(config: MetaStoreConfig, file: string): { cluster: ClusterConfig; httpListen: string } {
  const required = (key: string, what: string): ConfigError => {
    const rule = `is required by metastore serve (${what})`
    return new ConfigError(`${file}: ${key} ${rule}`, { file, key, rule })
  }
  const { cluster, http } = config.server
  if (cluster === undefined) throw required('server.cluster', 'node_id and initial_cluster of the member to run')
  if (http?.listen === undefined) throw required('server.http.listen', 'host:port of the HTTP API, e.g. 127.0.0.1:8080')
  return { cluster, httpListen: http.listen }
}

/**
 * Logs each change of this node's role or of the leader it knows. A node that
 * stops by itself (its storage failed) ends the process with 1, for a
 * supervisor to see.
 */
function watch(store: MetaStore, stopping: () => boolean): void {
  let role: RaftRole | undefined
  let leader = -1
  const look = (): void => {
    if (stopping()) return
    let raft
    try {
      raft = store.stats().raft
    } catch (err) {
      log('failed', { node: store.nodeId, error: err instanceof MetaStoreError ? err.code : 'unknown', message: (err as Error).message })
      process.exit(1)
    }
    if (raft.role !== role) {
      log('role', { node: store.nodeId, from: role, to: raft.role, term: raft.term })
      role = raft.role
    }
    if (raft.leaderId !== leader) {
      log('leader', { node: store.nodeId, leader: raft.leaderId === 0 ? 'none' : raft.leaderId, term: raft.term })
      leader = raft.leaderId
    }
  }
  look()
  setInterval(look, WATCH_INTERVAL_MS).unref()
}

// ---------------------------------------------------------------------------
// status

/** A serving node's answer to one request: its HTTP status and JSON body (undefined when the body is no JSON). */
async function ask(url: string, init: RequestInit, timeoutMs: number): Promise<{ res: Response; body: unknown }> {
  let res: Response
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    const why = cause?.code ?? cause?.message ?? (err as Error).message
    throw new Error(`cannot reach ${url}: ${why}`)
  }
  return { res, body: await res.json().catch(() => undefined) }
}

async function status(opts: { endpoint: string; timeout: number }): Promise<void> {
  const url = `http://${opts.endpoint}/status`
  const { res, body } = await ask(url, {}, opts.timeout)
  const s = body as (NodeStatus & Partial<ErrorBody>) | undefined
  if (!res.ok || s === undefined || !Array.isArray(s.members)) {
    throw new Error(`${url} answered ${res.status}${s?.message === undefined ? '' : `: ${s.message}`}`)
  }
  process.stdout.write(formatStatus(s))
}

/**
 * The node's figures, then one row per member; the match index and the lag
 * (entries of the leader's log a member lacks) show where the node asked leads.
 */
function formatStatus(s: NodeStatus): string {
  const withMatch = s.members.some((m) => m.matchIndex !== undefined)
  const withLag = s.members.some((m) => m.lag !== undefined)
  const known = (n: number | undefined): string => (n === undefined ? '-' : String(n))
  const header = ['ID', 'ADDRESS', 'ROLE', 'LEADER', ...(withMatch ? ['MATCH'] : []), ...(withLag ? ['LAG'] : [])]
  const rows = s.members.map((m: MemberInfo) => [
    String(m.id),
    m.address,
    m.role,
    m.isLeader ? '*' : '',
    ...(withMatch ? [known(m.matchIndex)] : []),
    ...(withLag ? [known(m.lag)] : []),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()
  const leader = s.leaderId === 0 ? 'none' : String(s.leaderId)
  return [
    `node ${s.nodeId}: ${s.role}, term ${s.term}, leader ${leader}, commit ${s.commitIndex}, applied ${s.appliedIndex}`,
    line(header),
    ...rows.map(line),
    '',
  ].join('\n')
}

// ---------------------------------------------------------------------------
// transfer-leader

async function transferLeader(opts: { endpoint: string; to: number; timeout?: number }): Promise<void> {
  const url = `http://${opts.endpoint}/v1/leader`
  const wait = (opts.timeout ?? DEFAULT_TRANSFER_WAIT_MS) + ANSWER_MARGIN_MS
  const request = { to: opts.to, ...(opts.timeout === undefined ? {} : { timeoutMs: opts.timeout }) }
  const { res, body } = await ask(
    url,
    { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) },
    wait,
  )
  if (res.ok) {
    const leader = body as MemberInfo
    process.stdout.write(`leader: node ${leader.id} (${leader.address})\n`)
    return
  }
  const error = body as Partial<ErrorBody> | undefined
  if (error?.code === undefined) throw new Error(`${url} answered ${res.status}`)
  throw new Error(`transfer to node ${opts.to} failed: ${error.code} (outcome: ${error.outcome}): ${error.message}`)
}

// ---------------------------------------------------------------------------

function program(): Command {
  const root = new Command('metastore')
    .description('run and inspect MetaStore nodes')
    .version((JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version)
    .showHelpAfterError()
    .exitOverride()
  root
    .command('serve')
    .description('run the group member a config file describes, with an HTTP API for metrics, health, status and keys')
    .requiredOption('-c, --config <file>', 'YAML config file (server.cluster and server.http.listen)')
    .action(serve)
  root
    .command('status')
    .description("print a serving node's view of its group")
    .requiredOption('-e, --endpoint <host:port>', "the node's HTTP address (server.http.listen)", hostPort)
    .option('-t, --timeout <ms>', 'how long to wait for the answer', positiveInt, 5_000)
    .action(status)
  root
    .command('transfer-leader')
    .description("hand the group's leadership to a voter, asked of any serving member")
    .requiredOption('-e, --endpoint <host:port>', "a member's HTTP address (server.http.listen)", hostPort)
    .requiredOption('--to <id>', 'the node id of the voter to lead', positiveInt)
    .option('-t, --timeout <ms>', "how long the transfer may take (default: the node's, two election timeouts and a second)", positiveInt)
    .action(transferLeader)
  for (const command of root.commands) command.exitOverride()
  return root
}

async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv)
    return 0
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2
    if (err instanceof ConfigError) {
      process.stderr.write(`metastore: ${err.message}\n`)
      return 2
    }
    process.stderr.write(`metastore: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}

if (require.main === module) {
  // On success serve keeps running (until a signal) and status ends by itself.
  void main(process.argv).then((code) => {
    if (code !== 0) process.exit(code)
  })
}
