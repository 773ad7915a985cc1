/**
 * vmalloc: a virtual-address allocator over the kernel's vmalloc-able space, plus vmalloc / vfree.
 *
 * Why it is shaped like Linux's mm/vmalloc.c:
 * - Free VA is kept as merged gaps in a balanced tree augmented with the longest gap below each
 *   node (Linux: the free_vmap_area rb-tree with subtree_max_size), busy areas in a second tree
 *   by start (the vmap_area tree); see rangetree.ts. First fit returns the lowest fitting address
 *   in O(log n) plus the gaps that are long enough but misaligned, so a request never pays for
 *   the many small gaps churn leaves behind; reserving, releasing, vfree and findArea are
 *   O(log n) in the number of gaps / areas. Each reservation includes its guard page, as
 *   vmap_area sizes do.
 * - Guard pages: one trailing unmapped page per area unless asked otherwise (VM_NO_GUARD).
 * - VM_ALLOW_HUGE_VMAP: if the size is at least 2 MiB, the size is rounded up to 2 MiB and the VA
 *   aligned to 2 MiB, frames come as order-9 blocks and are mapped with PMD leaves. If anything of
 *   that fails (no order-9 block: aged memory; or no page-table frame), everything is undone and
 *   the area is retried with 4 KiB pages at the caller's size and alignment
 *   (__vmalloc_node_range's "fail: if (shift > PAGE_SHIFT) ... goto again"); each such retry is
 *   counted in `vmallocHugeFallbacks`.
 * - Any failure of the 4 KiB path unwinds completely: frames, page tables, VA (and the frame
 *   counters of page tables), so a failed vmalloc leaves no trace.
 * - vfree is lazy, as Linux's (remove_vm_area -> free_unmap_vmap_area): the leaves are removed,
 *   but the TLB flush is deferred and the VA stays reserved until a purge
 *   (__purge_vmap_area_lazy: one flush_tlb_kernel_range over [lowest start, highest end) of all
 *   lazily freed areas, which the arch ceiling turns into a full flush unless they lie close
 *   together). A purge happens when more than lazy_max_pages (fls(cpus) * 32 MiB) are pending,
 *   when a VA search fails, before every set_memory_* call (vm_unmap_aliases, machine.ts), and
 *   in a reset-perms vfree.
 * - vfree with VM_FLUSH_RESET_PERMS, vm_reset_perms() (mm/vmalloc.c): for every 4 KiB page of the
 *   area set_direct_map_invalid_noflush() (x86 __set_pages_np: PRESENT and RW cleared, which
 *   splits a large direct-map leaf, each split with its flush_tlb_all); then _vm_unmap_aliases(
 *   start, end, flush_dmap): one flush_tlb_kernel_range over the direct-map range of the pages
 *   joined with every lazily freed area (this one included), purging them; then
 *   set_direct_map_default_noflush() (PRESENT and RW set; NX was never cleared). The direct map
 *   stays split. Then the frames are freed.
 * - vfree is atomic: its only fallible steps are splits that need a page-table frame (the
 *   direct-map splits above, and splitting a leaf CPA collapsed across two areas, below). They
 *   run first, in one CPA transaction; if one fails, everything is undone and vfree throws
 *   ENOMEM with nothing changed (no frame, counter, mapping or VA moved; issue 16 item 1).
 * - The kernel image is registered as a busy area, so arm64's module windows (which contain the
 *   image) can never hand it out. It cannot be freed.
 */
import type { VaRange } from '../arch/types.js';
import { isPow2 } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Cpa, CpaTxn } from './cpa.js';
import type { Cpus } from './cpu.js';
import { MachineError } from './errors.js';
import type { PageTable } from './pagetable.js';
import type { PhysMem } from './phys.js';
import { RangeTree } from './rangetree.js';
import type { MachineCounters, VmArea, VmallocRequest } from './types.js';
import { LEVEL_BYTES, PTE_PRESENT, PTE_RW, protToFlags } from './types.js';

const PAGE = 4096;
const SZ_2M = 2 ** 21;

/**
 * set_direct_map_invalid_noflush: x86 __set_pages_np clears PRESENT and RW; arm64 clears PTE_VALID
 * only. (x86 CPA's pgprot_clear_protnone_bits() also drops _PAGE_GLOBAL from a not-present PTE;
 * not modelled: the machine's TLBs do not use the global bit, and keeping it keeps a reused
 * frame's alias identical to a fresh one.)
 */
const invalidX86 = (f: number): number => f & ~(PTE_PRESENT | PTE_RW);
const invalidArm64 = (f: number): number => f & ~PTE_PRESENT;
/** set_direct_map_default_noflush: x86 __set_pages_p sets PRESENT and RW (arm64: VALID, WRITE). */
const directMapDefault = (f: number): number => f | PTE_PRESENT | PTE_RW;

/** A VmArea as the machine keeps it. */
export interface VmAreaRecord extends VmArea {
  /** The kernel image: cannot be freed or poked. */
  readonly kernelImage: boolean;
}

export class VaSpace {
  /** Free gaps [start, end), merged (no two adjacent). */
  private readonly gaps = new RangeTree<null>();
  private free = 0;

  constructor(universe: readonly VaRange[]) {
    const sorted = [...universe].sort((a, b) => a.start - b.start);
    for (const r of sorted) this.release(r.start, r.end - r.start);
  }

  /** First fit of `sizeBytes` at `alignBytes` inside [range.start, range.end); -1 if none. */
  find(range: VaRange, sizeBytes: number, alignBytes: number): number {
    return this.gaps.firstFit(range.start, range.end, sizeBytes, alignBytes);
  }

  /** Take [va, va+size) out of the free gaps (must lie inside one gap). */
  take(va: number, sizeBytes: number): void {
    const g = this.gaps.floor(va);
    assert(g !== null && va + sizeBytes <= g.end, 'VA take outside a gap');
    const s = g.start;
    const e = g.end;
    this.gaps.remove(s);
    if (s < va) this.gaps.insert(s, va, null);
    if (va + sizeBytes < e) this.gaps.insert(va + sizeBytes, e, null);
    this.free -= sizeBytes;
  }

  /** Return [va, va+size) to the free gaps, merging with neighbours. */
  release(va: number, sizeBytes: number): void {
    const end = va + sizeBytes;
    const below = this.gaps.floor(va);
    const above = this.gaps.ceil(va);
    assert(
      (below === null || below.end <= va) && (above === null || above.start >= end),
      'VA release overlaps a gap',
    );
    const start = below !== null && below.end === va ? below.start : va;
    const last = above !== null && above.start === end ? above.end : end;
    if (start !== va) this.gaps.remove(start);
    if (last !== end) this.gaps.remove(end);
    this.gaps.insert(start, last, null);
    this.free += sizeBytes;
  }

  gapCount(): number {
    return this.gaps.size;
  }

  freeBytes(): number {
    return this.free;
  }

  /** Structural self-check (tests). */
  check(): void {
    this.gaps.check();
    let bytes = 0;
    let prevEnd = -1;
    this.gaps.forEach((s, e) => {
      assert(s !== prevEnd, 'adjacent gaps not merged');
      prevEnd = e;
      bytes += e - s;
    });
    assert(bytes === this.free, 'free byte count drifted');
  }
}

export class Vmalloc {
  private readonly space: VaSpace;
  private readonly universe: readonly VaRange[];
  /** Busy areas by start, each spanning its reservation (guard pages included). */
  private readonly areas = new RangeTree<VmAreaRecord>();
  private mappedFrames = 0;
  /** Lazily freed reservations: [va, reservedBytes] pairs, VA not yet reusable. */
  private readonly lazy: number[] = [];
  private lazyPages = 0;
  private readonly lazyMaxPages: number;

  constructor(
    universe: readonly VaRange[],
    private readonly pt: PageTable,
    private readonly phys: PhysMem,
    private readonly counters: MachineCounters,
    private readonly cpus: Cpus,
    private readonly cpa: Cpa,
  ) {
    this.universe = universe;
    this.space = new VaSpace(universe);
    this.lazyMaxPages = Math.floor(Math.log2(cpus.count) + 1) * ((32 * 1024 * 1024) / PAGE);
  }

  vmalloc(req: VmallocRequest): VmArea {
    const align = req.alignBytes ?? PAGE;
    const guard = req.guardPages ?? 1;
    this.checkRequest(req, align, guard);
    let fellBack = false;
    if (req.allowHuge === true && req.sizeBytes >= SZ_2M) {
      const size = Math.ceil(req.sizeBytes / SZ_2M) * SZ_2M;
      const area = this.tryCreate(req, size, Math.max(align, SZ_2M), guard, 2);
      if (area !== null) {
        this.counters.vmallocs++;
        return area;
      }
      fellBack = true;
    }
    const area = this.tryCreate(req, req.sizeBytes, Math.max(align, PAGE), guard, 1);
    assert(area !== null, '4 KiB vmalloc path returns or throws');
    this.counters.vmallocs++;
    if (fellBack) this.counters.vmallocHugeFallbacks++;
    return area;
  }

  vfree(va: number): void {
    const area = this.areas.find(va)?.value;
    if (area === undefined) {
      throw new MachineError('ENOENT', `vfree: no vmalloc area starts at 0x${Number(va).toString(16)}`);
    }
    if (area.kernelImage) throw new MachineError('EINVAL', 'vfree: the kernel image cannot be freed');
    const frames = area.leafBytes / PAGE;
    const directMapInvalid = this.cpa.arch.cpaKind === 'change_memory_common' ? invalidArm64 : invalidX86;
    // Every step that can fail, first and undoably (see the header).
    const txn = this.cpa.begin();
    try {
      this.splitStraddlers(area, txn);
      if (area.flushResetPerms) {
        for (const pfn of area.leafPfns) this.cpa.setDirectMapPages(txn, pfn, frames, directMapInvalid);
      }
    } catch (e) {
      this.cpa.rollback(txn);
      if (e instanceof MachineError && e.code === 'ENOMEM') {
        throw new MachineError(
          'ENOMEM',
          `vfree: no page-table frame for a split (nothing freed): ${e.message}`,
        );
      }
      throw e;
    }
    // From here nothing can fail.
    this.unmapLeaves(area);
    this.removeArea(area);
    this.counters.vfrees++;
    this.lazy.push(area.va, area.reservedBytes);
    this.lazyPages += area.reservedBytes / PAGE;
    if (area.flushResetPerms) {
      // _vm_unmap_aliases(start, end, flush_dmap = 1) over the pages' direct-map range.
      const dm = this.cpa.arch.layout.directMapStart;
      let lo = Number.POSITIVE_INFINITY;
      let hi = 0;
      for (const pfn of area.leafPfns) {
        lo = Math.min(lo, dm + pfn * PAGE);
        hi = Math.max(hi, dm + (pfn + frames) * PAGE);
      }
      this.purgeLazy(true, lo, hi);
      const splits = txn.splitCount();
      for (const pfn of area.leafPfns) this.cpa.setDirectMapPages(txn, pfn, frames, directMapDefault);
      assert(txn.splitCount() === splits, 'set_direct_map_default_noflush split a leaf');
      this.freeFrames(area);
      this.cpa.commit(txn);
      return;
    }
    this.freeFrames(area);
    this.cpa.commit(txn);
    if (this.lazyPages > this.lazyMaxPages) this.purgeLazy(true);
  }

  /** The live area whose [va, va + sizeBytes) contains va (guard pages excluded). */
  findArea(va: number): VmAreaRecord | undefined {
    const area = this.areas.floor(va)?.value;
    return area !== undefined && va < area.va + area.sizeBytes ? area : undefined;
  }

  /** Register already-mapped memory (the kernel image) as a busy area. */
  registerImage(va: number, sizeBytes: number, leafPfns: number[], leafBytes: number): VmAreaRecord {
    const area: VmAreaRecord = {
      va,
      sizeBytes,
      reservedBytes: sizeBytes,
      leafBytes,
      leafPfns,
      prot: 'rox',
      flushResetPerms: false,
      kernelImage: true,
    };
    this.space.take(va, sizeBytes);
    this.insertArea(area);
    return area;
  }

  liveAreas(): VmAreaRecord[] {
    const out: VmAreaRecord[] = [];
    this.areas.forEach((_s, _e, a) => {
      out.push(a);
    });
    return out;
  }

  /** Frames owned by live areas (kernel image included). */
  mappedFrameCount(): number {
    return this.mappedFrames;
  }

  /** Structural self-check of the VA bookkeeping (tests). */
  check(): void {
    this.space.check();
    this.areas.check();
  }

  lazyPendingPages(): number {
    return this.lazyPages;
  }

  /**
   * Flush and release every lazily freed reservation (__purge_vmap_area_lazy(start, end)): one
   * flush_tlb_kernel_range over [start, end) joined with every pending area. Without pending areas
   * nothing happens, unless a range is given (_vm_unmap_aliases with flush_dmap: that range is
   * flushed alone).
   */
  purgeLazy(flush: boolean, start = Number.POSITIVE_INFINITY, end = 0): void {
    if (this.lazy.length === 0 && start >= end) return;
    if (flush) {
      let lo = start;
      let hi = end;
      for (let k = 0; k < this.lazy.length; k += 2) {
        lo = Math.min(lo, this.lazy[k]);
        hi = Math.max(hi, this.lazy[k] + this.lazy[k + 1]);
      }
      this.cpus.flushKernelRange(lo, hi - lo);
    }
    for (let k = 0; k < this.lazy.length; k += 2) this.space.release(this.lazy[k], this.lazy[k + 1]);
    this.lazy.length = 0;
    this.lazyPages = 0;
  }

  private tryCreate(
    req: VmallocRequest,
    size: number,
    align: number,
    guard: number,
    level: 1 | 2,
  ): VmArea | null {
    const reserved = size + guard * PAGE;
    let va = this.space.find(req.range, reserved, align);
    if (va < 0 && this.lazy.length > 0) {
      this.purgeLazy(true);
      va = this.space.find(req.range, reserved, align);
    }
    if (va < 0) {
      if (level === 2) return null;
      throw new MachineError('ENOSPC', `vmalloc: no ${size}-byte hole aligned to ${align} in the range`);
    }
    const leafBytes = level === 2 ? SZ_2M : PAGE;
    const order = level === 2 ? 9 : 0;
    const flags = protToFlags(req.prot);
    const pfns: number[] = [];
    let mapped = 0;
    const { ptFramesAllocated, ptFramesFreed } = this.counters;
    try {
      for (let off = 0; off < size; off += leafBytes) pfns.push(this.phys.allocPages(order));
      for (; mapped < pfns.length; mapped++)
        this.pt.mapLeaf(va + mapped * leafBytes, level, pfns[mapped], flags);
    } catch (e) {
      for (let k = mapped - 1; k >= 0; k--) this.pt.unmapLeaf(va + k * leafBytes, level);
      for (const pfn of pfns) this.phys.freePages(pfn, order);
      this.counters.ptFramesAllocated = ptFramesAllocated;
      this.counters.ptFramesFreed = ptFramesFreed;
      if (level === 2 && e instanceof MachineError && e.code === 'ENOMEM') return null;
      throw e;
    }
    this.space.take(va, reserved);
    const area: VmAreaRecord = {
      va,
      sizeBytes: size,
      reservedBytes: reserved,
      leafBytes,
      leafPfns: pfns,
      prot: req.prot,
      flushResetPerms: req.flushResetPerms === true,
      kernelImage: false,
    };
    this.insertArea(area);
    return area;
  }

  /**
   * CPA may have split 2 MiB leaves or collapsed 4 KiB ones. A collapsed leaf can only reach into a
   * neighbour when areas have no guard page; split it first so only this area's part goes. Such a
   * split needs a page-table frame, so it is part of vfree's transaction.
   */
  private splitStraddlers(area: VmAreaRecord, txn: CpaTxn): void {
    const end = area.va + area.sizeBytes;
    for (;;) {
      let straddler: { va: number; level: 2 | 3 } | null = null;
      this.pt.forEachLeaf(area.va, end, (t) => {
        if (straddler === null && t.level > 1 && (t.va < area.va || t.va + LEVEL_BYTES[t.level] > end)) {
          straddler = { va: t.va, level: t.level as 2 | 3 };
        }
      });
      if (straddler === null) return;
      const { va, level } = straddler as { va: number; level: 2 | 3 };
      this.cpa.splitUncounted(txn, va, level);
    }
  }

  /** vunmap_range_noflush: remove the area's leaves (straddlers already split); frees no frame of data. */
  private unmapLeaves(area: VmAreaRecord): void {
    const end = area.va + area.sizeBytes;
    const leaves: { va: number; level: 1 | 2 | 3 }[] = [];
    this.pt.forEachLeaf(area.va, end, (t) => leaves.push({ va: t.va, level: t.level }));
    for (const l of leaves) this.pt.unmapLeaf(l.va, l.level);
  }

  private freeFrames(area: VmAreaRecord): void {
    const order = area.leafBytes === SZ_2M ? 9 : 0;
    for (const pfn of area.leafPfns) this.phys.freePages(pfn, order);
  }

  private insertArea(area: VmAreaRecord): void {
    this.areas.insert(area.va, area.va + area.reservedBytes, area);
    this.mappedFrames += (area.leafPfns.length * area.leafBytes) / PAGE;
  }

  private removeArea(area: VmAreaRecord): void {
    this.areas.remove(area.va);
    this.mappedFrames -= (area.leafPfns.length * area.leafBytes) / PAGE;
  }

  private checkRequest(req: VmallocRequest, align: number, guard: number): void {
    const { sizeBytes, range } = req;
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % PAGE !== 0) {
      throw new MachineError('EINVAL', `vmalloc: size ${sizeBytes} is not a positive multiple of 4096`);
    }
    if (!isPow2(align)) throw new MachineError('EINVAL', `vmalloc: alignment ${align} is not a power of two`);
    if (!Number.isInteger(guard) || guard < 0 || guard > 16) {
      throw new MachineError('EINVAL', `vmalloc: guard pages ${guard} not in 0..16`);
    }
    if (req.prot !== 'ro' && req.prot !== 'rw' && req.prot !== 'rox' && req.prot !== 'rwx') {
      throw new MachineError('EINVAL', `vmalloc: protection '${req.prot}' cannot be mapped`);
    }
    const inside = this.universe.some((u) => range.start >= u.start && range.end <= u.end);
    if (
      !Number.isInteger(range.start) ||
      !Number.isInteger(range.end) ||
      range.start >= range.end ||
      !inside
    ) {
      throw new MachineError(
        'EINVAL',
        `vmalloc: range 0x${range.start.toString(16)}-0x${range.end.toString(16)} is not inside vmalloc space`,
      );
    }
    if (sizeBytes > range.end - range.start) {
      throw new MachineError('ENOSPC', `vmalloc: ${sizeBytes} bytes cannot fit the range`);
    }
  }
}
