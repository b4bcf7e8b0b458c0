import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { decodeBatch, encodeBatch, isBatchProposal, MetaStoreError } from '../ts/index.js'

const bytes = fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u))
const tricky = fc.oneof(
  bytes,
  bytes.map((b) => Buffer.concat([Buffer.from([0xc1]), b])),
  fc.array(fc.string(), { maxLength: 3 }).map((xs) => Buffer.from(JSON.stringify({ is_batch: true, proposals: xs }))),
)

describe('codec', () => {
  it('round-trips any list of byte strings', () => {
    fc.assert(
      fc.property(fc.array(tricky, { maxLength: 40 }), (xs) => {
        const back = decodeBatch(encodeBatch(xs))
        expect(back.map((b) => b.toString('hex'))).toEqual(xs.map((b) => b.toString('hex')))
      }),
      { numRuns: 500 },
    )
  })

  it('round-trips single proposals that look like frames or legacy batches', () => {
    fc.assert(
      fc.property(tricky, (x) => {
        expect(decodeBatch(encodeBatch([x]))).toEqual([x])
      }),
      { numRuns: 300 },
    )
  })

  it('stores one plain proposal raw and marks lists as batches', () => {
    expect(encodeBatch(['set x 1']).toString()).toBe('set x 1')
    expect(isBatchProposal(encodeBatch(['set x 1']))).toBe(false)
    expect(isBatchProposal(encodeBatch(['a', 'b']))).toBe(true)
    expect(decodeBatch(encodeBatch([]))).toEqual([])
  })

  it('accepts strings as UTF-8', () => {
    expect(decodeBatch(encodeBatch(['héllo', '日本'])).map(String)).toEqual(['héllo', '日本'])
  })

  it('decodes legacy JSON batches written by the Go MetaStore, with Go escapes', () => {
    const legacy = Buffer.from('{"is_batch":true,"proposals":["a\\u003cb\\u003e","\\u0026x","plain"]}')
    expect(isBatchProposal(legacy)).toBe(true)
    expect(decodeBatch(legacy).map(String)).toEqual(['a<b>', '&x', 'plain'])
  })

  it('rejects malformed frames with ERR_CORRUPT_BATCH', () => {
    const frame = encodeBatch(['abc', 'def'])
    for (let cut = 3; cut < frame.length; cut++) {
      let error: unknown
      try {
        decodeBatch(frame.subarray(0, cut))
      } catch (err) {
        error = err
      }
      expect(error, `truncated at ${cut}`).toBeInstanceOf(MetaStoreError)
      expect((error as MetaStoreError).code).toBe('ERR_CORRUPT_BATCH')
    }
  })

  it('never crashes on arbitrary bytes after the magic byte', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (tail) => {
        try {
          decodeBatch(Buffer.concat([Buffer.from([0xc1]), tail]))
        } catch (err) {
          expect((err as MetaStoreError).code).toBe('ERR_CORRUPT_BATCH')
        }
      }),
      { numRuns: 1000 },
    )
  })

  it('throws TypeError for values that are not bytes', () => {
    expect(() => encodeBatch([42 as never])).toThrow(TypeError)
    expect(() => decodeBatch('x' as never)).toThrow(TypeError)
  })
})
