import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { isDeepStrictEqual } from 'node:util'

import { describe, expect, it } from 'vitest'

import { defaultConfig, parseConfig } from '../ts/config.js'
import { MetaStore } from '../ts/index.js'
import { freePorts } from './harness/processes.js'
import { eventually, tempDir, testConfig } from './helpers.js'

// The README's configuration table is what users copy into their files: each
// row's default, written into a YAML file as shown, must give the default
// configuration, and the table must have a row for every key.

interface Row {
  key: string
  value: string
  line: number
}

function configRows(markdown: string): Row[] {
  const lines = markdown.split('\n')
  const start = lines.findIndex((l) => l.trim() === '## Configuration')
  if (start < 0) throw new Error('README.md has no "## Configuration" section')
  const rows: Row[] = []
  for (let i = start + 1; i < lines.length && !lines[i].startsWith('## '); i++) {
    const m = /^\|\s*`([a-z_.]+)`\s*\|\s*`([^`]*)`\s*\|/.exec(lines[i])
    if (m) rows.push({ key: m[1], value: m[2], line: i + 1 })
  }
  return rows
}

/** A YAML file setting one dotted key to `value`, written as the table shows it. */
function yamlFor(key: string, value: string): string {
  return key
    .split('.')
    .map((part, depth, parts) => `${'  '.repeat(depth)}${part}:${depth === parts.length - 1 ? ` ${value}` : ''}`)
    .join('\n')
}

/** How many leaf values a config holds: one per key of the file. */
function countLeaves(value: unknown): number {
  if (value === null || typeof value !== 'object') return 1
  return Object.values(value).reduce((n: number, v) => n + countLeaves(v), 0)
}

const rows = configRows(readFileSync(join(__dirname, '..', 'README.md'), 'utf8'))

describe('README configuration table', () => {
  it('has one row per configuration key', () => {
    const keys = rows.map((r) => r.key)
    expect(new Set(keys).size, 'a key is listed twice').toBe(keys.length)
    // Every row parses as a known key (below), so as many distinct rows as keys cover them all.
    expect(keys.length).toBe(countLeaves(defaultConfig()))
  })

  it.each(rows.map((r) => [r.key, r.value, r.line] as const))('%s: default `%s` (README.md line %i)', (key, value) => {
    expect(parseConfig(yamlFor(key, value), `README.md ${key}`)).toEqual(defaultConfig())
  })
})

// The README's recipe for replacing a failed node is run here as it is
// written, on three members in this process that talk gRPC over loopback
// (RocksDB each): node 2 dies with its data, node 4 replaces it. Only the new
// node's address is this test's own.
describe('README recipe: replace a failed node', () => {
  const dir = tempDir('metastore-readme-')

  function recipe(markdown: string): string {
    const section = markdown.split('\n## Replace a failed node\n')[1] ?? ''
    const block = /```ts\n([\s\S]*?)```/.exec(section)
    if (block === null) throw new Error('README.md has no code block under "## Replace a failed node"')
    return block[1]!
  }

  it('adds the new node as a learner, promotes it once caught up and removes the dead id', async () => {
    const ports = await freePorts(4)
    const address = (id: number): string => `127.0.0.1:${ports[id - 1]}`
    const config = testConfig()
    const initialCluster = { 1: address(1), 2: address(2), 3: address(3) }
    const open = (id: number): Promise<MetaStore> =>
      MetaStore.open({ config, engine: 'rocksdb', dataDir: join(dir, `n${id}`), nodeId: id, initialCluster })
    const [one, two, three] = await Promise.all([open(1), open(2), open(3)])
    let fresh: MetaStore | undefined
    try {
      for (let i = 0; i < 50; i++) await one.put(`k${i}`, `v${i}`)
      // Node 2 dies, and its data with it.
      await two.close()
      rmSync(join(dir, 'n2'), { recursive: true, force: true })

      const code = recipe(readFileSync(join(__dirname, '..', 'README.md'), 'utf8')).replaceAll("'host-d:7001'", `'${address(4)}'`)
      const run = new Function('MetaStore', 'store', 'dataDir', 'sleep', `return (async () => {\n${code}\nreturn fresh\n})()`)
      fresh = (await run(MetaStore, three, join(dir, 'n4'), sleep)) as MetaStore

      const roles = (s: MetaStore): object[] => s.members().map(({ id, address, role }) => ({ id, address, role }))
      const expected = [1, 3, 4].map((id) => ({ id, address: address(id), role: 'voter' }))
      expect(roles(three)).toEqual(expected)
      await eventually(() => isDeepStrictEqual(roles(fresh!), expected) && isDeepStrictEqual(roles(one), expected))
      // The new node has the group's state and serves writes; the dead id is never used again.
      expect((await fresh.get('k7'))?.toString()).toBe('v7')
      await fresh.put('after', 'replaced')
      expect((await one.get('after'))?.toString()).toBe('replaced')
      await expect(one.addMember(2, address(2), { learner: true })).rejects.toMatchObject({ code: 'ERR_CHANGE_REFUSED', outcome: 'not-applied' })
    } finally {
      await Promise.all([one.close(), three.close(), fresh?.close()])
    }
  }, 60_000)
})
