// Runs tools/lincheck (porcupine) on a recorded history: builds it once per
// process with the Go toolchain, then checks the history twice — once taking
// every failed write as unknown, once trusting the outcomes the errors report.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import type { HistoryRecorder } from './history.js'

const ROOT = resolve(__dirname, '..', '..')
const SOURCE = join(ROOT, 'tools', 'lincheck')

export type CheckMode = 'unknown' | 'trusted'

/** tools/lincheck's summary line, and what the harness adds. */
export interface CheckResult {
  mode: CheckMode
  /** 'linearizable' | 'not linearizable' | 'timed out'. */
  result: string
  linearizable: boolean
  operations: number
  unknown: number
  leftOut: number
  /** porcupine's visualization, written when the history is not linearizable. */
  html?: string
  ms: number
}

export interface Verdict {
  ok: boolean
  /** The directory holding the history (and the visualizations on failure). */
  dir: string
  history: string
  checks: CheckResult[]
  /** One line per check; on failure, names the files to open. */
  message: string
}

/** The go command: $GO, then `go` on PATH, then Go's default install location. */
function findGo(): string | undefined {
  const candidates = [process.env.GO, 'go', '/usr/local/go/bin/go'].filter((c): c is string => !!c)
  for (const c of candidates) {
    const r = spawnSync(c, ['version'], { stdio: 'ignore' })
    if (!r.error && r.status === 0) return c
  }
  return undefined
}

let built: Promise<string> | undefined
let binDir: string | undefined

/**
 * Builds tools/lincheck into a temporary directory, once per process; the
 * binary is removed when the process exits. Rejects with a message saying
 * what to install when Go is missing: the check never silently passes.
 */
export function buildChecker(): Promise<string> {
  built ??= new Promise<string>((resolvePath, reject) => {
    const go = findGo()
    if (go === undefined) {
      const ci = process.env.CI === 'true' ? ' (CI=true: the linearizability test must run here, it is not skipped)' : ''
      reject(
        new Error(
          `the linearizability check needs the Go toolchain${ci}: no \`go\` on PATH nor at /usr/local/go/bin/go. ` +
            'Install Go >= 1.22 (https://go.dev/dl/) or set GO to the go command; it builds tools/lincheck (porcupine).',
        ),
      )
      return
    }
    binDir = mkdtempSync(join(tmpdir(), 'metastore-lincheck-'))
    process.once('exit', removeChecker)
    const out = join(binDir, process.platform === 'win32' ? 'lincheck.exe' : 'lincheck')
    const child = spawn(go, ['-C', SOURCE, 'build', '-o', out, '.'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (code) => {
      if (code === 0 && existsSync(out)) resolvePath(out)
      else reject(new Error(`go build of tools/lincheck failed (exit ${code}):\n${stderr}`))
    })
  })
  return built
}

/** Removes the built checker (a test runner's worker may end without an 'exit' event). */
export function removeChecker(): void {
  if (binDir !== undefined) rmSync(binDir, { recursive: true, force: true })
  binDir = undefined
  built = undefined
}

function run(
  bin: string,
  args: string[],
): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now()
  return new Promise((resolveRun, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (status, signal) => resolveRun({ status, signal, stdout, stderr, ms: Date.now() - started }))
  })
}

async function checkOnce(bin: string, history: string, dir: string, mode: CheckMode, timeoutS: number): Promise<CheckResult> {
  const html = join(dir, `${mode}.html`)
  const r = await run(bin, ['-history', history, '-mode', mode, '-html', html, '-timeout', `${timeoutS}s`])
  if (r.signal !== null) {
    throw new Error(
      `lincheck -mode ${mode} was killed by ${r.signal} on ${history}` +
        (r.signal === 'SIGKILL' ? ' (out of memory? porcupine needs memory in the square of the operations per key)' : ''),
    )
  }
  if (r.status !== 0 && r.status !== 1 && r.status !== 3) {
    throw new Error(`lincheck -mode ${mode} failed on ${history} (exit ${r.status}): ${r.stderr.trim()}`)
  }
  const line = r.stdout.trim().split('\n').pop() ?? ''
  let summary: Omit<CheckResult, 'linearizable' | 'ms'>
  try {
    summary = JSON.parse(line)
  } catch {
    throw new Error(`lincheck -mode ${mode} printed no summary (exit ${r.status}): ${r.stdout}${r.stderr}`)
  }
  return { ...summary, mode, linearizable: r.status === 0, ms: r.ms }
}

export interface CheckOptions {
  /** A label for the directory name (engine, ...). */
  label: string
  /** How long each check may take, seconds (lincheck's -timeout). */
  timeoutS?: number
  /** Keep the history directory even when both checks pass. */
  keep?: boolean
}

/**
 * Writes the history to a new temporary directory and checks it in both
 * modes. When both say linearizable the directory is removed (unless `keep`);
 * otherwise it stays, with porcupine's visualizations, and `message` names it.
 */
export async function checkHistory(recorder: HistoryRecorder, opts: CheckOptions): Promise<Verdict> {
  const bin = await buildChecker()
  const dir = mkdtempSync(join(tmpdir(), `metastore-jepsen-${opts.label}-`))
  const history = join(dir, 'history.jsonl')
  writeFileSync(history, recorder.toJsonLines())
  const timeoutS = opts.timeoutS ?? 60
  const checks: CheckResult[] = []
  for (const mode of ['unknown', 'trusted'] as const) checks.push(await checkOnce(bin, history, dir, mode, timeoutS))
  const ok = checks.every((c) => c.linearizable)
  const lines = checks.map(
    (c) =>
      `${c.mode}: ${c.result} (${c.operations} ops, ${c.unknown} unknown, ${c.leftOut} left out, ${c.ms} ms)` +
      (c.html !== undefined ? `, visualization ${c.html}` : ''),
  )
  if (ok && !opts.keep) rmSync(dir, { recursive: true, force: true })
  const message = ok ? lines.join('; ') : `history ${history}\n${lines.join('\n')}`
  return { ok, dir, history, checks, message }
}
