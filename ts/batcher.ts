import { assertBytes, type Bytes } from './bytes.js'
import { defaultConfig, type BatchConfig } from './config.js'
import { toMetaStoreError } from './errors.js'
import { native, type BatchStats } from './native.js'

/** Receives each encoded batch (one Raft entry payload) and how many proposals it holds. */
export type OnBatch = (batch: Buffer, count: number) => void

/**
 * The adaptive batch loop on its own: proposals go in, encoded batches come
 * out through `onBatch`, in order, on the JS thread. A batch counts as in
 * flight until `onBatch` returns; while one is in flight the next accumulates.
 */
export class ProposalBatcher {
  readonly #native: InstanceType<typeof native.NativeProposalBatcher>
  readonly #drained: Promise<void>

  constructor(config: Partial<BatchConfig> | undefined, onBatch: OnBatch) {
    if (typeof onBatch !== 'function') throw new TypeError('onBatch must be a function')
    const options = { ...defaultConfig().server.raft.batch, ...config }
    let markDrained!: () => void
    this.#drained = new Promise((resolve) => (markDrained = resolve))
    try {
      this.#native = new native.NativeProposalBatcher(options, (batch, count) => {
        if (batch == null) markDrained()
        else onBatch(batch, count)
      })
    } catch (err) {
      throw toMetaStoreError(err)
    }
  }

  start(): void {
    this.#call(() => this.#native.start())
  }

  /** Queues one proposal; blocks only while the bounded queue is full. */
  propose(data: Bytes): void {
    assertBytes(data, 'proposal')
    this.#call(() => this.#native.propose(data))
  }

  stats(): BatchStats {
    return this.#native.stats()
  }

  /** Flushes everything queued and resolves once `onBatch` has seen it all. Idempotent. */
  async stop(): Promise<void> {
    this.#native.stop()
    await this.#drained
  }

  #call<T>(f: () => T): T {
    try {
      return f()
    } catch (err) {
      throw toMetaStoreError(err)
    }
  }
}
