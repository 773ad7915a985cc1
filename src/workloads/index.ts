/**
 * Workloads: the trace format, the generators, the registry and the replay engine.
 *
 * Why one entry point: the CLI (`execmem compare --workload NAME`), the metrics layer and tests
 * need the same few names; deeper imports are internal to this folder.
 */
export { type BpfAaronLuOptions, type BpfChurnOptions, bpfAaronLu, bpfChurn } from './bpf.js';
export { TraceBuilder, type WorkloadOptions } from './builder.js';
export { CODE_EXCLUDED_BYTES } from './bytes.js';
export { type MixedOptions, mixed } from './mixed.js';
export { type ModulesOptions, modulesSynthetic } from './modules.js';
export { WORKLOADS, type WorkloadSpec, workloadByName } from './registry.js';
export {
  type ExecFunction,
  type ReplayFailure,
  type ReplayHooks,
  type ReplayOptions,
  type ReplayResult,
  replay,
} from './replay.js';
export { type ModuleSizes, moduleSizes } from './sizes.js';
export {
  loadTrace,
  saveTrace,
  summarizeTrace,
  TRACE_FORMAT,
  type Trace,
  TraceError,
  type TraceEvent,
  type TraceOp,
  type TraceSummary,
  validateTrace,
} from './trace.js';
export { type TrampolinesOptions, trampolines } from './trampolines.js';
