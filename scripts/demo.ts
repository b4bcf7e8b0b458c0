// `npm start` in a clone: a LocalCluster under a mixed load, with a progress
// bar and a summary. Run by tsx from the sources; it is not part of the
// published package, so its progress bar and histogram stay dev dependencies.
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'

import { SingleBar, Presets } from 'cli-progress'
import { Command, InvalidArgumentError } from 'commander'
import * as hdr from 'hdr-histogram-js'

import { LocalCluster, type Engine, type MetaStore } from '../ts/index.js'

function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer')
  return n
}

interface DemoOptions {
  config: string
  seconds: number
  nodes: number
  inFlight: number
  engine?: Engine
  dataDir?: string
}

async function demo(opts: DemoOptions): Promise<void> {
  console.log(`Starting a ${opts.nodes}-node cluster (config ${opts.config}) ...`)
  const cluster = await LocalCluster.start({
    nodes: opts.nodes,
    config: opts.config,
    engine: opts.engine,
    dataDir: opts.dataDir,
  })
  try {
    const leader = await cluster.leader()
    const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
    const counts = { put: 0, get: 0, delete: 0, failed: 0 }
    const keys = Array.from({ length: 10_000 }, (_, i) => `key-${String(i).padStart(12, '0')}`)
    const value = randomBytes(100)
    const durationMs = opts.seconds * 1000
    const bar = new SingleBar(
      { format: ' {bar} {percentage}% | {ops} ops | {rate} ops/s | elapsed {duration}s', hideCursor: true },
      Presets.shades_classic,
    )
    const start = performance.now()
    const deadline = start + durationMs
    bar.start(100, 0, { ops: 0, rate: 0 })
    const ticker = setInterval(() => {
      const elapsed = performance.now() - start
      const ops = counts.put + counts.get + counts.delete
      bar.update(Math.min(100, Math.round((elapsed / durationMs) * 100)), { ops, rate: Math.round(ops / (elapsed / 1000)) })
    }, 200)

    // Each worker keeps one request in flight: 70% put, 20% get, 10% delete.
    const worker = async (node: MetaStore, first: number): Promise<void> => {
      let i = first
      while (performance.now() < deadline) {
        const key = keys[(i * 7919) % keys.length]
        const roll = i++ % 10
        const t0 = performance.now()
        try {
          if (roll < 7) {
            await node.put(key, value)
            counts.put++
          } else if (roll < 9) {
            await node.get(key)
            counts.get++
          } else {
            await node.delete(key)
            counts.delete++
          }
          histogram.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)))
        } catch {
          counts.failed++
        }
      }
    }
    await Promise.all(Array.from({ length: opts.inFlight }, (_, w) => worker(leader, w)))
    clearInterval(ticker)
    const elapsedS = (performance.now() - start) / 1000
    bar.update(100)
    bar.stop()

    const ops = counts.put + counts.get + counts.delete
    const stats = leader.stats()
    console.log()
    console.log(`Throughput     ${Math.round(ops / elapsedS).toLocaleString('en-US')} ops/s over ${elapsedS.toFixed(1)} s (${opts.inFlight} in flight)`)
    console.log(`Operations     ${counts.put} put, ${counts.get} get, ${counts.delete} delete, ${counts.failed} failed`)
    console.log(`Latency        p50 ${(histogram.getValueAtPercentile(50) / 1000).toFixed(2)} ms, p99 ${(histogram.getValueAtPercentile(99) / 1000).toFixed(2)} ms`)
    console.log(`Batching       avg batch size ${stats.batch.avgBatchSize.toFixed(1)} over ${stats.batch.totalBatches} batches (load ${stats.batch.currentLoad.toFixed(2)})`)
    console.log(`Leader         node ${stats.raft.leaderId}, term ${stats.raft.term}, engine ${stats.storage.engine}`)
    for (const id of cluster.ids()) {
      const s = cluster.node(id).stats().raft
      console.log(`  node ${id}  ${s.role.padEnd(9)} commit ${s.commitIndex}  applied ${s.appliedIndex}  last ${s.lastIndex}`)
    }
  } finally {
    await cluster.close()
  }
}

const program = new Command()
  .name('npm start --')
  .description('run a local MetaStore cluster under a mixed load and print a summary')
  .option('-c, --config <path>', 'YAML config file', 'configs/config.yaml')
  .option('-s, --seconds <n>', 'load duration in seconds', positiveInt, 5)
  .option('-n, --nodes <n>', 'number of nodes', positiveInt, 3)
  .option('-i, --in-flight <n>', 'requests in flight', positiveInt, 256)
  .option('-e, --engine <engine>', 'memory or rocksdb (overrides the config)')
  .option('-d, --data-dir <dir>', 'data directory (overrides the config)')
  .action(demo)

program.parseAsync().catch((err: unknown) => {
  console.error(err instanceof Error ? `${err.name}: ${err.message}` : err)
  process.exit(1)
})
