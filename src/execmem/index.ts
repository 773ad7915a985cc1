/** The execmem allocator's public surface (re-exports; see execmem.ts for the design). */
export type { Backend, BackendBlock, BackendCounters, ExecLock, MapBlockRequest } from './backend.js';
export { BackendError, newBackendCounters } from './backend.js';
export { EXECMEM_ERROR_CODES, ExecmemError, type ExecmemErrorCode } from './errors.js';
export {
  type AllocContext,
  BLOCK_BYTES,
  DEFAULT_GRANULE_BYTES,
  Execmem,
  type ExecmemOptions,
  MAX_ALIGN_BYTES,
  MAX_ALLOC_BYTES,
  type PoolSharing,
  RO_AFTER_INIT_BLOCK_BYTES,
} from './execmem.js';
export { buildRangeTable, modulesStartFor, type TypeClass, type TypeRange } from './ranges.js';
export { SimBackend, type SimBackendOptions } from './sim-backend.js';
export {
  COST_COUNTERS,
  type ExecmemCounters,
  type ExecmemPoolStats,
  type ExecmemStats,
  type ExecmemTypeStats,
  formatStats,
} from './stats.js';
