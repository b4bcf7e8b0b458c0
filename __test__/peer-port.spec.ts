// Bad bytes on the peer port while three member processes serve a steady
// write load: raw garbage, a silent connection, and gRPC requests with a hello
// of another cluster, an oversized frame or a frame that does not decode, sent
// to a follower and to the leader. Each is refused and counted by the node it
// reached, and the group does not notice: no crash, no election, no lost or
// failed write, writes completing all along.
import { randomBytes } from 'node:crypto'
import { connect as http2Connect, constants as h2 } from 'node:http2'
import { connect as tcpConnect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import type { NodeStats } from '../ts/index.js'
import { startGroup, statusOf, type MemberProcess, type MemberStatus } from './harness/processes.js'
import { eventually, tempDir } from './helpers.js'

/** The gRPC status codes the node answers bad streams with. */
const GRPC = { PERMISSION_DENIED: 7, OUT_OF_RANGE: 11, INTERNAL: 13 }

/** The frame limit of the peer transport (256 MiB). */
const MAX_FRAME_BYTES = 256 * 1024 * 1024

function varint(n: number): Buffer {
  const out: number[] = []
  for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80)
  out.push(n)
  return Buffer.from(out)
}

/** A protobuf length-delimited field. */
function bytesField(field: number, value: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(value.length), value])
}

/** `Frame { hello: Hello { cluster_id, from, to } }` (and `SnapshotFrame`'s, whose hello is field 1 too). */
function helloFrame(clusterId: Buffer, from: number, to: number): Buffer {
  const hello = Buffer.concat([bytesField(1, clusterId), varint(2 << 3), varint(from), varint(3 << 3), varint(to)])
  return bytesField(1, hello)
}

/** A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the message. */
function grpcMessage(message: Buffer, claimedLength = message.length): Buffer {
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(claimedLength, 1)
  return Buffer.concat([prefix, message])
}

/** Resolves true once `socket` is closed, false if it is still open after `timeoutMs`. */
function closedWithin(socket: Socket, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs)
    socket.once('close', () => {
      clearTimeout(timer)
      resolve(true)
    })
  })
}

function openSocket(address: string): Promise<Socket> {
  const [host, port] = address.split(':') as [string, string]
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host, port: Number(port) })
    // Read (and drop) what the node sends, or its close would never be seen.
    socket.resume()
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}

/** Random bytes on a fresh connection; true when the node closed it within `timeoutMs`. */
async function sendGarbage(address: string, timeoutMs: number): Promise<boolean> {
  const socket = await openSocket(address)
  socket.on('error', () => {}) // the node may reset the connection
  const closed = closedWithin(socket, timeoutMs)
  socket.write(randomBytes(4096))
  const result = await closed
  socket.destroy()
  return result
}

interface GrpcAnswer {
  status: number
  message: string
}

/**
 * One HTTP/2 request to the Peer service, on a connection of its own, with
 * `body` as its request bytes, left open after them unless `end`; the
 * gRPC status the node answers with.
 */
function grpcCall(address: string, method: 'Raft' | 'Snapshot', body: Buffer, end: boolean, timeoutMs: number): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`http://${address}`)
    const timer = setTimeout(() => done(new Error(`no gRPC status from ${address} within ${timeoutMs} ms`)), timeoutMs)
    const done = (err: Error | undefined, answer?: GrpcAnswer): void => {
      clearTimeout(timer)
      session.destroy()
      if (err) reject(err)
      else resolve(answer!)
    }
    session.on('error', (err) => done(err))
    const stream = session.request({
      [h2.HTTP2_HEADER_METHOD]: 'POST',
      [h2.HTTP2_HEADER_PATH]: `/metastore.peer.v1.Peer/${method}`,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      te: 'trailers',
    })
    // A status comes in the headers (a trailers-only answer) or in the trailers.
    const answer = (headers: Record<string, unknown>): void => {
      if (headers['grpc-status'] === undefined) return
      done(undefined, { status: Number(headers['grpc-status']), message: decodeURIComponent(String(headers['grpc-message'] ?? '')) })
    }
    stream.on('response', answer)
    stream.on('trailers', answer)
    stream.on('error', () => {}) // a reset after the answer
    stream.on('data', () => {})
    stream.write(body)
    if (end) stream.end()
  })
}

/** What one round of bad input met. */
interface Attack {
  /** The refusals its inputs must add to the node's count, one each. */
  refusals: number
  /** Milliseconds from connect to close of the silent connection; undefined if still open after 10 s. */
  silentClosedAfterMs: number | undefined
  answers: Record<string, GrpcAnswer>
  garbageClosed: boolean[]
}

/**
 * Every kind of bad input against member `target`; the hellos name member
 * `peerId` as their sender, so that only their cluster id is wrong. Each
 * counts as one refusal: a connection that ends
 * without a stream saying hello counts once (the garbage, the silent one),
 * and a refused stream counts once for itself and not again for its
 * connection.
 */
async function attack(target: MemberProcess, peerId: number): Promise<Attack> {
  const address = target.spec.initialCluster[target.id]!
  const connectedAt = Date.now()
  const silent = await openSocket(address)
  silent.on('error', () => {})
  const silentClosed = closedWithin(silent, 10_000).then((closed) => (closed ? Date.now() - connectedAt : undefined))

  const garbageClosed = await Promise.all([0, 1, 2].map(() => sendGarbage(address, 10_000)))

  const wrongCluster = helloFrame(randomBytes(16), peerId, target.id)
  const answers = {
    'raft stream of another cluster': await grpcCall(address, 'Raft', grpcMessage(wrongCluster), true, 10_000),
    'snapshot stream of another cluster': await grpcCall(address, 'Snapshot', grpcMessage(wrongCluster), true, 10_000),
    // Claims one byte more than the limit; the stream stays open, so only the claim can refuse it.
    'oversized frame': await grpcCall(address, 'Raft', grpcMessage(randomBytes(1024), MAX_FRAME_BYTES + 1), false, 10_000),
    // Field 1 with wire type 7, which protobuf does not have.
    'frame that does not decode': await grpcCall(address, 'Raft', grpcMessage(Buffer.from([0x0f, 0xff, 0xff, 0xff])), true, 10_000),
  }
  const silentClosedAfterMs = await silentClosed
  silent.destroy()
  return { refusals: 1 + garbageClosed.length + Object.keys(answers).length, silentClosedAfterMs, answers, garbageClosed }
}

async function stats(m: MemberProcess): Promise<NodeStats> {
  const r = await m.request('stats')
  if (!r.ok) throw new Error(`stats of member ${m.id}: ${r.message}`)
  return r.result as NodeStats
}

async function refused(m: MemberProcess): Promise<number> {
  return (await stats(m)).transport!.refused
}

describe('bad input on the peer port', () => {
  const dir = tempDir('metastore-peer-port-')

  it('is refused and counted by the node it reached, while the group keeps its leader and every write', async () => {
    // Default ticks (100 ms; elections after 1 to 2 s), so that a slow moment
    // of this shared machine does not pass for an election the bad input caused.
    const members = await startGroup(3, `${dir}/group`, { tickIntervalMs: 100 })
    try {
      let initial: MemberStatus | undefined
      await eventually(async () => {
        const seen = await Promise.all(members.map((m) => statusOf(m)))
        initial = seen.find((s) => s?.role === 'leader')
        return initial !== undefined && seen.every((s) => s?.leaderId === initial!.leaderId && s.term === initial!.term)
      }, 60_000)
      const { leaderId, term } = initial!
      const leader = members.find((m) => m.id === leaderId)!
      const [follower, untouched] = members.filter((m) => m !== leader) as [MemberProcess, MemberProcess]
      const pids = members.map((m) => m.pid)

      // 32 writes in flight through every member, for as long as the test lasts.
      const acked: { key: string; at: number }[] = []
      const failed: { key: string; code?: string; outcome?: string }[] = []
      let stop = false
      const loadDeadline = Date.now() + 120_000
      const load = Array.from({ length: 32 }, async (_, w) => {
        const m = members[w % members.length]!
        for (let i = 0; !stop && i < 100_000 && Date.now() < loadDeadline; i++) {
          const key = `w${w}-${i}`
          const r = await m.request('put', key, key)
          if (r.ok) acked.push({ key, at: Date.now() })
          else failed.push({ key, code: r.code, outcome: r.outcome })
        }
      })

      // Terms and leaders every member reports while the bad input arrives.
      const seen: { id: number; status: MemberStatus | undefined }[] = []
      const watch = (async () => {
        for (let i = 0; !stop && i < 1_000; i++) {
          seen.push(...(await Promise.all(members.map(async (m) => ({ id: m.id, status: await statusOf(m, 5_000) })))))
          await sleep(200)
        }
      })()

      let start = 0
      let end = 0
      try {
        await eventually(() => acked.length >= 200, 60_000)
        const before = await Promise.all(members.map(refused))
        start = Date.now()
        const [onFollower, onLeader] = await Promise.all([attack(follower, leader.id), attack(leader, follower.id)])
        end = Date.now()

        for (const [who, a] of [
          ['follower', onFollower],
          ['leader', onLeader],
        ] as const) {
          expect(a.garbageClosed, `the ${who} closes connections that send garbage`).toEqual([true, true, true])
          expect(a.silentClosedAfterMs, `the ${who} closes a silent connection within 10 s`).toBeDefined()
          expect(a.answers, `what the ${who} answers bad streams`).toEqual({
            'raft stream of another cluster': { status: GRPC.PERMISSION_DENIED, message: expect.stringContaining('cluster') },
            'snapshot stream of another cluster': { status: GRPC.PERMISSION_DENIED, message: expect.stringContaining('cluster') },
            'oversized frame': { status: GRPC.OUT_OF_RANGE, message: expect.stringContaining('too large') },
            'frame that does not decode': { status: GRPC.INTERNAL, message: expect.any(String) },
          })
        }
        const grown = async (): Promise<number[]> => (await Promise.all(members.map(refused))).map((n, i) => n - before[i]!)
        const expected = (m: MemberProcess): number => (m === follower ? onFollower.refusals : m === leader ? onLeader.refusals : 0)
        // A connection counts when the node drops it, just after the client sees it closed.
        await eventually(async () => (await grown()).every((n, i) => n >= expected(members[i]!)), 15_000).catch(() => {})
        const growth = await grown()
        for (const [i, m] of members.entries()) {
          if (m === untouched) expect(growth[i], 'refusals on the member no bad input reached').toBe(0)
          else expect(growth[i], `refusals counted on member ${m.id}`).toBeGreaterThanOrEqual(expected(m))
        }
      } finally {
        stop = true
        await Promise.all([...load, watch])
      }

      // No member restarted or crashed, and no election happened.
      expect(members.map((m) => m.pid)).toEqual(pids)
      expect(members.map((m) => m.lastExit)).toEqual([undefined, undefined, undefined])
      expect(seen.length, 'statuses seen during the bad input').toBeGreaterThan(0)
      const changed = seen.filter((s) => s.status?.term !== term || s.status.leaderId !== leaderId)
      expect(changed, 'members reporting another term or leader, or not answering').toEqual([])

      // Writes kept completing: acknowledged ones in every second of the window.
      expect(failed, 'writes that failed').toEqual([])
      const idle: number[] = []
      for (let slice = start; slice + 1_000 <= end; slice += 1_000) {
        if (!acked.some((a) => a.at >= slice && a.at < slice + 1_000)) idle.push(slice - start)
      }
      expect(end - start, 'the window lasts through the silent connection').toBeGreaterThanOrEqual(4_000)
      expect(idle, 'seconds of the window (ms from its start) without an acknowledged write').toEqual([])

      // Every acknowledged write reads back from every member.
      for (const reader of members) {
        for (let i = 0; i < acked.length; i += 200) {
          const keys = acked.slice(i, i + 200).map((a) => a.key)
          const got = await Promise.all(keys.map((k) => reader.request('get', k)))
          const lost = keys.filter((k, j) => !(got[j]!.ok && got[j]!.result === k))
          expect(lost, `acknowledged writes missing on member ${reader.id}`).toEqual([])
        }
      }
    } finally {
      await Promise.all(members.map((m) => m.kill('SIGKILL')))
    }
  }, 300_000)
})
