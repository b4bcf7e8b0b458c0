import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { stringify } from 'yaml'

import {
  defaultConfig,
  loadConfig,
  loadConfigSync,
  parseConfig,
  resolveConfig,
  type MetaStoreConfig,
} from '../ts/config.js'
import { ConfigError, isRetryable, MetaStoreError, toMetaStoreError } from '../ts/errors.js'
import { native } from '../ts/native.js'
import { parseDuration, parseSize } from '../ts/units.js'
import { tempDir } from './helpers.js'

// Paths relative to the repository root (vitest's working directory), as a user would pass them;
// error messages must name the file exactly as given.
const FIXTURES = join('__test__', 'fixtures', 'config')
const configFile = (name: string): string => join('configs', name)
const fixture = (name: string): string => join(FIXTURES, name)

const DEFAULTS: MetaStoreConfig = {
  server: {
    raft: {
      tickIntervalMs: 100,
      electionTick: 10,
      heartbeatTick: 1,
      maxSizePerMsg: 1048576,
      maxInflightMsgs: 256,
      preVote: true,
      checkQuorum: true,
      snapshotCount: 10000,
      maxLogSize: 16777216,
      proposalTimeoutMs: 5000,
      requestTimeoutMs: 15000,
      batch: {
        enable: true,
        minBatchSize: 1,
        maxBatchSize: 256,
        minTimeoutMs: 5,
        maxTimeoutMs: 20,
        loadThreshold: 0.7,
        maxProposalBytes: 1048576,
        queueCapacity: 8192,
        compression: 'none',
        compressMinBytes: 4096,
      },
    },
    storage: { engine: 'rocksdb', dataDir: './data', sync: true },
  },
}

/** The ConfigError that `load` throws (or rejects with); fails the test if it does not. */
async function configError(load: () => unknown): Promise<ConfigError> {
  let thrown: unknown
  try {
    await load()
  } catch (err) {
    thrown = err
  }
  expect(thrown, 'expected a ConfigError to be thrown').toBeInstanceOf(ConfigError)
  const err = thrown as ConfigError
  expect(err).toBeInstanceOf(MetaStoreError)
  expect(err.code).toBe('ERR_INVALID_CONFIG')
  expect(err.retryable).toBe(false)
  return err
}

/** Loads an invalid fixture and checks that the message names the file, the key path and the rule. */
async function expectInvalid(
  name: string,
  expected: { key: string; rule: string; value?: string; line?: number },
): Promise<ConfigError> {
  const path = fixture(name)
  const err = await configError(() => loadConfig(path))
  const subject = expected.value === undefined ? `${expected.key}: ` : `${expected.key} (${expected.value}) `
  expect(err.message).toContain(`${path}: ${subject}${expected.rule}`)
  expect(err.file).toBe(path)
  expect(err.key).toBe(expected.key)
  expect(err.rule).toContain(expected.rule)
  if (expected.line !== undefined) {
    expect(err.line).toBe(expected.line)
    expect(err.message).toContain(`(line ${expected.line})`)
  }
  // The synchronous loader reports the same problem.
  const sync = await configError(() => loadConfigSync(path))
  expect(sync.message).toBe(err.message)
  return err
}

describe('valid configuration files', () => {
  it('configs/config.yaml holds the production values, every key present', async () => {
    const config = await loadConfig(configFile('config.yaml'))
    expect(config).toEqual(DEFAULTS)
    expect(config.server.storage.dataDir).toBe('./data')
  })

  it("configs/config.yaml and defaultConfig() are the core's defaults", async () => {
    const core = { server: native.defaultServerOptions() }
    expect(await loadConfig(configFile('config.yaml'))).toEqual(core)
    expect(defaultConfig()).toEqual(core)
  })

  it('configs/low-latency.yaml holds the seed quick-test values', async () => {
    const { batch } = (await loadConfig(configFile('low-latency.yaml'))).server.raft
    expect(batch).toEqual({
      ...DEFAULTS.server.raft.batch,
      enable: true,
      minBatchSize: 1,
      maxBatchSize: 64,
      minTimeoutMs: 2,
      maxTimeoutMs: 10,
      loadThreshold: 0.7,
    })
  })

  it('configs/high-throughput.yaml holds the seed high-throughput values', async () => {
    const { batch } = (await loadConfig(configFile('high-throughput.yaml'))).server.raft
    expect(batch).toEqual({
      ...DEFAULTS.server.raft.batch,
      enable: true,
      minBatchSize: 32,
      maxBatchSize: 512,
      minTimeoutMs: 10,
      maxTimeoutMs: 50,
      loadThreshold: 0.5,
    })
  })

  it('configs/no-batch.yaml turns batching off and keeps the other defaults', () => {
    const config = loadConfigSync(configFile('no-batch.yaml'))
    expect(config.server.raft.batch.enable).toBe(false)
    expect(config).toEqual({
      server: { ...DEFAULTS.server, raft: { ...DEFAULTS.server.raft, batch: { ...DEFAULTS.server.raft.batch, enable: false } } },
    })
  })

  it('defaultConfig() is the seed defaults, a fresh object each call', () => {
    const a = defaultConfig()
    expect(a).toEqual(DEFAULTS)
    a.server.raft.batch.maxBatchSize = 1
    expect(defaultConfig().server.raft.batch.maxBatchSize).toBe(256)
  })

  it('an empty text, {}, a comment-only file and empty sections all give the defaults', async () => {
    expect(parseConfig('')).toEqual(DEFAULTS)
    expect(parseConfig('{}')).toEqual(DEFAULTS)
    expect(await loadConfig(fixture('empty.yaml'))).toEqual(DEFAULTS)
    expect(await loadConfig(fixture('empty-sections.yaml'))).toEqual(DEFAULTS)
  })

  it('a partial file overrides only the keys it names', () => {
    const config = parseConfig('server:\n  raft:\n    election_tick: 20\n  storage:\n    engine: memory\n')
    expect(config.server.raft.electionTick).toBe(20)
    expect(config.server.storage.engine).toBe('memory')
    expect(config.server.raft.batch).toEqual(DEFAULTS.server.raft.batch)
    expect(config.server.storage.dataDir).toBe('./data')
  })

  it('durations become milliseconds and sizes bytes (units, and bare numbers)', async () => {
    const { raft } = (await loadConfig(fixture('units.yaml'))).server
    expect(raft.tickIntervalMs).toBe(1500) // 1.5s
    expect(raft.proposalTimeoutMs).toBe(120_000) // 2m
    expect(raft.requestTimeoutMs).toBe(5_400_000) // 1h30m
    expect(raft.maxSizePerMsg).toBe(512 * 1024) // 512KB, KB = 1024
    expect(raft.batch.minTimeoutMs).toBe(0.1) // 100us
    expect(raft.batch.maxTimeoutMs).toBe(20) // bare number = ms
    expect(raft.batch.maxProposalBytes).toBe(1048576) // 1MiB
    expect(raft.batch.compressMinBytes).toBe(8192) // bare number = bytes
    const more = parseConfig('server:\n  raft:\n    tick_interval: 5ms\n    proposal_timeout: 1s\n    max_size_per_msg: 1MB\n')
    expect(more.server.raft.tickIntervalMs).toBe(5)
    expect(more.server.raft.proposalTimeoutMs).toBe(1000)
    expect(more.server.raft.maxSizePerMsg).toBe(1048576)
  })
})

describe('units', () => {
  it('parseDuration reads Go-style durations into milliseconds', () => {
    expect(parseDuration('5ms')).toBe(5)
    expect(parseDuration('1s')).toBe(1000)
    expect(parseDuration('1.1s')).toBe(1100)
    expect(parseDuration('1m30s')).toBe(90_000)
    expect(parseDuration('2h')).toBe(7_200_000)
    expect(parseDuration('250µs')).toBe(0.25)
    expect(parseDuration(7)).toBe(7)
    expect(() => parseDuration('5')).toThrow(/no unit/)
    expect(() => parseDuration('5 days')).toThrow(/not a duration/)
  })

  it('parseSize reads bytes and binary units, and rejects fractions of a byte', () => {
    expect(parseSize(4096)).toBe(4096)
    expect(parseSize('4096')).toBe(4096)
    expect(parseSize('1KB')).toBe(1024)
    expect(parseSize('1kib')).toBe(1024)
    expect(parseSize('1.5KB')).toBe(1536)
    expect(parseSize('2 MB')).toBe(2 * 1024 * 1024)
    expect(parseSize('4K')).toBe(4096)
    expect(parseSize('1G')).toBe(1024 ** 3)
    expect(() => parseSize('0.3KB')).toThrow(/whole number of bytes/)
    expect(() => parseSize('1PB')).toThrow(/not a size/)
  })

  it('every integer number of ms, s, KB and MB parses exactly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), (n) => {
        expect(parseDuration(`${n}ms`)).toBe(n)
        expect(parseDuration(`${n}s`)).toBe(n * 1000)
        expect(parseSize(`${n}KB`)).toBe(n * 1024)
        expect(parseSize(`${n}MB`)).toBe(n * 1024 * 1024)
      }),
    )
  })

  it('a decimal duration with up to 3 fraction digits of seconds is whole milliseconds', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (ms) => {
        const text = `${Math.floor(ms / 1000)}.${String(ms % 1000).padStart(3, '0')}s`
        expect(parseDuration(text)).toBe(ms)
      }),
    )
  })
})

describe('invalid configuration files', () => {
  it('YAML syntax error: names the file and the line', async () => {
    const path = fixture('syntax-error.yaml')
    const err = await configError(() => loadConfig(path))
    expect(err.message).toContain(`${path}: line 5, column`)
    expect(err.message).toContain('invalid YAML')
    expect(err.file).toBe(path)
    expect(err.line).toBe(5)
    expect(err.rule).toMatch(/^invalid YAML: /)
  })

  it('duplicate key: a YAML error naming the file and the line of the second key', async () => {
    const path = fixture('duplicate-key.yaml')
    const err = await configError(() => loadConfig(path))
    expect(err.message).toContain(`${path}: line 4, column 5: invalid YAML: Map keys must be unique`)
    expect(err.line).toBe(4)
  })

  it('unknown key: suggests the nearest known key', async () => {
    await expectInvalid('unknown-key.yaml', {
      key: 'server.raft.batch.max_batch',
      rule: 'unknown key; did you mean max_batch_size?',
      line: 5,
    })
  })

  it('unknown key spelled in camelCase: suggests the snake_case key', async () => {
    const err = await configError(() => parseConfig('server:\n  raft:\n    electionTick: 20\n', 'camel.yaml'))
    expect(err.message).toContain('camel.yaml: server.raft.electionTick: unknown key; did you mean election_tick?')
  })

  it('known key in the wrong section: suggests where it belongs', async () => {
    await expectInvalid('misplaced-section.yaml', {
      key: 'batch',
      rule: 'unknown key; did you mean server.raft.batch?',
      line: 2,
    })
  })

  it('unknown key with nothing close: lists the keys of that section', async () => {
    const err = await configError(() => parseConfig('server:\n  storage:\n    color: blue\n', 's.yaml'))
    expect(err.message).toContain('s.yaml: server.storage.color: unknown key; expected one of engine, data_dir, sync')
  })

  it('wrong type: a string where a boolean is expected', async () => {
    await expectInvalid('wrong-type-boolean.yaml', {
      key: 'server.raft.pre_vote',
      rule: "expected a boolean, got string 'yes'",
      line: 3,
    })
  })

  it('wrong type: a scalar where a section is expected', async () => {
    await expectInvalid('wrong-type-section.yaml', {
      key: 'server.raft.batch',
      rule: 'expected a mapping, got number 64',
      line: 3,
    })
  })

  it('wrong type: a string where a number is expected', async () => {
    const err = await configError(() => parseConfig('server:\n  raft:\n    batch:\n      max_batch_size: "64"\n'))
    expect(err.message).toContain("<inline>: server.raft.batch.max_batch_size: expected a positive integer, got string '64'")
  })

  it('wrong type: the document is not a mapping', async () => {
    const path = fixture('not-a-mapping.yaml')
    const err = await configError(() => loadConfig(path))
    expect(err.message).toContain(`${path}: (top level): expected a mapping, got a list`)
  })

  it('min_batch_size must be <= max_batch_size (max left at its default)', async () => {
    await expectInvalid('min-batch-gt-max.yaml', {
      key: 'server.raft.batch.min_batch_size',
      value: '300',
      rule: 'must be <= max_batch_size (256)',
      line: 4,
    })
  })

  it('min_timeout must be <= max_timeout', async () => {
    await expectInvalid('min-timeout-gt-max.yaml', {
      key: 'server.raft.batch.min_timeout',
      value: '30ms',
      rule: 'must be <= max_timeout (20ms)',
      line: 4,
    })
  })

  it('load_threshold must be in [0, 1]', async () => {
    await expectInvalid('load-threshold-out-of-range.yaml', {
      key: 'server.raft.batch.load_threshold',
      value: '1.5',
      rule: 'must be between 0 and 1',
      line: 4,
    })
    const below = await configError(() => parseConfig('server:\n  raft:\n    batch:\n      load_threshold: -0.1\n'))
    expect(below.message).toContain('<inline>: server.raft.batch.load_threshold (-0.1) must be between 0 and 1')
    expect(parseConfig('server:\n  raft:\n    batch:\n      load_threshold: 0\n').server.raft.batch.loadThreshold).toBe(0)
    expect(parseConfig('server:\n  raft:\n    batch:\n      load_threshold: 1\n').server.raft.batch.loadThreshold).toBe(1)
  })

  it('heartbeat_tick must be < election_tick', async () => {
    await expectInvalid('heartbeat-not-below-election.yaml', {
      key: 'server.raft.heartbeat_tick',
      value: '3',
      rule: 'must be < election_tick (3)',
      line: 4,
    })
  })

  it('counts must be positive integers: zero', async () => {
    await expectInvalid('non-positive-count.yaml', {
      key: 'server.raft.batch.queue_capacity',
      value: '0',
      rule: 'must be a positive integer',
      line: 4,
    })
  })

  it('counts must be positive integers: a fraction', async () => {
    await expectInvalid('non-integer-count.yaml', {
      key: 'server.raft.election_tick',
      value: '2.5',
      rule: 'must be a positive integer',
      line: 3,
    })
  })

  it('bad duration: not parseable', async () => {
    await expectInvalid('bad-duration.yaml', {
      key: 'server.raft.batch.min_timeout',
      value: "'5 parsecs'",
      rule: 'is not a duration',
      line: 4,
    })
  })

  it('bad duration: a number without its unit inside a string', async () => {
    const err = await configError(() => parseConfig('server:\n  raft:\n    tick_interval: "100"\n', 'd.yaml'))
    expect(err.message).toContain("d.yaml: server.raft.tick_interval ('100') has no unit")
  })

  it('durations must be positive', async () => {
    await expectInvalid('non-positive-duration.yaml', {
      key: 'server.raft.proposal_timeout',
      value: "'0s'",
      rule: 'must be a positive duration',
      line: 3,
    })
    const negative = await configError(() => parseConfig('server:\n  raft:\n    batch:\n      max_timeout: -5ms\n'))
    expect(negative.message).toContain("<inline>: server.raft.batch.max_timeout ('-5ms') must be a positive duration")
  })

  it('bad size: not parseable', async () => {
    await expectInvalid('bad-size.yaml', {
      key: 'server.raft.max_size_per_msg',
      value: "'1 zettabyte'",
      rule: 'is not a size',
      line: 3,
    })
  })

  it('max_log_size is a size, and zero bytes is refused', async () => {
    expect(parseConfig('server:\n  raft:\n    max_log_size: 8MB\n').server.raft.maxLogSize).toBe(8 * 1048576)
    const zero = await configError(() => parseConfig('server:\n  raft:\n    max_log_size: 0\n'))
    expect(zero.message).toContain('<inline>: server.raft.max_log_size (0) must be a positive number of bytes')
  })

  it('bad size: a fraction of a byte', async () => {
    const err = await configError(() => parseConfig('server:\n  raft:\n    batch:\n      compress_min_bytes: 0.3KB\n'))
    expect(err.message).toContain("<inline>: server.raft.batch.compress_min_bytes ('0.3KB') is not a whole number of bytes")
  })

  it('sizes must be positive', async () => {
    await expectInvalid('non-positive-size.yaml', {
      key: 'server.raft.batch.max_proposal_bytes',
      value: '0',
      rule: 'must be a positive number of bytes',
      line: 4,
    })
  })

  it('engine must be memory or rocksdb', async () => {
    await expectInvalid('bad-engine.yaml', {
      key: 'server.storage.engine',
      rule: "expected one of 'memory', 'rocksdb', got string 'leveldb'",
      line: 3,
    })
  })

  it('compression must be none or lz4', async () => {
    await expectInvalid('bad-compression.yaml', {
      key: 'server.raft.batch.compression',
      rule: "expected one of 'none', 'lz4', got string 'zstd'",
      line: 4,
    })
  })

  it('data_dir must not be empty', async () => {
    await expectInvalid('empty-data-dir.yaml', {
      key: 'server.storage.data_dir',
      value: "''",
      rule: 'must not be empty',
      line: 3,
    })
  })

  it('every problem is reported, one line each, in file order', async () => {
    const path = fixture('several-errors.yaml')
    const err = await configError(() => loadConfig(path))
    expect(err.message.split('\n')).toEqual([
      `${path}: server.raft.check_quorum: expected a boolean, got string 'no'; write true or false (line 3)`,
      `${path}: server.raft.batch.max_batch: unknown key; did you mean max_batch_size? (line 5)`,
      `${path}: server.raft.batch.load_threshold (-0.5) must be between 0 and 1 (line 6)`,
      `${path}: server.storage.engine: expected one of 'memory', 'rocksdb', got string 'leveldb' (line 8)`,
    ])
    expect(err.issues.map((i) => i.key)).toEqual([
      'server.raft.check_quorum',
      'server.raft.batch.max_batch',
      'server.raft.batch.load_threshold',
      'server.storage.engine',
    ])
    expect(err.key).toBe('server.raft.check_quorum')
  })

  it('missing file: a ConfigError naming the file', async () => {
    const path = fixture('does-not-exist.yaml')
    const err = await configError(() => loadConfig(path))
    expect(err.message).toBe(`${path}: cannot read config file: no such file`)
    expect(err.file).toBe(path)
    const sync = await configError(() => loadConfigSync(path))
    expect(sync.message).toBe(err.message)
  })

  it('a directory is not a config file', async () => {
    const path = FIXTURES
    const err = await configError(() => loadConfig(path))
    expect(err.message).toContain(`${path}: cannot read config file`)
  })

  it('parseConfig names <inline> when no source is given', async () => {
    const err = await configError(() => parseConfig('server:\n  raft:\n    election_tick: 0\n'))
    expect(err.message).toBe('<inline>: server.raft.election_tick (0) must be a positive integer (line 3)')
  })
})

describe('resolveConfig', () => {
  const dir = tempDir('metastore-config-')

  it('gives the defaults without input', () => {
    expect(resolveConfig()).toEqual(DEFAULTS)
  })

  it('loads a path synchronously', () => {
    const path = join(dir, 'store.yaml')
    writeFileSync(path, 'server:\n  storage:\n    engine: memory\n    data_dir: /tmp/x\n')
    const config = resolveConfig(path)
    expect(config.server.storage).toEqual({ engine: 'memory', dataDir: '/tmp/x', sync: true })
  })

  it('merges a partial camelCase object over the defaults', () => {
    const config = resolveConfig({ server: { raft: { batch: { enable: false, maxTimeoutMs: 40 } } } })
    expect(config.server.raft.batch).toEqual({ ...DEFAULTS.server.raft.batch, enable: false, maxTimeoutMs: 40 })
    expect(config.server.storage).toEqual(DEFAULTS.server.storage)
  })

  it('returns a full config unchanged in value', () => {
    const full = defaultConfig()
    full.server.raft.electionTick = 30
    expect(resolveConfig(full)).toEqual(full)
  })

  it('checks objects with the same rules, naming <options> and the camelCase key', async () => {
    const order = await configError(() => resolveConfig({ server: { raft: { batch: { minBatchSize: 300 } } } }))
    expect(order.message).toBe('<options>: server.raft.batch.minBatchSize (300) must be <= maxBatchSize (256)')
    expect(order.key).toBe('server.raft.batch.minBatchSize')
    const unknown = await configError(() =>
      resolveConfig({ server: { raft: { batch: { maxBatch: 3 } } } } as unknown as MetaStoreConfig),
    )
    expect(unknown.message).toBe('<options>: server.raft.batch.maxBatch: unknown key; did you mean maxBatchSize?')
    const snake = await configError(() =>
      resolveConfig({ server: { raft: { election_tick: 3 } } } as unknown as MetaStoreConfig),
    )
    expect(snake.message).toBe('<options>: server.raft.election_tick: unknown key; did you mean electionTick?')
  })
})

describe('MetaStoreError', () => {
  it('wraps native errors that carry one of our codes, and leaves others alone', () => {
    const thrown = Object.assign(new Error('proposal dropped: leader changed'), { code: 'ERR_PROPOSAL_DROPPED' })
    const wrapped = toMetaStoreError(thrown)
    expect(wrapped).toBeInstanceOf(MetaStoreError)
    expect(wrapped).toMatchObject({ code: 'ERR_PROPOSAL_DROPPED', message: 'proposal dropped: leader changed', retryable: true })
    expect((wrapped as Error).cause).toBe(thrown)
    expect(toMetaStoreError(wrapped)).toBe(wrapped)

    const config = toMetaStoreError(Object.assign(new Error('bad'), { code: 'ERR_INVALID_CONFIG' }))
    expect(config).toBeInstanceOf(ConfigError)

    const other = Object.assign(new Error('x'), { code: 'GenericFailure' })
    expect(toMetaStoreError(other)).toBe(other)
    expect(toMetaStoreError('text')).toBe('text')
  })

  it('marks dropped failures retryable, and only those: a timed-out write may have been applied', () => {
    const retryable = ['ERR_PROPOSAL_DROPPED'] as const
    const fatal = ['ERR_TIMEOUT', 'ERR_INVALID_CONFIG', 'ERR_CLOSED', 'ERR_TOO_LARGE', 'ERR_CORRUPT_BATCH', 'ERR_STORAGE', 'ERR_INTERNAL'] as const
    for (const code of retryable) {
      expect(isRetryable(new MetaStoreError(code, code))).toBe(true)
      expect(isRetryable(Object.assign(new Error(code), { code }))).toBe(true)
    }
    for (const code of fatal) expect(isRetryable(new MetaStoreError(code, code))).toBe(false)
    expect(isRetryable(new Error('plain'))).toBe(false)
    expect(new MetaStoreError('ERR_CLOSED', 'closed').name).toBe('MetaStoreError')
  })

  it("takes its codes and retry rule from the core's table", () => {
    const table = native.errorCodes()
    expect(table.map((c) => c.code)).toEqual([
      'ERR_INVALID_CONFIG',
      'ERR_NOT_STARTED',
      'ERR_PROPOSAL_DROPPED',
      'ERR_TIMEOUT',
      'ERR_CLOSED',
      'ERR_TOO_LARGE',
      'ERR_CORRUPT_BATCH',
      'ERR_STORAGE',
      'ERR_UNKNOWN_NODE',
      'ERR_DATA_DIR_MISMATCH',
      'ERR_STATE_LOST',
      'ERR_SESSION_EXPIRED',
      'ERR_INTERNAL',
    ])
    for (const { code, retryable } of table) expect(new MetaStoreError(code, code).retryable).toBe(retryable)
    const notACode = Object.assign(new Error('x'), { code: 'ERR_NOT_LEADER' })
    expect(toMetaStoreError(notACode)).toBe(notACode)
  })
})

/**
 * The loader checks a file before the core sees it, so that an error points at
 * the line; the core checks again when a store starts. The same bad settings
 * must break the same rule on both sides. Rules only the loader has: types,
 * units and unknown keys (the addon takes typed options), positive
 * `max_size_per_msg` and `compress_min_bytes` (the core accepts 0), and a
 * non-empty `data_dir` on the memory engine (the core ignores it there).
 */
describe('the loader and the core agree on the rules', () => {
  type Case = Record<string, number | string>
  // Key paths under `server`, one rule broken per case; every case runs on the memory engine unless it says otherwise.
  const cases: [key: string, set: Case][] = [
    ['raft.tick_interval', { 'raft.tick_interval': 0 }],
    ['raft.election_tick', { 'raft.election_tick': 0 }],
    ['raft.election_tick', { 'raft.election_tick': 2.5 }],
    ['raft.heartbeat_tick', { 'raft.heartbeat_tick': 0 }],
    ['raft.heartbeat_tick', { 'raft.heartbeat_tick': 10, 'raft.election_tick': 10 }],
    ['raft.max_inflight_msgs', { 'raft.max_inflight_msgs': 0 }],
    ['raft.snapshot_count', { 'raft.snapshot_count': 0 }],
    ['raft.max_log_size', { 'raft.max_log_size': 0 }],
    ['raft.proposal_timeout', { 'raft.proposal_timeout': 0 }],
    ['raft.proposal_timeout', { 'raft.proposal_timeout': 20_000 }],
    ['raft.batch.min_batch_size', { 'raft.batch.min_batch_size': 0 }],
    ['raft.batch.min_batch_size', { 'raft.batch.min_batch_size': 300 }],
    ['raft.batch.max_batch_size', { 'raft.batch.max_batch_size': 0 }],
    ['raft.batch.min_timeout', { 'raft.batch.min_timeout': 0 }],
    ['raft.batch.min_timeout', { 'raft.batch.min_timeout': 30 }],
    ['raft.batch.max_timeout', { 'raft.batch.max_timeout': 0 }],
    ['raft.batch.load_threshold', { 'raft.batch.load_threshold': 1.5 }],
    ['raft.batch.load_threshold', { 'raft.batch.load_threshold': -0.1 }],
    ['raft.batch.max_proposal_bytes', { 'raft.batch.max_proposal_bytes': 0 }],
    ['raft.batch.queue_capacity', { 'raft.batch.queue_capacity': 0 }],
    ['raft.batch.compression', { 'raft.batch.compression': 'zstd' }],
    ['storage.engine', { 'storage.engine': 'leveldb' }],
    ['storage.data_dir', { 'storage.engine': 'rocksdb', 'storage.data_dir': '' }],
  ]

  /** The YAML file of `set` (bare numbers are milliseconds and bytes there, as in the options). */
  function yamlOf(set: Case): string {
    const root: Record<string, unknown> = {}
    for (const [path, value] of Object.entries({ 'storage.engine': 'memory', ...set })) {
      const keys = ['server', ...path.split('.')]
      let node = root
      for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>
      node[keys[keys.length - 1] as string] = value
    }
    return stringify(root)
  }

  /** The options object the addon takes for `set`: the defaults with those keys replaced, unchecked. */
  function optionsOf(set: Case): Record<string, any> {
    const options: Record<string, any> = defaultConfig().server
    options.storage.engine = 'memory'
    for (const [path, value] of Object.entries(set)) {
      const keys = path.split('.')
      let node = options
      for (const key of keys.slice(0, -1)) node = node[key]
      const snake = keys[keys.length - 1] as string
      const camel = snake.replace(/_(\w)/g, (_, c: string) => c.toUpperCase())
      node[camel in node ? camel : `${camel}Ms`] = value
    }
    return options
  }

  /** The key path the addon's ERR_INVALID_CONFIG message names. */
  function nativeKey(set: Case): string {
    let cluster: { close(): void } | undefined
    try {
      const options = optionsOf(set)
      cluster = native.NativeCluster.start({ nodes: 1, raft: options.raft, storage: options.storage } as never, () => {})
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_INVALID_CONFIG')
      const key = /(?:^|: )(?:server\.)?((?:raft|storage)\.[\w.]+):/.exec((err as Error).message)?.[1]
      expect(key, (err as Error).message).toBeDefined()
      return `server.${key}`
    }
    cluster.close()
    return '(accepted)'
  }

  it.each(cases)('%s: both reject %j', async (key, set) => {
    const loader = await configError(() => parseConfig(yamlOf(set)))
    expect(loader.key).toBe(`server.${key}`)
    expect(nativeKey(set)).toBe(`server.${key}`)
  })
})
