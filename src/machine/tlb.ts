/**
 * Per-CPU translation lookaside buffers: L1 instruction and data arrays per page size, and a
 * second level that is shared by both sides (Intel STLB) or split (AMD L2 ITLB / L2 DTLB), with
 * geometry from tlb-profiles.ts.
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
 * - The lookup path is hot (every simulated instruction fetch goes through it), so entries live
 *   in typed arrays (one Float64 key per slot, LRU stamps) and a lookup allocates nothing; the
 *   Translation objects a walk produced are kept by reference and handed back on a hit.
 *
 * Model details (documented simplifications):
 * - Exact LRU per set (hardware uses undocumented pseudo-LRU). Set index = page number mod sets,
 *   each page size indexed by its own page number (sets must be a power of two).
 * - L1 and L2 are neither inclusive nor exclusive: a walk fills both, an L2 hit refills the L1.
 * - "Smashed" 1 GiB entries (AMD; Skylake ITLB, which has no 1 GiB array) are keyed by the
 *   2 MiB window of the access but keep the full 1 GiB translation, so a refill into an L1 that
 *   holds 1 GiB pages installs the 1 GiB entry again (WikiChip, Zen 2).
 * - If a 4 KiB and a larger entry both cover an address (possible only with stale entries), the
 *   smaller page size is probed first and wins.
 * - `onEvict` is called when a capacity eviction (or an in-place replacement by an insert)
 *   removes the last copy of a translation value from this CPU's TLB; flushes never call it.
 */
import { isPow2, VA_LIMIT } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { MachineError } from './errors.js';
import type { TlbArraySpec, TlbProfile } from './tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from './types.js';

export type TlbSide = 'i' | 'd';

/** Per side: hits in the first level, hits in the second level, and misses of both (= walks). */
export interface TlbStats {
  l1Hits: number;
  l2Hits: number;
  misses: number;
}

const KEY_EMPTY = -1;
/** A probe key that matches nothing (NaN is unequal to everything). */
const KEY_NONE = Number.NaN;
const LEVEL_COUNT_MAX = 3;

/** Key of a slot: page number in the key granule, times 4, plus the key level (1..3). */
function keyOf(va: number, keyLevel: LeafLevel): number {
  return Math.floor(va / LEVEL_BYTES[keyLevel]) * 4 + keyLevel;
}

function sameValue(a: Translation, b: Translation): boolean {
  return a === b || (a.va === b.va && a.level === b.level && a.pfn === b.pfn && a.flags === b.flags);
}

/** One set-associative array with exact LRU per set. Exported for tests. */
export class TlbArray {
  readonly spec: TlbArraySpec;
  readonly sets: number;
  readonly ways: number;
  /** Key level used to hold a translation of level L (index L), 0 when not held. */
  readonly keyLevelFor: Uint8Array;
  /** Key levels to probe on lookup, smallest first. */
  private readonly probeLevels: readonly LeafLevel[];
  private readonly keys: Float64Array;
  private readonly stamps: Float64Array;
  /** Covered range of the cached translation, for flushes: [starts[i], ends[i]). */
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  private readonly trans: (Translation | undefined)[];
  /** Key level of each slot (0 when empty). */
  private readonly slotLevels: Uint8Array;
  /** Occupied slots per key level. */
  private readonly levelCounts: Uint32Array;
  private readonly probesLevel2: boolean;
  private clock = 0;
  private used = 0;
  /** Occupied slots holding a translation larger than their key (smashed 1 GiB entries). */
  private smashed = 0;
  private hintSlot = 0;
  private hintLevel: LeafLevel | 0 = 0;

  constructor(spec: TlbArraySpec) {
    assert(Number.isInteger(spec.entries) && spec.entries > 0, `${spec.name}: entries must be > 0`);
    assert(Number.isInteger(spec.ways) && spec.ways > 0, `${spec.name}: ways must be > 0`);
    assert(spec.entries % spec.ways === 0, `${spec.name}: entries must be a multiple of ways`);
    assert(spec.levels.length > 0, `${spec.name}: holds no page size`);
    this.spec = spec;
    this.ways = spec.ways;
    this.sets = spec.entries / spec.ways;
    assert(isPow2(this.sets), `${spec.name}: set count ${this.sets} must be a power of two`);
    this.keyLevelFor = new Uint8Array(LEVEL_COUNT_MAX + 1);
    for (const level of spec.levels) this.keyLevelFor[level] = level;
    if (spec.smash1g) {
      assert(!spec.levels.includes(3) && spec.levels.includes(2), `${spec.name}: smash1g needs 2M, not 1G`);
      this.keyLevelFor[3] = 2;
    }
    this.probeLevels = [...spec.levels].sort((a, b) => a - b);
    this.probesLevel2 = spec.levels.includes(2);
    this.slotLevels = new Uint8Array(spec.entries);
    this.levelCounts = new Uint32Array(LEVEL_COUNT_MAX + 1);
    this.keys = new Float64Array(spec.entries).fill(KEY_EMPTY);
    this.stamps = new Float64Array(spec.entries);
    this.starts = new Float64Array(spec.entries);
    this.ends = new Float64Array(spec.entries);
    this.trans = new Array<Translation | undefined>(spec.entries).fill(undefined);
  }

  get entryCount(): number {
    return this.used;
  }

  holdsLevel(level: LeafLevel): boolean {
    return this.keyLevelFor[level] !== 0;
  }

  /**
   * Slot index holding a translation for va, or -1. Touches LRU on a hit. No allocation.
   * Fast path: the slot of the previous hit, valid when its key matches and no entry of a
   * smaller page size exists in the array (so the smaller-size-first rule cannot be violated).
   */
  find(va: number): number {
    const hintLevel = this.hintLevel;
    if (hintLevel !== 0) {
      const slot = this.hintSlot;
      if (this.keys[slot] === keyOf(va, hintLevel) && this.smallerCount(hintLevel) === 0) {
        this.stamps[slot] = ++this.clock;
        return slot;
      }
    }
    const slot = this.sets === 1 ? this.scanAll(va) : this.probeSets(va);
    if (slot >= 0) {
      this.stamps[slot] = ++this.clock;
      this.hintSlot = slot;
      this.hintLevel = this.slotLevels[slot] as LeafLevel;
    }
    return slot;
  }

  /** Set-associative probe: one set per page size, smallest size first. */
  private probeSets(va: number): number {
    const levels = this.probeLevels;
    for (let l = 0; l < levels.length; l++) {
      const key = keyOf(va, levels[l]);
      const first = this.setOf(key) * this.ways;
      const last = first + this.ways;
      for (let i = first; i < last; i++) {
        if (this.keys[i] === key) return i;
      }
    }
    return -1;
  }

  /** Fully associative probe: one pass comparing every page size's key; smallest size wins. */
  private scanAll(va: number): number {
    const k1 = this.keyLevelFor[1] === 1 ? keyOf(va, 1) : KEY_NONE;
    const k2 = this.probesLevel2 ? keyOf(va, 2) : KEY_NONE;
    const k3 = this.keyLevelFor[3] === 3 ? keyOf(va, 3) : KEY_NONE;
    let found = -1;
    let foundLevel = 4;
    const keys = this.keys;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k === k1) return i;
      if (k === k2 && foundLevel > 2) {
        found = i;
        foundLevel = 2;
      } else if (k === k3 && foundLevel > 3) {
        found = i;
        foundLevel = 3;
      }
    }
    return found;
  }

  private smallerCount(level: LeafLevel): number {
    const c = this.levelCounts;
    return level === 1 ? 0 : level === 2 ? c[1] : c[1] + c[2];
  }

  at(slot: number): Translation {
    const t = this.trans[slot];
    assert(t !== undefined, 'empty TLB slot');
    return t;
  }

  /**
   * Caches t for an access at accessVa (which must lie inside t). Returns the translation that
   * left the array (capacity victim or replaced different value), else undefined.
   */
  put(t: Translation, accessVa: number): Translation | undefined {
    const keyLevel = this.keyLevelFor[t.level];
    assert(keyLevel !== 0, `${this.spec.name} does not hold level ${t.level}`);
    const key = keyOf(keyLevel === t.level ? t.va : accessVa, keyLevel as LeafLevel);
    const first = this.setOf(key) * this.ways;
    const last = first + this.ways;
    let victim = -1;
    let victimStamp = Number.POSITIVE_INFINITY;
    for (let i = first; i < last; i++) {
      const k = this.keys[i];
      if (k === key) {
        const old = this.trans[i]!;
        this.fill(i, key, keyLevel as LeafLevel, t);
        return sameValue(old, t) ? undefined : old;
      }
      if (k === KEY_EMPTY) {
        if (victimStamp !== -1) {
          victim = i;
          victimStamp = -1;
        }
      } else if (this.stamps[i] < victimStamp) {
        victim = i;
        victimStamp = this.stamps[i];
      }
    }
    const evicted = this.keys[victim] === KEY_EMPTY ? undefined : this.trans[victim];
    this.fill(victim, key, keyLevel as LeafLevel, t);
    return evicted;
  }

  /** Does any slot hold a translation equal in value to t? */
  holdsValue(t: Translation): boolean {
    const keyLevel = this.keyLevelFor[t.level];
    if (keyLevel === 0) return false;
    if (keyLevel === t.level) {
      const key = keyOf(t.va, t.level);
      const first = this.setOf(key) * this.ways;
      for (let i = first; i < first + this.ways; i++) {
        if (this.keys[i] === key && sameValue(this.trans[i]!, t)) return true;
      }
      return false;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && sameValue(this.trans[i]!, t)) return true;
    }
    return false;
  }

  /** Drops every slot whose translation overlaps [startVa, endVa); returns how many. */
  dropRange(startVa: number, endVa: number): number {
    if (this.used === 0) return 0;
    if (this.probeable(startVa, endVa)) return this.probeRange(startVa, endVa, null);
    let count = 0;
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.starts[i] < endVa && this.ends[i] > startVa) {
        this.clear(i);
        count++;
      }
    }
    return count;
  }

  /**
   * Empties the array. Only the keys are cleared: a slot's translation, level and stamp are read
   * only while its key is set, so they need no reset (the references they keep are bounded by the
   * array size). Flushes are frequent (every CPA shootdown, every cold fetch-model run).
   */
  dropAll(): number {
    const count = this.used;
    if (count === 0) return 0;
    this.keys.fill(KEY_EMPTY);
    this.levelCounts.fill(0);
    this.used = 0;
    this.smashed = 0;
    return count;
  }

  /** Appends translations overlapping [startVa, endVa) to out. */
  collectRange(startVa: number, endVa: number, out: Translation[]): void {
    if (this.used === 0) return;
    if (this.probeable(startVa, endVa)) {
      this.probeRange(startVa, endVa, out);
      return;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.starts[i] < endVa && this.ends[i] > startVa) {
        out.push(this.trans[i]!);
      }
    }
  }

  /**
   * Whether the slots overlapping [startVa, endVa) can be found by probing sets instead of scanning
   * every slot: a slot keyed at level L (not smashed) covers exactly its page of size L, so it can
   * only overlap the range if its page is one of the range's level-L pages, and it lies in that
   * page's set. Worth it while those pages are fewer than the sets (small flushes: text_poke,
   * fixmap, single-page CPA). Smashed 1 GiB entries cover more than their key: any present, scan.
   */
  private probeable(startVa: number, endVa: number): boolean {
    if (this.sets === 1 || this.smashed > 0) return false;
    let pages = 0;
    const levels = this.probeLevels;
    for (let l = 0; l < levels.length; l++) {
      const size = LEVEL_BYTES[levels[l]];
      pages += Math.floor((endVa - 1) / size) - Math.floor(startVa / size) + 1;
    }
    return pages <= this.sets;
  }

  /** The probing twin of the full scans: drops (out === null) or collects the overlapping slots. */
  private probeRange(startVa: number, endVa: number, out: Translation[] | null): number {
    let count = 0;
    const levels = this.probeLevels;
    for (let l = 0; l < levels.length; l++) {
      const level = levels[l];
      const size = LEVEL_BYTES[level];
      const lastPage = Math.floor((endVa - 1) / size);
      for (let page = Math.floor(startVa / size); page <= lastPage; page++) {
        const first = ((page >>> 0) & (this.sets - 1)) * this.ways;
        const last = first + this.ways;
        for (let i = first; i < last; i++) {
          if (this.keys[i] === KEY_EMPTY || this.slotLevels[i] !== level) continue;
          if (this.starts[i] >= endVa || this.ends[i] <= startVa) continue;
          if (out === null) this.clear(i);
          else out.push(this.trans[i]!);
          count++;
        }
      }
    }
    return count;
  }

  private setOf(key: number): number {
    // key / 4 is the page number; its low bits survive ToUint32 since sets <= 2^31.
    return ((key / 4) >>> 0) & (this.sets - 1);
  }

  private fill(slot: number, key: number, keyLevel: LeafLevel, t: Translation): void {
    if (this.keys[slot] === KEY_EMPTY) this.used++;
    else {
      this.levelCounts[this.slotLevels[slot]]--;
      if (this.trans[slot]!.level !== this.slotLevels[slot]) this.smashed--;
    }
    if (t.level !== keyLevel) this.smashed++;
    this.levelCounts[keyLevel]++;
    this.keys[slot] = key;
    this.slotLevels[slot] = keyLevel;
    this.stamps[slot] = ++this.clock;
    this.starts[slot] = t.va;
    this.ends[slot] = t.va + LEVEL_BYTES[t.level];
    this.trans[slot] = t;
  }

  private clear(slot: number): void {
    this.levelCounts[this.slotLevels[slot]]--;
    if (this.trans[slot]!.level !== this.slotLevels[slot]) this.smashed--;
    this.keys[slot] = KEY_EMPTY;
    this.slotLevels[slot] = 0;
    this.trans[slot] = undefined;
    this.used--;
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

/** One CPU's TLBs. */
export class CpuTlb {
  readonly profile: TlbProfile;
  readonly stats: { i: TlbStats; d: TlbStats };
  private readonly l1i: readonly TlbArray[];
  private readonly l1d: readonly TlbArray[];
  private readonly l2i: readonly TlbArray[];
  private readonly l2d: readonly TlbArray[];
  /** Every array once (shared arrays appear once). */
  private readonly arrays: readonly TlbArray[];
  /** The same arrays in the order used to look for a remaining copy after an eviction. */
  private readonly copyCheckOrder: readonly TlbArray[];
  private readonly onEvict: ((t: Translation) => void) | undefined;
  /** The last va that missed on each side: where a walk's 1 GiB result is "smashed" to. */
  private lastMissVaI = -1;
  private lastMissVaD = -1;

  constructor(profile: TlbProfile, onEvict?: (t: Translation) => void) {
    this.profile = profile;
    this.onEvict = onEvict;
    const build = (specs: readonly TlbArraySpec[]) => specs.map((s) => new TlbArray(s));
    this.l1i = build(profile.l1i);
    this.l1d = build(profile.l1d);
    const shared = build(profile.l2shared);
    this.l2i = [...build(profile.l2i), ...shared];
    this.l2d = [...build(profile.l2d), ...shared];
    this.arrays = [...this.l1i, ...this.l1d, ...new Set([...this.l2i, ...this.l2d])];
    // Second level first: an entry evicted from an L1 is most often still there (early exit).
    this.copyCheckOrder = [...new Set([...this.l2i, ...this.l2d]), ...this.l1i, ...this.l1d];
    for (const level of [1, 2, 3] as const) {
      assert(
        this.l1i.some((a) => a.holdsLevel(level)),
        `${profile.name}: L1 iTLB cannot hold level ${level}`,
      );
      assert(
        this.l1d.some((a) => a.holdsLevel(level)),
        `${profile.name}: L1 dTLB cannot hold level ${level}`,
      );
    }
    this.stats = { i: { l1Hits: 0, l2Hits: 0, misses: 0 }, d: { l1Hits: 0, l2Hits: 0, misses: 0 } };
  }

  /**
   * Looks va up in the L1 of that side, then in its L2 (an L2 hit refills the L1). Counts one
   * l1Hit, l2Hit or miss. Returns the cached translation (possibly stale) or undefined on a miss,
   * after which the caller walks the page table and calls insert(). Allocates nothing.
   */
  lookup(side: TlbSide, va: number): Translation | undefined {
    const isI = side === 'i';
    const stats = isI ? this.stats.i : this.stats.d;
    const l1 = isI ? this.l1i : this.l1d;
    for (let a = 0; a < l1.length; a++) {
      const slot = l1[a].find(va);
      if (slot >= 0) {
        stats.l1Hits++;
        return l1[a].at(slot);
      }
    }
    const l2 = isI ? this.l2i : this.l2d;
    for (let a = 0; a < l2.length; a++) {
      const slot = l2[a].find(va);
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
   * Caches a walked translation in the L1 of that side and in its L2 where that size is held.
   * accessVa (inside t) picks the 2 MiB window for smashed 1 GiB entries; by default the last
   * missed address of that side if it lies in t, else t.va.
   */
  insert(side: TlbSide, t: Translation, accessVa?: number): void {
    checkTranslation(t);
    const endVa = t.va + LEVEL_BYTES[t.level];
    const lastMiss = side === 'i' ? this.lastMissVaI : this.lastMissVaD;
    let va = t.va;
    if (accessVa !== undefined) {
      if (!Number.isInteger(accessVa) || accessVa < t.va || accessVa >= endVa) {
        throw new MachineError('EINVAL', `access va ${accessVa} is not inside the translation at ${t.va}`);
      }
      va = accessVa;
    } else if (lastMiss >= t.va && lastMiss < endVa) {
      va = lastMiss;
    }
    this.fillLevel(side === 'i' ? this.l1i : this.l1d, t, va);
    this.fillLevel(side === 'i' ? this.l2i : this.l2d, t, va);
  }

  /** Drops every entry (any side, any level) overlapping [va, va + sizeBytes); returns the count. */
  flushRange(va: number, sizeBytes: number): number {
    checkRange(va, sizeBytes);
    let count = 0;
    for (const a of this.arrays) count += a.dropRange(va, va + sizeBytes);
    return count;
  }

  flushAll(): number {
    let count = 0;
    for (const a of this.arrays) count += a.dropAll();
    return count;
  }

  /** Distinct translation values cached anywhere in this TLB that overlap the range. */
  overlapping(va: number, sizeBytes: number): Translation[] {
    checkRange(va, sizeBytes);
    const all: Translation[] = [];
    for (const a of this.arrays) a.collectRange(va, va + sizeBytes, all);
    const out: Translation[] = [];
    for (const t of all) if (!out.some((o) => sameValue(o, t))) out.push(t);
    return out;
  }

  /** Occupied slots over all arrays (a translation cached in L1 and L2 counts twice). */
  entryCount(): number {
    let count = 0;
    for (const a of this.arrays) count += a.entryCount;
    return count;
  }

  /** The arrays, L1 instruction, L1 data, then second level; for reports and tests. */
  arraysForReport(): readonly TlbArray[] {
    return this.arrays;
  }

  private fillLevel(level: readonly TlbArray[], t: Translation, accessVa: number): void {
    for (let a = 0; a < level.length; a++) {
      if (!level[a].holdsLevel(t.level)) continue;
      const gone = level[a].put(t, accessVa);
      if (gone !== undefined && this.onEvict !== undefined && !this.holdsValue(gone)) this.onEvict(gone);
      return;
    }
  }

  private holdsValue(t: Translation): boolean {
    const arrays = this.copyCheckOrder;
    for (let a = 0; a < arrays.length; a++) if (arrays[a].holdsValue(t)) return true;
    return false;
  }
}
