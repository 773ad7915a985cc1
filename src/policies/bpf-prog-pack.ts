/**
 * bpf_prog_pack: BPF JIT images packed in 64-byte chunks into 2 MiB packs. A RE-IMPLEMENTATION
 * ON OUR SIMULATED MACHINE of kernel/bpf/core.c (research/linux-execmem.md section 3; the pack
 * code read in 6.1, 6.12 and 2026 trees and in the 6.2 set_memory_rox diff 1f6eae430528).
 *
 * Why it exists: before packs, every BPF program cost a page-rounded module_alloc plus
 * set_memory_ro/x, i.e. a global TLB shootdown and a direct-map split per load (Aaron Lu measured
 * DirectMap4k 87,900 kB -> 1,654,620 kB after 2048 sockex1 instances, <Y2ioTodn+mBXdIqp@ziqianlu-desk2>).
 * Packing makes the permission change once per 2 MiB pack, and later loads and unloads only
 * text_poke (local flush only; Song Liu, <20221107223921.3451913-1-song@kernel.org>).
 *
 * Why a component: the same pack code serves Linux 6.1 (programs), 6.10 and 6.17 (programs and,
 * on x86 since 6.8, trampolines: arch_alloc_bpf_trampoline = bpf_prog_pack_alloc) and the 2026
 * series that carves packs from the ROX cache. Only where a pack's memory comes from differs, so
 * the design passes a source: bpf_jit_alloc_exec() plus fill and set_memory_* (alloc_new_pack) or,
 * with BPF in the ROX cache, a cache piece that is already trap-filled and ROX.
 *
 * Modelled, as in the kernel:
 * - BPF_PROG_CHUNK_SIZE = 64; BPF_PROG_PACK_SIZE = SZ_2M * num_possible_nodes() (one node here;
 *   6.1 had PMD_SIZE * num_possible_nodes(), the same 2 MiB on x86), on 4 KiB pages ("bpf_prog_pack
 *   uses 512x 4kB pages instead of 1x 2MB page", same cover letter).
 * - bpf_prog_pack_alloc(): first fit across packs in list order with
 *   bitmap_find_next_zero_area(bitmap, COUNT, 0, nbits, 0) over round_up(size, 64) / 64 bits,
 *   else alloc_new_pack() at the list tail and position 0. A request above the pack size gets a
 *   dedicated page-rounded allocation from the same source, outside any pack.
 * - The JIT writes into a RW buffer (kvmalloc, never executable: a Uint8Array here) and
 *   bpf_jit_binary_pack_finalize() copies it in with ONE text_poke_copy (bpf_arch_text_copy);
 *   a write after finalize is another text_poke.
 * - bpf_prog_pack_free(): bpf_arch_text_invalidate = text_poke_set(0xcc) over the chunks, clear
 *   the bits, and bpf_jit_free_exec() the pack as soon as its bitmap is empty (no hysteresis).
 * - One pack_mutex around alloc and free (mutexAcquisitions).
 * Left out: the random 0..(64 - hdr) start offset inside the image (the workload's image already
 * holds the 16 bytes bpf_jit_binary_pack_alloc adds for it), the bpf_jit_limit budget (half the
 * module area; the workloads stay far below it), and the cBPF predictor-flush pack choice of the
 * 2026 trees (no cBPF in the workloads).
 */
import { alignUp, SZ_2M } from '../base/addr.js';
import { assert } from '../base/assert.js';
import { type LinuxPolicy, PAGE_BYTES } from './common.js';
import { type Allocation, type Area, newAllocation } from './live-set.js';

export const BPF_PROG_CHUNK_BYTES = 64;
export const BPF_PROG_PACK_BYTES = SZ_2M;
const CHUNK_COUNT = BPF_PROG_PACK_BYTES / BPF_PROG_CHUNK_BYTES; // 32768 bits per pack

/** One 2 MiB pack and its bitmap of 64-byte chunks (side table, outside executable memory). */
export class Pack {
  readonly bitmap = new Uint32Array(CHUNK_COUNT / 32);
  usedChunks = 0;
  /** Every chunk below this one is in use (a lower bound of the first clear bit). */
  private firstClearMin = 0;
  /**
   * The smallest run length a search failed to find since a chunk was last freed: taking chunks
   * only shortens free runs, so a run at least this long cannot be there either.
   */
  private failedMin = CHUNK_COUNT + 1;
  constructor(readonly area: Area) {}

  /**
   * bitmap_find_next_zero_area(bitmap, COUNT, 0, nbits, 0): first run of `nbits` clear bits. The
   * kernel scans from bit 0; starting at the known-used prefix's end, or giving up when fewer than
   * nbits chunks are free or a run this long was not found since the last free, finds the same run
   * (or none) without re-reading the bitmap (first fit walks every pack at every load).
   */
  findZeroArea(nbits: number): number {
    if (CHUNK_COUNT - this.usedChunks < nbits || nbits >= this.failedMin) return -1;
    let start = this.nextClear(this.firstClearMin);
    this.firstClearMin = start;
    while (start + nbits <= CHUNK_COUNT) {
      const end = this.nextSet(start, start + nbits);
      if (end >= start + nbits) return start;
      start = this.nextClear(end);
    }
    this.failedMin = nbits;
    return -1;
  }

  setBits(start: number, nbits: number, value: boolean): void {
    // A word at a time (every BPF load and unload lands here); the same checks as bit by bit.
    const end = start + nbits;
    for (let i = start; i < end; ) {
      const word = i >>> 5;
      const to = Math.min(end, (word + 1) << 5);
      const mask = rangeMask(i & 31, to - i);
      const held = this.bitmap[word] & mask;
      if (held !== (value ? 0 : mask)) {
        const wrong = value ? held : ~held & mask;
        assert(false, `pack chunk ${(word << 5) + lowestBit(wrong)} already ${value}`);
      }
      this.bitmap[word] = value ? this.bitmap[word] | mask : this.bitmap[word] & ~mask;
      i = to;
    }
    this.usedChunks += value ? nbits : -nbits;
    if (!value) {
      if (start < this.firstClearMin) this.firstClearMin = start;
      this.failedMin = CHUNK_COUNT + 1;
    }
  }

  /** First clear bit at or after `from` (CHUNK_COUNT if none). */
  private nextClear(from: number): number {
    for (let i = from; i < CHUNK_COUNT; ) {
      const word = i >>> 5;
      const clear = ~this.bitmap[word] & (0xffffffff << (i & 31));
      if (clear !== 0) return (word << 5) + lowestBit(clear);
      i = (word + 1) << 5;
    }
    return CHUNK_COUNT;
  }

  /** First set bit in [from, limit) (limit if none). */
  private nextSet(from: number, limit: number): number {
    for (let i = from; i < limit; ) {
      const word = i >>> 5;
      const set = this.bitmap[word] & (0xffffffff << (i & 31));
      if (set !== 0) return Math.min(limit, (word << 5) + lowestBit(set));
      i = (word + 1) << 5;
    }
    return limit;
  }
}

/** Index of the lowest set bit of a non-zero 32-bit value. */
function lowestBit(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/** `count` (1..32) one bits starting at bit `shift` (count + shift <= 32). */
function rangeMask(shift: number, count: number): number {
  return count === 32 ? 0xffffffff | 0 : ((1 << count) - 1) << shift;
}

/**
 * The JIT's RW images (kvmalloc / kvfree in the kernel, which the figures do not count), recycled
 * per power-of-two size class: a fresh typed array per BPF load costs the simulator a zeroed
 * off-heap allocation, and an image lives only from alloc to finalize. Every image is trap-filled
 * in full at alloc, so a recycled buffer's old bytes never show.
 */
class RwImages {
  private static readonly KEEP_PER_CLASS = 4;
  private readonly free: ArrayBuffer[][] = [];

  take(sizeBytes: number): Uint8Array {
    const cls = sizeClass(sizeBytes);
    const buffer = this.free[cls]?.pop() ?? new ArrayBuffer(2 ** cls);
    return new Uint8Array(buffer, 0, sizeBytes);
  }

  give(image: Uint8Array): void {
    const buffer = image.buffer as ArrayBuffer;
    const cls = sizeClass(buffer.byteLength);
    if (buffer.byteLength !== 2 ** cls) return; // not one of ours
    const list = this.free[cls];
    if (list === undefined) this.free[cls] = [buffer];
    else if (list.length < RwImages.KEEP_PER_CLASS) list.push(buffer);
  }
}

/** log2 of the smallest power of two >= sizeBytes (sizeBytes >= 1). */
function sizeClass(sizeBytes: number): number {
  return 32 - Math.clz32(sizeBytes - 1);
}

/** Where packs (and dedicated large images) come from, and where they go back to. */
export interface PackSource {
  /** bpf_jit_alloc_exec(size) made ready for use: trap-filled and ROX. */
  alloc(sizeBytes: number): Area;
  /** bpf_jit_free_exec(). */
  free(area: Area): void;
}

export class BpfProgPacks {
  /** pack_list, in list order (new packs at the tail). */
  private readonly packs: Pack[] = [];
  private readonly rwImages = new RwImages();

  constructor(
    private readonly policy: LinuxPolicy,
    private readonly source: PackSource,
  ) {}

  get packCount(): number {
    return this.packs.length;
  }

  /** bpf_jit_binary_pack_alloc(): chunks of a pack (or a dedicated area) plus the RW image. */
  alloc(sizeBytes: number, alignBytes: number): Allocation {
    this.policy.counters.mutexAcquisitions++;
    const imageBytes = alignUp(sizeBytes, BPF_PROG_CHUNK_BYTES);
    // Chunks are 64-byte aligned; a caller asking for more (never the BPF JIT) gets its own pages.
    const a =
      sizeBytes > BPF_PROG_PACK_BYTES || alignBytes > BPF_PROG_CHUNK_BYTES
        ? this.dedicated(sizeBytes)
        : this.fromPack(sizeBytes, imageBytes / BPF_PROG_CHUNK_BYTES);
    a.rwImage = this.rwImages.take(imageBytes);
    fillPattern(a.rwImage, this.policy.arch.trapPattern);
    return a;
  }

  /** The JIT writes the RW image; once finalized, a write is a text_poke. */
  write(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.rwImage !== null) a.rwImage.set(bytes, va - a.va);
    else this.policy.aliasWrite(va, bytes, 'rox');
  }

  /** bpf_jit_binary_pack_finalize(): bpf_arch_text_copy = one text_poke_copy, then kvfree. */
  finalize(a: Allocation): void {
    assert(a.rwImage !== null, 'pack allocation finalized twice');
    this.policy.aliasWrite(a.va, a.rwImage, 'rox');
    this.rwImages.give(a.rwImage);
    a.rwImage = null;
  }

  /** bpf_prog_pack_free(): invalidate, clear the bits, free the pack when its bitmap empties. */
  release(a: Allocation): void {
    this.policy.counters.mutexAcquisitions++;
    if (!(a.owner instanceof Pack)) {
      this.source.free(a.owner as Area); // size > BPF_PROG_PACK_SIZE: bpf_jit_free_exec()
      return;
    }
    const pack = a.owner;
    this.policy.aliasFill(a.va, a.reservedBytes, 'rox');
    pack.setBits((a.va - pack.area.va) / BPF_PROG_CHUNK_BYTES, a.reservedBytes / BPF_PROG_CHUNK_BYTES, false);
    if (pack.usedChunks > 0) return;
    this.packs.splice(this.packs.indexOf(pack), 1);
    this.source.free(pack.area);
    this.policy.counters.blocksReleased++;
  }

  private fromPack(sizeBytes: number, nbits: number): Allocation {
    for (const pack of this.packs) {
      const pos = pack.findZeroArea(nbits);
      if (pos >= 0) return this.take(pack, pos, nbits, sizeBytes);
    }
    return this.take(this.newPack(), 0, nbits, sizeBytes);
  }

  private take(pack: Pack, pos: number, nbits: number, sizeBytes: number): Allocation {
    pack.setBits(pos, nbits, true);
    const va = pack.area.va + pos * BPF_PROG_CHUNK_BYTES;
    return newAllocation(va, 'bpf', sizeBytes, nbits * BPF_PROG_CHUNK_BYTES, 'pack', false, 'rox', pack);
  }

  /** alloc_new_pack(): the source's 2 MiB, added at the list tail. */
  private newPack(): Pack {
    const pack = new Pack(this.source.alloc(BPF_PROG_PACK_BYTES));
    this.packs.push(pack);
    this.policy.counters.blocksMapped++;
    return pack;
  }

  /** size > BPF_PROG_PACK_SIZE: a page-rounded allocation of its own from the same source. */
  private dedicated(sizeBytes: number): Allocation {
    const reserved = alignUp(sizeBytes, PAGE_BYTES);
    const area = this.source.alloc(reserved);
    return newAllocation(area.va, 'bpf', sizeBytes, reserved, 'pack', false, 'rox', area);
  }
}

/** Fill `buf` with the repeating `pattern` (the RW image starts trap-filled, as the JIT's does). */
export function fillPattern(buf: Uint8Array, pattern: Uint8Array): void {
  // Every BPF image starts trap-filled: one fill() for a one-byte pattern (x86 INT3), else the
  // first copy of the pattern doubled with copyWithin (the same bytes as buf[i] = pattern[i % len]).
  if (pattern.length === 1) {
    buf.fill(pattern[0]);
    return;
  }
  const first = Math.min(pattern.length, buf.length);
  for (let i = 0; i < first; i++) buf[i] = pattern[i];
  for (let filled = first; filled < buf.length; filled *= 2) buf.copyWithin(filled, 0, filled);
}
