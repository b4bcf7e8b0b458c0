// `metastore` commands (ts/cli.ts) run as their own processes, as a user runs
// them: `serve` kept running and watched through its log lines, `status` run
// to its end.
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'

import type { Exit } from './processes.js'

const ROOT = join(__dirname, '..', '..')
const CLI = join(ROOT, 'ts', 'cli.ts')

/** A `metastore` command run as its own process, its output kept line by line. */
export class CliProcess {
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<Exit>
  readonly #child: ChildProcess
  readonly #listeners = new Set<() => void>()

  constructor(args: string[]) {
    this.#child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let buffered = ''
    this.#child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      this.lines.push(...lines)
      for (const listener of this.#listeners) listener()
    })
    this.#child.stderr!.on('data', (chunk: Buffer) => void (this.stderr += chunk.toString()))
    this.exited = new Promise((resolve) => this.#child.once('exit', (code, signal) => resolve({ code, signal })))
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null
  }

  /** The first line from index `from` on that matches `pattern`, once printed. */
  line(pattern: RegExp, timeoutMs = 30_000, from = 0): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = this.lines.slice(from).find((l) => pattern.test(l))
        if (found === undefined) return
        done()
        resolve(found)
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; output:\n${this.lines.join('\n')}\n${this.stderr}`))
      }, timeoutMs)
      const done = (): void => {
        clearTimeout(timer)
        this.#listeners.delete(check)
      }
      this.#listeners.add(check)
      check()
    })
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.#child.kill(signal)
  }
}

/** Runs a `metastore` command to its end. */
export async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new CliProcess(args)
  const { code } = await p.exited
  return { code, stdout: p.lines.join('\n'), stderr: p.stderr }
}
