/**
 * kernel/kprobes.c's kprobe_insn_cache: kprobe instruction slots packed into pages from
 * alloc_insn_page(). A RE-IMPLEMENTATION ON OUR SIMULATED MACHINE, the same in every kernel
 * modelled (5.17 to 6.17); only where the pages come from changes, so the design passes a source:
 * x86 5.17/6.1 module_alloc(PAGE_SIZE) + set_memory_ro + set_memory_x; x86 6.10
 * execmem_alloc(EXECMEM_KPROBES) + set_memory_rox; x86 6.17 a piece of the ROX cache, already
 * ROX; arm64 a vmalloc page mapped PAGE_KERNEL_ROX directly.
 *
 * Why it matters: a kprobe needs 16 bytes, not a page. Without the slot cache each probe would
 * pay a page and its permission changes; with it 256 probes share one page and one permission
 * change, and slots are written with text_poke (arch_copy_kprobe), which flushes only locally.
 *
 * Modelled (kernel/kprobes.c __get_insn_slot / __free_insn_slot / collect_one_slot):
 * - x86 slot size: MAX_INSN_SIZE (16) * sizeof(kprobe_opcode_t) (1) = 16 bytes, so
 *   slots_per_page = PAGE_SIZE / 16 = 256.
 * - Allocation: the first clean slot of the first page with room, pages in list order; a new page
 *   goes to the list head (list_add_rcu).
 * - Free: a page whose last slot goes is freed (free_insn_page = execmem_free / module_memfree)
 *   "unless it's the last one": the last page stays so the next probe needs no new page.
 * Left out: dirty slots and their garbage collection after synchronize_rcu (slots are clean at
 * once), the optprobe cache (kprobe_optinsn_slots), and arm64's 8-byte slots (MAX_INSN_SIZE 2 of
 * u32): x86's 16-byte slot is kept on every arch, as the workloads ask for 16 bytes.
 */
import { assert } from '../base/assert.js';
import { PAGE_BYTES } from './common.js';
import type { Area } from './live-set.js';

/** x86 kprobe instruction slot: MAX_INSN_SIZE * sizeof(kprobe_opcode_t). */
export const KPROBE_INSN_SLOT_BYTES = 16;
export const KPROBE_SLOTS_PER_PAGE = PAGE_BYTES / KPROBE_INSN_SLOT_BYTES;

/** One page of kprobe instruction slots (struct kprobe_insn_page; side table). */
export class KprobeInsnPage {
  readonly used = new Uint8Array(KPROBE_SLOTS_PER_PAGE);
  nused = 0;
  constructor(readonly area: Area) {}
}

/** alloc_insn_page() / free_insn_page() of the design's kernel. */
export interface InsnPageSource {
  alloc(): Area;
  free(area: Area): void;
}

export class KprobeInsnCache {
  /** kprobe_insn_slots.pages, head first. */
  private readonly pages: KprobeInsnPage[] = [];

  constructor(private readonly source: InsnPageSource) {}

  get pageCount(): number {
    return this.pages.length;
  }

  /** __get_insn_slot(): the page and the address of a fresh slot. */
  take(): { page: KprobeInsnPage; va: number } {
    let page = this.pages.find((k) => k.nused < KPROBE_SLOTS_PER_PAGE);
    if (page === undefined) {
      page = new KprobeInsnPage(this.source.alloc());
      this.pages.unshift(page);
    }
    const slot = page.used.indexOf(0);
    assert(slot >= 0, 'kprobe insn page with room has no clean slot');
    page.used[slot] = 1;
    page.nused++;
    return { page, va: page.area.va + slot * KPROBE_INSN_SLOT_BYTES };
  }

  /** __free_insn_slot() + collect_one_slot(): a page whose last slot goes is freed unless it is the only page. */
  release(page: KprobeInsnPage, va: number): void {
    const slot = (va - page.area.va) / KPROBE_INSN_SLOT_BYTES;
    assert(page.used[slot] === 1, 'freeing a clean kprobe slot');
    page.used[slot] = 0;
    page.nused--;
    if (page.nused > 0 || this.pages.length === 1) return;
    this.pages.splice(this.pages.indexOf(page), 1);
    this.source.free(page.area);
  }
}
