/**
 * `bpf_prog_pack`: BPF JIT images packed in 64-byte chunks into 2 MiB packs. A
 * RE-IMPLEMENTATION ON OUR SIMULATED MACHINE of kernel/bpf/core.c (research/linux-execmem.md
 * section 3, source kernel-patches/bpf:kernel/bpf/core.c@0014d00a).
 *
 * Why it exists: before packs, every BPF program cost a page-rounded module_alloc plus
 * set_memory_ro/x, i.e. a global TLB shootdown and a direct-map split per load (Aaron Lu measured
 * DirectMap4k 87,900 kB -> 1,654,620 kB after 2048 programs, <Y2ioTodn+mBXdIqp@ziqianlu-desk2>).
 * Packing makes the permission change once per 2 MiB pack, and later loads and unloads only
 * text_poke (local flush only; Song Liu, <20221107223921.3451913-1-song@kernel.org>).
 *
 * What is modelled, as in the kernel:
 * - BPF_PROG_CHUNK_SIZE = 64; BPF_PROG_PACK_SIZE = 2 MiB (one NUMA node); the pack comes from
 *   bpf_jit_alloc_exec() = execmem_alloc(EXECMEM_BPF) on the plain path, i.e. vmalloc on 4 KiB
 *   pages ("bpf_prog_pack uses 512x 4kB pages instead of 1x 2MB page", same cover letter), filled
 *   with illegal instructions while RW, then set_memory_rox once, added at the list tail.
 * - Allocation: first fit across packs in list order with bitmap_find_next_zero_area over
 *   round_up(size, 64) / 64 bits, else a new pack at position 0. Requests above the pack size get
 *   a dedicated page-rounded allocation, trap-filled and set ROX, outside any pack.
 * - The JIT writes into a RW buffer (kvmalloc, never executable: a Uint8Array here) and
 *   bpf_jit_binary_pack_finalize() copies it in with ONE text_poke_copy (bpf_arch_text_copy).
 * - Free: bpf_arch_text_invalidate = text_poke_set(0xcc) over the chunks, clear the bits, and the
 *   pack is vfree'd as soon as its bitmap is empty (no hysteresis).
 * - One pack_mutex around alloc and free (counted as mutexAcquisitions).
 * - Module sections, kprobes and ftrace do not use packs: they take the execmem-6.10 plain path.
 * - Architectures without bpf_arch_text_copy (our `generic`, no alias write) cannot use packs
 *   (the __weak hooks return -ENOTSUPP and the JIT falls back to bpf_jit_binary_alloc), so there
 *   BPF takes the plain path too.
 * Not modelled: the random 0..(64 - hdr) start offset inside the image, and the bpf_jit_limit
 * budget (half the module area) — the workloads stay far below it.
 */
import type { ExecmemType } from '../arch/types.js';
import { alignUp, SZ_2M } from '../base/addr.js';
import { assert } from '../base/assert.js';
import type { Machine } from '../machine/machine.js';
import { type Allocation, newAllocation, PAGE_BYTES } from './common.js';
import { PlainPolicy } from './plain.js';

export const BPF_PROG_CHUNK_BYTES = 64;
export const BPF_PROG_PACK_BYTES = SZ_2M;
const CHUNK_COUNT = BPF_PROG_PACK_BYTES / BPF_PROG_CHUNK_BYTES; // 32768 bits per pack

/** One 2 MiB pack and its bitmap of 64-byte chunks (side table, outside executable memory). */
export class Pack {
  readonly bitmap = new Uint32Array(CHUNK_COUNT / 32);
  usedChunks = 0;
  constructor(readonly va: number) {}

  /** bitmap_find_next_zero_area(bitmap, COUNT, 0, nbits, 0): first run of `nbits` clear bits. */
  findZeroArea(nbits: number): number {
    let start = this.nextClear(0);
    while (start + nbits <= CHUNK_COUNT) {
      const end = this.nextSet(start, start + nbits);
      if (end >= start + nbits) return start;
      start = this.nextClear(end);
    }
    return -1;
  }

  setBits(start: number, nbits: number, value: boolean): void {
    for (let i = start; i < start + nbits; i++) {
      const word = i >>> 5;
      const bit = 1 << (i & 31);
      if (((this.bitmap[word] & bit) !== 0) === value) assert(false, `pack chunk ${i} already ${value}`);
      this.bitmap[word] = value ? this.bitmap[word] | bit : this.bitmap[word] & ~bit;
    }
    this.usedChunks += value ? nbits : -nbits;
  }

  /** First clear bit at or after `from` (CHUNK_COUNT if none). */
  private nextClear(from: number): number {
    let i = from;
    while (i < CHUNK_COUNT) {
      const word = this.bitmap[i >>> 5];
      if (word === 0xffffffff && (i & 31) === 0) {
        i += 32;
        continue;
      }
      if ((word & (1 << (i & 31))) === 0) return i;
      i++;
    }
    return CHUNK_COUNT;
  }

  /** First set bit in [from, limit) (limit if none). */
  private nextSet(from: number, limit: number): number {
    let i = from;
    while (i < limit) {
      const word = this.bitmap[i >>> 5];
      if (word === 0 && (i & 31) === 0) {
        i += 32;
        continue;
      }
      if ((word & (1 << (i & 31))) !== 0) return i;
      i++;
    }
    return limit;
  }
}

export class BpfProgPackPolicy extends PlainPolicy {
  /** pack_list, in list order (new packs at the tail). */
  private readonly packs: Pack[] = [];

  constructor(machine: Machine) {
    super('bpf_prog_pack', machine, 'execmem-6.10');
  }

  get packCount(): number {
    return this.packs.length;
  }

  protected override allocate(type: ExecmemType, sizeBytes: number, alignBytes: number): Allocation {
    if (type !== 'bpf' || this.arch.patch === 'none') return this.plainAllocate(type, sizeBytes, alignBytes);
    this.counters.mutexAcquisitions++;
    const imageBytes = alignUp(sizeBytes, BPF_PROG_CHUNK_BYTES);
    // Chunks are 64-byte aligned; a caller asking for more (never the BPF JIT) gets its own pages.
    const a =
      sizeBytes > BPF_PROG_PACK_BYTES || alignBytes > BPF_PROG_CHUNK_BYTES
        ? this.dedicated(sizeBytes)
        : this.fromPack(sizeBytes, imageBytes / BPF_PROG_CHUNK_BYTES);
    a.rwImage = new Uint8Array(imageBytes);
    fillPattern(a.rwImage, this.arch.trapPattern);
    return a;
  }

  protected override writeInto(a: Allocation, va: number, bytes: Uint8Array): void {
    if (a.rwImage !== null) a.rwImage.set(bytes, va - a.va);
    else this.writeByProt(a, va, bytes);
  }

  protected override finalizeAlloc(a: Allocation): void {
    if (a.rwImage === null) {
      this.plainFinalize(a);
      return;
    }
    this.aliasWrite(a.va, a.rwImage, 'rox'); // bpf_arch_text_copy = text_poke_copy
    a.rwImage = null;
  }

  protected override release(a: Allocation): void {
    if (a.kind === 'pack') this.releaseChunks(a);
    else if (a.kind === 'bpf-dedicated') {
      this.counters.mutexAcquisitions++;
      this.vfree(a.va);
      this.mappedBytes -= a.reservedBytes;
    } else this.plainRelease(a);
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
    const va = pack.va + pos * BPF_PROG_CHUNK_BYTES;
    const a = newAllocation(va, 'bpf', sizeBytes, nbits * BPF_PROG_CHUNK_BYTES, 'pack', false, 'rox');
    a.owner = pack;
    return a;
  }

  /** alloc_new_pack(): vmalloc 2 MiB (4 KiB pages), fill with traps while RW, set_memory_rox. */
  private newPack(): Pack {
    const area = this.vmalloc(this.rangeFor('bpf'), BPF_PROG_PACK_BYTES, false);
    this.makeAreaRox(area.va, BPF_PROG_PACK_BYTES, true);
    const pack = new Pack(area.va);
    this.packs.push(pack);
    this.mappedBytes += BPF_PROG_PACK_BYTES;
    this.counters.blocksMapped++;
    return pack;
  }

  /** size > BPF_PROG_PACK_SIZE: a page-rounded allocation of its own, trap-filled, ROX. */
  private dedicated(sizeBytes: number): Allocation {
    const reserved = alignUp(sizeBytes, PAGE_BYTES);
    const area = this.vmalloc(this.rangeFor('bpf'), reserved, false);
    this.makeAreaRox(area.va, reserved, true);
    this.mappedBytes += reserved;
    return newAllocation(area.va, 'bpf', sizeBytes, reserved, 'bpf-dedicated', false, 'rox');
  }

  /** bpf_prog_pack_free(): invalidate with text_poke_set, clear bits, free the pack when empty. */
  private releaseChunks(a: Allocation): void {
    this.counters.mutexAcquisitions++;
    const pack = a.owner as Pack;
    this.aliasFill(a.va, a.reservedBytes, 'rox');
    pack.setBits((a.va - pack.va) / BPF_PROG_CHUNK_BYTES, a.reservedBytes / BPF_PROG_CHUNK_BYTES, false);
    if (pack.usedChunks > 0) return;
    this.packs.splice(this.packs.indexOf(pack), 1);
    this.vfree(pack.va);
    this.mappedBytes -= BPF_PROG_PACK_BYTES;
    this.counters.blocksReleased++;
  }
}

/** Fill `buf` with the repeating `pattern` (the RW image starts trap-filled, as the JIT's does). */
export function fillPattern(buf: Uint8Array, pattern: Uint8Array): void {
  for (let i = 0; i < buf.length; i++) buf[i] = pattern[i % pattern.length];
}

export function createBpfProgPack(machine: Machine): BpfProgPackPolicy {
  return new BpfProgPackPolicy(machine);
}
