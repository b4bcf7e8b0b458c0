// The addon for x86-64 Linux is built for CPUs with SSE4.2 and PCLMULQDQ, so
// that RocksDB checksums its write-ahead log with the CPU's CRC32C
// instructions rather than with tables (docs/performance.md, "CRC32C"). Every
// x86-64 server CPU since 2010 has both. On an older one the addon could die
// of an illegal instruction while it loads; this refuses it first, by name.
import { readFileSync } from 'node:fs'

const NEEDED = ['sse4_2', 'pclmulqdq']

/** The features the x86-64 addon needs that a `/proc/cpuinfo` text lacks (none if it lists no flags). */
export function missingCpuFeatures(cpuinfo: string): string[] {
  const line = /^flags\s*:(.*)$/m.exec(cpuinfo)
  if (!line) return []
  const flags = new Set(line[1].trim().split(/\s+/))
  return NEEDED.filter((f) => !flags.has(f))
}

if (process.platform === 'linux' && process.arch === 'x64') {
  let cpuinfo = ''
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  } catch {
    // No procfs: let the loader try.
  }
  const missing = missingCpuFeatures(cpuinfo)
  if (missing.length > 0) {
    throw new Error(
      `MetaStore's addon for linux-x64 needs a CPU with SSE4.2 and PCLMULQDQ (x86-64 CPUs since 2010); ` +
        `this one lacks ${missing.join(' and ')} (/proc/cpuinfo)`,
    )
  }
}
