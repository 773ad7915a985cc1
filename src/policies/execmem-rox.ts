/**
 * `execmem-rox`: Linux's execmem ROX cache of large pages (mm/execmem.c with
 * CONFIG_ARCH_HAS_EXECMEM_ROX). A RE-IMPLEMENTATION ON OUR SIMULATED MACHINE of the design in
 * research/linux-execmem.md section 2.3 (sources rppt/linux:mm/execmem.c@03db8fbf and
 * linux-mm/linux-mm@11384dff).
 *
 * Why it exists: large ROX pages for module text "reduce iTLB pressure" (v3 patch), and handing
 * out pieces of an already-ROX block avoids a permission change per allocation. Its costs are the
 * ones this project wants to beat: page granularity (a 300-byte BPF program takes 4 KiB), and
 * every write window and every free is a set_memory_* on part of a 2 MiB leaf: a split, global
 * shootdowns, and (x86, commit 41d88484c71c) a collapse back.
 *
 * Version chosen: the July 2025 rework (<20250713071730.4117334-1-rppt@kernel.org>,
 * "execmem: rework execmem_cache_free()"), the newest merged design:
 * - Allocation sizes are page-aligned; first fit in address order over the free intervals
 *   (mas_for_each over free_areas), accepted only when within_range(): addr >= start and
 *   addr + size < end (strict, as the kernel), for the range or the fallback.
 * - One global mutex (execmem_cache.mutex) serialises the cache (mutexAcquisitions counts them;
 *   always contention-free here: one thread).
 * - Populate: vmalloc(round_up(size, PMD_SIZE), VM_ALLOW_HUGE_VMAP, PAGE_KERNEL) — the machine
 *   maps 2 MiB leaves when it can and falls back to 4 KiB itself (counted by the machine) — and if
 *   vmalloc fails altogether, retry with the exact size ("execmem: add fallback for failures in
 *   vmalloc(VM_ALLOW_HUGE_VMAP)"). execmem_fill_trapping_insns() while RW, then set_memory_rox;
 *   then, under the mutex, add the block to the free areas (coalescing neighbours) and allocate.
 * - Writes: the module loader uses execmem_alloc_rw() (execmem_force_rw = set_memory_nx +
 *   set_memory_rw on the allocation), writes directly, and module_enable_text_rox() restores ROX
 *   (set_memory_rox). We apply that flow to every ROX-cache type: the first write of a loading
 *   allocation opens the RW window, finalize closes it; a write after finalize opens and closes a
 *   window around itself. (Earlier versions used a writable copy plus text_poke, see section 2.3
 *   "How module text is written"; the 2025 commit calls RW + memcpy + restore "more efficient".)
 * - Free: execmem_force_rw (2 CPA calls) -> fill traps with a plain memset -> execmem_restore_rox
 *   (1 CPA call) -> add to free areas with coalescing -> erase busy. Each CPA call flushes globally.
 *   The pending-free path (retry after 10 ms on allocation failure) is not modelled: our free
 *   never fails for lack of maple-tree nodes.
 * - Release (execmem_cache_clean, run by the work item after each free; the 10 ms delay is not
 *   modelled, it runs right after the free): a free interval is vfree'd only if its start and size
 *   are PMD-aligned AND it is exactly one whole original vmalloc area (the newest check). There is
 *   no shrinker, so shrink() only runs the same clean.
 * - Types without EXECMEM_ROX_CACHE in the arch table (x86: kprobes, module data; every type on
 *   arm64 and generic) take the plain execmem path (vmalloc per allocation, one set_memory_rox for
 *   text at finalize / at allocation for kprobes).
 * - The BPF JIT here gets page-granular pieces straight from the cache (no bpf_prog_pack on top):
 *   the policy shows the cache's own behaviour; packs on top are the bpf_prog_pack policy.
 */
import type { ExecmemRange, ExecmemType } from '../arch/types.js';
import { alignUp, hexAddr } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Machine } from '../machine/machine.js';
import { type Allocation, newAllocation, PAGE_BYTES, PMD_BYTES } from './common.js';
import { PolicyError } from './errors.js';
import { PlainPolicy } from './plain.js';

/** A free interval [start, end) of the cache. */
interface FreeArea {
  start: number;
  end: number;
}

/** One vmalloc area the cache owns (for the "whole original area" release check). */
interface CacheBlock {
  readonly va: number;
  readonly sizeBytes: number;
}

export class ExecmemRoxPolicy extends PlainPolicy {
  /** free_areas, sorted by address, never adjacent (coalesced). */
  private readonly freeAreas: FreeArea[] = [];
  private readonly blocks = new Map<number, CacheBlock>();

  constructor(machine: Machine) {
    super('execmem-rox', machine, 'execmem-6.10');
  }

  get blockCount(): number {
    return this.blocks.size;
  }

  get freeBytes(): number {
    let total = 0;
    for (const f of this.freeAreas) total += f.end - f.start;
    return total;
  }

  protected override allocate(type: ExecmemType, sizeBytes: number, alignBytes: number): Allocation {
    const r = this.rangeFor(type);
    if (!r.flags.roxCache) return this.plainAllocate(type, sizeBytes, alignBytes);
    const size = alignUp(sizeBytes, PAGE_BYTES);
    this.counters.mutexAcquisitions++;
    const va = this.cacheAllocLocked(r, size) ?? this.populateAlloc(r, size);
    return newAllocation(va, type, sizeBytes, size, 'cache', false, 'rox');
  }

  protected override writeInto(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.kind !== 'cache') {
      this.writeByProt(a, va, bytes);
      return;
    }
    if (a.writable) {
      this.store(va, bytes);
      return;
    }
    this.forceRw(a.va, a.reservedBytes);
    a.writable = true;
    this.store(va, bytes);
    if (a.state !== 'loading') this.restoreRox(a);
  }

  protected override finalizeAlloc(a: Allocation): void {
    if (a.kind !== 'cache') this.plainFinalize(a);
    else if (a.writable) this.restoreRox(a);
  }

  protected override release(a: Allocation): void {
    if (a.kind !== 'cache') {
      this.plainRelease(a);
      return;
    }
    this.counters.mutexAcquisitions++;
    if (!a.writable) this.forceRw(a.va, a.reservedBytes);
    this.storeTraps(a.va, a.reservedBytes);
    this.restoreRox(a);
    this.addFree(a.va, a.va + a.reservedBytes);
    this.clean();
  }

  override shrink(): void {
    this.counters.mutexAcquisitions++;
    this.clean();
  }

  // ---- the cache ----

  /** execmem_cache_alloc_locked(): first fit over free areas in address order, within range. */
  private cacheAllocLocked(r: ExecmemRange, size: number): number | null {
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

  /** execmem_cache_populate_alloc(): map a 2 MiB-rounded block (exact size on failure), fill, ROX. */
  private populateAlloc(r: ExecmemRange, size: number): number {
    let area: { va: number; sizeBytes: number };
    try {
      area = this.vmalloc(r, alignUp(size, PMD_BYTES), true, PMD_BYTES);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      area = this.vmalloc(r, size, false);
      this.counters.exactSizeFallbacks++;
    }
    this.makeAreaRox(area.va, area.sizeBytes, true);
    this.blocks.set(area.va, { va: area.va, sizeBytes: area.sizeBytes });
    this.mappedBytes += area.sizeBytes;
    this.counters.blocksMapped++;
    this.counters.mutexAcquisitions++;
    this.addFree(area.va, area.va + area.sizeBytes);
    const va = this.cacheAllocLocked(r, size);
    if (!(va !== null))
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

  /** execmem_cache_clean(): vfree free intervals that are exactly one whole PMD-aligned area. */
  private clean(): void {
    for (let i = 0; i < this.freeAreas.length; i++) {
      const f = this.freeAreas[i];
      const size = f.end - f.start;
      if (f.start % PMD_BYTES !== 0 || size % PMD_BYTES !== 0) continue;
      const block = this.blocks.get(f.start);
      if (block === undefined || block.sizeBytes !== size) continue;
      this.freeAreas.splice(i, 1);
      i--;
      this.blocks.delete(f.start);
      this.vfree(f.start);
      this.mappedBytes -= size;
      this.counters.blocksReleased++;
    }
  }

  /** execmem_force_rw(): set_memory_nx then set_memory_rw (two CPA calls). */
  private forceRw(va: number, sizeBytes: number): void {
    const pages = sizeBytes / PAGE_BYTES;
    this.protect(va, pages, 'ro');
    this.protect(va, pages, 'rw');
  }

  /** execmem_restore_rox(): set_memory_rox (x86 may collapse the 2 MiB leaf back). */
  private restoreRox(a: Allocation): void {
    this.protect(a.va, a.reservedBytes / PAGE_BYTES, 'rox');
    a.writable = false;
  }
}

/** within_range(): addr >= start && addr + size < end, for the range or the fallback. */
function withinRange(r: ExecmemRange, addr: number, size: number): boolean {
  const inside = (x: { start: number; end: number }) => addr >= x.start && addr + size < x.end;
  return inside(r.range) || (r.fallback !== null && inside(r.fallback));
}

export function createExecmemRox(machine: Machine): ExecmemRoxPolicy {
  return new ExecmemRoxPolicy(machine);
}
