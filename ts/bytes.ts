/** Bytes as the API accepts them: a Buffer/Uint8Array, or a string (UTF-8). */
export type Bytes = Uint8Array | string

/** Throws the TypeError a user expects for anything else. */
export function assertBytes(value: unknown, what: string): asserts value is Bytes {
  if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
    throw new TypeError(`${what} must be a Buffer, Uint8Array or string, got ${got}`)
  }
}
