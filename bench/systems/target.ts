/** What the runner needs from a system under test. */
export interface Target {
  /** One write of `value` under `key`, resolved when acknowledged (committed). */
  put(key: Buffer, value: Buffer): Promise<unknown>
  /** Counters read before and after the measured window. */
  sample(): TargetSample
  /** Stops the system and frees its resources; the data dir is removed by the caller. */
  close(): Promise<void>
}

export interface TargetSample {
  /** CPU time (user + system, microseconds) of server processes outside this one (etcd); 0 for in-process systems. */
  externalCpuUs: number
  /** The leader's batch counters (MetaStore only). */
  batch?: { proposals: number; batches: number; avgBatchSize: number }
  /** The leader's Raft log writes (one per `Ready`) and how many were synced (MetaStore only). */
  log?: { writes: number; syncs: number; syncMicros: number }
  /** Everything the system reports about itself (MetaStore: the leader's `stats()`), kept in the JSON. */
  detail?: unknown
}
