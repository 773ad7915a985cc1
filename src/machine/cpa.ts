/**
 * Change page attributes (x86 arch/x86/mm/pat/set_memory.c; arm64 behaves alike for our purpose):
 * `setMemory(va, pageCount, prot)` is set_memory_ro/rw/rox/x on a mapped range.
 *
 * Why each step is here (all read in torvalds/linux arch/x86/mm/pat/set_memory.c):
 * - Split: a large leaf that the change covers only partly, and whose protection would change, is
 *   split one level (should_split_large_page -> split_large_page: 1 GiB into 512 x 2 MiB, 2 MiB
 *   into 512 x 4 KiB); the loop then looks again, so a 4 KiB change inside a 1 GiB direct-map leaf
 *   costs one 1G split and one 2M split. A leaf that already has the wanted flags is not split.
 * - Alias: cpa_process_alias() repeats an RW/RO change on the direct-map alias of every frame of a
 *   range outside the direct map, but "Directmap always has NX set, do not modify": the alias
 *   gets RW or RO, never X. This is the direct-map fragmentation Aaron Lu measured
 *   (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>: three 1 GiB leaves split by 2048 small BPF programs).
 *   (The kernel-image high-mapping alias of direct-map addresses is not modelled.)
 * - Collapse: since 41d88484c71c ("x86/mm/pat: restore large ROX pages after fragmentation"),
 *   set_memory_rox (CPA_COLLAPSE) tries in cpa_flush to collapse 512 uniform, contiguous,
 *   aligned entries back into a 2 MiB and then a 1 GiB leaf, over the primary range only; the
 *   alias stays split. Only arches with `cpaCollapse` do it, and only for 'rox'.
 * - Flush: only when something changed (CPA_FLUSHTLB); one global shootdown, of the whole TLB when
 *   an alias was processed (force_flush_all), else of the range.
 * - Failure (no frame for a split table, e.g. injected): everything done so far is undone
 *   (flags restored, splits collapsed) and no counter moves, so a failed call changes nothing.
 *
 * `prot` 'none' (set_memory_np) is not modelled and is refused.
 */
import type { ArchSpec, Prot } from '../arch/types.js';
import { assert } from '../base/assert.js';
import type { Cpus } from './cpu.js';
import { MachineError } from './errors.js';
import type { LeafBulkListener, PageTable } from './pagetable.js';
import type { DirectMapStats, LeafChange, LeafLevel, MachineCounters, Translation } from './types.js';
import { LEVEL_BYTES, PTE_NX, PTE_RW, protToFlags } from './types.js';

const PAGE = 4096;
const PROT_BITS = PTE_RW | PTE_NX;

/** Undo log of one call, flat (no object per page): [kind, va, level, flags] per step. */
type Undo = number[];
const UNDO_FLAGS = 0;
const UNDO_SPLIT = 1;
const UNDO_STRIDE = 4;

/** The split / collapse counters, named once; a call tallies them and adds them on success. */
const TALLY_KEYS = [
  'splitsDirectMap2M',
  'splitsDirectMap1G',
  'splitsVmalloc2M',
  'splitsVmalloc1G',
  'collapsesDirectMap2M',
  'collapsesDirectMap1G',
  'collapsesVmalloc2M',
  'collapsesVmalloc1G',
] as const satisfies readonly (keyof MachineCounters)[];

/** Split / collapse tallies of one call, added to the counters only when the call succeeds. */
type Tally = Record<(typeof TALLY_KEYS)[number], number> & { changed: boolean };

function newTally(): Tally {
  const t = { changed: false } as Tally;
  for (const k of TALLY_KEYS) t[k] = 0;
  return t;
}

/** /proc/meminfo DirectMap4k/2M/1G, kept up to date from leaf changes. */
export class DirectMapTracker implements LeafBulkListener {
  readonly stats: DirectMapStats = { bytes4k: 0, bytes2m: 0, bytes1g: 0 };
  constructor(
    private readonly start: number,
    private readonly end: number,
  ) {}

  onLeafChange(c: LeafChange): void {
    if (c.va < this.start || c.va >= this.end) return;
    if (c.old !== null) this.add(c.old.level, -LEVEL_BYTES[c.old.level]);
    if (c.next !== null) this.add(c.next.level, LEVEL_BYTES[c.next.level]);
  }

  /** The leaf's bytes move one level down (region bounds are 1 GiB aligned: all in or all out). */
  onSplit(old: Translation): void {
    if (old.va < this.start || old.va >= this.end) return;
    this.add(old.level, -LEVEL_BYTES[old.level]);
    this.add((old.level - 1) as LeafLevel, LEVEL_BYTES[old.level]);
  }

  onCollapse(big: Translation): void {
    if (big.va < this.start || big.va >= this.end) return;
    this.add((big.level - 1) as LeafLevel, -LEVEL_BYTES[big.level]);
    this.add(big.level, LEVEL_BYTES[big.level]);
  }

  private add(level: LeafLevel, bytes: number): void {
    if (level === 1) this.stats.bytes4k += bytes;
    else if (level === 2) this.stats.bytes2m += bytes;
    else this.stats.bytes1g += bytes;
  }
}

export class Cpa {
  constructor(
    private readonly arch: ArchSpec,
    private readonly pt: PageTable,
    private readonly counters: MachineCounters,
    private readonly cpus: Cpus,
  ) {}

  /** set_memory_* on [va, va + pageCount pages). */
  setMemory(va: number, pageCount: number, prot: Prot): void {
    if (!Number.isInteger(va) || va < 0 || va % PAGE !== 0) {
      throw new MachineError('EINVAL', `setMemory: 0x${Number(va).toString(16)} is not page aligned`);
    }
    if (!Number.isInteger(pageCount) || pageCount <= 0 || va + pageCount * PAGE > 2 ** 48) {
      throw new MachineError('EINVAL', `setMemory: bad page count ${pageCount}`);
    }
    if (prot !== 'ro' && prot !== 'rw' && prot !== 'rox' && prot !== 'rwx') {
      throw new MachineError(
        'EINVAL',
        `setMemory: protection '${prot}' is not supported (set_memory_np is not modelled)`,
      );
    }
    const end = va + pageCount * PAGE;
    this.checkMapped(va, end);
    const want = protToFlags(prot) & PROT_BITS;
    const tally = newTally();
    const undo: Undo = [];
    const { ptFramesAllocated, ptFramesFreed } = this.counters;
    const aliased = !this.inDirectMap(va);
    try {
      this.change(va, end, (f) => (f & ~PROT_BITS) | want, undo, tally);
      if (aliased) this.changeAlias(va, end, (want & PTE_RW) !== 0, undo, tally);
    } catch (e) {
      this.rollback(undo, ptFramesAllocated, ptFramesFreed);
      throw e;
    }
    if (prot === 'rox' && this.arch.cpaCollapse && tally.changed) this.collapse(va, end, tally);
    this.counters.cpaCalls++;
    this.counters.cpaPages += pageCount;
    this.commit(tally);
    if (tally.changed) {
      if (aliased) this.cpus.flushGlobal();
      else this.cpus.flushGlobal(va, end - va);
    }
  }

  /**
   * Set the direct-map alias of frames [pfn, pfn + frameCount) to RW (true) or RO (false), NX kept,
   * without flushing (set_direct_map_default_noflush; boot's mark_rodata_ro alias). Returns whether
   * anything changed. Failure undoes itself.
   */
  setAliasWritable(pfn: number, frameCount: number, writable: boolean): boolean {
    const start = this.arch.layout.directMapStart + pfn * PAGE;
    const tally = newTally();
    const undo: Undo = [];
    const { ptFramesAllocated, ptFramesFreed } = this.counters;
    try {
      this.change(
        start,
        start + frameCount * PAGE,
        (f) => (writable ? f | PTE_RW : f & ~PTE_RW),
        undo,
        tally,
      );
    } catch (e) {
      this.rollback(undo, ptFramesAllocated, ptFramesFreed);
      throw e;
    }
    this.commit(tally);
    return tally.changed;
  }

  inDirectMap(va: number): boolean {
    return va >= this.arch.layout.directMapStart && va < this.arch.layout.directMapEnd;
  }

  /** Apply `flagsOf` to every leaf of [start, end), splitting large leaves covered only partly. */
  private change(start: number, end: number, flagsOf: (f: number) => number, undo: Undo, tally: Tally): void {
    const changed = (va: number, oldFlags: number): void => {
      undo.push(UNDO_FLAGS, va, 1, oldFlags);
      tally.changed = true;
    };
    let a = start;
    while (a < end) {
      const t = this.pt.walk(a);
      assert(t !== null, `CPA: 0x${a.toString(16)} unmapped after the check`);
      if (t.level === 1) {
        // The rest of this PTE table in one pass (same per-leaf steps as below).
        a = this.pt.setFlagsRun(a, end, flagsOf, changed);
        continue;
      }
      const size = LEVEL_BYTES[t.level];
      const flags = flagsOf(t.flags);
      if (flags === t.flags) {
        a = t.va + size;
        continue;
      }
      if (t.va < start || t.va + size > end) {
        const level = t.level as 2 | 3;
        this.pt.split(t.va, level);
        undo.push(UNDO_SPLIT, t.va, level, 0);
        this.countSplit(t.va, level, tally);
        tally.changed = true;
        continue;
      }
      this.pt.setLeafFlags(t.va, t.level, flags);
      undo.push(UNDO_FLAGS, t.va, t.level, t.flags);
      tally.changed = true;
      a = t.va + size;
    }
  }

  /** cpa_process_alias: the direct-map alias of the range's frames gets RW or RO (never X). */
  private changeAlias(start: number, end: number, writable: boolean, undo: Undo, tally: Tally): void {
    const flagsOf = (f: number): number => (writable ? f | PTE_RW : f & ~PTE_RW);
    const dm = this.arch.layout.directMapStart;
    let runPfn = -1;
    let runFrames = 0;
    const flushRun = (): void => {
      if (runFrames === 0) return;
      this.change(dm + runPfn * PAGE, dm + (runPfn + runFrames) * PAGE, flagsOf, undo, tally);
    };
    const runs: number[] = [];
    this.pt.forEachLeaf(start, end, (t) => {
      const from = Math.max(start, t.va);
      const to = Math.min(end, t.va + LEVEL_BYTES[t.level]);
      runs.push(t.pfn + (from - t.va) / PAGE, (to - from) / PAGE);
    });
    for (let k = 0; k < runs.length; k += 2) {
      if (runFrames > 0 && runs[k] === runPfn + runFrames) {
        runFrames += runs[k + 1];
        continue;
      }
      flushRun();
      runPfn = runs[k];
      runFrames = runs[k + 1];
    }
    flushRun();
  }

  /** cpa_collapse_large_pages over the primary range: PMD tables first, then the PUD. */
  private collapse(start: number, end: number, tally: Tally): void {
    const dm = this.inDirectMap(start);
    const first2M = start - (start % LEVEL_BYTES[2]);
    for (let a = first2M; a < end; a += LEVEL_BYTES[2]) {
      if (this.pt.tryCollapse(a, 2)) {
        if (dm) tally.collapsesDirectMap2M++;
        else tally.collapsesVmalloc2M++;
      }
    }
    const first1G = start - (start % LEVEL_BYTES[3]);
    for (let a = first1G; a < end; a += LEVEL_BYTES[3]) {
      if (this.pt.tryCollapse(a, 3)) {
        if (dm) tally.collapsesDirectMap1G++;
        else tally.collapsesVmalloc1G++;
      }
    }
  }

  /** Undo a failed call; the page-table frame counters are restored too (the call never happened). */
  private rollback(undo: Undo, ptAllocated: number, ptFreed: number): void {
    for (let k = undo.length - UNDO_STRIDE; k >= 0; k -= UNDO_STRIDE) {
      const va = undo[k + 1];
      const level = undo[k + 2] as LeafLevel;
      if (undo[k] === UNDO_FLAGS) this.pt.setLeafFlags(va, level, undo[k + 3]);
      else assert(this.pt.tryCollapse(va, level as 2 | 3), 'CPA rollback: split did not collapse back');
    }
    this.counters.ptFramesAllocated = ptAllocated;
    this.counters.ptFramesFreed = ptFreed;
  }

  private countSplit(va: number, level: 2 | 3, tally: Tally): void {
    const dm = this.inDirectMap(va);
    if (level === 2) {
      if (dm) tally.splitsDirectMap2M++;
      else tally.splitsVmalloc2M++;
    } else if (dm) tally.splitsDirectMap1G++;
    else tally.splitsVmalloc1G++;
  }

  private commit(t: Tally): void {
    for (const k of TALLY_KEYS) this.counters[k] += t[k];
  }

  /** ENOENT naming the first unmapped address of [start, end); one visit of the leaves, not a walk per page. */
  private checkMapped(start: number, end: number): void {
    let a = start;
    const unmapped = (): MachineError =>
      new MachineError('ENOENT', `setMemory: 0x${a.toString(16)} is not mapped`);
    this.pt.forEachLeaf(start, end, (t) => {
      if (t.va > a) throw unmapped();
      a = t.va + LEVEL_BYTES[t.level];
    });
    if (a < end) throw unmapped();
  }
}
