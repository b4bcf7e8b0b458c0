#!/usr/bin/env node
/**
 * The scenario runner behind `npm run bench`: MetaStore (memory and RocksDB,
 * batch on and off, in this process or as three member processes) and etcd
 * 3.4 under the same load shapes, side by side in one run, written to
 * bench/results/<date>.{json,md,svg}. See bench/README.md.
 *
 *   npx tsx bench/run.ts [--quick] [--runs 3] [--duration 5] [--scenarios memory,etcd/3-node]
 *
 * A benchmark never fails CI: a scenario that errors is recorded in the
 * report and the runner still exits 0.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'

import { MultiBar, Presets, type SingleBar } from 'cli-progress'
import { Command, InvalidArgumentError } from 'commander'

import { renderChart } from './chart.js'
import { onCleanup } from './cleanup.js'
import { describeError } from './load.js'
import { cpuBusyShare, machineInfo } from './machine.js'
import { renderMarkdown } from './markdown.js'
import { measure, type LiveStatus, type MeasureOptions, type RunOutcome } from './measure.js'
import { checkTargets, fmt, newScenarioReport, summarize, type Report, type ScenarioReport } from './report.js'
import { planScenarios, type Scenario } from './scenarios.js'
import { ETCD_INSTALL_HINT, etcdArgs, findEtcd } from './systems/etcd.js'
import { loadMetaStore } from './systems/metastore.js'
import { KEY_BYTES, VALUE_BYTES, Workload } from './workload.js'

const REPO = resolve(__dirname, '..')

interface Flags {
  quick?: boolean
  runs?: number
  duration?: number
  warmup?: number
  drain: number
  scenarios?: string
  out: string
  etcd: string | boolean
  tmp: string
  latest?: boolean
  list?: boolean
  render?: string
}

function positive(name: string, integer: boolean) {
  return (raw: string) => {
    const n = Number(raw)
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`${name} must be a positive ${integer ? 'integer' : 'number'}`)
    }
    return n
  }
}

function parseFlags(argv: string[]): Flags {
  return new Command('bench/run.ts')
    .description('MetaStore scenario benchmark, with etcd side by side. Writes bench/results/<date>.{json,md,svg}.')
    .option('--quick', 'smoke run under 2 minutes: 1 run, 1 s windows, 3 load points, every system')
    .option('--runs <n>', 'runs per scenario; figures are medians (default 3, quick 1)', positive('--runs', true))
    .option('--duration <s>', 'measured seconds per run (default 5, quick 1)', positive('--duration', false))
    .option('--warmup <s>', 'unrecorded warm-up seconds before each window (default 1, quick 0.3)', positive('--warmup', false))
    .option('--drain <s>', 'seconds to wait for puts still in flight after a window', positive('--drain', false), 10)
    .option('--scenarios <patterns>', 'comma-separated ids or globs, e.g. "memory", "*/c256", "rocksdb/batch-on/high"; --list shows them')
    .option('--out <dir>', 'where reports go', join(REPO, 'bench', 'results'))
    .option('--etcd <path>', 'etcd binary (default /usr/bin/etcd, then etcd on PATH)', true)
    .option('--no-etcd', 'skip the etcd scenarios')
    .option('--tmp <dir>', 'parent of the temporary data dirs (its disk sets the fsync cost)', tmpdir())
    .option('--latest', 'also copy the report to latest.{json,md,svg} (default: on for full runs, off for --quick or --scenarios)')
    .option('--no-latest', 'do not touch latest.{json,md,svg}')
    .option('--list', 'print the scenario ids and exit')
    .option('--render <report.json>', 'rewrite the .md and .svg beside an existing report from its JSON, then exit')
    .parse(argv)
    .opts<Flags>()
}

/** Progress bars on a terminal; plain lines otherwise (CI logs). */
class Ui {
  readonly #bars: MultiBar | undefined
  #overall: SingleBar | undefined
  #current: SingleBar | undefined
  #timer: NodeJS.Timeout | undefined

  constructor() {
    if (process.stderr.isTTY) {
      this.#bars = new MultiBar(
        { hideCursor: true, clearOnComplete: false, autopadding: true, format: '{bar} {value}/{total} {label}' },
        Presets.shades_classic,
      )
    }
  }

  start(total: number): void {
    this.#overall = this.#bars?.create(total, 0, { label: 'scenario runs' })
    this.#current = this.#bars?.create(100, 0, { label: '' }, { format: '{bar} {label}' })
  }

  /** Follows one scenario run until `stop()`. */
  follow(title: string, live: LiveStatus): void {
    if (!this.#current) return
    clearInterval(this.#timer)
    const update = () => {
      const elapsed = performance.now() - live.phaseStartedAt
      const pct = live.phaseMs > 0 ? Math.min(100, (elapsed / live.phaseMs) * 100) : 0
      const counts = live.phase === 'measure' ? ` | ${live.acked.toLocaleString('en-US')} acked, ${live.errors} failed` : ''
      this.#current!.update(pct, { label: `${title} | ${live.phase}${counts}` })
    }
    update()
    this.#timer = setInterval(update, 250)
  }

  done(): void {
    clearInterval(this.#timer)
    this.#overall?.increment()
  }

  log(line: string): void {
    if (this.#bars) this.#bars.log(`${line}\n`)
    else console.log(line)
  }

  stop(): void {
    clearInterval(this.#timer)
    this.#bars?.stop()
  }
}

function summaryLine(s: Scenario, run: number, runs: number, outcome: RunOutcome): string {
  const head = `${s.id} run ${run}/${runs}:`
  if (!outcome.ok) return `${head} ERROR ${outcome.error}`
  const f = outcome.figures
  const batch = f.avgBatchSize !== undefined ? `, batch ${fmt.num(f.avgBatchSize)}` : ''
  const failed = f.errors > 0 ? `, ${f.errors} failed (${f.errorSamples[0]})` : ''
  const t = f.transportPerOp
  const sent = t
    ? `, ${fmt.rate(t.bytesSent)} B${t.messagesSent !== undefined ? ` / ${fmt.num(t.messagesSent, 2)} msgs` : ''} sent per put`
    : ''
  const notes = (f.notes ?? []).map((n) => `, ${n}`).join('')
  const others = f.othersCpuCores > 0.25 ? `, other processes used ${f.othersCpuCores.toFixed(2)} cores` : ''
  return (
    `${head} ${fmt.rate(f.throughput)} puts/s, p50 ${fmt.ms(f.latency.p50Ms)} ms, p99 ${fmt.ms(f.latency.p99Ms)} ms, ` +
    `p99.9 ${fmt.ms(f.latency.p999Ms)} ms${batch}, ${fmt.num(f.cpuUsPerOp, 0)} µs CPU/put${sent}${failed}${notes}${others}`
  )
}

function stamp(d: Date): string {
  return d.toISOString().slice(0, 19).replaceAll(':', '-')
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv)
  const quick = flags.quick === true
  const runs = flags.runs ?? (quick ? 1 : 3)
  const durationMs = (flags.duration ?? (quick ? 1 : 5)) * 1000
  const warmupMs = (flags.warmup ?? (quick ? 0.3 : 1)) * 1000
  const drainMs = flags.drain * 1000
  const scenarios = planScenarios({ quick, scenarios: flags.scenarios })

  if (flags.render !== undefined) {
    const file = resolve(flags.render)
    const report = JSON.parse(readFileSync(file, 'utf8')) as Report
    const base = file.replace(/\.json$/, '')
    const name = base.slice(dirname(base).length + 1)
    writeFileSync(`${base}.md`, renderMarkdown(report, `${name}.svg`))
    writeFileSync(`${base}.svg`, renderChart(report))
    console.log(`Rewrote ${relative(process.cwd(), base)}.{md,svg}`)
    return
  }
  if (flags.list) {
    for (const s of scenarios) console.log(s.id)
    return
  }
  if (scenarios.length === 0) {
    console.log(`No scenario matches --scenarios ${flags.scenarios}; --list shows the ids. Nothing to do.`)
    return
  }

  const tmpRoot = mkdtempSync(join(flags.tmp, 'metastore-bench-'))
  onCleanup(() => rmSync(tmpRoot, { recursive: true, force: true }))
  const runtimeNotes: string[] = []
  process.on('unhandledRejection', (err) => runtimeNotes.push(`unhandled rejection: ${describeError(err)}`))

  const date = new Date()
  const machine = machineInfo(tmpRoot)
  machine.busyBefore.cpuShare = await cpuBusyShare()
  const busy = machine.busyBefore.cpuShare > 0.15
  const busyNote =
    `The machine was busy before the run: ${(machine.busyBefore.cpuShare * 100).toFixed(0)}% of ${machine.cpus} CPUs in use ` +
    `(1-minute load average ${machine.busyBefore.loadAverage.toFixed(2)}); other processes shared the CPUs, so every figure here is disturbed.`
  if (busy) console.log(`Note: ${busyNote}`)

  // etcd: skip only the etcd half when it is missing.
  const notes: string[] = []
  let etcdSkip: string | undefined
  const etcd = flags.etcd === false ? undefined : findEtcd(typeof flags.etcd === 'string' ? flags.etcd : undefined)
  if (flags.etcd === false) etcdSkip = 'disabled with --no-etcd'
  else if (!etcd) {
    etcdSkip = 'etcd not installed'
    const where = typeof flags.etcd === 'string' ? flags.etcd : '/usr/bin/etcd or PATH'
    const message = `etcd not found (${where}): the etcd scenarios are skipped. Install it with: ${ETCD_INSTALL_HINT}`
    notes.push(message)
    if (scenarios.some((s) => s.system.kind === 'etcd')) console.log(message)
  }

  // MetaStore: skip only the MetaStore half when the package (its native addon) does not load.
  let metastoreSkip: string | undefined
  let metastoreConfig: unknown
  if (scenarios.some((s) => s.system.kind === 'metastore')) {
    try {
      metastoreConfig = (await loadMetaStore()).defaultConfig()
    } catch (err) {
      metastoreSkip = 'native addon not built'
      const message = `MetaStore scenarios skipped: the package did not load (${describeError(err).split('\n')[0]}); build it with npm run build`
      notes.push(message)
      console.log(message)
    }
  }

  const reports: ScenarioReport[] = scenarios.map((s) =>
    newScenarioReport(s, s.system.kind === 'etcd' ? etcdSkip : metastoreSkip),
  )
  const runnable = scenarios.filter((_, i) => reports[i].skipped === undefined)
  const options: MeasureOptions = { durationMs, warmupMs, drainMs, tmpRoot, etcdBinary: etcd?.binary, workload: new Workload() }

  const perRun = (durationMs + warmupMs) / 1000 + 1.5
  console.log(
    `${runnable.length} scenario(s) × ${runs} run(s), ${durationMs / 1000} s each after ${warmupMs / 1000} s warm-up ` +
      `(about ${Math.ceil((runnable.length * runs * perRun) / 60)} min); data dirs under ${tmpRoot}`,
  )
  const ui = new Ui()
  ui.start(runnable.length * runs)
  const live: LiveStatus = { acked: 0, errors: 0, phase: 'start', phaseStartedAt: performance.now(), phaseMs: 0 }
  // Runs are interleaved (every scenario once, then again) so slow drift on the machine spreads over all of them.
  for (let run = 1; run <= runs; run++) {
    for (const s of runnable) {
      ui.follow(`${s.id} run ${run}/${runs}`, live)
      const outcome = await measure(s, options, live)
      reports[scenarios.indexOf(s)].runs.push(outcome)
      ui.done()
      ui.log(summaryLine(s, run, runs, outcome))
    }
  }
  ui.stop()

  if (busy) notes.push(busyNote)
  summarize(reports)
  const etcdArgsBySystem: Record<string, string[][]> = {}
  if (etcd) {
    for (const nodes of [1, 3]) {
      const members = Array.from({ length: nodes }, (_, i) => ({
        name: `n${i + 1}`,
        clientUrl: `http://127.0.0.1:<client-port-${i + 1}>`,
        peerUrl: `http://127.0.0.1:<peer-port-${i + 1}>`,
        dataDir: `<tmp>/n${i + 1}`,
        stderr: '',
      }))
      const initial = members.map((m) => `${m.name}=${m.peerUrl}`).join(',')
      etcdArgsBySystem[`etcd/${nodes}-node`] = members.map((m) => etcdArgs(m, initial, 'metastore-bench-<random>'))
    }
  }
  const report: Report = {
    schema: 1,
    date: date.toISOString(),
    quick,
    command: ['npx tsx bench/run.ts', ...process.argv.slice(2)].join(' '),
    options: { runs, durationMs, warmupMs, drainMs, ...(flags.scenarios !== undefined && { scenarios: flags.scenarios }) },
    machine,
    etcd: etcd
      ? { available: true, binary: etcd.binary, version: etcd.version, args: etcdArgsBySystem }
      : { available: false, note: etcdSkip },
    workload: { keyBytes: KEY_BYTES, valueBytes: VALUE_BYTES, keySpace: options.workload.keys.length, nodes: 3 },
    metastoreConfig,
    scenarios: reports,
    targets: checkTargets(reports),
    notes: [...notes, ...runtimeNotes],
  }

  const out = resolve(flags.out)
  mkdirSync(out, { recursive: true })
  const base = join(out, `${stamp(date)}${quick ? '-quick' : ''}`)
  writeFileSync(`${base}.json`, `${JSON.stringify(report, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`)
  writeFileSync(`${base}.md`, renderMarkdown(report, `${base.slice(out.length + 1)}.svg`))
  writeFileSync(`${base}.svg`, renderChart(report))
  const latest = flags.latest ?? (!quick && flags.scenarios === undefined)
  if (latest) {
    copyFileSync(`${base}.json`, join(out, 'latest.json'))
    writeFileSync(join(out, 'latest.md'), renderMarkdown(report, 'latest.svg'))
    copyFileSync(`${base}.svg`, join(out, 'latest.svg'))
  }

  const failed = reports.filter((r) => r.runs.some((x) => !x.ok))
  console.log('')
  for (const t of report.targets.filter((t) => t.met !== null)) console.log(`${t.met ? 'met    ' : 'NOT MET'}  ${t.target}: ${t.measured} (goal ${t.goal})`)
  if (failed.length > 0) console.log(`\n${failed.length} scenario(s) had errors (recorded in the report): ${failed.map((r) => r.id).join(', ')}`)
  const shown = relative(process.cwd(), base) || base
  console.log(`\nReport: ${shown}.{json,md,svg}${latest ? ` (also ${relative(process.cwd(), join(out, 'latest')) || 'latest'}.*)` : ''}`)
}

main()
  .catch((err) => {
    // A benchmark never fails CI: say what went wrong and exit 0.
    console.log(`bench runner error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  })
  .finally(() => process.exit(0))
