/**
 * execmem: a unified allocator for executable memory.
 *
 * The public surface. Everything a user needs is re-exported from here; deeper imports are
 * internal and may change.
 *
 * @example On the simulated kernel machine (the default backend):
 * ```ts
 * import { createMachine, Execmem, SimBackend, formatStats } from 'execmem';
 *
 * const machine = createMachine({ arch: 'x86_64', memoryBytes: 16 * 2 ** 30, cpus: 4, kaslr: true, seed: 1 });
 * const em = new Execmem(new SimBackend(machine));
 * const p = em.alloc('bpf', 300);                 // bigint address, read-only + executable, trap-filled
 * em.update(p, Uint8Array.of(0x31, 0xc0, 0xc3));  // the one write path (text_poke on x86)
 * em.free(p);                                     // size recovered internally, re-filled with 0xcc
 * console.log(formatStats(em.stats()));
 * console.log(machine.wxViolationCount());        // 0: never writable and executable at once
 * ```
 *
 * @example On real memory of this process (Linux x86-64):
 * ```ts
 * import { EAX, EDI, Execmem, openHost, X86Asm } from 'execmem';
 * const host = openHost({ mode: 'auto' });        // dualmap (memfd RX view + RW alias) or mprotect
 * const em = new Execmem(host);
 * const code = new X86Asm().mov(EAX, EDI).addImm(EAX, 1).ret().bytes(); // int f(int x) { return x + 1; }
 * const p = em.alloc('bpf', code.length);
 * em.update(p, code);
 * const f = host.fn(p, 'int (int)');
 * f(41);                                          // 42, run from real executable memory
 * host.close();
 * ```
 *
 * Addresses: every method of `Execmem` that takes an address takes what `alloc` returns, a
 * bigint in the architecture's 64-bit form (kernel addresses exceed 2^53). The `*Va` methods
 * (`allocVa`, `updateVa`, `sizeOfVa`...) are the same calls with the 48-bit form as a number, for
 * hot loops; `toVa` / `toBigAddr` (x86-64 form) and `archToVa` / `archToBig` (any arch) convert.
 * The simulated machine (`createMachine`) works in 48-bit numbers throughout, as its page tables
 * do.
 */

export type { ArchName, ArchSpec, ExecmemType, Prot } from './arch/index.js';
export { ARCHES, archByName, archHex, archToBig, archToVa, EXECMEM_TYPES } from './arch/index.js';
export { toBigAddr, toVa } from './base/addr.js';
export { Rng } from './base/rng.js';
export type {
  AllocContext,
  Backend,
  BackendBlock,
  BackendCounters,
  ExecmemCounters,
  ExecmemErrorCode,
  ExecmemOptions,
  ExecmemStats,
  ExecmemTypeStats,
} from './execmem/index.js';
export {
  BackendError,
  COST_COUNTERS,
  EXECMEM_ERROR_CODES,
  Execmem,
  ExecmemError,
  formatStats,
} from './execmem/index.js';
export { SimBackend } from './execmem/sim-backend.js';
export type {
  HostErrorCode,
  HostFunction,
  HostMode,
  HostOptions,
  HostReport,
  Label,
  MapsEntry,
  Reg,
} from './host/index.js';
export {
  EAX,
  EBX,
  ECX,
  EDI,
  EDX,
  ESI,
  genConst,
  genDiffTimesSum,
  genLinear,
  genSized,
  genSum,
  HostBackend,
  HostError,
  INT3,
  openHost,
  readMaps,
  X86Asm,
} from './host/index.js';
export type { DirectMapStats, MachineConfig, MachineCounters, VmArea } from './machine/index.js';
export { createMachine, Machine, MachineError, MachineFault, TLB_PROFILES } from './machine/index.js';
export type { PolicyName } from './policies/index.js';
export { POLICIES, POLICY_NAMES } from './policies/index.js';
export type { ExecAllocator } from './policies/types.js';
