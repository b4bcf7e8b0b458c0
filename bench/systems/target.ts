import type { DriveOptions, LoadResult } from '../load.js'
import type { LoadSpec } from '../scenarios.js'

/**
 * What the runner needs from a system under test: either a `put` the runner's
 * load drivers call (`ClientTarget`), or a `drive` that runs the load inside
 * the system's own processes (`SelfDrivenTarget`).
 */
export type Target = ClientTarget | SelfDrivenTarget

interface TargetBase {
  /** Counters read before and after the measured window. */
  sample(): TargetSample | Promise<TargetSample>
  /** Stops the system and frees its resources; the data dir is removed by the caller. */
  close(): Promise<void>
}

export interface ClientTarget extends TargetBase {
  /** One write of `value` under `key`, resolved when acknowledged (committed). */
  put(key: Buffer, value: Buffer): Promise<unknown>
  /**
   * A load spread over the members: one `put` per member, followers first,
   * the load split over them as `spread` splits it for MetaStore's member
   * processes. When set, the runner uses these instead of `put`.
   */
  memberPuts?: Array<(key: Buffer, value: Buffer) => Promise<unknown>>
}

export interface SelfDrivenTarget extends TargetBase {
  /** Runs `load` inside the system's processes for the window `options` describe, and reports it as one result. */
  drive(load: LoadSpec, options: DriveOptions): Promise<LoadResult>
}

/** Bytes and messages a system's nodes sent to and received from each other, summed over the nodes. */
export interface TransportSample {
  messagesSent?: number
  bytesSent: number
  messagesReceived?: number
  bytesReceived: number
}

export interface TargetSample {
  /** CPU time (user + system, microseconds) of server processes outside this one (etcd, member processes); 0 for in-process systems. */
  externalCpuUs: number
  /** Batch counters (MetaStore only): the leader's, or summed over the nodes when every node batches its own clients' puts. */
  batch?: { proposals: number; batches: number; avgBatchSize: number }
  /** The leader's Raft log writes (one per `Ready`) and how many were synced (MetaStore only). */
  log?: { writes: number; syncs: number; syncMicros: number }
  /** Traffic between the nodes (systems whose nodes talk over the network). */
  transport?: TransportSample
  /** The node that leads, where the system says so cheaply. */
  leaderId?: number
  /** Everything the system reports about itself (MetaStore: the leader's `stats()`), kept in the JSON. */
  detail?: unknown
}
