/**
 * The HTTP end of `metastore serve`: metrics, health and status for operators,
 * and a small key-value API so that other processes can use the group.
 *
 *   GET    /metrics          Prometheus text (`store.metrics()`)
 *   GET    /health           200 while the node runs and knows a leader, else 503
 *   GET    /status           this node's Raft figures and the members
 *   POST   /v1/leader        body {"to": id, "timeoutMs"?: ms}: hands leadership to voter `id`;
 *                            answers the new leader's member info
 *   GET    /v1/members       the members as this node sees them (`store.members()`)
 *   POST   /v1/members       body {"id": id, "address": "host:port", "timeoutMs"?: ms}: adds a
 *                            learner; answers the members once the change is applied
 *   POST   /v1/members/<id>/promote   body {"timeoutMs"?: ms} or none: makes learner `id` a voter
 *   DELETE /v1/members/<id>  query force=true, timeoutMs=<ms> (both optional): removes member `id`
 *   PUT    /v1/kv/<key>      body = value; answers {index, existed}
 *   GET    /v1/kv/<key>      the value's bytes (linearizable read); 404 when absent
 *   DELETE /v1/kv/<key>      answers {existed}
 *
 * Keys are URL-encoded UTF-8 in the path. Every answer other than a 2xx is
 * JSON `{code, outcome, message}`: the `MetaStoreError` of a failed request
 * (503; 413 for ERR_TOO_LARGE, 400 for ERR_UNKNOWN_NODE, 409 for a membership
 * change the group refused: ERR_CHANGE_IN_PROGRESS, ERR_CHANGE_REFUSED,
 * ERR_LEARNER_BEHIND), or a code of this API for a request it refused before
 * the store saw it (400, 404, 405, 413), which is never applied.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import * as z from 'zod'

import { parseAddress } from './config.js'
import { MetaStoreError, type RequestOutcome } from './errors.js'
import { METRICS_CONTENT_TYPE } from './metrics.js'
import type { MemberInfo, RaftRole } from './native.js'
import type { MetaStore } from './store.js'

/** What `GET /status` answers. */
export interface NodeStatus {
  nodeId: number
  role: RaftRole
  term: number
  /** 0 while no leader is known. */
  leaderId: number
  commitIndex: number
  appliedIndex: number
  lastIndex: number
  members: MemberInfo[]
}

/** The body of every answer that is not a 2xx. */
export interface ErrorBody {
  code: string
  outcome: RequestOutcome
  message: string
}

export interface HttpApiOptions {
  /** The node's store; undefined while it opens, when only /health answers (503). */
  store: () => MetaStore | undefined
  /** The largest request body read; a larger one is refused with 413 before it is read whole. */
  maxBodyBytes: number
}

const KV_PREFIX = '/v1/kv/'
const LEADER_PATH = '/v1/leader'
const MEMBERS_PATH = '/v1/members'
/** The largest node id (ids are 32-bit). */
const MAX_NODE_ID = 0xffff_ffff

const timeoutMs = z.number().int().positive()

/** What `POST /v1/leader` takes: the options of `store.transferLeadership`, and nothing else. */
const TransferBody = z.strictObject({
  to: z.number().int().positive(),
  timeoutMs: timeoutMs.optional(),
})

/** What `POST /v1/members` takes: the new learner and the change's timeout. */
const AddBody = z.strictObject({
  id: z.number().int().positive().max(MAX_NODE_ID),
  address: z.string(),
  timeoutMs: timeoutMs.optional(),
})

/** What `POST /v1/members/<id>/promote` takes, if it has a body. */
const PromoteBody = z.strictObject({ timeoutMs: timeoutMs.optional() })

/** The query of `DELETE /v1/members/<id>`. */
const RemoveQuery = z.strictObject({
  force: z.enum(['true', 'false']).optional(),
  timeoutMs: z
    .string()
    .regex(/^[1-9][0-9]*$/)
    .transform(Number)
    .optional(),
})

/** What each key of a body or query must be, for the message that refuses it. */
const EXPECTED: Readonly<Record<string, string>> = {
  to: 'a positive integer (a node id)',
  id: `a node id (an integer 1..${MAX_NODE_ID})`,
  address: 'a host:port string',
  timeoutMs: 'a positive integer (milliseconds)',
  force: 'true or false',
}

/** The HTTP status of a failed request's `MetaStoreError`, by its code; 503 for the others. */
const ERROR_STATUS: ReadonlyMap<string, number> = new Map([
  ['ERR_TOO_LARGE', 413],
  ['ERR_UNKNOWN_NODE', 400],
  // The group's membership refused the change: it conflicts with the
  // members, or with the change under way, as they are now.
  ['ERR_CHANGE_IN_PROGRESS', 409],
  ['ERR_CHANGE_REFUSED', 409],
  ['ERR_LEARNER_BEHIND', 409],
])

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }
}

export function nodeStatus(store: MetaStore): NodeStatus {
  const { raft } = store.stats()
  return {
    nodeId: store.nodeId,
    role: raft.role,
    term: raft.term,
    leaderId: raft.leaderId,
    commitIndex: raft.commitIndex,
    appliedIndex: raft.appliedIndex,
    lastIndex: raft.lastIndex,
    members: store.members(),
  }
}

export class HttpApi {
  readonly #server: Server
  readonly #options: HttpApiOptions
  #inFlight = 0
  #closing = false
  #closed: Promise<void> = Promise.resolve()

  constructor(options: HttpApiOptions) {
    this.#options = options
    this.#server = createServer((req, res) => void this.#handle(req, res))
  }

  /** Starts listening on `address` (`host:port`, port 0 for any); resolves with the bound address. */
  listen(address: string): Promise<AddressInfo> {
    const { host, port } = parseAddress(address, { anyPort: true })
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject)
        resolve(this.#server.address() as AddressInfo)
      })
    })
  }

  /** Stops accepting connections; open ones close once idle, and every answer from now on closes its connection. */
  stopAccepting(): void {
    if (this.#closing) return
    this.#closing = true
    this.#closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    this.#server.closeIdleConnections()
  }

  /** Waits until the requests being answered now have finished, for at most `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.#inFlight > 0 && Date.now() < deadline) await sleep(10)
  }

  /**
   * Stops accepting connections, waits up to `drainMs` for the requests being
   * answered, then cuts the connections still open.
   */
  async close(drainMs: number): Promise<void> {
    this.stopAccepting()
    await this.drain(drainMs)
    this.#server.closeAllConnections()
    await this.#closed
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.#inFlight++
    try {
      if (this.#closing) res.setHeader('connection', 'close')
      await this.#route(req, res)
    } catch (err) {
      this.#fail(req, res, err)
    } finally {
      this.#inFlight--
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://node')
    const path = url.pathname
    if (path === '/health') return this.#only(req, 'GET', () => this.#health(res))
    if (path === MEMBERS_PATH || path.startsWith(`${MEMBERS_PATH}/`)) return this.#members(req, res, url)
    const isKv = path.startsWith(KV_PREFIX)
    if (!isKv && path !== '/metrics' && path !== '/status' && path !== LEADER_PATH) throw notFound(path)
    refuseQuery(url)
    if (path === '/metrics') {
      return this.#only(req, 'GET', async () => {
        const text = await this.#store().metrics()
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(text)
      })
    }
    if (path === '/status') return this.#only(req, 'GET', () => json(res, 200, nodeStatus(this.#store())))
    if (path === LEADER_PATH) {
      return this.#only(req, 'POST', async () => {
        const usage = 'the body must be JSON {"to": <node id>, "timeoutMs"?: <ms>}'
        const { to, ...options } = jsonBody(await this.#body(req), TransferBody, usage)
        json(res, 200, await this.#store().transferLeadership(to, options))
      })
    }
    const key = decodeKey(path.slice(KV_PREFIX.length))
    switch (req.method) {
      case 'PUT': {
        const value = await this.#body(req)
        const { index, existed } = await this.#store().put(key, value)
        return json(res, 200, { index, existed })
      }
      case 'GET': {
        const value = await this.#store().get(key)
        if (value === undefined) throw new HttpError(404, 'ERR_KEY_NOT_FOUND', `no value for key '${key}'`)
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(value)
        return
      }
      case 'DELETE':
        return json(res, 200, { existed: await this.#store().delete(key) })
      default:
        throw methodNotAllowed(req, 'GET, PUT, DELETE')
    }
  }

  /**
   * `/v1/members`, `/v1/members/<id>` and `/v1/members/<id>/promote`. A change
   * answers the members once it is applied (the store's `Member[]`).
   */
  async #members(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const rest = url.pathname.slice(MEMBERS_PATH.length)
    if (rest === '') {
      refuseQuery(url)
      switch (req.method) {
        case 'GET':
          return json(res, 200, this.#store().members())
        case 'POST': {
          const usage = 'the body must be JSON {"id": <node id>, "address": "<host:port>", "timeoutMs"?: <ms>}'
          const { id, address, ...options } = jsonBody(await this.#body(req), AddBody, usage)
          return json(res, 200, await this.#store().addMember(id, address, { learner: true, ...options }))
        }
        default:
          throw methodNotAllowed(req, 'GET, POST')
      }
    }
    const match = /^\/([^/]*)(\/promote)?$/.exec(rest)
    if (match === null) throw notFound(url.pathname)
    const id = nodeIdIn(match[1]!)
    if (match[2] !== undefined) {
      refuseQuery(url)
      return this.#only(req, 'POST', async () => {
        const raw = await this.#body(req)
        const usage = 'the body must be empty or JSON {"timeoutMs"?: <ms>}'
        const options = raw.length === 0 ? {} : jsonBody(raw, PromoteBody, usage)
        json(res, 200, await this.#store().promoteMember(id, options))
      })
    }
    if (req.method !== 'DELETE') throw methodNotAllowed(req, 'DELETE')
    const { force, ...options } = removeQuery(url)
    json(res, 200, await this.#store().removeMember(id, { ...options, ...(force !== undefined && { force: force === 'true' }) }))
  }

  #health(res: ServerResponse): void {
    const store = this.#options.store()
    if (store === undefined || this.#closing) {
      return json(res, 503, { status: this.#closing ? 'closing' : 'starting', leaderId: 0 })
    }
    const { leaderId } = store.stats().raft
    json(res, leaderId === 0 ? 503 : 200, { status: leaderId === 0 ? 'no-leader' : 'ok', nodeId: store.nodeId, leaderId })
  }

  async #only(req: IncomingMessage, method: 'GET' | 'POST', answer: () => void | Promise<void>): Promise<void> {
    if (req.method !== method) throw methodNotAllowed(req, method)
    await answer()
  }

  #store(): MetaStore {
    const store = this.#options.store()
    if (store === undefined) {
      throw new MetaStoreError('ERR_NOT_STARTED', 'the node is starting: it has not yet joined a group with a leader')
    }
    return store
  }

  /** The request body, refused with 413 beyond `maxBodyBytes`. */
  #body(req: IncomingMessage): Promise<Buffer> {
    const max = this.#options.maxBodyBytes
    const tooLarge = (): HttpError =>
      new HttpError(413, 'ERR_TOO_LARGE', `the value is larger than ${max} bytes (server.raft.batch.max_proposal_bytes)`, {
        connection: 'close',
      })
    if (Number(req.headers['content-length'] ?? 0) > max) return Promise.reject(tooLarge())
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = []
      let size = 0
      req.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > max) {
          req.pause()
          reject(tooLarge())
        } else chunks.push(chunk)
      })
      req.once('end', () => resolve(Buffer.concat(chunks)))
      req.once('error', reject)
    })
  }

  #fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    // A request that changes the group may have taken effect before a failure of this API.
    const write = req.method === 'PUT' || req.method === 'DELETE' || req.method === 'POST'
    let status: number
    let body: ErrorBody
    let headers: Record<string, string> = {}
    if (err instanceof HttpError) {
      status = err.status
      body = { code: err.code, outcome: 'not-applied', message: err.message }
      headers = err.headers
    } else if (err instanceof MetaStoreError) {
      status = ERROR_STATUS.get(err.code) ?? 503
      body = { code: err.code, outcome: err.outcome, message: err.message }
    } else {
      // Not an error of the store: a bug here. A write may have reached the store before it.
      status = 500
      body = { code: 'ERR_INTERNAL', outcome: write ? 'unknown' : 'not-applied', message: String((err as Error)?.message ?? err) }
    }
    json(res, status, body, headers)
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify(body))
}

function methodNotAllowed(req: IncomingMessage, allow: string): HttpError {
  return new HttpError(405, 'ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed here; allowed: ${allow}`, { allow })
}

function badRequest(message: string): HttpError {
  return new HttpError(400, 'ERR_BAD_REQUEST', message)
}

function notFound(path: string): HttpError {
  const paths = `/metrics, /health, /status, ${LEADER_PATH}, ${MEMBERS_PATH}, ${MEMBERS_PATH}/<id>, ${MEMBERS_PATH}/<id>/promote, ${KV_PREFIX}<url-encoded key>`
  return new HttpError(404, 'ERR_NOT_FOUND', `no such path ${path}; paths: ${paths}`)
}

/** Refuses a query on a path that takes none. */
function refuseQuery(url: URL): void {
  const [query] = url.searchParams.keys()
  if (query !== undefined) throw badRequest(`unknown query parameter '${query}'; ${url.pathname} takes none`)
}

/** The node id of a `/v1/members/<id>` path. */
function nodeIdIn(segment: string): number {
  const id = /^[1-9][0-9]*$/.test(segment) ? Number(segment) : NaN
  if (!(id <= MAX_NODE_ID)) throw badRequest(`'${segment}' is not ${EXPECTED.id}; use ${MEMBERS_PATH}/<id>`)
  return id
}

/** A JSON body, checked against `schema`; a body it does not take is refused with 400 and `usage`. */
function jsonBody<T>(raw: Buffer, schema: z.ZodType<T>, usage: string): T {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw.toString('utf8'))
  } catch (err) {
    throw badRequest(`${usage}; it is not JSON (${(err as Error).message})`)
  }
  return checked(parsed, schema, usage, (key) => `unknown key '${key}' in the body`)
}

/** The query of `DELETE /v1/members/<id>`, checked (each parameter at most once). */
function removeQuery(url: URL): z.infer<typeof RemoveQuery> {
  const usage = `${MEMBERS_PATH}/<id> takes the query parameters force=true and timeoutMs=<ms>, both optional`
  const keys = [...url.searchParams.keys()]
  const twice = keys.find((key, i) => keys.indexOf(key) !== i)
  if (twice !== undefined) throw badRequest(`query parameter '${twice}' given more than once; ${usage}`)
  return checked(Object.fromEntries(url.searchParams), RemoveQuery, usage, (key) => `unknown query parameter '${key}'`)
}

/** `input` as `schema` takes it, or a 400 naming the first key it does not take and what that key must be. */
function checked<T>(input: unknown, schema: z.ZodType<T>, usage: string, unknownKey: (key: string) => string): T {
  const result = schema.safeParse(input)
  if (result.success) return result.data
  const issue = result.error.issues[0]!
  if (issue.code === 'unrecognized_keys') throw badRequest(`${unknownKey(issue.keys[0]!)}; ${usage}`)
  const [key] = issue.path
  if (key === undefined) throw badRequest(usage)
  const got = (input as Record<string, unknown>)[key as string]
  throw badRequest(`${String(key)} must be ${EXPECTED[key as string]}, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`)
}

function decodeKey(encoded: string): string {
  if (encoded === '') throw new HttpError(400, 'ERR_BAD_REQUEST', `the key is empty; use ${KV_PREFIX}<url-encoded key>`)
  try {
    return decodeURIComponent(encoded)
  } catch {
    throw new HttpError(400, 'ERR_BAD_REQUEST', `the key '${encoded}' is not valid URL-encoded UTF-8`)
  }
}
