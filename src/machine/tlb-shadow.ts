/**
 * The lower-bound shadow of one CPU's instruction-side TLB: the leaves an infinite-capacity TLB
 * on this CPU would hold, given the same fills and the same flushes.
 *
 * Why: a miss count means little without the floor no TLB geometry can beat. That floor is per
 * CPU (each CPU caches its own translations, which is why flush_tlb_kernel_range in
 * arch/x86/mm/tlb.c must reach every CPU) and it restarts where the workload invalidates: after a
 * flush a CPU must walk again, however large its TLB. So the bound is "per CPU, the first
 * instruction-side access to a leaf since that CPU last invalidated it", and it is kept here, in
 * the TLB layer, where every fill and flush passes.
 *
 * How: a set of leaf keys (leaf base VA + level; the base is 4 KiB aligned so the sum is unique).
 * CpuTlb adds every translation its instruction side can ever hit (instruction fills, and data
 * fills of a second level both sides use), so the shadow holds a superset of the real TLB's
 * instruction-reachable entries: a real hit is always a shadow hit, and the shadow only needs to be
 * consulted on a real miss (off the hot path). A full flush clears it; a range flush drops the
 * leaves overlapping the range, by probing the range's candidate leaves or by scanning the set,
 * whichever is fewer, so flushing all of the address space costs at most the set's size. The set
 * is a NumberSet (num-set.ts): a note runs on every instruction-side TLB fill and a clear on every
 * full flush, which a Set<number> of keys above 2^31 makes allocation-heavy.
 */
import { NumberSet } from './num-set.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from './types.js';

const PAGE = 4096;

export class TlbShadow {
  private readonly leaves = new NumberSet();
  /** Keys to drop found by a scan (reused; a set must not change while it is walked). */
  private readonly doomed: number[] = [];

  get size(): number {
    return this.leaves.size;
  }

  has(t: Translation): boolean {
    return this.leaves.has(t.va + t.level);
  }

  /** Adds t's leaf; true when it was not held, i.e. an infinite TLB would have missed. */
  note(t: Translation): boolean {
    return this.leaves.add(t.va + t.level);
  }

  clear(): void {
    this.leaves.clear();
  }

  /** Drops every leaf overlapping [startVa, endVa). */
  dropRange(startVa: number, endVa: number): void {
    const leaves = this.leaves;
    if (leaves.size === 0) return;
    let candidates = 0;
    for (let level = 1; level <= 3; level++) {
      const size = LEVEL_BYTES[level as LeafLevel];
      candidates += Math.floor((endVa - 1) / size) - Math.floor(startVa / size) + 1;
      if (candidates > leaves.size) break;
    }
    if (candidates <= leaves.size) {
      for (let level = 1; level <= 3; level++) {
        const size = LEVEL_BYTES[level as LeafLevel];
        const last = Math.floor((endVa - 1) / size);
        for (let page = Math.floor(startVa / size); page <= last; page++) leaves.delete(page * size + level);
      }
      return;
    }
    const doomed = this.doomed;
    leaves.forEach((key) => {
      const level = key % PAGE;
      const va = key - level;
      if (va < endVa && va + LEVEL_BYTES[level as LeafLevel] > startVa) doomed.push(key);
    });
    for (const key of doomed) leaves.delete(key);
    doomed.length = 0;
  }
}
