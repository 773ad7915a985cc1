/**
 * arm64 facts (4 KiB granule, 48-bit VA, 4-level tables with 1G/2M block and 4K page leaves).
 *
 * Sources (see ../shared/research/linux-execmem.md, section 2.4 and 5):
 * - Documentation/arch/arm64/memory.rst (48-bit VA, 4K pages): linear map 0xffff000000000000
 *   (128 TiB), modules 0xffff800000000000 (2 GiB), vmalloc from 0xffff800080000000, fixed
 *   mappings near 0xfffffbfff0000000. The kernel image sits at the start of vmalloc
 *   (KIMAGE_VADDR = MODULES_END).
 * - arch/arm64/mm/init.c module_init_limits(): a 128 MiB window for CALL26/JUMP26 without PLTs and
 *   a 2 GiB window for PREL32 with PLTs, both containing the kernel image; without KASLR they sit
 *   at kernel_end - 128M and kernel_end - 2G. EXECMEM_DEFAULT = {direct window, PAGE_KERNEL,
 *   alignment 1, fallback = PLT window}; KPROBES = {vmalloc, PAGE_KERNEL_ROX}; BPF = {vmalloc,
 *   PAGE_KERNEL}. No ROX cache on arm64.
 *   Modelled: the !kaslr_enabled() branch. With KASLR, module_init_limits() puts the direct
 *   window at random_bounding_box(SZ_128M, _text, _end) and the PLT window around it, and with
 *   CONFIG_RANDOMIZE_MODULE_REGION_FULL (Debian) there is no direct window at all, only a random
 *   2 GiB box; 6.1 (Debian 12) did the same in kaslr_init(): module_alloc_base random within
 *   [_end - 2G, _text), module_alloc() trying base + 128M then base + 2G. Not modelled (no arm64
 *   KASLR here); what it costs in module PLTs is measured in test/modules-arm64.test.ts.
 * - Branch reach drives module PLTs (consumers/modules/plt-arm64.ts): a CALL26/JUMP26 from
 *   module text beyond +-128 MiB of its target costs a 12-byte PLT entry; ADRP reaches +-4 GiB.
 * - Trap fill: AARCH64_BREAK_FAULT = AARCH64_BREAK_MON (0xd4200000) | FAULT_BRK_IMM (0x100) << 5
 *   = 0xd4202000, a BRK that faults on purpose (arch/arm64/include/asm/insn-def.h); BPF's
 *   jit_fill_hole() fills with it.
 * - Patching: arch/arm64/kernel/patching.c maps the page at fixmap slot FIX_TEXT_POKE0 under the
 *   raw spinlock patch_lock with IRQs off, writes, then caches_clean_inval_pou() (I-cache).
 *   aarch64_insn_copy() goes page by page.
 * - No CPA collapse of large mappings on arm64 (the x86 commit 41d88484c71c is x86-only).
 * - TLB maintenance of kernel mappings is broadcast by hardware, never by IPI
 *   (arch/arm64/include/asm/tlbflush.h): flush_tlb_kernel_range() issues TLBI VAALE1IS per page,
 *   and above MAX_DVM_OPS = PTRS_PER_PTE = 512 pages ("pages >= MAX_DVM_OPS", v6.x
 *   __flush_tlb_range_limit_excess) calls flush_tlb_all() = TLBI VMALLE1IS. We model a CPU without
 *   FEAT_TLBIRANGE (range TLBIs would raise that limit); the ceiling is therefore 511 pages.
 * - set_memory_*: arch/arm64/mm/pageattr.c change_memory_common() (v6.x before the BBML2 rework of
 *   v6.18): vmalloc ranges only; with rodata=full (CONFIG_RODATA_FULL_DEFAULT_ENABLED, the
 *   default) an RO/RW change is repeated on the linear alias page by page, each page with its own
 *   __change_memory_common() -> flush_tlb_kernel_range(); then vm_unmap_aliases(); then the range
 *   itself and one flush_tlb_kernel_range() over it. No CPA_FLUSHTLB test: the flushes happen
 *   whether or not a PTE changed. set_memory_rox is the generic include/linux/set_memory.h one:
 *   set_memory_ro() then set_memory_x().
 * - Linear map granularity: can_set_direct_map() (rodata=full) makes map_mem() pass
 *   NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS (arch/arm64/mm/mmu.c), so the linear map is 4 KiB pages
 *   from boot and set_memory_* / set_direct_map_*_noflush never split it. (v6.18 maps it with
 *   blocks on CPUs with BBML2_NOABORT and splits on demand; not modelled.)
 */
import type { ArchSpec, ExecmemRange, ExecmemType } from './types.js';

const MODULES_VADDR = 0x800000000000; // 0xffff800000000000
const MODULES_END = 0x800080000000; // + 2 GiB
const KIMAGE_VADDR = MODULES_END;
const KERNEL_TEXT_BYTES = 24 * 1024 * 1024;
const KERNEL_RODATA_BYTES = 10 * 1024 * 1024;
const KERNEL_DATA_BYTES = 4 * 1024 * 1024;
const KERNEL_END = KIMAGE_VADDR + KERNEL_TEXT_BYTES + KERNEL_RODATA_BYTES + KERNEL_DATA_BYTES;
const SZ_128M = 128 * 1024 * 1024;
const SZ_2G = 2 * 1024 * 1024 * 1024;
const VMALLOC = { start: MODULES_END, end: 0xfbfff0000000 };
const flags = { kasanShadow: true, roxCache: false };

export const arm64: ArchSpec = {
  name: 'arm64',
  addrForm: 'ttbr1',
  pageBytes: 4096,
  leafBytes: [4096, 2097152, 1073741824],
  layout: {
    directMapStart: 0x000000000000, // 0xffff000000000000
    directMapEnd: 0x800000000000, // 128 TiB
    vmalloc: VMALLOC,
    kernelImage: {
      textStart: KIMAGE_VADDR,
      textBytes: KERNEL_TEXT_BYTES,
      rodataBytes: KERNEL_RODATA_BYTES,
      dataBytes: KERNEL_DATA_BYTES,
    },
    modules: { start: MODULES_VADDR, end: MODULES_END },
    modulesKaslr: { start: MODULES_VADDR, end: MODULES_END },
    // FIX_TEXT_POKE0: one page in the fixmap region.
    pokeArea: { start: 0xfbfffdff0000, end: 0xfbfffdff1000 },
  },
  trapPattern: Uint8Array.of(0x00, 0x20, 0x20, 0xd4), // 0xd4202000 little-endian
  trapAlignBytes: 4,
  patch: 'fixmap',
  pokeMaxPages: 1,
  icacheMaintenance: true,
  cpaCollapse: false,
  cpaKind: 'change_memory_common',
  kernelTlbFlush: 'broadcast',
  kernelFlushCeilingPages: 511,
  directMapPageGranular: true,
  branchReach: { directBytes: SZ_128M, pltBytes: SZ_2G },
  kaslrModuleOffsetPagesMax: 0,
  /**
   * Without KASLR: direct window [kernel_end - 128M, kernel_end), PLT window [kernel_end - 2G,
   * kernel_end). The kernel image itself lies inside both windows; the machine's VA allocator
   * holds it as busy, as vmalloc's vmap_area tree does on Linux. `modulesStart` shifts both
   * windows down (KASLR-style), keeping them around the image.
   */
  execmemRanges(modulesStart: number): Partial<Record<ExecmemType, ExecmemRange>> {
    const shift = modulesStart - MODULES_VADDR;
    const direct = { start: KERNEL_END - SZ_128M - shift, end: KERNEL_END };
    const plt = { start: KERNEL_END - SZ_2G - shift, end: KERNEL_END };
    const text: ExecmemRange = { range: direct, fallback: plt, prot: 'rw', alignBytes: 1, flags };
    return {
      module_text: text,
      kprobes: { range: VMALLOC, fallback: null, prot: 'rox', alignBytes: 1, flags },
      bpf: { range: VMALLOC, fallback: null, prot: 'rw', alignBytes: 1, flags },
    };
  },
};
