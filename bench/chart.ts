import { LOADS, SYSTEMS, type LoadSpec, type SystemSpec } from './scenarios.js'
import type { Report } from './report.js'

/**
 * The report chart as SVG text: puts/s (left) and p99 latency (right) against
 * offered load, one line per system; colour is the engine (or etcd), a solid
 * line with filled dots is batch on, a dashed line with hollow squares batch
 * off; the three-process systems are green with triangles (solid: load in the
 * leader, dashed: load in all three). Open-loop and closed-loop points are separate groups on the x axis and
 * lines do not cross between them.
 */

const W = 1200
const H = 590
const PLOT_TOP = 125
const PLOT_BOTTOM = 430
const PANELS = [
  { x0: 95, x1: 565 },
  { x0: 705, x1: 1175 },
]
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif'

interface Style {
  color: string
  dash?: string
  marker: 'dot' | 'square' | 'diamond' | 'triangle'
}

function styleOf(s: SystemSpec): Style {
  if (s.kind === 'etcd') return { color: s.nodes === 3 ? '#222222' : '#8a8a8a', dash: '2,4', marker: 'diamond' }
  if (s.kind === 'procs') return s.drivers === 'leader' ? { color: '#2ca02c', marker: 'triangle' } : { color: '#2ca02c', dash: '6,4', marker: 'triangle' }
  const color = s.engine === 'memory' ? '#1f77b4' : '#d62728'
  return s.batch ? { color, marker: 'dot' } : { color, dash: '8,5', marker: 'square' }
}

const esc = (t: string) => t.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')

function text(x: number, y: number, body: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(body)}</text>`
}

function marker(kind: Style['marker'], x: number, y: number, color: string): string {
  if (kind === 'dot') return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="4.5" fill="${color}"/>`
  if (kind === 'square') {
    return `<rect x="${(x - 4).toFixed(1)}" y="${(y - 4).toFixed(1)}" width="8" height="8" fill="white" stroke="${color}" stroke-width="2"/>`
  }
  if (kind === 'triangle') {
    const t = [`${x},${y - 6}`, `${x + 5.5},${y + 4}`, `${x - 5.5},${y + 4}`].join(' ')
    return `<polygon points="${t}" fill="${color}"/>`
  }
  const p = [`${x},${y - 5.5}`, `${x + 5.5},${y}`, `${x},${y + 5.5}`, `${x - 5.5},${y}`].join(' ')
  return `<polygon points="${p}" fill="${color}"/>`
}

/** Log axis covering `values`, whole decades. */
function logRange(values: number[]): [number, number] {
  const xs = values.filter((v) => Number.isFinite(v) && v > 0)
  if (xs.length === 0) return [1, 10]
  let lo = 10 ** Math.floor(Math.log10(Math.min(...xs)))
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...xs)))
  if (hi <= lo) hi = lo * 10
  return [lo, hi]
}

function si(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`
  return `${+v.toPrecision(3)}`
}

interface PanelSpec {
  title: string
  yTitle: string
  value: (report: Report, system: SystemSpec, load: LoadSpec) => number | undefined
  tick: (v: number) => string
}

function panel(report: Report, loads: LoadSpec[], spec: PanelSpec, x0: number, x1: number): string[] {
  const out: string[] = []
  const systems = SYSTEMS.filter((s) => report.scenarios.some((r) => r.system.id === s.id))
  const values = systems.flatMap((s) => loads.map((l) => spec.value(report, s, l) ?? NaN))
  const [lo, hi] = logRange(values)
  const y = (v: number) => PLOT_BOTTOM - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (PLOT_BOTTOM - PLOT_TOP)
  const step = (x1 - x0) / Math.max(1, loads.length)
  const x = (i: number) => x0 + (i + 0.5) * step

  out.push(text((x0 + x1) / 2, PLOT_TOP - 36, spec.title, `font-size="15" font-weight="bold" text-anchor="middle"`))
  out.push(`<rect x="${x0}" y="${PLOT_TOP}" width="${x1 - x0}" height="${PLOT_BOTTOM - PLOT_TOP}" fill="#fbfbfb" stroke="#999"/>`)

  // Grid: every decade labelled; 2 and 5 as faint lines (labelled too when the axis spans few decades).
  const decades = Math.round(Math.log10(hi / lo))
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m
      if (v > hi * 1.0001) break
      const yy = y(v)
      out.push(`<line x1="${x0}" x2="${x1}" y1="${yy.toFixed(1)}" y2="${yy.toFixed(1)}" stroke="${m === 1 ? '#d0d0d0' : '#ececec'}"/>`)
      if (m === 1 || decades <= 2) out.push(text(x0 - 8, yy + 4, spec.tick(v), `font-size="12" text-anchor="end" fill="${m === 1 ? '#333' : '#888'}"`))
    }
  }
  out.push(text(x0 - 62, (PLOT_TOP + PLOT_BOTTOM) / 2, spec.yTitle, `font-size="13" text-anchor="middle" transform="rotate(-90 ${x0 - 62} ${(PLOT_TOP + PLOT_BOTTOM) / 2})"`))

  // X axis: one column per load point; a divider between the open- and closed-loop groups.
  const firstClosed = loads.findIndex((l) => l.mode === 'closed')
  const groups: { label: string; from: number; to: number }[] = []
  if (firstClosed !== 0) groups.push({ label: 'open loop: offered puts/s', from: 0, to: (firstClosed < 0 ? loads.length : firstClosed) - 1 })
  if (firstClosed >= 0) groups.push({ label: 'closed loop: puts in flight', from: firstClosed, to: loads.length - 1 })
  if (firstClosed > 0) {
    const xd = x0 + firstClosed * step
    out.push(`<line x1="${xd}" x2="${xd}" y1="${PLOT_TOP}" y2="${PLOT_BOTTOM}" stroke="#777" stroke-dasharray="4,4"/>`)
  }
  for (const g of groups) out.push(text((x(g.from) + x(g.to)) / 2, PLOT_TOP - 10, g.label, `font-size="12" text-anchor="middle" fill="#555"`))
  loads.forEach((l, i) => {
    out.push(`<line x1="${x(i)}" x2="${x(i)}" y1="${PLOT_BOTTOM}" y2="${PLOT_BOTTOM + 5}" stroke="#333"/>`)
    const label = l.mode === 'open' ? l.rate.toLocaleString('en-US') : l.concurrency.toLocaleString('en-US')
    out.push(text(x(i), PLOT_BOTTOM + 20, label, `font-size="12" text-anchor="middle"`))
    out.push(text(x(i), PLOT_BOTTOM + 35, l.id, `font-size="11" text-anchor="middle" fill="#888"`))
  })
  out.push(text((x0 + x1) / 2, PLOT_BOTTOM + 58, 'offered load (open loop: puts/s sent on a schedule; closed loop: puts kept in flight)', `font-size="12" text-anchor="middle"`))

  // Series: a line within each group, a marker at each measured point.
  // Each series is nudged sideways a little so equal values stay visible.
  systems.forEach((s, k) => {
    const st = styleOf(s)
    const nudge = (k - (systems.length - 1) / 2) * 4
    const pts = loads.map((l, i) => {
      const v = spec.value(report, s, l)
      return v !== undefined && Number.isFinite(v) && v > 0 ? { x: x(i) + nudge, y: y(v), mode: l.mode } : undefined
    })
    let path = ''
    pts.forEach((p, i) => {
      if (!p) return
      const prev = pts[i - 1]
      path += `${prev && prev.mode === p.mode ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)} `
    })
    if (path) {
      out.push(`<path d="${path.trim()}" fill="none" stroke="${st.color}" stroke-width="2.2"${st.dash ? ` stroke-dasharray="${st.dash}"` : ''}/>`)
    }
    for (const p of pts) if (p) out.push(marker(st.marker, p.x, p.y, st.color))
  })
  if (values.every((v) => !Number.isFinite(v))) {
    out.push(text((x0 + x1) / 2, (PLOT_TOP + PLOT_BOTTOM) / 2, 'no data', `font-size="16" text-anchor="middle" fill="#999"`))
  }
  return out
}

function legend(report: Report): string[] {
  const out: string[] = []
  const systems = SYSTEMS.filter((s) => report.scenarios.some((r) => r.system.id === s.id))
  const top = PLOT_BOTTOM + 92
  const colW = 360
  const left = (W - colW * 3) / 2 + 10
  systems.forEach((s, i) => {
    const st = styleOf(s)
    const cx = left + (i % 3) * colW
    const cy = top + Math.floor(i / 3) * 24
    out.push(`<line x1="${cx}" x2="${cx + 40}" y1="${cy}" y2="${cy}" stroke="${st.color}" stroke-width="2.2"${st.dash ? ` stroke-dasharray="${st.dash}"` : ''}/>`)
    out.push(marker(st.marker, cx + 20, cy, st.color))
    const skipped = report.scenarios.filter((r) => r.system.id === s.id).every((r) => !r.median)
    out.push(text(cx + 50, cy + 4, `${s.label}${skipped ? ' (no data)' : ''}`, `font-size="13"`))
  })
  return out
}

export function renderChart(report: Report): string {
  const present = new Set(report.scenarios.map((s) => s.load.id))
  const loads = LOADS.filter((l) => present.has(l.id))
  const median = (system: SystemSpec, load: LoadSpec) =>
    report.scenarios.find((r) => r.system.id === system.id && r.load.id === load.id)?.median
  const m = report.machine
  const subtitle =
    `${report.workload.nodes} nodes (etcd also 1), ${report.workload.keyBytes} B keys, ${report.workload.valueBytes} B values; ` +
    `medians of ${report.options.runs} run(s) of ${report.options.durationMs / 1000} s; ${m.cpus} × ${m.cpuModel}, Node ${m.node}; ` +
    `commit ${m.commit.slice(0, 10)}; ${report.date.slice(0, 10)}${report.quick ? '; QUICK SMOKE RUN' : ''}`
  const body = [
    text(W / 2, 30, 'MetaStore (memory and RocksDB with sync, batch on / off, one process or three) vs etcd 3.4: puts from TypeScript', `font-size="18" font-weight="bold" text-anchor="middle"`),
    text(W / 2, 50, subtitle, `font-size="12" text-anchor="middle" fill="#555"`),
    ...panel(
      report,
      loads,
      { title: 'Throughput (higher is better)', yTitle: 'acknowledged puts/s (log scale)', value: (_, s, l) => median(s, l)?.throughput, tick: si },
      PANELS[0].x0,
      PANELS[0].x1,
    ),
    ...panel(
      report,
      loads,
      { title: 'p99 latency (lower is better)', yTitle: 'p99 latency, ms (log scale)', value: (_, s, l) => median(s, l)?.p99Ms, tick: (v) => `${si(v)} ms` },
      PANELS[1].x0,
      PANELS[1].x1,
    ),
    ...legend(report),
  ]
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n')
}
