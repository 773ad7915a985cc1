/**
 * Per-CPU translation lookaside buffers: L1 instruction and data arrays per page size, and a
 * second level that is shared by both sides (Intel STLB, Arm L2 TLB) or split (AMD L2 ITLB /
 * L2 DTLB), with geometry from tlb-profiles.ts; the SMT threads of a core share, partition or
 * replicate each array as the profile says; and a per-CPU lower-bound shadow (tlb-shadow.ts).
 *
 * Why it is built this way:
 * - The costs the thread argued about are TLB costs: global shootdowns on set_memory_* flips
 *   (Song Liu: protect/unprotect "require global TLB flush", <CAPhsuW5dx_A_brhf0HHWMWj3HB_31QCQ8xbqZPir8YxHM5WRig@mail.gmail.com>)
 *   and iTLB pressure from code spread over 4 KiB pages (bpf_prog_pack: "significant pressure to
 *   instruction TLB", research/lkml-thread.md [S-PP8]). Both only become measurable when entries
 *   are cached per page size with the real capacities, so arrays are kept per size exactly where
 *   the hardware keeps them apart (Skylake: 128 4K vs 8 2M ITLB entries).
 * - A TLB caches a translation, not the page table: an entry keeps its old pfn and flags until a
 *   flush drops it, as on hardware. That is what makes a missing flush after a permission change
 *   a real (stale-entry) W^X hazard in the machine; staleness is the machine's business, this
 *   file never consults the page tables.
 * - One CpuTlb is one hardware thread (one simulated CPU). Two threads of a core that share an
 *   array (createCpuTlbs) see one TlbArray whose entries carry the thread's tag, so capacity is
 *   contended but translations are not shared, and a flush on one thread (local flush, or its
 *   part of a shootdown) drops only that thread's entries, as INVLPG / a CR3 write do on the
 *   logical processor that executes them.
 * - The lookup path is hot, so a lookup allocates nothing (see tlb-array.ts).
 *
 * Model details (documented simplifications):
 * - L1 and L2 are neither inclusive nor exclusive: a walk fills both, an L2 hit refills the L1.
 * - Smashed 1 GiB entries keep the full 1 GiB translation, so a refill into an L1 that holds
 *   1 GiB pages installs the 1 GiB entry again (WikiChip, Zen 2).
 * - `onEvict` is called when a capacity eviction (or an in-place replacement by an insert)
 *   removes the last copy of a translation value from this thread's TLB, also when the sibling's
 *   fill evicted it from a shared array; flushes never call it. Finding out whether a copy is left
 *   probes every array, so it is done only while `wantsEvict` (default: always) says the owner
 *   needs onEvict now; `onAnyEvict` is called on every such eviction, copy or not.
 * - `onSiblingL1i` is called on a thread when its sibling looks up or fills a first-level
 *   instruction array they share (zen4): an entry of this thread may have been displaced and the
 *   LRU order changed, so any cached "L1 hit" of this thread (the CPU layer's fetch micro-cache)
 *   must be dropped. Never called for private L1 instruction arrays (skylake, neoverse-n1).
 * - Lower bound (`iBoundMisses`): counted on every instruction-side fill whose leaf the shadow does
 *   not hold; fills follow real misses, so real misses >= bound misses always.
 */
import { VA_LIMIT } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { MachineError } from './errors.js';
import { sameValue, TLB_TAGS_MAX, TlbArray } from './tlb-array.js';
import type { TlbArraySpec, TlbProfile } from './tlb-profiles.js';
import { TlbShadow } from './tlb-shadow.js';
import { LEVEL_BYTES, type Translation } from './types.js';

export { TlbArray } from './tlb-array.js';

export type TlbSide = 'i' | 'd';

/** Per side: hits in the first level, hits in the second level, and misses of both (= walks). */
export interface TlbStats {
  l1Hits: number;
  l2Hits: number;
  misses: number;
}

/** Callbacks of one thread's TLB (see the header). */
export interface TlbHooks {
  readonly onEvict?: (t: Translation) => void;
  readonly onAnyEvict?: () => void;
  readonly wantsEvict?: () => boolean;
  readonly onSiblingL1i?: () => void;
}

/** The hardware threads of one core and the arrays they share. */
export class TlbCore {
  readonly threads: CpuTlb[] = [];
  readonly shared = new Map<TlbArraySpec, TlbArray>();
  constructor(readonly threadCount: number) {
    assert(
      Number.isInteger(threadCount) && threadCount >= 1 && threadCount <= TLB_TAGS_MAX,
      'bad thread count',
    );
  }
}

/** Where a thread sits: its index in the core (the tag of its entries in shared arrays). */
export interface SmtSlot {
  readonly core: TlbCore;
  readonly thread: number;
}

/**
 * The TLBs of `cpuCount` CPUs: CPUs t*k .. t*k+t-1 are the threads of core k (t = the profile's
 * threadsPerCore); with a CPU count that is not a multiple of t, the last core has fewer threads
 * and its arrays are not split.
 */
export function createCpuTlbs(
  profile: TlbProfile,
  cpuCount: number,
  hooksFor?: (cpu: number) => TlbHooks,
): CpuTlb[] {
  const perCore = profile.threadsPerCore;
  const out: CpuTlb[] = [];
  for (let first = 0; first < cpuCount; first += perCore) {
    const core = new TlbCore(Math.min(perCore, cpuCount - first));
    for (let thread = 0; thread < core.threadCount; thread++) {
      out.push(new CpuTlb(profile, hooksFor?.(first + thread), { core, thread }));
    }
  }
  return out;
}

/** One hardware thread's TLBs. */
export class CpuTlb {
  readonly profile: TlbProfile;
  readonly stats: { i: TlbStats; d: TlbStats };
  /** Instruction-side fills of a leaf the lower-bound shadow did not hold (see the header). */
  iBoundMisses = 0;
  /** Index of this thread in its core; the tag of its entries in shared arrays. */
  readonly thread: number;
  private readonly core: TlbCore;
  private readonly l1i: readonly TlbArray[];
  private readonly l1d: readonly TlbArray[];
  private readonly l2i: readonly TlbArray[];
  private readonly l2d: readonly TlbArray[];
  /** Every array once (shared arrays appear once). */
  private readonly arrays: readonly TlbArray[];
  /** The same arrays in the order used to look for a remaining copy after an eviction. */
  private readonly copyCheckOrder: readonly TlbArray[];
  /** Arrays the instruction side can hit (what the shadow must cover). */
  private readonly iReachable: readonly TlbArray[];
  /** Per level: does a data-side fill land in an array the instruction side can hit? */
  private readonly dFillReachesI: Uint8Array;
  /** Does this thread share a first-level instruction array with a sibling? */
  private readonly l1iShared: boolean;
  private readonly shadow = new TlbShadow();
  private readonly onEvict: ((t: Translation) => void) | undefined;
  private readonly onAnyEvict: (() => void) | undefined;
  private readonly wantsEvict: (() => boolean) | undefined;
  private readonly onSiblingL1i: (() => void) | undefined;
  /** The last va that missed on each side: where a walk's 1 GiB result is "smashed" to. */
  private lastMissVaI = -1;
  private lastMissVaD = -1;

  /**
   * A thread of the given core (createCpuTlbs), or without `slot` a core of its own. `hooks` may
   * be the onEvict callback alone.
   */
  constructor(profile: TlbProfile, hooks?: TlbHooks | ((t: Translation) => void), slot?: SmtSlot) {
    this.profile = profile;
    const h: TlbHooks = typeof hooks === 'function' ? { onEvict: hooks } : (hooks ?? {});
    this.onEvict = h.onEvict;
    this.onAnyEvict = h.onAnyEvict;
    this.wantsEvict = h.wantsEvict;
    this.onSiblingL1i = h.onSiblingL1i;
    this.core = slot?.core ?? new TlbCore(1);
    this.thread = slot?.thread ?? 0;
    assert(this.core.threadCount <= profile.threadsPerCore, `${profile.name}: too many threads per core`);
    assert(this.core.threads[this.thread] === undefined, 'thread slot taken');
    this.core.threads[this.thread] = this;
    const build = (specs: readonly TlbArraySpec[]) => specs.map((s) => this.arrayFor(s));
    this.l1i = build(profile.l1i);
    this.l1d = build(profile.l1d);
    const shared = build(profile.l2shared);
    this.l2i = [...build(profile.l2i), ...shared];
    this.l2d = [...build(profile.l2d), ...shared];
    this.arrays = [...this.l1i, ...this.l1d, ...new Set([...this.l2i, ...this.l2d])];
    // Second level first: an entry evicted from an L1 is most often still there (early exit).
    this.copyCheckOrder = [...new Set([...this.l2i, ...this.l2d]), ...this.l1i, ...this.l1d];
    this.iReachable = [...this.l1i, ...this.l2i];
    this.dFillReachesI = new Uint8Array(4);
    for (const level of [1, 2, 3] as const) {
      assert(
        this.l1i.some((a) => a.holdsLevel(level)),
        `${profile.name}: L1 iTLB cannot hold level ${level}`,
      );
      assert(
        this.l1d.some((a) => a.holdsLevel(level)),
        `${profile.name}: L1 dTLB cannot hold level ${level}`,
      );
      if (shared.some((a) => a.holdsLevel(level))) this.dFillReachesI[level] = 1;
    }
    this.l1iShared = this.core.threadCount > 1 && profile.l1i.some((s) => s.smt === 'shared');
    this.stats = { i: { l1Hits: 0, l2Hits: 0, misses: 0 }, d: { l1Hits: 0, l2Hits: 0, misses: 0 } };
  }

  /** This thread's array for a spec, per the spec's SMT policy (tlb-profiles.ts). */
  private arrayFor(spec: TlbArraySpec): TlbArray {
    const threads = this.core.threadCount;
    const policy = spec.smt ?? 'replicated';
    if (threads === 1 || policy === 'replicated') return new TlbArray(spec);
    if (policy === 'partitioned') {
      return new TlbArray({ ...spec, name: `${spec.name}/${threads}`, entries: spec.entries / threads });
    }
    let a = this.core.shared.get(spec);
    if (a === undefined) {
      a = new TlbArray(spec);
      this.core.shared.set(spec, a);
    }
    return a;
  }

  /**
   * Looks va up in the L1 of that side, then in its L2 (an L2 hit refills the L1). Counts one
   * l1Hit, l2Hit or miss. Returns the cached translation (possibly stale) or undefined on a miss,
   * after which the caller walks the page table and calls insert(). Allocates nothing.
   */
  lookup(side: TlbSide, va: number): Translation | undefined {
    const isI = side === 'i';
    const tag = this.thread;
    if (isI && this.l1iShared) this.notifySiblings();
    const stats = isI ? this.stats.i : this.stats.d;
    const l1 = isI ? this.l1i : this.l1d;
    for (let a = 0; a < l1.length; a++) {
      const slot = l1[a].find(va, tag);
      if (slot >= 0) {
        stats.l1Hits++;
        return l1[a].at(slot);
      }
    }
    const l2 = isI ? this.l2i : this.l2d;
    for (let a = 0; a < l2.length; a++) {
      const slot = l2[a].find(va, tag);
      if (slot >= 0) {
        stats.l2Hits++;
        const t = l2[a].at(slot);
        this.fillLevel(l1, t, va);
        return t;
      }
    }
    stats.misses++;
    if (isI) this.lastMissVaI = va;
    else this.lastMissVaD = va;
    return undefined;
  }

  /**
   * Caches a walked translation in the L1 of that side and in its L2 where that size is held,
   * and notes it in the lower-bound shadow (counting iBoundMisses for a new instruction leaf).
   * accessVa (inside t) picks the 2 MiB window for smashed 1 GiB entries; by default the last
   * missed address of that side if it lies in t, else t.va.
   */
  insert(side: TlbSide, t: Translation, accessVa?: number): void {
    checkTranslation(t);
    const endVa = t.va + LEVEL_BYTES[t.level];
    const isI = side === 'i';
    const lastMiss = isI ? this.lastMissVaI : this.lastMissVaD;
    let va = t.va;
    if (accessVa !== undefined) {
      if (!Number.isInteger(accessVa) || accessVa < t.va || accessVa >= endVa) {
        throw new MachineError('EINVAL', `access va ${accessVa} is not inside the translation at ${t.va}`);
      }
      va = accessVa;
    } else if (lastMiss >= t.va && lastMiss < endVa) {
      va = lastMiss;
    }
    this.fill(side, t, va);
  }

  /**
   * insert() of a translation the machine's own page table just returned for an access at
   * accessVa (so t is well formed and accessVa lies inside it): the same fill without the checks,
   * which cost a share of every TLB miss.
   */
  insertWalked(side: TlbSide, t: Translation, accessVa: number): void {
    this.fill(side, t, accessVa);
  }

  private fill(side: TlbSide, t: Translation, va: number): void {
    const isI = side === 'i';
    if (isI) {
      if (this.l1iShared) this.notifySiblings();
      if (this.shadow.note(t)) this.iBoundMisses++;
    } else if (this.dFillReachesI[t.level] === 1) {
      this.shadow.note(t);
    }
    this.fillLevel(isI ? this.l1i : this.l1d, t, va);
    this.fillLevel(isI ? this.l2i : this.l2d, t, va);
  }

  /** Drops this thread's entries (any side, any level) overlapping the range; returns the count. */
  flushRange(va: number, sizeBytes: number): number {
    checkRange(va, sizeBytes);
    let count = 0;
    for (const a of this.arrays) count += a.dropRange(va, va + sizeBytes, this.thread);
    this.shadow.dropRange(va, va + sizeBytes);
    return count;
  }

  /** Drops every entry of this thread; the sibling's entries in shared arrays stay. */
  flushAll(): number {
    let count = 0;
    for (const a of this.arrays) count += a.dropAll(this.thread);
    this.shadow.clear();
    return count;
  }

  /** Distinct translation values cached for this thread anywhere in its TLB that overlap the range. */
  overlapping(va: number, sizeBytes: number): Translation[] {
    checkRange(va, sizeBytes);
    const all: Translation[] = [];
    for (const a of this.arrays) a.collectRange(va, va + sizeBytes, all, this.thread);
    const out: Translation[] = [];
    for (const t of all) if (!out.some((o) => sameValue(o, t))) out.push(t);
    return out;
  }

  /** This thread's occupied slots over all arrays (a translation cached in L1 and L2 counts twice). */
  entryCount(): number {
    let count = 0;
    for (const a of this.arrays) count += a.entryCountOf(this.thread);
    return count;
  }

  /** The arrays, L1 instruction, L1 data, then second level; for reports and tests. */
  arraysForReport(): readonly TlbArray[] {
    return this.arrays;
  }

  /** Leaves in the lower-bound shadow (tests). */
  shadowSize(): number {
    return this.shadow.size;
  }

  /**
   * Tests: every translation this thread's instruction side can hit is in the shadow, so a real
   * hit is always a shadow hit and the bound never exceeds the real misses.
   */
  checkShadow(): void {
    const held: Translation[] = [];
    for (const a of new Set(this.iReachable)) a.collectRange(0, VA_LIMIT, held, this.thread);
    for (const t of held) {
      assert(this.shadow.has(t), `${this.profile.name}: i-side entry ${t.va}/${t.level} not in the shadow`);
    }
  }

  private notifySiblings(): void {
    const threads = this.core.threads;
    for (let i = 0; i < threads.length; i++) {
      if (i !== this.thread) threads[i]?.onSiblingL1i?.();
    }
  }

  private fillLevel(level: readonly TlbArray[], t: Translation, accessVa: number): void {
    for (let a = 0; a < level.length; a++) {
      const array = level[a];
      if (!array.holdsLevel(t.level)) continue;
      const gone = array.put(t, accessVa, this.thread);
      if (gone !== undefined) {
        const owner = array.evictedTag === this.thread ? this : this.core.threads[array.evictedTag];
        owner?.lost(gone);
      }
      return;
    }
  }

  /** A capacity eviction removed t from one of this thread's arrays. */
  private lost(t: Translation): void {
    this.onAnyEvict?.();
    if (this.onEvict === undefined || (this.wantsEvict !== undefined && !this.wantsEvict())) return;
    if (!this.holdsValue(t)) this.onEvict(t);
  }

  private holdsValue(t: Translation): boolean {
    const arrays = this.copyCheckOrder;
    for (let a = 0; a < arrays.length; a++) if (arrays[a].holdsValue(t, this.thread)) return true;
    return false;
  }
}

function checkTranslation(t: Translation): void {
  const ok =
    (t.level === 1 || t.level === 2 || t.level === 3) &&
    Number.isInteger(t.va) &&
    t.va >= 0 &&
    t.va + LEVEL_BYTES[t.level] <= VA_LIMIT &&
    t.va % LEVEL_BYTES[t.level] === 0 &&
    Number.isInteger(t.pfn) &&
    t.pfn >= 0 &&
    (t.pfn * 4096) % LEVEL_BYTES[t.level] === 0;
  if (!ok) {
    throw new MachineError('EINVAL', `bad translation for the TLB: va=${t.va} level=${t.level} pfn=${t.pfn}`);
  }
}

function checkRange(va: number, sizeBytes: number): void {
  const ok =
    Number.isInteger(va) &&
    Number.isInteger(sizeBytes) &&
    va >= 0 &&
    sizeBytes > 0 &&
    va + sizeBytes <= VA_LIMIT;
  if (!ok) throw new MachineError('EINVAL', `bad TLB range: va=${va} sizeBytes=${sizeBytes}`);
}
