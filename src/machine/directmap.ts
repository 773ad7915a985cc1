/**
 * /proc/meminfo DirectMap4k/2M/1G: how many bytes of the direct (linear) map each leaf size maps,
 * kept up to date from the kernel page table's leaf changes, splits and collapses.
 *
 * Why a listener and not a scan: the figure is read after every workload step and the direct map
 * of a 16 GiB machine has up to 4 M leaves; Linux keeps it the same way (arch/x86/mm/pat/
 * set_memory.c update_page_count / split_page_count / collapse_page_count). A not-present leaf
 * still counts at its size, as Linux's direct_pages_count does.
 *
 * `pageGranular` (arm64 with rodata=full, arch.directMapPageGranular): Linux maps the linear map
 * with 4 KiB pages from boot, while the machine holds it as larger leaves until CPA needs a
 * piece (machine/cpa.ts, "linear-map expansions"). The tracker then reports every linear-map byte
 * as 4 KiB, which is what Linux has, whatever the machine's internal leaf size.
 */
import type { LeafBulkListener } from './pagetable.js';
import type { DirectMapStats, LeafChange, LeafLevel, Translation } from './types.js';
import { LEVEL_BYTES } from './types.js';

export class DirectMapTracker implements LeafBulkListener {
  readonly stats: DirectMapStats = { bytes4k: 0, bytes2m: 0, bytes1g: 0 };
  constructor(
    private readonly start: number,
    private readonly end: number,
    private readonly pageGranular = false,
  ) {}

  onLeafChange(c: LeafChange): void {
    if (c.va < this.start || c.va >= this.end) return;
    if (c.old !== null) this.add(c.old.level, -LEVEL_BYTES[c.old.level]);
    if (c.next !== null) this.add(c.next.level, LEVEL_BYTES[c.next.level]);
  }

  /** The leaf's bytes move one level down (region bounds are 1 GiB aligned: all in or all out). */
  onSplit(old: Translation): void {
    if (old.va < this.start || old.va >= this.end) return;
    this.add(old.level, -LEVEL_BYTES[old.level]);
    this.add((old.level - 1) as LeafLevel, LEVEL_BYTES[old.level]);
  }

  onCollapse(big: Translation): void {
    if (big.va < this.start || big.va >= this.end) return;
    this.add((big.level - 1) as LeafLevel, -LEVEL_BYTES[big.level]);
    this.add(big.level, LEVEL_BYTES[big.level]);
  }

  private add(level: LeafLevel, bytes: number): void {
    if (level === 1 || this.pageGranular) this.stats.bytes4k += bytes;
    else if (level === 2) this.stats.bytes2m += bytes;
    else this.stats.bytes1g += bytes;
  }
}
