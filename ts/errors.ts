/**
 * Errors raised by MetaStore, each with a stable `code`.
 *
 * The native addon reports failures as plain JS errors whose `code` is one of
 * the codes below (napi-rs copies the status string we set into `code`);
 * `toMetaStoreError` wraps those once, at the facade boundary, so callers can
 * rely on `instanceof MetaStoreError` and on `retryable`.
 */

export const ERROR_CODES = [
  'ERR_INVALID_CONFIG',
  'ERR_NOT_LEADER',
  'ERR_PROPOSAL_DROPPED',
  'ERR_TIMEOUT',
  'ERR_CLOSED',
  'ERR_TOO_LARGE',
  'ERR_CORRUPT_BATCH',
  'ERR_STORAGE',
  'ERR_NOT_STARTED',
  'ERR_INTERNAL',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

/**
 * Failures whose proposal was certainly not applied, or whose fate could not be
 * known because leadership moved: the caller may send it again (to the new
 * leader for ERR_NOT_LEADER).
 */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_PROPOSAL_DROPPED',
  'ERR_TIMEOUT',
  'ERR_NOT_LEADER',
])

const CODES: ReadonlySet<string> = new Set<string>(ERROR_CODES)

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODES.has(value)
}

export class MetaStoreError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.retryable = RETRYABLE.has(code)
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
