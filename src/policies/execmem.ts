/**
 * `execmem` (ours): the project's allocator (src/execmem, engineer A) behind the same
 * ExecAllocator interface as the re-implemented Linux designs, on the same simulated machine
 * through SimBackend.
 *
 * Why an adapter and not a special case in the harness: the comparison is only fair if our
 * allocator is driven by exactly the same replay, the same machine configuration and the same
 * metrics code as the Linux designs. The adapter translates the kernel-style lifecycle of the
 * shared interface onto execmem's API:
 * - alloc -> allocVa(type, size, { alignBytes }): text arrives ROX and trap-filled.
 * - write -> updateVa: the one write path (alias write or the locked unprotect/memcpy/protect).
 * - finalize -> nothing: execmem never has a "publish" step; memory was final from the start.
 * - seal -> sealVa; free -> freeVa; shrink -> shrink().
 * - batch -> execmem.batch: a module load's writes (or an unload's frees) handed over together
 *   share one write session (one alias mapping, one local flush; execmem/writer.ts). The Linux
 *   designs have no batch: their kernels write section by section.
 * It remembers only what the harness asks of every policy (live extents by type, requested
 * bytes); execmem keeps its own metadata in its side tables.
 *
 * usage() is asked after every allocation (the replay's peak of mapped bytes) and its figure, the
 * bytes of execmem's blocks, comes from execmem.stats(), which summarises every pool. The blocks
 * change only where execmem maps or unmaps one through its backend, so the backend here counts
 * those calls and usage() reuses the last figure while the count has not moved.
 */

import type { ExecmemType } from '../arch/types.js';
import { hexAddr, SZ_2M } from '../base/addr.js';
import type { BackendBlock, MapBlockRequest } from '../execmem/backend.js';
import { Execmem, type ExecmemOptions } from '../execmem/execmem.js';
import { SimBackend } from '../execmem/sim-backend.js';
import type { ExecmemStats } from '../execmem/stats.js';
import type { Machine } from '../machine/machine.js';
import type { InstrumentedAllocator, LiveExtent } from './common.js';
import { PolicyError } from './errors.js';

/** SimBackend counting the calls that map or unmap a block (see the header). */
class CountingSimBackend extends SimBackend {
  blockChanges = 0;

  override mapBlock(req: MapBlockRequest): BackendBlock {
    this.blockChanges++;
    return super.mapBlock(req);
  }

  override unmapBlock(block: BackendBlock): void {
    this.blockChanges++;
    super.unmapBlock(block);
  }
}

export class ExecmemPolicy implements InstrumentedAllocator {
  readonly name = 'execmem';
  readonly modelled = false;
  readonly execmem: Execmem;
  private readonly backend: CountingSimBackend;
  private readonly live = new Map<number, LiveExtent>();
  private liveBytes = 0;
  /** usage()'s last mapped bytes and the backend's block-change count it was taken at. */
  private mappedBytes = 0;
  private mappedAt = -1;

  constructor(
    readonly machine: Machine,
    options: { seed?: number; execmem?: ExecmemOptions } = {},
  ) {
    this.backend = new CountingSimBackend(machine);
    // `execmem`: the allocator's measurement knobs (bench variants); compare uses the defaults.
    this.execmem = new Execmem(this.backend, { ...options.execmem, seed: options.seed ?? 1 });
  }

  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number): number {
    const va = this.execmem.allocVa(type, sizeBytes, alignBytes === undefined ? undefined : { alignBytes });
    this.live.set(va, { va, sizeBytes, type });
    this.liveBytes += sizeBytes;
    return va;
  }

  write(va: number, bytes: Uint8Array): void {
    this.execmem.updateVa(va, bytes);
  }

  finalize(va: number): void {
    if (!this.live.has(va))
      throw new PolicyError('ENOENT', this.name, `finalize of ${hexAddr(va)}: not live`);
  }

  seal(va: number): void {
    this.execmem.sealVa(va);
  }

  free(va: number): void {
    this.execmem.freeVa(va);
    const e = this.live.get(va);
    if (e !== undefined) {
      this.live.delete(va);
      this.liveBytes -= e.sizeBytes;
    }
  }

  shrink(): void {
    this.execmem.shrink();
  }

  batch(fn: () => void): void {
    this.execmem.batch(fn);
  }

  usage(): { liveBytes: number; mappedBytes: number } {
    if (this.mappedAt !== this.backend.blockChanges) {
      let mappedBytes = 0;
      for (const pool of Object.values(this.execmem.stats().pools)) mappedBytes += pool.mappedBytes;
      this.mappedBytes = mappedBytes;
      this.mappedAt = this.backend.blockChanges;
    }
    return { liveBytes: this.liveBytes, mappedBytes: this.mappedBytes };
  }

  forEachLive(fn: (e: LiveExtent) => void): void {
    for (const e of this.live.values()) fn(e);
  }

  policyCounters(): Readonly<Record<string, number>> {
    const stats = this.execmem.stats();
    return { ...stats.counters, liveObjects: this.live.size, mappedBoundBytes: this.mappedBoundBytes(stats) };
  }

  /**
   * The least this design can map for the live objects now (docs/MEMORY.md "bound"): every text
   * pool its requested live bytes rounded up to whole 2 MiB blocks (text is on 2 MiB leaves from
   * its first byte, for iTLB reach: limits.ts LARGE_TIER_FROM_BYTES), everything else exactly its
   * live bytes. Where bound / live is above the best design's mapped/live, that target is out of
   * reach for this design, whatever its placement.
   */
  mappedBoundBytes(stats: ExecmemStats = this.execmem.stats()): number {
    const textLive = new Map<string, number>();
    let otherLive = 0;
    for (const e of this.live.values()) {
      const t = stats.types[e.type];
      const pool = stats.pools[t.pool];
      if (pool.prot === 'rox' && pool.leafBytes === SZ_2M)
        textLive.set(t.pool, (textLive.get(t.pool) ?? 0) + e.sizeBytes);
      else otherLive += e.sizeBytes;
    }
    let bound = otherLive;
    for (const live of textLive.values()) bound += Math.ceil(live / SZ_2M) * SZ_2M;
    return bound;
  }
}

export function createExecmemPolicy(machine: Machine, seed?: number): ExecmemPolicy {
  return new ExecmemPolicy(machine, { seed });
}
