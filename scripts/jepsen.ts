// `npm run test:jepsen -- --seconds 300`: the linearizability test of
// __test__/jepsen.spec.ts, run longer, for changes to the node; with
// `--processes`, that of __test__/multiprocess-jepsen.spec.ts (three member
// processes, SIGKILL, SIGSTOP and proxy partitions). Same harness
// (__test__/jepsen/); exits 1 when a history is not linearizable (its path and
// porcupine's visualization are printed) or when the run was too quiet to tell.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { Command, InvalidArgumentError, Option } from 'commander'

import { buildChecker } from '../__test__/jepsen/lincheck.js'
import type { RunOptions, RunReport } from '../__test__/jepsen/phases.js'
import { PROCESS_FAULT_KINDS } from '../__test__/jepsen/process-nemesis.js'
import { runProcessJepsen, type ProcessJepsenReport } from '../__test__/jepsen/process-run.js'
import { runJepsen, type JepsenReport } from '../__test__/jepsen/run.js'
import type { Engine } from '../ts/index.js'

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

function seedArg(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 31) throw new InvalidArgumentError('must be an integer in [0, 2^31)')
  return n
}

interface Options {
  seconds: number
  engine: Engine | 'both'
  clients: number
  keys: number
  seed?: number
  checkTimeout: number
  keep: boolean
  processes: boolean
}

/** What makes any run count as a test: operations across the faults, work done, nothing left hanging. */
function loadShortfalls(r: RunReport): string[] {
  const out: string[] = []
  if (r.overlapping < 50) out.push(`only ${r.overlapping} operations overlapped a fault`)
  if (r.ops.ok < 80 * (r.loadMs / 1000)) out.push(`only ${r.ops.ok} operations succeeded`)
  if (r.hung > 0) out.push(`${r.hung} requests never settled`)
  return out
}

/** What makes a run count as a test at all, scaled to its length. */
function shortfalls(r: JepsenReport): string[] {
  const seconds = r.loadMs / 1000
  const out: string[] = []
  const kinds = Object.keys(r.nemesis.counts).length
  const minFaults = Math.max(2, Math.floor(seconds / 5))
  if (r.nemesis.faults.length < minFaults) out.push(`only ${r.nemesis.faults.length} faults applied (< ${minFaults})`)
  if (kinds < 2) out.push(`faults of only ${kinds} kind(s)`)
  out.push(...loadShortfalls(r))
  if (r.nemesis.errors.length > 0) out.push(`the nemesis could not heal: ${r.nemesis.errors.join('; ')}`)
  return out
}

/** The same for a run over processes: every kind of fault applied, and each partition felt by the clients. */
function processShortfalls(r: ProcessJepsenReport): string[] {
  const seconds = r.loadMs / 1000
  const out: string[] = []
  const minFaults = Math.max(PROCESS_FAULT_KINDS.length, Math.floor(seconds / 5))
  if (r.nemesis.faults.length < minFaults) out.push(`only ${r.nemesis.faults.length} faults applied (< ${minFaults})`)
  for (const kind of PROCESS_FAULT_KINDS) {
    const figures = r.byKind[kind]
    if (figures === undefined) out.push(`no ${kind} fault applied`)
    else if (kind !== 'kill' && kind !== 'pause' && figures.failed === 0) out.push(`no operation failed during ${kind}`)
  }
  if (r.exited.total === 0) out.push('no request was in flight when a member was killed')
  out.push(...loadShortfalls(r))
  if (r.nemesis.errors.length > 0) out.push(`the nemesis: ${r.nemesis.errors.join('; ')}`)
  return out
}

/** The options both kinds of run take from the command line. */
function runOptions(opts: Options): RunOptions {
  return { seconds: opts.seconds, clients: opts.clients, keys: opts.keys, seed: opts.seed, checkTimeoutS: opts.checkTimeout, keep: opts.keep }
}

/** Prints a run's summary and what fails it; 1 when its history is not linearizable or the run too quiet to tell, else 0. */
function judge(label: string, report: RunReport, quiet: string[], keep: boolean): number {
  console.log(report.summary)
  if (keep) console.log(`history kept: ${report.verdict.history}`)
  let status = 0
  if (!report.verdict.ok) {
    console.error(`NOT LINEARIZABLE (${label}, seed ${report.seed}):\n${report.verdict.message}`)
    status = 1
  }
  for (const s of quiet) {
    console.error(`too quiet to tell (${label}): ${s}`)
    status = 1
  }
  return status
}

async function mainProcesses(opts: Options): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), 'metastore-jepsen-processes-'))
  try {
    console.log(`processes: ${opts.clients} clients on 3 member processes, ${opts.seconds} s of load under the nemesis ...`)
    const report = await runProcessJepsen({ ...runOptions(opts), dataDir })
    return judge('processes', report, processShortfalls(report), opts.keep)
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

async function main(opts: Options): Promise<number> {
  await buildChecker()
  if (opts.processes) return mainProcesses(opts)
  const engines: Engine[] = opts.engine === 'both' ? ['memory', 'rocksdb'] : [opts.engine]
  let status = 0
  for (const engine of engines) {
    const dataDir = mkdtempSync(join(tmpdir(), 'metastore-jepsen-data-'))
    try {
      console.log(`${engine}: ${opts.clients} clients, ${opts.seconds} s of load under the nemesis ...`)
      const report = await runJepsen({ ...runOptions(opts), engine, dataDir: engine === 'rocksdb' ? dataDir : undefined })
      if (judge(engine, report, shortfalls(report), opts.keep) !== 0) status = 1
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
  return status
}

new Command()
  .name('test:jepsen')
  .description('Clients on every node of a 3-node LocalCluster under a nemesis; the history checked for linearizability with porcupine')
  .option('-s, --seconds <n>', 'seconds of load per engine', positiveInt, 60)
  .addOption(new Option('-e, --engine <engine>', 'storage engine').choices(['memory', 'rocksdb', 'both']).default('both'))
  .option('-c, --clients <n>', 'clients, bound to nodes 1, 2, 3, 1, ...', positiveInt, 9)
  .option('-k, --keys <n>', 'keys the clients share', positiveInt, 4)
  .option('--seed <n>', 'seed of the clients and the nemesis (default random; printed)', seedArg)
  .option('--check-timeout <s>', 'seconds each porcupine check may take', positiveInt, 600)
  .option('--keep', 'keep the history even when it is linearizable', false)
  .addOption(
    new Option('--processes', 'three member processes (RocksDB) under SIGKILL, SIGSTOP and proxy partitions, instead of a LocalCluster')
      .default(false)
      .conflicts('engine'),
  )
  .action(async (opts: Options) => {
    process.exitCode = await main(opts)
  })
  .parseAsync()
  .catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err)
    process.exitCode = 1
  })
