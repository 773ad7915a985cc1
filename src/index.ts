/**
 * execmem: a unified allocator for executable memory.
 *
 * The public surface. Everything a user needs is re-exported from here; deeper imports are
 * internal and may change.
 */
export { archByName, ARCHES, EXECMEM_TYPES } from './arch/index.js';
export type { ArchName, ArchSpec, ExecmemType, Prot } from './arch/index.js';
export { toBigAddr, toVa } from './base/addr.js';
