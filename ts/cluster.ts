import { resolveLocalConfig } from './config.js'
import { Group, type GroupOptions, type Transport } from './group.js'
import { MetaStore } from './store.js'

/** Where `LocalCluster.start` keeps its nodes under the configured `data_dir`, unless `dataDir` says otherwise. */
export const LOCAL_CLUSTER_SUBDIR = 'local-cluster'

export interface ClusterStartOptions extends GroupOptions {
  /** Number of nodes, ids 1..n (default 3). */
  nodes?: number
  /** `'grpc'`: the nodes talk over loopback sockets, as between hosts (default `'local'`, in-process channels). */
  transport?: Transport
}

/** N Raft nodes in this process, connected by in-process channels. */
export class LocalCluster {
  readonly #group: Group
  readonly #handles = new Map<number, MetaStore>()

  private constructor(group: Group) {
    this.#group = group
  }

  static async start(options: ClusterStartOptions = {}): Promise<LocalCluster> {
    const nodes = options.nodes ?? 3
    if (!Number.isInteger(nodes) || nodes < 1) throw new RangeError(`nodes must be a positive integer, got ${nodes}`)
    const transport = options.transport ?? 'local'
    if (transport !== 'local' && transport !== 'grpc') throw new RangeError(`transport must be 'local' or 'grpc', got ${String(transport)}`)
    const config = resolveLocalConfig(options.config)
    return new LocalCluster(await Group.start({ ...options, config }, nodes, LOCAL_CLUSTER_SUBDIR, transport))
  }

  /** Node ids, 1..n. */
  ids(): number[] {
    return this.#group.call((n) => n.ids())
  }

  /** The current leader's handle, waiting up to `timeoutMs` for an election. */
  async leader(timeoutMs = 10_000): Promise<MetaStore> {
    return this.node(await this.#group.waitForLeader(timeoutMs))
  }

  /** The handle of node `id`; it works again after `restart(id)`. */
  node(id: number): MetaStore {
    if (!this.ids().includes(id)) throw new RangeError(`no node ${id} in this cluster`)
    let handle = this.#handles.get(id)
    if (handle === undefined) {
      handle = new MetaStore(this.#group, id, false)
      this.#handles.set(id, handle)
    }
    return handle
  }

  /** Stops node `id`; its pending requests reject with ERR_CLOSED. */
  stop(id: number): void {
    this.#group.flush(id)
    this.#group.call((n) => n.stopNode(id))
  }

  /**
   * Restarts node `id` on rocksdb, with its data dir; it catches up from the
   * others. A memory node of a multi-node cluster cannot restart
   * (ERR_STATE_LOST): its state is gone, and under its old id it could make
   * the group lose acknowledged writes.
   */
  restart(id: number): void {
    this.#group.call((n) => n.restartNode(id))
  }

  isRunning(id: number): boolean {
    return this.#group.call((n) => n.isRunning(id))
  }

  /** Drops messages between two nodes until `heal` (for failure tests). */
  cut(a: number, b: number): void {
    this.#group.call((n) => n.cut(a, b))
  }

  heal(a: number, b: number): void {
    this.#group.call((n) => n.heal(a, b))
  }

  /** Holds the messages from node `from` to node `to` until `release`, which delivers them in order (for failure tests). */
  hold(from: number, to: number): void {
    this.#group.call((n) => n.hold(from, to))
  }

  release(from: number, to: number): void {
    this.#group.call((n) => n.release(from, to))
  }

  async close(): Promise<void> {
    this.#group.close()
  }
}
