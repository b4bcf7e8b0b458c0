/**
 * Typed configuration: the YAML file (`server.raft.*`, `server.raft.batch.*`,
 * `server.storage.*`, `server.cluster.*`, `server.http.*`, snake_case keys)
 * read into a camelCase object with durations in milliseconds and sizes in
 * bytes.
 *
 * Every key of raft and storage is optional; missing keys take the core's
 * defaults, which the addon hands over (`defaultServerOptions`; Rust owns
 * them, and `configs/config.yaml` lists them). An empty file, or `{}`, is the
 * default configuration. The cluster and http sections have no defaults: absent
 * (or empty), they stay undefined; a cluster section must name `node_id`, and
 * `initial_cluster` unless the node joins a running group (`join: true`, which
 * needs `advertise`). Units (see ./units.ts):
 * durations are strings such as `5ms`, `1.5s`, `100us`, `2m`, or a YAML number
 * meaning milliseconds; sizes are a number of bytes or strings such as `512KB`,
 * `1MB`, `1MiB`, where KB = KiB = 1024 bytes.
 *
 * A file that is not valid throws ConfigError (ERR_INVALID_CONFIG). Each
 * problem is one line naming the file, the key path as written in the file and
 * the rule, e.g.
 *   `configs/x.yaml: server.raft.batch.min_batch_size (300) must be <= max_batch_size (256) (line 12)`
 * All problems found are reported, one per line, in file order. The Rust core
 * checks the batch rules again when a store starts; this loader exists so that
 * the user reads about *their* file first.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { isIPv4, isIPv6 } from 'node:net'
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml'
import * as z from 'zod'
import { ConfigError, type ConfigIssue } from './errors.js'
import { native, type Engine } from './native.js'
import { parseDuration, parseSize } from './units.js'

// ---------------------------------------------------------------------------
// Types

export interface MetaStoreConfig {
  server: {
    raft: RaftConfig
    storage: StorageConfig
    /** Present: this process runs one member of a group spread over processes (`MetaStore.open`, `metastore serve`). */
    cluster?: ClusterConfig
    /** The HTTP end of `metastore serve`. */
    http?: HttpConfig
  }
}

// Defaults are in configs/config.yaml (the core's, see defaultConfig()).

export interface RaftConfig {
  /** Interval of one Raft logical clock tick. YAML `tick_interval`. */
  tickIntervalMs: number
  /** Ticks without a heartbeat before a follower campaigns. */
  electionTick: number
  /** Ticks between leader heartbeats; must be < electionTick. */
  heartbeatTick: number
  /** Bytes of entries per append message (raft-rs default 0 = one entry per message). */
  maxSizePerMsg: number
  /** Append messages in flight per follower. */
  maxInflightMsgs: number
  preVote: boolean
  checkQuorum: boolean
  /** Applied entries between log compactions. */
  snapshotCount: number
  /** Bytes of applied log that also trigger a compaction, which keeps at most a quarter of it. */
  maxLogSize: number
  /** An attempt not applied within this time fails with ERR_TIMEOUT. YAML `proposal_timeout`. */
  proposalTimeoutMs: number
  /** A write is sent again after attempts with an unknown outcome until this long after the call. YAML `request_timeout`. */
  requestTimeoutMs: number
  /** A learner is promoted only when at most this many entries behind the leader's commit index. YAML `promote_max_lag`. */
  promoteMaxLag: number
  batch: BatchConfig
}

export interface BatchConfig {
  /** `false` sends each proposal as its own Raft entry. */
  enable: boolean
  minBatchSize: number
  maxBatchSize: number
  /** Flush deadline under low load. YAML `min_timeout`. */
  minTimeoutMs: number
  /** Flush deadline under full load. YAML `max_timeout`. */
  maxTimeoutMs: number
  /** Load (EMA of buffer usage, 0..1) above which batches grow towards maxBatchSize. */
  loadThreshold: number
  /** Largest single proposal accepted; larger ones fail with ERR_TOO_LARGE. */
  maxProposalBytes: number
  /** Proposals queued before `propose` waits. */
  queueCapacity: number
  compression: Compression
  /** Batches smaller than this are never compressed. */
  compressMinBytes: number
}

export interface StorageConfig {
  engine: Engine
  /** Directory of the RocksDB files, relative to the process's working directory. */
  dataDir: string
  /** fsync each Raft write (HardState and entries) before acknowledging. */
  sync: boolean
}

export type Compression = 'none' | 'lz4'

/**
 * One member of a group whose nodes run in separate processes or hosts.
 * Addresses are `host:port`: a hostname, an IPv4 address or an `[IPv6]`
 * address, and a port 1..65535.
 */
export interface ClusterConfig {
  /** This node's id; a key of `initialCluster` unless it joins. YAML `node_id`. */
  nodeId: number
  /**
   * Every initial member: node id to the `host:port` the others dial it at.
   * Required unless `join`. Once the node has state, the group's membership
   * record decides who the members are, and a different value is ignored.
   */
  initialCluster?: Record<number, string>
  /**
   * Start empty and wait to be added to a running group (`addMember` on one
   * of its nodes), catching up by a snapshot; needs `advertise`. Ignored
   * once the data dir holds this node's state.
   */
  join?: boolean
  /** Where to listen for the other members (default: this node's address in `initialCluster`). */
  listen?: string
  /** The address the others dial this node at: required with `join`; otherwise, when given, this node's address in `initialCluster`. */
  advertise?: string
  /** Tells groups with the same members apart; part of the cluster id (the core's default when absent). */
  clusterToken?: string
  /** Mutual TLS between the members; the files are PEM, relative to the process's working directory. */
  tls?: TlsConfig
}

export interface TlsConfig {
  /** This node's certificate. YAML `cert_file`. */
  certFile: string
  /** Its private key. YAML `key_file`. */
  keyFile: string
  /** The authority the other members' certificates must be signed by. YAML `ca_file`. */
  caFile: string
}

export interface HttpConfig {
  /** `host:port` of the HTTP end of `metastore serve` (metrics, health, status); port 0 takes any free port. */
  listen?: string
}

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K]
}

// ---------------------------------------------------------------------------
// Value kinds. Each error map returns the rule alone; the key path and file are
// added when issues are turned into messages. Rules that start with "must", "is"
// or "has" are printed after the offending value: `key (300) must be ...`.

const MAX_U32 = 4294967295

function describe(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  if (typeof value === 'string') return `string '${value}'`
  return `${typeof value} ${String(value)}`
}

function display(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value)
}

const expected =
  (what: string) =>
  (issue: { input?: unknown }): string =>
    `expected ${what}, got ${describe(issue.input)}`

/** A positive integer that fits the u32 the native side takes. */
function count(): z.ZodType<number> {
  const rule = 'must be a positive integer'
  return z
    .number({ error: expected('a positive integer') })
    .int({ error: rule })
    .positive({ error: rule })
    .max(MAX_U32, { error: `must be <= ${MAX_U32}` })
}

/** YAML 1.1 words that YAML 1.2 (and this loader) read as strings, not booleans. */
const YAML11_BOOLEANS = /^(y|yes|n|no|on|off)$/i

function flag(): z.ZodType<boolean> {
  return z.boolean({
    error: (issue) =>
      expected('a boolean')(issue) +
      (typeof issue.input === 'string' && YAML11_BOOLEANS.test(issue.input) ? '; write true or false' : ''),
  })
}

function ratio(): z.ZodType<number> {
  const rule = 'must be between 0 and 1'
  return z.number({ error: expected('a number between 0 and 1') }).min(0, { error: rule }).max(1, { error: rule })
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T): z.ZodType<T[number]> {
  return z.enum(values, { error: expected(`one of ${values.map((v) => `'${v}'`).join(', ')}`) })
}

function nonEmptyString(): z.ZodType<string> {
  return z.string({ error: expected('a string') }).min(1, { error: 'must not be empty' })
}

/** Parses a unit-bearing value with `parse`, which throws with the rule as message. */
function unit(what: string, parse: (v: string | number) => number, positiveRule: string): z.ZodType<number> {
  return z.unknown().transform((input, ctx) => {
    if (typeof input !== 'string' && typeof input !== 'number') {
      ctx.addIssue({ code: 'custom', message: expected(what)({ input }), input })
      return z.NEVER
    }
    let value: number
    try {
      value = parse(input)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message, input })
      return z.NEVER
    }
    if (!(value > 0)) {
      ctx.addIssue({ code: 'custom', message: positiveRule, input })
      return z.NEVER
    }
    return value
  })
}

const NODE_ID = /^[1-9]\d*$/
const HOSTNAME_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i
const ADDRESS_FORMAT = "must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001'"

/**
 * The rule `value` breaks as a `host:port` address, or undefined: the host a
 * hostname (underscores allowed, as container runtimes name hosts so), an IPv4
 * address or an IPv6 address in brackets; the port 1..65535, or 0 as well
 * when `anyPort` (a listener that takes any free port).
 */
function addressRule(value: string, anyPort: boolean): string | undefined {
  if (/^[a-z][a-z\d+.-]*:\/\//i.test(value)) return 'must be host:port, without a scheme such as http://'
  let host: string
  let port: string
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(value)
  if (bracketed !== null) {
    host = bracketed[1] as string
    port = bracketed[2] as string
    if (!isIPv6(host)) return `has an invalid IPv6 address '${host}'`
  } else {
    const colon = value.lastIndexOf(':')
    if (colon <= 0) return ADDRESS_FORMAT
    host = value.slice(0, colon)
    port = value.slice(colon + 1)
    if (host.includes(':')) return "must put an IPv6 host in brackets, e.g. '[::1]:7001'"
    if (/^[\d.]+$/.test(host)) {
      if (!isIPv4(host)) return `has an invalid IPv4 address '${host}'`
    } else if (host.length > 253 || !host.split('.').every((label) => HOSTNAME_LABEL.test(label))) {
      return `has an invalid host '${host}'; expected a hostname, an IPv4 address or [IPv6]`
    }
  }
  if (port === '') return ADDRESS_FORMAT
  if (!/^\d{1,5}$/.test(port)) return `has an invalid port '${port}'`
  const min = anyPort ? 0 : 1
  if (Number(port) < min || Number(port) > 65535) return `has port ${Number(port)} out of range ${min}..65535`
  return undefined
}

/**
 * The host and port of a `host:port` address (brackets of an IPv6 host
 * removed), by the rules of the config keys; throws a TypeError naming the
 * rule it breaks. `anyPort` also allows port 0 (a listener on any free port).
 */
export function parseAddress(value: string, { anyPort = false } = {}): { host: string; port: number } {
  const rule = addressRule(value, anyPort)
  if (rule !== undefined) throw new TypeError(`'${value}' ${VALUE_RULE.test(rule) ? rule : `is not valid: ${rule}`}`)
  const colon = value.lastIndexOf(':')
  return { host: value.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port: Number(value.slice(colon + 1)) }
}

function address({ anyPort = false } = {}): z.ZodType<string> {
  return z.unknown().transform((input, ctx) => {
    const rule = typeof input === 'string' ? addressRule(input, anyPort) : expected('a host:port string')({ input })
    if (rule === undefined) return input as string
    ctx.addIssue({ code: 'custom', message: rule, input })
    return z.NEVER
  })
}

/**
 * `initial_cluster`: node ids to distinct addresses. YAML gives the ids as
 * numbers or strings; both become the keys of an object, as in options.
 */
function members(): z.ZodType<Record<number, string>> {
  return z.unknown().transform((input, ctx) => {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      ctx.addIssue({ code: 'custom', message: expected('a mapping of node ids to host:port addresses')({ input }), input })
      return z.NEVER
    }
    const entries = Object.entries(input)
    if (entries.length === 0) ctx.addIssue({ code: 'custom', message: 'must name at least one member', input })
    // Integer keys come in ascending order: a shared address is reported at the higher id.
    const owners = new Map<string, string>()
    for (const [id, value] of entries) {
      const fail = (message: string): void => ctx.addIssue({ code: 'custom', message, input: value, path: [id] })
      if (!NODE_ID.test(id) || Number(id) > MAX_U32) fail(`not a node id; node ids are integers 1..${MAX_U32}`)
      const rule = typeof value === 'string' ? addressRule(value, false) : expected('a host:port string')({ input: value })
      if (rule !== undefined) {
        fail(rule)
        continue
      }
      const key = (value as string).toLowerCase()
      const owner = owners.get(key)
      if (owner === undefined) owners.set(key, id)
      else fail(`is also node ${owner}'s address`)
    }
    return Object.fromEntries(entries) as Record<number, string>
  })
}

const duration = (): z.ZodType<number> =>
  unit(`a duration such as '5ms' or '1s'`, parseDuration, 'must be a positive duration')
const size = (): z.ZodType<number> =>
  unit(`a size such as '1MB' or a number of bytes`, parseSize, 'must be a positive number of bytes')

// ---------------------------------------------------------------------------
// The schema, written once as a table of keys: the YAML name, the value kind
// and the default of each (or whether it may be absent). Zod schemas for the YAML file (snake_case) and for
// options objects (camelCase) are built from it, so the two cannot drift.

interface LeafSpec<T> {
  readonly kind: 'leaf'
  readonly yaml: string
  readonly schema: z.ZodType<T>
  /**
   * What an absent key gives: a default, or nothing; a `required` key must be
   * there whenever its section is, and one required `unless` a flag (the
   * TypeScript name of a boolean key of the same section) whenever that flag
   * is not true.
   */
  readonly absent: { readonly default: T } | 'optional' | 'required' | { readonly unless: string }
}

/** How a rule names the keys of its section. */
type Namer<T> = (key: keyof T & string) => string

/** Adds an issue at `key`; `rule` is written with the names the message about `key` uses. */
type Report<T> = (key: keyof T & string, rule: (name: Namer<T>) => string, value: string, related?: keyof T & string) => void

/** A value that is a leaf although it is an object: node ids to addresses. */
type Mapping = Readonly<Record<number, string>>

type NodeSpec<V> =
  NonNullable<V> extends object
    ? [Mapping, NonNullable<V>] extends [NonNullable<V>, Mapping]
      ? LeafSpec<V>
      : SectionSpec<NonNullable<V>>
    : LeafSpec<V>

interface SectionSpec<T> {
  readonly kind: 'section'
  readonly fields: { readonly [K in keyof T]-?: NodeSpec<T[K]> }
  /** Rules across keys of this section, run once each key is valid on its own. */
  readonly rules: readonly ((value: T, report: Report<T>) => void)[]
  /**
   * Set for a section without defaults: absent or empty it is undefined, and
   * `what` names it in the rule for a missing required key.
   */
  readonly optional?: { readonly what: string }
}

type AnySection = SectionSpec<Record<string, unknown>>
type AnyNode = AnySection | LeafSpec<unknown>

const leaf = <T>(yaml: string, schema: z.ZodType<T>, value: T): LeafSpec<T> => ({
  kind: 'leaf',
  yaml,
  schema,
  absent: { default: value },
})

const optionalLeaf = <T>(yaml: string, schema: z.ZodType<T>): LeafSpec<T | undefined> => ({
  kind: 'leaf',
  yaml,
  schema,
  absent: 'optional',
})

const requiredLeaf = <T>(yaml: string, schema: z.ZodType<T>): LeafSpec<T> => ({
  kind: 'leaf',
  yaml,
  schema,
  absent: 'required',
})

const requiredUnless = <T>(yaml: string, schema: z.ZodType<T>, flag: string): LeafSpec<T | undefined> => ({
  kind: 'leaf',
  yaml,
  schema,
  absent: { unless: flag },
})

const ms = (v: number): string => `${v}ms`

/** `a op b` between two keys of a section, e.g. min_batch_size <= max_batch_size. */
function ordered<T>(a: keyof T & string, op: '<' | '<=', b: keyof T & string, show: (v: number) => string = String) {
  return (value: T, report: Report<T>): void => {
    const x = value[a] as number
    const y = value[b] as number
    if (op === '<' ? x < y : x <= y) return
    report(a, (name) => `must be ${op} ${name(b)} (${show(y)})`, show(x), b)
  }
}

/**
 * A joining member says where the group dials it (it is in no initial
 * cluster, and the core ignores one); any other member's own id names one of
 * the initial members, and `advertise` repeats that member's address.
 */
function memberOfCluster(value: ClusterConfig, report: Report<ClusterConfig>): void {
  if (value.join === true) {
    if (value.advertise === undefined) {
      report('advertise', (name) => `missing; needed when ${name('join')} is true: the group dials a joining node there`, '', 'join')
    }
    return
  }
  // Absent only with join: true (the schema requires it otherwise).
  if (value.initialCluster === undefined) return
  const own = value.initialCluster[value.nodeId]
  if (own === undefined) {
    const ids = Object.keys(value.initialCluster).join(', ')
    report('nodeId', (name) => `is not a key of ${name('initialCluster')} (${ids})`, String(value.nodeId), 'initialCluster')
  } else if (value.advertise !== undefined && value.advertise !== own) {
    const rule = (name: Namer<ClusterConfig>): string =>
      `must equal the address of node ${value.nodeId} in ${name('initialCluster')} (${display(own)})`
    report('advertise', rule, display(value.advertise), 'initialCluster')
  }
}

/** The core's defaults, read once from the addon. */
const CORE = native.defaultServerOptions()
const RAFT = CORE.raft
const BATCH = CORE.raft.batch
const STORAGE = CORE.storage

/** Every engine the addon knows; the compiler checks the list against its `Engine` type both ways. */
const ENGINES = Object.keys({ memory: true, rocksdb: true } satisfies Record<Engine, true>) as [Engine, ...Engine[]]
const COMPRESSIONS = ['none', 'lz4'] as const satisfies readonly Compression[]

const SPEC: SectionSpec<MetaStoreConfig> = {
  kind: 'section',
  rules: [],
  fields: {
    server: {
      kind: 'section',
      rules: [],
      fields: {
        raft: {
          kind: 'section',
          rules: [
            ordered<RaftConfig>('heartbeatTick', '<', 'electionTick'),
            ordered<RaftConfig>('proposalTimeoutMs', '<=', 'requestTimeoutMs', ms),
          ],
          fields: {
            tickIntervalMs: leaf('tick_interval', duration(), RAFT.tickIntervalMs),
            electionTick: leaf('election_tick', count(), RAFT.electionTick),
            heartbeatTick: leaf('heartbeat_tick', count(), RAFT.heartbeatTick),
            maxSizePerMsg: leaf('max_size_per_msg', size(), RAFT.maxSizePerMsg),
            maxInflightMsgs: leaf('max_inflight_msgs', count(), RAFT.maxInflightMsgs),
            preVote: leaf('pre_vote', flag(), RAFT.preVote),
            checkQuorum: leaf('check_quorum', flag(), RAFT.checkQuorum),
            snapshotCount: leaf('snapshot_count', count(), RAFT.snapshotCount),
            maxLogSize: leaf('max_log_size', size(), RAFT.maxLogSize),
            proposalTimeoutMs: leaf('proposal_timeout', duration(), RAFT.proposalTimeoutMs),
            requestTimeoutMs: leaf('request_timeout', duration(), RAFT.requestTimeoutMs),
            promoteMaxLag: leaf('promote_max_lag', count(), RAFT.promoteMaxLag),
            batch: {
              kind: 'section',
              rules: [
                ordered<BatchConfig>('minBatchSize', '<=', 'maxBatchSize'),
                ordered<BatchConfig>('minTimeoutMs', '<=', 'maxTimeoutMs', ms),
              ],
              fields: {
                enable: leaf('enable', flag(), BATCH.enable),
                minBatchSize: leaf('min_batch_size', count(), BATCH.minBatchSize),
                maxBatchSize: leaf('max_batch_size', count(), BATCH.maxBatchSize),
                minTimeoutMs: leaf('min_timeout', duration(), BATCH.minTimeoutMs),
                maxTimeoutMs: leaf('max_timeout', duration(), BATCH.maxTimeoutMs),
                loadThreshold: leaf('load_threshold', ratio(), BATCH.loadThreshold),
                maxProposalBytes: leaf('max_proposal_bytes', size(), BATCH.maxProposalBytes),
                queueCapacity: leaf('queue_capacity', count(), BATCH.queueCapacity),
                compression: leaf('compression', oneOf(COMPRESSIONS), BATCH.compression as Compression),
                compressMinBytes: leaf('compress_min_bytes', size(), BATCH.compressMinBytes),
              },
            },
          },
        },
        storage: {
          kind: 'section',
          rules: [],
          fields: {
            engine: leaf('engine', oneOf(ENGINES), STORAGE.engine as Engine),
            dataDir: leaf('data_dir', nonEmptyString(), STORAGE.dataDir),
            sync: leaf('sync', flag(), STORAGE.sync),
          },
        },
        cluster: {
          kind: 'section',
          optional: { what: 'a cluster member' },
          rules: [memberOfCluster],
          fields: {
            nodeId: requiredLeaf('node_id', count()),
            initialCluster: requiredUnless('initial_cluster', members(), 'join'),
            join: optionalLeaf('join', flag()),
            listen: optionalLeaf('listen', address()),
            advertise: optionalLeaf('advertise', address()),
            clusterToken: optionalLeaf('cluster_token', nonEmptyString()),
            tls: {
              kind: 'section',
              optional: { what: 'tls' },
              rules: [],
              fields: {
                certFile: requiredLeaf('cert_file', nonEmptyString()),
                keyFile: requiredLeaf('key_file', nonEmptyString()),
                caFile: requiredLeaf('ca_file', nonEmptyString()),
              },
            },
          },
        },
        http: {
          kind: 'section',
          optional: { what: 'http' },
          rules: [],
          fields: {
            listen: optionalLeaf('listen', address({ anyPort: true })),
          },
        },
      },
    },
  },
}

const ROOT = SPEC as unknown as AnySection
const CLUSTER = SPEC.fields.server.fields.cluster as unknown as AnySection

/** YAML files use snake_case keys; options objects use the TypeScript names. */
type Style = 'yaml' | 'ts'

function keyName(node: AnyNode, tsKey: string, style: Style): string {
  return style === 'yaml' && node.kind === 'leaf' ? node.yaml : tsKey
}

/** `a`, `a and b`, `a, b and c`. */
function list(words: readonly string[]): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`
}

/** `schema`, with `rule` reported when the key is absent. */
function present(schema: z.ZodType, rule: string): z.ZodType {
  return z
    .unknown()
    .transform((value, ctx): unknown => {
      if (value !== undefined) return value
      ctx.addIssue({ code: 'custom', message: rule })
      return z.NEVER
    })
    .pipe(schema)
}

/**
 * How the rules of a section name `key` in a message about `reported` (both
 * TypeScript names); by default by the key's name in the schema's style.
 */
type Naming = (reported: string, key: string) => string

function buildSchema(section: AnySection, style: Style, naming?: Naming): z.ZodType {
  const shape: Record<string, z.ZodType> = {}
  const toTs: Record<string, string> = {}
  const fromTs: Record<string, string> = {}
  const entries = Object.entries(section.fields) as [string, AnyNode][]
  const required: string[] = []
  // [key, flag]: the key is required unless the flag is true.
  const unless: [string, string][] = []
  for (const [tsKey, node] of entries) {
    if (node.kind !== 'leaf') continue
    if (node.absent === 'required') required.push(tsKey)
    else if (typeof node.absent === 'object' && 'unless' in node.absent) unless.push([tsKey, node.absent.unless])
  }
  /** The rule for a missing key of this section, naming its keys with `name`. */
  const needs = (name: (tsKey: string) => string): string => {
    const parts = [list(required.map(name)), ...unless.map(([key, flag]) => `${name(key)} unless ${name(flag)} is true`)]
    return `missing; ${section.optional?.what ?? 'this section'} needs ${parts.filter((p) => p !== '').join(', and ')}`
  }
  const missing = needs((tsKey) => keyName(section.fields[tsKey] as AnyNode, tsKey, style))
  for (const [tsKey, node] of entries) {
    const key = keyName(node, tsKey, style)
    toTs[key] = tsKey
    fromTs[tsKey] = key
    if (node.kind === 'leaf') {
      const { absent } = node
      if (absent === 'required') shape[key] = present(node.schema, missing)
      else if (absent === 'optional' || 'unless' in absent) shape[key] = node.schema.optional()
      else shape[key] = node.schema.default(absent.default)
    } else if (node.optional !== undefined) {
      // Absent, or left empty in YAML (every key commented out, so null): no section.
      shape[key] = z.preprocess((v) => v ?? undefined, buildSchema(node, style).optional())
    } else {
      // A section left empty in YAML (`batch:` with every key commented out) is null: use its defaults.
      shape[key] = z.preprocess((v) => v ?? {}, buildSchema(node, style))
    }
  }
  return z
    .strictObject(shape, {
      error: (issue) => (issue.code === 'invalid_type' ? expected('a mapping')(issue) : undefined),
    })
    .superRefine(
      (obj: Record<string, unknown>, ctx) => {
        for (const [key, flag] of unless) {
          // A flag that is not a boolean has its own issue; the key is missing only when the flag is absent or false.
          const on = obj[fromTs[flag] as string]
          if (obj[fromTs[key] as string] !== undefined || (on !== undefined && on !== false)) continue
          const name = (other: string): string => (naming === undefined ? (fromTs[other] as string) : naming(key, other))
          ctx.addIssue({ code: 'custom', message: needs(name), path: [fromTs[key] as string], input: undefined })
        }
      },
      // Also when other keys have problems: a missing key is reported with the others, as a required one is.
      { when: (payload) => payload.value !== null && typeof payload.value === 'object' && !Array.isArray(payload.value) },
    )
    .transform((obj) => {
      const out: Record<string, unknown> = {}
      for (const [key, value] of Object.entries(obj)) out[toTs[key] as string] = value
      return out
    })
    .superRefine((value, ctx) => {
      const name = (tsKey: string): string => fromTs[tsKey] as string
      const report: Report<Record<string, unknown>> = (key, rule, shown, related) =>
        ctx.addIssue({
          code: 'custom',
          message: rule((other) => (naming === undefined ? name(other) : naming(key, other))),
          path: [name(key)],
          input: value[key],
          params: { display: shown, related: related === undefined ? undefined : name(related) },
        })
      for (const rule of section.rules) rule(value, report)
    })
}

const schemas: Partial<Record<Style, z.ZodType>> = {}

function schemaFor(style: Style): z.ZodType {
  schemas[style] ??= z.preprocess((v) => v ?? {}, buildSchema(ROOT, style))
  return schemas[style]
}

// ---------------------------------------------------------------------------
// Turning zod issues into messages

/** Where a key path is in the source: 1-based line and column, if known. */
type Locate = (path: readonly string[]) => { line: number; column: number } | undefined

function sectionAt(path: readonly string[], style: Style, root: AnySection): AnySection | undefined {
  let node: AnyNode = root
  for (const segment of path) {
    if (node.kind !== 'section') return undefined
    const entry: [string, AnyNode] | undefined = (Object.entries(node.fields) as [string, AnyNode][]).find(
      ([tsKey, child]) => keyName(child, tsKey, style) === segment,
    )
    if (entry === undefined) return undefined
    node = entry[1]
  }
  return node.kind === 'section' ? node : undefined
}

/** Every key path of the schema, in `style` names. */
function allPaths(style: Style, section: AnySection, prefix: string[] = []): string[][] {
  const out: string[][] = []
  for (const [tsKey, node] of Object.entries(section.fields) as [string, AnyNode][]) {
    const path = [...prefix, keyName(node, tsKey, style)]
    out.push(path)
    if (node.kind === 'section') out.push(...allPaths(style, node, path))
  }
  return out
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      cur[j] = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + cost)
    }
    prev = cur
  }
  return prev[b.length] as number
}

const normalize = (key: string): string => key.toLowerCase().replace(/[_-]/g, '')

/** The rule for an unknown key: the nearest known key here, or where the key belongs. */
function unknownKeyRule(parent: readonly string[], key: string, style: Style, root: AnySection): string {
  const known = Object.entries(sectionAt(parent, style, root)?.fields ?? {}).map(([tsKey, node]) =>
    keyName(node as AnyNode, tsKey, style),
  )
  // Same key in another spelling: `minBatchSize` or `min-batch-size` for `min_batch_size`.
  const respelled = known.find((k) => normalize(k) === normalize(key))
  if (respelled !== undefined) return `unknown key; did you mean ${respelled}?`

  let best: string[] = []
  let bestDistance = Infinity
  for (const candidate of known) {
    const d = levenshtein(key.toLowerCase(), candidate.toLowerCase())
    const close = d <= Math.floor(Math.max(key.length, candidate.length) / 2) || (key.length >= 3 && candidate.includes(key))
    if (!close) continue
    if (d < bestDistance) [best, bestDistance] = [[candidate], d]
    else if (d === bestDistance) best.push(candidate)
  }
  if (best.length > 0) return `unknown key; did you mean ${best.join(' or ')}?`

  // A known key in the wrong section, e.g. `batch:` at the top level as in the seed's snippets.
  const elsewhere = allPaths(style, root).filter((p) => normalize(p[p.length - 1] as string) === normalize(key))
  if (elsewhere.length > 0) return `unknown key; did you mean ${elsewhere.map((p) => p.join('.')).join(' or ')}?`

  return known.length > 0 ? `unknown key; expected one of ${known.join(', ')}` : 'unknown key'
}

const VALUE_RULE = /^(must|is|has) /

function issueFor(file: string, path: readonly string[], rule: string, shown: string | undefined, at?: { line: number; column: number }): ConfigIssue {
  const key = path.length > 0 ? path.join('.') : '(top level)'
  const subject = shown !== undefined && VALUE_RULE.test(rule) ? `${key} (${shown}) ${rule}` : `${key}: ${rule}`
  const where = at === undefined ? '' : ` (line ${at.line})`
  return {
    file,
    key: path.length > 0 ? key : undefined,
    rule,
    line: at?.line,
    column: at?.column,
    message: `${file}: ${subject}${where}`,
  }
}

/** `zodIssues` as messages; their paths are relative to `root`, and so are `locate`'s. */
function toIssues(
  zodIssues: readonly z.core.$ZodIssue[],
  file: string,
  style: Style,
  locate: Locate,
  root: AnySection = ROOT,
): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const issue of zodIssues) {
    const path = issue.path.map(String)
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const keyPath = [...path, key]
        issues.push(issueFor(file, keyPath, unknownKeyRule(path, key, style, root), undefined, locate(keyPath)))
      }
      continue
    }
    const params = issue.code === 'custom' ? (issue.params as { display?: string; related?: string } | undefined) : undefined
    const input = issue.input
    const shown =
      params?.display ?? (input === null || typeof input === 'object' || input === undefined ? undefined : display(input))
    const related = params?.related === undefined ? undefined : [...path.slice(0, -1), params.related]
    // A cross-key rule may name a key left to its default: point at the other one.
    const at = locate(path) ?? (related && locate(related)) ?? locate(path.slice(0, -1))
    issues.push(issueFor(file, path, issue.message, shown, at))
  }
  // Report in file order; issues without a line (keys not in the file) last.
  return issues
    .map((issue, index) => ({ issue, index }))
    .sort((a, b) => (a.issue.line ?? Infinity) - (b.issue.line ?? Infinity) || a.index - b.index)
    .map(({ issue }) => issue)
}

function configError(issues: readonly ConfigIssue[]): ConfigError {
  const { file, key, rule, line, column } = issues[0] as ConfigIssue
  return new ConfigError(issues.map((i) => i.message).join('\n'), { file, key, rule, line, column, issues })
}

function validate(input: unknown, file: string, style: Style, locate: Locate): MetaStoreConfig {
  const result = schemaFor(style).safeParse(input, { reportInput: true })
  if (result.success) return result.data as MetaStoreConfig
  throw configError(toIssues(result.error.issues, file, style, locate))
}

// ---------------------------------------------------------------------------
// YAML

/** Finds the key of `path` in the document; undefined when the file does not hold that key. */
function locator(doc: Document, lines: LineCounter): Locate {
  return (path) => {
    let node: unknown = doc.contents
    let offset: number | undefined
    for (const segment of path) {
      if (!isMap(node)) break
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === segment)
      if (pair === undefined) return undefined
      offset = (pair.key as { range?: [number, number, number] }).range?.[0]
      node = pair.value
    }
    if (offset === undefined) return undefined
    const { line, col } = lines.linePos(offset)
    return { line, column: col }
  }
}

/** A validated configuration and where it came from, for checks made later that must point into it. */
interface Source {
  readonly config: MetaStoreConfig
  /** The file, or `<options>` for an object, `<defaults>` for none. */
  readonly file: string
  readonly style: Style
  readonly locate: Locate
}

const nowhere: Locate = () => undefined

/**
 * Parses and validates the YAML text of a config file. `source` names the file
 * in error messages (`<inline>` when omitted).
 */
export function parseConfig(yamlText: string, source = '<inline>'): MetaStoreConfig {
  return parseSource(yamlText, source).config
}

function parseSource(yamlText: string, source: string): Source {
  const lines = new LineCounter()
  const doc = parseDocument(yamlText, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  const syntax = doc.errors[0]
  if (syntax !== undefined) {
    const { line, col } = lines.linePos(syntax.pos[0])
    const rule = `invalid YAML: ${syntax.message}`
    const text = yamlText.split(/\r?\n/)[line - 1] ?? ''
    const excerpt = text.trim() === '' ? '' : `\n  ${text}\n  ${' '.repeat(Math.max(col - 1, 0))}^`
    throw new ConfigError(`${source}: line ${line}, column ${col}: ${rule}${excerpt}`, {
      file: source,
      rule,
      line,
      column: col,
      cause: syntax,
    })
  }
  let data: unknown
  try {
    data = doc.toJS()
  } catch (err) {
    // Unresolved or excessive aliases surface only when the document is converted.
    const rule = `invalid YAML: ${(err as Error).message}`
    throw new ConfigError(`${source}: ${rule}`, { file: source, rule, cause: err })
  }
  const locate = locator(doc, lines)
  return { config: validate(data, source, 'yaml', locate), file: source, style: 'yaml', locate }
}

const READ_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'is a directory, not a file',
}

function readError(path: string, err: unknown): ConfigError {
  const code = (err as NodeJS.ErrnoException).code ?? ''
  const rule = `cannot read config file: ${READ_ERRORS[code] ?? (err as Error).message}`
  return new ConfigError(`${path}: ${rule}`, { file: path, rule, cause: err })
}

/** Reads, parses and validates a YAML config file. Errors name `path` as given. */
export async function loadConfig(path: string): Promise<MetaStoreConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw readError(path, err)
  }
  return parseConfig(text, path)
}

/** Synchronous loadConfig, for startup code that cannot await. */
export function loadConfigSync(path: string): MetaStoreConfig {
  return loadSourceSync(path).config
}

function loadSourceSync(path: string): Source {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw readError(path, err)
  }
  return parseSource(text, path)
}

/** The core's defaults; a fresh object on every call. */
export function defaultConfig(): MetaStoreConfig {
  return validate({}, '<defaults>', 'ts', () => undefined)
}

type ConfigInput = MetaStoreConfig | string | DeepPartial<MetaStoreConfig>

function readSource(input?: ConfigInput): Source {
  if (input === undefined) return { config: defaultConfig(), file: '<defaults>', style: 'ts', locate: nowhere }
  if (typeof input === 'string') return loadSourceSync(input)
  return { config: validate(input, '<options>', 'ts', nowhere), file: '<options>', style: 'ts', locate: nowhere }
}

/**
 * The configuration a store opens with: the defaults when `input` is omitted,
 * the file at `input` when it is a string (read synchronously), or a
 * (possibly partial) camelCase object merged over the defaults and checked by
 * the same rules as a file, errors naming `<options>` and camelCase keys.
 * Durations in options objects are milliseconds and sizes bytes (unit strings
 * such as '5ms' are accepted too).
 */
export function resolveConfig(input?: ConfigInput): MetaStoreConfig {
  return readSource(input).config
}

/** The member settings `MetaStore.open` takes as options, each overriding the config's key. */
export type MemberOverrides = { [K in keyof ClusterConfig]?: ClusterConfig[K] | undefined }

/**
 * The configuration `MetaStore.open` runs with, and the member it runs
 * (undefined for a single-node store): the config's `server.cluster` with the
 * options' member keys over it, key by key, checked by the rules of a file.
 * A problem is reported where its value came from: `<options>` and the
 * option's name, or the config's key path (and line, in a file).
 */
export function resolveMember(input: ConfigInput | undefined, overrides: MemberOverrides): {
  config: MetaStoreConfig
  member: ClusterConfig | undefined
} {
  const source = readSource(input)
  const configured = source.config.server.cluster
  const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as Partial<ClusterConfig>
  if (configured === undefined && given.nodeId === undefined && given.initialCluster === undefined && given.join === undefined) {
    const stray = Object.keys(given)
    if (stray.length === 0) return { config: source.config, member: undefined }
    const rule = 'needs a member to apply to: nodeId with initialCluster (or with join: true), or a server.cluster section in the config'
    throw configError(stray.map((key) => issueFor('<options>', [key], rule, undefined)))
  }

  const fromOptions = (tsKey: string): boolean => tsKey in given || configured === undefined
  const inConfig = (tsKey: string): string[] => ['server', 'cluster', keyName(CLUSTER.fields[tsKey] as AnyNode, tsKey, source.style)]
  const naming: Naming = (reported, key) => {
    if (fromOptions(key)) return fromOptions(reported) ? key : `the ${key} option`
    const name = inConfig(key)
    if (!fromOptions(reported)) return name[2] as string
    return `${name.join('.')} of ${source.style === 'yaml' ? source.file : 'the config'}`
  }
  const result = buildSchema(CLUSTER, 'ts', naming).safeParse({ ...configured, ...given }, { reportInput: true })
  if (result.success) {
    const member = result.data as ClusterConfig
    return { config: { ...source.config, server: { ...source.config.server, cluster: member } }, member }
  }

  // Values from the config passed its checks alone: only a rule across keys can fail on one of them.
  const [options, configuredIssues] = partition(result.error.issues, (issue) => fromOptions(String(issue.path[0])))
  const relocated = configuredIssues.map((issue) => {
    const [key, ...rest] = issue.path.map(String) as [string, ...string[]]
    const related = (issue as { params?: { related?: string } }).params?.related
    const params = { ...(issue as { params?: object }).params, related: related && inConfig(related)[2] }
    return { ...issue, path: [...inConfig(key), ...rest], params }
  })
  throw configError([
    ...toIssues(options, '<options>', 'ts', nowhere, CLUSTER),
    ...toIssues(relocated, source.file, source.style, source.locate),
  ])
}

/**
 * The configuration `LocalCluster.start` runs with. A cluster section
 * describes one member of a group spread over processes; a local cluster runs
 * all its nodes here, so it refuses one.
 */
export function resolveLocalConfig(input?: ConfigInput): MetaStoreConfig {
  const source = readSource(input)
  if (source.config.server.cluster === undefined) return source.config
  const path = ['server', 'cluster']
  const rule =
    'a section for MetaStore.open and metastore serve (one member of a group spread over processes); ' +
    'LocalCluster.start runs all its nodes in this process'
  throw configError([issueFor(source.file, path, rule, undefined, source.locate(path))])
}

function partition<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = []
  const no: T[] = []
  for (const item of items) (test(item) ? yes : no).push(item)
  return [yes, no]
}
