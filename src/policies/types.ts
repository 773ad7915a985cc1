/**
 * The one small allocator interface that execmem and every re-implemented Linux design share.
 *
 * Why: the project's claim ("better than what Linux merged") is only testable when the same
 * work runs through each design on the same machine. Consumers (module loader, BPF JIT flow,
 * trampolines) and workloads talk only to this interface, so a design is swapped by name and
 * nothing else changes. The lifecycle mirrors the kernel's: allocate, write while loading,
 * finalize (the point where Linux's legacy path calls set_memory_ro/x, and bpf_prog_pack copies
 * its RW buffer in with text_poke_copy), free, and seal for ro_after_init after init.
 *
 * Two things a caller may say beyond (type, size), because Linux's designs depend on them:
 * - who allocates (`AllocHint.caller`): a BPF trampoline is type `bpf`, but x86 Linux before 6.8
 *   ("x86, bpf: Use bpf_prog_pack for bpf trampoline", 3ba026fca878) gave each trampoline image a
 *   page of its own (bpf_tramp_image_alloc; W+X before 6.1) while programs went through
 *   bpf_prog_pack;
 * - which allocations form one module load (`allocModule`): Linux before 6.4 laid a module out as
 *   one core and one init allocation (layout_sections / move_module), not one per section.
 * Designs that do not care ignore both; `allocModuleSections` gives every allocator the batch.
 *
 * Addresses are 48-bit numbers (base/addr.ts).
 */
import type { ExecmemType } from '../arch/types.js';

/** Kernel call sites a design may treat apart from the type's default path. */
export const ALLOC_CALLERS = ['bpf_trampoline'] as const;
export type AllocCaller = (typeof ALLOC_CALLERS)[number];

export interface AllocHint {
  /** The kernel caller, where a design treats it differently from others of the same type. */
  readonly caller?: AllocCaller;
}

/** One memory region of a module load (kernel/module: one `enum mod_mem_type`). */
export interface ModuleSection {
  readonly type: ExecmemType;
  readonly sizeBytes: number;
  /** Freed after the module's init ran (MOD_INIT_TEXT / _RODATA / _DATA). */
  readonly init: boolean;
  /** Alignment the section contents need (the ELF sh_addralign), a power of two; default none. */
  readonly alignBytes?: number;
}

export interface ExecAllocator {
  /** Policy name as reports print it (e.g. 'execmem', 'module_alloc', 'bpf_prog_pack'). */
  readonly name: string;
  /** Allocate `sizeBytes` for `type`; returns the start address. Throws on failure, changing nothing. */
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number, hint?: AllocHint): number;
  /**
   * load_module's allocation step: every region of one module at once, one address per section
   * in order; each section is then written, finalized, sealed and freed on its own. All or
   * nothing. Optional: `allocModuleSections` falls back to one `alloc` per section.
   */
  allocModule?(sections: readonly ModuleSection[]): number[];
  /**
   * Write bytes into a live allocation, through whatever path the design uses. `bytes` is read
   * during the call only (a design that needs them later copies them, as bpf_prog_pack copies
   * into its RW image): the replay reuses one buffer for every write (workloads/replay.ts).
   */
  write(va: number, bytes: Uint8Array): void;
  /** Loading of this allocation is complete: apply final protections / publish the code. */
  finalize(va: number): void;
  /** Make a ro_after_init allocation read-only (after the module's init ran). */
  seal(va: number): void;
  /** Free an allocation (size recovered internally). */
  free(va: number): void;
  /** Release cached memory the design keeps (no-op where it keeps none). */
  shrink(): void;
  /** Bytes currently allocated to callers and bytes the design keeps mapped for them. */
  usage(): { liveBytes: number; mappedBytes: number };
  /**
   * Optional: run `fn`, whose calls (writes, finalizes, frees) form one hand-over, as one batch
   * (ours: execmem.batch, one write session for all of them). Absent for the Linux designs: their
   * kernels write section by section and free region by region, each call on its own. Callers
   * use `inBatch`, which runs `fn` plainly where there is no batch. The calls inside keep their
   * own failure semantics; an exception from `fn` ends the batch and propagates.
   */
  batch?(fn: () => void): void;
}

/** Run `fn` as one batch where the allocator has batch(), else plainly. */
export function inBatch(allocator: ExecAllocator, fn: () => void): void {
  if (allocator.batch !== undefined) allocator.batch(fn);
  else fn();
}

/**
 * Allocate a module's sections through `allocator.allocModule` where it has one, else one `alloc`
 * per section. On failure the sections already
 * allocated are freed again and the error is rethrown, so the call is all or nothing.
 */
export function allocModuleSections(allocator: ExecAllocator, sections: readonly ModuleSection[]): number[] {
  if (allocator.allocModule !== undefined) return allocator.allocModule(sections);
  const vas: number[] = [];
  try {
    for (const s of sections) vas.push(allocator.alloc(s.type, s.sizeBytes, s.alignBytes));
  } catch (e) {
    for (const va of vas) allocator.free(va);
    throw e;
  }
  return vas;
}
