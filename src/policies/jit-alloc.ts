/**
 * `jit_alloc-2023`: Kent Overstreet's "mm: jit/text allocator" slab, posted in the May 2023
 * thread (<ZHEy5SkFwI+dZjOC@moria.home.lan>, research/lkml-thread.md section 3), applied to
 * Linux 6.4 (in release candidates when it was posted; the first release with per-section module
 * memory). A RE-IMPLEMENTATION ON OUR SIMULATED MACHINE, written from the description and the
 * posted code's behaviour (not copied).
 *
 * Why it is here: it is the thread's simplest answer to sub-page sharing without ever mapping a
 * page W+X ("avoid ever mapping pages both writeable and executable"), and it shows what sub-page
 * packing on 4 KiB pages buys and costs: dense packing of tiny objects, but one module_alloc page,
 * one set_memory_rox (global flush, direct-map split) per slab, and no large pages at all.
 *
 * Behaviour modelled:
 * - Size classes: powers of two from JITALLOC_MIN_SIZE = 16 B; NR_JIT_CACHES = ilog2(PAGE_SIZE /
 *   16) = 8 classes, 16 B .. 2 KiB. Class index = ilog2(roundup_pow_of_two(len) / 16).
 * - A slab is one module_alloc(PAGE_SIZE) page (module text range), set_memory_rox once, with a
 *   bitmap of objects in a side table; allocation takes the first clear bit of the first slab on
 *   the class's partial list (a slab joins the list head after its first object and after it
 *   stops being full; it leaves the list when full).
 * - Larger requests: module_alloc(len) (page-rounded) + set_memory_rox.
 * - One global mutex (jit_alloc_lock) around slab alloc and free (mutexAcquisitions).
 * - jit_update() = text_poke_copy: every write goes through the alias. On an arch without one we
 *   use Kent's own proposed fallback, unprotect / memcpy / protect inside the helper
 *   (jitalloc_update, <ZHFDO/95KMXRdOWI@moria.home.lan>).
 * - No trap fill: the posted code neither fills new slabs nor invalidates freed objects.
 * - Free of the last object of a slab releases the slab. (Deviation: the posted code calls
 *   folio_put() on the vmalloc page, which would leak the vm area; we vfree it, which is what it
 *   evidently meant.)
 * - Data types (module_data, rodata, ro_after_init) are not text: they take Linux 6.4's path, the
 *   kernel the proposal was written against (set_memory_rox since 6.2, module_memory_alloc() per
 *   section since 6.4): module_alloc() per section, PAGE_KERNEL, written directly, rodata
 *   set_memory_ro and every data-class section module_enable_nx's set_memory_nx at finalize,
 *   ro_after_init set_memory_ro when sealed (kernel-policy.ts with the LINUX_6_4 profile).
 * - Every text type takes the slab, BPF programs and trampolines and kprobes included, and the
 *   allocation hint is ignored: the proposal is one allocator for all text, whatever the caller.
 */
import type { ExecmemType } from '../arch/types.js';
import { typeIsText } from '../arch/types.js';
import { alignUp } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Machine } from '../machine/machine.js';
import { PAGE_BYTES } from './common.js';
import { LINUX_6_4 } from './kernel.js';
import { KernelPolicy } from './kernel-policy.js';
import { type Allocation, type Area, newAllocation } from './live-set.js';
import type { AllocHint } from './types.js';

export const JITALLOC_MIN_BYTES = 16;
export const NR_JIT_CACHES = Math.log2(PAGE_BYTES / JITALLOC_MIN_BYTES); // 8: 16 B .. 2 KiB

/** One slab: a ROX page and its object bitmap (side table). */
export class Slab {
  readonly used: Uint8Array;
  usedCount = 0;
  onPartial = false;
  constructor(
    readonly area: Area,
    readonly cache: JitCache,
  ) {
    this.used = new Uint8Array(cache.objsPerSlab);
  }

  firstFree(): number {
    return this.used.indexOf(0);
  }
}

/** One size class. */
export class JitCache {
  readonly objBytes: number;
  readonly objsPerSlab: number;
  /** Slabs with free objects; index 0 is the list head. */
  readonly partial: Slab[] = [];
  constructor(readonly index: number) {
    this.objBytes = JITALLOC_MIN_BYTES << index;
    this.objsPerSlab = PAGE_BYTES / this.objBytes;
  }
}

/** ilog2(roundup_pow_of_two(len) / 16), with lengths up to 16 in class 0. */
export function jitClassIndex(sizeBytes: number): number {
  return Math.max(0, Math.ceil(Math.log2(sizeBytes)) - Math.log2(JITALLOC_MIN_BYTES));
}

export class JitAlloc2023Policy extends KernelPolicy {
  private readonly caches: JitCache[] = [];
  private slabCount = 0;

  constructor(machine: Machine) {
    super('jit_alloc-2023', machine, LINUX_6_4);
    for (let i = 0; i < NR_JIT_CACHES; i++) this.caches.push(new JitCache(i));
  }

  get slabs(): number {
    return this.slabCount;
  }

  protected override allocate(
    type: ExecmemType,
    sizeBytes: number,
    alignBytes: number,
    hint: AllocHint,
  ): Allocation {
    if (!typeIsText(type)) return super.allocate(type, sizeBytes, alignBytes, hint);
    // Objects are aligned to their (power-of-two) size; a larger alignment needs a larger class.
    const index = Math.max(jitClassIndex(sizeBytes), jitClassIndex(alignBytes));
    if (index >= NR_JIT_CACHES) return this.large(type, sizeBytes);
    this.counters.mutexAcquisitions++;
    const cache = this.caches[index];
    const slab = cache.partial[0] ?? this.newSlab(cache);
    const obj = slab.firstFree();
    assert(obj >= 0, 'slab on the partial list has no free object');
    slab.used[obj] = 1;
    slab.usedCount++;
    if (slab.usedCount === cache.objsPerSlab) this.unlinkPartial(slab);
    else if (!slab.onPartial) this.linkPartialHead(slab);
    const va = slab.area.va + obj * cache.objBytes;
    return newAllocation(va, type, sizeBytes, cache.objBytes, 'slab', false, 'rox', slab);
  }

  protected override writeInto(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.kind === 'slab')
      this.aliasWrite(va, bytes, 'rox'); // jit_update = text_poke_copy
    else super.writeInto(a, va, bytes);
  }

  protected override finalizeAlloc(a: Allocation): void {
    if (a.kind !== 'slab') super.finalizeAlloc(a); // slab objects are handed out ROX: nothing to publish
  }

  protected override release(a: Allocation): void {
    if (a.kind === 'slab') this.releaseObject(a);
    else super.release(a);
  }

  /** jit_slab_alloc(): module_alloc(PAGE_SIZE) then set_memory_rox on it. */
  private newSlab(cache: JitCache): Slab {
    const area = this.execAlloc('module_text', PAGE_BYTES);
    this.orFree(area, () => this.toRox(area.va, 1, false));
    this.slabCount++;
    this.counters.blocksMapped++;
    return new Slab(area, cache);
  }

  /** Requests above 2 KiB: module_alloc(len) + set_memory_rox; written with jit_update too. */
  private large(type: ExecmemType, sizeBytes: number): Allocation {
    const bytes = alignUp(sizeBytes, PAGE_BYTES);
    const area = this.execAlloc('module_text', bytes);
    this.orFree(area, () => this.toRox(area.va, bytes / PAGE_BYTES, false));
    return newAllocation(area.va, type, sizeBytes, bytes, 'area', false, 'rox', area);
  }

  /** jit_free(): clear the bit; an empty slab is released, a formerly full one rejoins the list. */
  private releaseObject(a: Allocation): void {
    this.counters.mutexAcquisitions++;
    const slab = a.owner as Slab;
    const cache = slab.cache;
    const obj = (a.va - slab.area.va) / cache.objBytes;
    assert(slab.used[obj] === 1, 'freeing a free slab object');
    slab.used[obj] = 0;
    slab.usedCount--;
    if (slab.usedCount === 0) {
      this.unlinkPartial(slab);
      this.execFree(slab.area);
      this.slabCount--;
      this.counters.blocksReleased++;
    } else if (!slab.onPartial) this.linkPartialHead(slab);
  }

  private linkPartialHead(slab: Slab): void {
    slab.cache.partial.unshift(slab);
    slab.onPartial = true;
  }

  private unlinkPartial(slab: Slab): void {
    if (!slab.onPartial) return;
    const list = slab.cache.partial;
    list.splice(list.indexOf(slab), 1);
    slab.onPartial = false;
  }
}

export function createJitAlloc2023(machine: Machine): JitAlloc2023Policy {
  return new JitAlloc2023Policy(machine);
}
