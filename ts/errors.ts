/**
 * Errors raised by MetaStore, each with a stable `code`.
 *
 * The native addon reports failures as plain JS errors whose `code` is one of
 * the core's codes (napi-rs copies the status string we set into `code`);
 * `toMetaStoreError` wraps those once, at the facade boundary, so callers can
 * rely on `instanceof MetaStoreError` and on `retryable`.
 */
import { native, type ErrorCode, type ErrorCodeInfo, type RequestOutcome } from './native.js'

export type { ErrorCode, RequestOutcome }

/** The core's table of codes and what each means for a caller (crates/batch/src/error.rs). */
const CODES: ReadonlyMap<string, ErrorCodeInfo> = new Map(native.errorCodes().map((info) => [info.code, info]))

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODES.has(value)
}

export class MetaStoreError extends Error {
  readonly code: ErrorCode
  /**
   * What the caller may conclude about the request: `'not-applied'` (it was
   * not applied and never will be) or `'unknown'` (it may have been applied,
   * or may still be). Errors that are not about a request (an invalid config,
   * a refused data dir) changed nothing: `'not-applied'`.
   */
  readonly outcome: RequestOutcome
  /**
   * The same request may be sent again on this handle: it was certainly not
   * applied (its outcome is `'not-applied'`), and the cause may pass.
   */
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; outcome?: RequestOutcome }) {
    super(message, options)
    this.code = code
    this.outcome = options?.outcome ?? 'not-applied'
    // A code that may pass says nothing of earlier attempts: one whose outcome is unknown is not safe to resend.
    this.retryable = (CODES.get(code)?.retryable ?? false) && this.outcome === 'not-applied'
  }

  override name = 'MetaStoreError'
}

/** One problem found in a configuration; `message` is the full line shown to the user. */
export interface ConfigIssue {
  /** The file (or `<inline>` / `<options>`) the problem was found in. */
  readonly file: string
  /** The key path as the user wrote it, e.g. `server.raft.batch.min_batch_size`. */
  readonly key?: string | undefined
  /** What is wrong, e.g. `must be <= max_batch_size (256)`. */
  readonly rule: string
  /** 1-based position in the file, when the source is a file and the key is in it. */
  readonly line?: number | undefined
  readonly column?: number | undefined
  readonly message: string
}

export interface ConfigErrorDetails {
  readonly rule: string
  readonly file?: string | undefined
  readonly key?: string | undefined
  readonly line?: number | undefined
  readonly column?: number | undefined
  /** Every problem found; the top-level fields describe the first one. */
  readonly issues?: readonly ConfigIssue[] | undefined
  readonly cause?: unknown
}

/** An invalid configuration file or options object (code ERR_INVALID_CONFIG). */
export class ConfigError extends MetaStoreError {
  readonly file?: string | undefined
  readonly key?: string | undefined
  readonly rule: string
  readonly line?: number | undefined
  readonly column?: number | undefined
  readonly issues: readonly ConfigIssue[]

  constructor(message: string, details: ConfigErrorDetails) {
    super('ERR_INVALID_CONFIG', message, { cause: details.cause })
    this.rule = details.rule
    this.file = details.file
    this.key = details.key
    this.line = details.line
    this.column = details.column
    this.issues = details.issues ?? [
      {
        file: details.file ?? '<unknown>',
        key: details.key,
        rule: details.rule,
        line: details.line,
        column: details.column,
        message,
      },
    ]
  }

  override name = 'ConfigError'
}

/**
 * Wraps an error thrown by the native addon whose `code` is one of ours into
 * the matching MetaStoreError (ConfigError for ERR_INVALID_CONFIG), keeping
 * code and message and the original as `cause`. Anything else is returned
 * unchanged, so `throw toMetaStoreError(e)` is always safe.
 */
export function toMetaStoreError(err: unknown): unknown {
  if (err instanceof MetaStoreError) return err
  if (!(err instanceof Error)) return err
  const code = (err as { code?: unknown }).code
  if (!isErrorCode(code)) return err
  if (code === 'ERR_INVALID_CONFIG') {
    return new ConfigError(err.message, { rule: err.message, cause: err })
  }
  return new MetaStoreError(code, err.message, { cause: err })
}

/** True when the operation may be retried: a MetaStoreError (or native error) with a retryable code. */
export function isRetryable(err: unknown): boolean {
  const converted = toMetaStoreError(err)
  return converted instanceof MetaStoreError && converted.retryable
}
