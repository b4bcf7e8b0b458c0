#!/usr/bin/env node
/**
 * The `metastore` command.
 *
 *   metastore serve --config node.yaml     runs the member the file describes, with its HTTP end
 *   metastore status --endpoint host:port  prints what a serving node knows of its group
 *   metastore transfer-leader --endpoint host:port --to id
 *                                          hands the group's leadership to member `id`
 *   metastore member list|add|promote|remove --endpoint host:port ...
 *                                          lists or changes the group's members
 *
 * Exit codes: 0 done (serve: stopped by SIGTERM or SIGINT, or its node was
 * removed from the group), 1 a failure, 2 a bad command line or config file.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Command, CommanderError, InvalidArgumentError } from 'commander'

import { loadConfig, parseAddress, type ClusterConfig, type MetaStoreConfig } from './config.js'
import { ConfigError, MetaStoreError } from './errors.js'
import { HttpApi, type ErrorBody, type NodeStatus } from './http.js'
import type { MemberInfo, RaftRole } from './native.js'
import type { Member } from './requests.js'
import { MetaStore } from './store.js'

/** How often `serve` looks at the node's role and leader to log their changes. */
const WATCH_INTERVAL_MS = 50
/** How long `serve` lets requests in flight finish on shutdown before the store closes under them. */
const DRAIN_MS = 2_000
/**
 * How long `transfer-leader` and the `member` changes wait for an answer
 * beyond the request's own timeout. Without --timeout the node's default
 * applies, which it does not tell; 60 s covers any sane election timeout.
 */
const ANSWER_MARGIN_MS = 5_000
const DEFAULT_REQUEST_WAIT_MS = 60_000

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

  const stop = async (reason: { signal: string } | { removed: true }): Promise<void> => {
    if (stopping) return
    stopping = true
    if ('signal' in reason) log('stopping', { node: cluster.nodeId, signal: reason.signal })
    api.stopAccepting()
    // Requests already in the store get a while to finish; closing the store
    // then rejects the rest, each with its honest outcome.
    await api.drain(DRAIN_MS)
    await store?.close()
    await api.close(DRAIN_MS)
    log('stopped', { node: cluster.nodeId })
    process.exit(0)
  }
  process.once('SIGTERM', () => void stop({ signal: 'SIGTERM' }))
  process.once('SIGINT', () => void stop({ signal: 'SIGINT' }))

  // A member waits for its group however long the others take to come up;
  // a joining node opens at once and waits to be added.
  store = await MetaStore.open({ config, leaderTimeoutMs: Number.MAX_SAFE_INTEGER })
  if (stopping) return
  log('started', {
    node: cluster.nodeId,
    raft: cluster.listen ?? cluster.advertise ?? cluster.initialCluster?.[cluster.nodeId],
    members: store.members().length,
  })
  if (cluster.join === true && store.members().length === 0) {
    log('joining', { node: cluster.nodeId, advertise: cluster.advertise })
  }
  watch(store, {
    stopping: () => stopping,
    removed: (message) => {
      // A removed node has nothing more to do: its id is never used again.
      log('removed', { node: cluster.nodeId, message })
      void stop({ removed: true })
    },
  })
}

/** What `serve` needs of a config file beyond what a store needs: the member and its HTTP address. */
function serveSettings(config: MetaStoreConfig, file: string): { cluster: ClusterConfig; httpListen: string } {
  const required = (key: string, what: string): ConfigError => {
    const rule = `is required by metastore serve (${what})`
    return new ConfigError(`${file}: ${key} ${rule}`, { file, key, rule })
  }
  const { cluster, http } = config.server
  if (cluster === undefined) throw required('server.cluster', 'node_id and initial_cluster, or join, of the member to run')
  if (http?.listen === undefined) throw required('server.http.listen', 'host:port of the HTTP API, e.g. 127.0.0.1:8080')
  return { cluster, httpListen: http.listen }
}

/**
 * Logs each change of this node's role or of the leader it knows. A node that
 * stops by itself (its storage failed: its stats() throws why) ends the
 * process with 1, for a supervisor to see; one removed from its group
 * (ERR_REMOVED) is handed to `removed`.
 */
function watch(store: MetaStore, on: { stopping: () => boolean; removed: (message: string) => void }): void {
  let role: RaftRole | undefined
  let leader = -1
  let removed = false
  /** True when `err` says the node was removed; the first time, hands it to `on.removed`. */
  const removal = (err: unknown): boolean => {
    if (!(err instanceof MetaStoreError) || err.code !== 'ERR_REMOVED') return false
    if (!removed) {
      removed = true
      on.removed(err.message)
    }
    return true
  }
  const look = (): void => {
    if (on.stopping() || removed) return
    let raft
    try {
      raft = store.stats().raft
    } catch (err) {
      if (removal(err)) return
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
  const leader = s.leaderId === 0 ? 'none' : String(s.leaderId)
  return [
    `node ${s.nodeId}: ${s.role}, term ${s.term}, leader ${leader}, commit ${s.commitIndex}, applied ${s.appliedIndex}`,
    ...memberTable(s.members),
    '',
  ].join('\n')
}

/** One row per member as a node sees them; MATCH and LAG where it leads. */
function memberTable(members: MemberInfo[]): string[] {
  const withMatch = members.some((m) => m.matchIndex !== undefined)
  const withLag = members.some((m) => m.lag !== undefined)
  const known = (n: number | undefined): string => (n === undefined ? '-' : String(n))
  const header = ['ID', 'ADDRESS', 'ROLE', 'LEADER', ...(withMatch ? ['MATCH'] : []), ...(withLag ? ['LAG'] : [])]
  const rows = members.map((m) => [
    String(m.id),
    m.address,
    m.role,
    m.isLeader ? '*' : '',
    ...(withMatch ? [known(m.matchIndex)] : []),
    ...(withLag ? [known(m.lag)] : []),
  ])
  return table(header, rows)
}

/** Columns padded to their widest cell, two spaces apart. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd()
  return [line(header), ...rows.map(line)]
}

// ---------------------------------------------------------------------------
// transfer-leader

async function transferLeader(opts: { endpoint: string; to: number; timeout?: number }): Promise<void> {
  const url = `http://${opts.endpoint}/v1/leader`
  const leader = (await request(url, 'POST', { to: opts.to }, opts.timeout, `transfer to node ${opts.to}`)) as MemberInfo
  process.stdout.write(`leader: node ${leader.id} (${leader.address})\n`)
}

/**
 * Sends a request that changes the group (`body` with the timeout, if one
 * was given) and answers its result; a failure is thrown with the code and
 * outcome the node answered, `what` naming the request.
 */
async function request(
  url: string,
  method: 'POST' | 'DELETE',
  body: object | undefined,
  timeout: number | undefined,
  what: string,
): Promise<unknown> {
  const wait = (timeout ?? DEFAULT_REQUEST_WAIT_MS) + ANSWER_MARGIN_MS
  const init: RequestInit =
    body === undefined
      ? { method }
      : {
          method,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ...body, ...(timeout === undefined ? {} : { timeoutMs: timeout }) }),
        }
  const { res, body: answer } = await ask(url, init, wait)
  if (res.ok) return answer
  const error = answer as Partial<ErrorBody> | undefined
  if (error?.code === undefined) throw new Error(`${url} answered ${res.status}`)
  throw new Error(`${what} failed: ${error.code} (outcome: ${error.outcome}): ${error.message}`)
}

// ---------------------------------------------------------------------------
// member

async function memberList(opts: { endpoint: string; timeout: number }): Promise<void> {
  const url = `http://${opts.endpoint}/v1/members`
  const { res, body } = await ask(url, {}, opts.timeout)
  if (!res.ok || !Array.isArray(body)) {
    const message = (body as Partial<ErrorBody> | undefined)?.message
    throw new Error(`${url} answered ${res.status}${message === undefined ? '' : `: ${message}`}`)
  }
  const members = body as MemberInfo[]
  process.stdout.write(members.length === 0 ? 'no members: the node has not joined a group yet\n' : `${memberTable(members).join('\n')}\n`)
}

async function memberAdd(opts: { endpoint: string; id: number; address: string; timeout?: number }): Promise<void> {
  const url = `http://${opts.endpoint}/v1/members`
  const body = { id: opts.id, address: opts.address }
  const members = (await request(url, 'POST', body, opts.timeout, `adding node ${opts.id}`)) as Member[]
  printChange(`node ${opts.id} added as a learner`, members)
}

async function memberPromote(opts: { endpoint: string; id: number; timeout?: number }): Promise<void> {
  const url = `http://${opts.endpoint}/v1/members/${opts.id}/promote`
  const members = (await request(url, 'POST', {}, opts.timeout, `promoting node ${opts.id}`)) as Member[]
  printChange(`node ${opts.id} promoted to voter`, members)
}

async function memberRemove(opts: { endpoint: string; id: number; force?: true; timeout?: number }): Promise<void> {
  const query = new URLSearchParams({
    ...(opts.force && { force: 'true' }),
    ...(opts.timeout !== undefined && { timeoutMs: String(opts.timeout) }),
  })
  const url = `http://${opts.endpoint}/v1/members/${opts.id}${query.size > 0 ? `?${query}` : ''}`
  const members = (await request(url, 'DELETE', undefined, opts.timeout, `removing node ${opts.id}`)) as Member[]
  printChange(`node ${opts.id} removed`, members)
}

/** What a change did, then the members it left. */
function printChange(done: string, members: Member[]): void {
  const rows = members.map((m) => [String(m.id), m.address, m.role])
  process.stdout.write(`${[done, ...table(['ID', 'ADDRESS', 'ROLE'], rows)].join('\n')}\n`)
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

  const member = root.command('member').description("list or change a group's members, asked of any serving member")
  const endpoint = ['-e, --endpoint <host:port>', "a member's HTTP address (server.http.listen)", hostPort] as const
  const changeTimeout = [
    '-t, --timeout <ms>',
    "how long the change may take (default: the node's, its proposal timeout and two election timeouts)",
    positiveInt,
  ] as const
  member
    .command('list')
    .description('print the members as the node asked sees them (with match index and lag where it leads)')
    .requiredOption(...endpoint)
    .option('-t, --timeout <ms>', 'how long to wait for the answer', positiveInt, 5_000)
    .action(memberList)
  member
    .command('add')
    .description('add a node as a learner (start it first with server.cluster.join: true); prints the members')
    .requiredOption(...endpoint)
    .requiredOption('--id <id>', 'the new node id (never used in this group before)', positiveInt)
    .requiredOption('--address <host:port>', "where the members dial it (its server.cluster.advertise)", hostPort)
    .option(...changeTimeout)
    .action(memberAdd)
  member
    .command('promote')
    .description('make a learner that caught up a voter; prints the members')
    .requiredOption(...endpoint)
    .requiredOption('--id <id>', 'the learner to promote', positiveInt)
    .option(...changeTimeout)
    .action(memberPromote)
  member
    .command('remove')
    .description('remove a member for good (its id is never used again); prints the members')
    .requiredOption(...endpoint)
    .requiredOption('--id <id>', 'the member to remove', positiveInt)
    .option('--force', 'remove a voter even if the voters left alive would be fewer than a quorum')
    .option(...changeTimeout)
    .action(memberRemove)

  const exitOverride = (command: Command): void => {
    command.exitOverride()
    command.commands.forEach(exitOverride)
  }
  exitOverride(root)
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
