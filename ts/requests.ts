import { randomBytes } from 'node:crypto'

import { MetaStoreError, toMetaStoreError } from './errors.js'
import { CompletionStatus, type ErrorCode, type RequestOutcome } from './native.js'

/** A member of the group as its membership record has it (what a membership change resolves with). */
export interface Member {
  id: number
  /** Where the members dial it. */
  address: string
  role: 'voter' | 'learner'
}

/** What a write resolves with: its Raft log index and whether the key had a value. */
export interface WriteResult {
  index: number
  existed: boolean
}

// The status byte of each completion, as the addon declares it.
const { Written, WrittenExisted, Value, NoValue, FailedNotApplied, Membership } = CompletionStatus

export const enum Kind {
  Write,
  Delete,
  Get,
  /**
   * A membership change: sent again like a write after an unknown or dropped
   * outcome (the group answers a change in effect already as done, and one
   * asked again while it runs waits for it).
   */
  Membership,
}

/** How many `extras` a completion of `status` carries. */
function extrasOf(status: number): number {
  if (status === Value || status === Membership) return 1
  return status === FailedNotApplied || status === CompletionStatus.FailedUnknown ? 2 : 0
}

/** Hands one attempt of a request to its node: `token` routes the answer, `seq` names the request in its session. */
export type Send = (token: number, seq: number) => void

/** The first retry waits this long; each next one twice as long, up to `MAX_BACKOFF_MS`. */
const FIRST_BACKOFF_MS = 10
const MAX_BACKOFF_MS = 500

interface Waiter {
  kind: Kind
  resolve: (value: any) => void
  reject: (err: Error) => void
  send: Send
  /** When the request was made (`Date.now()`); 0 for a get, which is never sent again. */
  since: number
  /** Set once an attempt failed and the write is sent again. */
  retry?: Retry
}

interface Retry {
  /** The request's number in the session: its first token. */
  seq: number
  attempts: number
  /** Some attempt ended with an unknown outcome. */
  unknown?: boolean
}

/**
 * Promises waiting on the Raft group, keyed by a token the addon echoes back.
 * The addon reports many results per call, so one JS callback resolves a
 * whole apply round.
 *
 * Writes are exactly-once: the group's requests share one client session (a
 * random 64-bit id), each write carries its sequence number, and the nodes
 * apply a `(session, seq)` once and answer any later attempt with the first
 * result. So a write whose attempt ended with an unknown outcome (a timeout,
 * its node stopping after proposing it) or was dropped by a leader change is
 * sent again, under a new token, until `retryWindowMs` after it was made;
 * the caller sees its one result, or a final error whose `outcome` is
 * `'unknown'` if any attempt's was.
 */
export class Requests {
  readonly #waiting = new Map<number, Waiter>()
  #next = 1
  /** This group's client session: 8 random bytes, never 0. */
  readonly session: Buffer
  readonly #retryWindowMs: number
  /**
   * No request still waiting has a first token below this. A request waits
   * under its first token (its sequence number) until it settles, and also
   * under the token of its current attempt when it is sent again.
   */
  #floor = 1
  #retries = 0
  #unknownOutcomes = 0

  constructor(retryWindowMs: number) {
    this.#retryWindowMs = retryWindowMs
    let session = randomBytes(8)
    while (session.readBigUInt64LE() === 0n) session = randomBytes(8)
    this.session = session
  }

  /** Attempts sent again after an unknown or dropped outcome, since start. */
  get retries(): number {
    return this.#retries
  }

  /** Attempts of writes that ended with an unknown outcome (sent again, or reported), since start. */
  get unknownOutcomes(): number {
    return this.#unknownOutcomes
  }

  /** The lowest sequence number this client still waits on (the nodes may forget results below it). */
  floor(): number {
    while (this.#floor < this.#next && !this.#waiting.has(this.#floor)) this.#floor++
    return this.#floor
  }

  /** Registers a waiter and runs `send(token, seq)`; a synchronous throw rejects the promise. */
  track<T>(kind: Kind, send: Send): Promise<T> {
    const token = this.#next++
    const write = kind !== Kind.Get
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(token, { kind, resolve, reject, send, since: write ? Date.now() : 0 })
      try {
        send(token, write ? token : 0)
      } catch (err) {
        this.#waiting.delete(token)
        reject(err)
      }
    })
  }

  readonly complete = (
    tokens: Float64Array,
    statuses: Uint8Array,
    indexes: Float64Array,
    extras: (Buffer | string)[],
  ): void => {
    let extra = 0
    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i]
      const waiter = this.#waiting.get(token)
      const status = statuses[i]
      if (waiter === undefined) {
        extra += extrasOf(status)
        continue
      }
      this.#waiting.delete(token)
      if (waiter.retry !== undefined && status < FailedNotApplied) this.#waiting.delete(waiter.retry.seq)
      switch (status) {
        case Written:
        case WrittenExisted: {
          const existed = status === WrittenExisted
          waiter.resolve(waiter.kind === Kind.Delete ? existed : { index: indexes[i], existed })
          break
        }
        case Value:
          waiter.resolve(extras[extra++])
          break
        case NoValue:
          waiter.resolve(undefined)
          break
        case Membership:
          waiter.resolve(JSON.parse(extras[extra++] as string) as Member[])
          break
        default: {
          const code = extras[extra++] as ErrorCode
          const message = extras[extra++] as string
          const outcome = status === FailedNotApplied ? 'not-applied' : 'unknown'
          this.#failed(waiter, token, code, message, outcome)
        }
      }
    }
  }

  /** Fails the attempt of `token`, if it still waits (a submission refused up front). */
  fail(token: number, err: Error): void {
    const waiter = this.#waiting.get(token)
    if (waiter === undefined) return
    this.#waiting.delete(token)
    if (err instanceof MetaStoreError) this.#failed(waiter, token, err.code, err.message, err.outcome, err)
    else this.#settle(waiter, err)
  }

  /**
   * The attempt of `token` failed: send the write again if that is safe and
   * useful, else reject. Until it settles, the request keeps waiting under
   * its first token, which holds the floor below its sequence number.
   */
  #failed(waiter: Waiter, token: number, code: ErrorCode, message: string, outcome: RequestOutcome, cause?: Error): void {
    const write = waiter.since !== 0
    const retry = (waiter.retry ??= { seq: token, attempts: 1 })
    if (outcome === 'unknown' && write) {
      retry.unknown = true
      this.#unknownOutcomes++
    }
    const again =
      write &&
      (outcome === 'unknown' || code === 'ERR_PROPOSAL_DROPPED') &&
      code !== 'ERR_SESSION_EXPIRED' &&
      Date.now() < waiter.since + this.#retryWindowMs
    if (again) {
      this.#waiting.set(retry.seq, waiter)
      this.#retry(waiter, retry)
      return
    }
    const tries = retry.attempts > 1 ? ` (after ${retry.attempts} attempts)` : ''
    const final = retry.unknown === true ? 'unknown' : outcome
    if (cause !== undefined && tries === '' && final === outcome) this.#settle(waiter, cause)
    else this.#settle(waiter, new MetaStoreError(code, message + tries, { outcome: final, cause }))
  }

  #retry(waiter: Waiter, retry: Retry): void {
    const delay = Math.min(FIRST_BACKOFF_MS << Math.min(retry.attempts - 1, 10), MAX_BACKOFF_MS)
    retry.attempts++
    this.#retries++
    setTimeout(() => {
      const token = this.#next++
      this.#waiting.set(token, waiter)
      try {
        waiter.send(token, retry.seq)
      } catch (err) {
        this.#waiting.delete(token)
        const e = toMetaStoreError(err)
        if (e instanceof MetaStoreError) this.#failed(waiter, token, e.code, e.message, e.outcome, e)
        else this.#settle(waiter, e as Error)
      }
    }, delay)
  }

  #settle(waiter: Waiter, err: Error): void {
    if (waiter.retry !== undefined) this.#waiting.delete(waiter.retry.seq)
    waiter.reject(err)
  }
}
