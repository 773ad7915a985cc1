/**
 * The pending-fill queue: freed text and rodata runs whose trap fill waits for the next write
 * session, when the allocator runs with fillOnFree 'deferred' (off by default: it gives up
 * DESIGN.md rule 6 for a bounded window; limits.ts FILL_QUEUE_RUNS, FILL_DELAY_CALLS: the rule,
 * its numbers and that trade).
 *
 * Why: on a backend with write sessions every session ends in one flush, so a free that opened a
 * session of its own to trap-fill its run cost as much as an update. Queued, the fill rides in the
 * session the next update opens anyway (execmem.ts drainFills), and a load/unload churn pays one
 * flush per load. What keeps it safe:
 * - A queued run stays used in its heap, marked KIND_PENDING_FILL: no allocation can land on it
 *   (so nothing is handed out before it holds traps), and every lookup of it is EFREE, as for any
 *   freed address (store.ts locate). It is not free space, so "every byte of free executable space
 *   holds the trap pattern" (DESIGN.md section 5) holds as before; stats count it apart
 *   (pendingFillBytes), so live + free + pending fill = mapped.
 * - The queue is bounded in runs and in allocator calls; the old code in a queued run is never
 *   writable, only still executable, for at most FILL_DELAY_CALLS calls: that window is the price
 *   (a stale pointer runs leftovers instead of trapping), and why this is not the default.
 * - Inside batch() a free fills at once into the batch's open session (nothing to save).
 *
 * Fixed-size parallel arrays, no allocation per free (the free path is hot).
 */
import { assert } from '../base/assert.js';
import type { Block } from './pools.js';

export class PendingFills {
  private readonly blocks: (Block | null)[];
  private readonly vas: Float64Array;
  private readonly sizes: Float64Array;
  private countRuns = 0;
  /** Allocator clock (store.ts tick) at which the oldest queued run was freed. */
  private oldestSince = 0;
  /** Every queued run's fill has been written (in a session not yet ended, or ended). */
  filled = false;

  constructor(readonly capacityRuns: number) {
    assert(Number.isInteger(capacityRuns) && capacityRuns > 0, 'fill queue capacity');
    this.blocks = new Array<Block | null>(capacityRuns).fill(null);
    this.vas = new Float64Array(capacityRuns);
    this.sizes = new Float64Array(capacityRuns);
  }

  get runs(): number {
    return this.countRuns;
  }

  isFull(): boolean {
    return this.countRuns === this.capacityRuns;
  }

  /** Has the oldest queued run waited `delayCalls` calls at `clock`? */
  isDue(clock: number, delayCalls: number): boolean {
    return this.countRuns > 0 && clock - this.oldestSince >= delayCalls;
  }

  /** Queue a freed run (the caller marked it KIND_PENDING_FILL and counted it in its pool). */
  push(block: Block, va: number, sizeBytes: number, clock: number): void {
    assert(this.countRuns < this.capacityRuns, 'fill queue overflow');
    if (this.countRuns === 0) this.oldestSince = clock;
    this.filled = false;
    const i = this.countRuns++;
    this.blocks[i] = block;
    this.vas[i] = va;
    this.sizes[i] = sizeBytes;
    block.pool.pendingFillBytes += sizeBytes;
    block.pool.pendingFillRuns++;
  }

  /** Does [va, va + sizeBytes) touch a queued run? */
  overlaps(va: number, sizeBytes: number): boolean {
    for (let i = 0; i < this.countRuns; i++) {
      if (va < this.vas[i] + this.sizes[i] && this.vas[i] < va + sizeBytes) return true;
    }
    return false;
  }

  /** The i-th queued run (oldest first), i < runs. */
  blockAt(i: number): Block {
    return this.blocks[i]!;
  }

  vaAt(i: number): number {
    return this.vas[i];
  }

  sizeAt(i: number): number {
    return this.sizes[i];
  }

  /** Empty the queue (its runs are filled and back in their heaps) and uncount them. */
  clear(): void {
    for (let i = 0; i < this.countRuns; i++) {
      const pool = this.blocks[i]!.pool;
      pool.pendingFillBytes -= this.sizes[i];
      pool.pendingFillRuns--;
      this.blocks[i] = null;
    }
    this.countRuns = 0;
    this.filled = false;
  }
}
