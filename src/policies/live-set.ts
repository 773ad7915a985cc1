/**
 * The side tables every re-implemented Linux design keeps about its callers' allocations: one
 * record per live allocation (never stored in executable memory, DESIGN.md rule 10), a sorted set
 * of them so a write inside an allocation finds it by binary search, and the counters a design
 * keeps about its own calls.
 *
 * Why apart from the base class: the records are plain data shared by the base class and by the
 * mechanisms it is built from (module regions, kprobe slot pages, BPF packs, the ROX cache), and
 * none of them needs the machine.
 */
import type { ExecmemType, Prot } from '../arch/types.js';
import { hexAddr } from '../base/addr.js';
import { assert } from '../base/assert.js';

/**
 * Which mechanism serves an allocation:
 * - 'area': a page-granular area of its own (module_alloc / execmem_alloc, or a ROX-cache piece);
 * - 'region': one section inside a module's core or init allocation (Linux before 6.4);
 * - 'kprobe-slot': a slot of a kprobe_insn_cache page;
 * - 'pack': 64-byte chunks of a bpf_prog_pack;
 * - 'slab': an object of Kent Overstreet's jit_alloc slab.
 */
export type AllocKind = 'area' | 'region' | 'kprobe-slot' | 'pack' | 'slab';

/** Where a live allocation is in its life. */
export type AllocState = 'loading' | 'final' | 'sealed';

/** One live allocation, as the policy remembers it (side table; never in executable memory). */
export interface Allocation {
  readonly va: number;
  readonly type: ExecmemType;
  /** Bytes the caller asked for (the unit liveBytes is counted in, identical across policies). */
  readonly sizeBytes: number;
  /** Bytes the design set aside for it (page, chunk or class rounded). */
  readonly reservedBytes: number;
  /** Which mechanism of the design serves it. */
  readonly kind: AllocKind;
  state: AllocState;
  /** Are its pages writable through the primary mapping right now? */
  writable: boolean;
  /** Protection its pages return to after a temporary RW window (the design's final protection). */
  finalProt: Prot;
  /** bpf_prog_pack: the RW image the JIT writes before finalize (kvmalloc'd, not executable). */
  rwImage: Uint8Array | null;
  /** The area, module region, slot page, pack or slab that holds it. */
  owner: unknown;
}

export function newAllocation(
  va: number,
  type: ExecmemType,
  sizeBytes: number,
  reservedBytes: number,
  kind: AllocKind,
  writable: boolean,
  finalProt: Prot,
  owner: unknown = null,
): Allocation {
  return {
    va,
    type,
    sizeBytes,
    reservedBytes,
    kind,
    state: 'loading',
    writable,
    finalProt,
    rwImage: null,
    owner,
  };
}

/**
 * Live allocations by start address, with a sorted index so that a write at an address inside an
 * allocation finds it by binary search.
 */
export class LiveSet {
  private readonly byStart = new Map<number, Allocation>();
  private readonly starts: number[] = [];
  liveBytes = 0;

  get count(): number {
    return this.byStart.size;
  }

  add(a: Allocation): void {
    if (this.byStart.has(a.va)) assert(false, `live allocation at ${hexAddr(a.va)} already exists`);
    const i = this.lowerBound(a.va);
    const next = this.starts[i];
    if (next !== undefined && a.va + a.sizeBytes > next)
      assert(false, `${hexAddr(a.va)} overlaps the next one`);
    const prev = i > 0 ? this.byStart.get(this.starts[i - 1]) : undefined;
    if (prev !== undefined && prev.va + prev.sizeBytes > a.va)
      assert(false, `allocation at ${hexAddr(a.va)} overlaps`);
    this.starts.splice(i, 0, a.va);
    this.byStart.set(a.va, a);
    this.liveBytes += a.sizeBytes;
  }

  remove(a: Allocation): void {
    const i = this.lowerBound(a.va);
    if (!(this.starts[i] === a.va && this.byStart.get(a.va) === a))
      assert(false, `no live allocation at ${hexAddr(a.va)}`);
    this.starts.splice(i, 1);
    this.byStart.delete(a.va);
    this.liveBytes -= a.sizeBytes;
  }

  at(va: number): Allocation | undefined {
    return this.byStart.get(va);
  }

  /** The allocation whose [va, va + sizeBytes) contains `va`. */
  containing(va: number): Allocation | undefined {
    const i = this.lowerBound(va + 1) - 1;
    if (i < 0) return undefined;
    const a = this.byStart.get(this.starts[i])!;
    return va < a.va + a.sizeBytes ? a : undefined;
  }

  forEach(fn: (a: Allocation) => void): void {
    for (const va of this.starts) fn(this.byStart.get(va)!);
  }

  /** First index whose start is >= va. */
  private lowerBound(va: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] < va) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Counters every policy keeps about its own calls (machine costs come from the machine). */
export interface PolicyCounters {
  allocs: number;
  frees: number;
  writes: number;
  finalizes: number;
  seals: number;
  /** vmalloc / vfree calls the design made. */
  vmallocs: number;
  vfrees: number;
  /** set_memory_* calls the design made (each may cover many pages). */
  setMemoryCalls: number;
  /** Alias writes (text_poke / fixmap) and unprotect-memcpy-protect writes. */
  pokes: number;
  flipWrites: number;
  /** Plain stores through a writable primary mapping. */
  plainWrites: number;
  /** Acquisitions of the design's one allocator mutex (all contention-free: one thread). */
  mutexAcquisitions: number;
  /** Packs, slabs or cache blocks mapped and released. */
  blocksMapped: number;
  blocksReleased: number;
  /** Cache fills that wanted a 2 MiB block but took the exact-size fallback. */
  exactSizeFallbacks: number;
}

export function newPolicyCounters(): PolicyCounters {
  return {
    allocs: 0,
    frees: 0,
    writes: 0,
    finalizes: 0,
    seals: 0,
    vmallocs: 0,
    vfrees: 0,
    setMemoryCalls: 0,
    pokes: 0,
    flipWrites: 0,
    plainWrites: 0,
    mutexAcquisitions: 0,
    blocksMapped: 0,
    blocksReleased: 0,
    exactSizeFallbacks: 0,
  };
}

/** A live allocation as the compare harness sees it (for the module-area occupancy map). */
export interface LiveExtent {
  readonly va: number;
  readonly sizeBytes: number;
  readonly type: ExecmemType;
}

/**
 * A page-granular area a design got from module_alloc() / execmem_alloc(): its own vmalloc area
 * (`cached` false) or a piece of the ROX cache (`cached` true). Freed with execmem_free(), which
 * returns a cache piece to the cache and vfrees anything else.
 */
export interface Area {
  readonly va: number;
  readonly sizeBytes: number;
  readonly cached: boolean;
}
