// The addon, through the loader that `napi build` generates in native/ (it
// picks the prebuilt binary of this platform: a local build or the
// metastore-<platform> package).
import * as binding from '../native/index.js'

export const native = binding
export type { BatchOptions, ClusterOptions, NodeStatsView, BatchStatsView } from '../native/index.js'
