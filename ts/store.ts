import { setTimeout as sleep } from 'node:timers/promises'

import { assertBytes, type Bytes } from './bytes.js'
import { resolveMember, type MetaStoreConfig } from './config.js'
import { ConfigError, MetaStoreError } from './errors.js'
import { Group, type GroupOptions, type MemberOptions } from './group.js'
import { metricsText } from './metrics.js'
import { RequestKind, type MemberInfo, type MembershipChange, type NodeStats } from './native.js'
import { Kind, type Member, type WriteResult } from './requests.js'
import type { Submitter } from './submitter.js'

/**
 * Options of `MetaStore.open`. Without `nodeId` (here or in the config's
 * `server.cluster`) it runs a single-node group; with `nodeId` and
 * `initialCluster`, this process's node of a group whose other members run
 * elsewhere, reached over gRPC. Each member option overrides the same key of
 * the config's `server.cluster`.
 */
export type OpenOptions = GroupOptions & Partial<MemberOptions>

const OPEN_KEYS: ReadonlySet<string> = new Set([
  'config',
  'engine',
  'dataDir',
  'sync',
  'leaderTimeoutMs',
  'nodeId',
  'initialCluster',
  'listen',
  'advertise',
  'clusterToken',
  'tls',
  'join',
] satisfies (keyof OpenOptions)[])

function optionError(key: string, rule: string): ConfigError {
  return new ConfigError(`<options>: ${key}: ${rule}`, { file: '<options>', key, rule })
}

/** The configuration `options` open with, and the member part, checked; undefined for a single-node store. */
function memberOptions(options: OpenOptions): { config: MetaStoreConfig; member: MemberOptions | undefined } {
  for (const key of Object.keys(options)) {
    if (!OPEN_KEYS.has(key)) throw optionError(key, `is not an option of MetaStore.open (options: ${[...OPEN_KEYS].join(', ')})`)
  }
  const { nodeId, initialCluster, listen, advertise, clusterToken, tls, join } = options
  return resolveMember(options.config, { nodeId, initialCluster, listen, advertise, clusterToken, tls, join })
}

/** Checks the options of a membership change: known keys, a positive timeout. */
function changeOptions(what: string, options: object, keys: readonly string[]): { timeoutMs?: number } {
  for (const key of Object.keys(options)) {
    if (!keys.includes(key)) throw new TypeError(`${what}: unknown option '${key}' (options: ${keys.join(', ')})`)
  }
  const { timeoutMs } = options as { timeoutMs?: unknown }
  if (timeoutMs !== undefined && !(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new TypeError(`${what}: timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`)
  }
  return { timeoutMs: timeoutMs as number | undefined }
}

/** A node's figures, and those of the client its handles share. */
export interface StoreStats extends NodeStats {
  client: {
    /** Attempts of writes sent again (after an unknown or dropped outcome) by this group's handles, since start. */
    retries: number
    /** Attempts of writes that ended with an unknown outcome (each sent again while time was left), since start. */
    unknownOutcomes: number
  }
}

/**
 * A replicated key-value store: the handle of one Raft node. `MetaStore.open`
 * runs a single-node group; `LocalCluster.node(id)` hands out handles to the
 * nodes of a cluster. Writes go through the batch loop and the Raft log; reads
 * are linearizable (ReadIndex).
 */
export class MetaStore {
  readonly #group: Group
  readonly #node: number
  readonly #ownsGroup: boolean
  readonly #submitter: Submitter
  #closed = false

  /** @internal Use `MetaStore.open` or `LocalCluster.node`. */
  constructor(group: Group, node: number, ownsGroup: boolean) {
    this.#group = group
    this.#node = node
    this.#ownsGroup = ownsGroup
    this.#submitter = group.submitter(node)
  }

  /**
   * Opens a single-node store, or one member of a group when the options or
   * the config's `server.cluster` name it (engine and data dir from the
   * config, or the overrides).
   */
  static async open(options: OpenOptions = {}): Promise<MetaStore> {
    const { config, member } = memberOptions(options)
    if (member === undefined) return new MetaStore(await Group.start({ ...options, config }, 1), 1, true)
    return new MetaStore(await Group.start({ ...options, config }, member), member.nodeId, true)
  }

  /** The members of this node's group, and which one leads as far as this node knows. */
  members(): MemberInfo[] {
    this.#checkOpen()
    return this.#group.call((n) => n.members(this.#node))
  }

  /** The leader as far as this node knows, or undefined while none is known. */
  leader(): MemberInfo | undefined {
    return this.members().find((m) => m.isLeader)
  }

  /**
   * Hands leadership to voter `to`, asked of any node (a follower forwards
   * the request to the leader, which brings `to` up to date and has it
   * campaign at once). Resolves with the new leader once this node sees it
   * lead. Rejects with ERR_UNKNOWN_NODE when `to` is not a voter, and with
   * ERR_TIMEOUT (outcome unknown: the transfer may still happen) when it did
   * not happen within `timeoutMs` (default: two election timeouts and a
   * second).
   */
  async transferLeadership(to: number, options: { timeoutMs?: number } = {}): Promise<MemberInfo> {
    for (const key of Object.keys(options)) {
      if (key !== 'timeoutMs') throw new TypeError(`transferLeadership: unknown option '${key}' (options: timeoutMs)`)
    }
    if (!Number.isInteger(to) || to < 1) throw new TypeError(`transferLeadership: the node id must be a positive integer, got ${String(to)}`)
    const { tickIntervalMs, electionTick } = this.#group.config.server.raft
    const timeoutMs = options.timeoutMs ?? 2 * tickIntervalMs * electionTick + 1_000
    this.#checkOpen()
    this.#group.call((n) => n.transferLeader(this.#node, to))
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const leader = this.leader()
      if (leader?.id === to) return leader
      if (Date.now() >= deadline) {
        throw new MetaStoreError('ERR_TIMEOUT', `leadership did not move to node ${to} within ${timeoutMs} ms; it may still`, {
          outcome: 'unknown',
        })
      }
      await sleep(5)
    }
  }

  /**
   * Adds node `id`, dialled at `address`, to the group as a learner: it
   * receives the log (a node started with `join: true` catches up by a
   * snapshot) but does not vote until promoted. Asked of any node (a
   * follower's request reaches the leader through the log). Resolves with
   * the members once the change is applied; rejects with
   * ERR_CHANGE_IN_PROGRESS while another change runs, ERR_CHANGE_REFUSED when
   * the id is taken or was ever removed, or the address is taken or
   * malformed (both not applied), ERR_TIMEOUT after `timeoutMs` (unknown:
   * the change may still happen).
   */
  addMember(id: number, address: string, options: { learner?: true; timeoutMs?: number } = {}): Promise<Member[]> {
    const { timeoutMs } = changeOptions('addMember', options, ['learner', 'timeoutMs'])
    if (options.learner !== undefined && options.learner !== true) {
      throw new TypeError('addMember: a new member joins as a learner (learner: true); promote it with promoteMember once it caught up')
    }
    if (typeof address !== 'string') throw new TypeError(`addMember: the address must be a host:port string, got ${typeof address}`)
    return this.#change('addMember', { kind: 'add', id, address }, timeoutMs)
  }

  /**
   * Makes learner `id` a voter, through a joint configuration. Refused with
   * ERR_LEARNER_BEHIND while its match index is more than
   * `raft.promote_max_lag` entries behind the leader's commit index.
   */
  promoteMember(id: number, options: { timeoutMs?: number } = {}): Promise<Member[]> {
    const { timeoutMs } = changeOptions('promoteMember', options, ['timeoutMs'])
    return this.#change('promoteMember', { kind: 'promote', id }, timeoutMs)
  }

  /**
   * Removes member `id` for good (its id is never used again, and a node
   * presenting it is refused). Removing the leader hands leadership over
   * first. A voter whose removal would leave fewer live voters than a
   * quorum is refused with ERR_CHANGE_REFUSED unless `force`.
   */
  removeMember(id: number, options: { force?: boolean; timeoutMs?: number } = {}): Promise<Member[]> {
    const { timeoutMs } = changeOptions('removeMember', options, ['force', 'timeoutMs'])
    if (options.force !== undefined && typeof options.force !== 'boolean') {
      throw new TypeError(`removeMember: force must be a boolean, got ${typeof options.force}`)
    }
    return this.#change('removeMember', { kind: 'remove', id, force: options.force }, timeoutMs)
  }

  #change(what: string, change: MembershipChange, timeoutMs: number | undefined): Promise<Member[]> {
    if (!Number.isInteger(change.id) || change.id < 1 || change.id > 0xffff_ffff) {
      throw new TypeError(`${what}: the node id must be an integer 1..${0xffff_ffff}, got ${String(change.id)}`)
    }
    const { proposalTimeoutMs, tickIntervalMs, electionTick } = this.#group.config.server.raft
    const timeout = timeoutMs ?? proposalTimeoutMs + 2 * tickIntervalMs * electionTick
    // Bad arguments throw; a closed store rejects, as a write does.
    try {
      this.#checkOpen()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#group.requests.track<Member[]>(Kind.Membership, (token) =>
      this.#group.call((n) => n.changeMembership(this.#node, token, change, timeout)),
    )
  }

  get nodeId(): number {
    return this.#node
  }

  put(key: Bytes, value: Bytes): Promise<WriteResult> {
    assertBytes(key, 'key')
    assertBytes(value, 'value')
    return this.#submit(Kind.Write, RequestKind.Put, key, value)
  }

  /** The value committed for `key`, or undefined. */
  get(key: Bytes): Promise<Buffer | undefined> {
    assertBytes(key, 'key')
    return this.#submit(Kind.Get, RequestKind.Get, key)
  }

  /** Resolves true when the key existed. */
  delete(key: Bytes): Promise<boolean> {
    assertBytes(key, 'key')
    return this.#submit(Kind.Delete, RequestKind.Delete, key)
  }

  /** Proposes a raw command through the log; resolves with its index once applied. */
  propose(data: Bytes): Promise<WriteResult> {
    assertBytes(data, 'data')
    return this.#submit(Kind.Write, RequestKind.Raw, data)
  }

  stats(): StoreStats {
    this.#checkOpen()
    const stats = this.#group.call((n) => n.stats(this.#node))
    const { retries, unknownOutcomes } = this.#group.requests
    return { ...stats, client: { retries, unknownOutcomes } }
  }

  /**
   * This node's `stats()` as Prometheus text (format 0.0.4, content type
   * `METRICS_CONTENT_TYPE`), each metric named `metastore_*` and labelled with
   * `node_id`, for a service to serve on its own `/metrics`.
   */
  async metrics(): Promise<string> {
    return metricsText(this.#node, this.stats())
  }

  /** Closes this handle (and the group, for a store from `MetaStore.open`). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#ownsGroup) this.#group.close()
  }

  #checkOpen(): void {
    if (this.#closed || this.#group.closed) throw new MetaStoreError('ERR_CLOSED', 'the store is closed')
  }

  #submit<T>(kind: Kind, op: RequestKind, first: Bytes, value?: Bytes): Promise<T> {
    try {
      this.#checkOpen()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#submitter.submit<T>(kind, op, first, value)
  }
}
