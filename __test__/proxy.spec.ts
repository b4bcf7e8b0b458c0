import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { FaultProxy } from './harness/proxy.js'

/** Polls `check` until it returns true or `timeoutMs` passes. */
async function eventually(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(5)
  }
}

/** A TCP echo server on 127.0.0.1 that counts the bytes it received. */
async function startEcho() {
  const sockets = new Set<net.Socket>()
  let received = 0
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => (received += chunk.length))
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  return {
    address: `127.0.0.1:${port}`,
    received: () => received,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/** A client connection that collects what it receives. */
async function connect(address: string) {
  const colon = address.lastIndexOf(':')
  const socket = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)) })
  const chunks: Buffer[] = []
  let bytes = 0
  socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk)
    bytes += chunk.length
  })
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  return {
    socket,
    closed,
    bytes: () => bytes,
    data: () => Buffer.concat(chunks),
    /** Writes `message` and waits until `bytes()` has grown by its length. */
    async roundTrip(message: Buffer | string): Promise<void> {
      const want = bytes + Buffer.byteLength(message)
      socket.write(message)
      await eventually(() => bytes >= want)
    },
  }
}

describe('FaultProxy', () => {
  it('passes bytes unchanged both ways', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      expect(proxy.address).toMatch(/^127\.0\.0\.1:\d+$/)
      expect(proxy.address).not.toBe('127.0.0.1:0')
      const client = await connect(proxy.address)
      await client.roundTrip('hello')
      expect(client.data().toString()).toBe('hello')

      const payload = randomBytes(5 * 1024 * 1024)
      client.socket.write(payload)
      await eventually(() => client.bytes() >= 5 + payload.length)
      const echoed = client.data().subarray(5)
      expect(echoed.length).toBe(payload.length)
      expect(echoed.equals(payload)).toBe(true)
      client.socket.destroy()

      const total = 5 + payload.length
      expect(proxy.stats()).toEqual({
        connections: 1,
        bytesForward: total,
        bytesBackward: total,
        droppedForward: 0,
        droppedBackward: 0,
        delayedChunks: 0,
      })
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('propagates a half-close both ways', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      proxy.set('both', { delayMs: 50 })
      const client = await connect(proxy.address)
      const ended = new Promise<void>((resolve) => client.socket.on('end', () => resolve()))
      // The end follows the delayed bytes: the echo server sees it, echoes
      // what it got, and ends its side, which reaches the client last.
      client.socket.end('bye')
      await ended
      expect(client.data().toString()).toBe('bye')
      await client.closed
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('delays a direction by delayMs', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      const client = await connect(proxy.address)
      proxy.set('forward', { delayMs: 200 })
      const start = performance.now()
      await client.roundTrip('ping')
      expect(performance.now() - start).toBeGreaterThanOrEqual(180)
      expect(client.data().toString()).toBe('ping')

      // Order is kept across chunks, and when the delay is cut meanwhile.
      client.socket.write('a')
      await sleep(20)
      proxy.set('forward', { delayMs: 0 })
      await client.roundTrip('b')
      expect(client.data().toString()).toBe('pingab')
      expect(proxy.stats().delayedChunks).toBe(2)
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('pauses the source while a delay queue is full', async () => {
    const echo = await startEcho()
    const maxQueuedBytes = 256 * 1024
    const proxy = await FaultProxy.start({ target: echo.address, maxQueuedBytes })
    try {
      const client = await connect(proxy.address)
      proxy.set('forward', { delayMs: 300 })
      const payload = randomBytes(1024 * 1024)
      client.socket.write(payload)
      await eventually(() => proxy.stats().bytesForward >= maxQueuedBytes)
      await sleep(50)
      // Nothing is due yet: all that was read is queued, the cap plus at most one read.
      expect(proxy.stats().bytesForward).toBeLessThanOrEqual(maxQueuedBytes + 64 * 1024)
      await eventually(() => client.bytes() >= payload.length)
      expect(client.data().equals(payload)).toBe(true)
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('blackholes a direction while the connection stays open, until heal', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      const client = await connect(proxy.address)
      proxy.set('backward', { blackhole: true })
      client.socket.write('lost')
      await eventually(() => echo.received() === 4)
      await eventually(() => proxy.stats().droppedBackward === 4)
      await sleep(300)
      expect(client.bytes()).toBe(0)
      expect(client.socket.destroyed).toBe(false)

      proxy.heal()
      await client.roundTrip('found')
      expect(client.data().toString()).toBe('found')
      expect(proxy.stats()).toMatchObject({ bytesForward: 9, bytesBackward: 9, droppedForward: 0, droppedBackward: 4 })
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('swallows delayed chunks when a blackhole begins', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      const client = await connect(proxy.address)
      proxy.set('forward', { delayMs: 200 })
      client.socket.write('in flight')
      await eventually(() => proxy.stats().bytesForward === 9)
      proxy.set('forward', { blackhole: true })
      await eventually(() => proxy.stats().droppedForward === 9)
      expect(echo.received()).toBe(0)
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('cut closes open connections and refuses new ones until heal', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      const before = await connect(proxy.address)
      await before.roundTrip('x')
      proxy.cut()
      await before.closed

      const during = await connect(proxy.address)
      await during.closed
      expect(during.bytes()).toBe(0)
      expect(proxy.stats().connections).toBe(1)

      proxy.heal()
      const after = await connect(proxy.address)
      await after.roundTrip('y')
      expect(after.data().toString()).toBe('y')
      expect(proxy.stats().connections).toBe(2)
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('counts drops, and drops the same chunks for the same seed', async () => {
    const echo = await startEcho()
    const a = await FaultProxy.start({ target: echo.address, seed: 42 })
    const b = await FaultProxy.start({ target: echo.address, seed: 42 })
    try {
      // Each message is one chunk: the next is sent once the proxy is done with it.
      const dropPattern = async (proxy: FaultProxy): Promise<boolean[]> => {
        const client = await connect(proxy.address)
        proxy.set('forward', { dropRate: 0.5 })
        const dropped: boolean[] = []
        for (let i = 1; i <= 24; i++) {
          const before = proxy.stats().droppedForward
          const received = echo.received()
          client.socket.write('m'.repeat(i))
          await eventually(() => proxy.stats().droppedForward + echo.received() === before + received + i)
          dropped.push(proxy.stats().droppedForward > before)
        }
        const stats = proxy.stats()
        expect(stats.bytesForward).toBe((24 * 25) / 2)
        expect(stats.droppedForward).toBe(dropped.reduce((sum, d, i) => sum + (d ? i + 1 : 0), 0))
        await eventually(() => proxy.stats().bytesBackward === stats.bytesForward - stats.droppedForward)
        expect(client.bytes()).toBe(stats.bytesForward - stats.droppedForward)
        return dropped
      }
      const pattern = await dropPattern(a)
      expect(pattern).toContain(true)
      expect(pattern).toContain(false)
      expect(await dropPattern(b)).toEqual(pattern)

      // A rate of 1 drops everything, and nothing is counted as delayed.
      const client = await connect(a.address)
      a.set('forward', { dropRate: 1 })
      const received = echo.received()
      const dropped = a.stats().droppedForward
      client.socket.write('z'.repeat(100))
      await eventually(() => a.stats().droppedForward === dropped + 100)
      await sleep(50)
      expect(echo.received()).toBe(received)
      expect(a.stats()).toMatchObject({ connections: 2, droppedBackward: 0, delayedChunks: 0 })
    } finally {
      await a.close()
      await b.close()
      await echo.close()
    }
  })

  it('rejects bad faults', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      expect(() => proxy.set('forward', { dropRate: 1.5 })).toThrow(RangeError)
      expect(() => proxy.set('backward', { delayMs: -1 })).toThrow(RangeError)
      expect(() => proxy.set('both', { delayMs: Number.NaN })).toThrow(RangeError)
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('close destroys connections and stops listening', async () => {
    const echo = await startEcho()
    const proxy = await FaultProxy.start({ target: echo.address })
    try {
      const client = await connect(proxy.address)
      proxy.set('both', { delayMs: 60_000 })
      client.socket.write('never delivered')
      await eventually(() => proxy.stats().delayedChunks === 1)
      await proxy.close()
      await client.closed
      expect(echo.received()).toBe(0)
      await expect(connect(proxy.address)).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    } finally {
      await proxy.close()
      await echo.close()
    }
  })

  it('close leaves nothing that keeps the event loop alive', async () => {
    // In a child process, which must exit by itself: a chunk delayed by 60 s
    // is pending at close, and its timer (or a socket) would hold it.
    const script = `
      const net = require('node:net')
      const { FaultProxy } = require(${JSON.stringify(join(__dirname, 'harness/proxy.ts'))})
      ;(async () => {
        const echo = net.createServer((socket) => socket.pipe(socket))
        await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve))
        const proxy = await FaultProxy.start({ target: '127.0.0.1:' + echo.address().port })
        proxy.set('both', { delayMs: 60_000 })
        const [, port] = proxy.address.split(':')
        const client = net.connect(Number(port), '127.0.0.1')
        client.on('error', () => {})
        client.write('held')
        while (proxy.stats().delayedChunks === 0) await new Promise((resolve) => setTimeout(resolve, 5))
        await proxy.close()
        await new Promise((resolve) => echo.close(resolve))
        console.log('closed')
      })()
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', script], {
      cwd: join(__dirname, '..'),
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    const hang = setTimeout(() => child.kill(), 30_000)
    try {
      const [code, signal] = await once(child, 'exit')
      expect(stdout.trim()).toBe('closed')
      expect({ code, signal }).toEqual({ code: 0, signal: null })
    } finally {
      clearTimeout(hang)
      child.kill()
    }
  })
})
