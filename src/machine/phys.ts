/**
 * Physical memory of the simulated machine: 4 KiB frames, a binary buddy allocator, sparse contents.
 *
 * Why a buddy allocator: every cost the execmem thread argued about starts here. A 2 MiB leaf
 * needs a physically contiguous, 2 MiB-aligned order-9 block, and on long-running systems those
 * run out ("execmem: add fallback for failures in vmalloc(VM_ALLOW_HUGE_VMAP)", see
 * ../shared/research/linux-execmem.md section 2.3), while order-0 pages are always there. Linux's
 * page allocator (mm/page_alloc.c) is a buddy system; we keep its shape: free lists per order,
 * split on allocation (the lower half is handed out, upper halves go back to the lists, so a fresh
 * machine allocates from low addresses), merge with the buddy (pfn ^ (1 << order)) on free.
 * Orders run 0..18 (4 KiB .. 1 GiB) because 1 GiB is the largest leaf; Linux's MAX_PAGE_ORDER is
 * smaller (10), but nothing here depends on that and direct-map 1 GiB leaves are boot-time memblock
 * memory in Linux anyway (modelled: they come from the same pool).
 *
 * Per-frame state lives in typed arrays (16 GiB = 4 Mi frames; never per-frame objects):
 * `freeOrderPlus1[pfn]` is 1 + the order of the free block starting at pfn (0: none),
 * `allocOrderPlus1[pfn]` 1 + the order of the allocated block starting at pfn (0: none; stored
 * plus one so that a new machine's arrays start right as zeroed memory, with no fill of 4 Mi
 * entries per machine), and `next/prev` link free blocks of one order into a doubly linked list,
 * so allocation and free are O(orders).
 *
 * Contents: a frame holds bytes only once written (frame-contents.ts: pfn -> a 4 KiB Buffer);
 * unwritten frames read as zero. Freeing a block drops its contents (as Linux with
 * init_on_free=1 would zero them); this keeps the simulation's memory bounded and runs
 * reproducible. The dropped arrays are kept (up to SPARE_FRAMES_MAX) and handed out again,
 * zeroed where the write that takes them does not cover them, to the next frames written: a compare
 * writes hundreds of MB through short-lived frames, and a fresh 4 KiB array each time was a
 * measurable share of its time (allocation, page faults, GC). A kept array is no longer the
 * contents of any frame; the only other holder of frame arrays, the CPUs' fetch micro-cache
 * (cpu.ts), is dropped by the unmap or flush that comes before every free of a mapped frame.
 *
 * Aging (`age`) is a model, not a replay of a real workload: it pins one order-0 page at a random
 * offset inside a seeded random choice of the currently fully free 2 MiB blocks, so exactly that
 * share of 2 MiB blocks can no longer be formed (the pinned pages stand for page cache and slab
 * pages scattered over a long-running system). Pinned pages are counted (`agedFrameCount`).
 *
 * Fault injection (`injectFailure(order, nth)`) makes the nth next allocation of that order throw
 * ENOMEM before touching anything, like the kernel's fail_page_alloc.
 */
import { Buffer } from 'node:buffer';
import { assert } from '../base/assert.js';
import type { Rng } from '../base/rng.js';
import { MachineError } from './errors.js';
import { FrameContents } from './frame-contents.js';

export const PAGE_BYTES = 4096;
export const MAX_ORDER = 18;
const FRAMES_PER_GIB = 262144;
const NONE = -1;
/** What an unwritten frame reads as (compared against, never written). */
const ZERO_FRAME = Buffer.alloc(PAGE_BYTES);
/** Arrays of freed frames kept for reuse (16 MiB). */
const SPARE_FRAMES_MAX = 4096;

/**
 * frame[off, off + n) === bytes[at, at + n)? (text_poke verifies every byte a copy wrote; most of it
 * is here.) Long runs go to the runtime's memcmp through Buffer#compare's ranges (frames are
 * Buffers for that: no view is made per page), about ten times a JavaScript loop over a 4 KiB
 * page; short ones stay in the loop.
 */
function sameBytes(frame: Buffer, off: number, bytes: Uint8Array, at: number, n: number): boolean {
  if (n >= 64) return frame.compare(bytes, at, at + n, off, off + n) === 0;
  for (let i = 0; i < n; i++) if (frame[off + i] !== bytes[at + i]) return false;
  return true;
}

export class PhysMem {
  readonly totalFrames: number;
  /** Order + 1 of the free block starting at pfn, 0 if none (zero-initialised: a new machine fills nothing). */
  private readonly freeOrderPlus1: Uint8Array;
  /** Order + 1 of the allocated block starting at pfn, 0 if none. */
  private readonly allocOrderPlus1: Uint8Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** Head pfn of each order's free list, or NONE. */
  private readonly heads: Int32Array = new Int32Array(MAX_ORDER + 1).fill(NONE);
  private readonly freeBlocks: Int32Array = new Int32Array(MAX_ORDER + 1);
  private freeFrames = 0;
  private readonly contents: FrameContents;
  /** Arrays of freed frames, for reuse by frameForWrite (see the header). */
  private readonly spare: Buffer[] = [];
  /** Pending injected failures: order -> remaining allocations until the failure (1 = next). */
  private readonly injected = new Map<number, number>();
  private readonly allocCounts: Float64Array = new Float64Array(MAX_ORDER + 1);
  private readonly agedPfns: number[] = [];

  constructor(totalBytes: number) {
    if (!Number.isInteger(totalBytes) || totalBytes <= 0 || totalBytes % 2 ** 30 !== 0) {
      throw new MachineError('EINVAL', `memory size ${totalBytes} is not a positive multiple of 1 GiB`);
    }
    const frames = totalBytes / PAGE_BYTES;
    if (frames > 2 ** 30)
      throw new MachineError('EINVAL', `memory size ${totalBytes} exceeds the 4 TiB limit`);
    this.totalFrames = frames;
    this.contents = new FrameContents(frames);
    // One buffer for the four per-frame arrays (10 bytes a frame: 40 MiB for 16 GiB): above the
    // C library's largest mmap threshold (32 MiB) it is always fresh zero pages, touched only
    // where the buddy lists go, where four separate arrays can be cut from reused heap memory
    // and zeroed first (measured: ~45 ms of every machine's start-up on a worker thread).
    const buffer = new ArrayBuffer(frames * 10);
    this.next = new Int32Array(buffer, 0, frames);
    this.prev = new Int32Array(buffer, frames * 4, frames);
    this.freeOrderPlus1 = new Uint8Array(buffer, frames * 8, frames);
    this.allocOrderPlus1 = new Uint8Array(buffer, frames * 9, frames);
    for (let pfn = frames - FRAMES_PER_GIB; pfn >= 0; pfn -= FRAMES_PER_GIB) this.listPush(pfn, MAX_ORDER);
  }

  /** Allocate 2^order contiguous, naturally aligned frames; returns the first pfn. */
  allocPages(order: number): number {
    this.checkOrder(order);
    const pending = this.injected.get(order);
    if (pending !== undefined) {
      if (pending <= 1) {
        this.injected.delete(order);
        throw new MachineError('ENOMEM', `injected failure of an order-${order} allocation`);
      }
      this.injected.set(order, pending - 1);
    }
    let o = order;
    while (o <= MAX_ORDER && this.heads[o] === NONE) o++;
    if (o > MAX_ORDER) throw new MachineError('ENOMEM', `no free block of order ${order}`);
    const pfn = this.heads[o];
    this.listRemove(pfn, o);
    while (o > order) {
      o--;
      this.listPush(pfn + 2 ** o, o);
    }
    this.allocOrderPlus1[pfn] = order + 1;
    this.allocCounts[order]++;
    return pfn;
  }

  /** Return a block obtained from allocPages(order); merges with free buddies. */
  freePages(pfn: number, order: number): void {
    this.checkOrder(order);
    if (
      !Number.isInteger(pfn) ||
      pfn < 0 ||
      pfn >= this.totalFrames ||
      this.allocOrderPlus1[pfn] !== order + 1
    ) {
      throw new MachineError('EINVAL', `pfn ${pfn} is not the start of an allocated order-${order} block`);
    }
    this.allocOrderPlus1[pfn] = 0;
    const count = 2 ** order;
    if (this.contents.size > 0) this.contents.dropRange(pfn, count, this.spare, SPARE_FRAMES_MAX);
    this.release(pfn, order);
  }

  freeFrameCount(): number {
    return this.freeFrames;
  }

  /** Free blocks per order (a /proc/buddyinfo-like view). */
  buddyInfo(): number[] {
    return Array.from(this.freeBlocks);
  }

  /** How many allocations of this order succeeded over the machine's life (for fault-injection tests). */
  allocCount(order: number): number {
    this.checkOrder(order);
    return this.allocCounts[order];
  }

  /** Is this frame the first of an allocated block (of any order)? */
  allocatedOrderAt(pfn: number): number {
    return this.allocOrderPlus1[pfn] - 1;
  }

  agedFrameCount(): number {
    return this.agedPfns.length;
  }

  readByte(pa: number): number {
    const bytes = this.contents.get(Math.floor(pa / PAGE_BYTES));
    return bytes === undefined ? 0 : bytes[pa % PAGE_BYTES];
  }

  read(pa: number, sizeBytes: number): Uint8Array {
    this.checkRange(pa, sizeBytes);
    const out = new Uint8Array(sizeBytes);
    let done = 0;
    while (done < sizeBytes) {
      const at = pa + done;
      const off = at % PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - off, sizeBytes - done);
      const bytes = this.contents.get((at - off) / PAGE_BYTES);
      if (bytes !== undefined) out.set(bytes.subarray(off, off + n), done);
      done += n;
    }
    return out;
  }

  write(pa: number, bytes: Uint8Array): void {
    this.writeFrom(pa, bytes, 0, bytes.length);
  }

  /** write(pa, src[from, from + sizeBytes)) without a view of the source range (the poke paths). */
  writeFrom(pa: number, src: Uint8Array, from: number, sizeBytes: number): void {
    this.checkRange(pa, sizeBytes);
    assert(from >= 0 && from + sizeBytes <= src.length, 'writeFrom: source range out of bounds');
    let done = 0;
    while (done < sizeBytes) {
      const at = pa + done;
      const off = at % PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - off, sizeBytes - done);
      const frame = this.frameForWrite((at - off) / PAGE_BYTES, off, n);
      const start = from + done;
      frame.set(start === 0 && n === src.length ? src : src.subarray(start, start + n), off);
      done += n;
    }
  }

  /** Fill with a repeating pattern; pattern phase starts at `pa`. */
  fill(pa: number, sizeBytes: number, pattern: Uint8Array): void {
    this.checkRange(pa, sizeBytes);
    if (pattern.length === 0) throw new MachineError('EINVAL', 'empty fill pattern');
    let done = 0;
    while (done < sizeBytes) {
      const at = pa + done;
      const off = at % PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - off, sizeBytes - done);
      const frame = this.frameForWrite((at - off) / PAGE_BYTES, off, n);
      if (pattern.length === 1) frame.fill(pattern[0], off, off + n);
      else {
        let k = done % pattern.length;
        for (let i = off; i < off + n; i++) {
          frame[i] = pattern[k];
          if (++k === pattern.length) k = 0;
        }
      }
      done += n;
    }
  }

  /** Whether [pa, pa + bytes.length) holds exactly `bytes` (unwritten frames read 0). No copy. */
  equals(pa: number, bytes: Uint8Array): boolean {
    return this.equalsFrom(pa, bytes, 0, bytes.length);
  }

  /** equals(pa, src[from, from + sizeBytes)) without a view of the source range. */
  equalsFrom(pa: number, src: Uint8Array, from: number, sizeBytes: number): boolean {
    this.checkRange(pa, sizeBytes);
    assert(from >= 0 && from + sizeBytes <= src.length, 'equalsFrom: source range out of bounds');
    let done = 0;
    while (done < sizeBytes) {
      const at = pa + done;
      const off = at % PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - off, sizeBytes - done);
      const frame = this.contents.get((at - off) / PAGE_BYTES) ?? ZERO_FRAME;
      if (!sameBytes(frame, off, src, from + done, n)) return false;
      done += n;
    }
    return true;
  }

  /** The backing array of a frame if it was ever written since allocation (hot path: no copy). */
  frameBytes(pfn: number): Uint8Array | undefined {
    return this.contents.get(pfn);
  }

  /** Number of frames holding bytes (sparse storage in use). */
  writtenFrameCount(): number {
    return this.contents.size;
  }

  /**
   * Fragment free memory: pin one order-0 page inside round(fraction * n) of the n currently fully
   * free 2 MiB blocks, chosen with `rng`. Afterwards those blocks cannot be allocated at order >= 9.
   */
  age(fraction: number, rng: Rng): void {
    if (!(fraction >= 0 && fraction <= 1))
      throw new MachineError('EINVAL', `aging fraction ${fraction} not in [0, 1]`);
    const candidates: number[] = [];
    for (let o = 9; o <= MAX_ORDER; o++) {
      for (let pfn = this.heads[o]; pfn !== NONE; pfn = this.next[pfn]) {
        for (let i = 0; i < 2 ** (o - 9); i++) candidates.push(pfn + i * 512);
      }
    }
    const pick = Math.round(fraction * candidates.length);
    for (let i = 0; i < pick; i++) {
      const j = rng.int(i, candidates.length - 1);
      const block = candidates[j];
      candidates[j] = candidates[i];
      const pfn = block + rng.int(0, 511);
      this.takeFrame(pfn);
      this.allocOrderPlus1[pfn] = 1;
      this.agedPfns.push(pfn);
    }
  }

  /** Return every page pinned by `age` (undo aging). */
  unage(): void {
    for (const pfn of this.agedPfns) this.freePages(pfn, 0);
    this.agedPfns.length = 0;
  }

  /** Fail the nth next allocation of `order` (1 = the very next). Replaces any pending one for that order. */
  injectFailure(order: number, nth: number): void {
    this.checkOrder(order);
    if (!Number.isInteger(nth) || nth < 1)
      throw new MachineError('EINVAL', `nth must be an integer >= 1, got ${nth}`);
    this.injected.set(order, nth);
  }

  clearInjectedFailures(): void {
    this.injected.clear();
  }

  /** Reserve specific frames at boot (like memblock_reserve for the kernel image). */
  reserve(pfn: number, frameCount: number): void {
    for (let i = 0; i < frameCount; i++) {
      this.takeFrame(pfn + i);
      this.allocOrderPlus1[pfn + i] = 1;
    }
  }

  /** Full consistency check (slow; for tests): free lists, counts and markers agree. */
  check(): void {
    let free = 0;
    const seen = new Uint8Array(this.totalFrames);
    for (let o = 0; o <= MAX_ORDER; o++) {
      let blocks = 0;
      for (let pfn = this.heads[o]; pfn !== NONE; pfn = this.next[pfn]) {
        assert(
          this.freeOrderPlus1[pfn] === o + 1,
          `free list ${o} holds pfn ${pfn} marked ${this.freeOrderPlus1[pfn] - 1}`,
        );
        assert(pfn % 2 ** o === 0, `free block ${pfn} misaligned for order ${o}`);
        for (let i = 0; i < 2 ** o; i++) {
          assert(seen[pfn + i] === 0, `frame ${pfn + i} in two free blocks`);
          seen[pfn + i] = 1;
        }
        blocks++;
      }
      assert(blocks === this.freeBlocks[o], `free block count of order ${o} drifted`);
      free += blocks * 2 ** o;
    }
    assert(free === this.freeFrames, `free frame count drifted: ${free} vs ${this.freeFrames}`);
    for (let pfn = 0; pfn < this.totalFrames; pfn++) {
      const o = this.allocOrderPlus1[pfn] - 1;
      if (o === NONE) continue;
      for (let i = 0; i < 2 ** o; i++)
        assert(seen[pfn + i] === 0, `frame ${pfn + i} both free and allocated`);
    }
  }

  /** Remove one specific free frame from the free lists (splitting its block). */
  private takeFrame(pfn: number): void {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.totalFrames) {
      throw new MachineError('EINVAL', `pfn ${pfn} out of range`);
    }
    let o = 0;
    let head = pfn;
    while (o <= MAX_ORDER) {
      head = pfn - (pfn % 2 ** o);
      if (this.freeOrderPlus1[head] === o + 1) break;
      o++;
    }
    if (o > MAX_ORDER) throw new MachineError('EBUSY', `frame ${pfn} is not free`);
    this.listRemove(head, o);
    while (o > 0) {
      o--;
      const half = 2 ** o;
      if (pfn >= head + half) {
        this.listPush(head, o);
        head += half;
      } else {
        this.listPush(head + half, o);
      }
    }
  }

  private release(pfn: number, order: number): void {
    let p = pfn;
    let o = order;
    while (o < MAX_ORDER) {
      const buddy = p ^ (2 ** o);
      if (buddy >= this.totalFrames || this.freeOrderPlus1[buddy] !== o + 1) break;
      this.listRemove(buddy, o);
      p = Math.min(p, buddy);
      o++;
    }
    this.listPush(p, o);
  }

  /**
   * The frame's array, made when first written, for a write of [off, off + n): a kept array with
   * the rest zeroed (the write itself covers [off, off + n), so those bytes are not cleared first)
   * or a new one.
   */
  private frameForWrite(pfn: number, off: number, n: number): Buffer {
    let bytes = this.contents.get(pfn);
    if (bytes === undefined) {
      const reused = this.spare.pop();
      if (reused !== undefined) {
        if (off > 0) reused.fill(0, 0, off);
        if (off + n < PAGE_BYTES) reused.fill(0, off + n);
      }
      bytes = reused ?? Buffer.alloc(PAGE_BYTES);
      this.contents.set(pfn, bytes);
    }
    return bytes;
  }

  private listPush(pfn: number, order: number): void {
    const head = this.heads[order];
    this.next[pfn] = head;
    this.prev[pfn] = NONE;
    if (head !== NONE) this.prev[head] = pfn;
    this.heads[order] = pfn;
    this.freeOrderPlus1[pfn] = order + 1;
    this.freeBlocks[order]++;
    this.freeFrames += 2 ** order;
  }

  private listRemove(pfn: number, order: number): void {
    const n = this.next[pfn];
    const p = this.prev[pfn];
    if (p === NONE) this.heads[order] = n;
    else this.next[p] = n;
    if (n !== NONE) this.prev[n] = p;
    this.freeOrderPlus1[pfn] = 0;
    this.freeBlocks[order]--;
    this.freeFrames -= 2 ** order;
  }

  private checkOrder(order: number): void {
    if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) {
      throw new MachineError('EINVAL', `order ${order} not in 0..${MAX_ORDER}`);
    }
  }

  private checkRange(pa: number, sizeBytes: number): void {
    if (!Number.isInteger(pa) || !Number.isInteger(sizeBytes) || pa < 0 || sizeBytes < 0) {
      throw new MachineError('EINVAL', `bad physical range ${pa}+${sizeBytes}`);
    }
    if (pa + sizeBytes > this.totalFrames * PAGE_BYTES) {
      throw new MachineError('EINVAL', `physical range ${pa}+${sizeBytes} beyond memory end`);
    }
  }
}
