import { describeLoad } from './scenarios.js'
import { fmt, type Report } from './report.js'

/** Cores of other work during a window above which the run is flagged as disturbed. */
const DISTURBED_CORES = 0.25

const mark = (met: boolean | null) => (met === null ? '–' : met ? 'met' : '**not met**')

/** The report as markdown: context, targets, the table of every scenario, the chart, how to rerun. */
export function renderMarkdown(r: Report, chartFile: string): string {
  const m = r.machine
  const lines: string[] = []
  const when = r.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')
  lines.push(`# MetaStore benchmark, ${when}${r.quick ? ' (quick smoke run: 1 run, short windows; not for comparing)' : ''}`)
  lines.push('')
  lines.push(
    `Commit \`${m.commit.slice(0, 12)}\`${m.dirty ? ' (with uncommitted changes)' : ''}; ${m.cpus} × ${m.cpuModel}, ` +
      `${m.memoryGiB} GiB, ${m.platform} ${m.kernel}, Node ${m.node}; ` +
      (r.etcd.available ? `etcd ${r.etcd.version} (\`${r.etcd.binary}\`).` : `etcd not run: ${r.etcd.note}.`),
  )
  lines.push(
    `Data dirs on ${m.dataDir.fileSystem}; a 4 KiB write + fdatasync there takes ` +
      `${fmt.ms(m.dataDir.fsyncP50Ms)} ms (p50), ${fmt.ms(m.dataDir.fsyncP99Ms)} ms (p99) rewriting a block` +
      (m.dataDir.appendFsyncP50Ms === undefined || m.dataDir.appendFsyncP99Ms === undefined
        ? '. '
        : `, ${fmt.ms(m.dataDir.appendFsyncP50Ms)} ms (p50), ${fmt.ms(m.dataDir.appendFsyncP99Ms)} ms (p99) ` +
          'appending one (as a write-ahead log does). ') +
      `Before the run ${fmt.num(m.busyBefore.cpuShare * 100, 0)}% of the CPUs were busy with other work.`,
  )
  lines.push(
    `Each scenario starts a fresh ${r.workload.nodes}-node system, warms up ${r.options.warmupMs / 1000} s, then measures ` +
      `${r.options.durationMs / 1000} s; ${r.options.runs} run(s) per scenario, figures are medians. ` +
      `${r.workload.keyBytes}-byte keys, ${r.workload.valueBytes}-byte values. \`memory/*\` and \`rocksdb/*\`: MetaStore ` +
      `in this process, the load on the leader's handle. \`procs/*\`: MetaStore as three processes on 127.0.0.1 ` +
      `(gRPC between members, RocksDB with sync, batch on), the load generated inside the leader's process ` +
      `(\`leader\`) or split over all three, each against its own member (\`spread\`; followers first, so 1 in ` +
      `flight goes through a follower). etcd runs as separate processes on 127.0.0.1, driven by the \`etcd3\` client ` +
      `connected to its leader, or (\`etcd/3-node-spread\`) by one client per member, the load split the same way.`,
  )
  lines.push('')
  lines.push(`Command: \`${r.command}\``)
  lines.push('')

  lines.push('## Targets')
  lines.push('')
  lines.push('| target | goal | measured | |')
  lines.push('|---|---|---|---|')
  for (const t of r.targets) lines.push(`| ${t.target} | ${t.goal} | ${t.measured} | ${mark(t.met)} |`)
  lines.push('')

  lines.push('## Every scenario')
  lines.push('')
  lines.push(`![throughput and p99 latency against offered load](${chartFile})`)
  lines.push('')
  lines.push(
    '| scenario | load | puts/s | p50 ms | p99 ms | p99.9 ms | avg batch | puts per log write | fsync ms | CPU µs/put | sent B/put | sent msgs/put | puts/s vs etcd 3-node | p50 vs etcd 3-node | runs ok | failed puts |',
  )
  lines.push('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|')
  const row = (cells: string[]) => lines.push(`| ${cells.join(' | ')} |`)
  for (const s of r.scenarios) {
    const head = [`\`${s.id}\``, describeLoad(s.load)]
    if (s.skipped !== undefined) {
      row([...head, `skipped: ${escape(s.skipped)}`, ...Array(13).fill('')])
      continue
    }
    const x = s.median
    if (!x) {
      const err = s.runs.find((run) => !run.ok)
      row([...head, `error: ${err && !err.ok ? escape(err.error) : 'no run'}`, ...Array(11).fill(''), `0/${s.runs.length}`, ''])
      continue
    }
    const cpu = s.system.kind === 'etcd' ? `${fmt.rate(x.cpuUsPerOp)} (client ${fmt.rate(x.clientCpuUsPerOp)})` : fmt.rate(x.cpuUsPerOp)
    // An open loop that could not keep up says so: its latency then includes the growing backlog.
    const behind = s.load.mode === 'open' && x.throughput < 0.95 * s.load.rate
    row([
      ...head,
      behind ? `${fmt.rate(x.throughput)} (overloaded)` : fmt.rate(x.throughput),
      fmt.ms(x.p50Ms),
      fmt.ms(x.p99Ms),
      fmt.ms(x.p999Ms),
      fmt.num(x.avgBatchSize),
      fmt.num(x.proposalsPerLogWrite),
      fmt.ms(x.syncMs ?? NaN),
      cpu,
      fmt.rate(x.sentBytesPerOp ?? NaN),
      fmt.num(x.sentMessagesPerOp, 2),
      fmt.ratio(s.vsEtcd3?.throughput),
      fmt.ratio(s.vsEtcd3?.p50),
      `${x.okRuns}/${s.runs.length}`,
      String(x.errors),
    ])
  }
  lines.push('')
  lines.push(
    'Open-loop latency is measured from each put\'s scheduled send time, so a stall is charged in full (no coordinated ' +
      'omission); closed-loop latency from the send. "avg batch" is proposals per Raft entry on the leader during the ' +
      'window; "puts per log write" is proposals per Raft `Ready` the leader wrote to its log (with sync on, one ' +
      'fsync each): the pipeline groups many entries per write even with batching off; "fsync ms" is the mean time ' +
      'of the leader\'s WAL syncs in the window (`stats().storage.syncMicros / syncs`); for `procs/*`, "avg batch" ' +
      'sums the batches of all three members (a follower batches its own puts and forwards each batch as one entry). ' +
      'CPU counts this process (the client, and MetaStore\'s Raft threads) plus the system\'s processes (etcd\'s, or ' +
      'the three member processes with their load generators); for etcd the share of its client (etcd3 on grpc-js, ' +
      'in this process) is shown apart. "sent B/put" and "sent msgs/put" are the bytes and Raft messages the nodes ' +
      'sent each other during the window per acknowledged put, summed over the nodes (`stats().transport`; etcd ' +
      'reports bytes only, `etcd_network_peer_sent_bytes_total`); in-process clusters have no network. Ratios divide ' +
      'this row by etcd 3-node at the same load and in the same shape (`procs/spread/*` by `etcd/3-node-spread/*`, ' +
      'the others by `etcd/3-node/*`): above 1× is more puts/s, below 1× is lower latency.',
  )
  lines.push('')

  const failures = r.scenarios.flatMap((s) =>
    s.runs.flatMap((run, i) =>
      !run.ok
        ? [`- \`${s.id}\` run ${i + 1}: ${run.error}`]
        : [
            ...run.figures.errorSamples.map((e) => `- \`${s.id}\` run ${i + 1}: ${run.figures.errors} failed puts, e.g. ${e}`),
            ...(run.figures.notes ?? []).map((n) => `- \`${s.id}\` run ${i + 1}: ${n}`),
          ],
    ),
  )
  // Work of other processes during a window (CPU not used by this process or etcd) disturbs that run's figures.
  const disturbed = r.scenarios.flatMap((s) =>
    s.runs.flatMap((run, i) =>
      run.ok && run.figures.othersCpuCores > DISTURBED_CORES ? [`\`${s.id}\` run ${i + 1} (${run.figures.othersCpuCores.toFixed(2)})`] : [],
    ),
  )
  if (disturbed.length > 0) {
    failures.unshift(
      `- Other processes used more than ${DISTURBED_CORES} of a core during ${disturbed.length} window(s), so those figures are disturbed: ` +
        `${disturbed.join(', ')}.`,
    )
  }
  if (failures.length > 0 || r.notes.length > 0) {
    lines.push('## Errors and notes')
    lines.push('')
    lines.push(...r.notes.map((n) => `- ${n}`), ...failures)
    lines.push('')
  }

  lines.push('## How to rerun')
  lines.push('')
  lines.push('- This report: `' + r.command + '`')
  lines.push('- One scenario, e.g.: `npx tsx bench/run.ts --scenarios rocksdb/batch-on/high --runs 3`')
  lines.push(
    '- MetaStore config: `defaultConfig()`, with `server.raft.batch.enable` set per scenario and `server.storage.sync: true` on rocksdb ' +
      '(`procs/*`: rocksdb, batch on, each member `MetaStore.open({ nodeId, initialCluster, engine: \'rocksdb\', dataDir, config })` ' +
      'in a process of its own, `bench/systems/member-load.ts`).',
  )
  for (const [system, args] of Object.entries(r.etcd.args ?? {})) {
    lines.push(`- \`${system}\` members, as started (data dirs in a temp folder, removed afterwards):`)
    for (const a of args) lines.push(`  - \`${r.etcd.binary} ${a.join(' ')}\``)
  }
  lines.push('')
  return lines.join('\n')
}

function escape(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ')
}
