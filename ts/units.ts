/**
 * Units used by the config file: durations and byte sizes.
 *
 * Durations follow Go's `time.ParseDuration` (what the original MetaStore and
 * etcd configs use): a sequence of decimal numbers each with a unit, `ns`,
 * `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g. `5ms`, `1.5s`, `1m30s`. A bare
 * number (a YAML number, not a string) is taken as milliseconds.
 *
 * Sizes are an integer number of bytes, or a decimal number with a unit:
 * `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB`, case
 * insensitive. KB and KiB are both 1024 bytes, as in etcd's and Docker's
 * configs (go-units `RAMInBytes`): nobody sizes a Raft message in powers of ten.
 */

const NS_PER_UNIT: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 micro sign
  'μs': 1e3, // U+03BC greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
}

const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|μs|ms|s|m|h)/y

/**
 * Parses a duration into milliseconds (fractional below 1ms: `100us` is 0.1).
 * Throws a TypeError/RangeError whose message says what is wrong; negative
 * values parse (the caller decides whether they are allowed).
 */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input)) throw new RangeError('is not a finite number of milliseconds')
    return input
  }
  if (typeof input !== 'string') throw new TypeError('expected a duration string such as "5ms"')
  let text = input.trim()
  let sign = 1
  if (text.startsWith('-') || text.startsWith('+')) {
    if (text[0] === '-') sign = -1
    text = text.slice(1)
  }
  if (text === '') throw new RangeError('is empty; expected a duration such as "5ms" or "1s"')
  if (/^[\d.]+$/.test(text)) {
    throw new RangeError('has no unit; write it with one, e.g. "5ms" or "1s" (a YAML number means milliseconds)')
  }
  // Sum in nanoseconds and round there, so "1.1s" is 1100ms and not 1100.0000000000002.
  let ns = 0
  let at = 0
  while (at < text.length) {
    DURATION_PART.lastIndex = at
    const m = DURATION_PART.exec(text)
    if (m === null) {
      throw new RangeError('is not a duration; use a number with a unit (ns, us, ms, s, m, h), e.g. "5ms" or "1.5s"')
    }
    ns += Number(m[1]) * (NS_PER_UNIT[m[2]!] as number)
    at = DURATION_PART.lastIndex
    while (text[at] === ' ') at++
  }
  if (!Number.isFinite(ns)) throw new RangeError('is too large')
  return (sign * Math.round(ns)) / 1e6
}

const BYTES_PER_UNIT: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
}

const SIZE = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]*)$/i

/**
 * Parses a size into a whole number of bytes. Throws a TypeError/RangeError
 * whose message says what is wrong. Zero and negative values parse.
 */
export function parseSize(input: string | number): number {
  let bytes: number
  if (typeof input === 'number') {
    bytes = input
  } else if (typeof input === 'string') {
    const m = SIZE.exec(input.trim())
    const unit = m?.[2]?.toLowerCase() ?? ''
    const perUnit = BYTES_PER_UNIT[unit]
    if (m === null || perUnit === undefined) {
      throw new RangeError('is not a size; use bytes or a number with a unit (KB, MB, GB; 1KB = 1024 bytes), e.g. "512KB" or "1MB"')
    }
    bytes = Number(m[1]) * perUnit
    // "1.5KB" is exactly 1536 bytes; allow for the float error of the multiplication only.
    if (Math.abs(bytes - Math.round(bytes)) < 1e-6) bytes = Math.round(bytes)
  } else {
    throw new TypeError('expected a size such as "1MB" or a number of bytes')
  }
  if (!Number.isFinite(bytes)) throw new RangeError('is not a finite size')
  if (!Number.isInteger(bytes)) throw new RangeError('is not a whole number of bytes')
  if (!Number.isSafeInteger(bytes)) throw new RangeError('is too large')
  return bytes
}
