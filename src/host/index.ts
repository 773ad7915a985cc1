/**
 * The host backend's public surface: real executable memory in this process (see backend.ts for
 * the why of every choice), the small x86-64 generator used to prove it, and the probes.
 */
export {
  attachHost,
  HostBackend,
  HostBlock,
  type HostFaultPoint,
  type HostFunction,
  type HostMode,
  type HostOptions,
  type HostReport,
  type HostShareHandle,
  type HostThreadOptions,
  openHost,
} from './backend.js';
export { HostError, type HostErrorCode } from './errors.js';
export type { ProbeFault, ProbeResult } from './probe.js';
export { type MapsEntry, readMaps, readThpPolicy, type ThpPolicy } from './procmaps.js';
export type { LockInspection } from './rwlock.js';
export * from './x86gen.js';
