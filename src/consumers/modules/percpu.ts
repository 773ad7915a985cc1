/**
 * The per-CPU reservation modules get their `.data..percpu` from (percpu_modalloc()).
 *
 * Why separate from execmem: per-CPU data is not module memory. Linux gives each module's
 * per-CPU section a slice of the *reserved* chunk of the first per-CPU chunk
 * (__alloc_reserved_percpu()), which starts right after the kernel's static per-CPU area and
 * is PERCPU_MODULE_RESERVE = 8 KiB in 6.1 (include/linux/percpu.h; 64 KiB with
 * CONFIG_MEM_ALLOC_PROFILING in 6.10+). Allocations are rounded to PCPU_MIN_ALLOC_SIZE = 4 bytes
 * and placed first-fit with their alignment; an alignment above PAGE_SIZE is clamped with
 * "per-cpu alignment %li > %li"; exhaustion fails the load with "Could not allocate %lu bytes
 * percpu data". On x86-64 the per-CPU section is linked at 0, so a per-CPU "address" is an
 * offset (what the module code adds to %gs), and that offset is what relocations see.
 *
 * Modelled: the allocator is a first-fit list, not the kernel's bitmap with hints; with one
 * chunk and first fit they choose the same offsets.
 */
import { alignUp } from '../../base/addr.js';
import { assert } from '../../base/assert.js';

export const PERCPU_MODULE_RESERVE_BYTES = 8 << 10;
const PCPU_MIN_ALLOC_BYTES = 4;
const PAGE_BYTES = 4096;

export class PercpuError extends Error {
  override name = 'PercpuError';
  constructor(message: string) {
    super(`ENOMEM: ${message}`);
  }
}

interface Slice {
  offset: number;
  sizeBytes: number;
}

export class PercpuArea {
  private readonly live: Slice[] = []; // sorted by offset
  private usedBytes = 0;

  constructor(
    /** First byte of the reserved chunk (the end of the static per-CPU area). */
    readonly startBytes: number,
    readonly reserveBytes: number = PERCPU_MODULE_RESERVE_BYTES,
  ) {
    assert(Number.isInteger(startBytes) && startBytes >= 0, 'per-CPU start must be a non-negative integer');
    assert(
      Number.isInteger(reserveBytes) && reserveBytes >= 0,
      'per-CPU reserve must be a non-negative integer',
    );
  }

  /** Reserve `sizeBytes` aligned to `alignBytes`; returns the per-CPU offset. Throws PercpuError. */
  alloc(
    moduleName: string,
    sizeBytes: number,
    alignBytes: number,
  ): { offset: number; warning: string | null } {
    let warning: string | null = null;
    let align = Math.max(alignBytes || 1, PCPU_MIN_ALLOC_BYTES);
    if (align > PAGE_BYTES) {
      warning = `${moduleName}: per-cpu alignment ${align} > ${PAGE_BYTES}`;
      align = PAGE_BYTES;
    }
    const size = alignUp(sizeBytes, PCPU_MIN_ALLOC_BYTES);
    let cursor = this.startBytes;
    let at = 0;
    for (; at <= this.live.length; at++) {
      const start = alignUp(cursor, align);
      const limit = at < this.live.length ? this.live[at].offset : this.startBytes + this.reserveBytes;
      if (start + size <= limit) {
        this.live.splice(at, 0, { offset: start, sizeBytes: size });
        this.usedBytes += size;
        return { offset: start, warning };
      }
      if (at < this.live.length) cursor = this.live[at].offset + this.live[at].sizeBytes;
    }
    throw new PercpuError(`${moduleName}: Could not allocate ${sizeBytes} bytes percpu data`);
  }

  free(offset: number): void {
    const i = this.live.findIndex((s) => s.offset === offset);
    assert(i >= 0, `per-CPU free of unknown offset ${offset}`);
    this.usedBytes -= this.live[i].sizeBytes;
    this.live.splice(i, 1);
  }

  usage(): { usedBytes: number; reserveBytes: number; slices: number } {
    return { usedBytes: this.usedBytes, reserveBytes: this.reserveBytes, slices: this.live.length };
  }
}
