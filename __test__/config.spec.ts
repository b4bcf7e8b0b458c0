import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
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
  resolveMember,
  type MetaStoreConfig,
} from '../ts/config.js'
import { LocalCluster } from '../ts/cluster.js'
import { ConfigError, isRetryable, MetaStoreError, toMetaStoreError } from '../ts/errors.js'
import { native } from '../ts/native.js'
import { MetaStore } from '../ts/store.js'
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
      promoteMaxLag: 256,
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

  it('promote_max_lag is a count like the others: read as written; zero, fractions, negatives and strings refused', async () => {
    expect(parseConfig('server:\n  raft:\n    promote_max_lag: 64\n').server.raft.promoteMaxLag).toBe(64)
    expect(resolveConfig({ server: { raft: { promoteMaxLag: 1 } } }).server.raft.promoteMaxLag).toBe(1)
    for (const value of ['0', '2.5', '-1']) {
      const err = await configError(() => parseConfig(`server:\n  raft:\n    promote_max_lag: ${value}\n`, 'lag.yaml'))
      expect(err.message).toBe(`lag.yaml: server.raft.promote_max_lag (${value}) must be a positive integer (line 3)`)
      expect(err).toMatchObject({ file: 'lag.yaml', key: 'server.raft.promote_max_lag', rule: 'must be a positive integer', line: 3 })
    }
    const text = await configError(() => parseConfig('server:\n  raft:\n    promote_max_lag: "64"\n'))
    expect(text.message).toBe("<inline>: server.raft.promote_max_lag: expected a positive integer, got string '64' (line 3)")
    const options = await configError(() => resolveConfig({ server: { raft: { promoteMaxLag: 0 } } }))
    expect(options.message).toBe('<options>: server.raft.promoteMaxLag (0) must be a positive integer')
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

/** Loads an invalid fixture; both loaders must report exactly `lines`, each prefixed with the path. */
async function expectLines(name: string, lines: string[]): Promise<ConfigError> {
  const path = fixture(name)
  const err = await configError(() => loadConfig(path))
  expect(err.message.split('\n')).toEqual(lines.map((line) => `${path}: ${line}`))
  expect(err.issues.map((i) => i.message)).toEqual(lines.map((line) => `${path}: ${line}`))
  const sync = await configError(() => loadConfigSync(path))
  expect(sync.message).toBe(err.message)
  return err
}

describe('the cluster and http sections', () => {
  it('a member file reads into camelCase, ids as keys, file paths as written', async () => {
    const { server } = await loadConfig(fixture('cluster.yaml'))
    expect(server.cluster).toEqual({
      nodeId: 1,
      listen: '0.0.0.0:7001',
      advertise: 'host-a:7001',
      initialCluster: { 1: 'host-a:7001', 2: '10.0.0.2:7001', 3: '[fd00::3]:7001' },
      clusterToken: 'metastore-prod',
      tls: { certFile: 'certs/node1.pem', keyFile: 'certs/node1.key', caFile: 'certs/ca.pem' },
    })
    expect(server.http).toEqual({ listen: '127.0.0.1:8001' })
    expect({ raft: server.raft, storage: server.storage }).toEqual(DEFAULTS.server)
  })

  it('the commented example of configs/config.yaml, uncommented, is a valid member with its HTTP end', () => {
    const text = readFileSync(configFile('config.yaml'), 'utf8')
    const uncommented = text.replace(/^ {2}# (?=cluster:|http:| {2})/gm, '  ')
    expect(uncommented).not.toBe(text)
    const { cluster, http } = parseConfig(uncommented, 'configs/config.yaml, uncommented').server
    expect(cluster).toMatchObject({ nodeId: 1, initialCluster: { 1: 'host-a:7001', 2: 'host-b:7001', 3: 'host-c:7001' } })
    expect(Object.keys(cluster ?? {}).sort()).toEqual(['advertise', 'clusterToken', 'initialCluster', 'listen', 'nodeId', 'tls'])
    expect(http).toEqual({ listen: '127.0.0.1:8001' })
  })

  it('absent or left empty, they stay undefined; the optional keys of a member stay undefined too', () => {
    for (const text of ['', 'server:\n  cluster:\n  http:\n', 'server:\n  cluster: null\n']) {
      const { server } = parseConfig(text)
      expect(server.cluster).toBeUndefined()
      expect(server.http).toBeUndefined()
      expect(parseConfig(text)).toEqual(DEFAULTS)
    }
    expect('cluster' in defaultConfig().server).toBe(false)
    const { cluster, http } = parseConfig('server:\n  cluster:\n    node_id: 2\n    initial_cluster: { 2: "b:1" }\n  http: {}\n').server
    expect(cluster).toStrictEqual({ nodeId: 2, initialCluster: { 2: 'b:1' } })
    expect(http).toStrictEqual({})
  })

  it('addresses: a hostname, an IPv4 address or [IPv6], and a port 1..65535', async () => {
    const listen = (address: string): string => `server:\n  cluster:\n    node_id: 1\n    initial_cluster: { 1: "h:1" }\n    listen: "${address}"\n`
    for (const good of ['host-a:7001', 'node_1:1', 'db-1.example.com:65535', 'localhost:7001', '0.0.0.0:7001', '10.0.0.1:07001', '[::]:7001', '[fd00::3]:7001', '[::ffff:10.0.0.1]:1']) {
      expect(parseConfig(listen(good)).server.cluster?.listen).toBe(good)
    }
    const bad: [string, string][] = [
      ['host-a', "must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001'"],
      [':7001', "must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001'"],
      ['host-a:', "must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001'"],
      ['host-a:http', "has an invalid port 'http'"],
      ['host-a:-1', "has an invalid port '-1'"],
      ['host-a:0', 'has port 0 out of range 1..65535'],
      ['host-a:65536', 'has port 65536 out of range 1..65535'],
      ['1.2.3:7001', "has an invalid IPv4 address '1.2.3'"],
      ['fd00::3:7001', "must put an IPv6 host in brackets, e.g. '[::1]:7001'"],
      ['[fd00::zz]:7001', "has an invalid IPv6 address 'fd00::zz'"],
      ['-host:7001', "has an invalid host '-host'; expected a hostname, an IPv4 address or [IPv6]"],
      ['a..b:7001', "has an invalid host 'a..b'; expected a hostname, an IPv4 address or [IPv6]"],
      ['http://a:7001', 'must be host:port, without a scheme such as http://'],
    ]
    for (const [address, rule] of bad) {
      const err = await configError(() => parseConfig(listen(address), 'm.yaml'))
      expect(err.message).toBe(`m.yaml: server.cluster.listen ('${address}') ${rule} (line 5)`)
    }
  })

  it('server.http.listen may take port 0 (any free port); a member listens on a port it can be dialled at', async () => {
    expect(parseConfig('server:\n  http:\n    listen: 127.0.0.1:0\n').server.http).toEqual({ listen: '127.0.0.1:0' })
    const err = await configError(() => parseConfig('server:\n  http:\n    listen: 127.0.0.1:65536\n'))
    expect(err.message).toBe("<inline>: server.http.listen ('127.0.0.1:65536') has port 65536 out of range 0..65535 (line 3)")
  })

  it('every bad address is named by its key, in file order', async () => {
    await expectLines('cluster-bad-address.yaml', [
      'server.cluster.listen: expected a host:port string, got number 7001 (line 4)',
      "server.cluster.initial_cluster.2 ('host-b') must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001' (line 7)",
      "server.cluster.initial_cluster.3 ('host-c:70000') has port 70000 out of range 1..65535 (line 8)",
      "server.cluster.initial_cluster.4 ('::1:7001') must put an IPv6 host in brackets, e.g. '[::1]:7001' (line 9)",
      "server.cluster.initial_cluster.5 ('10.0.0.256:7001') has an invalid IPv4 address '10.0.0.256' (line 10)",
      "server.cluster.initial_cluster.6 ('host_c.example.com:0') has port 0 out of range 1..65535 (line 11)",
      "server.cluster.initial_cluster.7 ('bad host:7001') has an invalid host 'bad host'; expected a hostname, an IPv4 address or [IPv6] (line 12)",
    ])
  })

  it('node_id must be a key of initial_cluster', async () => {
    const err = await expectLines('cluster-node-not-member.yaml', [
      'server.cluster.node_id (4) is not a key of initial_cluster (1, 2, 3) (line 3)',
    ])
    expect(err.key).toBe('server.cluster.node_id')
  })

  it('the keys of initial_cluster are node ids', async () => {
    await expectLines('cluster-bad-node-ids.yaml', [
      'server.cluster.initial_cluster.0: not a node id; node ids are integers 1..4294967295 (line 6)',
      'server.cluster.initial_cluster.two: not a node id; node ids are integers 1..4294967295 (line 7)',
    ])
    const empty = await configError(() => parseConfig('server:\n  cluster:\n    node_id: 1\n    initial_cluster: {}\n'))
    expect(empty.message).toBe('<inline>: server.cluster.initial_cluster: must name at least one member (line 4)')
    const list = await configError(() => parseConfig('server:\n  cluster:\n    node_id: 1\n    initial_cluster: [a:1]\n'))
    expect(list.message).toBe('<inline>: server.cluster.initial_cluster: expected a mapping of node ids to host:port addresses, got a list (line 4)')
  })

  it('two members cannot share an address (hostnames compared without case): both ids are named', async () => {
    await expectLines('cluster-duplicate-address.yaml', [
      "server.cluster.initial_cluster.3 ('HOST-A:7001') is also node 1's address (line 7)",
    ])
  })

  it('advertise must be the address initial_cluster gives this node', async () => {
    await expectLines('cluster-advertise-mismatch.yaml', [
      "server.cluster.advertise ('host-a:7001') must equal the address of node 2 in initial_cluster ('host-b:7001') (line 4)",
    ])
  })

  it('tls takes all three files or none', async () => {
    await expectLines('cluster-partial-tls.yaml', [
      'server.cluster.tls.key_file: missing; tls needs cert_file, key_file and ca_file (line 6)',
    ])
  })

  it('a cluster section needs node_id, and initial_cluster unless it joins', async () => {
    await expectLines('cluster-missing-keys.yaml', [
      'server.cluster.node_id: missing; a cluster member needs node_id, and initial_cluster unless join is true (line 4)',
      'server.cluster.initial_cluster: missing; a cluster member needs node_id, and initial_cluster unless join is true (line 4)',
    ])
  })

  it('without join: true, a missing initial_cluster is refused, naming the key and the rule', async () => {
    const rule = 'missing; a cluster member needs node_id, and initial_cluster unless join is true'
    for (const join of ['', '    join: false\n']) {
      const err = await configError(() => parseConfig(`server:\n  cluster:\n    node_id: 4\n${join}    advertise: host-d:7001\n`, 'm.yaml'))
      expect(err.message).toBe(`m.yaml: server.cluster.initial_cluster: ${rule} (line 2)`)
      expect(err).toMatchObject({ file: 'm.yaml', key: 'server.cluster.initial_cluster', rule, line: 2 })
    }
    // A join flag that is no boolean is reported as such, not as a missing initial_cluster.
    const yes = await configError(() => parseConfig('server:\n  cluster:\n    node_id: 4\n    join: yes\n'))
    expect(yes.message).toBe("<inline>: server.cluster.join: expected a boolean, got string 'yes'; write true or false (line 4)")
  })

  it('join: true needs advertise, named with the rule at the line of join', async () => {
    const rule = 'missing; needed when join is true: the group dials a joining node there'
    const err = await configError(() => parseConfig('server:\n  cluster:\n    node_id: 4\n    join: true\n    listen: 0.0.0.0:7001\n', 'j.yaml'))
    expect(err.message).toBe(`j.yaml: server.cluster.advertise: ${rule} (line 4)`)
    expect(err).toMatchObject({ file: 'j.yaml', key: 'server.cluster.advertise', rule, line: 4 })
  })

  it('join: true needs no initial_cluster, and one that does not name the node is no error', () => {
    const joiner = 'server:\n  cluster:\n    node_id: 4\n    join: true\n    advertise: host-d:7001\n    listen: 0.0.0.0:7001\n'
    expect(parseConfig(joiner).server.cluster).toStrictEqual({ nodeId: 4, join: true, advertise: 'host-d:7001', listen: '0.0.0.0:7001' })
    // The group's own file, shared by every host: a joining node ignores initial_cluster.
    const shared = `${joiner}    initial_cluster: { 1: "host-a:7001", 2: "host-b:7001", 3: "host-c:7001" }\n`
    expect(parseConfig(shared).server.cluster).toMatchObject({ nodeId: 4, join: true, initialCluster: { 1: 'host-a:7001' } })
  })

  it('unknown keys get suggestions', async () => {
    await expectLines('cluster-unknown-key.yaml', [
      'server.cluster.nodeid: unknown key; did you mean node_id? (line 3)',
      'server.cluster.token: unknown key; did you mean cluster_token? (line 7)',
    ])
    const camel = await configError(() =>
      parseConfig('server:\n  cluster:\n    nodeId: 1\n    tls:\n      certFile: a\n      key_file: b\n      ca_file: c\n'),
    )
    expect(camel.issues.map((i) => i.message)).toEqual([
      '<inline>: server.cluster.node_id: missing; a cluster member needs node_id, and initial_cluster unless join is true (line 2)',
      '<inline>: server.cluster.initial_cluster: missing; a cluster member needs node_id, and initial_cluster unless join is true (line 2)',
      '<inline>: server.cluster.nodeId: unknown key; did you mean node_id? (line 3)',
      '<inline>: server.cluster.tls.cert_file: missing; tls needs cert_file, key_file and ca_file (line 4)',
      '<inline>: server.cluster.tls.certFile: unknown key; did you mean cert_file? (line 5)',
    ])
  })

  it('problems of every section are reported together, in file order', async () => {
    await expectLines('cluster-several-errors.yaml', [
      'server.raft.election_tick (0) must be a positive integer (line 3)',
      'server.cluster.node_id (1.5) must be a positive integer (line 5)',
      "server.cluster.initial_cluster.1 ('host-a') must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001' (line 7)",
      "server.cluster.cluster_token ('') must not be empty (line 8)",
      "server.http.listen ('localhost') must be host:port, e.g. 'host-a:7001', '10.0.0.1:7001' or '[::1]:7001' (line 10)",
      'server.http.port: unknown key; expected one of listen (line 11)',
    ])
  })

  it('options objects meet the same rules, named in camelCase', async () => {
    const cluster = { nodeId: 2, initialCluster: { 1: 'a:1', 2: 'b:1' }, advertise: 'a:1' }
    const err = await configError(() => resolveConfig({ server: { cluster } }))
    expect(err.message).toBe("<options>: server.cluster.advertise ('a:1') must equal the address of node 2 in initialCluster ('b:1')")
    const tls = await configError(() => resolveConfig({ server: { cluster: { ...cluster, advertise: 'b:1', tls: { certFile: 'c' } } } } as never))
    expect(tls.message.split('\n')).toEqual([
      '<options>: server.cluster.tls.keyFile: missing; tls needs certFile, keyFile and caFile',
      '<options>: server.cluster.tls.caFile: missing; tls needs certFile, keyFile and caFile',
    ])
    const noMembers = await configError(() => resolveConfig({ server: { cluster: { nodeId: 4 } } }))
    expect(noMembers.message).toBe(
      '<options>: server.cluster.initialCluster: missing; a cluster member needs nodeId, and initialCluster unless join is true',
    )
    const joiner = await configError(() => resolveConfig({ server: { cluster: { nodeId: 4, join: true } } }))
    expect(joiner.message).toBe('<options>: server.cluster.advertise: missing; needed when join is true: the group dials a joining node there')
  })
})

/** A port no one listens on now. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

describe('MetaStore.open and LocalCluster.start with a cluster section', () => {
  const dir = tempDir('metastore-member-config-')
  const member = fixture('member.yaml')

  /** The ConfigError that MetaStore.open rejects with; nothing is started. */
  const openError = (options: object): Promise<ConfigError> => configError(() => MetaStore.open({ config: member, ...options }))

  it('opens the member a one-member file describes: it writes, reads, and lists itself at its address', async () => {
    const port = await freePort()
    const path = join(dir, 'node1.yaml')
    writeFileSync(
      path,
      stringify({
        server: {
          raft: { tick_interval: '10ms' },
          storage: { engine: 'rocksdb', data_dir: join(dir, 'data'), sync: false },
          cluster: { node_id: 1, initial_cluster: { 1: `127.0.0.1:${port}` } },
        },
      }),
    )
    const store = await MetaStore.open({ config: path })
    try {
      expect(store.nodeId).toBe(1)
      expect((await store.put('k', 'v')).existed).toBe(false)
      expect((await store.get('k'))?.toString()).toBe('v')
      expect(store.members()).toMatchObject([{ id: 1, address: `127.0.0.1:${port}`, role: 'voter', isLeader: true }])
      expect(store.stats().transport).toBeDefined()
    } finally {
      await store.close()
    }
  }, 60_000)

  it('hands the tls files to the core as written: a missing certificate fails the start, naming it', async () => {
    const port = await freePort()
    const path = join(dir, 'tls.yaml')
    const cert = join(dir, 'no-such-cert.pem')
    writeFileSync(
      path,
      stringify({
        server: {
          storage: { engine: 'rocksdb', data_dir: join(dir, 'tls-data') },
          cluster: {
            node_id: 1,
            initial_cluster: { 1: `127.0.0.1:${port}` },
            tls: { cert_file: cert, key_file: join(dir, 'no-such-key.pem'), ca_file: join(dir, 'no-such-ca.pem') },
          },
        },
      }),
    )
    const err = await configError(() => MetaStore.open({ config: path }))
    expect(err.message).toContain(`cluster.tls.cert_file: cannot read ${cert}`)
  }, 60_000)

  it('options override the config key by key', () => {
    const { member: fromFile } = resolveMember(member, {})
    expect(fromFile).toEqual({ nodeId: 1, initialCluster: { 1: 'host-a:7001', 2: 'host-b:7001', 3: 'host-c:7001' } })
    const tls = { certFile: 'n2.pem', keyFile: 'n2.key', caFile: 'ca.pem' }
    const { config, member: node2 } = resolveMember(member, { nodeId: 2, listen: '0.0.0.0:7001', tls, clusterToken: undefined })
    expect(node2).toEqual({ ...fromFile, nodeId: 2, listen: '0.0.0.0:7001', tls })
    expect(config.server.cluster).toEqual(node2)
    const { member: moved } = resolveMember(member, { initialCluster: { 1: 'h1:1', 5: 'h5:1' } })
    expect(moved).toEqual({ nodeId: 1, initialCluster: { 1: 'h1:1', 5: 'h5:1' } })
    expect(resolveMember(undefined, {}).member).toBeUndefined()
    const joiner = { nodeId: 4, join: true, advertise: 'host-d:7001', listen: '0.0.0.0:7001' }
    expect(resolveMember(undefined, joiner).member).toStrictEqual(joiner)
    const { member: joining } = resolveMember(member, joiner)
    expect(joining).toStrictEqual({ ...fromFile, ...joiner })
  })

  it('join as an option: advertise is then required, and initial_cluster is not', async () => {
    const advertise = await openError({ join: true })
    expect(advertise.message).toBe(
      `${member}: server.cluster.advertise: missing; needed when the join option is true: the group dials a joining node there (line 3)`,
    )
    const path = join(dir, 'joiner.yaml')
    writeFileSync(path, 'server:\n  cluster:\n    node_id: 4\n    join: true\n    advertise: host-d:7001\n')
    const initial = await configError(() => MetaStore.open({ config: path, join: false }))
    expect(initial.message).toBe(
      `${path}: server.cluster.initial_cluster: missing; a cluster member needs node_id, and initial_cluster unless the join option is true (line 2)`,
    )
    expect(initial).toMatchObject({ file: path, key: 'server.cluster.initial_cluster', line: 2 })
    const noId = await configError(() => MetaStore.open({ join: true, advertise: 'host-d:7001' }))
    expect(noId.message).toBe('<options>: nodeId: missing; a cluster member needs nodeId, and initialCluster unless join is true')
  })

  it('errors name where the bad value came from: an option, or the file key and its line; nothing starts', async () => {
    expect((await openError({ nodeId: 4 })).message).toBe(
      `<options>: nodeId (4) is not a key of server.cluster.initial_cluster of ${member} (1, 2, 3)`,
    )
    const moved = await openError({ initialCluster: { 7: 'h7:1', 8: 'h8:1' } })
    expect(moved.message).toBe(`${member}: server.cluster.node_id (1) is not a key of the initialCluster option (7, 8) (line 4)`)
    expect(moved).toMatchObject({ file: member, key: 'server.cluster.node_id', line: 4 })
    expect((await openError({ advertise: 'host-b:7001' })).message).toBe(
      `<options>: advertise ('host-b:7001') must equal the address of node 1 in server.cluster.initial_cluster of ${member} ('host-a:7001')`,
    )
    expect((await openError({ listen: 'host-a' })).key).toBe('listen')
    expect((await openError({ tls: { certFile: 'a.pem', keyFile: 'a.key' } })).message).toBe(
      '<options>: tls.caFile: missing; tls needs certFile, keyFile and caFile',
    )
    const unknown = await openError({ tls: { certFile: 'a.pem', keyFile: 'a.key', ca_file: 'ca.pem' } })
    expect(unknown.issues.map((i) => i.message)).toContain('<options>: tls.ca_file: unknown key; did you mean caFile?')
  })

  it('member options without a member to apply them to are an error', async () => {
    const err = await configError(() => MetaStore.open({ listen: '0.0.0.0:7001', clusterToken: 't' }))
    expect(err.message.split('\n')).toEqual([
      '<options>: listen: needs a member to apply to: nodeId with initialCluster (or with join: true), or a server.cluster section in the config',
      '<options>: clusterToken: needs a member to apply to: nodeId with initialCluster (or with join: true), or a server.cluster section in the config',
    ])
  })

  it('LocalCluster.start refuses a config with a cluster section', async () => {
    const rule =
      'a section for MetaStore.open and metastore serve (one member of a group spread over processes); ' +
      'LocalCluster.start runs all its nodes in this process'
    const err = await configError(() => LocalCluster.start({ config: member, nodes: 1, engine: 'memory' }))
    expect(err.message).toBe(`${member}: server.cluster: ${rule} (line 3)`)
    const object = await configError(() => LocalCluster.start({ config: loadConfigSync(member), nodes: 1, engine: 'memory' }))
    expect(object.message).toBe(`<options>: server.cluster: ${rule}`)
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
      // After an attempt whose outcome is unknown, the same code is not safe to resend.
      expect(isRetryable(new MetaStoreError(code, code, { outcome: 'unknown' }))).toBe(false)
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
      'ERR_CHANGE_IN_PROGRESS',
      'ERR_LEARNER_BEHIND',
      'ERR_CHANGE_REFUSED',
      'ERR_REMOVED',
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
 * `max_size_per_msg`, `compress_min_bytes` and `promote_max_lag` (the core
 * accepts 0), and a non-empty `data_dir` on the memory engine (the core
 * ignores it there).
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
    ['raft.promote_max_lag', { 'raft.promote_max_lag': 2.5 }],
    ['raft.promote_max_lag', { 'raft.promote_max_lag': -1 }],
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

  // The member rules the core checks too; the loader alone checks host names, ids in range and advertise.
  // Each case is a cluster section as a file has it; `listen` is given where there is no own address to listen on.
  type Member = { node_id: number; initial_cluster?: Record<string, string>; join?: boolean; listen?: string; advertise?: string }
  const memberCases: [key: string, cluster: Member][] = [
    ['cluster.initial_cluster.2', { node_id: 1, initial_cluster: { 1: '127.0.0.1:7001', 2: '127.0.0.1:7001' } }],
    ['cluster.initial_cluster.2', { node_id: 1, initial_cluster: { 1: '127.0.0.1:7001', 2: '127.0.0.1:0' } }],
    ['cluster.initial_cluster.2', { node_id: 1, initial_cluster: { 1: '127.0.0.1:7001', 2: '127.0.0.1:65536' } }],
    ['cluster.initial_cluster', { node_id: 1, listen: '127.0.0.1:7001' }],
    ['cluster.advertise', { node_id: 4, join: true, listen: '127.0.0.1:7001' }],
  ]

  it.each(memberCases)('%s: both reject %j', async (key, cluster) => {
    const loader = await configError(() => parseConfig(stringify({ server: { cluster } })))
    expect(loader.key).toBe(`server.${key}`)
    const { raft, storage } = defaultConfig().server
    const { node_id: nodeId, initial_cluster: initialCluster = {}, join: joins, listen, advertise } = cluster
    let refused: unknown
    try {
      const dataDir = join(tmpdir(), 'metastore-never-opened')
      const options = { nodeId, initialCluster, join: joins, listen, advertise, raft, storage: { ...storage, dataDir } }
      native.NativeCluster.startMember(options, () => {}).close()
    } catch (err) {
      refused = err
    }
    expect(refused).toMatchObject({ code: 'ERR_INVALID_CONFIG' })
    expect(/(?:^|: )(cluster\.[\w.]+):/.exec((refused as Error).message)?.[1]).toBe(key)
  })
})
