import { randomBytes } from 'node:crypto'

/** The benchmark workload: 16-byte keys, 100-byte values. */
export const KEY_BYTES = 16
export const VALUE_BYTES = 100
/** Distinct keys the workload cycles through. */
export const KEY_SPACE = 100_000

/**
 * Keys and values built once, so the load loop measures the store and not
 * string formatting. Keys cycle through a fixed key space (memory stays
 * bounded on long runs); values are random bytes from a pool, so a batch that
 * gets compressed does not look better than real data would.
 */
export class Workload {
  readonly keys: Buffer[]
  readonly values: Buffer[]

  constructor(keySpace = KEY_SPACE, valuePool = 1024) {
    this.keys = Array.from({ length: keySpace }, (_, i) => Buffer.from(`k${String(i).padStart(KEY_BYTES - 1, '0')}`))
    this.values = Array.from({ length: valuePool }, () => randomBytes(VALUE_BYTES))
  }

  key(seq: number): Buffer {
    return this.keys[seq % this.keys.length]
  }

  value(seq: number): Buffer {
    return this.values[seq % this.values.length]
  }
}
