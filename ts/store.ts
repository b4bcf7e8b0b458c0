import { assertBytes, type Bytes } from './bytes.js'
import { MetaStoreError } from './errors.js'
import { Group, type GroupOptions } from './group.js'
import { RequestKind, type NodeStats } from './native.js'
import { Kind, type WriteResult } from './requests.js'
import type { Submitter } from './submitter.js'

export type OpenOptions = GroupOptions

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

  /** Opens a single-node store (engine and data dir from the config, or the overrides). */
  static async open(options: OpenOptions = {}): Promise<MetaStore> {
    return new MetaStore(await Group.start(options, 1), 1, true)
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
