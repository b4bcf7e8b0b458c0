// `store.metrics()`, and `metastore serve` / `status` / `transfer-leader` / `member` as a
// user runs them: serve processes on loopback, used through their HTTP API.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { MetaStore, parseConfig } from '../ts/index.js'
import type { NodeStatus } from '../ts/http.js'
import { METRIC_NAMES } from '../ts/metrics.js'
import type { MemberInfo } from '../ts/native.js'
import { CliProcess, run } from './harness/cli.js'
import { freePorts } from './harness/processes.js'
import { eventually, tempDir } from './helpers.js'

const ROOT = join(__dirname, '..')

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** The samples of a Prometheus text exposition. */
function samples(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]))
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const found = samples(text).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`)
  return found[0]!.value
}

describe('store.metrics()', () => {
  it("renders a single node's stats as Prometheus text, each metric described and labelled with the node id", async () => {
    const store = await MetaStore.open({ engine: 'memory' })
    try {
      for (let i = 0; i < 20; i++) await store.put(`k${i}`, 'v')
      const before = await store.metrics()
      for (let i = 0; i < 20; i++) await store.delete(`k${i}`)
      const after = await store.metrics()

      // A single node has no network end; every other figure is there, with its HELP and TYPE.
      const local = METRIC_NAMES.filter((n) => !n.startsWith('metastore_transport_'))
      for (const name of local) {
        expect(after).toMatch(new RegExp(`^# HELP ${name} \\S.*$`, 'm'))
        expect(after).toMatch(new RegExp(`^# TYPE ${name} ${name.endsWith('_total') ? 'counter' : 'gauge'}$`, 'm'))
      }
      expect(after).not.toContain('metastore_transport_')
      expect(new Set(samples(after).map((s) => s.name))).toEqual(new Set(local))
      for (const s of samples(after)) expect(s.labels.node_id).toBe('1')

      expect(value(after, 'metastore_raft_role', { role: 'leader' })).toBe(1)
      expect(value(after, 'metastore_raft_role', { role: 'follower' })).toBe(0)
      expect(value(after, 'metastore_raft_leader_id')).toBe(1)
      expect(value(after, 'metastore_storage_engine', { engine: 'memory' })).toBe(1)
      expect(value(before, 'metastore_batch_proposals_total')).toBeGreaterThanOrEqual(20)
      expect(value(after, 'metastore_batch_proposals_total')).toBeGreaterThanOrEqual(40)
      expect(value(after, 'metastore_raft_applied_index')).toBeGreaterThanOrEqual(value(before, 'metastore_raft_applied_index') + 20)
      expect(value(after, 'metastore_raft_commit_index')).toBeGreaterThanOrEqual(value(after, 'metastore_raft_applied_index'))
    } finally {
      await store.close()
    }
  })

  it('rejects with ERR_CLOSED once the store is closed', async () => {
    const store = await MetaStore.open({ engine: 'memory' })
    await store.close()
    await expect(store.metrics()).rejects.toMatchObject({ code: 'ERR_CLOSED' })
  })
})

interface Node {
  id: number
  /** Where the other members reach it. */
  raft: string
  http: string
  process: CliProcess
}

/**
 * Three `serve` processes on free loopback ports, each with its config file
 * and data dir under `dir`; `raft` adds lines to their `server.raft`.
 */
async function serveGroup(dir: string, raft: string[] = []): Promise<Node[]> {
  const ports = await freePorts(6)
  const cluster = ports
    .slice(0, 3)
    .map((p, i) => `      ${i + 1}: 127.0.0.1:${p}`)
    .join('\n')
  return [1, 2, 3].map((id) => {
    const http = `127.0.0.1:${ports[2 + id]}`
    const file = join(dir, `node-${id}.yaml`)
    writeFileSync(
      file,
      [
        'server:',
        '  raft:',
        '    tick_interval: 10ms',
        // A write to a node without quorum stays in flight until the test stops the node.
        '    request_timeout: 60s',
        ...raft,
        '    batch:',
        '      max_proposal_bytes: 64KB',
        '  storage:',
        '    engine: rocksdb',
        `    data_dir: ${join(dir, `data-${id}`)}`,
        '    sync: false',
        '  cluster:',
        `    node_id: ${id}`,
        '    initial_cluster:',
        cluster,
        '  http:',
        `    listen: ${http}`,
        '',
      ].join('\n'),
    )
    return { id, raft: `127.0.0.1:${ports[id - 1]}`, http, process: new CliProcess(['serve', '--config', file]) }
  })
}

async function status(node: Node): Promise<NodeStatus> {
  const res = await fetch(`http://${node.http}/status`)
  expect(res.status).toBe(200)
  return (await res.json()) as never
}

/** The node every running node names as leader, once they agree on one. */
async function agreedLeader(nodes: Node[]): Promise<Node> {
  let leader: Node | undefined
  await eventually(async () => {
    const seen = await Promise.all(nodes.filter((n) => n.process.running).map((n) => status(n).catch(() => undefined)))
    const ids = new Set(seen.map((s) => s?.leaderId))
    const [id] = ids
    leader = ids.size === 1 ? nodes.find((n) => n.id === id && n.process.running) : undefined
    return leader !== undefined
  }, 30_000)
  return leader!
}

const kv = (node: Node, key: string): string => `http://${node.http}/v1/kv/${encodeURIComponent(key)}`

async function members(node: Node): Promise<MemberInfo[]> {
  const res = await fetch(`http://${node.http}/v1/members`)
  expect(res.status).toBe(200)
  return (await res.json()) as never
}

/** A `serve` process started with `join: true`: it waits to be added to the group. */
async function joiner(dir: string, id: number): Promise<Node> {
  const [raft, http] = await freePorts(2)
  const file = join(dir, `node-${id}.yaml`)
  writeFileSync(
    file,
    [
      'server:',
      '  raft:',
      '    tick_interval: 10ms',
      '    promote_max_lag: 8',
      '    check_quorum: false',
      '  storage:',
      '    engine: rocksdb',
      `    data_dir: ${join(dir, `data-${id}`)}`,
      '    sync: false',
      '  cluster:',
      `    node_id: ${id}`,
      '    join: true',
      `    listen: 127.0.0.1:${raft}`,
      `    advertise: 127.0.0.1:${raft}`,
      '  http:',
      `    listen: 127.0.0.1:${http}`,
      '',
    ].join('\n'),
  )
  return { id, raft: `127.0.0.1:${raft}`, http: `127.0.0.1:${http}`, process: new CliProcess(['serve', '--config', file]) }
}

/** The rows of a member table as printed by the CLI, each split into its cells. */
function tableRows(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => /^\d+\s/.test(l))
    .map((l) => l.split(/\s+/))
}

describe('metastore serve', () => {
  const dir = tempDir('metastore-serve-')
  const started: Node[] = []
  afterAll(() => {
    for (const n of started) n.process.kill('SIGKILL')
  })

  it('serves keys, metrics, health and status from every node; SIGKILL of the leader is logged as a new leader by another node; SIGTERM stops a node with exit 0 and answers its request in flight with its outcome', async () => {
    const nodes = await serveGroup(dir)
    started.push(...nodes)
    for (const n of nodes) await n.process.line(/ leader node=\d+ leader=\d+ /, 60_000)
    await eventually(async () => {
      const codes = await Promise.all(nodes.map((n) => fetch(`http://${n.http}/health`).then((r) => r.status, () => 0)))
      return codes.every((c) => c === 200)
    }, 30_000)

    const metricsBefore = await (await fetch(`http://${nodes[0]!.http}/metrics`)).text()

    // Keys written through each node read back on every node, binary values intact.
    for (const writer of nodes) {
      for (let i = 0; i < 10; i++) {
        const res = await fetch(kv(writer, `key ${writer.id}/${i}`), { method: 'PUT', body: `value ${writer.id}/${i}` })
        expect(res.status).toBe(200)
        expect(await res.json()).toEqual({ index: expect.any(Number), existed: false })
      }
    }
    for (const reader of nodes) {
      for (const writer of nodes) {
        const res = await fetch(kv(reader, `key ${writer.id}/9`))
        expect(res.status).toBe(200)
        expect(await res.text()).toBe(`value ${writer.id}/9`)
      }
    }
    const binary = Buffer.from([0, 255, 1, 254])
    expect((await fetch(kv(nodes[1]!, 'bin'), { method: 'PUT', body: binary })).status).toBe(200)
    expect(Buffer.from(await (await fetch(kv(nodes[2]!, 'bin'))).arrayBuffer())).toEqual(binary)
    const again = await fetch(kv(nodes[2]!, 'key 1/0'), { method: 'PUT', body: 'changed' })
    expect(await again.json()).toMatchObject({ existed: true })
    const deleted = await fetch(kv(nodes[2]!, 'key 1/0'), { method: 'DELETE' })
    expect(await deleted.json()).toEqual({ existed: true })
    const absent = await fetch(kv(nodes[0]!, 'key 1/0'))
    expect(absent.status).toBe(404)
    expect(await absent.json()).toMatchObject({ code: 'ERR_KEY_NOT_FOUND', outcome: 'not-applied' })

    // Requests the API refuses say so, and that nothing was applied.
    const wrongMethod = await fetch(kv(nodes[0]!, 'k'), { method: 'POST', body: 'x' })
    expect(wrongMethod.status).toBe(405)
    expect(wrongMethod.headers.get('allow')).toBe('GET, PUT, DELETE')
    expect(await wrongMethod.json()).toMatchObject({ code: 'ERR_METHOD_NOT_ALLOWED', outcome: 'not-applied' })
    expect((await fetch(`http://${nodes[0]!.http}/metrics`, { method: 'DELETE' })).status).toBe(405)
    const unknownPath = await fetch(`http://${nodes[0]!.http}/v2/kv/k`)
    expect(unknownPath.status).toBe(404)
    expect(await unknownPath.json()).toMatchObject({ code: 'ERR_NOT_FOUND', outcome: 'not-applied' })
    const query = await fetch(`${kv(nodes[0]!, 'k')}?consistency=stale`)
    expect(query.status).toBe(400)
    expect(await query.json()).toMatchObject({ code: 'ERR_BAD_REQUEST', message: expect.stringContaining('consistency') })
    expect((await fetch(`http://${nodes[0]!.http}/v1/kv/%E0%A4%A`)).status).toBe(400)
    const large = await fetch(kv(nodes[0]!, 'large'), { method: 'PUT', body: Buffer.alloc(100 * 1024) })
    expect(large.status).toBe(413)
    expect(await large.json()).toMatchObject({ code: 'ERR_TOO_LARGE', outcome: 'not-applied' })
    expect((await fetch(kv(nodes[0]!, 'large'))).status).toBe(404)

    // Metrics of the node: named, typed, labelled, and moved by the writes.
    const metrics = await fetch(`http://${nodes[0]!.http}/metrics`)
    expect(metrics.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
    const text = await metrics.text()
    for (const name of METRIC_NAMES) expect(text).toContain(`# TYPE ${name} `)
    expect(value(text, 'metastore_raft_applied_index')).toBeGreaterThanOrEqual(value(metricsBefore, 'metastore_raft_applied_index') + 30)
    expect(value(text, 'metastore_transport_messages_sent_total')).toBeGreaterThan(0)
    expect(value(text, 'metastore_transport_received_bytes_total')).toBeGreaterThan(0)
    expect(value(text, 'metastore_storage_engine', { engine: 'rocksdb' })).toBe(1)
    expect(samples(text).every((s) => s.labels.node_id === '1')).toBe(true)

    // `metastore status` against any node: three members, one of them the leader.
    const leader = await agreedLeader(nodes)
    const shown = await run(['status', '--endpoint', nodes[2]!.http])
    expect(shown.code, shown.stderr).toBe(0)
    const rows = shown.stdout.split('\n').filter((l) => /^\d+\s/.test(l))
    expect(rows).toHaveLength(3)
    for (const n of nodes) expect(rows.find((r) => r.startsWith(`${n.id} `))).toContain(n.raft)
    expect(rows.filter((r) => r.includes('*'))).toEqual([expect.stringMatching(new RegExp(`^${leader.id}\\s`))])
    expect(shown.stdout).toMatch(/^node 3: (leader|follower), term \d+, leader \d+, commit \d+, applied \d+$/m)
    for (const row of rows) expect(row).toMatch(/^\d+\s+127\.0\.0\.1:\d+\s+voter\b/)
    // The leader knows how far each member's log matches its own.
    const fromLeader = await run(['status', '--endpoint', leader.http])
    expect(fromLeader.stdout).toMatch(/^ID\s+ADDRESS\s+ROLE\s+LEADER\s+MATCH\s+LAG$/m)
    expect(fromLeader.stdout.split('\n').filter((l) => /^\d+\s.*\s\d+\s+\d+$/.test(l))).toHaveLength(3)

    // SIGKILL of the leader: another node logs that it became leader; writes go on and nothing acknowledged is lost.
    const survivors = nodes.filter((n) => n !== leader)
    const from = survivors.map((n) => n.process.lines.length)
    leader.process.kill('SIGKILL')
    expect(await leader.process.exited).toMatchObject({ signal: 'SIGKILL' })
    const took = await Promise.any(survivors.map((n, i) => n.process.line(/ role node=\d+ from=\S+ to=leader /, 30_000, from[i])))
    const next = survivors.find((n) => took.includes(` node=${n.id} `))!
    expect(next).toBeDefined()
    await eventually(async () => (await fetch(kv(next, 'after'), { method: 'PUT', body: 'kill' })).status === 200, 30_000)
    for (const n of survivors) {
      for (const writer of nodes) expect(await (await fetch(kv(n, `key ${writer.id}/9`))).text()).toBe(`value ${writer.id}/9`)
    }

    // Kill the second-to-last node: the last one has no quorum, so a write to it waits until SIGTERM.
    const [lone, other] = next === survivors[0] ? [survivors[1]!, survivors[0]!] : [survivors[0]!, survivors[1]!]
    other.process.kill('SIGKILL')
    await other.process.exited
    const pending = fetch(kv(lone, 'during-shutdown'), { method: 'PUT', body: 'x' })
    await eventually(async () => (await fetch(`http://${lone.http}/health`)).status === 503, 30_000)
    const stopAt = lone.process.lines.length
    lone.process.kill('SIGTERM')
    const answer = await pending
    expect(answer.status).toBe(503)
    const body = (await answer.json()) as { code: string; outcome: string }
    expect(['not-applied', 'unknown']).toContain(body.outcome)
    expect(body.code).toBe('ERR_CLOSED')
    expect(await lone.process.exited).toEqual({ code: 0, signal: null })
    expect(lone.process.lines.slice(stopAt).join('\n')).toMatch(/ stopping node=\d+ signal=SIGTERM\n.* stopped node=\d+$/)
  }, 240_000)

  it('transfer-leader moves leadership to each node in turn through a follower, and every node names the new leader; status shows how far a stopped member lags; a transfer to an unknown node, to an unreachable one or with a bad body fails saying whether it happened', async () => {
    const groupDir = join(dir, 'transfer')
    mkdirSync(groupDir)
    const nodes = await serveGroup(groupDir)
    started.push(...nodes)
    for (const n of nodes) await n.process.line(/ leader node=\d+ leader=\d+ /, 60_000)
    const first = await agreedLeader(nodes)

    // Each node in turn, asked of the member that is neither the leader nor the one to lead.
    const others = nodes.filter((n) => n !== first)
    let leader = first
    for (const to of [...others, first]) {
      const via = nodes.find((n) => n !== leader && n !== to)!
      const moved = await run(['transfer-leader', '--endpoint', via.http, '--to', String(to.id)])
      expect(moved.code, moved.stderr).toBe(0)
      expect(moved.stdout).toBe(`leader: node ${to.id} (${to.raft})`)
      await eventually(async () => (await Promise.all(nodes.map(status))).every((s) => s.leaderId === to.id), 30_000)
      for (const n of nodes) {
        const shown = await run(['status', '--endpoint', n.http])
        expect(shown.code, shown.stderr).toBe(0)
        expect(shown.stdout).toMatch(new RegExp(`^node ${n.id}: ${n === to ? 'leader' : 'follower'}, term \\d+, leader ${to.id},`, 'm'))
        const starred = shown.stdout.split('\n').filter((l) => /^\d+\s/.test(l) && l.includes('*'))
        expect(starred).toEqual([expect.stringMatching(new RegExp(`^${to.id}\\s`))])
      }
      // The group works under its new leader: a write through the old one reads back on the new one.
      const key = `written after the move to ${to.id}`
      await eventually(async () => (await fetch(kv(leader, key), { method: 'PUT', body: 'v' })).status === 200, 30_000)
      expect(await (await fetch(kv(to, key))).text()).toBe('v')
      leader = to
    }

    // Only the leader knows how far each member's log matches its own.
    const [follower, bystander] = others as [Node, Node]
    const fromLeader = await status(leader)
    for (const m of fromLeader.members) expect(m).toMatchObject({ matchIndex: expect.any(Number), lag: expect.any(Number) })
    for (const m of (await status(follower)).members) {
      expect(m.matchIndex).toBeUndefined()
      expect(m.lag).toBeUndefined()
    }

    // A stopped member falls behind by every write the other two commit, and the leader's status shows it.
    follower.process.kill('SIGSTOP')
    try {
      for (let i = 0; i < 20; i++) expect((await fetch(kv(leader, `while stopped ${i}`), { method: 'PUT', body: 'v' })).status).toBe(200)
      await eventually(async () => {
        const members = (await status(leader)).members
        return members.find((m) => m.id === follower.id)!.lag! >= 20 && members.find((m) => m.id === bystander.id)!.lag === 0
      }, 30_000)
      const lagging = await run(['status', '--endpoint', leader.http])
      expect(lagging.code, lagging.stderr).toBe(0)
      expect(lagging.stdout).toMatch(/^ID\s+ADDRESS\s+ROLE\s+LEADER\s+MATCH\s+LAG$/m)
      const lagOf = (id: number): number => Number(/(\d+)$/.exec(lagging.stdout.split('\n').find((l) => l.startsWith(`${id} `))!)![1])
      expect(lagOf(follower.id)).toBeGreaterThanOrEqual(20)
      expect(lagOf(bystander.id)).toBe(0)

      // The stopped member cannot catch up to take over: the transfer times out, and may still happen.
      const timedOut = await fetch(`http://${bystander.http}/v1/leader`, { method: 'POST', body: JSON.stringify({ to: follower.id, timeoutMs: 300 }) })
      expect(timedOut.status).toBe(503)
      expect(await timedOut.json()).toMatchObject({ code: 'ERR_TIMEOUT', outcome: 'unknown' })
      const cliTimedOut = await run(['transfer-leader', '--endpoint', bystander.http, '--to', String(follower.id), '--timeout', '300'])
      expect(cliTimedOut.code).toBe(1)
      expect(cliTimedOut.stderr).toContain(`transfer to node ${follower.id} failed: ERR_TIMEOUT (outcome: unknown)`)
    } finally {
      follower.process.kill('SIGCONT')
    }
    // Resumed, it catches up (and may take over after all: the outcome was unknown).
    const settled = await agreedLeader(nodes)
    await eventually(async () => (await status(settled)).members.every((m) => m.lag === 0), 30_000)
    const [asked, other] = nodes.filter((n) => n !== settled) as [Node, Node]

    // A node that is no voter: refused before anything moved.
    const unknown = await run(['transfer-leader', '--endpoint', asked.http, '--to', '9'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('transfer to node 9 failed: ERR_UNKNOWN_NODE (outcome: not-applied)')
    const unknownHttp = await fetch(`http://${settled.http}/v1/leader`, { method: 'POST', body: '{"to": 9}' })
    expect(unknownHttp.status).toBe(400)
    expect(await unknownHttp.json()).toMatchObject({ code: 'ERR_UNKNOWN_NODE', outcome: 'not-applied' })

    // Bodies the API does not take, each refused with what it takes.
    const refused = async (body: string, message: string): Promise<void> => {
      const res = await fetch(`http://${asked.http}/v1/leader`, { method: 'POST', body })
      expect(res.status, body).toBe(400)
      expect(await res.json()).toEqual({ code: 'ERR_BAD_REQUEST', outcome: 'not-applied', message: expect.stringContaining(message) })
    }
    await refused(`{"to": ${other.id}, "force": true}`, "unknown key 'force'")
    await refused(`{"to": "${other.id}"}`, `to must be a positive integer (a node id), got "${other.id}"`)
    await refused('{"to": 0}', 'to must be a positive integer (a node id), got 0')
    await refused('{"to": 1.5}', 'got 1.5')
    await refused('{}', 'to must be a positive integer (a node id), got nothing')
    await refused(`{"to": ${other.id}, "timeoutMs": -1}`, 'timeoutMs must be a positive integer (milliseconds), got -1')
    await refused('[2]', 'the body must be JSON {"to": <node id>')
    await refused('to=2', 'it is not JSON')
    const get = await fetch(`http://${asked.http}/v1/leader`)
    expect(get.status).toBe(405)
    expect(get.headers.get('allow')).toBe('POST')
    const badArg = await run(['transfer-leader', '--endpoint', asked.http, '--to', 'two'])
    expect(badArg.code).toBe(2)
    expect(badArg.stderr).toContain("option '--to <id>' argument 'two' is invalid")
    // None of them moved the leader.
    expect((await Promise.all(nodes.map(status))).map((s) => s.leaderId)).toEqual([settled.id, settled.id, settled.id])
  }, 300_000)

  it('member add/promote/list/remove change the group through any member: a node started with join is added as a learner through a follower, catches up and is promoted, a removed follower logs it and exits 0; refused changes say why and that nothing was applied', async () => {
    const groupDir = join(dir, 'members')
    mkdirSync(groupDir)
    // A leader that loses its followers keeps leading (check_quorum off): see "one change at a time".
    const nodes = await serveGroup(groupDir, ['    promote_max_lag: 8', '    check_quorum: false'])
    const four = await joiner(groupDir, 4)
    started.push(...nodes, four)
    for (const n of nodes) await n.process.line(/ leader node=\d+ leader=\d+ /, 60_000)
    await four.process.line(/ joining node=4 /, 60_000)
    const leader = await agreedLeader(nodes)
    const [follower, other] = nodes.filter((n) => n !== leader) as [Node, Node]
    // The joining node knows no group yet.
    expect(await members(four)).toEqual([])
    expect((await fetch(`http://${four.http}/health`)).status).toBe(503)
    for (let i = 0; i < 10; i++) expect((await fetch(kv(leader, `before ${i}`), { method: 'PUT', body: `v${i}` })).status).toBe(200)

    // Added through a follower; it catches up and serves the group's keys.
    const added = await run(['member', 'add', '--endpoint', follower.http, '--id', '4', '--address', four.raft])
    expect(added.code, added.stderr).toBe(0)
    expect(added.stdout).toMatch(/^node 4 added as a learner\nID\s+ADDRESS\s+ROLE\n/)
    expect(tableRows(added.stdout)).toEqual([...nodes.map((n) => [String(n.id), n.raft, 'voter']), ['4', four.raft, 'learner']])
    // Only the leader knows how far node 4 lags.
    const caughtUp = async (): Promise<void> =>
      eventually(async () => (await Promise.all(nodes.map(members))).some((ms) => ms.find((m) => m.id === 4)?.lag === 0), 30_000)
    await caughtUp()
    await four.process.line(new RegExp(` leader node=4 leader=${leader.id} `), 30_000)
    expect(await (await fetch(kv(four, 'before 9'))).text()).toBe('v9')

    // Changes the group refuses: 409 with the code, nothing applied.
    const post = (node: Node, path: string, body?: string): Promise<Response> =>
      fetch(`http://${node.http}${path}`, { method: 'POST', body })
    const refused = async (res: Response, code: string, message: string): Promise<void> => {
      const body: unknown = await res.json()
      expect(res.status, JSON.stringify(body)).toBe(409)
      expect(body).toEqual({ code, outcome: 'not-applied', message: expect.stringContaining(message) })
    }
    const [unused] = await freePorts(1)
    const nowhere = `127.0.0.1:${unused}`
    const takenAddress = await run(['member', 'add', '--endpoint', other.http, '--id', '5', '--address', follower.raft])
    expect(takenAddress.code).toBe(1)
    expect(takenAddress.stderr).toContain(
      `adding node 5 failed: ERR_CHANGE_REFUSED (outcome: not-applied): address ${follower.raft} is node ${follower.id}'s`,
    )
    const takenId = await run(['member', 'add', '--endpoint', leader.http, '--id', '4', '--address', nowhere])
    expect(takenId.code).toBe(1)
    expect(takenId.stderr).toContain('adding node 4 failed: ERR_CHANGE_REFUSED (outcome: not-applied): node 4 is a member already')
    await refused(await post(leader, '/v1/members', JSON.stringify({ id: 6, address: leader.raft })), 'ERR_CHANGE_REFUSED', `is node ${leader.id}'s`)
    await refused(await post(follower, '/v1/members/9/promote'), 'ERR_CHANGE_REFUSED', 'node 9 is not a member')
    await refused(await fetch(`http://${other.http}/v1/members/9`, { method: 'DELETE' }), 'ERR_CHANGE_REFUSED', 'node 9 is not a member')
    // A learner that never caught up is not promoted; removed, its id is never used again.
    const five = await post(leader, '/v1/members', JSON.stringify({ id: 5, address: nowhere, timeoutMs: 10_000 }))
    expect(five.status).toBe(200)
    expect(await five.json()).toContainEqual({ id: 5, address: nowhere, role: 'learner' })
    await refused(await post(follower, '/v1/members/5/promote', '{"timeoutMs": 10000}'), 'ERR_LEARNER_BEHIND', 'node 5')
    const withoutFive = await fetch(`http://${follower.http}/v1/members/5?timeoutMs=10000`, { method: 'DELETE' })
    expect(withoutFive.status).toBe(200)
    expect(((await withoutFive.json()) as { id: number }[]).map((m) => m.id)).toEqual([1, 2, 3, 4])
    await refused(await post(leader, '/v1/members', JSON.stringify({ id: 5, address: nowhere })), 'ERR_CHANGE_REFUSED', 'never reused')

    // Requests the API does not take: 400 (404, 405) naming what it takes.
    const codes: Record<number, string> = { 400: 'ERR_BAD_REQUEST', 404: 'ERR_NOT_FOUND', 405: 'ERR_METHOD_NOT_ALLOWED' }
    const bad = async (res: Response, message: string, status = 400): Promise<void> => {
      expect(res.status, message).toBe(status)
      expect(await res.json()).toEqual({ code: codes[status], outcome: 'not-applied', message: expect.stringContaining(message) })
    }
    await bad(await post(leader, '/v1/members', '{"id": 6}'), 'address must be a host:port string, got nothing')
    await bad(await post(leader, '/v1/members', `{"id": "6", "address": "${nowhere}"}`), 'id must be a node id (an integer 1..4294967295), got "6"')
    await bad(await post(leader, '/v1/members', `{"id": 4294967296, "address": "${nowhere}"}`), 'got 4294967296')
    await bad(await post(leader, '/v1/members', `{"id": 6, "address": "${nowhere}", "learner": false}`), "unknown key 'learner' in the body")
    await bad(await post(leader, '/v1/members', 'id=6'), 'it is not JSON')
    await bad(await post(leader, '/v1/members/4/promote', '{"force": true}'), "unknown key 'force' in the body")
    await bad(await post(leader, '/v1/members/4/promote?force=true'), "unknown query parameter 'force'")
    await bad(await fetch(`http://${leader.http}/v1/members/4?force=yes`, { method: 'DELETE' }), 'force must be true or false, got "yes"')
    await bad(await fetch(`http://${leader.http}/v1/members/4?now=1`, { method: 'DELETE' }), "unknown query parameter 'now'")
    await bad(await fetch(`http://${leader.http}/v1/members/4?timeoutMs=0`, { method: 'DELETE' }), 'timeoutMs must be a positive integer')
    await bad(await fetch(`http://${leader.http}/v1/members/four`, { method: 'DELETE' }), "'four' is not a node id")
    const getOne = await fetch(`http://${leader.http}/v1/members/4`)
    expect(getOne.headers.get('allow')).toBe('DELETE')
    await bad(getOne, 'GET is not allowed here; allowed: DELETE', 405)
    await bad(await fetch(`http://${leader.http}/v1/members`, { method: 'PUT' }), 'allowed: GET, POST', 405)
    await bad(await fetch(`http://${leader.http}/v1/members/4/demote`, { method: 'POST' }), 'no such path /v1/members/4/demote', 404)
    const badId = await run(['member', 'promote', '--endpoint', leader.http, '--id', 'four'])
    expect(badId.code).toBe(2)
    expect(badId.stderr).toContain("option '--id <id>' argument 'four' is invalid")
    // None of them changed the members.
    expect((await members(leader)).map((m) => [m.id, m.role])).toEqual([[1, 'voter'], [2, 'voter'], [3, 'voter'], [4, 'learner']])

    // One change at a time. With both followers paused nothing commits (and,
    // check_quorum being off, the leader keeps leading): two additions asked
    // meanwhile are in the log one after the other when they resume. The
    // first is applied; the second finds it in progress.
    const [six, seven] = (await freePorts(2)).map((p) => `127.0.0.1:${p}`) as [string, string]
    const lastIndex = async (): Promise<number> => (await status(leader)).lastIndex
    const before = await lastIndex()
    follower.process.kill('SIGSTOP')
    other.process.kill('SIGSTOP')
    let first: Promise<Response> | undefined
    let second: ReturnType<typeof run> | undefined
    try {
      first = post(leader, '/v1/members', JSON.stringify({ id: 6, address: six, timeoutMs: 60_000 }))
      await eventually(async () => (await lastIndex()) >= before + 1, 30_000)
      second = run(['member', 'add', '--endpoint', leader.http, '--id', '7', '--address', seven, '--timeout', '60000'])
      await eventually(async () => (await lastIndex()) >= before + 2, 30_000)
    } finally {
      follower.process.kill('SIGCONT')
      other.process.kill('SIGCONT')
    }
    const applied = await first
    expect(applied.status).toBe(200)
    expect(await applied.json()).toContainEqual({ id: 6, address: six, role: 'learner' })
    const meanwhile = await second
    expect(meanwhile.code).toBe(1)
    expect(meanwhile.stderr).toContain('adding node 7 failed: ERR_CHANGE_IN_PROGRESS (outcome: not-applied)')
    const withoutSix = await run(['member', 'remove', '--endpoint', other.http, '--id', '6'])
    expect(withoutSix.code, withoutSix.stderr).toBe(0)
    expect(tableRows(withoutSix.stdout).map((r) => r[0])).toEqual(['1', '2', '3', '4'])

    // Promoted through a follower once it caught up.
    await caughtUp()
    const promoted = await run(['member', 'promote', '--endpoint', follower.http, '--id', '4'])
    expect(promoted.code, promoted.stderr).toBe(0)
    expect(promoted.stdout).toMatch(/^node 4 promoted to voter\n/)
    expect(tableRows(promoted.stdout)).toEqual([...nodes, four].map((n) => [String(n.id), n.raft, 'voter']))
    const all = [...nodes, four]
    await eventually(async () => (await members(four)).every((m) => m.role === 'voter'), 30_000)
    const listed = await run(['member', 'list', '--endpoint', four.http])
    expect(listed.code, listed.stderr).toBe(0)
    expect(listed.stdout).toMatch(/^ID\s+ADDRESS\s+ROLE\s+LEADER/)
    const rows = tableRows(listed.stdout)
    expect(rows.map((r) => r.slice(0, 3))).toEqual(all.map((n) => [String(n.id), n.raft, 'voter']))
    expect(rows.filter((r) => r[3] === '*')).toHaveLength(1)

    // Removing a follower through the new member: the removed node logs it and exits 0; the others go on.
    const now = await agreedLeader(all)
    const gone = nodes.find((n) => n !== now)!
    const removed = await run(['member', 'remove', '--endpoint', four.http, '--id', String(gone.id)])
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout).toMatch(new RegExp(`^node ${gone.id} removed\n`))
    const rest = all.filter((n) => n !== gone)
    expect(tableRows(removed.stdout)).toEqual(rest.map((n) => [String(n.id), n.raft, 'voter']))
    await gone.process.line(new RegExp(` removed node=${gone.id} message="node ${gone.id} was removed from its group`), 30_000)
    expect(await gone.process.exited).toEqual({ code: 0, signal: null })
    expect(gone.process.lines.at(-1)).toMatch(new RegExp(` stopped node=${gone.id}$`))
    await eventually(async () => (await fetch(kv(four, 'after removal'), { method: 'PUT', body: 'x' })).status === 200, 30_000)
    for (const n of rest) expect(await (await fetch(kv(n, 'after removal'))).text()).toBe('x')
    await refused(await post(four, '/v1/members', JSON.stringify({ id: gone.id, address: gone.raft })), 'ERR_CHANGE_REFUSED', 'never reused')
  }, 120_000)

  it('exits 2 on a bad config, naming the file and the key', async () => {
    const [raft, http] = await freePorts(2)
    const typo = join(dir, 'typo.yaml')
    writeFileSync(typo, `server:\n  cluster:\n    node_id: 1\n    initial_cluster:\n      1: 127.0.0.1:${raft}\n  http:\n    lisen: 127.0.0.1:${http}\n`)
    const bad = await run(['serve', '--config', typo])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain(`${typo}: server.http.lisen: unknown key; did you mean listen?`)

    const noHttp = join(dir, 'no-http.yaml')
    writeFileSync(noHttp, `server:\n  cluster:\n    node_id: 1\n    initial_cluster:\n      1: 127.0.0.1:${raft}\n`)
    const missing = await run(['serve', '--config', noHttp])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(`${noHttp}: server.http.listen`)

    const noCluster = join(dir, 'no-cluster.yaml')
    writeFileSync(noCluster, `server:\n  http:\n    listen: 127.0.0.1:${http}\n`)
    const single = await run(['serve', '--config', noCluster])
    expect(single.code).toBe(2)
    expect(single.stderr).toContain(`${noCluster}: server.cluster is required by metastore serve`)

    const absent = await run(['serve', '--config', join(dir, 'absent.yaml')])
    expect(absent.code).toBe(2)
    expect(absent.stderr).toContain('absent.yaml: cannot read config file: no such file')

    const unknownOption = await run(['serve', '--config', noHttp, '--port', '1'])
    expect(unknownOption.code).toBe(2)
    expect(unknownOption.stderr).toContain("unknown option '--port'")
  }, 60_000)

  it("docs/operations.md's example configs, a member and a joining node, are ones serve accepts", () => {
    const doc = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8')
    const [member, joining] = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => parseConfig(m[1]!, 'docs/operations.md'))
    expect(member?.server.cluster).toMatchObject({ nodeId: 1, initialCluster: { 1: 'host-a:7001', 2: 'host-b:7001', 3: 'host-c:7001' } })
    expect(member?.server.http?.listen).toBe('0.0.0.0:8080')
    expect(joining?.server.cluster).toMatchObject({ nodeId: 4, join: true, listen: '0.0.0.0:7001', advertise: 'host-d:7001' })
    expect(joining?.server.http?.listen).toBe('0.0.0.0:8080')
  })

  it('status exits 1 with a clear message when the node cannot be reached', async () => {
    const [port] = await freePorts(1)
    const r = await run(['status', '--endpoint', `127.0.0.1:${port}`])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`cannot reach http://127.0.0.1:${port}/status: ECONNREFUSED`)
  }, 60_000)
})
