import { assertBytes, type Bytes } from './bytes.js'
import { toMetaStoreError } from './errors.js'
import { native } from './native.js'

/** Encodes proposals into one Raft entry payload; a single proposal stays raw. */
export function encodeBatch(proposals: Bytes[]): Buffer {
  if (!Array.isArray(proposals)) throw new TypeError('proposals must be an array')
  proposals.forEach((p, i) => assertBytes(p, `proposals[${i}]`))
  return native.encodeBatch(proposals)
}

/** Decodes a payload (binary frame, legacy JSON batch or raw proposal). Throws ERR_CORRUPT_BATCH. */
export function decodeBatch(data: Uint8Array): Buffer[] {
  if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Buffer or Uint8Array')
  try {
    return native.decodeBatch(data)
  } catch (err) {
    throw toMetaStoreError(err)
  }
}

/** True when the payload holds a batch rather than one raw proposal. */
export function isBatchProposal(data: Uint8Array): boolean {
  if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Buffer or Uint8Array')
  return native.isBatchProposal(data)
}
