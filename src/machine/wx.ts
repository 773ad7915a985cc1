/**
 * The W^X audit: no frame may be writable through any mapping of the kernel's address space (or a
 * stale TLB entry of it) while it is executable through any (DESIGN.md rule 2).
 *
 * Why per-frame counts and not per-mapping checks: the violation the kernel cares about is across
 * aliases. A module page mapped ROX in vmalloc space is still mapped through the direct map; only
 * because cpa_process_alias() also makes that alias read-only (arch/x86/mm/pat/set_memory.c) is the
 * frame not writable-and-executable. So the audit counts, per physical frame, how many mappings
 * make it writable and how many make it executable (wx-counts.ts, updated from every leaf
 * change the page table reports), and a frame violates W^X while both counts are non-zero. The
 * number of violating frames is kept up to date, so `violationCount()` is O(1) and can be asserted
 * after every operation.
 *
 * Stale TLB entries count too: hardware keeps using a cached translation until it is flushed, so
 * after a leaf changes, every TLB entry of any CPU that overlaps the old leaf and no longer equals
 * the page table is registered as stale and its W/X are added to the counts, until a flush drops it
 * or the TLB evicts it. This is what makes "skipped the shootdown" visible as a violation.
 *
 * Finding the overlapping TLB entries scans every TLB array, too slow for every 4 KiB unmap, so
 * each CPU keeps a cheap superset filter of what it may hold: the leaf keys (va + level) inserted
 * since its last full flush, and the 2 MiB and 1 GiB regions they lie in (`noteInsert`; evictions
 * and range flushes leave false positives, which only cost a scan). A leaf change needs a scan
 * only if that page, its 2 MiB or its 1 GiB region may be cached (a 2 MiB change: its region or the
 * 1 GiB leaf around it; a 1 GiB change: its region). Past FILTER_MAX keys the filter gives up until
 * the next full flush. This relies on every fill of the kernel address space's translations going
 * through the machine's access paths (cpu.ts), which call noteInsert. A CPU whose filter is empty
 * (the common state right after a CPA shootdown) is ruled out with one size check.
 *
 * `fullScan()` recomputes from scratch (every leaf plus every TLB entry of every CPU) for tests; the
 * two must agree. The x86 poking mm is a different address space: the audit does not include it
 * (its TLB entries live at user-half addresses and are flushed before text_poke returns, or when
 * a write session ends), nor does it include arm64's write-session mm (write-session.ts), for the
 * same reason.
 */
import { alignDown } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { NumberSet } from './num-set.js';
import type { LeafBulkListener, PageTable } from './pagetable.js';
import type { LeafChange, Translation } from './types.js';
import { LEVEL_BYTES, PTE_NX, PTE_PRESENT, PTE_RW } from './types.js';
import { WxCounts } from './wx-counts.js';

/** The part of a CPU TLB the audit needs. */
export interface TlbView {
  overlapping(va: number, sizeBytes: number): Translation[];
}

export interface WxViolation {
  readonly pfn: number;
  /** Virtual addresses (leaf bases) through which the frame is writable / executable. */
  readonly writableVia: number[];
  readonly executableVia: number[];
}

const VA_END = 2 ** 48;
const FILTER_MAX = 1 << 16;

function isW(t: Translation): boolean {
  return (t.flags & (PTE_PRESENT | PTE_RW)) === (PTE_PRESENT | PTE_RW);
}

function isX(t: Translation): boolean {
  return (t.flags & (PTE_PRESENT | PTE_NX)) === PTE_PRESENT;
}

function sameLeaf(a: Translation | null, b: Translation): boolean {
  return a !== null && a.va === b.va && a.level === b.level && a.pfn === b.pfn && a.flags === b.flags;
}

function leafKey(t: Translation): string {
  return `${t.va}/${t.level}/${t.pfn}/${t.flags}`;
}

export class WxAudit implements LeafBulkListener {
  private readonly counts: WxCounts;
  private tlbs: readonly TlbView[] = [];
  /** Per CPU: stale entries (by value) still held by that CPU's TLB. */
  private stale: Map<string, Translation>[] = [];
  /** Per CPU: what its TLB may hold (a superset), unless `saturated`. */
  private maybe: MayHold[] = [];
  /** Per CPU: 1 when the filter gave up (past FILTER_MAX keys) until the next full flush. */
  private saturated = new Uint8Array(0);

  constructor(
    private readonly pt: PageTable,
    private readonly totalFrames: number,
    private readonly ignored: { start: number; end: number } | null,
  ) {
    this.counts = new WxCounts(totalFrames);
  }

  attachTlbs(tlbs: readonly TlbView[]): void {
    this.tlbs = tlbs;
    this.stale = tlbs.map(() => new Map());
    this.maybe = tlbs.map(() => newMayHold());
    this.saturated = new Uint8Array(tlbs.length);
  }

  /** A CPU's TLB was filled with `t` (keeps the superset filter of cached leaves). */
  noteInsert(cpu: number, t: Translation): void {
    if (this.saturated[cpu] === 1) return;
    const m = this.maybe[cpu];
    // A leaf already held adds nothing: its regions were noted with it.
    if (!m.leaves.add(t.va + t.level)) return;
    if (t.level !== 3) m.regions2M.add(alignDown(t.va, LEVEL_BYTES[2]));
    m.regions1G.add(alignDown(t.va, LEVEL_BYTES[3]));
    if (m.leaves.size > FILTER_MAX) {
      this.saturated[cpu] = 1;
      clearMayHold(m);
    }
  }

  violationCount(): number {
    return this.counts.violations;
  }

  staleEntryCount(): number {
    let n = 0;
    for (const m of this.stale) n += m.size;
    return n;
  }

  onLeafChange(change: LeafChange): void {
    if (change.old !== null) {
      this.account(change.old, -1);
      this.markStale(change.old);
    }
    if (change.next !== null) this.account(change.next, 1);
  }

  /**
   * A split: `old` and its 512 pieces cover the same frames with the same flags, so their counts
   * cancel; what remains of the 513 changes is that cached copies of `old` may now be stale.
   */
  onSplit(old: Translation): void {
    this.markStale(old);
  }

  /**
   * A collapse: the 512 pieces and `big` cancel as in onSplit; cached pieces (anything cached
   * under `big`'s range that is not `big` itself) may now be stale. One overlap query per CPU
   * finds exactly the union of the 512 per-piece queries.
   */
  onCollapse(big: Translation): void {
    this.markStale(big);
  }

  /** A CPU flushed [va, va+sizeBytes) (or everything): its stale entries there are gone. */
  onFlush(cpu: number, va?: number, sizeBytes?: number): void {
    if (va === undefined) {
      clearMayHold(this.maybe[cpu]);
      this.saturated[cpu] = 0;
    }
    const m = this.stale[cpu];
    if (m.size === 0) return;
    for (const [key, t] of m) {
      if (va === undefined || sizeBytes === undefined || overlaps(t, va, sizeBytes)) {
        m.delete(key);
        this.account(t, -1);
      }
    }
  }

  /** Does this CPU's TLB hold entries the audit counts as stale (only then onEvict matters)? */
  hasStale(cpu: number): boolean {
    return this.stale[cpu].size > 0;
  }

  /** A CPU's TLB evicted `t` for capacity: forget it if no copy of it is left in that TLB. */
  onEvict(cpu: number, t: Translation): void {
    const m = this.stale[cpu];
    if (m.size === 0) return;
    const key = leafKey(t);
    const held = m.get(key);
    if (held === undefined) return;
    for (const e of this.tlbs[cpu].overlapping(t.va, LEVEL_BYTES[t.level])) if (sameLeaf(e, t)) return;
    m.delete(key);
    this.account(held, -1);
  }

  /** Recompute from scratch: every leaf of the kernel table and every TLB entry of every CPU. */
  fullScan(): WxViolation[] {
    const w = new Uint8Array(this.totalFrames);
    const x = new Uint8Array(this.totalFrames);
    const mark = (t: Translation): void => {
      const frames = LEVEL_BYTES[t.level] / 4096;
      if (isW(t)) w.fill(1, t.pfn, t.pfn + frames);
      if (isX(t)) x.fill(1, t.pfn, t.pfn + frames);
    };
    const sources: Translation[] = [];
    this.pt.forEachLeaf(0, VA_END, (t) => {
      mark(t);
      sources.push(t);
    });
    for (const tlb of this.tlbs) {
      for (const e of tlb.overlapping(0, VA_END)) {
        if (this.ignored !== null && e.va >= this.ignored.start && e.va < this.ignored.end) continue;
        mark(e);
        sources.push(e);
      }
    }
    const out: WxViolation[] = [];
    const byPfn = new Map<number, WxViolation>();
    for (let pfn = 0; pfn < this.totalFrames; pfn++) {
      if (w[pfn] && x[pfn]) {
        const v = { pfn, writableVia: [], executableVia: [] };
        byPfn.set(pfn, v);
        out.push(v);
      }
    }
    if (out.length > 0) this.explain(sources, byPfn);
    return out;
  }

  /** Check the incremental counts against a recount of leaves + registered stale entries (tests). */
  checkCounts(): void {
    const w = new Uint16Array(this.totalFrames);
    const x = new Uint16Array(this.totalFrames);
    const add = (t: Translation): void => {
      const frames = LEVEL_BYTES[t.level] / 4096;
      for (let f = t.pfn; f < t.pfn + frames; f++) {
        if (isW(t)) w[f]++;
        if (isX(t)) x[f]++;
      }
    };
    this.pt.forEachLeaf(0, VA_END, add);
    for (const m of this.stale) for (const t of m.values()) add(t);
    for (let f = 0; f < this.totalFrames; f++) {
      assert(
        w[f] === this.counts.writableOf(f) && x[f] === this.counts.executableOf(f),
        `W^X counts of frame ${f} drifted`,
      );
    }
  }

  private explain(sources: Translation[], byPfn: Map<number, WxViolation>): void {
    for (const t of sources) {
      const frames = LEVEL_BYTES[t.level] / 4096;
      for (let f = t.pfn; f < t.pfn + frames; f++) {
        const v = byPfn.get(f);
        if (v === undefined) continue;
        if (isW(t)) v.writableVia.push(t.va);
        if (isX(t)) v.executableVia.push(t.va);
      }
    }
  }

  private markStale(old: Translation): void {
    const size = LEVEL_BYTES[old.level];
    for (let cpu = 0; cpu < this.tlbs.length; cpu++) {
      if (!this.mayHold(cpu, old)) continue;
      const entries = this.tlbs[cpu].overlapping(old.va, size);
      if (entries.length === 0) continue;
      const m = this.stale[cpu];
      for (const e of entries) {
        const key = leafKey(e);
        if (m.has(key) || sameLeaf(this.pt.walk(e.va), e)) continue;
        m.set(key, e);
        this.account(e, 1);
      }
    }
  }

  /** Could this CPU's TLB hold an entry overlapping the leaf `t`? */
  private mayHold(cpu: number, t: Translation): boolean {
    if (this.saturated[cpu] === 1) return true;
    const m = this.maybe[cpu];
    const leaves = m.leaves;
    if (leaves.size === 0) return false;
    if (t.level === 3) return m.regions1G.has(t.va);
    const r3 = alignDown(t.va, LEVEL_BYTES[3]);
    if (t.level === 2) return m.regions2M.has(t.va) || leaves.has(r3 + 3);
    const r2 = alignDown(t.va, LEVEL_BYTES[2]);
    return leaves.has(t.va + 1) || leaves.has(r2 + 2) || leaves.has(r3 + 3);
  }

  private account(t: Translation, delta: 1 | -1): void {
    const w = isW(t);
    const x = isX(t);
    this.counts.add(t.pfn, LEVEL_BYTES[t.level] / 4096, w, x, delta);
  }
}

/**
 * Superset filter of one CPU's TLB contents since its last full flush: the leaf keys (va + level)
 * and the 2 MiB / 1 GiB regions they lie in, so a 4 KiB, 2 MiB or 1 GiB leaf change can each be
 * ruled out with at most three lookups. An entry overlapping a 2 MiB leaf is a 4 KiB or 2 MiB leaf
 * of that region or the 1 GiB leaf around it; one overlapping a 1 GiB leaf lies in its region.
 */
interface MayHold {
  readonly leaves: NumberSet;
  readonly regions2M: NumberSet;
  readonly regions1G: NumberSet;
}

/** NumberSets (num-set.ts): noted on every TLB fill, emptied on every full flush, without allocating. */
function newMayHold(): MayHold {
  return { leaves: new NumberSet(), regions2M: new NumberSet(), regions1G: new NumberSet() };
}

function clearMayHold(m: MayHold): void {
  m.leaves.clear();
  m.regions2M.clear();
  m.regions1G.clear();
}

function overlaps(t: Translation, va: number, sizeBytes: number): boolean {
  return t.va < va + sizeBytes && va < t.va + LEVEL_BYTES[t.level];
}
