/**
 * The free-space structure of one pool: TLSF (two-level segregated fit) over granule runs in
 * fixed-size blocks, with boundary tags in side tables.
 *
 * Why TLSF and not a bitmap or an address-ordered tree:
 * - bpf_prog_pack finds space with `bitmap_find_next_zero_area()` over 64 B chunks, pack by
 *   pack in list order (kernel/bpf/core.c); the execmem ROX cache walks a maple tree of free
 *   areas first-fit (mm/execmem.c execmem_cache_alloc_locked). Both costs grow with the number of
 *   packs / free areas, i.e. with fragmentation and with the live set. Issue 3 asks for cost
 *   independent of both. TLSF gives O(1) alloc and free: a free run of `n` granules sits in the
 *   list of class (fl, sl) where fl = floor(log2 n) and sl the next 4 bits; a search rounds the
 *   request up to a class boundary and finds the first non-empty class at or above it with two
 *   bitmap look-ups (`Math.clz32`), so any run found fits ("good fit", no list walk). Before
 *   that, up to FIT_PROBES runs of the request's own class are tried: plain TLSF never uses
 *   same-class holes, and on the BPF churn of bench/execmem.ts that is where memory was lost
 *   (mapped/requested 1.29 without the probe, 1.21 with it).
 * - Song Liu argued a tree beats a bitmap partly because "free needs no size"
 *   (CAPhsuW7Yk4bDFiAxbiGnpUfy-dEwO=dY-D5dQtzwu6fcy3zDCg@mail.gmail.com); boundary tags give the
 *   same: every run is findable from both of its ends, so free recovers the size and coalesces
 *   with both neighbours immediately, in O(1).
 * - Metadata never lives in executable memory (DESIGN.md rule 10): everything here is typed
 *   arrays outside the blocks.
 *
 * Layout, chosen by measurement (bench/execmem.ts; issue 3 wants 100k live objects within 2x of
 * 1k): each run has a descriptor in one dense pool (start, signed length: +used / -free, slot,
 * free-list links or the caller's kind, and links to its physical neighbours in the block, which
 * are the boundary tags: free coalesces by following them). A hash map from run start to
 * descriptor (PosMap) serves locate(), and a small owner table per block bounds look-ups of
 * inner addresses. All of it scales with the number of runs, not with granules (about 59 B per
 * run: 6.6 MB at 100k live objects), where per-granule arrays (the first version: 420 KiB per
 * 2 MiB block) ran 2-3x slower.
 * Runs never cross block boundaries, so whole blocks can be returned (shrink) independently.
 * Where the time goes at 100k live (fake backend, shared 2-core VM): the work per op is constant
 * (same-class probes average 1.3 per op), the time is cache misses. A pointer-chasing test on
 * this VM costs 18-24 ns per load over up to 4 MiB and 137-199 ns over 6-16 MiB, whatever
 * lscpu says of a 32 MiB L3, and the same on 2 MiB huge pages (madvise through koffi), so it is
 * cache, not TLB. Layouts tried in a heap-only harness (engineer H14; ns/op at 1k -> 100k, best
 * of 15, metadata at 100k): this one 244 -> 562 (6.6 MB); per-block arenas with 16-bit fields
 * and per-block free lists 271 -> 413 (3.8 MB); the run's fields stored in the hash entry
 * 460 -> 596 (2.8 MB, but 1.8x slower at 1k). Block-local layout alone (32-bit fields), padding
 * descriptors to 32 B and huge pages gave nothing. In execmem's own benchmark the best of these
 * moved the 100k/1k ratio from 0.35-0.45 to 0.38-0.47 (the driver's arrays, the backend and the
 * rest of execmem share the same few MiB of cache), too little for a second heap layout with
 * 16-bit limits, so this one stays.
 *
 * Placement across blocks: TLSF good fit, but over two block classes. Small requests (below
 * `smallGranules`; execmem uses 2 KiB) are served from SMALL blocks first, then from holes in
 * LARGE blocks; large requests only from LARGE blocks, and an empty block of the other class is
 * re-classed before the caller maps a new one. Each class has its own TLSF lists, so every search
 * stays O(1). Why: small objects dropped into the holes large ones leave behind cut them into
 * pieces no large request fits, and the heap grows. Measured (bench/execmem.ts, BPF churn, fake
 * backend), mapped / requested after shrink: 2M ops at 100k live 1.122 -> 1.055 (time-average
 * 1.101 -> 1.055); 200k ops at 10k live, seeds 1-6, mean 1.192 -> 1.151 (seed 23 stays 1.207: at
 * 10k live the figure moves by one 2 MiB block, 4%, with where the churn stops, because blocks
 * mapped at a peak of the random walk of requested bytes stay mapped). The split starts only
 * once a heap has `splitMinBlocks` blocks (execmem: 16): in a heap of a few blocks, a block of
 * its own for small objects costs more than it saves.
 * Before the split, engineer A2 replayed the 10k churn (seed 23) through an exact, deliberately
 * non-O(1) placement simulator (a throwaway script, not in the repo) over one class; mapped /
 * requested after shrink and its time-average: this TLSF 1.207 / 1.170; exact best fit 1.207 /
 * 1.170; lowest block first, best fit inside it 1.207 / 1.259; fullest block first 1.466 / 1.406;
 * address-ordered first fit 1.250 / 1.259; best fit with large objects from the top of runs
 * 1.207 / 1.150. Frees hit random live objects, not old ones, so no block drains under any
 * placement; an ideal packing that could move objects would reach 1.078 on that run.
 */
import { assert } from '../base/assert.js';

/**
 * Block classes: SMALL blocks take only requests below `smallGranules`; LARGE blocks take the
 * rest, and small requests too when no SMALL block has room (see the header).
 */
export type BlockClass = 0 | 1;
export const SMALL: BlockClass = 0;
export const LARGE: BlockClass = 1;
const BLOCK_CLASSES = 2;
const SL_BITS = 4;
const SL_COUNT = 1 << SL_BITS;
/** Runs of the request's own class examined before moving to a larger class (bounded work). */
const FIT_PROBES = 8;
/** Descriptor fields (int32 each), interleaved so one run's fields share a cache line. */
const D_START = 0;
const D_LEN = 1; // +len used, -len free
const D_SLOT = 2; // -1 when the descriptor is unused
const D_NEXT = 3; // free: next descriptor in the class list (-1 none); used: caller kind
const D_PREV = 4;
const D_PNEXT = 5; // physically next run in the block (-1 none)
const D_PPREV = 6; // physically previous run in the block (-1 none)
const D_STRIDE = 7;
/** Granules per owner-table entry: bounds the interior look-up of update() at an inner address. */
const OWNER_SPAN = 64;
/** Explicit limits. */
const MAX_DESCRIPTORS = 2 ** 26;
const INITIAL_DESCRIPTORS = 1024;

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

/**
 * Open-addressing hash map from a run start position (slot * blockGranules + granule) to a
 * descriptor id: linear probing, backward-shift deletion (no tombstones), load factor <= 1/2,
 * doubling when full (an O(entries) rehash, amortised over as many inserts). Its size follows the
 * number of runs, not the number of granules, so it stays cache-resident where a per-granule
 * array of the same information does not.
 */
class PosMap {
  private slots: Int32Array; // interleaved [key, value]; key -1 = empty
  private mask: number;
  private bits: number;
  size = 0;

  constructor(bits: number) {
    this.bits = bits;
    this.mask = (1 << bits) - 1;
    this.slots = new Int32Array(2 << bits).fill(-1);
  }

  byteLength(): number {
    return this.slots.byteLength;
  }

  get(key: number): number {
    const t = this.slots;
    for (let i = this.home(key); ; i = (i + 1) & this.mask) {
      const k = t[2 * i];
      if (k === key) return t[2 * i + 1];
      if (k < 0) return -1;
    }
  }

  set(key: number, value: number): void {
    const t = this.slots;
    for (let i = this.home(key); ; i = (i + 1) & this.mask) {
      const k = t[2 * i];
      if (k === key) {
        t[2 * i + 1] = value;
        return;
      }
      if (k < 0) {
        t[2 * i] = key;
        t[2 * i + 1] = value;
        if (++this.size * 2 > this.mask + 1) this.grow();
        return;
      }
    }
  }

  delete(key: number): void {
    const t = this.slots;
    let i = this.home(key);
    for (; ; i = (i + 1) & this.mask) {
      const k = t[2 * i];
      if (k === key) break;
      if (k < 0) return;
    }
    // Backward-shift: move later entries of the cluster into the hole when their home allows.
    for (let j = (i + 1) & this.mask; ; j = (j + 1) & this.mask) {
      const k = t[2 * j];
      if (k < 0) break;
      const h = this.home(k);
      if (((j - h) & this.mask) >= ((j - i) & this.mask)) {
        t[2 * i] = k;
        t[2 * i + 1] = t[2 * j + 1];
        i = j;
      }
    }
    t[2 * i] = -1;
    this.size--;
  }

  private home(key: number): number {
    return Math.imul(key, 0x9e3779b1) >>> (32 - this.bits);
  }

  private grow(): void {
    const old = this.slots;
    this.bits++;
    this.mask = (1 << this.bits) - 1;
    this.slots = new Int32Array(2 << this.bits).fill(-1);
    this.size = 0;
    for (let i = 0; i < old.length; i += 2) if (old[i] >= 0) this.set(old[i], old[i + 1]);
  }
}

export class Heap {
  readonly granuleBytes: number;
  readonly blockGranules: number;
  readonly maxSlots: number;
  private readonly blockShift: number;
  private readonly flCount: number;
  /** Requests of fewer granules than this are small (SMALL class); 0: one class only. */
  readonly smallGranules: number;
  /** Per block class: first-level bitmap, second-level bitmaps, list heads (class-major). */
  private readonly flBitmap = new Uint32Array(BLOCK_CLASSES);
  private readonly slBitmap: Uint32Array;
  private readonly heads: Int32Array;
  /** Block class per slot, and per class a doubly linked list of empty blocks (by slot). */
  private readonly blockClass: Uint8Array;
  private readonly emptyNext: Int32Array;
  private readonly emptyPrev: Int32Array;
  private readonly emptyHead = new Int32Array(BLOCK_CLASSES).fill(-1);
  private readonly classBlocks = new Int32Array(BLOCK_CLASSES);
  /** The small/large split is on (sticky: see updateSplit). */
  private split = false;
  /** Run boundaries (starts and ends) -> descriptor id. */
  private readonly index = new PosMap(10);
  private readonly live: boolean[] = [];
  /** Per block: for each span of OWNER_SPAN granules, the used run last allocated over its start. */
  private readonly owners: (Int32Array | undefined)[] = [];
  private readonly liveRuns: number[] = [];
  private readonly freeSlots: number[] = [];
  private slotCount = 0;
  /** Descriptor pool and its free stack. */
  private d: Int32Array = new Int32Array(INITIAL_DESCRIPTORS * D_STRIDE);
  private freeIds: Int32Array = new Int32Array(INITIAL_DESCRIPTORS);
  private freeIdCount = 0;
  private idHigh = 0;
  /** Free runs examined plus bitmap look-ups made by alloc searches (the work, whatever the cache). */
  searchSteps = 0;
  /** Totals over all blocks, in granules. */
  freeGranules = 0;
  usedGranules = 0;
  blockCount = 0;

  /** The small/large split turns on once the heap has had this many blocks (classFor). */
  readonly splitMinBlocks: number;

  constructor(
    granuleBytes: number,
    blockBytes: number,
    maxSlots: number,
    smallGranules = 0,
    splitMinBlocks = 0,
  ) {
    assert(
      granuleBytes >= 1 && 2 ** Math.round(Math.log2(granuleBytes)) === granuleBytes,
      'granule: power of two',
    );
    assert(blockBytes % granuleBytes === 0, 'block must be a whole number of granules');
    this.granuleBytes = granuleBytes;
    this.blockGranules = blockBytes / granuleBytes;
    this.blockShift = Math.round(Math.log2(this.blockGranules));
    assert(2 ** this.blockShift === this.blockGranules, 'granules per block: power of two');
    assert(maxSlots >= 1 && maxSlots * this.blockGranules <= 2 ** 31, 'positions must fit in int32');
    assert(Number.isInteger(smallGranules) && smallGranules >= 0, 'smallGranules: integer >= 0');
    assert(smallGranules < this.blockGranules, 'smallGranules must be below a block');
    this.maxSlots = maxSlots;
    this.smallGranules = smallGranules;
    assert(Number.isInteger(splitMinBlocks) && splitMinBlocks >= 0, 'splitMinBlocks: integer >= 0');
    this.splitMinBlocks = splitMinBlocks;
    this.flCount = Math.max(1, this.blockShift - SL_BITS + 2);
    this.slBitmap = new Uint32Array(BLOCK_CLASSES * this.flCount);
    this.heads = new Int32Array(BLOCK_CLASSES * this.flCount * SL_COUNT).fill(-1);
    this.blockClass = new Uint8Array(maxSlots);
    this.emptyNext = new Int32Array(maxSlots).fill(-1);
    this.emptyPrev = new Int32Array(maxSlots).fill(-1);
    this.updateSplit();
  }

  /**
   * Block class a request of `granules` is placed by, and the class of the block to map when it
   * found no room: SMALL for a small request once the split is on (the heap has had
   * `splitMinBlocks` blocks), else LARGE. Below that size a heap keeps everything together,
   * because a block of its own for small objects would cost more mapped memory than the holes it
   * saves (a pool of a few blocks).
   */
  classFor(granules: number): BlockClass {
    return this.split && granules < this.smallGranules ? SMALL : LARGE;
  }

  /**
   * Turn the split on, for good, once the heap has `splitMinBlocks` blocks: the SMALL blocks'
   * last, partly filled block is a cost every heap pays, the holes it saves a gain only heaps with
   * frees see, so it pays where one block is a small share of the heap.
   */
  private updateSplit(): void {
    if (this.split || this.smallGranules === 0) return;
    if (this.blockCount >= this.splitMinBlocks) this.split = true;
  }

  /** Class of the block in `slot` (tests, stats). */
  classOfBlock(slot: number): BlockClass {
    assert(this.live[slot] === true, 'classOfBlock: no such block');
    return this.blockClass[slot] as BlockClass;
  }

  /** Blocks of class `cls` (stats). */
  blockCountOf(cls: BlockClass): number {
    return this.classBlocks[cls];
  }

  /** Side-table bytes: the per-block index plus the descriptor pool (stats, benchmark). */
  metadataBytes(): number {
    const owners = this.blockCount * Math.ceil(this.blockGranules / OWNER_SPAN) * 4;
    return this.index.byteLength() + this.d.byteLength + this.freeIds.byteLength + owners;
  }

  // ---- blocks ----

  hasFreeSlot(): boolean {
    return this.freeSlots.length > 0 || this.slotCount < this.maxSlots;
  }

  /** Register a new block of class `cls` as one free run; returns its slot. */
  addBlock(cls: BlockClass = LARGE): number {
    assert(this.hasFreeSlot(), 'heap slot limit reached');
    assert(cls === SMALL || cls === LARGE, 'addBlock: unknown block class');
    const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.slotCount++;
    this.live[slot] = true;
    this.blockClass[slot] = cls;
    this.classBlocks[cls]++;
    this.pushEmpty(slot);
    this.owners[slot] = new Int32Array(Math.ceil(this.blockGranules / OWNER_SPAN)).fill(-1);
    this.liveRuns[slot] = 0;
    this.blockCount++;
    const id = this.newDescriptor(slot, 0);
    this.d[id * D_STRIDE + D_PNEXT] = -1;
    this.d[id * D_STRIDE + D_PPREV] = -1;
    this.insertRun(id, this.blockGranules);
    this.updateSplit();
    return slot;
  }

  /** Remove a block that holds no live run. */
  removeBlock(slot: number): void {
    assert(this.isBlockEmpty(slot), 'removeBlock: block still has live runs');
    const id = this.runAt(slot, 0);
    assert(id >= 0 && -this.d[id * D_STRIDE + D_LEN] === this.blockGranules, 'removeBlock: not one free run');
    this.removeRun(id);
    this.dropDescriptor(id);
    this.index.delete(this.pos(slot, 0));
    this.unlinkEmpty(slot);
    this.classBlocks[this.blockClass[slot]]--;
    this.live[slot] = false;
    this.owners[slot] = undefined;
    this.freeSlots.push(slot);
    this.blockCount--;
  }

  isBlockEmpty(slot: number): boolean {
    return this.live[slot] === true && this.liveRuns[slot] === 0;
  }

  liveRunCount(slot: number): number {
    return this.liveRuns[slot];
  }

  // ---- positions (slot * blockGranules + granule) ----

  slotOfNode(pos: number): number {
    return pos >>> this.blockShift;
  }

  granuleOfNode(pos: number): number {
    return pos & (this.blockGranules - 1);
  }

  // ---- alloc / free ----

  /**
   * Allocate `granules` (1..blockGranules) aligned to `alignGranules` (a power of two) relative to
   * the block start; returns the position of the run, or -1 when no free run fits. O(1).
   */
  alloc(granules: number, alignGranules: number, kind: number): number {
    const n = granules;
    assert(n >= 1 && n <= this.blockGranules, 'alloc: granule count out of range');
    const searchSize = Math.min(this.blockGranules, n + alignGranules - 1);
    const cls = this.classFor(n);
    let id = this.search(cls, searchSize);
    // Small requests fill holes in large-object blocks when the SMALL blocks are full (the
    // reverse would chop the large holes the split exists to keep); with no SMALL block at all,
    // the heap maps (or re-classes) its first one instead.
    if (id < 0 && cls === SMALL && this.classBlocks[SMALL] > 0) id = this.search(LARGE, searchSize);
    // An empty block of the other class (a spare) is re-classed rather than a new one mapped.
    if (id < 0 && this.reclassEmpty(cls)) id = this.search(cls, searchSize);
    if (id < 0) return -1;
    const d = this.d;
    const at = id * D_STRIDE;
    const slot = d[at + D_SLOT];
    const g = d[at + D_START];
    const len = -d[at + D_LEN];
    assert(len >= searchSize, 'alloc: search returned a run too small');
    this.removeRun(id);
    const start = (g + alignGranules - 1) & ~(alignGranules - 1);
    const lead = start - g;
    assert(lead + n <= len, 'alloc: aligned run does not fit');
    let used = id;
    if (lead > 0) {
      this.insertRun(id, lead);
      used = this.newDescriptor(slot, start);
      this.linkAfter(id, used);
    }
    const tail = len - lead - n;
    if (tail > 0) {
      const t = this.newDescriptor(slot, start + n);
      this.linkAfter(used, t);
      this.insertRun(t, tail);
    }
    this.setUsed(used, n, kind);
    this.usedGranules += n;
    if (this.liveRuns[slot]++ === 0) this.unlinkEmpty(slot);
    return slot * this.blockGranules + start;
  }

  /** Free the used run starting at `granule` of `slot`; coalesces with both neighbours. Returns its length. */
  free(slot: number, granule: number): number {
    let id = this.runAt(slot, granule);
    assert(id >= 0 && this.d[id * D_STRIDE + D_LEN] > 0, 'free: not a used run start');
    const d = this.d;
    const n = d[id * D_STRIDE + D_LEN];
    this.usedGranules -= n;
    if (--this.liveRuns[slot] === 0) this.pushEmpty(slot);
    let len = n;
    const next = d[id * D_STRIDE + D_PNEXT];
    if (next >= 0 && d[next * D_STRIDE + D_LEN] < 0) {
      len -= d[next * D_STRIDE + D_LEN];
      this.removeRun(next);
      this.unlink(next);
      this.index.delete(this.pos(slot, d[next * D_STRIDE + D_START]));
      this.dropDescriptor(next);
    }
    const prev = d[id * D_STRIDE + D_PPREV];
    if (prev >= 0 && d[prev * D_STRIDE + D_LEN] < 0) {
      len -= d[prev * D_STRIDE + D_LEN];
      this.removeRun(prev);
      this.unlink(id);
      this.index.delete(this.pos(slot, granule));
      this.dropDescriptor(id);
      id = prev;
    }
    this.insertRun(id, len);
    return n;
  }

  // ---- queries ----

  /** Descriptor of the run starting at `granule` (used or free), or -1: one look-up for locate(). */
  runIdAt(slot: number, granule: number): number {
    return this.runAt(slot, granule);
  }

  /** Signed length of descriptor `id`: +len used, -len free. */
  lenOf(id: number): number {
    return this.d[id * D_STRIDE + D_LEN];
  }

  /** Caller kind of used descriptor `id`. */
  kindOf(id: number): number {
    return this.d[id * D_STRIDE + D_NEXT];
  }

  /** Is `granule` the start of a run (used or free)? */
  isStart(slot: number, granule: number): boolean {
    return this.runAt(slot, granule) >= 0;
  }

  /** Signed length of the run starting at `granule`: +len used, -len free (0 if not a start). */
  tagAt(slot: number, granule: number): number {
    const id = this.runAt(slot, granule);
    return id < 0 ? 0 : this.d[id * D_STRIDE + D_LEN];
  }

  /** Caller kind of the used run starting at `granule`. */
  kindAt(slot: number, granule: number): number {
    const id = this.runAt(slot, granule);
    assert(id >= 0 && this.d[id * D_STRIDE + D_LEN] > 0, 'kindAt: not a used run start');
    return this.d[id * D_STRIDE + D_NEXT];
  }

  setKind(slot: number, granule: number, kind: number): void {
    const id = this.runAt(slot, granule);
    assert(id >= 0 && this.d[id * D_STRIDE + D_LEN] > 0, 'setKind: not a used run start');
    this.d[id * D_STRIDE + D_NEXT] = kind;
  }

  /**
   * The used run containing `granule`, or -1 when it lies in free space. O(OWNER_SPAN): the
   * owner table names, per span of OWNER_SPAN granules, the used run that covered the span's
   * first granule when it was allocated (believed only if it still covers `granule`); otherwise
   * the containing run starts inside the span, found by stepping back over the start index.
   */
  usedRunCovering(slot: number, granule: number): number {
    const d = this.d;
    const span = Math.floor(granule / OWNER_SPAN);
    const owner = this.owners[slot]![span];
    if (owner >= 0 && this.covers(owner, slot, granule)) return d[owner * D_STRIDE + D_LEN] > 0 ? owner : -1;
    for (let g = granule; g >= span * OWNER_SPAN; g--) {
      const id = this.runAt(slot, g);
      if (id >= 0) return this.covers(id, slot, granule) && d[id * D_STRIDE + D_LEN] > 0 ? id : -1;
    }
    // The run covering the span start also covers `granule`; had it been used, the owner table
    // would name it (it was the last used run written there, since runs never overlap).
    return -1;
  }

  /** First granule of descriptor `id`. */
  startOf(id: number): number {
    return this.d[id * D_STRIDE + D_START];
  }

  /** Largest free run, in granules (stats only: walks the list of the highest non-empty class). */
  largestFreeGranules(): number {
    let best = 0;
    for (let cls = 0; cls < BLOCK_CLASSES; cls++) {
      if (this.flBitmap[cls] === 0) continue;
      const fl = 31 - Math.clz32(this.flBitmap[cls]);
      const sl = 31 - Math.clz32(this.slBitmap[cls * this.flCount + fl]);
      const head = this.heads[(cls * this.flCount + fl) * SL_COUNT + sl];
      for (let id = head; id >= 0; id = this.d[id * D_STRIDE + D_NEXT]) {
        best = Math.max(best, -this.d[id * D_STRIDE + D_LEN]);
      }
    }
    return best;
  }

  /** Visit every run of a block in address order (tests, audits, stats). */
  forEachRun(slot: number, fn: (granule: number, len: number, used: boolean) => void): void {
    for (let g = 0; g < this.blockGranules; ) {
      const id = this.runAt(slot, g);
      assert(id >= 0, `forEachRun: no run starts at ${slot}:${g}`);
      const t = this.d[id * D_STRIDE + D_LEN];
      const len = t > 0 ? t : -t;
      fn(g, len, t > 0);
      g += len;
    }
  }

  /** Live slots (tests, stats, shrink). */
  slots(): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.slotCount; s++) if (this.live[s] === true) out.push(s);
    return out;
  }

  /** Full consistency check of every structure (tests only; O(everything)). */
  audit(): void {
    let free = 0;
    let used = 0;
    let listed = 0;
    let described = 0;
    let emptyListed = 0;
    const d = this.d;
    for (const slot of this.slots()) {
      let prevFree = false;
      let runs = 0;
      for (let g = 0; g < this.blockGranules; ) {
        const id = this.runAt(slot, g);
        assert(id >= 0, `audit: no run starts at ${slot}:${g}`);
        described++;
        const t = d[id * D_STRIDE + D_LEN];
        const len = Math.abs(t);
        assert(len > 0 && g + len <= this.blockGranules, 'audit: run length out of range');
        const pn = d[id * D_STRIDE + D_PNEXT];
        if (g + len < this.blockGranules) {
          assert(
            pn >= 0 && d[pn * D_STRIDE + D_START] === g + len,
            `audit: physical next link at ${slot}:${g}`,
          );
          assert(d[pn * D_STRIDE + D_PPREV] === id, `audit: physical prev link after ${slot}:${g}`);
        } else assert(pn === -1, 'audit: last run has a physical next');
        if (g === 0) assert(d[id * D_STRIDE + D_PPREV] === -1, 'audit: first run has a physical prev');
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
    let alive = 0;
    for (let id = 0; id < this.idHigh; id++) if (d[id * D_STRIDE + D_SLOT] >= 0) alive++;
    assert(alive === described, `audit: ${alive} live descriptors for ${described} runs (leak)`);
    assert(this.index.size === described, `audit: ${this.index.size} index entries for ${described} runs`);
    for (let cls = 0; cls < BLOCK_CLASSES; cls++) {
      const flBase = cls * this.flCount;
      for (let fl = 0; fl < this.flCount; fl++) {
        for (let sl = 0; sl < SL_COUNT; sl++) {
          const idx = fl * SL_COUNT + sl;
          const head = this.heads[flBase * SL_COUNT + idx];
          assert(head >= 0 === ((this.slBitmap[flBase + fl] & (1 << sl)) !== 0), 'audit: sl bitmap mismatch');
          let p = -1;
          for (let id = head; id >= 0; id = d[id * D_STRIDE + D_NEXT]) {
            const t = d[id * D_STRIDE + D_LEN];
            assert(t < 0, 'audit: used run on a free list');
            assert(classOf(-t) === idx, 'audit: run in the wrong size class');
            assert(this.blockClass[d[id * D_STRIDE + D_SLOT]] === cls, 'audit: run on the wrong block class');
            assert(d[id * D_STRIDE + D_PREV] === p, 'audit: broken prev link');
            listed += -t;
            p = id;
          }
        }
        const flSet = (this.flBitmap[cls] & (1 << fl)) !== 0;
        assert((this.slBitmap[flBase + fl] !== 0) === flSet, 'audit: fl bitmap mismatch');
      }
      let p = -1;
      for (let slot = this.emptyHead[cls]; slot >= 0; slot = this.emptyNext[slot]) {
        assert(
          this.isBlockEmpty(slot) && this.blockClass[slot] === cls,
          'audit: non-empty block on an empty list',
        );
        assert(this.emptyPrev[slot] === p, 'audit: broken empty-list link');
        emptyListed++;
        p = slot;
      }
    }
    let empty = 0;
    const perClass = [0, 0];
    for (const slot of this.slots()) {
      if (this.liveRuns[slot] === 0) empty++;
      perClass[this.blockClass[slot]]++;
    }
    assert(
      perClass[SMALL] === this.classBlocks[SMALL] && perClass[LARGE] === this.classBlocks[LARGE],
      'audit: block class counts',
    );
    assert(empty === emptyListed, `audit: ${empty} empty blocks, ${emptyListed} on the empty lists`);
    assert(free === this.freeGranules && listed === free, 'audit: free granule accounting');
    assert(used === this.usedGranules, 'audit: used granule accounting');
  }

  // ---- internals ----

  private covers(id: number, slot: number, granule: number): boolean {
    const at = id * D_STRIDE;
    const start = this.d[at + D_START];
    return this.d[at + D_SLOT] === slot && start <= granule && granule < start + Math.abs(this.d[at + D_LEN]);
  }

  /** Descriptor of the run starting at `granule`, or -1. */
  private runAt(slot: number, granule: number): number {
    const id = this.index.get(this.pos(slot, granule));
    if (id < 0) return -1;
    const at = id * D_STRIDE;
    return this.d[at + D_SLOT] === slot && this.d[at + D_START] === granule ? id : -1;
  }

  private pos(slot: number, granule: number): number {
    return slot * this.blockGranules + granule;
  }

  private newDescriptor(slot: number, start: number): number {
    let id: number;
    if (this.freeIdCount > 0) id = this.freeIds[--this.freeIdCount];
    else {
      if (this.idHigh * D_STRIDE >= this.d.length) this.growPool();
      id = this.idHigh++;
    }
    const at = id * D_STRIDE;
    this.d[at + D_START] = start;
    this.d[at + D_SLOT] = slot;
    this.index.set(this.pos(slot, start), id);
    return id;
  }

  private dropDescriptor(id: number): void {
    this.d[id * D_STRIDE + D_SLOT] = -1;
    this.freeIds[this.freeIdCount++] = id;
  }

  private growPool(): void {
    const cap = (this.d.length / D_STRIDE) * 2;
    assert(cap <= MAX_DESCRIPTORS, 'descriptor pool limit reached');
    const d = new Int32Array(cap * D_STRIDE);
    d.set(this.d);
    this.d = d;
    const f = new Int32Array(cap);
    f.set(this.freeIds);
    this.freeIds = f;
  }

  /** Put descriptor `b` physically right after `a`. */
  private linkAfter(a: number, b: number): void {
    const d = this.d;
    const n = d[a * D_STRIDE + D_PNEXT];
    d[b * D_STRIDE + D_PPREV] = a;
    d[b * D_STRIDE + D_PNEXT] = n;
    d[a * D_STRIDE + D_PNEXT] = b;
    if (n >= 0) d[n * D_STRIDE + D_PPREV] = b;
  }

  /** Take descriptor `id` out of its block's physical chain. */
  private unlink(id: number): void {
    const d = this.d;
    const p = d[id * D_STRIDE + D_PPREV];
    const n = d[id * D_STRIDE + D_PNEXT];
    if (p >= 0) d[p * D_STRIDE + D_PNEXT] = n;
    if (n >= 0) d[n * D_STRIDE + D_PPREV] = p;
  }

  /** Mark descriptor `id` as a used run of `len` granules (start already set and indexed). */
  private setUsed(id: number, len: number, kind: number): void {
    const at = id * D_STRIDE;
    const slot = this.d[at + D_SLOT];
    const start = this.d[at + D_START];
    this.d[at + D_LEN] = len;
    this.d[at + D_NEXT] = kind;
    this.d[at + D_PREV] = -1;
    const owners = this.owners[slot]!;
    const last = Math.floor((start + len - 1) / OWNER_SPAN);
    for (let span = Math.ceil(start / OWNER_SPAN); span <= last; span++) owners[span] = id;
  }

  /** A free run of at least `size` granules in blocks of class `cls`, or -1. */
  private search(cls: number, size: number): number {
    const id = this.fitInClass(cls, classOf(size), size);
    return id >= 0 ? id : this.findClass(cls, searchClassOf(size));
  }

  /**
   * Look at the first few runs of the request's own size class (bounded: FIT_PROBES) for one
   * that is large enough; plain TLSF rounds the request up to the next class and never uses these.
   */
  private fitInClass(cls: number, idx: number, size: number): number {
    let id = this.heads[cls * this.flCount * SL_COUNT + idx];
    for (let probes = 0; id >= 0 && probes < FIT_PROBES; probes++) {
      this.searchSteps++;
      if (-this.d[id * D_STRIDE + D_LEN] >= size) return id;
      id = this.d[id * D_STRIDE + D_NEXT];
    }
    return -1;
  }

  private findClass(cls: number, idx: number): number {
    this.searchSteps++;
    let fl = idx >>> SL_BITS;
    if (fl >= this.flCount) return -1;
    const flBase = cls * this.flCount;
    let slMap = this.slBitmap[flBase + fl] & (-1 << (idx & (SL_COUNT - 1)));
    if (slMap === 0) {
      const flMap = fl + 1 < 32 ? this.flBitmap[cls] & (-1 << (fl + 1)) : 0;
      if (flMap === 0) return -1;
      fl = ctz(flMap);
      slMap = this.slBitmap[flBase + fl];
    }
    return this.heads[(flBase + fl) * SL_COUNT + ctz(slMap)];
  }

  /** Make descriptor `id` a free run of `len` granules and push it on its list. */
  private insertRun(id: number, len: number): void {
    const d = this.d;
    const at = id * D_STRIDE;
    d[at + D_LEN] = -len;
    const cls = this.blockClass[d[at + D_SLOT]];
    const idx = classOf(len);
    const flBase = cls * this.flCount;
    const h = flBase * SL_COUNT + idx;
    const head = this.heads[h];
    d[at + D_NEXT] = head;
    d[at + D_PREV] = -1;
    if (head >= 0) d[head * D_STRIDE + D_PREV] = id;
    this.heads[h] = id;
    this.slBitmap[flBase + (idx >>> SL_BITS)] |= 1 << (idx & (SL_COUNT - 1));
    this.flBitmap[cls] |= 1 << (idx >>> SL_BITS);
    this.freeGranules += len;
  }

  /** Unlink the free run `id` from its list (its descriptor stays). */
  private removeRun(id: number): void {
    const d = this.d;
    const at = id * D_STRIDE;
    const len = -d[at + D_LEN];
    const cls = this.blockClass[d[at + D_SLOT]];
    const idx = classOf(len);
    const flBase = cls * this.flCount;
    const h = flBase * SL_COUNT + idx;
    const n = d[at + D_NEXT];
    const p = d[at + D_PREV];
    if (p >= 0) d[p * D_STRIDE + D_NEXT] = n;
    else this.heads[h] = n;
    if (n >= 0) d[n * D_STRIDE + D_PREV] = p;
    if (this.heads[h] < 0) {
      const fl = flBase + (idx >>> SL_BITS);
      this.slBitmap[fl] &= ~(1 << (idx & (SL_COUNT - 1)));
      if (this.slBitmap[fl] === 0) this.flBitmap[cls] &= ~(1 << (idx >>> SL_BITS));
    }
    this.freeGranules -= len;
  }

  // ---- empty blocks, per block class ----

  private pushEmpty(slot: number): void {
    const cls = this.blockClass[slot];
    const head = this.emptyHead[cls];
    this.emptyPrev[slot] = -1;
    this.emptyNext[slot] = head;
    if (head >= 0) this.emptyPrev[head] = slot;
    this.emptyHead[cls] = slot;
  }

  private unlinkEmpty(slot: number): void {
    const p = this.emptyPrev[slot];
    const n = this.emptyNext[slot];
    if (p >= 0) this.emptyNext[p] = n;
    else this.emptyHead[this.blockClass[slot]] = n;
    if (n >= 0) this.emptyPrev[n] = p;
    this.emptyPrev[slot] = -1;
    this.emptyNext[slot] = -1;
  }

  /** Move one empty block of the other class to class `cls`; false when there is none. O(1). */
  private reclassEmpty(cls: number): boolean {
    const slot = this.emptyHead[1 - cls];
    if (slot < 0) return false;
    const id = this.runAt(slot, 0);
    assert(id >= 0 && -this.d[id * D_STRIDE + D_LEN] === this.blockGranules, 'reclass: not one free run');
    this.unlinkEmpty(slot);
    this.removeRun(id);
    this.classBlocks[1 - cls]--;
    this.blockClass[slot] = cls;
    this.classBlocks[cls]++;
    this.insertRun(id, this.blockGranules);
    this.pushEmpty(slot);
    return true;
  }
}
