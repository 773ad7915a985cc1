/**
 * Which Linux kernel a design is, as data: the few facts that differ between the kernel versions
 * modelled, and the per-architecture facts they combine with, each with the commit or function it
 * comes from (read with the search tools; see each field).
 *
 * Why data and not one class per kernel: the versions share almost every mechanism (vmalloc per
 * allocation, set_memory_*, the kprobe slot cache, bpf_prog_pack, the ROX cache); what changes is
 * which mechanism serves which caller and how many set_memory calls a step costs. A profile per
 * design keeps each row one named kernel version and makes the differences between rows readable
 * in one place (docs/FIDELITY.md is written from these comments).
 */
import type { ArchName } from '../arch/types.js';
import type { LinuxExecmemType } from './common.js';

export interface KernelProfile {
  /** The one kernel version modelled, as reports print it. */
  readonly version: string;
  /**
   * Module memory layout. 'core-init' (before 6.4): kernel/module.c layout_sections() puts text,
   * rodata, ro_after_init and data of a module in ONE core allocation and the init parts in ONE
   * init allocation, each part page-aligned (CONFIG_STRICT_MODULE_RWX), and move_module() takes
   * each with one module_alloc(). 'per-section' (6.4+, "module: replace module_layout with
   * module_memory", Song Liu): module_memory_alloc() per mod_mem_type.
   */
  readonly moduleLayout: 'core-init' | 'per-section';
  /**
   * Whether set_memory_rox() exists: "mm: Introduce set_memory_rox()" (d48567c9a0d1) and
   * "x86/mm: Implement native set_memory_rox()" (60463628c9e0), both in the x86/mm pull for 6.2.
   * Before, every caller made text read-only, then executable: two CPA calls (5.17 and 6.1
   * kprobes alloc_insn_page, ftrace create_trampoline, bpf_jit_binary_lock_ro, alloc_new_pack,
   * bpf_trampoline_update, as the 6.2 diff of 1f6eae430528 shows).
   */
  readonly hasSetMemoryRox: boolean;
  /**
   * Whether module text is finalized with one set_memory_rox (module_enable_text_rox, "module:
   * Use set_memory_rox()", Christophe Leroy, modules-next for 6.8) instead of module_enable_ro's
   * set_memory_ro plus module_enable_x's set_memory_x.
   */
  readonly moduleTextRox: boolean;
  /**
   * Arches whose BPF JIT allocates programs through bpf_prog_pack (bpf_jit_binary_pack_alloc):
   * x86 since 5.18 ("bpf: Introduce bpf_prog_pack allocator"), arm64 since 6.9 (Puranjay Mohan,
   * "bpf, arm64: use bpf_prog_pack for memory management", 1dad391daef1, in the bpf-next pull of
   * 2024-02-29 for the 6.9 merge window). Elsewhere bpf_jit_binary_alloc().
   */
  readonly bpfPackArches: readonly ArchName[];
  /**
   * BPF trampoline images. 'rwx-page': kernel/bpf/trampoline.c bpf_jit_alloc_exec_page(), a page
   * made executable and "Keep image as writeable" for its whole life, until "bpf: Enforce W^X for
   * bpf trampoline" (Song Liu, <20220926184739.3512547-3-song@kernel.org>, bpf-next for 6.1).
   * 'page': bpf_tramp_image_alloc() = bpf_jit_alloc_exec(PAGE_SIZE), written, then set_memory_ro
   * + set_memory_x (6.1), or the __weak arch_alloc_bpf_trampoline() page + set_memory_rox later.
   */
  readonly bpfTrampoline: 'rwx-page' | 'page';
  /**
   * Arches that put trampolines in bpf_prog_pack (arch_alloc_bpf_trampoline): x86 since "x86, bpf:
   * Use bpf_prog_pack for bpf trampoline" (3ba026fca878, bpf-next pull of 2023-12-18, Linux 6.8).
   */
  readonly trampolinePackArches: readonly ArchName[];
  /**
   * Linux types served by the execmem ROX cache where the arch has one (archHasExecmemRox):
   * EXECMEM_MODULE_TEXT since 6.13 (re-enabled by 64f6a4e10c05), EXECMEM_KPROBES and
   * EXECMEM_FTRACE since 6.17 ("x86: enable EXECMEM_ROX_CACHE for ftrace and kprobes",
   * <20250713071730.4117334-1-rppt@kernel.org>: patch 7 60c7eb8f/36de1e42 and patch 8 5d79c2be5081,
   * the latter named by the 6.17-rc2 boot-tracing fix). EXECMEM_BPF keeps KASAN_SHADOW and
   * PAGE_KERNEL in every merged kernel; the 2026 bpf-next series adds it.
   */
  readonly roxCacheTypes: readonly LinuxExecmemType[];
}

/**
 * ARCH_HAS_EXECMEM_ROX: only x86_64 selects it ("select ARCH_HAS_EXECMEM_ROX if X86_64 &&
 * STRICT_MODULE_RWX", <20250603111446.2609381-3-rppt@kernel.org>). Elsewhere execmem_validate()
 * strips EXECMEM_ROX_CACHE and execmem_force_rw() is an empty stub.
 */
export function archHasExecmemRox(arch: ArchName): boolean {
  return arch === 'x86_64';
}

/**
 * A native one-call set_memory_rox: x86 (arch/x86/include/asm/set_memory.h "#define
 * set_memory_rox set_memory_rox", 6.2). arm64 has none, so include/linux/set_memory.h's fallback
 * calls set_memory_ro then set_memory_x (two CPA calls); `generic` behaves the same.
 */
export function nativeSetMemoryRox(arch: ArchName): boolean {
  return arch === 'x86_64';
}

/**
 * Kprobe instruction pages mapped ROX by vmalloc itself, with no set_memory call: arm64's
 * alloc_insn_page() = __vmalloc_node_range(PAGE_SIZE, 1, VMALLOC_START, VMALLOC_END, GFP_KERNEL,
 * PAGE_KERNEL_ROX, VM_FLUSH_RESET_PERMS, ...) in 5.x, and EXECMEM_KPROBES = {vmalloc range,
 * PAGE_KERNEL_ROX} in its execmem table since 6.10. x86 maps them RW and calls set_memory_*
 * (or takes them from the ROX cache in 6.17); `generic` keeps the x86 flow.
 */
export function kprobePagesMappedRox(arch: ArchName): boolean {
  return arch === 'arm64';
}

/** Linux 5.17: the last release before bpf_prog_pack (Aaron Lu's "before" kernel). */
export const LINUX_5_17: KernelProfile = {
  version: 'Linux 5.17',
  moduleLayout: 'core-init',
  hasSetMemoryRox: false,
  moduleTextRox: false,
  bpfPackArches: [],
  bpfTrampoline: 'rwx-page',
  trampolinePackArches: [],
  roxCacheTypes: [],
};

/** Linux 6.1: the first LTS with bpf_prog_pack (Aaron Lu's "after" kernel was v6.1-rc3). */
export const LINUX_6_1: KernelProfile = {
  ...LINUX_5_17,
  version: 'Linux 6.1',
  bpfPackArches: ['x86_64'],
  bpfTrampoline: 'page',
};

/** Linux 6.4: per-section module memory, set_memory_rox; the base of the jit_alloc proposal. */
export const LINUX_6_4: KernelProfile = {
  ...LINUX_6_1,
  version: 'Linux 6.4',
  moduleLayout: 'per-section',
  hasSetMemoryRox: true,
};

/** Linux 6.10: execmem without the ROX cache; packs for programs (x86, arm64) and x86 trampolines. */
export const LINUX_6_10: KernelProfile = {
  ...LINUX_6_4,
  version: 'Linux 6.10',
  moduleTextRox: true,
  bpfPackArches: ['x86_64', 'arm64'],
  trampolinePackArches: ['x86_64'],
};

/** Linux 6.17: the ROX cache for module text, kprobes and ftrace on x86. */
export const LINUX_6_17: KernelProfile = {
  ...LINUX_6_10,
  version: 'Linux 6.17',
  roxCacheTypes: ['module_text', 'kprobes', 'ftrace'],
};

/**
 * Linux 6.17 plus the unmerged 2026 bpf-next series "x86/bpf: Enable EXECMEM_ROX_CACHE for BPF
 * allocations" and "bpf: alloc_prog_pack(): Skip ROX management for already ROX memory"
 * (research/linux-execmem.md section 2.4; titles only there). The pack code it produces
 * (bpf_jit_mem_is_rox() = execmem_is_rox(EXECMEM_BPF) skipping fill, set_vm_flush_reset_perms and
 * set_memory_rox in alloc_new_pack and for dedicated allocations) was read in a 2026 tree.
 */
export const LINUX_6_17_BPF_NEXT: KernelProfile = {
  ...LINUX_6_17,
  version: 'Linux 6.17 + bpf-next (2026, unmerged)',
  roxCacheTypes: ['module_text', 'kprobes', 'ftrace', 'bpf'],
};
