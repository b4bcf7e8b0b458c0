/** Propose-to-flush latency percentiles, in microseconds. */
export interface LatencySummary {
  p50Us: number
  p90Us: number
  p99Us: number
  p999Us: number
  maxUs: number
  count: number
}

/** The seed's seven figures, plus flush reasons and latency. */
export interface BatchStats {
  totalProposals: number
  totalBatches: number
  avgBatchSize: number
  currentLoad: number
  currentBatchSize: number
  currentTimeoutMs: number
  bufferLen: number
  flushesBySize: number
  flushesByDeadline: number
  flushesByIdle: number
  flushesByStop: number
  latency: LatencySummary
}

export type RaftRole = 'leader' | 'follower' | 'candidate' | 'pre-candidate'

export interface RaftStats {
  id: number
  role: RaftRole
  /** 0 while no leader is known. */
  leaderId: number
  term: number
  commitIndex: number
  appliedIndex: number
  lastIndex: number
  /** Raft `Ready`s written to the log since start (each one write of new entries and hard state); the synced ones are `storage.syncs`. */
  logWrites: number
}

export interface StorageStats {
  engine: 'memory' | 'rocksdb'
  logEntries: number
  approximateBytes: number
  /** Syncs of the write-ahead log since start (rocksdb with `sync: true`; 0 in memory). */
  syncs: number
  /** Wall time spent in those syncs, microseconds: `syncMicros / syncs` is the mean fsync latency. */
  syncMicros: number
}

export interface NodeStats {
  raft: RaftStats
  batch: BatchStats
  storage: StorageStats
}
