// `npx vitest bench --run bench/codec.bench.ts`: the batch codec through
// N-API, one Raft entry of 256 proposals of 100 bytes per iteration, next to
// the legacy JSON batch of the original Go MetaStore
// (`{"is_batch":true,"proposals":[...]}`) done with V8's
// own JSON as a reference point. The proposals are printable ASCII so the JSON
// baseline is lossless (it corrupts binary data, which the codec does not).
import { bench, describe } from 'vitest'

import { decodeBatch, encodeBatch } from '../ts/index.js'

const COUNT = 256
const BYTES = 100

const text = Array.from({ length: COUNT }, (_, i) =>
  Array.from({ length: BYTES }, (_, j) => String.fromCharCode(33 + ((i * 31 + j * 7) % 94))).join(''),
)
const buffers = text.map((t) => Buffer.from(t))
const encoded = encodeBatch(buffers)
const json = JSON.stringify({ is_batch: true, proposals: text })

const options = { time: 1_000, warmupTime: 200 }

describe(`encode ${COUNT} x ${BYTES} B`, () => {
  bench('encodeBatch (binary frame, N-API)', () => {
    encodeBatch(buffers)
  }, options)
  bench('legacy JSON batch (JSON.stringify + Buffer.from)', () => {
    Buffer.from(JSON.stringify({ is_batch: true, proposals: text }))
  }, options)
})

describe(`decode ${COUNT} x ${BYTES} B`, () => {
  bench('decodeBatch (binary frame, N-API)', () => {
    decodeBatch(encoded)
  }, options)
  bench('legacy JSON batch (JSON.parse + Buffer.from each)', () => {
    ;(JSON.parse(json) as { proposals: string[] }).proposals.map((p) => Buffer.from(p))
  }, options)
})
