/**
 * One set-associative TLB array (one page-size group of one TLB level), the building block of
 * CpuTlb (tlb.ts).
 *
 * Why it is built this way:
 * - The lookup path is hot (every simulated instruction fetch that leaves its page goes through
 *   it), so slots live in typed arrays (one Float64 key per slot, LRU stamps) and a lookup
 *   allocates nothing; the Translation objects a walk produced are kept by reference.
 * - An array can be shared by the two SMT threads of a core (Skylake STLB, tlb-profiles.ts). Each
 *   slot then carries the thread's tag inside its key, as hardware tags entries with the logical
 *   processor: a thread never hits the other thread's entries, but both compete for the same
 *   slots of a set under one LRU order. A private array always sees tag 0 or one tag only.
 *
 * Model details (documented simplifications):
 * - Exact LRU per set (hardware uses undocumented pseudo-LRU). Set index = page number mod sets,
 *   each page size indexed by its own page number (sets must be a power of two).
 * - "Smashed" 1 GiB entries (AMD; Skylake ITLB, which has no 1 GiB array) are keyed by the
 *   2 MiB window of the access but keep the full 1 GiB translation.
 * - If a 4 KiB and a larger entry both cover an address (possible only with stale entries), the
 *   smaller page size is probed first and wins.
 */
import { isPow2 } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { TlbArraySpec } from './tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from './types.js';

const KEY_EMPTY = -1;
/** A probe key that matches nothing (NaN is unequal to everything). */
const KEY_NONE = Number.NaN;
const LEVEL_COUNT_MAX = 3;
/** SMT threads a shared array can tell apart (the tag takes one bit of the key). */
export const TLB_TAGS_MAX = 2;

/** 1 / LEVEL_BYTES[level], by level (exact: the sizes are powers of two). */
const PAGE_SCALE = new Float64Array([0, 1 / LEVEL_BYTES[1], 1 / LEVEL_BYTES[2], 1 / LEVEL_BYTES[3]]);

/**
 * Key of a slot: page number in the key granule times 8, plus 4 x the thread tag (0 or 1), plus
 * the key level (1..3). Exact in a double: a 4 KiB page number of a 48-bit VA is < 2^36.
 */
function keyOf(va: number, keyLevel: LeafLevel, tag: number): number {
  // va * 2^-k is exactly va / 2^k (a power-of-two scale), and a multiply is several times cheaper
  // than a divide on every TLB lookup and fill.
  return Math.floor(va * PAGE_SCALE[keyLevel]) * 8 + tag * 4 + keyLevel;
}

export function sameValue(a: Translation, b: Translation): boolean {
  return a === b || (a.va === b.va && a.level === b.level && a.pfn === b.pfn && a.flags === b.flags);
}

/** One set-associative array with exact LRU per set, entries tagged by SMT thread. */
export class TlbArray {
  readonly spec: TlbArraySpec;
  readonly sets: number;
  readonly ways: number;
  /** Key level used to hold a translation of level L (index L), 0 when not held. */
  readonly keyLevelFor: Uint8Array;
  /** Tag of the slot the last put() evicted (valid when put returned a translation). */
  evictedTag = 0;
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
  /** Thread tag of each slot (meaningful while the slot is occupied). */
  private readonly slotTags: Uint8Array;
  /** Occupied slots per key level (all tags). */
  private readonly levelCounts: Uint32Array;
  /** Occupied slots per tag. */
  private readonly usedBy: Uint32Array;
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
    this.slotTags = new Uint8Array(spec.entries);
    this.levelCounts = new Uint32Array(LEVEL_COUNT_MAX + 1);
    this.usedBy = new Uint32Array(TLB_TAGS_MAX);
    this.keys = new Float64Array(spec.entries).fill(KEY_EMPTY);
    this.stamps = new Float64Array(spec.entries);
    this.starts = new Float64Array(spec.entries);
    this.ends = new Float64Array(spec.entries);
    this.trans = new Array<Translation | undefined>(spec.entries).fill(undefined);
  }

  /** Occupied slots, all threads. */
  get entryCount(): number {
    return this.used;
  }

  /** Occupied slots of one thread. */
  entryCountOf(tag: number): number {
    return this.usedBy[tag];
  }

  holdsLevel(level: LeafLevel): boolean {
    return this.keyLevelFor[level] !== 0;
  }

  /**
   * Slot index holding a translation for va tagged `tag`, or -1. Touches LRU on a hit. No
   * allocation. Fast path: the slot of the previous hit, valid when its key (which includes the
   * tag) matches and no entry of a smaller page size exists in the array (so the
   * smaller-size-first rule cannot be violated).
   */
  find(va: number, tag: number): number {
    if (this.used === 0) return -1;
    const hintLevel = this.hintLevel;
    if (hintLevel !== 0) {
      const slot = this.hintSlot;
      if (this.keys[slot] === keyOf(va, hintLevel, tag) && this.smallerCount(hintLevel) === 0) {
        this.stamps[slot] = ++this.clock;
        return slot;
      }
    }
    const slot = this.sets === 1 ? this.scanAll(va, tag) : this.probeSets(va, tag);
    if (slot >= 0) {
      this.stamps[slot] = ++this.clock;
      this.hintSlot = slot;
      this.hintLevel = this.slotLevels[slot] as LeafLevel;
    }
    return slot;
  }

  /** Set-associative probe: one set per page size, smallest size first. */
  private probeSets(va: number, tag: number): number {
    const levels = this.probeLevels;
    for (let l = 0; l < levels.length; l++) {
      if (this.levelCounts[levels[l]] === 0) continue; // no slot keyed at this size
      const key = keyOf(va, levels[l], tag);
      const first = this.setOf(key) * this.ways;
      const last = first + this.ways;
      for (let i = first; i < last; i++) {
        if (this.keys[i] === key) return i;
      }
    }
    return -1;
  }

  /** Fully associative probe: one pass comparing every page size's key; smallest size wins. */
  private scanAll(va: number, tag: number): number {
    const k1 = this.keyLevelFor[1] === 1 ? keyOf(va, 1, tag) : KEY_NONE;
    const k2 = this.probesLevel2 ? keyOf(va, 2, tag) : KEY_NONE;
    const k3 = this.keyLevelFor[3] === 3 ? keyOf(va, 3, tag) : KEY_NONE;
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
   * Caches t for thread `tag` after an access at accessVa (which must lie inside t). Returns the
   * translation that left the array (capacity victim, possibly the other thread's, whose tag is
   * then in evictedTag; or a replaced different value), else undefined.
   */
  put(t: Translation, accessVa: number, tag: number): Translation | undefined {
    const keyLevel = this.keyLevelFor[t.level];
    // The message is built only on failure: put runs on every TLB fill.
    if (keyLevel === 0) assert(false, `${this.spec.name} does not hold level ${t.level}`);
    const key = keyOf(keyLevel === t.level ? t.va : accessVa, keyLevel as LeafLevel, tag);
    const first = this.setOf(key) * this.ways;
    const last = first + this.ways;
    let victim = -1;
    let victimStamp = Number.POSITIVE_INFINITY;
    for (let i = first; i < last; i++) {
      const k = this.keys[i];
      if (k === key) {
        const old = this.trans[i]!;
        this.evictedTag = tag;
        this.fill(i, key, keyLevel as LeafLevel, t, tag);
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
    this.evictedTag = this.slotTags[victim];
    this.fill(victim, key, keyLevel as LeafLevel, t, tag);
    return evicted;
  }

  /** Does any slot of thread `tag` hold a translation equal in value to t? */
  holdsValue(t: Translation, tag: number): boolean {
    const keyLevel = this.keyLevelFor[t.level];
    if (keyLevel === 0 || this.usedBy[tag] === 0) return false;
    if (keyLevel === t.level) {
      const key = keyOf(t.va, t.level, tag);
      const first = this.setOf(key) * this.ways;
      for (let i = first; i < first + this.ways; i++) {
        if (this.keys[i] === key && sameValue(this.trans[i]!, t)) return true;
      }
      return false;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.slotTags[i] === tag && sameValue(this.trans[i]!, t)) return true;
    }
    return false;
  }

  /** Drops every slot of thread `tag` whose translation overlaps [startVa, endVa); returns how many. */
  dropRange(startVa: number, endVa: number, tag: number): number {
    if (this.usedBy[tag] === 0) return 0;
    if (this.probeable(startVa, endVa)) return this.probeRange(startVa, endVa, null, tag);
    let count = 0;
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.slotTags[i] === tag && this.overlaps(i, startVa, endVa)) {
        this.clear(i);
        count++;
      }
    }
    return count;
  }

  /**
   * Drops every slot of thread `tag`. When no other thread has entries here only the keys are
   * cleared: a slot's translation, level and stamp are read only while its key is set, so they
   * need no reset (the references they keep are bounded by the array size). Flushes are frequent
   * (every flush_tlb_all, every full local flush).
   */
  dropAll(tag: number): number {
    const count = this.usedBy[tag];
    if (count === 0) return 0;
    if (count === this.used) {
      this.keys.fill(KEY_EMPTY);
      this.levelCounts.fill(0);
      this.usedBy.fill(0);
      this.used = 0;
      this.smashed = 0;
      return count;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.slotTags[i] === tag) this.clear(i);
    }
    return count;
  }

  /** Appends the translations of thread `tag` overlapping [startVa, endVa) to out. */
  collectRange(startVa: number, endVa: number, out: Translation[], tag: number): void {
    if (this.usedBy[tag] === 0) return;
    if (this.probeable(startVa, endVa)) {
      this.probeRange(startVa, endVa, out, tag);
      return;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] !== KEY_EMPTY && this.slotTags[i] === tag && this.overlaps(i, startVa, endVa)) {
        out.push(this.trans[i]!);
      }
    }
  }

  private overlaps(slot: number, startVa: number, endVa: number): boolean {
    return this.starts[slot] < endVa && this.ends[slot] > startVa;
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
  private probeRange(startVa: number, endVa: number, out: Translation[] | null, tag: number): number {
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
          if (this.keys[i] === KEY_EMPTY || this.slotLevels[i] !== level || this.slotTags[i] !== tag)
            continue;
          if (!this.overlaps(i, startVa, endVa)) continue;
          if (out === null) this.clear(i);
          else out.push(this.trans[i]!);
          count++;
        }
      }
    }
    return count;
  }

  private setOf(key: number): number {
    // key / 8 is the page number plus a fraction; its low bits survive ToUint32 since sets <= 2^31.
    return ((key / 8) >>> 0) & (this.sets - 1);
  }

  private fill(slot: number, key: number, keyLevel: LeafLevel, t: Translation, tag: number): void {
    if (this.keys[slot] === KEY_EMPTY) this.used++;
    else {
      this.levelCounts[this.slotLevels[slot]]--;
      this.usedBy[this.slotTags[slot]]--;
      if (this.trans[slot]!.level !== this.slotLevels[slot]) this.smashed--;
    }
    if (t.level !== keyLevel) this.smashed++;
    this.levelCounts[keyLevel]++;
    this.usedBy[tag]++;
    this.keys[slot] = key;
    this.slotLevels[slot] = keyLevel;
    this.slotTags[slot] = tag;
    this.stamps[slot] = ++this.clock;
    this.starts[slot] = t.va;
    this.ends[slot] = t.va + LEVEL_BYTES[t.level];
    this.trans[slot] = t;
  }

  private clear(slot: number): void {
    this.levelCounts[this.slotLevels[slot]]--;
    this.usedBy[this.slotTags[slot]]--;
    if (this.trans[slot]!.level !== this.slotLevels[slot]) this.smashed--;
    this.keys[slot] = KEY_EMPTY;
    this.slotLevels[slot] = 0;
    this.trans[slot] = undefined;
    this.used--;
  }
}
