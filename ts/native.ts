// The addon, through the loader that `napi build` generates in native/ (it
// picks the prebuilt binary of this platform: a local build or the
// @metastore/node-<platform> package). native/index.js and native/index.d.ts are
// generated and committed: every value and type that crosses the boundary is
// declared once, in crates/napi, and read from there.
// cpu.js refuses a CPU the addon cannot run on, before the addon loads.
import './cpu.js'
import * as binding from '../native/index.js'

export const native = binding
export { CompletionStatus, RequestKind } from '../native/index.js'
export type {
  BatchStats,
  Engine,
  ErrorCode,
  ErrorCodeInfo,
  LatencySummary,
  MemberInfo,
  MembershipChange,
  NodeStats,
  RaftRole,
  RaftStats,
  RequestOutcome,
  StorageStats,
  TransportStats,
  SubmitFailure,
} from '../native/index.js'
