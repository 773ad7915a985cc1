/**
 * arm64 set_memory_*: arch/arm64/mm/pageattr.c change_memory_common() (v6.x before the v6.18
 * BBML2 rework; read against the Linux 6.6-6.17 sources), one machine setMemory call at a time.
 *
 * What one change_memory_common(addr, numpages, set_mask, clear_mask) call does, in order:
 * 1. With rodata=full (the default) and an RO/RW change (set or clear PTE_RDONLY, i.e.
 *    set_memory_ro / set_memory_rw), the linear-map alias of every page of the range is changed
 *    on its own: __change_memory_common(page_address(page), PAGE_SIZE) -> one
 *    flush_tlb_kernel_range() per page. (Since c55191e96caa the loop ran over every page of the vm
 *    area; a late-2025 fix by Yang Shi limits it to the range's pages, which is what we model;
 *    the callers modelled change whole areas, where both agree.)
 *    The linear map is 4 KiB pages (arch.directMapPageGranular), so this never splits it.
 *    set_memory_x / set_memory_nx leave the linear map alone (it is always PXN).
 * 2. vm_unmap_aliases() (machine.ts, once per setMemory call: a second purge finds nothing).
 * 3. The range itself: __change_memory_common(start, size) -> one flush_tlb_kernel_range(start,
 *    end), which becomes flush_tlb_all() at MAX_DVM_OPS = 512 pages (cpu.ts applies the ceiling).
 * No CPA_FLUSHTLB test: arm64 flushes whether or not a PTE changed. Every flush is a broadcast
 * TLBI (arch.kernelTlbFlush 'broadcast'), so arm64 runs show broadcastFlushes and no IPIs.
 *
 * Which calls one machine setMemory(prot) stands for (the Linux call a caller makes to reach
 * `prot`): 'rox' is set_memory_rox, which arm64 takes from include/linux/set_memory.h:
 * set_memory_ro() then set_memory_x(); 'rwx' is set_memory_rw + set_memory_x; 'ro' / 'rw' is
 * set_memory_nx when the range holds executable pages (taking X away first, W^X-safe), plus
 * set_memory_ro / set_memory_rw when a page's write permission differs (or when nothing differs:
 * the named call is still made and still flushes).
 *
 * `foldFlushes` (OUR allocator only, execmem's SimBackend for a whole 2 MiB block; the Linux rows
 * never pass it): the linear alias is changed run by run of physically contiguous frames (one
 * __change_memory_common per run instead of per page), and every flush the call owes is folded
 * into ONE flush_tlb_all (TLBI VMALLE1IS + DSB ISH). Linux's own rule for a flush over more than
 * MAX_DVM_OPS = 512 pages is that full flush (flush_tlb_kernel_range); a 2 MiB block's call covers
 * 1024 pages of translations (512 vmalloc + 512 linear), which Linux issues as 512 single-page
 * broadcasts for the alias plus the range. The price is a full flush on every CPU, whose iTLB
 * refills the fetch model counts.
 *
 * Departures from Linux, kept deliberately (open items): Linux refuses addresses outside a
 * VM_ALLOC vmalloc area and areas with VM_ALLOW_HUGE_VMAP (-EINVAL, "Disallow VM_ALLOW_HUGE_VMAP
 * mappings to guarantee that only page mappings are updated and splitting is never needed"). The
 * machine allows both: a huge vmalloc leaf is split as on x86 (counted, one flush_tlb_all each),
 * so designs that map executable memory with 2 MiB leaves can be run on arm64 at all.
 */
import type { Prot } from '../arch/types.js';
import type { Cpa } from './cpa.js';
import { PTE_NX, PTE_PRESENT, PTE_RW } from './types.js';

const PAGE = 4096;

/** One Linux set_memory_* call on arm64: its PTE update, and whether it touches the linear alias. */
interface Arm64Call {
  readonly name: 'ro' | 'rw' | 'x' | 'nx';
  readonly flagsOf: (f: number) => number;
  readonly linearAlias: boolean;
}

const CALLS: Readonly<Record<Arm64Call['name'], Arm64Call>> = {
  ro: { name: 'ro', flagsOf: (f) => f & ~PTE_RW, linearAlias: true },
  rw: { name: 'rw', flagsOf: (f) => f | PTE_RW, linearAlias: true },
  x: { name: 'x', flagsOf: (f) => f & ~PTE_NX, linearAlias: false },
  nx: { name: 'nx', flagsOf: (f) => f | PTE_NX, linearAlias: false },
};

/** change_memory_common() for each Linux call `prot` stands for, on [va, end) (checked mapped). */
export function changeMemoryCommon(cpa: Cpa, va: number, end: number, prot: Prot, foldFlushes = false): void {
  const calls = linuxCalls(cpa, va, end, prot);
  const txn = cpa.begin();
  try {
    // Step 3 first: the only step that can fail (a huge vmalloc leaf's split, see the header).
    for (const c of calls) cpa.change(txn, va, end, c.flagsOf);
  } catch (e) {
    cpa.rollback(txn);
    throw e;
  }
  // Step 1 after it (same outcome: nothing reads memory inside the call): linear-map expansions
  // only, which cannot fail.
  const flushes: number[] = [];
  const dm = cpa.arch.layout.directMapStart;
  const aliased = !cpa.inDirectMap(va) && cpa.arch.directMapPageGranular;
  for (const c of calls) {
    if (c.linearAlias && aliased) {
      const runs = cpa.frameRuns(va, end);
      for (let k = 0; k < runs.length; k += 2) {
        if (foldFlushes) {
          cpa.change(txn, dm + runs[k] * PAGE, dm + (runs[k] + runs[k + 1]) * PAGE, c.flagsOf);
          continue;
        }
        for (let pfn = runs[k]; pfn < runs[k] + runs[k + 1]; pfn++) {
          cpa.change(txn, dm + pfn * PAGE, dm + (pfn + 1) * PAGE, c.flagsOf);
          flushes.push(dm + pfn * PAGE, PAGE);
        }
      }
    }
    flushes.push(va, end - va);
  }
  cpa.commit(txn);
  if (foldFlushes) cpa.cpus.flushAll();
  else for (let k = 0; k < flushes.length; k += 2) cpa.cpus.flushKernelRange(flushes[k], flushes[k + 1]);
}

/** The Linux set_memory_* calls a caller makes to bring [va, end) to `prot` (see the header). */
function linuxCalls(cpa: Cpa, va: number, end: number, prot: Prot): Arm64Call[] {
  if (prot === 'rox') return [CALLS.ro, CALLS.x];
  if (prot === 'rwx') return [CALLS.rw, CALLS.x];
  const writable = prot === 'rw';
  let anyExec = false;
  let wDiffers = false;
  cpa.pt.forEachLeaf(va, end, (t) => {
    if ((t.flags & (PTE_PRESENT | PTE_NX)) === PTE_PRESENT) anyExec = true;
    if (((t.flags & PTE_RW) !== 0) !== writable) wDiffers = true;
  });
  const w = writable ? CALLS.rw : CALLS.ro;
  if (!anyExec) return [w];
  return wDiffers ? [CALLS.nx, w] : [CALLS.nx];
}
