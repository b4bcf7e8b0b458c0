import { MetaStoreError } from './errors.js'
import { CompletionStatus, type ErrorCode } from './native.js'

/** What a write resolves with: its Raft log index and whether the key had a value. */
export interface WriteResult {
  index: number
  existed: boolean
}

// The status byte of each completion, as the addon declares it.
const { Written, WrittenExisted, Value, NoValue, FailedNotApplied } = CompletionStatus

export const enum Kind {
  Write,
  Delete,
  Get,
}

interface Waiter {
  kind: Kind
  resolve: (value: any) => void
  reject: (err: Error) => void
}

/**
 * Promises waiting on the Raft group, keyed by a token the addon echoes back.
 * The addon reports many results per call, so one JS callback resolves a
 * whole apply round.
 */
export class Requests {
  readonly #waiting = new Map<number, Waiter>()
  #next = 1

  /** Registers a waiter and runs `submit(token)`; a synchronous throw rejects the promise. */
  track<T>(kind: Kind, submit: (token: number) => void): Promise<T> {
    const token = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(token, { kind, resolve, reject })
      try {
        submit(token)
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
      const waiter = this.#waiting.get(tokens[i])
      const status = statuses[i]
      if (waiter === undefined) {
        extra += status === Value ? 1 : status >= FailedNotApplied ? 2 : 0
        continue
      }
      this.#waiting.delete(tokens[i])
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
        default: {
          const code = extras[extra++] as ErrorCode
          const message = extras[extra++] as string
          const outcome = status === FailedNotApplied ? 'not-applied' : 'unknown'
          waiter.reject(new MetaStoreError(code, message, { outcome }))
        }
      }
    }
  }

  /** Rejects the request of `token`, if it still waits. */
  fail(token: number, err: Error): void {
    const waiter = this.#waiting.get(token)
    if (waiter === undefined) return
    this.#waiting.delete(token)
    waiter.reject(err)
  }
}
