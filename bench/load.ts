import { build, type Histogram } from 'hdr-histogram-js'

import type { LoadSpec } from './scenarios.js'
import { KEY_SPACE } from './workload.js'

/** One request against the system under test; `seq` picks the key and value. */
export type Op = (seq: number) => Promise<unknown>

export interface LatencyFigures {
  p50Ms: number
  p90Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
  meanMs: number
  count: number
}

export interface LoadResult {
  /** Requests acknowledged (resolved), including those that completed after the window. */
  acked: number
  /** Requests acknowledged inside the measured window; throughput is this over the window. */
  ackedInWindow: number
  errors: number
  /** The first few distinct error messages. */
  errorSamples: string[]
  windowMs: number
  /** Acknowledged requests per second inside the window. */
  throughput: number
  /** Closed loop: from send to ack. Open loop: from the scheduled send time to ack (no coordinated omission). */
  latency: LatencyFigures
  /** Open loop only: from the actual send to ack. */
  serviceLatency?: LatencyFigures
  /** Open loop only: mean delay between a request's scheduled and actual send (timer slack, backlog). */
  meanSendLagMs?: number
  /** Requests still pending (or, open loop, never sent) when the drain time ran out. */
  unfinished: number
  /** Open loop only: requests sent (the weight of `meanSendLagMs` when results are merged). */
  sent?: number
  /** The histograms behind `latency` and `serviceLatency` (microseconds), for merging the results of several load generators. */
  histograms: { latency: Histogram; service?: Histogram }
}

/** Counters the progress display reads while a load runs. */
export interface Progress {
  acked: number
  errors: number
}

export interface DriveOptions {
  durationMs: number
  /** How long to wait after the window for requests still in flight; then the driver returns regardless. */
  drainMs: number
  progress?: Progress
  /** First `seq` handed to `op`, so warm-up and measurement touch different keys. */
  seqStart?: number
}

const MAX_ERROR_SAMPLES = 3

export function histogram(): Histogram {
  // Microseconds, 3 significant digits, up to an hour.
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 })
}

export function figures(h: Histogram): LatencyFigures {
  const ms = (us: number) => us / 1000
  if (h.totalCount === 0) return { p50Ms: NaN, p90Ms: NaN, p99Ms: NaN, p999Ms: NaN, maxMs: NaN, meanMs: NaN, count: 0 }
  return {
    p50Ms: ms(h.getValueAtPercentile(50)),
    p90Ms: ms(h.getValueAtPercentile(90)),
    p99Ms: ms(h.getValueAtPercentile(99)),
    p999Ms: ms(h.getValueAtPercentile(99.9)),
    maxMs: ms(h.maxValue),
    meanMs: ms(h.mean),
    count: h.totalCount,
  }
}

/** Acks, errors and latencies of one load run. Ignores anything reported after `seal()`. */
class Recorder {
  readonly latency = histogram()
  readonly service = histogram()
  acked = 0
  ackedInWindow = 0
  errors = 0
  readonly errorSamples: string[] = []
  #sealed = false

  constructor(
    private readonly windowEnd: number,
    private readonly progress: Progress | undefined,
  ) {}

  ok(now: number, latencyMs: number, serviceMs?: number): void {
    if (this.#sealed) return
    this.acked++
    if (now <= this.windowEnd) this.ackedInWindow++
    if (this.progress) this.progress.acked++
    this.latency.recordValue(Math.max(1, Math.round(latencyMs * 1000)))
    if (serviceMs !== undefined) this.service.recordValue(Math.max(1, Math.round(serviceMs * 1000)))
  }

  fail(err: unknown): void {
    if (this.#sealed) return
    this.errors++
    if (this.progress) this.progress.errors++
    const message = describeError(err)
    if (this.errorSamples.length < MAX_ERROR_SAMPLES && !this.errorSamples.includes(message)) this.errorSamples.push(message)
  }

  seal(): void {
    this.#sealed = true
  }

  /** Seals the recorder and reports what it saw over a window of `windowMs`. */
  result(windowMs: number, unfinished: number): LoadResult {
    this.seal()
    return {
      acked: this.acked,
      ackedInWindow: this.ackedInWindow,
      errors: this.errors,
      errorSamples: this.errorSamples,
      windowMs,
      throughput: this.ackedInWindow / (windowMs / 1000),
      latency: figures(this.latency),
      unfinished,
      histograms: { latency: this.latency },
    }
  }
}

export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${err.message}` : `${err.name}: ${err.message}`
  }
  return String(err)
}

/** Resolves true when `p` settles within `ms`, false otherwise; never rejects. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)))
  try {
    return await Promise.race([p.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Runs `load` (open or closed loop) with `op` as the request. */
export function runLoad(op: Op, load: LoadSpec, o: DriveOptions): Promise<LoadResult> {
  return load.mode === 'open' ? openLoop(op, load.rate, o) : closedLoop(op, load.concurrency, o)
}

/**
 * Closed loop: `concurrency` workers, each sends its next request when the
 * previous one is acknowledged, until the window ends. Saturates the system
 * at that many requests in flight.
 */
export async function closedLoop(op: Op, concurrency: number, o: DriveOptions): Promise<LoadResult> {
  const start = performance.now()
  const end = start + o.durationMs
  const rec = new Recorder(end, o.progress)
  let seq = o.seqStart ?? 0
  let pending = 0
  const worker = async () => {
    while (performance.now() < end) {
      const sent = performance.now()
      pending++
      try {
        await op(seq++)
        const t = performance.now()
        rec.ok(t, t - sent)
      } catch (err) {
        rec.fail(err)
      } finally {
        pending--
      }
    }
  }
  await within(Promise.all(Array.from({ length: concurrency }, worker)), o.durationMs + o.drainMs)
  return rec.result(Math.min(o.durationMs, performance.now() - start), pending)
}

/**
 * Open loop: requests leave on a fixed schedule (`rate` per second) whether
 * or not earlier ones were acknowledged, as independent clients would send
 * them. Latency is measured from the scheduled send time, so a stall that
 * delays sending is charged to the system (no coordinated omission). At most
 * `maxInFlight` requests are outstanding; beyond that sends wait (and their
 * latency keeps counting from the schedule).
 */
export function openLoop(op: Op, rate: number, o: DriveOptions & { maxInFlight?: number }): Promise<LoadResult> {
  const maxInFlight = o.maxInFlight ?? 4_096
  const interval = 1000 / rate
  const total = Math.max(1, Math.floor((o.durationMs / 1000) * rate))
  const start = performance.now()
  const rec = new Recorder(start + o.durationMs, o.progress)
  let issued = 0
  let inFlight = 0
  let lagSum = 0

  return new Promise<LoadResult>((resolve) => {
    let next: NodeJS.Timeout | undefined
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(next)
      clearTimeout(cutoff)
      resolve({
        ...rec.result(o.durationMs, inFlight + (total - issued)),
        serviceLatency: figures(rec.service),
        meanSendLagMs: issued > 0 ? lagSum / issued : 0,
        sent: issued,
        histograms: { latency: rec.latency, service: rec.service },
      })
    }
    const settled = () => {
      inFlight--
      if (issued === total && inFlight === 0) finish()
    }
    const issue = () => {
      if (done) return
      const now = performance.now()
      while (issued < total && inFlight < maxInFlight) {
        const scheduled = start + issued * interval
        if (scheduled > now) break
        const seq = (o.seqStart ?? 0) + issued++
        inFlight++
        lagSum += now - scheduled
        const sent = performance.now()
        let p: Promise<unknown>
        try {
          p = op(seq)
        } catch (err) {
          p = Promise.reject(err)
        }
        p.then(
          () => {
            const t = performance.now()
            rec.ok(t, t - scheduled, t - sent)
            settled()
          },
          (err) => {
            rec.fail(err)
            settled()
          },
        )
      }
      if (issued < total) next = setTimeout(issue, Math.max(0, start + issued * interval - performance.now()))
      else if (inFlight === 0) finish()
    }
    const cutoff = setTimeout(finish, o.durationMs + o.drainMs)
    issue()
  })
}

/**
 * One result for load generated by several drivers at once (one per
 * process): counts and throughputs add up, histograms are merged (so the
 * percentiles are those of every request, not an average of percentiles),
 * the window is the longest.
 */
export function mergeResults(parts: LoadResult[]): LoadResult {
  const latency = histogram()
  const service = histogram()
  let sent = 0
  let lagMs = 0
  for (const p of parts) {
    latency.add(p.histograms.latency)
    if (p.histograms.service) service.add(p.histograms.service)
    sent += p.sent ?? 0
    lagMs += (p.meanSendLagMs ?? 0) * (p.sent ?? 0)
  }
  const open = parts.some((p) => p.serviceLatency !== undefined)
  const sum = (f: (p: LoadResult) => number) => parts.reduce((total, p) => total + f(p), 0)
  return {
    acked: sum((p) => p.acked),
    ackedInWindow: sum((p) => p.ackedInWindow),
    errors: sum((p) => p.errors),
    errorSamples: [...new Set(parts.flatMap((p) => p.errorSamples))].slice(0, MAX_ERROR_SAMPLES),
    windowMs: Math.max(...parts.map((p) => p.windowMs)),
    throughput: sum((p) => p.throughput),
    latency: figures(latency),
    unfinished: sum((p) => p.unfinished),
    ...(open && { serviceLatency: figures(service), meanSendLagMs: sent > 0 ? lagMs / sent : 0, sent }),
    histograms: open ? { latency, service } : { latency },
  }
}

/**
 * `load` split over `n` load generators: the in-flight count (or the rate) in
 * equal parts, a remainder of the count to the first ones; 0 in flight means
 * that generator stays idle.
 */
export function splitLoad(load: LoadSpec, n: number): LoadSpec[] {
  if (load.mode === 'open') return Array.from({ length: n }, () => ({ ...load, rate: load.rate / n }))
  const base = Math.floor(load.concurrency / n)
  const extra = load.concurrency % n
  return Array.from({ length: n }, (_, i) => ({ ...load, concurrency: base + (i < extra ? 1 : 0) }))
}

/**
 * `load` run by `n` drivers at once and reported as one result: each gets its
 * share (`splitLoad`; an idle one is not run) and its own stretch of the key
 * space, starting at `seqStart`.
 */
export async function runSplit(
  load: LoadSpec,
  n: number,
  seqStart: number,
  run: (share: LoadSpec, driver: number, seqStart: number) => Promise<LoadResult>,
): Promise<LoadResult> {
  const shares = splitLoad(load, n)
  const parts = await Promise.all(
    shares.map((share, i) =>
      share.mode === 'closed' && share.concurrency === 0 ? undefined : run(share, i, seqStart + i * Math.floor(KEY_SPACE / n)),
    ),
  )
  return mergeResults(parts.filter((p): p is LoadResult => p !== undefined))
}
