/**
 * Change page attributes: `setMemory(va, pageCount, prot)` is one Linux set_memory_* call that
 * leaves [va, va + pageCount pages) at `prot`, done the way the arch's Linux does it
 * (arch.cpaKind); plus the set_direct_map_*_noflush primitives vfree's vm_reset_perms() uses.
 *
 * x86, 'change_page_attr' (arch/x86/mm/pat/set_memory.c change_page_attr_set_clr()):
 * - Split: a large leaf that the change covers only partly, and whose protection would change, is
 *   split one level (should_split_large_page -> split_large_page: 1 GiB into 512 x 2 MiB, 2 MiB
 *   into 512 x 4 KiB); the loop then looks again, so a 4 KiB change inside a 1 GiB direct-map leaf
 *   costs one 1G split and one 2M split. A leaf that already has the wanted flags is not split.
 *   __split_large_page() ends in flush_tlb_all(): EVERY split costs a full flush on every CPU.
 * - Alias: cpa_process_alias() repeats an RW/RO change on the direct-map alias of every frame of a
 *   range outside the direct map, but "Directmap always has NX set, do not modify": the alias
 *   gets RW or RO, never X, and force_flush_all is set. This is the direct-map fragmentation Aaron
 *   Lu measured (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>: three 1 GiB leaves split by 2048 small BPF
 *   programs). (The kernel-image high-mapping alias of direct-map addresses is not modelled.)
 * - Flush (cpa_flush): only when something changed (CPA_FLUSHTLB); flush_tlb_all() when an alias
 *   was processed (force_flush_all), else flush_tlb_kernel_range() over the range, which itself
 *   becomes a full flush above tlb_single_page_flush_ceiling (33 pages; cpu.ts applies it).
 * - Collapse: since 41d88484c71c ("x86/mm/pat: restore large ROX pages after fragmentation"),
 *   set_memory_rox (CPA_COLLAPSE) tries in cpa_flush to collapse 512 uniform, contiguous,
 *   aligned entries back into a 2 MiB and then a 1 GiB leaf, over the primary range only; the
 *   alias stays split. cpa_collapse_large_pages() ends in one flush_tlb_all() when it collapsed
 *   anything. Only arches with `cpaCollapse` do it, and only for 'rox'.
 * arm64, 'change_memory_common': see cpa-arm64.ts.
 *
 * vm_unmap_aliases(), which both arches call first, is the machine's job (machine.ts setMemory):
 * it needs vmalloc's lazy list.
 *
 * Transactions: every step that can fail (a split needs a page-table frame, and an injected
 * failure may refuse it) runs inside a CpaTxn whose undo log can put everything back (flags
 * restored, splits collapsed, page-table frame counters restored), so a failed call changes
 * nothing, counters included. The flushes a call owes (each split's flush_tlb_all, cpa_flush, the
 * collapse's flush_tlb_all) are therefore issued only when it commits: inside one single-threaded
 * call no CPU can touch memory in between, so deferring them changes no outcome, only the order
 * in which the same flushes are counted.
 *
 * Linear-map expansions (arch.directMapPageGranular, arm64 rodata=full): Linux maps the linear
 * map with 4 KiB pages from boot. Holding 4 M leaves for a 16 GiB machine costs about 300 MB and
 * half a second per boot, so the machine keeps 1 GiB leaves and, when CPA needs part of one,
 * expands it into the leaves Linux already has: same translations, no split counted, no flush,
 * and the page-table frame comes from the set Linux's boot already spent on those tables
 * (reserveLinearMapTables, 513 frames per GiB), so it cannot fail and frame accounting matches
 * Linux. Expansions only ever run after every fallible step of their call, so no rollback meets
 * one. (Not modelled: TLB reach of linear-map entries, which then stays 1 GiB; no workload reads
 * through the linear map.)
 *
 * `prot` 'none' (set_memory_np) is not modelled and is refused.
 */
import type { ArchSpec, Prot } from '../arch/types.js';
import { assert } from '../base/assert.js';
import { changeMemoryCommon } from './cpa-arm64.js';
import type { Cpus } from './cpu.js';
import { MachineError } from './errors.js';
import type { PageTable } from './pagetable.js';
import type { PhysMem } from './phys.js';
import type { LeafLevel, MachineCounters } from './types.js';
import { LEVEL_BYTES, PTE_NX, PTE_RW, protToFlags } from './types.js';

const PAGE = 4096;
const PROT_BITS = PTE_RW | PTE_NX;
const GIB = LEVEL_BYTES[3];

/** Undo log entry kinds: [kind, va, level, flags] per step, flat (no object per page). */
const UNDO_FLAGS = 0;
const UNDO_SPLIT = 1;
const UNDO_EXPAND = 2;
const UNDO_STRIDE = 4;

/**
 * The split / collapse counters, named once; a call tallies them and adds them on commit. The
 * order is what tallyIndex computes: collapses after splits, vmalloc after the direct map, 1 GiB
 * after 2 MiB (checked once below).
 */
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
/** The first four are splits, each owing one flush_tlb_all. */
const SPLIT_TALLIES = 4;

function tallyIndex(collapse: boolean, directMap: boolean, level: 2 | 3): number {
  return (collapse ? 4 : 0) + (directMap ? 0 : 2) + (level === 3 ? 1 : 0);
}

for (const collapse of [false, true])
  for (const dm of [true, false])
    for (const level of [2, 3] as const) {
      const name = `${collapse ? 'collapses' : 'splits'}${dm ? 'DirectMap' : 'Vmalloc'}${level === 2 ? '2M' : '1G'}`;
      assert(TALLY_KEYS[tallyIndex(collapse, dm, level)] === name, `CPA tally order: ${name}`);
    }

/** One CPA transaction: what to undo if it fails, and what to count and flush if it commits. */
export class CpaTxn {
  readonly undo: number[] = [];
  /** Per TALLY_KEYS entry, what this call adds on commit. */
  readonly tally = new Float64Array(TALLY_KEYS.length);
  /** Whether the tally holds anything (most calls split and collapse nothing). */
  tallied = false;
  /** Whether any leaf changed (CPA_FLUSHTLB). */
  changed = false;
  constructor(
    readonly ptFramesAllocated: number,
    readonly ptFramesFreed: number,
  ) {}

  /** One split or collapse of a `level` leaf, in the direct map or not. */
  count(collapse: boolean, directMap: boolean, level: 2 | 3): void {
    this.tally[tallyIndex(collapse, directMap, level)]++;
    this.tallied = true;
  }

  /** Splits so far, each owing one flush_tlb_all (__split_large_page). */
  splitCount(): number {
    let n = 0;
    for (let k = 0; k < SPLIT_TALLIES; k++) n += this.tally[k];
    return n;
  }
}

export class Cpa {
  /** Page-table frames Linux's boot spent on a 4 KiB linear map, not yet used by an expansion. */
  private readonly linearTables: number[] = [];

  constructor(
    readonly arch: ArchSpec,
    readonly pt: PageTable,
    private readonly counters: MachineCounters,
    readonly cpus: Cpus,
    private readonly phys: PhysMem,
  ) {}

  /**
   * Boot, arch.directMapPageGranular: take the frames a 4 KiB linear map of `memoryBytes` needs
   * (per GiB one PMD table and 512 PTE tables), which expansions later use.
   */
  reserveLinearMapTables(memoryBytes: number): void {
    assert(this.arch.directMapPageGranular, 'only a page-granular linear map reserves its tables');
    const count = Math.ceil(memoryBytes / GIB) * 513;
    for (let i = 0; i < count; i++) this.linearTables.push(this.phys.allocPages(0));
  }

  /** Frames reserved for linear-map expansions and not used yet (they are page-table frames). */
  reservedTableFrames(): readonly number[] {
    return this.linearTables;
  }

  /** set_memory_* on [va, va + pageCount pages). */
  setMemory(va: number, pageCount: number, prot: Prot, foldFlushes = false): void {
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
    if (this.arch.cpaKind === 'change_memory_common') changeMemoryCommon(this, va, end, prot, foldFlushes);
    else this.changePageAttr(va, end, prot);
    this.counters.cpaCalls++;
    this.counters.cpaPages += pageCount;
  }

  /** x86 change_page_attr_set_clr() for one set_memory_* call. */
  private changePageAttr(va: number, end: number, prot: Prot): void {
    const want = protToFlags(prot) & PROT_BITS;
    const txn = this.begin();
    const aliased = !this.inDirectMap(va);
    try {
      this.change(txn, va, end, (f) => (f & ~PROT_BITS) | want);
      if (aliased) this.changeAlias(txn, va, end, (want & PTE_RW) !== 0);
    } catch (e) {
      this.rollback(txn);
      throw e;
    }
    const collapsed =
      prot === 'rox' && this.arch.cpaCollapse && txn.changed ? this.collapse(txn, va, end) : 0;
    this.commit(txn);
    if (!txn.changed) return;
    if (aliased) this.cpus.flushAll();
    else this.cpus.flushKernelRange(va, end - va);
    if (collapsed > 0) this.cpus.flushAll();
  }

  /**
   * Set the direct-map alias of frames [pfn, pfn + frameCount) to RW (true) or RO (false), NX kept,
   * without a range flush (boot's mark_rodata_ro alias). Splits still flush, as in Linux. Returns
   * whether anything changed. Failure undoes itself.
   */
  setAliasWritable(pfn: number, frameCount: number, writable: boolean): boolean {
    const start = this.arch.layout.directMapStart + pfn * PAGE;
    const txn = this.begin();
    try {
      this.change(txn, start, start + frameCount * PAGE, (f) => (writable ? f | PTE_RW : f & ~PTE_RW));
    } catch (e) {
      this.rollback(txn);
      throw e;
    }
    this.commit(txn);
    return txn.changed;
  }

  /**
   * set_direct_map_invalid_noflush / set_direct_map_default_noflush over the 4 KiB frames
   * [pfn, pfn + frameCount): one call per page (mm/vmalloc.c set_area_direct_map: "HUGE_VMALLOC
   * passes small pages"), so a large direct-map leaf is split even where the frames cover it
   * (x86 __set_pages_np / __set_pages_p: CPA_NO_CHECK_ALIAS, no cpa_flush; each split still
   * flushes the whole TLB). Part of `txn`; may throw ENOMEM (a split's page-table frame).
   */
  setDirectMapPages(txn: CpaTxn, pfn: number, frameCount: number, flagsOf: (f: number) => number): void {
    const start = this.arch.layout.directMapStart + pfn * PAGE;
    this.change(txn, start, start + frameCount * PAGE, flagsOf, true);
  }

  /** Split a leaf outside CPA's accounting (vmalloc unmapping a leaf it shares), undoable with `txn`. */
  splitUncounted(txn: CpaTxn, va: number, level: 2 | 3): void {
    this.pt.split(va, level);
    txn.undo.push(UNDO_SPLIT, va, level, 0);
  }

  inDirectMap(va: number): boolean {
    return va >= this.arch.layout.directMapStart && va < this.arch.layout.directMapEnd;
  }

  begin(): CpaTxn {
    return new CpaTxn(this.counters.ptFramesAllocated, this.counters.ptFramesFreed);
  }

  /**
   * Apply `flagsOf` to every leaf of [start, end), splitting large leaves covered only partly
   * (`onePagePerCall`: as a sequence of one-page calls, which split every large leaf they change).
   */
  change(
    txn: CpaTxn,
    start: number,
    end: number,
    flagsOf: (f: number) => number,
    onePagePerCall = false,
  ): void {
    const changed = (va: number, oldFlags: number): void => {
      txn.undo.push(UNDO_FLAGS, va, 1, oldFlags);
      txn.changed = true;
    };
    let a = start;
    while (a < end) {
      const t = this.pt.lookup(a);
      if (t === null) assert(false, `CPA: 0x${a.toString(16)} unmapped after the check`);
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
      if (onePagePerCall || t.va < start || t.va + size > end) {
        this.split(txn, t.va, t.level as 2 | 3);
        continue;
      }
      this.pt.setLeafFlags(t.va, t.level, flags);
      txn.undo.push(UNDO_FLAGS, t.va, t.level, t.flags);
      txn.changed = true;
      a = t.va + size;
    }
  }

  /** Undo a failed call; the page-table frame counters are restored too (the call never happened). */
  rollback(txn: CpaTxn): void {
    const undo = txn.undo;
    for (let k = undo.length - UNDO_STRIDE; k >= 0; k -= UNDO_STRIDE) {
      const va = undo[k + 1];
      const level = undo[k + 2] as LeafLevel;
      assert(undo[k] !== UNDO_EXPAND, 'CPA rollback: linear-map expansions come after every fallible step');
      if (undo[k] === UNDO_FLAGS) this.pt.setLeafFlags(va, level, undo[k + 3]);
      else assert(this.pt.tryCollapse(va, level as 2 | 3), 'CPA rollback: split did not collapse back');
    }
    undo.length = 0;
    this.counters.ptFramesAllocated = txn.ptFramesAllocated;
    this.counters.ptFramesFreed = txn.ptFramesFreed;
  }

  /** Count what the call did and issue each split's flush_tlb_all (__split_large_page). */
  commit(txn: CpaTxn): void {
    txn.undo.length = 0;
    if (!txn.tallied) return;
    TALLY_KEYS.forEach((k, i) => {
      this.counters[k] += txn.tally[i];
    });
    for (let n = txn.splitCount(); n > 0; n--) this.cpus.flushAll();
    txn.tally.fill(0);
    txn.tallied = false;
  }

  /** cpa_process_alias: the direct-map alias of the range's frames gets RW or RO (never X). */
  private changeAlias(txn: CpaTxn, start: number, end: number, writable: boolean): void {
    const flagsOf = (f: number): number => (writable ? f | PTE_RW : f & ~PTE_RW);
    const dm = this.arch.layout.directMapStart;
    const runs = this.frameRuns(start, end);
    for (let k = 0; k < runs.length; k += 2) {
      this.change(txn, dm + runs[k] * PAGE, dm + (runs[k] + runs[k + 1]) * PAGE, flagsOf);
    }
  }

  /** The frames behind [start, end) as merged [pfn, frameCount] runs, in address order. */
  frameRuns(start: number, end: number): number[] {
    const runs: number[] = [];
    this.pt.forEachLeaf(start, end, (t) => {
      const from = Math.max(start, t.va);
      const to = Math.min(end, t.va + LEVEL_BYTES[t.level]);
      const pfn = t.pfn + (from - t.va) / PAGE;
      const n = runs.length;
      if (n > 0 && runs[n - 2] + runs[n - 1] === pfn) runs[n - 1] += (to - from) / PAGE;
      else runs.push(pfn, (to - from) / PAGE);
    });
    return runs;
  }

  /** Split one large leaf: a counted CPA split, or on a page-granular linear map an expansion. */
  private split(txn: CpaTxn, va: number, level: 2 | 3): void {
    const dm = this.inDirectMap(va);
    if (dm && this.arch.directMapPageGranular) {
      const pfn = this.linearTables.pop();
      assert(pfn !== undefined, 'linear-map expansion beyond the tables reserved at boot');
      this.pt.split(va, level, pfn);
      txn.undo.push(UNDO_EXPAND, va, level, 0);
      return;
    }
    this.pt.split(va, level);
    txn.undo.push(UNDO_SPLIT, va, level, 0);
    txn.count(false, dm, level);
    txn.changed = true;
  }

  /** cpa_collapse_large_pages over the primary range: PMD tables first, then the PUD. */
  private collapse(txn: CpaTxn, start: number, end: number): number {
    const dm = this.inDirectMap(start);
    let collapsed = 0;
    const first2M = start - (start % LEVEL_BYTES[2]);
    for (let a = first2M; a < end; a += LEVEL_BYTES[2]) {
      if (this.pt.tryCollapse(a, 2)) {
        collapsed++;
        txn.count(true, dm, 2);
      }
    }
    const first1G = start - (start % LEVEL_BYTES[3]);
    for (let a = first1G; a < end; a += LEVEL_BYTES[3]) {
      if (this.pt.tryCollapse(a, 3)) {
        collapsed++;
        txn.count(true, dm, 3);
      }
    }
    return collapsed;
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
