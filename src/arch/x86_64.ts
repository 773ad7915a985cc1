/**
 * x86-64 facts (4-level paging, 48-bit VA, 4 KiB pages).
 *
 * Sources (see ../shared/research/linux-execmem.md):
 * - Documentation/arch/x86/x86_64/mm.rst: direct map at 0xffff888000000000 (64 TiB), vmalloc at
 *   0xffffc90000000000 (32 TiB), kernel text mapping from 0xffffffff80000000, module mapping
 *   space at 0xffffffffa0000000 (1520 MB) up to MODULES_END = 0xffffffffff000000.
 * - arch/x86/include/asm/page_64_types.h: KERNEL_IMAGE_SIZE is 1 GiB with KASLR ("leaving 1 GiB
 *   for modules", so MODULES_VADDR = 0xffffffffc0000000) and 512 MiB otherwise.
 * - arch/x86/mm/init.c execmem_arch_setup() as merged for Linux 6.17: with KASLR the start is
 *   MODULES_VADDR + get_random_u32_inclusive(1, 1024) * PAGE_SIZE; MODULE_TEXT uses
 *   PAGE_KERNEL_ROX with EXECMEM_ROX_CACHE when ROX is supported; KPROBES is PAGE_KERNEL_ROX with
 *   the cache flags and FTRACE takes the cache too, both since the July 2025 series "x86: enable
 *   EXECMEM_ROX_CACHE for ftrace and kprobes" (<20250713071730.4117334-1-rppt@kernel.org>, patches
 *   7 and 8: "[EXECMEM_KPROBES] = { .flags = flags, ... .pgprot = PAGE_KERNEL_ROX }",
 *   "[EXECMEM_FTRACE] = { .flags = flags, ... }", "[EXECMEM_BPF] = { .flags =
 *   EXECMEM_KASAN_SHADOW, ... }"). BPF therefore keeps PAGE_KERNEL and no ROX cache in every merged
 *   kernel (the unmerged 2026 bpf-next commit "x86/bpf: Enable EXECMEM_ROX_CACHE for BPF
 *   allocations" would add it; policies/kernel.ts models that variant apart). MODULE_DATA is
 *   PAGE_KERNEL; no fallback range; alignment MODULE_ALIGN = PAGE_SIZE (without KASAN). Older
 *   kernels' tables differ in protections and flags only (6.10: one PAGE_KERNEL default range);
 *   the policies take those facts from their kernel profile, the ranges from here.
 * - Trap fill: execmem_fill_trapping_insns() = memset(ptr, INT3_INSN_OPCODE (0xcc), size).
 * - Patching: text_poke() through a temporary mm (text_poke_mm) at a randomised user-half address,
 *   at most 2 pages per call, local flush only (arch/x86/kernel/alternative.c).
 * - Branch reach: rel32 (R_X86_64_PC32/PLT32) gives +-2 GiB; modules must be within 2 GiB of the
 *   kernel image, which is why the module area sits just above it.
 * - CPA collapse: commit 41d88484c71c "x86/mm/pat: restore large ROX pages after fragmentation".
 * - TLB maintenance: flush_tlb_kernel_range() and flush_tlb_all() run on_each_cpu() (an IPI to
 *   every other CPU); a kernel range longer than tlb_single_page_flush_ceiling = 33 pages
 *   (arch/x86/mm/tlb.c, "(end - start) > tlb_single_page_flush_ceiling << PAGE_SHIFT") flushes
 *   the whole TLB, and so does cpa_flush() ("numpages > tlb_single_page_flush_ceiling", or
 *   force_flush_all after an alias). Not modelled: AMD INVLPGB broadcast invalidation (v6.15+,
 *   X86_FEATURE_INVLPGB), which replaces those IPIs on Zen 3 and later.
 * - Direct map: 1 GiB leaves (gbpages) that CPA splits on demand (directMapPageGranular false).
 */
import { SZ_4K } from '../base/addr.js';
import type { ArchSpec, ExecmemRange, ExecmemType } from './types.js';

const MODULES_VADDR = 0xffffa0000000; // 0xffffffffa0000000 in 48-bit form
const MODULES_VADDR_KASLR = 0xffffc0000000; // 0xffffffffc0000000
const MODULES_END = 0xffffff000000; // 0xffffffffff000000

const kasanOnly = { kasanShadow: true, roxCache: false };
const roxCache = { kasanShadow: true, roxCache: true };

export const x86_64: ArchSpec = {
  name: 'x86_64',
  addrForm: 'sign-extend-47',
  pageBytes: 4096,
  leafBytes: [4096, 2097152, 1073741824],
  layout: {
    directMapStart: 0x888000000000, // 0xffff888000000000
    directMapEnd: 0xc88000000000, // + 64 TiB
    vmalloc: { start: 0xc90000000000, end: 0xe90000000000 }, // 32 TiB
    kernelImage: {
      textStart: 0xffff81000000, // 0xffffffff81000000
      textBytes: 16 * 1024 * 1024,
      rodataBytes: 8 * 1024 * 1024,
      dataBytes: 4 * 1024 * 1024,
    },
    modules: { start: MODULES_VADDR, end: MODULES_END },
    modulesKaslr: { start: MODULES_VADDR_KASLR, end: MODULES_END },
    // text_poke_mm_addr lies in the user half; poking_init randomises it (we pick a fixed window).
    pokeArea: { start: 0x7f0000000000, end: 0x7f0000400000 },
  },
  trapPattern: Uint8Array.of(0xcc),
  trapAlignBytes: 1,
  patch: 'temporary_mm',
  pokeMaxPages: 2,
  icacheMaintenance: false,
  cpaCollapse: true,
  cpaKind: 'change_page_attr',
  kernelTlbFlush: 'ipi',
  kernelFlushCeilingPages: 33,
  directMapPageGranular: false,
  branchReach: { directBytes: 2 ** 31, pltBytes: null },
  kaslrModuleOffsetPagesMax: 1024,
  execmemRanges(start: number): Partial<Record<ExecmemType, ExecmemRange>> {
    const range = { start, end: MODULES_END };
    const text: ExecmemRange = { range, fallback: null, prot: 'rox', alignBytes: SZ_4K, flags: roxCache };
    const plain: ExecmemRange = { range, fallback: null, prot: 'rw', alignBytes: SZ_4K, flags: kasanOnly };
    return { module_text: text, ftrace: text, kprobes: text, bpf: plain, module_data: plain };
  },
};
