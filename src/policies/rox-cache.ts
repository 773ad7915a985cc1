/**
 * The execmem ROX cache (mm/execmem.c with CONFIG_ARCH_HAS_EXECMEM_ROX), as Linux 6.17 runs it.
 * A RE-IMPLEMENTATION ON OUR SIMULATED MACHINE; the design policy (kernel-policy.ts) decides which
 * callers take memory from it (x86 6.17: module text, kprobes, ftrace; with the 2026 bpf-next
 * series also BPF packs).
 *
 * Why a component of its own: the cache is one global structure shared by every type that carries
 * EXECMEM_ROX_CACHE (one mutex, one free tree, within_range() per request), whatever the caller
 * does with the piece afterwards: the module loader and ftrace open a RW window
 * (execmem_alloc_rw), kprobes and BPF packs keep the piece ROX and write with text_poke.
 *
 * Modelled, from mm/execmem.c as merged for 6.17 (read in a tree carrying "execmem: rework
 * execmem_cache_free()", <20250713071730.4117334-4-rppt@kernel.org>):
 * - Allocation (__execmem_cache_alloc): page-aligned size; first fit in address order over the
 *   free areas (mas_for_each), accepted only when within_range(): addr >= start and
 *   addr + size < end (strict), for the range or the fallback. One mutex (execmem_cache.mutex)
 *   serialises everything (mutexAcquisitions; always contention-free here: one thread).
 * - Populate (execmem_cache_populate): vmalloc(round_up(size, PMD_SIZE), VM_ALLOW_HUGE_VMAP,
 *   PAGE_KERNEL) -- the machine maps 2 MiB leaves when it can and falls back to 4 KiB itself --
 *   and, if that fails, the exact size ("execmem: add fallback for failures in
 *   vmalloc(VM_ALLOW_HUGE_VMAP)"); execmem_fill_trapping_insns() while RW (x86: memset 0xcc);
 *   set_memory_rox on the whole area; execmem_cache_add() of the area; then allocate again.
 * - execmem_force_rw(): set_memory_nx then set_memory_rw (two CPA calls);
 *   execmem_restore_rox(): set_memory_rox (one call; x86 may collapse the 2 MiB leaf back,
 *   41d88484c71c).
 * - Free (execmem_cache_free -> __execmem_cache_free): force_rw (2) -> fill traps with a plain
 *   memset -> restore_rox (1) -> add to the free areas coalescing both neighbours
 *   (execmem_cache_add_locked) -> erase the busy entry; then the clean work runs.
 * - Clean (execmem_cache_clean): vfree every free interval whose start and size are PMD-aligned.
 *
 * Left out, each with its reason:
 * - the pending-free path (retry after FREE_DELAY when a maple-tree node cannot be had): our free
 *   never fails for want of memory for a tree node;
 * - the 10 ms delay of the clean work: it runs right after the free;
 * - in 6.17 a PMD-aligned free interval that spans two original areas is removed whole and only
 *   its first area vfree'd (the rest leaks); later trees release only an interval that is exactly
 *   one original area. We model the later check, so the model never leaks;
 * - 6.17's populate does not set VM_FLUSH_RESET_PERMS on the area (execmem_cache_clean vfrees it
 *   after execmem_set_direct_map_valid()); our vmalloc always resets the direct-map alias on
 *   vfree, as later trees do.
 */
import type { ExecmemRange } from '../arch/types.js';
import { alignUp, hexAddr } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { type LinuxPolicy, PAGE_BYTES, PMD_BYTES } from './common.js';
import { PolicyError } from './errors.js';

/** A free interval [start, end) of the cache. */
interface FreeArea {
  start: number;
  end: number;
}

export class RoxCache {
  /** free_areas, sorted by address, never adjacent (coalesced). */
  private readonly freeAreas: FreeArea[] = [];
  /** busy_areas: start -> size of every piece handed out. */
  private readonly busy = new Map<number, number>();
  /** Every vmalloc area the cache owns: start -> size (for the whole-area release check). */
  private readonly blocks = new Map<number, number>();

  constructor(private readonly policy: LinuxPolicy) {}

  get blockCount(): number {
    return this.blocks.size;
  }

  /** execmem_cache_alloc(): a ROX piece of `sizeBytes` (page multiple) in range `r`. */
  alloc(r: ExecmemRange, sizeBytes: number): number {
    assert(sizeBytes % PAGE_BYTES === 0 && sizeBytes > 0, 'ROX cache request not page-granular');
    this.policy.counters.mutexAcquisitions++;
    const va = this.allocLocked(r, sizeBytes) ?? this.populateAlloc(r, sizeBytes);
    this.busy.set(va, sizeBytes);
    return va;
  }

  /**
   * execmem_cache_free(): force_rw, trap fill, restore_rox, coalesce; then the clean work.
   * `writable`: the piece is still in its write window (freed before it was finalized).
   */
  free(va: number, writable: boolean): void {
    const size = this.busy.get(va);
    assert(size !== undefined, `ROX cache free of ${hexAddr(va)}: not a busy area`);
    this.policy.counters.mutexAcquisitions++;
    this.forceRw(va, size, writable ? 'rw' : 'rox');
    this.policy.storeTraps(va, size);
    this.restoreRox(va, size);
    this.busy.delete(va);
    this.addFree(va, va + size);
    this.clean();
  }

  /**
   * execmem_force_rw(): set_memory_nx then set_memory_rw (two CPA calls), on memory whose
   * protection is `from` (ROX for a cache piece; PAGE_KERNEL data, where neither call changes a
   * PTE, for execmem_alloc_rw() of a type outside the cache).
   */
  forceRw(va: number, sizeBytes: number, from: 'rox' | 'rw'): void {
    const pages = sizeBytes / PAGE_BYTES;
    this.policy.protect(va, pages, from === 'rox' ? 'ro' : 'rw');
    this.policy.protect(va, pages, 'rw');
  }

  /** execmem_restore_rox(): set_memory_rox (x86 may collapse the 2 MiB leaf back). */
  restoreRox(va: number, sizeBytes: number): void {
    this.policy.protect(va, sizeBytes / PAGE_BYTES, 'rox');
  }

  /** execmem_cache_clean(): vfree free intervals that are exactly one whole PMD-aligned area. */
  clean(): void {
    this.policy.counters.mutexAcquisitions++;
    for (let i = 0; i < this.freeAreas.length; i++) {
      const f = this.freeAreas[i];
      const size = f.end - f.start;
      if (f.start % PMD_BYTES !== 0 || size % PMD_BYTES !== 0) continue;
      if (this.blocks.get(f.start) !== size) continue;
      this.freeAreas.splice(i, 1);
      i--;
      this.blocks.delete(f.start);
      this.policy.vfree(f.start);
      this.policy.mapped(-size);
      this.policy.counters.blocksReleased++;
    }
  }

  /** __execmem_cache_alloc(): first fit over free areas in address order, within range. */
  private allocLocked(r: ExecmemRange, size: number): number | null {
    for (let i = 0; i < this.freeAreas.length; i++) {
      const f = this.freeAreas[i];
      if (f.end - f.start < size || !withinRange(r, f.start, size)) continue;
      const va = f.start;
      if (f.end - f.start === size) this.freeAreas.splice(i, 1);
      else f.start += size;
      return va;
    }
    return null;
  }

  /** execmem_cache_populate() then allocate: a 2 MiB-rounded block (exact size on failure), fill, ROX. */
  private populateAlloc(r: ExecmemRange, size: number): number {
    const p = this.policy;
    let area: { va: number; sizeBytes: number };
    try {
      area = p.vmalloc(r, alignUp(size, PMD_BYTES), true, PMD_BYTES);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      area = p.vmalloc(r, size);
      p.counters.exactSizeFallbacks++;
    }
    try {
      p.storeTraps(area.va, area.sizeBytes);
      p.protect(area.va, area.sizeBytes / PAGE_BYTES, 'rox');
    } catch (e) {
      p.vfree(area.va);
      throw e;
    }
    this.blocks.set(area.va, area.sizeBytes);
    p.mapped(area.sizeBytes);
    p.counters.blocksMapped++;
    p.counters.mutexAcquisitions++;
    this.addFree(area.va, area.va + area.sizeBytes);
    const va = this.allocLocked(r, size);
    if (va === null)
      assert(false, `freshly populated block at ${hexAddr(area.va)} cannot serve ${size} bytes`);
    return va;
  }

  /** execmem_cache_add_locked(): insert [start, end) merging with the neighbours. */
  private addFree(start: number, end: number): void {
    const list = this.freeAreas;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].start < start) lo = mid + 1;
      else hi = mid;
    }
    const prev = lo > 0 ? list[lo - 1] : undefined;
    const next = list[lo];
    if (!(prev === undefined || prev.end <= start))
      assert(false, `free of ${hexAddr(start)} overlaps free space`);
    if (!(next === undefined || end <= next.start))
      assert(false, `free of ${hexAddr(start)} overlaps free space`);
    if (prev !== undefined && prev.end === start) {
      prev.end = end;
      if (next !== undefined && next.start === end) {
        prev.end = next.end;
        list.splice(lo, 1);
      }
    } else if (next !== undefined && next.start === end) next.start = start;
    else list.splice(lo, 0, { start, end });
  }
}

/** within_range(): addr >= start && addr + size < end, for the range or the fallback. */
function withinRange(r: ExecmemRange, addr: number, size: number): boolean {
  const inside = (x: { start: number; end: number }) => addr >= x.start && addr + size < x.end;
  return inside(r.range) || (r.fallback !== null && inside(r.fallback));
}
