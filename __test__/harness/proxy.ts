// A userspace TCP fault proxy: it sits between two processes and injects
// delay, loss and partitions into their traffic (this kernel has no
// `tc netem`; etcd's robustness tests do the same with a proxy).
import net from 'node:net'
import { clearTimeout, setTimeout } from 'node:timers'

import { Random } from '../jepsen/random.js'

/** `forward` is client → target, `backward` is target → client. */
export type Direction = 'forward' | 'backward'

/** The faults on one direction, applied to every connection. */
export interface Fault {
  /** Each chunk is delivered this many ms after it was read; order is kept. */
  delayMs: number
  /**
   * The probability (0..1) that a chunk is discarded. Dropping bytes out of a
   * TCP stream corrupts it: this simulates a broken link, not packet loss
   * (which TCP would hide). The usual value is 1.0, or use `blackhole`.
   */
  dropRate: number
  /** Every byte is read and discarded; the connection stays open, as in a partition. */
  blackhole: boolean
}

/** Counts since start, so a test can assert that its faults fired. */
export interface ProxyStats {
  /** Client connections proxied to the target (not those refused while cut). */
  connections: number
  /** Bytes read from clients. */
  bytesForward: number
  /** Bytes read from the target. */
  bytesBackward: number
  /** Of `bytesForward`, bytes discarded by `dropRate` or `blackhole`. */
  droppedForward: number
  /** Of `bytesBackward`, bytes discarded by `dropRate` or `blackhole`. */
  droppedBackward: number
  /** Chunks held back by `delayMs`, both directions. */
  delayedChunks: number
}

export interface FaultProxyOptions {
  /** host:port to forward to. */
  target: string
  /** host:port to listen on; default 127.0.0.1:0 (any free port). */
  listen?: string
  /** Seeds the drop decisions: the same seed and the same chunks make the same drops. */
  seed?: number
  /**
   * Bytes that one direction of one connection may hold back for `delayMs`;
   * above it, reading from its source pauses until delivery frees room.
   * Default 64 MiB.
   */
  maxQueuedBytes?: number
}

const NO_FAULT: Fault = { delayMs: 0, dropRate: 0, blackhole: false }

/** What the proxy shares with its pipes; the pipes read the faults live. */
interface Shared {
  faults: Record<Direction, Fault>
  stats: ProxyStats
  random: Random
  maxQueuedBytes: number
}

/**
 * A TCP proxy that injects faults. Each accepted connection gets its own
 * connection to the target; bytes are piped both ways through the faults
 * set for each direction. Faults may be changed at any time, and apply to
 * open connections and new ones alike.
 */
export class FaultProxy {
  /** host:port it listens on (the bound port when 0 was asked). */
  readonly address: string
  readonly #server: net.Server
  readonly #target: { host: string; port: number }
  readonly #shared: Shared
  readonly #connections = new Set<() => void>()
  #cut = false
  #closing: Promise<void> | undefined

  private constructor(server: net.Server, target: { host: string; port: number }, opts: FaultProxyOptions) {
    this.#server = server
    this.#target = target
    this.#shared = {
      faults: { forward: { ...NO_FAULT }, backward: { ...NO_FAULT } },
      stats: {
        connections: 0,
        bytesForward: 0,
        bytesBackward: 0,
        droppedForward: 0,
        droppedBackward: 0,
        delayedChunks: 0,
      },
      random: new Random(opts.seed ?? 0),
      maxQueuedBytes: opts.maxQueuedBytes ?? 64 * 1024 * 1024,
    }
    const bound = server.address() as net.AddressInfo
    this.address = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`
    server.on('connection', (client) => this.#accept(client))
  }

  /** Listens, and resolves once the port is bound. */
  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const target = parseHostPort(opts.target)
    const listen = parseHostPort(opts.listen ?? '127.0.0.1:0')
    const server = net.createServer({ allowHalfOpen: true, noDelay: true })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(listen.port, listen.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    return new FaultProxy(server, target, opts)
  }

  /** Sets the given fields of the faults on one direction, or on both; the others are kept. */
  set(direction: Direction | 'both', fault: Partial<Fault>): void {
    if (fault.delayMs !== undefined && !(fault.delayMs >= 0 && Number.isFinite(fault.delayMs))) {
      throw new RangeError(`delayMs must be a finite number >= 0, got ${fault.delayMs}`)
    }
    if (fault.dropRate !== undefined && !(fault.dropRate >= 0 && fault.dropRate <= 1)) {
      throw new RangeError(`dropRate must be in [0, 1], got ${fault.dropRate}`)
    }
    const directions: Direction[] = direction === 'both' ? ['forward', 'backward'] : [direction]
    for (const d of directions) {
      const current = this.#shared.faults[d]
      current.delayMs = fault.delayMs ?? current.delayMs
      current.dropRate = fault.dropRate ?? current.dropRate
      current.blackhole = fault.blackhole ?? current.blackhole
    }
  }

  /** Clears every fault, and ends a `cut()`. Chunks already delayed keep their delivery time. */
  heal(): void {
    this.#shared.faults.forward = { ...NO_FAULT }
    this.#shared.faults.backward = { ...NO_FAULT }
    this.#cut = false
  }

  /** Destroys every open connection, and closes new ones as soon as they are accepted, until `heal()`. */
  cut(): void {
    this.#cut = true
    for (const destroy of this.#connections) destroy()
  }

  /** A snapshot of the counts. */
  stats(): ProxyStats {
    return { ...this.#shared.stats }
  }

  /** Stops listening and destroys every connection and timer. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve, reject) => {
      this.#server.close((err) => (err ? reject(err) : resolve()))
      for (const destroy of this.#connections) destroy()
    })
    return this.#closing
  }

  #accept(client: net.Socket): void {
    if (this.#cut) {
      client.destroy()
      return
    }
    this.#shared.stats.connections++
    const upstream = net.connect({ ...this.#target, allowHalfOpen: true, noDelay: true })
    const pipes = [
      new Pipe(client, upstream, 'forward', this.#shared),
      new Pipe(upstream, client, 'backward', this.#shared),
    ]
    const destroy = () => {
      this.#connections.delete(destroy)
      for (const pipe of pipes) pipe.stop()
      client.destroy()
      upstream.destroy()
    }
    this.#connections.add(destroy)
    // An error on either side ends both. A clean close of one side only means
    // both its halves are done: the other may still be delivering delayed bytes.
    for (const [socket, other] of [
      [client, upstream],
      [upstream, client],
    ]) {
      socket.on('error', destroy)
      socket.on('close', (hadError) => {
        if (hadError || other.closed) destroy()
      })
    }
  }
}

/** One direction of one connection: reads `source`, applies the faults, writes `sink`. */
class Pipe {
  readonly #source: net.Socket
  readonly #sink: net.Socket
  readonly #direction: Direction
  readonly #shared: Shared
  /** Chunks read and not yet due, with their delivery times (performance.now()), in order. */
  #queue: { chunk: Buffer; due: number }[] = []
  #queuedBytes = 0
  #timer: NodeJS.Timeout | undefined
  #sinkFull = false
  #ended = false

  constructor(source: net.Socket, sink: net.Socket, direction: Direction, shared: Shared) {
    this.#source = source
    this.#sink = sink
    this.#direction = direction
    this.#shared = shared
    source.on('data', (chunk: Buffer) => this.#read(chunk))
    source.on('end', () => {
      this.#ended = true
      this.#flush()
    })
    sink.on('drain', () => {
      this.#sinkFull = false
      this.#updateFlow()
    })
  }

  /** Drops what is queued and clears the timer. */
  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#queue = []
    this.#queuedBytes = 0
  }

  #read(chunk: Buffer): void {
    const { faults, stats } = this.#shared
    const { delayMs } = faults[this.#direction]
    if (this.#direction === 'forward') stats.bytesForward += chunk.length
    else stats.bytesBackward += chunk.length
    if (delayMs > 0) stats.delayedChunks++
    // Never before a chunk read earlier, should the delay have been cut since.
    const last = this.#queue.at(-1)
    const due = Math.max(performance.now() + delayMs, last ? last.due : 0)
    this.#queue.push({ chunk, due })
    this.#queuedBytes += chunk.length
    this.#flush()
  }

  /** Delivers the chunks that are due, arms the timer for the next, and ends the sink once all are out. */
  #flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const now = performance.now()
    while (this.#queue.length > 0) {
      const { chunk, due } = this.#queue[0]
      if (due > now) {
        this.#timer = setTimeout(() => this.#flush(), due - now)
        break
      }
      this.#queue.shift()
      this.#queuedBytes -= chunk.length
      this.#deliver(chunk)
    }
    if (this.#ended && this.#queue.length === 0) this.#sink.end()
    this.#updateFlow()
  }

  /**
   * Drop and blackhole are decided when a chunk leaves, so a partition also
   * swallows the chunks that were delayed when it began.
   */
  #deliver(chunk: Buffer): void {
    const { faults, stats, random } = this.#shared
    const { blackhole, dropRate } = faults[this.#direction]
    if (blackhole || (dropRate > 0 && random.next() < dropRate)) {
      if (this.#direction === 'forward') stats.droppedForward += chunk.length
      else stats.droppedBackward += chunk.length
      return
    }
    if (!this.#sink.write(chunk)) this.#sinkFull = true
  }

  /** Backpressure: reads from the source only while the sink and the queue have room. */
  #updateFlow(): void {
    const full = this.#sinkFull || this.#queuedBytes >= this.#shared.maxQueuedBytes
    if (full && !this.#source.isPaused()) this.#source.pause()
    else if (!full && this.#source.isPaused()) this.#source.resume()
  }
}

function parseHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':')
  const port = Number(address.slice(colon + 1))
  if (colon <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad address '${address}': want host:port`)
  }
  return { host: address.slice(0, colon).replace(/^\[(.*)\]$/, '$1'), port }
}
