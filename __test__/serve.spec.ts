// `store.metrics()`, and `metastore serve` / `status` / `transfer-leader` as a user runs
// them: three serve processes on loopback, used through their HTTP API.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { MetaStore, parseConfig } from '../ts/index.js'
import type { NodeStatus } from '../ts/http.js'
import { METRIC_NAMES } from '../ts/metrics.js'
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

/** Three `serve` processes on free loopback ports, each with its config file and data dir under `dir`. */
async function serveGroup(dir: string): Promise<Node[]> {
  const ports = await freePorts(6)
  const raft = ports.slice(0, 3)
  const cluster = raft.map((p, i) => `      ${i + 1}: 127.0.0.1:${p}`).join('\n')
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
    return { id, raft: `127.0.0.1:${raft[id - 1]}`, http, process: new CliProcess(['serve', '--config', file]) }
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

  it("docs/operations.md's example config is one serve accepts", () => {
    const doc = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8')
    const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1]
    expect(yaml).toBeDefined()
    const config = parseConfig(yaml!, 'docs/operations.md')
    expect(config.server.cluster).toMatchObject({ nodeId: 1, initialCluster: { 1: 'host-a:7001', 2: 'host-b:7001', 3: 'host-c:7001' } })
    expect(config.server.http?.listen).toBe('0.0.0.0:8080')
  })

  it('status exits 1 with a clear message when the node cannot be reached', async () => {
    const [port] = await freePorts(1)
    const r = await run(['status', '--endpoint', `127.0.0.1:${port}`])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`cannot reach http://127.0.0.1:${port}/status: ECONNREFUSED`)
  }, 60_000)
})
