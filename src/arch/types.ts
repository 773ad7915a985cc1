/**
 * Per-architecture facts: the vocabulary every layer above shares.
 *
 * Why a data table and not hooks: tglx asked for arch quirks to be expressed as data ("It would
 * not contain a single arch_foo() function at all", <87v8mndy3y.ffs@tglx>), and Linux's
 * `struct execmem_info` is exactly that: per type a range, a fallback range, a pgprot, an
 * alignment and flags. Everything here is plain data plus tiny pure helpers; nothing here
 * allocates or keeps state.
 *
 * Addresses are 48-bit numbers (see base/addr.ts); ranges are half-open [start, end).
 */
import { toBigAddr, toVa } from '../base/addr.js';

export type ArchName = 'x86_64' | 'arm64' | 'generic';

/** The allocation types of the public API (DESIGN.md section 4). */
export const EXECMEM_TYPES = [
  'module_text',
  'module_rodata',
  'module_ro_after_init',
  'module_data',
  'kprobes',
  'ftrace',
  'bpf',
] as const;
export type ExecmemType = (typeof EXECMEM_TYPES)[number];

/** Half-open virtual address range [start, end), 48-bit numbers. */
export interface VaRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Protections as the allocator and backends name them. `rwx` exists only so that audits and
 * measurement-only baselines can name it; no allocator path may request it.
 */
export type Prot = 'none' | 'ro' | 'rw' | 'rox' | 'rwx';

/** How code is written into read-only executable memory on this architecture. */
export type PatchMechanism =
  /** x86: map the target frames RW at a poking address in a separate mm, local flush only. */
  | 'temporary_mm'
  /** arm64/riscv: map the frame at a fixmap slot under patch_lock, then I-cache maintenance. */
  | 'fixmap'
  /** No alias-write primitive: unprotect/memcpy/protect inside the update helper. */
  | 'none';

/** Linux `enum execmem_range_flags`. */
export interface RangeFlags {
  /** EXECMEM_KASAN_SHADOW: allocate KASAN shadow (modelled as a flag only). */
  readonly kasanShadow: boolean;
  /** EXECMEM_ROX_CACHE: Linux would serve this type from its ROX cache of huge pages. */
  readonly roxCache: boolean;
}

/** Linux `struct execmem_range`, with our protections vocabulary. */
/**
 * How kernel TLB maintenance (flush_tlb_kernel_range, flush_tlb_all) reaches the other CPUs.
 * 'ipi': the initiating CPU interrupts every other one (x86 on_each_cpu, arch/x86/mm/tlb.c).
 * 'broadcast': one TLBI ...IS instruction the interconnect delivers to every CPU, no interrupt
 * (arm64 arch/arm64/include/asm/tlbflush.h: flush_tlb_kernel_range uses TLBI VAALE1IS,
 * flush_tlb_all TLBI VMALLE1IS).
 */
export type KernelTlbFlush = 'ipi' | 'broadcast';

/**
 * Which Linux set_memory_* implementation the arch has (the machine's CPA follows it).
 * 'change_page_attr': x86 arch/x86/mm/pat/set_memory.c change_page_attr_set_clr(): large leaves
 * split on demand (each split a flush_tlb_all), the direct-map alias changed as a range with the
 * call, one cpa_flush per call that changed something.
 * 'change_memory_common': arm64 arch/arm64/mm/pageattr.c: vmalloc ranges only, the linear alias
 * of an RO/RW change updated page by page (rodata=full), each page and the range flushed by their
 * own flush_tlb_kernel_range, changed or not.
 */
export type CpaKind = 'change_page_attr' | 'change_memory_common';

export interface ExecmemRange {
  readonly range: VaRange;
  readonly fallback: VaRange | null;
  readonly prot: Prot;
  readonly alignBytes: number;
  readonly flags: RangeFlags;
}

/** Branch reach of code placed in the module area, relative to the kernel image. */
export interface BranchReach {
  /** Reach of a direct PC-relative call/branch without veneers (x86 rel32: 2 GiB; arm64: 128 MiB). */
  readonly directBytes: number;
  /** Reach with PLTs/veneers, or null when none exist (arm64: 2 GiB with PREL32/PLTs). */
  readonly pltBytes: number | null;
}

export interface KernelImageLayout {
  /** Link address of _text. */
  readonly textStart: number;
  readonly textBytes: number;
  readonly rodataBytes: number;
  readonly dataBytes: number;
}

export interface VaLayout {
  /** Start of the direct (linear) map of all physical memory. */
  readonly directMapStart: number;
  /** Upper bound of the direct map region (the map itself covers installed memory only). */
  readonly directMapEnd: number;
  readonly vmalloc: VaRange;
  readonly kernelImage: KernelImageLayout;
  /** The module area without KASLR. */
  readonly modules: VaRange;
  /** The module area when KASLR is on (x86: starts at 0xffffffffc0000000). */
  readonly modulesKaslr: VaRange;
  /** Where the patching alias lives: x86 user-half poking address range; arm64 fixmap slot. */
  readonly pokeArea: VaRange;
}

export interface ArchSpec {
  readonly name: ArchName;
  /**
   * How 48-bit addresses extend to 64 bits. x86-64: sign-extend bit 47 (canonical form).
   * arm64: every simulated address is a kernel (TTBR1) address, so the top 16 bits are all ones.
   */
  readonly addrForm: 'sign-extend-47' | 'ttbr1';
  readonly pageBytes: 4096;
  /** Leaf sizes the page tables support, smallest first: 4K, 2M (PMD), 1G (PUD). */
  readonly leafBytes: readonly [4096, 2097152, 1073741824];
  readonly layout: VaLayout;
  /** Bytes written over unused and freed executable memory; repeated to fill. */
  readonly trapPattern: Uint8Array;
  /** Instruction size granule the trap pattern must be aligned to (1 on x86, 4 on arm64). */
  readonly trapAlignBytes: number;
  readonly patch: PatchMechanism;
  /** Pages one alias-write step may map (x86 text_poke: 2; arm64 fixmap: 1). */
  readonly pokeMaxPages: number;
  /** After writing code, must the I-cache be cleaned/invalidated (arm64) or not (x86 coherent)? */
  readonly icacheMaintenance: boolean;
  /** Does CPA collapse 512 uniform entries back into a large leaf (x86 since 6.14-ish, 41d88484c71c)? */
  readonly cpaCollapse: boolean;
  /** See CpaKind. */
  readonly cpaKind: CpaKind;
  /** See KernelTlbFlush. */
  readonly kernelTlbFlush: KernelTlbFlush;
  /**
   * flush_tlb_kernel_range() invalidates page by page up to this many pages; a longer range
   * flushes every CPU's whole TLB instead (x86 tlb_single_page_flush_ceiling = 33; arm64
   * MAX_DVM_OPS - 1 = 511, as `pages >= MAX_DVM_OPS` goes to flush_tlb_all()).
   */
  readonly kernelFlushCeilingPages: number;
  /**
   * Linux maps the direct (linear) map with 4 KiB pages from boot, so set_memory_* never splits it
   * (arm64 with rodata=full, the default: map_mem() with NO_BLOCK_MAPPINGS). The machine may still
   * hold it as larger leaves internally; see machine/cpa.ts.
   */
  readonly directMapPageGranular: boolean;
  readonly branchReach: BranchReach;
  /** KASLR random module-area start offset, in pages: [1, max] (x86: get_random_u32_inclusive(1, 1024)). */
  readonly kaslrModuleOffsetPagesMax: number;
  /**
   * The arch's execmem range table (Linux `execmem_arch_setup()`), given the module-area start
   * after any KASLR offset. Types missing here inherit `module_text` (EXECMEM_DEFAULT) as Linux's
   * `execmem_init_missing()` does, except that data types get non-executable protections.
   */
  execmemRanges(modulesStart: number, kaslr: boolean): Partial<Record<ExecmemType, ExecmemRange>>;
}

/** Convenience: is this protection executable? */
export function protIsExec(prot: Prot): boolean {
  return prot === 'rox' || prot === 'rwx';
}

/** Convenience: is this protection writable? */
export function protIsWrite(prot: Prot): boolean {
  return prot === 'rw' || prot === 'rwx';
}

/** Text-like types hold instructions and are never plainly writable once handed out. */
export function typeIsText(type: ExecmemType): boolean {
  return type === 'module_text' || type === 'kprobes' || type === 'ftrace' || type === 'bpf';
}

/** The 64-bit form of a 48-bit address on this architecture. */
export function archToBig(arch: ArchSpec, va: number): bigint {
  if (arch.addrForm === 'ttbr1') return BigInt(va) | 0xffff_0000_0000_0000n;
  return toBigAddr(va);
}

/** The 48-bit form of a 64-bit address on this architecture; throws RangeError if impossible. */
export function archToVa(arch: ArchSpec, addr: bigint): number {
  if (arch.addrForm === 'ttbr1') {
    if (addr >> 48n !== 0xffffn)
      throw new RangeError(`0x${addr.toString(16)} is not an arm64 kernel (TTBR1) address`);
    return Number(addr & 0xffff_ffff_ffffn);
  }
  return toVa(addr);
}

/** Hex rendering of a 48-bit address in the architecture's 64-bit form. */
export function archHex(arch: ArchSpec, va: number): string {
  return `0x${archToBig(arch, va).toString(16).padStart(16, '0')}`;
}
