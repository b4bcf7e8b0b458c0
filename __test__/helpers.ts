import { randomUUID } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { afterAll, beforeAll } from 'vitest'

import { defaultConfig, type MetaStoreConfig } from '../ts/index.js'

/** A temporary data dir, removed after the file's tests. */
export function tempDir(prefix = 'metastore-test-'): string {
  // Made in beforeAll, not now: a suite that `-t` filters out runs neither
  // hook, and would leave the directory behind.
  const dir = join(tmpdir(), `${prefix}${randomUUID()}`)
  beforeAll(() => mkdirSync(dir, { mode: 0o700 }))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Fast elections for tests: 10 ms ticks. */
export function testConfig(patch: (c: MetaStoreConfig) => void = () => {}): MetaStoreConfig {
  const config = defaultConfig()
  config.server.raft.tickIntervalMs = 10
  config.server.raft.proposalTimeoutMs = 2_000
  config.server.storage.sync = false
  patch(config)
  return config
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(10)
  }
}

/**
 * What a writer may see while a leader is stopped under it: the retryable
 * codes, and ERR_CLOSED from the stopped node itself.
 */
export const FAILOVER_ERRORS = ['ERR_PROPOSAL_DROPPED', 'ERR_TIMEOUT', 'ERR_CLOSED']
