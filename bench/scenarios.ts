import type { Engine } from './systems/metastore.js'

/**
 * Where the load of a multi-process group comes from: `leader`, a load
 * generator inside the leader's process; `spread`, one in each member's
 * process, each against its own member (followers forward to the leader).
 */
export type Drivers = 'leader' | 'spread'

export type SystemSpec =
  | { kind: 'metastore'; id: string; label: string; engine: Engine; batch: boolean }
  | { kind: 'procs'; id: string; label: string; engine: Engine; batch: boolean; drivers: Drivers }
  | { kind: 'etcd'; id: string; label: string; nodes: 1 | 3; drivers: Drivers }

export type LoadSpec =
  | { id: string; label: string; mode: 'open'; rate: number }
  | { id: string; label: string; mode: 'closed'; concurrency: number }

export interface Scenario {
  /** `<system>/<load>`, e.g. `rocksdb/batch-on/high`; what `--scenarios` matches. */
  id: string
  system: SystemSpec
  load: LoadSpec
}

export const SYSTEMS: SystemSpec[] = [
  { kind: 'metastore', id: 'memory/batch-on', label: 'MetaStore memory, batch on', engine: 'memory', batch: true },
  { kind: 'metastore', id: 'memory/batch-off', label: 'MetaStore memory, batch off', engine: 'memory', batch: false },
  { kind: 'metastore', id: 'rocksdb/batch-on', label: 'MetaStore rocksdb (sync), batch on', engine: 'rocksdb', batch: true },
  { kind: 'metastore', id: 'rocksdb/batch-off', label: 'MetaStore rocksdb (sync), batch off', engine: 'rocksdb', batch: false },
  { kind: 'procs', id: 'procs/leader', label: 'MetaStore 3 processes, load in the leader', engine: 'rocksdb', batch: true, drivers: 'leader' },
  { kind: 'procs', id: 'procs/spread', label: 'MetaStore 3 processes, load in all three', engine: 'rocksdb', batch: true, drivers: 'spread' },
  { kind: 'etcd', id: 'etcd/1-node', label: 'etcd 1 node', nodes: 1, drivers: 'leader' },
  { kind: 'etcd', id: 'etcd/3-node', label: 'etcd 3 nodes', nodes: 3, drivers: 'leader' },
  { kind: 'etcd', id: 'etcd/3-node-spread', label: 'etcd 3 nodes, load on all three', nodes: 3, drivers: 'spread' },
]

/** The system every ratio is taken against: etcd 3-node with its load in the same shape. */
export function referenceSystem(system: SystemSpec): string {
  return system.kind !== 'metastore' && system.drivers === 'spread' ? 'etcd/3-node-spread' : 'etcd/3-node'
}

/** In order of the chart's x axis: open-loop rates, then closed-loop concurrencies. */
export const LOADS: LoadSpec[] = [
  { id: 'low', label: '500/s', mode: 'open', rate: 500 },
  { id: 'medium', label: '5,000/s', mode: 'open', rate: 5_000 },
  { id: 'c1', label: '1 in flight', mode: 'closed', concurrency: 1 },
  { id: 'c256', label: '256 in flight', mode: 'closed', concurrency: 256 },
  { id: 'high', label: '1,024 in flight', mode: 'closed', concurrency: 1_024 },
]

/** `--quick` keeps one open-loop and two closed-loop points: every driver and every system, few minutes. */
export const QUICK_LOADS = ['low', 'c1', 'c256']

export function describeLoad(load: LoadSpec): string {
  return load.mode === 'open'
    ? `open loop, ${load.rate.toLocaleString('en-US')} puts/s offered`
    : `closed loop, ${load.concurrency.toLocaleString('en-US')} in flight`
}

/**
 * `--scenarios` patterns, comma-separated. `*` matches any characters; a
 * pattern matches an id when it matches the whole id or a leading run of its
 * `/` segments: `memory` is every memory scenario, `*\/c256` the 256-in-flight
 * point of every system, `etcd/3-node/low` one scenario.
 */
export function scenarioFilter(patterns: string | undefined): (id: string) => boolean {
  const list = (patterns ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
  if (list.length === 0) return () => true
  const regexes = list.map((p) => {
    const body = p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')
    return new RegExp(`^${body}(/.*)?$`)
  })
  return (id) => regexes.some((r) => r.test(id))
}

export function planScenarios(options: { quick: boolean; scenarios?: string }): Scenario[] {
  const keep = scenarioFilter(options.scenarios)
  const loads = options.quick ? LOADS.filter((l) => QUICK_LOADS.includes(l.id)) : LOADS
  return SYSTEMS.flatMap((system) => loads.map((load) => ({ id: `${system.id}/${load.id}`, system, load }))).filter((s) =>
    keep(s.id),
  )
}
