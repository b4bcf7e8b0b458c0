import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { resolveConfig, type ClusterConfig, type MetaStoreConfig } from './config.js'
import { MetaStoreError, toMetaStoreError } from './errors.js'
import { native, type Engine } from './native.js'
import { Requests } from './requests.js'
import { Submitter } from './submitter.js'

export type { Engine }

/** Options shared by `MetaStore.open` and `LocalCluster.start`. */
export interface GroupOptions {
  /** A config object, or the path of a YAML config file. Defaults to `defaultConfig()`. */
  config?: MetaStoreConfig | string
  /** Overrides `server.storage.engine`. */
  engine?: Engine
  /** Overrides `server.storage.data_dir`. */
  dataDir?: string
  /** Overrides `server.storage.sync`. */
  sync?: boolean
  /** How long to wait for the first leader, in ms (default 10s). */
  leaderTimeoutMs?: number
}

/** How the nodes of a `LocalCluster` reach each other. */
export type Transport = 'local' | 'grpc'

/** One member of a group whose nodes run in separate processes or hosts: the config's `server.cluster`. */
export type MemberOptions = ClusterConfig

/** The native Raft nodes of a group in this process, and the promises waiting on them. */
export class Group {
  readonly requests: Requests
  readonly config: MetaStoreConfig
  readonly #native: InstanceType<typeof native.NativeCluster>
  readonly #submitters = new Map<number, Submitter>()
  #closed = false

  private constructor(config: MetaStoreConfig, nodes: number | MemberOptions, transport?: Transport) {
    this.config = config
    this.requests = new Requests(config.server.raft.requestTimeoutMs)
    const { raft, storage } = config.server
    try {
      if (typeof nodes === 'number') {
        this.#native = native.NativeCluster.start({ nodes, raft, storage, transport }, this.requests.complete)
      } else {
        // Object keys are strings already: the ids cross as they are.
        const { nodeId, listen, advertise, clusterToken, tls, join } = nodes
        const initialCluster = (nodes.initialCluster ?? {}) as Record<string, string>
        const member = { nodeId, listen, advertise, initialCluster, clusterToken, tls, join, raft, storage }
        this.#native = native.NativeCluster.startMember(member, this.requests.complete)
      }
    } catch (err) {
      throw toMetaStoreError(err)
    }
  }

  /**
   * `subdir`: where under the configured `data_dir` the node dirs go when
   * `options.dataDir` does not say, so that a store and a cluster started
   * with the same config never share node dirs.
   */
  static async start(options: GroupOptions, nodes: number | MemberOptions, subdir?: string, transport?: Transport): Promise<Group> {
    const base = resolveConfig(options.config)
    const dataDir = options.dataDir ?? (subdir === undefined ? undefined : join(base.server.storage.dataDir, subdir))
    const storage = {
      ...base.server.storage,
      ...(options.engine !== undefined && { engine: options.engine }),
      ...(dataDir !== undefined && { dataDir }),
      ...(options.sync !== undefined && { sync: options.sync }),
    }
    const config: MetaStoreConfig = { ...base, server: { ...base.server, storage } }
    const group = new Group(config, nodes, transport)
    // A joining node hears of a leader only once the group added it.
    if (typeof nodes !== 'number' && nodes.join === true) return group
    try {
      await group.waitForLeader(options.leaderTimeoutMs ?? 10_000)
    } catch (err) {
      group.close()
      throw err
    }
    return group
  }

  get native(): InstanceType<typeof native.NativeCluster> {
    if (this.#closed) throw new MetaStoreError('ERR_CLOSED', 'the store is closed')
    return this.#native
  }

  get closed(): boolean {
    return this.#closed
  }

  /** The request queue of node `id` (one per node, shared by its handles). */
  submitter(id: number): Submitter {
    let s = this.#submitters.get(id)
    if (s === undefined) {
      s = new Submitter(this.requests, (ops) => this.call((n) => n.submitMany(id, ops)))
      this.#submitters.set(id, s)
    }
    return s
  }

  /** Hands requests still buffered for node `id` (or every node) to the addon. */
  flush(id?: number): void {
    if (id === undefined) for (const s of this.#submitters.values()) s.flush()
    else this.#submitters.get(id)?.flush()
  }

  /** Runs a native call, turning its errors into `MetaStoreError`s. */
  call<T>(f: (n: InstanceType<typeof native.NativeCluster>) => T): T {
    try {
      return f(this.native)
    } catch (err) {
      throw toMetaStoreError(err)
    }
  }

  leader(): number | undefined {
    return this.call((n) => n.leader()) ?? undefined
  }

  async waitForLeader(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const leader = this.leader()
      if (leader !== undefined) return leader
      if (Date.now() >= deadline) {
        throw new MetaStoreError('ERR_TIMEOUT', `no leader elected within ${timeoutMs} ms`)
      }
      await sleep(5)
    }
  }

  /** Stops every node; requests still pending reject with ERR_CLOSED. Idempotent. */
  close(): void {
    if (this.#closed) return
    // Requests made before close reach the nodes, which answer or reject them.
    this.flush()
    this.#closed = true
    try {
      this.#native.close()
    } catch (err) {
      throw toMetaStoreError(err)
    }
  }
}
