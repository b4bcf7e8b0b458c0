// Network namespaces for partition tests made by the kernel (root only): a hub
// namespace holding a bridge, one namespace per member joined to it by a veth
// pair, and addresses in 10.213.<subnet>.0/24 that exist only inside those
// namespaces; the root namespace is never touched. A partition between two
// members is a pair of blackhole routes, one in each namespace: packets
// between them are dropped by routing, as on a real network, and TCP sees it.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'

/** Runs `ip args...`; throws with ip's own message when it fails. */
function ip(args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' })
  if (r.error) throw new Error(`ip ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim()}`)
  return r.stdout
}

/**
 * Why namespaces cannot be made here, or undefined when they can: the test
 * that needs them fails with this reason; it is never skipped.
 */
export function netnsUnavailable(): string | undefined {
  const need = 'network namespace tests need root and iproute2 (`ip netns`); CI runs them as root'
  if (process.platform !== 'linux') return `${need}: this is ${process.platform}, not Linux`
  if (process.getuid?.() !== 0) return `${need}: running as uid ${process.getuid?.()}`
  const r = spawnSync('ip', ['-V'], { encoding: 'utf8' })
  if (r.error || r.status !== 0) return `${need}: no usable \`ip\` command (${r.error?.message ?? r.stderr.trim()})`
  return undefined
}

/** A set of namespaces, each member's reachable from the others through the hub's bridge. */
export class NetnsLab {
  /** The hub namespace: the bridge and the hub ends of the veth pairs. */
  readonly hub: string
  /** Member i's namespace is `namespaces[i - 1]`. */
  readonly namespaces: readonly string[]
  /** The third octet of 10.213.x.0/24. */
  readonly subnet: number
  readonly #created: string[] = []
  readonly #onExit = (): void => this.destroy()

  private constructor(n: number) {
    const tag = `ms-${randomBytes(3).toString('hex')}`
    this.hub = `${tag}-hub`
    this.namespaces = Array.from({ length: n }, (_, i) => `${tag}-${i + 1}`)
    this.subnet = randomInt(0, 256)
  }

  /**
   * Makes the hub and `n` member namespaces; throws, naming what is missing,
   * when namespaces cannot be made here. Whatever it made is removed by
   * `destroy()`, or when the process exits.
   */
  static create(n: number): NetnsLab {
    const unavailable = netnsUnavailable()
    if (unavailable !== undefined) throw new Error(unavailable)
    const lab = new NetnsLab(n)
    process.once('exit', lab.#onExit)
    try {
      lab.#add(lab.hub)
      ip(['-n', lab.hub, 'link', 'add', 'br0', 'type', 'bridge'])
      ip(['-n', lab.hub, 'link', 'set', 'br0', 'up'])
      lab.namespaces.forEach((ns, i) => {
        const member = i + 1
        lab.#add(ns)
        // Both ends are made inside their namespaces, never in the root one.
        ip(['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', `m${member}`, 'netns', lab.hub])
        ip(['-n', lab.hub, 'link', 'set', `m${member}`, 'master', 'br0'])
        ip(['-n', lab.hub, 'link', 'set', `m${member}`, 'up'])
        ip(['-n', ns, 'link', 'set', 'lo', 'up'])
        ip(['-n', ns, 'addr', 'add', `${lab.address(member)}/24`, 'dev', 'eth0'])
        ip(['-n', ns, 'link', 'set', 'eth0', 'up'])
      })
    } catch (err) {
      lab.destroy()
      throw new Error(`could not build the network namespaces: ${(err as Error).message}`)
    }
    return lab
  }

  /** Member `member`'s address, which exists only inside its namespace. */
  address(member: number): string {
    return `10.213.${this.subnet}.${member}`
  }

  /** The command prefix that runs a program inside member `member`'s namespace. */
  exec(member: number): string[] {
    return ['ip', 'netns', 'exec', this.#ns(member)]
  }

  /** Drops all traffic between `a` and `b` with a blackhole route in each namespace. */
  blackhole(a: number, b: number): void {
    ip(['-n', this.#ns(a), 'route', 'add', 'blackhole', `${this.address(b)}/32`])
    ip(['-n', this.#ns(b), 'route', 'add', 'blackhole', `${this.address(a)}/32`])
  }

  /** Removes the routes `blackhole(a, b)` added. */
  unblackhole(a: number, b: number): void {
    ip(['-n', this.#ns(a), 'route', 'del', 'blackhole', `${this.address(b)}/32`])
    ip(['-n', this.#ns(b), 'route', 'del', 'blackhole', `${this.address(a)}/32`])
  }

  /** Member `member`'s routing table, as `ip route` prints it. */
  routes(member: number): string {
    return ip(['-n', this.#ns(member), 'route', 'show'])
  }

  /**
   * Opens a TCP connection from inside member `from`'s namespace to
   * `host:port` and closes it: resolves 'connected', or the error code
   * (EINVAL under a blackhole route, ETIMEDOUT, ...).
   */
  connect(from: number, host: string, port: number, timeoutMs = 2_000): Promise<string> {
    const probe = `
      const s = require('node:net').connect({ host: ${JSON.stringify(host)}, port: ${port}, timeout: ${timeoutMs} })
      const done = (what) => { console.log(what); s.destroy(); process.exit(0) }
      s.on('connect', () => done('connected'))
      s.on('timeout', () => done('ETIMEDOUT'))
      s.on('error', (e) => done(e.code ?? e.message))`
    const [command, ...args] = [...this.exec(from), process.execPath, '-e', probe]
    return new Promise((resolve, reject) => {
      const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (err += d.toString()))
      child.on('error', reject)
      child.on('close', (code) => {
        if (code === 0 && out.trim() !== '') resolve(out.trim())
        else reject(new Error(`the connect probe in ${this.#ns(from)} failed (exit ${code}): ${err.trim()}`))
      })
    })
  }

  /** Deletes every namespace it made (their veths and bridge go with them). Safe to call twice. */
  destroy(): void {
    process.off('exit', this.#onExit)
    for (const ns of this.#created.splice(0).reverse()) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
  }

  #add(ns: string): void {
    ip(['netns', 'add', ns])
    this.#created.push(ns)
  }

  #ns(member: number): string {
    const ns = this.namespaces[member - 1]
    if (ns === undefined) throw new RangeError(`no member ${member} in this lab (1..${this.namespaces.length})`)
    return ns
  }
}
