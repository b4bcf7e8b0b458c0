// One group whose members run in both ways a user can run them: two service
// processes that embed their node (harness/member.ts) and a `metastore serve`
// process used through its HTTP API, on loopback over gRPC, with RocksDB.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { CliProcess, run } from './harness/cli.js'
import { freePorts, MemberProcess, statusOf, type Reply } from './harness/processes.js'
import { eventually, tempDir } from './helpers.js'

/** A write waits out an election or two on a loaded machine before it fails. */
const REQUEST_TIMEOUT_MS = 30_000
/** Bounds each HTTP exchange with the serve node (a request waits at most REQUEST_TIMEOUT_MS in the store). */
const HTTP_TIMEOUT_MS = 60_000
/** Both kinds must name the same token: each derives the cluster id from it and the member ids. */
const CLUSTER_TOKEN = 'mixed-group'

/** A member of the group, whichever way it runs, used as its users use it. */
interface Node {
  readonly id: number
  put(key: string, value: string): Promise<Reply>
  /** The value, or null when the key is absent. */
  get(key: string): Promise<Reply>
  /** Its role and the leader it knows; undefined when it does not answer. */
  status(): Promise<{ role: string; leaderId: number } | undefined>
}

function embeddedNode(member: MemberProcess): Node {
  return {
    id: member.id,
    put: (key, value) => member.request('put', key, value),
    get: (key) => member.request('get', key),
    status: () => statusOf(member, 5_000),
  }
}

/** The serve node through its HTTP API; an answer that is not a 2xx becomes a failed reply with the body's code and outcome. */
function servedNode(id: number, http: string): Node {
  const kv = (key: string): string => `http://${http}/v1/kv/${encodeURIComponent(key)}`
  const failed = async (res: Response): Promise<Reply> => ({ ok: false, ...((await res.json()) as object) })
  return {
    id,
    async put(key, value) {
      const res = await fetch(kv(key), { method: 'PUT', body: value, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })
      return res.status === 200 ? { ok: true, result: await res.json() } : failed(res)
    },
    async get(key) {
      const res = await fetch(kv(key), { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })
      if (res.status === 200) return { ok: true, result: await res.text() }
      const reply = await failed(res)
      return reply.code === 'ERR_KEY_NOT_FOUND' ? { ok: true, result: null } : reply
    },
    async status() {
      const res = await fetch(`http://${http}/status`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined)
      return res?.status === 200 ? ((await res.json()) as { role: string; leaderId: number }) : undefined
    },
  }
}

/** The leader every node in `nodes` names, once they agree and it says it leads. */
async function agreedLeader(nodes: Node[]): Promise<number> {
  let leader = 0
  await eventually(async () => {
    const seen = await Promise.all(nodes.map((n) => n.status()))
    const ids = new Set(seen.map((s) => s?.leaderId ?? 0))
    const [id] = ids
    leader = ids.size === 1 && seen[nodes.findIndex((n) => n.id === id)]?.role === 'leader' ? id! : 0
    return leader !== 0
  }, 60_000)
  return leader
}

async function put(node: Node, key: string, value: string): Promise<void> {
  expect(await node.put(key, value), `put ${key} through node ${node.id}`).toMatchObject({ ok: true })
}

async function expectValue(node: Node, key: string, value: string): Promise<void> {
  expect(await node.get(key), `get ${key} through node ${node.id}`).toMatchObject({ ok: true, result: value })
}

describe('a group of embedded members and a metastore serve process', () => {
  const dir = tempDir('metastore-mixed-')
  const embedded: MemberProcess[] = []
  let serve: CliProcess | undefined
  // Registered after tempDir's hook, so it runs first: nothing writes into the dir while it is removed.
  afterAll(async () => {
    serve?.kill('SIGKILL')
    await Promise.all([...embedded.map((m) => m.kill('SIGKILL')), serve?.exited])
  })

  it('elects one leader, replicates writes made through either kind to both, and commits on while an embedded member is killed and restarted and while the serve node is stopped', async () => {
    const [raft1, raft2, raft3, httpPort] = await freePorts(4)
    const initialCluster = { 1: `127.0.0.1:${raft1}`, 2: `127.0.0.1:${raft2}`, 3: `127.0.0.1:${raft3}` }
    const http = `127.0.0.1:${httpPort}`
    for (const nodeId of [1, 2]) {
      embedded.push(
        new MemberProcess({
          nodeId,
          initialCluster,
          clusterToken: CLUSTER_TOKEN,
          dataDir: join(dir, 'embedded'),
          tickIntervalMs: 10,
          requestTimeoutMs: REQUEST_TIMEOUT_MS,
        }),
      )
    }
    const config = join(dir, 'serve.yaml')
    writeFileSync(
      config,
      [
        'server:',
        '  raft:',
        '    tick_interval: 10ms',
        `    request_timeout: ${REQUEST_TIMEOUT_MS / 1000}s`,
        '  storage:',
        '    engine: rocksdb',
        `    data_dir: ${join(dir, 'serve')}`,
        '    sync: false',
        '  cluster:',
        '    node_id: 3',
        '    initial_cluster:',
        ...Object.entries(initialCluster).map(([id, address]) => `      ${id}: ${address}`),
        `    cluster_token: ${CLUSTER_TOKEN}`,
        '  http:',
        `    listen: ${http}`,
        '',
      ].join('\n'),
    )
    serve = new CliProcess(['serve', '--config', config])
    await Promise.all([...embedded.map((m) => m.start()), serve.line(/ started node=3 /, 60_000)])
    const [one, two] = embedded.map(embeddedNode) as [Node, Node]
    const three = servedNode(3, http)
    const nodes = [one, two, three]

    // One leader that every node names, and writes through each kind read back on all three.
    const leader = await agreedLeader(nodes)
    for (const writer of nodes) await put(writer, `from ${writer.id}`, `value ${writer.id}`)
    for (const reader of nodes) for (const writer of nodes) await expectValue(reader, `from ${writer.id}`, `value ${writer.id}`)

    // `metastore status` against the serve node lists every member, one of them the leader.
    const shown = await run(['status', '--endpoint', http])
    expect(shown.code, shown.stderr).toBe(0)
    const named = /^node 3: (?:leader|follower), term \d+, leader (\d+),/m.exec(shown.stdout)
    expect(named, shown.stdout).not.toBeNull()
    const rows = shown.stdout.split('\n').filter((l) => /^\d+\s/.test(l))
    expect(rows).toHaveLength(3)
    for (const [id, address] of Object.entries(initialCluster)) {
      expect(rows.find((r) => r.startsWith(`${id} `))).toMatch(new RegExp(`^${id}\\s+${address}\\s+voter\\b`))
    }
    expect(rows.filter((r) => r.includes('*'))).toEqual([expect.stringMatching(new RegExp(`^${named![1]}\\s`))])

    // SIGKILL of an embedded member (the leader, when an embedded member leads): the other two commit on.
    const victim = embedded.find((m) => m.id === leader) ?? embedded[0]!
    const survivor = embedded.find((m) => m !== victim)!
    await victim.kill('SIGKILL')
    expect(victim.lastExit).toEqual({ code: null, signal: 'SIGKILL' })
    const up = [embeddedNode(survivor), three]
    for (const writer of up) await put(writer, `while ${victim.id} down, from ${writer.id}`, `down ${writer.id}`)
    for (const reader of up) for (const writer of up) await expectValue(reader, `while ${victim.id} down, from ${writer.id}`, `down ${writer.id}`)

    // Restarted on its data dir, it catches up on what was written while it was down.
    await victim.start()
    expect(victim.running).toBe(true)
    const restarted = embeddedNode(victim)
    for (const writer of up) await expectValue(restarted, `while ${victim.id} down, from ${writer.id}`, `down ${writer.id}`)
    for (const writer of nodes) await expectValue(restarted, `from ${writer.id}`, `value ${writer.id}`)

    // SIGTERM stops the serve node with exit 0; the embedded members, 2 of 3, still commit.
    const stopAt = serve.lines.length
    serve.kill('SIGTERM')
    expect(await serve.exited).toEqual({ code: 0, signal: null })
    expect(serve.lines.slice(stopAt).join('\n')).toMatch(/ stopping node=3 signal=SIGTERM\n.* stopped node=3$/)
    const pair = embedded.map(embeddedNode)
    for (const writer of pair) await put(writer, `after serve stopped, from ${writer.id}`, `pair ${writer.id}`)
    for (const reader of pair) for (const writer of pair) await expectValue(reader, `after serve stopped, from ${writer.id}`, `pair ${writer.id}`)
  }, 300_000)
})
