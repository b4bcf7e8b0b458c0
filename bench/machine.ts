import { spawnSync } from 'node:child_process'
import { closeSync, fdatasyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import os from 'node:os'
import { join, resolve } from 'node:path'

export interface MachineInfo {
  cpus: number
  cpuModel: string
  memoryGiB: number
  platform: string
  kernel: string
  node: string
  v8: string
  commit: string
  /** Files changed but not committed when the run started (earlier reports in bench/results aside). */
  dirty: boolean
  /**
   * Where data dirs live, its file system, and how long a 4 KiB write +
   * fdatasync takes there: rewriting blocks the file already has
   * (`fsync*`), and appending (`appendFsync*`, what a write-ahead log does;
   * growing the file makes the file system commit its journal too). Reports
   * written before the append probe existed lack it.
   */
  dataDir: {
    path: string
    fileSystem: string
    fsyncP50Ms: number
    fsyncP99Ms: number
    appendFsyncP50Ms?: number
    appendFsyncP99Ms?: number
  }
  /**
   * How busy the CPUs were (0..1, all CPUs) in the second before the first
   * scenario, and the 1-minute load average then: other work on the machine
   * disturbs every figure.
   */
  busyBefore: { cpuShare: number; loadAverage: number }
}

function git(args: string[]): string {
  const r = spawnSync('git', args, { encoding: 'utf8', cwd: resolve(__dirname, '..') })
  return r.status === 0 ? r.stdout.trim() : ''
}

/** The file system type of the mount that holds `path` (Linux; 'unknown' elsewhere). */
function fileSystemOf(path: string): string {
  try {
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' '))
      .filter((f) => f.length > 2)
    const best = mounts
      .filter(([, mount]) => path === mount || path.startsWith(mount.endsWith('/') ? mount : `${mount}/`))
      .sort((a, b) => b[1].length - a[1].length)[0]
    return best ? `${best[2]} (${best[0]} on ${best[1]})` : 'unknown'
  } catch {
    return 'unknown'
  }
}

/**
 * The floor under any synced write on this disk: each fsync-per-Ready
 * system (RocksDB with sync on, etcd) pays at least this per round.
 * `append` grows the file with every write, as a write-ahead log does;
 * otherwise the probe rewrites the same 16 blocks.
 */
export function probeFsync(dir: string, mode: 'rewrite' | 'append', rounds = 200): { p50Ms: number; p99Ms: number } {
  const file = join(dir, `fsync-probe-${mode}`)
  const fd = openSync(file, 'w')
  const block = Buffer.alloc(4096, 7)
  const times: number[] = []
  try {
    for (let i = 0; i < rounds; i++) {
      const t = performance.now()
      writeSync(fd, block, 0, block.length, (mode === 'append' ? i : i % 16) * block.length)
      fdatasyncSync(fd)
      times.push(performance.now() - t)
    }
  } finally {
    closeSync(fd)
    rmSync(file, { force: true })
  }
  times.sort((a, b) => a - b)
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]
  return { p50Ms: at(0.5), p99Ms: at(0.99) }
}

export function machineInfo(dataDir: string): MachineInfo {
  const cpus = os.cpus()
  const fsync = probeFsync(dataDir, 'rewrite')
  const append = probeFsync(dataDir, 'append')
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
    node: process.version,
    v8: process.versions.v8,
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    // Reports written by earlier runs are not changes to what is measured.
    dirty: git(['status', '--porcelain', '--untracked-files=no', '--', '.', ':(exclude)bench/results']) !== '',
    dataDir: {
      path: dataDir,
      fileSystem: fileSystemOf(dataDir),
      fsyncP50Ms: fsync.p50Ms,
      fsyncP99Ms: fsync.p99Ms,
      appendFsyncP50Ms: append.p50Ms,
      appendFsyncP99Ms: append.p99Ms,
    },
    busyBefore: { cpuShare: NaN, loadAverage: os.loadavg()[0] },
  }
}

/** Cumulative busy and total CPU time of the machine (all CPUs, in /proc/stat ticks). */
export function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    const total = fields.reduce((a, b) => a + b, 0)
    const idle = fields[3] + (fields[4] ?? 0) // idle + iowait
    return { busy: total - idle, total }
  } catch {
    return undefined
  }
}

/** Share of all CPUs (0..1) busy during the next `ms`, from /proc/stat; NaN where that is not available. */
export async function cpuBusyShare(ms = 1_000): Promise<number> {
  const a = cpuTimes()
  await new Promise((resolve) => setTimeout(resolve, ms))
  const b = cpuTimes()
  if (!a || !b || b.total === a.total) return NaN
  return (b.busy - a.busy) / (b.total - a.total)
}
