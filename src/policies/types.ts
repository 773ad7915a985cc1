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
 * Addresses are 48-bit numbers (base/addr.ts).
 */
import type { ExecmemType } from '../arch/types.js';

export interface ExecAllocator {
  /** Policy name as reports print it (e.g. 'execmem', 'module_alloc', 'bpf_prog_pack'). */
  readonly name: string;
  /** Allocate `sizeBytes` for `type`; returns the start address. Throws on failure, changing nothing. */
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number): number;
  /** Write bytes into a live allocation, through whatever path the design uses. */
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
}
