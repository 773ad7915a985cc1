/**
 * The simulated kernel machine: shared types and the internal seams between its parts.
 *
 * Why this file exists: the machine is built from parts that are written and tested apart
 * (physical memory, page tables, TLBs, CPA, vmalloc, patching, the W^X audit). Each part talks
 * to the others only through the interfaces here, so a cost such as a TLB shootdown is always a
 * consequence of a page-table operation, never a number some layer reports about itself.
 *
 * Conventions: addresses are 48-bit numbers (base/addr.ts); `pfn` is a 4 KiB frame number;
 * sizes carry their unit in the name (`sizeBytes`, `pageCount`).
 */
import type { Prot } from '../arch/types.js';

/** Page-table entry flag bits (x86 names; arm64 maps them onto AP/UXN/PXN/nG). */
export const PTE_PRESENT = 1;
export const PTE_RW = 2;
export const PTE_NX = 4;
export const PTE_GLOBAL = 8;

/** Leaf levels: 1 = 4 KiB PTE, 2 = 2 MiB PMD leaf, 3 = 1 GiB PUD leaf. (4 = PGD, never a leaf.) */
export type LeafLevel = 1 | 2 | 3;
export const LEVEL_BYTES: Readonly<Record<LeafLevel, number>> = { 1: 4096, 2: 2097152, 3: 1073741824 };

/** Flags for a protection name, as the kernel's PAGE_KERNEL* pgprots. */
export function protToFlags(prot: Prot): number {
  switch (prot) {
    case 'none':
      return 0;
    case 'ro':
      return PTE_PRESENT | PTE_NX | PTE_GLOBAL; // PAGE_KERNEL_RO
    case 'rw':
      return PTE_PRESENT | PTE_RW | PTE_NX | PTE_GLOBAL; // PAGE_KERNEL
    case 'rox':
      return PTE_PRESENT | PTE_GLOBAL; // PAGE_KERNEL_ROX
    case 'rwx':
      return PTE_PRESENT | PTE_RW | PTE_GLOBAL; // PAGE_KERNEL_EXEC
  }
}

export function flagsToProt(flags: number): Prot {
  if (!(flags & PTE_PRESENT)) return 'none';
  const w = (flags & PTE_RW) !== 0;
  const x = (flags & PTE_NX) === 0;
  if (w && x) return 'rwx';
  if (w) return 'rw';
  if (x) return 'rox';
  return 'ro';
}

/** One translation as a page walk finds it (or a TLB entry caches it). */
export interface Translation {
  /** Virtual base of the leaf (aligned to its size). */
  readonly va: number;
  readonly level: LeafLevel;
  /** First frame of the leaf (physically contiguous, aligned to the leaf size). */
  readonly pfn: number;
  readonly flags: number;
}

/** A leaf as it was before a change, reported to listeners (TLBs, W^X audit). */
export interface LeafChange {
  readonly va: number;
  readonly level: LeafLevel;
  /** The old leaf (null if nothing was mapped). */
  readonly old: Translation | null;
  /** The new leaf (null if unmapped). */
  readonly next: Translation | null;
}

/** Who wants to hear about every leaf change of a page table (W^X audit, TLB staleness). */
export interface LeafListener {
  onLeafChange(change: LeafChange): void;
}

/** Counters kept by the machine; all monotonically increasing. */
export interface MachineCounters {
  /** Page walks on TLB misses. */
  pageWalks: number;
  /** Local TLB flushes (one CPU, range or full). */
  localFlushes: number;
  /** Global shootdowns: one flush request that reaches every CPU. */
  shootdowns: number;
  /** Inter-processor interrupts sent for shootdowns (cpus - 1 each). */
  ipis: number;
  /**
   * Hardware-broadcast invalidations (arm64 TLBI ...IS, flush_tlb_kernel_range): they reach every
   * CPU without an IPI, so they are counted apart from `shootdowns`.
   */
  broadcastFlushes: number;
  /**
   * Of `shootdowns` + `broadcastFlushes`: those that invalidated every CPU's whole TLB
   * (flush_tlb_all(), or a flush_tlb_kernel_range() longer than arch.kernelFlushCeilingPages).
   */
  fullTlbFlushes: number;
  /** Large-leaf splits by level (2 = 2 MiB into 4 KiB, 3 = 1 GiB into 2 MiB) and region. */
  splitsDirectMap2M: number;
  splitsDirectMap1G: number;
  splitsVmalloc2M: number;
  splitsVmalloc1G: number;
  collapsesDirectMap2M: number;
  collapsesDirectMap1G: number;
  collapsesVmalloc2M: number;
  collapsesVmalloc1G: number;
  /** set_memory_* calls and the pages they covered. */
  cpaCalls: number;
  cpaPages: number;
  /** Alias writes (text_poke / fixmap) and their bytes. */
  pokes: number;
  pokeBytes: number;
  /**
   * Linux patching: steps of at most arch.pokeMaxPages pages each. Write sessions (ours,
   * write-session.ts): one per write, plus one per window chunk a write crosses; each is one
   * switch into the session mm and back, whatever the pages.
   */
  pokeSteps: number;
  /** I-cache maintenance operations (arm64): one per patch copy or per write-session write. */
  icacheFlushes: number;
  /**
   * text_poke_sync() calls (x86 arch/x86/kernel/alternative.c: on_each_cpu(do_sync_core, NULL, 1)):
   * each serialises every CPU, the others by IPI. Live code patching (text_poke_bp_batch) issues
   * three per batch. Counted apart from shootdowns and `ipis`: they flush no TLB.
   */
  syncCores: number;
  /** IPIs those calls sent (cpus - 1 each: on_each_cpu runs the function locally without one). */
  syncCoreIpis: number;
  /** vmalloc calls, 4 KiB fallbacks after a failed 2 MiB physical allocation, and vfrees. */
  vmallocs: number;
  vmallocHugeFallbacks: number;
  vfrees: number;
  /** Page-table frames allocated / freed over the machine's life. */
  ptFramesAllocated: number;
  ptFramesFreed: number;
}

export function newCounters(): MachineCounters {
  return {
    pageWalks: 0,
    localFlushes: 0,
    shootdowns: 0,
    ipis: 0,
    broadcastFlushes: 0,
    fullTlbFlushes: 0,
    splitsDirectMap2M: 0,
    splitsDirectMap1G: 0,
    splitsVmalloc2M: 0,
    splitsVmalloc1G: 0,
    collapsesDirectMap2M: 0,
    collapsesDirectMap1G: 0,
    collapsesVmalloc2M: 0,
    collapsesVmalloc1G: 0,
    cpaCalls: 0,
    cpaPages: 0,
    pokes: 0,
    pokeBytes: 0,
    pokeSteps: 0,
    icacheFlushes: 0,
    syncCores: 0,
    syncCoreIpis: 0,
    vmallocs: 0,
    vmallocHugeFallbacks: 0,
    vfrees: 0,
    ptFramesAllocated: 0,
    ptFramesFreed: 0,
  };
}

/** Like /proc/meminfo DirectMap4k/2M/1G. */
export interface DirectMapStats {
  bytes4k: number;
  bytes2m: number;
  bytes1g: number;
}

/** A vmalloc area (Linux vm_struct + vmap_area). */
export interface VmArea {
  readonly va: number;
  readonly sizeBytes: number;
  /** VA reserved including the trailing guard page(s). */
  readonly reservedBytes: number;
  /** Leaf size actually used for the mapping (2 MiB when huge succeeded, else 4 KiB). */
  readonly leafBytes: number;
  /** Frames backing the area, one entry per leaf (first pfn of each leaf). */
  readonly leafPfns: readonly number[];
  readonly prot: Prot;
  /** VM_FLUSH_RESET_PERMS: on vfree, reset the direct-map alias to RW+NX and flush. */
  readonly flushResetPerms: boolean;
}

export interface VmallocRequest {
  readonly sizeBytes: number;
  /** Where the VA must lie. */
  readonly range: { readonly start: number; readonly end: number };
  readonly alignBytes?: number;
  readonly prot: Prot;
  /** VM_ALLOW_HUGE_VMAP: use 2 MiB leaves when size and alignment permit. */
  readonly allowHuge?: boolean;
  /** Guard pages after the area (Linux: 1 unless VM_NO_GUARD). */
  readonly guardPages?: number;
  readonly flushResetPerms?: boolean;
}

/** The kind of fault a CPU access raises. */
export type FaultKind = 'not-present' | 'write-protect' | 'nx' | 'trap';
