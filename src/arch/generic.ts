/**
 * A generic architecture with no alias-write (patching) primitive.
 *
 * Why it exists: Rick Edgecombe, Song Liu and tglx all pointed out that text_poke is not
 * available everywhere, so the update helper must fall back to unprotect/memcpy/protect inside
 * the helper under one lock (Kent's jitalloc_update). This arch exercises that path. It reuses
 * the x86-64 address layout for concreteness but has Linux's *default* execmem info
 * (mm/execmem.c default_execmem_info: EXECMEM_DEFAULT = {VMALLOC_START, VMALLOC_END,
 * PAGE_KERNEL_EXEC, alignment 1}); we record its protection as 'rw' because with
 * STRICT_MODULE_RWX the loader write-protects afterwards, and an 'rwx' default would be a W^X
 * violation by construction. Trap pattern: four zero bytes, an undefined instruction on common
 * RISC encodings (arm64 UDF #0, riscv c.unimp).
 *
 * TLB maintenance and CPA: x86's (IPIs to every other CPU, the 33-page flush ceiling,
 * change_page_attr with splits on demand, no collapse). Architectures without broadcast TLB
 * invalidation reach other CPUs by IPI (riscv: SBI remote fences or IPIs), so IPIs are the
 * conservative default for an arch the machine knows nothing specific about.
 */

import type { ArchSpec, ExecmemRange, ExecmemType } from './types.js';
import { x86_64 } from './x86_64.js';

export const generic: ArchSpec = {
  ...x86_64,
  name: 'generic',
  trapPattern: Uint8Array.of(0, 0, 0, 0),
  trapAlignBytes: 4,
  patch: 'none',
  pokeMaxPages: 0,
  icacheMaintenance: false,
  cpaCollapse: false,
  cpaKind: 'change_page_attr',
  kernelTlbFlush: 'ipi',
  kernelFlushCeilingPages: 33,
  directMapPageGranular: false,
  kaslrModuleOffsetPagesMax: 0,
  execmemRanges(): Partial<Record<ExecmemType, ExecmemRange>> {
    const range = x86_64.layout.vmalloc;
    return {
      module_text: {
        range,
        fallback: null,
        prot: 'rw',
        alignBytes: 1,
        flags: { kasanShadow: false, roxCache: false },
      },
    };
  },
};
