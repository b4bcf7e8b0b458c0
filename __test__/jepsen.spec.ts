// Linearizability under faults: clients on every node of a 3-node cluster put,
// get and delete a few keys while a nemesis stops and restarts nodes (RocksDB),
// isolates a node, isolates the leader and cuts single links. The history is
// checked with porcupine (tools/lincheck) twice: every failed write taken as
// unknown, and the outcomes the errors report trusted. A longer run:
// `npm run test:jepsen -- --seconds 300`.
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { HistoryRecorder } from './jepsen/history.js'
import { buildChecker, checkHistory, removeChecker } from './jepsen/lincheck.js'
import { runJepsen } from './jepsen/run.js'

/** Seconds of load per engine; the whole file stays well under two minutes. */
const SECONDS = 15
const CLIENTS = 9
/**
 * Each fault outlasts the proposal timeout of the run (1 s), so the clients of
 * a cut-off node see errors; with short rests, the last 2 s quiet, that is at
 * least 5 faults in 15 s.
 */
const HOLD_MS: [number, number] = [1_200, 2_000]
const QUIET_MS: [number, number] = [200, 500]
/** A run must apply at least this many faults, of at least two kinds... */
const MIN_FAULTS = 4
const MIN_KINDS = 2
/** ...have operations in flight across them... */
const MIN_OVERLAPPING = 50
/** ...and get work done: a quiet or dead run cannot pass. */
const MIN_OK_OPS = 1_000

describe('linearizability under faults (porcupine)', () => {
  // Go builds tools/lincheck once for the file; without Go the tests fail, they are never skipped.
  beforeAll(async () => {
    await buildChecker()
  }, 180_000)
  afterAll(removeChecker)

  it('the harness catches a stale read and a not-applied write that took effect, and keeps the files', async () => {
    // A put acknowledged, then a read that does not see it.
    const stale = new HistoryRecorder()
    stale.wrote(stale.begin(0, 'put', 'a', 'v1'), false)
    stale.read(stale.begin(1, 'get', 'a'), undefined)
    // A put whose error said not-applied, then read back.
    const notApplied = new HistoryRecorder()
    notApplied.failed(notApplied.begin(0, 'put', 'b', 'v2'), Object.assign(new Error('x'), { code: 'ERR_X', outcome: 'not-applied' }))
    notApplied.read(notApplied.begin(1, 'get', 'b'), 'v2')
    // The same write failing without an outcome is unknown: it may have happened.
    const noOutcome = new HistoryRecorder()
    noOutcome.failed(noOutcome.begin(0, 'put', 'c', 'v3'), Object.assign(new Error('x'), { code: 'ERR_X' }))
    noOutcome.read(noOutcome.begin(1, 'get', 'c'), 'v3')

    const verdicts = [
      await checkHistory(stale, { label: 'selftest' }),
      await checkHistory(notApplied, { label: 'selftest' }),
      await checkHistory(noOutcome, { label: 'selftest' }),
    ]
    try {
      expect(verdicts.map((v) => v.checks.map((c) => c.linearizable))).toEqual([
        [false, false],
        [true, false],
        [true, true],
      ])
      for (const v of verdicts.slice(0, 2)) {
        expect(v.ok).toBe(false)
        expect(v.message).toContain(v.history)
        expect(existsSync(v.history)).toBe(true)
        for (const c of v.checks.filter((c) => !c.linearizable)) {
          expect(c.html).toBeDefined()
          expect(v.message).toContain(c.html)
          expect(existsSync(c.html!)).toBe(true)
        }
      }
      expect(existsSync(verdicts[2].dir)).toBe(false) // a linearizable history is not kept
    } finally {
      for (const v of verdicts) rmSync(v.dir, { recursive: true, force: true })
    }
  })

  for (const engine of ['memory', 'rocksdb'] as const) {
    describe(engine, () => {
      const dir = join(tmpdir(), `metastore-jepsen-data-${randomUUID()}`)
      beforeAll(() => mkdirSync(dir, { mode: 0o700 }))
      afterAll(() => rmSync(dir, { recursive: true, force: true }))

      it(`${CLIENTS} clients on 3 nodes for ${SECONDS} s under a nemesis: linearizable, unknown and trusted`, async () => {
        const report = await runJepsen({
          engine,
          dataDir: engine === 'rocksdb' ? join(dir, 'cluster') : undefined,
          seconds: SECONDS,
          clients: CLIENTS,
          holdMs: HOLD_MS,
          quietMs: QUIET_MS,
        })
        console.log(report.summary)

        expect(report.verdict.ok, `not linearizable (seed ${report.seed}):\n${report.verdict.message}`).toBe(true)
        const { faults, counts, errors } = report.nemesis
        expect(errors, 'the nemesis could not heal').toEqual([])
        expect(faults.length, `faults applied: ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(MIN_FAULTS)
        expect(Object.keys(counts).length, `fault kinds applied: ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(MIN_KINDS)
        expect(report.overlapping, 'operations that overlapped a fault').toBeGreaterThanOrEqual(MIN_OVERLAPPING)
        expect(report.ops.ok, 'operations that succeeded').toBeGreaterThanOrEqual(MIN_OK_OPS)
        // The faults outlast the proposal timeout, so attempts on cut-off
        // nodes end unknown; the handles send those writes again (applied
        // once), so few reach the caller as unknown.
        expect(report.client.unknownOutcomes, 'attempts the faults left with an unknown outcome').toBeGreaterThan(0)
        expect(report.client.retries, 'writes sent again').toBeGreaterThan(0)
        expect(report.hung, 'requests that never settled, even after close').toBe(0)
      }, 150_000)
    })
  }
})
