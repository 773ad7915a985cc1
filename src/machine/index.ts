/**
 * The simulated kernel machine's public surface (sim backend, policies, metrics and tests import
 * from here). Internal parts (cpu.ts, cpa.ts, vmalloc.ts, patch.ts, boot.ts) stay reachable by
 * path for tests, but layers above should need only what is re-exported here.
 */
export { MachineError, MachineFault } from './errors.js';
export type { FrameAccounting, MachineConfig } from './machine.js';
export { createMachine, Machine } from './machine.js';
export { PageTable } from './pagetable.js';
export { PhysMem } from './phys.js';
export type { CpuTlb, TlbSide, TlbStats } from './tlb.js';
export type { TlbProfile } from './tlb-profiles.js';
export { TLB_PROFILES } from './tlb-profiles.js';
export * from './types.js';
export { WRITE_SESSION_PAGES, type WriteSession, writeSessionWindow } from './write-session.js';
export type { WxViolation } from './wx.js';
