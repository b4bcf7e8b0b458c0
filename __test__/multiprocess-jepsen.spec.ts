// Linearizability across processes under real faults: three member processes
// (RocksDB) reach each other through fault proxies; clients on every member
// put, get and delete a few keys over its stdin protocol while a nemesis
// kills members with SIGKILL and restarts them, pauses them with SIGSTOP,
// cuts the proxies to isolate the leader, isolate a follower or cut one link,
// and changes the membership (a new member process joins, is added and
// promoted to a fourth voter, then removed again).
// The history, with the real call and return times, is checked with porcupine
// twice: every failed write taken as unknown, and the reported outcomes
// trusted. A longer run: `npm run test:jepsen -- --processes --seconds 300`.
import { randomUUID } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { buildChecker, removeChecker } from './jepsen/lincheck.js'
import { PROCESS_FAULT_KINDS } from './jepsen/process-nemesis.js'
import { runProcessJepsen } from './jepsen/process-run.js'

/** Seconds of load; with start, drain and both checks the file stays near a minute. */
const SECONDS = 25
const CLIENTS = 9
/**
 * A partition outlasts the time a request on the cut-off side takes to fail
 * (1.5 s, see processSettings), so clients there see errors; a killed member
 * stays down as long. A pause is three election timeouts (10 ms ticks,
 * election_tick 10: at most 200 ms each) or more.
 */
const HOLD_MS: [number, number] = [1_700, 2_200]
const PAUSE_MS: [number, number] = [600, 1_000]
const QUIET_MS: [number, number] = [200, 400]
/** Operations in flight across faults... */
const MIN_OVERLAPPING = 200
/** ...and work done: a quiet or dead run cannot pass. */
const MIN_OK_OPS = 2_000

describe('linearizability of three member processes under kills, pauses and partitions (porcupine)', () => {
  const dir = join(tmpdir(), `metastore-jepsen-processes-${randomUUID()}`)
  // Go builds tools/lincheck once for the file; without Go the test fails, it is never skipped.
  beforeAll(async () => {
    mkdirSync(dir, { mode: 0o700 })
    await buildChecker()
  }, 180_000)
  afterAll(() => {
    removeChecker()
    rmSync(dir, { recursive: true, force: true })
  })

  it(`${CLIENTS} clients for ${SECONDS} s: linearizable, unknown and trusted; every fault kind fired and was felt`, async () => {
    const report = await runProcessJepsen({
      dataDir: join(dir, 'group'),
      seconds: SECONDS,
      clients: CLIENTS,
      holdMs: HOLD_MS,
      pauseMs: PAUSE_MS,
      quietMs: QUIET_MS,
    })
    console.log(report.summary)

    expect(report.verdict.ok, `not linearizable (seed ${report.seed}):\n${report.verdict.message}`).toBe(true)
    const { faults, counts, errors } = report.nemesis
    expect(errors, 'faults that did not show, or healing that failed').toEqual([])
    for (const kind of PROCESS_FAULT_KINDS) {
      expect(counts[kind] ?? 0, `${kind} faults applied: ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(1)
      expect(report.byKind[kind]?.overlapping ?? 0, `operations in flight during ${kind}`).toBeGreaterThan(0)
    }
    // Each kill ended a process by SIGKILL and brought it back; each pause was seen in /proc.
    for (const f of faults.filter((f) => f.kind === 'kill')) {
      expect(f.evidence, `kill of member ${f.nodes[0]}`).toEqual([
        expect.stringContaining('exited by SIGKILL'),
        expect.stringContaining('restarted as pid'),
      ])
    }
    for (const f of faults.filter((f) => f.kind === 'pause')) {
      expect(f.evidence, `pause of member ${f.nodes[0]}`).toEqual([expect.stringContaining('seen stopped')])
    }
    // Each membership change happened: the group answered each step with the members after it.
    for (const f of faults.filter((f) => f.kind === 'membership')) {
      const id = f.nodes[0]
      expect(f.evidence, `membership change of member ${id}`).toEqual([
        expect.stringMatching(new RegExp(`added as a learner: .*\\b${id}:learner`)),
        expect.stringMatching(new RegExp(`promoted: .*\\b${id}:voter`)),
        expect.stringMatching(/removed: \S+:voter \S+:voter \S+:voter$/),
      ])
    }
    // Partitions were felt by the clients, and the majority elected around a cut-off leader.
    for (const kind of ['isolate-leader', 'isolate-follower', 'cut-link'] as const) {
      expect(report.byKind[kind]?.failed ?? 0, `operations that failed during ${kind}`).toBeGreaterThan(0)
    }
    const elections = faults.filter((f) => f.kind === 'isolate-leader' && f.evidence.some((e) => e.includes('elected')))
    expect(elections.length, 'isolate-leader faults during which the majority elected a leader').toBeGreaterThan(0)
    // Requests in flight when a member was killed end with an unknown outcome (writes) and are in the history.
    expect(report.exited.total, 'requests in flight at a kill').toBeGreaterThan(0)
    expect(report.exited.unknownWrites).toBe(report.exited.writes)

    expect(report.overlapping, 'operations that overlapped a fault').toBeGreaterThanOrEqual(MIN_OVERLAPPING)
    expect(report.ops.ok, 'operations that succeeded').toBeGreaterThanOrEqual(MIN_OK_OPS)
    expect(report.hung, 'requests that never settled').toBe(0)
  }, 150_000)
})
