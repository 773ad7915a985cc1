/**
 * The free-space structure of one pool: TLSF (two-level segregated fit) over granule runs in
 * fixed-size blocks, with boundary tags in side tables.
 *
 * Why TLSF and not a bitmap or an address-ordered tree:
 * - bpf_prog_pack finds space with `bitmap_find_next_zero_area()` over 64 B chunks, pack by
 *   pack in list order (kernel/bpf/core.c); the execmem ROX cache walks a maple tree of free
 *   areas first-fit (mm/execmem.c execmem_cache_alloc_locked). Both cost grows with the number of
 *   packs / free areas, i.e. with fragmentation and with the live set. Issue 3 asks for cost
 *   independent of both. TLSF gives O(1) alloc and free: a free run of `n` granules sits in the
 *   list of class (fl, sl) where fl = floor(log2 n) and sl the next 4 bits; a search rounds the
 *   request up to a class boundary and finds the first non-empty class at or above it with two
 *   bitmap look-ups (`Math.clz32`), so any run found fits ("good fit", no list walk).
 * - Song Liu argued a tree beats a bitmap partly because "free needs no size"
 *   (CAPhsuW7Yk4bDFiAxbiGnpUfy-dEwO=dY-D5dQtzwu6fcy3zDCg@mail.gmail.com); boundary tags give the
 *   same: the run length is stored at both ends of every run, so free recovers the size and
 *   coalesces with both neighbours immediately, in O(1).
 * - Metadata never lives in executable memory (DESIGN.md rule 10): the tags, the run-start
 *   bitmap and the free-list links are typed arrays per block, outside the block.
 *
 * Encoding, per block of `blockGranules` granules:
 *   tags[g]   at the first and last granule of every run: +len (used) or -len (free);
 *   starts    one bit per granule, set exactly at run starts (lets an interior address find
 *             its run by scanning back over bitmap words: bounded by the run's own length);
 *   next/prev free-list links, meaningful at free-run starts (node ids, -1 = none);
 *   kinds[g]  one caller byte per used run start (execmem keeps the type index and flags there).
 * A node id is `slot * blockGranules + granule` (< 2^31, asserted), so links are plain int32.
 * Runs never cross block boundaries, so whole blocks can be returned (shrink) independently.
 */
import { assert } from '../base/assert.js';

const SL_BITS = 4;
const SL_COUNT = 1 << SL_BITS;
/** Explicit limit: node ids must fit in int32. */
const NODE_ID_LIMIT = 2 ** 31;

function ctz(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/** Class index for inserting a free run of `size` granules (size >= 1). */
function classOf(size: number): number {
  const f = 31 - Math.clz32(size);
  if (f < SL_BITS) return size;
  return (f - SL_BITS + 1) * SL_COUNT + ((size >>> (f - SL_BITS)) & (SL_COUNT - 1));
}

/** Class index to search from: every run in this class or above holds at least `size` granules. */
function searchClassOf(size: number): number {
  const f = 31 - Math.clz32(size);
  return classOf(f < SL_BITS ? size : size + (1 << (f - SL_BITS)) - 1);
}

export class Heap {
  readonly granuleBytes: number;
  readonly blockGranules: number;
  readonly maxSlots: number;
  private readonly blockShift: number;
  private readonly flCount: number;
  private flBitmap = 0;
  private readonly slBitmap: Uint32Array;
  private readonly heads: Int32Array;
  private readonly tags: (Int32Array | undefined)[] = [];
  private readonly starts: (Uint32Array | undefined)[] = [];
  private readonly next: (Int32Array | undefined)[] = [];
  private readonly prev: (Int32Array | undefined)[] = [];
  private readonly kinds: (Uint8Array | undefined)[] = [];
  private readonly liveRuns: number[] = [];
  private readonly freeSlots: number[] = [];
  private slotCount = 0;
  /** Totals over all blocks, in granules. */
  freeGranules = 0;
  usedGranules = 0;
  blockCount = 0;

  constructor(granuleBytes: number, blockBytes: number, maxSlots: number) {
    assert(
      granuleBytes >= 1 && 2 ** Math.round(Math.log2(granuleBytes)) === granuleBytes,
      'granule: power of two',
    );
    assert(blockBytes % granuleBytes === 0, 'block must be a whole number of granules');
    this.granuleBytes = granuleBytes;
    this.blockGranules = blockBytes / granuleBytes;
    this.blockShift = Math.round(Math.log2(this.blockGranules));
    assert(2 ** this.blockShift === this.blockGranules, 'granules per block: power of two');
    assert(maxSlots >= 1 && maxSlots * this.blockGranules <= NODE_ID_LIMIT, 'node ids must fit in int32');
    this.maxSlots = maxSlots;
    this.flCount = Math.max(1, this.blockShift - SL_BITS + 2);
    this.slBitmap = new Uint32Array(this.flCount);
    this.heads = new Int32Array(this.flCount * SL_COUNT).fill(-1);
  }

  /** Side-table bytes one block costs (reported by stats and the benchmark). */
  metadataBytesPerBlock(): number {
    return this.blockGranules * (4 + 4 + 4 + 1) + this.blockGranules / 8;
  }

  // ---- blocks ----

  hasFreeSlot(): boolean {
    return this.freeSlots.length > 0 || this.slotCount < this.maxSlots;
  }

  /** Register a new block as one free run; returns its slot. */
  addBlock(): number {
    assert(this.hasFreeSlot(), 'heap slot limit reached');
    const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.slotCount++;
    const n = this.blockGranules;
    this.tags[slot] = new Int32Array(n);
    this.starts[slot] = new Uint32Array(Math.max(1, n >>> 5));
    this.next[slot] = new Int32Array(n);
    this.prev[slot] = new Int32Array(n);
    this.kinds[slot] = new Uint8Array(n);
    this.liveRuns[slot] = 0;
    this.blockCount++;
    this.setStart(slot, 0);
    this.insertRun(slot, 0, n);
    return slot;
  }

  /** Remove a block that holds no live run. */
  removeBlock(slot: number): void {
    assert(this.isBlockEmpty(slot), 'removeBlock: block still has live runs');
    this.removeRun(slot, 0, this.blockGranules);
    this.tags[slot] = undefined;
    this.starts[slot] = undefined;
    this.next[slot] = undefined;
    this.prev[slot] = undefined;
    this.kinds[slot] = undefined;
    this.freeSlots.push(slot);
    this.blockCount--;
  }

  isBlockEmpty(slot: number): boolean {
    return this.tags[slot] !== undefined && this.liveRuns[slot] === 0;
  }

  liveRunCount(slot: number): number {
    return this.liveRuns[slot];
  }

  // ---- nodes ----

  nodeOf(slot: number, granule: number): number {
    return slot * this.blockGranules + granule;
  }

  slotOfNode(node: number): number {
    return node >>> this.blockShift;
  }

  granuleOfNode(node: number): number {
    return node & (this.blockGranules - 1);
  }

  // ---- alloc / free ----

  /**
   * Allocate `granules` (1..blockGranules) aligned to `alignGranules` (a power of two) relative to
   * the block start; returns the node id of the run, or -1 when no free run fits. O(1).
   */
  alloc(granules: number, alignGranules: number, kind: number): number {
    const n = granules;
    assert(n >= 1 && n <= this.blockGranules, 'alloc: granule count out of range');
    const searchSize = Math.min(this.blockGranules, n + alignGranules - 1);
    const found = this.findClass(searchClassOf(searchSize));
    if (found < 0) return -1;
    const slot = found >>> this.blockShift;
    const g = found & (this.blockGranules - 1);
    const tags = this.tags[slot]!;
    const len = -tags[g];
    assert(len >= searchSize, 'alloc: class search returned a run too small');
    this.removeRun(slot, g, len);
    const start = (g + alignGranules - 1) & ~(alignGranules - 1);
    const lead = start - g;
    assert(lead + n <= len, 'alloc: aligned run does not fit');
    if (lead > 0) {
      this.insertRun(slot, g, lead);
      this.setStart(slot, start);
    }
    const tail = len - lead - n;
    if (tail > 0) {
      this.setStart(slot, start + n);
      this.insertRun(slot, start + n, tail);
    }
    tags[start] = n;
    tags[start + n - 1] = n;
    this.kinds[slot]![start] = kind;
    this.usedGranules += n;
    this.liveRuns[slot]++;
    return slot * this.blockGranules + start;
  }

  /** Free the used run starting at `granule` of `slot`; coalesces with both neighbours. Returns its length. */
  free(slot: number, granule: number): number {
    const tags = this.tags[slot]!;
    const n = tags[granule];
    assert(n > 0 && this.isStart(slot, granule), 'free: not a used run start');
    this.usedGranules -= n;
    this.liveRuns[slot]--;
    let start = granule;
    let len = n;
    const after = granule + n;
    if (after < this.blockGranules && tags[after] < 0) {
      const l2 = -tags[after];
      this.removeRun(slot, after, l2);
      this.clearStart(slot, after);
      len += l2;
    }
    if (granule > 0 && tags[granule - 1] < 0) {
      const l1 = -tags[granule - 1];
      start = granule - l1;
      this.removeRun(slot, start, l1);
      this.clearStart(slot, granule);
      len += l1;
    }
    this.insertRun(slot, start, len);
    return n;
  }

  // ---- queries ----

  /** Signed tag at a run start: +len used, -len free. Only meaningful where isStart(). */
  tagAt(slot: number, granule: number): number {
    return this.tags[slot]![granule];
  }

  kindAt(slot: number, granule: number): number {
    return this.kinds[slot]![granule];
  }

  setKind(slot: number, granule: number, kind: number): void {
    this.kinds[slot]![granule] = kind;
  }

  isStart(slot: number, granule: number): boolean {
    return (this.starts[slot]![granule >>> 5] & (1 << (granule & 31))) !== 0;
  }

  /**
   * The start of the run containing `granule`. Scans back over the run-start bitmap a word at a
   * time: the cost is bounded by the containing run's length / 32, never by other runs.
   */
  runStartOf(slot: number, granule: number): number {
    const starts = this.starts[slot]!;
    let w = granule >>> 5;
    const b = granule & 31;
    let bits = starts[w] & (b === 31 ? -1 : (1 << (b + 1)) - 1);
    while (bits === 0) {
      w--;
      assert(w >= 0, 'runStartOf: granule 0 must be a run start');
      bits = starts[w];
    }
    return w * 32 + 31 - Math.clz32(bits);
  }

  /** Largest free run, in granules (stats only: walks the list of the highest non-empty class). */
  largestFreeGranules(): number {
    if (this.flBitmap === 0) return 0;
    const fl = 31 - Math.clz32(this.flBitmap);
    const sl = 31 - Math.clz32(this.slBitmap[fl]);
    let best = 0;
    for (let node = this.heads[fl * SL_COUNT + sl]; node >= 0; ) {
      const slot = node >>> this.blockShift;
      const g = node & (this.blockGranules - 1);
      best = Math.max(best, -this.tags[slot]![g]);
      node = this.next[slot]![g];
    }
    return best;
  }

  /** Visit every run of a block in address order (tests, audits, stats). */
  forEachRun(slot: number, fn: (granule: number, len: number, used: boolean) => void): void {
    const tags = this.tags[slot]!;
    for (let g = 0; g < this.blockGranules; ) {
      const t = tags[g];
      const len = t > 0 ? t : -t;
      fn(g, len, t > 0);
      g += len;
    }
  }

  /** Live slots (tests, stats, shrink). */
  slots(): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.slotCount; s++) if (this.tags[s] !== undefined) out.push(s);
    return out;
  }

  /** Full consistency check of every structure (tests only; O(everything)). */
  audit(): void {
    let free = 0;
    let used = 0;
    let listed = 0;
    for (const slot of this.slots()) {
      const tags = this.tags[slot]!;
      let prevFree = false;
      let runs = 0;
      for (let g = 0; g < this.blockGranules; ) {
        const t = tags[g];
        assert(t !== 0, `audit: zero tag at run start ${slot}:${g}`);
        const len = Math.abs(t);
        assert(g + len <= this.blockGranules, 'audit: run crosses block end');
        assert(tags[g + len - 1] === t, `audit: end tag mismatch at ${slot}:${g}`);
        assert(this.isStart(slot, g), `audit: start bit missing at ${slot}:${g}`);
        for (let i = g + 1; i < g + len; i++)
          assert(!this.isStart(slot, i), `audit: stray start bit ${slot}:${i}`);
        if (t < 0) {
          assert(!prevFree, `audit: adjacent free runs at ${slot}:${g}`);
          free += len;
        } else {
          used += len;
          runs++;
        }
        prevFree = t < 0;
        g += len;
      }
      assert(runs === this.liveRuns[slot], 'audit: live run count mismatch');
    }
    for (let fl = 0; fl < this.flCount; fl++) {
      for (let sl = 0; sl < SL_COUNT; sl++) {
        const idx = fl * SL_COUNT + sl;
        const nonEmpty = this.heads[idx] >= 0;
        assert(nonEmpty === ((this.slBitmap[fl] & (1 << sl)) !== 0), 'audit: sl bitmap mismatch');
        let p = -1;
        for (let node = this.heads[idx]; node >= 0; ) {
          const slot = node >>> this.blockShift;
          const g = node & (this.blockGranules - 1);
          assert(this.tags[slot]![g] < 0, 'audit: used run on a free list');
          assert(classOf(-this.tags[slot]![g]) === idx, 'audit: run in the wrong class');
          assert(this.prev[slot]![g] === p, 'audit: broken prev link');
          listed += -this.tags[slot]![g];
          p = node;
          node = this.next[slot]![g];
        }
      }
      assert((this.slBitmap[fl] !== 0) === ((this.flBitmap & (1 << fl)) !== 0), 'audit: fl bitmap mismatch');
    }
    assert(free === this.freeGranules && listed === free, 'audit: free granule accounting');
    assert(used === this.usedGranules, 'audit: used granule accounting');
  }

  // ---- internals ----

  private findClass(idx: number): number {
    let fl = idx >>> SL_BITS;
    if (fl >= this.flCount) return -1;
    let slMap = this.slBitmap[fl] & (-1 << (idx & (SL_COUNT - 1)));
    if (slMap === 0) {
      const flMap = fl + 1 < 32 ? this.flBitmap & (-1 << (fl + 1)) : 0;
      if (flMap === 0) return -1;
      fl = ctz(flMap);
      slMap = this.slBitmap[fl];
    }
    return this.heads[fl * SL_COUNT + ctz(slMap)];
  }

  private insertRun(slot: number, g: number, len: number): void {
    const tags = this.tags[slot]!;
    tags[g] = -len;
    tags[g + len - 1] = -len;
    const idx = classOf(len);
    const head = this.heads[idx];
    this.next[slot]![g] = head;
    this.prev[slot]![g] = -1;
    const node = slot * this.blockGranules + g;
    if (head >= 0) this.prev[head >>> this.blockShift]![head & (this.blockGranules - 1)] = node;
    this.heads[idx] = node;
    this.slBitmap[idx >>> SL_BITS] |= 1 << (idx & (SL_COUNT - 1));
    this.flBitmap |= 1 << (idx >>> SL_BITS);
    this.freeGranules += len;
  }

  private removeRun(slot: number, g: number, len: number): void {
    const idx = classOf(len);
    const n = this.next[slot]![g];
    const p = this.prev[slot]![g];
    if (p >= 0) this.next[p >>> this.blockShift]![p & (this.blockGranules - 1)] = n;
    else this.heads[idx] = n;
    if (n >= 0) this.prev[n >>> this.blockShift]![n & (this.blockGranules - 1)] = p;
    if (this.heads[idx] < 0) {
      const fl = idx >>> SL_BITS;
      this.slBitmap[fl] &= ~(1 << (idx & (SL_COUNT - 1)));
      if (this.slBitmap[fl] === 0) this.flBitmap &= ~(1 << fl);
    }
    this.freeGranules -= len;
  }

  private setStart(slot: number, g: number): void {
    this.starts[slot]![g >>> 5] |= 1 << (g & 31);
  }

  private clearStart(slot: number, g: number): void {
    this.starts[slot]![g >>> 5] &= ~(1 << (g & 31));
  }
}
