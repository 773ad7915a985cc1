/**
 * The policy registry: every design by the name reports print.
 *
 * Why a table: `execmem compare --policies a,b` and the report pick designs by name, and every
 * design must be created on a machine the caller provides (a fresh one per design, so one design's
 * leftovers never cost another anything). Order is historical, ours last.
 */
import type { ArchName } from '../arch/types.js';
import type { Machine } from '../machine/machine.js';
import { createBpfProgPack } from './bpf-prog-pack.js';
import type { InstrumentedAllocator } from './common.js';
import { createExecmemPolicy } from './execmem.js';
import { createExecmemRox } from './execmem-rox.js';
import { createJitAlloc2023 } from './jit-alloc.js';
import { createExecmem610, createModuleAlloc } from './plain.js';

export const POLICY_NAMES = [
  'module_alloc',
  'bpf_prog_pack',
  'jit_alloc-2023',
  'execmem-6.10',
  'execmem-rox',
  'execmem',
] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export interface PolicySpec {
  /** The one kernel version the design models, e.g. 'Linux 6.10' (ours: 'execmem'). */
  readonly kernel: string;
  readonly describe: string;
  /**
   * The policy this design behaves exactly like on `arch`, or null (e.g. no ROX cache on arm64:
   * the ROX-cache design is then the plain execmem path). Reports say so next to the row.
   */
  sameAs(arch: ArchName): PolicyName | null;
  /** True for re-implementations of Linux designs (modelled), false for our allocator. */
  readonly modelled: boolean;
  create(machine: Machine, seed: number): InstrumentedAllocator;
}

export const POLICIES: Readonly<Record<PolicyName, PolicySpec>> = {
  module_alloc: {
    kernel: 'Linux (legacy)',
    sameAs: () => null,
    describe: 'legacy (pre-execmem): one vmalloc per allocation on 4 KiB pages, set_memory_ro then _x',
    modelled: true,
    create: (m) => createModuleAlloc(m),
  },
  bpf_prog_pack: {
    kernel: 'Linux (bpf_prog_pack era)',
    sameAs: () => null,
    describe:
      'BPF in 64 B chunks of 2 MiB packs (4 KiB pages), text_poke_copy/_set; other types as execmem-6.10',
    modelled: true,
    create: (m) => createBpfProgPack(m),
  },
  'jit_alloc-2023': {
    kernel: 'proposal (May 2023)',
    sameAs: () => null,
    describe: "Kent Overstreet's slab: power-of-two classes 16 B..2 KiB on 4 KiB ROX pages, text_poke",
    modelled: true,
    create: (m) => createJitAlloc2023(m),
  },
  'execmem-6.10': {
    kernel: 'Linux 6.10',
    sameAs: () => null,
    describe: 'execmem without cache: execmem_vmalloc per allocation, page-granular, set_memory_rox',
    modelled: true,
    create: (m) => createExecmem610(m),
  },
  'execmem-rox': {
    kernel: 'Linux (July 2025 ROX cache)',
    sameAs: (arch) => (arch === 'x86_64' ? null : 'execmem-6.10'),
    describe: 'execmem ROX cache (July 2025): page-granular first fit in 2 MiB ROX blocks, force_rw windows',
    modelled: true,
    create: (m) => createExecmemRox(m),
  },
  execmem: {
    kernel: 'execmem (ours)',
    sameAs: () => null,
    describe: 'ours: per-type 2 MiB large-page caches with sub-page packing and alias writes',
    modelled: false,
    create: (m, seed) => createExecmemPolicy(m, seed),
  },
};

export function policyByName(name: string): PolicySpec {
  const spec = (POLICIES as Record<string, PolicySpec | undefined>)[name];
  if (!spec) throw new RangeError(`unknown policy '${name}' (known: ${POLICY_NAMES.join(', ')})`);
  return spec;
}

export type { InstrumentedAllocator, LiveExtent } from './common.js';
export { PolicyError } from './errors.js';
