// The history of a Jepsen-style run: one record per finished operation, in the
// JSON-lines format tools/lincheck reads (see its main.go). Times are
// nanoseconds of process.hrtime.bigint() since the recorder was made, so the
// operations and the nemesis' fault windows share one monotonic clock.

export type OpName = 'put' | 'get' | 'delete'

/** What an error says about a failed write: tools/lincheck's two outcomes. */
export type Outcome = 'not-applied' | 'unknown'

/** One finished operation, as tools/lincheck reads it. */
export interface OpRecord {
  client: number
  op: OpName
  key: string
  /** The value written (put) or read (get, when found). */
  value?: string
  call: number
  return: number
  ok: boolean
  /** put and delete: whether the key had a value. */
  existed?: boolean
  /** get: whether the key had a value. */
  found?: boolean
  /** A failed operation: what its error says about its effect. */
  outcome?: Outcome
  /** A failed operation: the error's code (or name), for the reader. */
  error?: string
}

/** An operation called and not yet recorded. */
export interface PendingOp {
  readonly client: number
  readonly op: OpName
  readonly key: string
  readonly value?: string
  readonly call: number
  done: boolean
}

/**
 * The outcome a failed operation may be recorded with. MetaStoreError carries
 * `outcome` ('not-applied' | 'unknown') where the store knows it; anything
 * else — no `outcome`, another value, an error that is not the store's — is
 * unknown. The harness never concludes 'not-applied' by itself.
 */
export function outcomeOf(err: unknown): Outcome {
  const outcome = (err as { outcome?: unknown } | null)?.outcome
  return outcome === 'not-applied' ? 'not-applied' : 'unknown'
}

function errorName(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null
  if (typeof e?.code === 'string') return e.code
  if (typeof e?.name === 'string') return e.name
  return String(err)
}

/** The recorder's clock counts nanoseconds; waits are in milliseconds. */
export const NS_PER_MS = 1_000_000

/** Collects finished operations; times from one monotonic origin. */
export class HistoryRecorder {
  readonly #origin = process.hrtime.bigint()
  readonly #records: OpRecord[] = []
  readonly #pending = new Set<PendingOp>()

  /** Nanoseconds since this recorder was made. */
  now(): number {
    return Number(process.hrtime.bigint() - this.#origin)
  }

  /** Marks the call of an operation; take it just before the request is made. */
  begin(client: number, op: OpName, key: string, value?: string): PendingOp {
    const p: PendingOp = { client, op, key, call: this.now(), done: false, ...(value !== undefined && { value }) }
    this.#pending.add(p)
    return p
  }

  /** A put or delete that resolved. */
  wrote(p: PendingOp, existed: boolean): void {
    this.#finish(p, { ok: true, existed })
  }

  /** A get that resolved; `value` undefined when the key had none. */
  read(p: PendingOp, value: string | undefined): void {
    this.#finish(p, value === undefined ? { ok: true, found: false } : { ok: true, found: true, value })
  }

  /** An operation that rejected with `err`. */
  failed(p: PendingOp, err: unknown): void {
    this.#finish(p, { ok: false, outcome: outcomeOf(err), error: errorName(err) })
  }

  /** Operations called and not finished. */
  pending(): PendingOp[] {
    return [...this.#pending]
  }

  /**
   * Records every operation still pending as failed with an unknown outcome,
   * returning now (a request that never settled). Returns how many there were.
   */
  abandonPending(reason: string): number {
    const left = this.pending()
    for (const p of left) this.#finish(p, { ok: false, outcome: 'unknown', error: reason })
    return left.length
  }

  records(): readonly OpRecord[] {
    return this.#records
  }

  /** The history as JSON lines, in order of return. */
  toJsonLines(): string {
    return this.#records.map((r) => JSON.stringify(r)).join('\n') + '\n'
  }

  #finish(p: PendingOp, result: Pick<OpRecord, 'ok' | 'existed' | 'found' | 'outcome' | 'error'> & { value?: string }): void {
    if (p.done) return // already abandoned (or recorded): the first word stands
    p.done = true
    this.#pending.delete(p)
    const ret = this.now()
    const value = p.op === 'put' ? p.value : result.value
    this.#records.push({
      client: p.client,
      op: p.op,
      key: p.key,
      ...(value !== undefined && { value }),
      call: p.call,
      return: ret,
      ok: result.ok,
      ...(result.existed !== undefined && { existed: result.existed }),
      ...(result.found !== undefined && { found: result.found }),
      ...(result.outcome !== undefined && { outcome: result.outcome }),
      ...(result.error !== undefined && { error: result.error }),
    })
  }
}

/** A history's operations by kind and result. */
export interface Tally {
  ops: { total: number; ok: number; put: number; get: number; delete: number }
  /** Failed operations: writes by reported outcome, and reads; and by error code. */
  failed: { unknownWrites: number; notAppliedWrites: number; reads: number; byError: Record<string, number> }
}

export function tally(records: readonly OpRecord[]): Tally {
  const ops = { total: records.length, ok: 0, put: 0, get: 0, delete: 0 }
  const failed = { unknownWrites: 0, notAppliedWrites: 0, reads: 0, byError: {} as Record<string, number> }
  for (const r of records) {
    ops[r.op]++
    if (r.ok) {
      ops.ok++
      continue
    }
    if (r.op === 'get') failed.reads++
    else if (r.outcome === 'not-applied') failed.notAppliedWrites++
    else failed.unknownWrites++
    const name = r.error ?? 'unknown error'
    failed.byError[name] = (failed.byError[name] ?? 0) + 1
  }
  return { ops, failed }
}

/** A window during which a fault was in force, on the recorder's clock. */
export interface FaultWindow {
  start: number
  end: number
}

/** Operations whose [call, return] interval intersects at least one fault window. */
export function overlapping(records: readonly OpRecord[], windows: readonly FaultWindow[]): number {
  let n = 0
  for (const r of records) {
    if (windows.some((w) => r.call <= w.end && r.return >= w.start)) n++
  }
  return n
}
