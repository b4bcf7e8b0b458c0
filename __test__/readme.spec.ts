import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { defaultConfig, parseConfig } from '../ts/config.js'

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
