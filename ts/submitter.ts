import type { Bytes } from './bytes.js'
import { MetaStoreError, toMetaStoreError } from './errors.js'
import type { RequestKind, SubmitFailure } from './native.js'
import type { Kind, Requests } from './requests.js'

/** Sends one packed buffer to the node; throws when the node is gone. */
export type SendMany = (ops: Uint8Array) => SubmitFailure[]

/** Flush at once above this many buffered bytes instead of waiting for the microtask. */
const FLUSH_BYTES = 1 << 20
const INITIAL_BYTES = 64 << 10

/** `session u64 | floor f64` before the requests. */
const HEADER = 16

/**
 * Packs the requests of one node handle into a buffer and hands them to the
 * addon in one call per microtask turn: a loop of `put`s, or every
 * continuation woken by one apply round, crosses N-API once instead of once
 * per request. Order is kept. Nothing waits on a timer: the flush runs as
 * soon as the current synchronous code yields.
 *
 * Layout, little-endian: `session u64 | floor f64` (the group's client
 * session and its floor, see `Requests`), then per request
 * `kind u8 | token f64 | seq f64 | len u32 | bytes`, and for a put
 * `| len u32 | value`.
 */
export class Submitter {
  readonly #requests: Requests
  readonly #send: SendMany
  #buf = Buffer.allocUnsafe(INITIAL_BYTES)
  #len = HEADER
  /** Tokens in the buffer, to reject them if the whole call fails. */
  #tokens: number[] = []
  #scheduled = false

  constructor(requests: Requests, send: SendMany) {
    this.#requests = requests
    this.#send = send
  }

  submit<T>(kind: Kind, op: RequestKind, first: Bytes, value?: Bytes): Promise<T> {
    return this.#requests.track<T>(kind, (token, seq) => {
      this.#append(op, token, seq, first, value)
      if (this.#len >= FLUSH_BYTES) this.flush()
      else if (!this.#scheduled) {
        this.#scheduled = true
        queueMicrotask(this.flush)
      }
    })
  }

  /** Sends what is buffered now. */
  readonly flush = (): void => {
    this.#scheduled = false
    if (this.#len === HEADER) return
    const tokens = this.#tokens
    this.#requests.session.copy(this.#buf, 0)
    this.#buf.writeDoubleLE(this.#requests.floor(), 8)
    const ops = this.#buf.subarray(0, this.#len)
    this.#tokens = []
    this.#len = HEADER
    let failures: SubmitFailure[]
    try {
      failures = this.#send(ops)
    } catch (err) {
      const error = toMetaStoreError(err) as Error
      for (const token of tokens) this.#requests.fail(token, error)
      return
    }
    for (const f of failures) {
      this.#requests.fail(f.token, new MetaStoreError(f.code, f.message, { outcome: f.outcome }))
    }
  }

  #append(op: RequestKind, token: number, seq: number, first: Bytes, value: Bytes | undefined): void {
    // Worst case: UTF-8 takes at most 3 bytes per UTF-16 unit.
    const need = 1 + 16 + 4 + first.length * 3 + (value === undefined ? 0 : 4 + value.length * 3)
    this.#reserve(need)
    const buf = this.#buf
    let at = this.#len
    buf[at] = op
    buf.writeDoubleLE(token, at + 1)
    buf.writeDoubleLE(seq, at + 9)
    at = this.#bytes(first, at + 17)
    if (value !== undefined) at = this.#bytes(value, at)
    this.#len = at
    this.#tokens.push(token)
  }

  /** Writes `len u32 | bytes` at `at`; returns the end. */
  #bytes(b: Bytes, at: number): number {
    const buf = this.#buf
    const n = typeof b === 'string' ? buf.write(b, at + 4) : (buf.set(b, at + 4), b.length)
    buf.writeUInt32LE(n, at)
    return at + 4 + n
  }

  #reserve(need: number): void {
    if (this.#len + need <= this.#buf.length) return
    let size = this.#buf.length * 2
    while (size < this.#len + need) size *= 2
    const grown = Buffer.allocUnsafe(size)
    this.#buf.copy(grown, 0, 0, this.#len)
    this.#buf = grown
  }
}
