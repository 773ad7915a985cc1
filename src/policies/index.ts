/**
 * The policy registry: every design by the name reports print.
 *
 * Why a table: `execmem compare --policies a,b` and the report pick designs by name, and every
 * design must be created on a machine the caller provides (a fresh one per design, so one design's
 * leftovers never cost another anything). Order is historical (kernel version), ours last.
 * Each Linux row is one kernel version (`kernel`), modelled as that kernel runs it; `describe`
 * says what it does and `sameAs` where an arch makes two rows the same.
 */
import type { ArchName } from '../arch/types.js';
import type { Machine } from '../machine/machine.js';
import type { InstrumentedAllocator } from './common.js';
import { createExecmemPolicy } from './execmem.js';
import { createJitAlloc2023 } from './jit-alloc.js';
import {
  createBpfProgPack,
  createExecmem610,
  createExecmemRox,
  createExecmemRoxBpf,
  createModuleAlloc,
} from './kernel-policy.js';

export const POLICY_NAMES = [
  'module_alloc',
  'bpf_prog_pack',
  'jit_alloc-2023',
  'execmem-6.10',
  'execmem-rox',
  'execmem-rox-bpf',
  'execmem',
] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export interface PolicySpec {
  /** The one kernel version the design models, e.g. 'Linux 6.10' (ours: 'execmem (ours)'). */
  readonly kernel: string;
  readonly describe: string;
  /**
   * The policy this design behaves exactly like on `arch`, or null (e.g. no ROX cache on arm64:
   * the ROX-cache design is then the plain execmem path). Reports say so next to the row.
   */
  sameAs(arch: ArchName): PolicyName | null;
  /**
   * Pages this kernel version leaves writable and executable at once on `arch` (through the
   * mapping or a writable direct-map / linear-map alias), with the Linux function, or null: the
   * W^X audit must then stay 0. Ours is always null (DESIGN.md rule 2).
   */
  wxHoles(arch: ArchName): string | null;
  /** True for re-implementations of Linux designs (modelled), false for our allocator. */
  readonly modelled: boolean;
  create(machine: Machine, seed: number): InstrumentedAllocator;
}

/**
 * arm64 alloc_insn_page(): EXECMEM_KPROBES is {vmalloc, PAGE_KERNEL_ROX}, so vmalloc maps the
 * page ROX and no set_memory_* touches its linear-map alias, which stays writable (kernel.ts
 * kprobePagesMappedRox). jit_alloc-2023 takes kprobe slots from its own slab instead.
 */
const ARM64_KPROBE_PAGES =
  'arm64 kprobe slot pages: mapped PAGE_KERNEL_ROX by vmalloc (alloc_insn_page) while their linear-map alias stays writable';
const arm64KprobeHoles = (arch: ArchName): string | null => (arch === 'arm64' ? ARM64_KPROBE_PAGES : null);

/** Only x86 has the ROX cache (ARCH_HAS_EXECMEM_ROX); elsewhere the 6.17 designs are 6.10's. */
const sameAs610WithoutRoxCache = (arch: ArchName): PolicyName | null =>
  arch === 'x86_64' ? null : 'execmem-6.10';

export const POLICIES: Readonly<Record<PolicyName, PolicySpec>> = {
  module_alloc: {
    kernel: 'Linux 5.17',
    sameAs: () => null,
    wxHoles: (arch) =>
      [
        'BPF trampoline pages: set_memory_x only, "Keep image as writeable" (kernel/bpf/trampoline.c bpf_jit_alloc_exec_page, until 6.1)',
        arm64KprobeHoles(arch),
      ]
        .filter((x) => x !== null)
        .join('; '),
    describe:
      'Linux 5.17: one core and one init module_alloc per module, text set_memory_ro then _x; BPF a ' +
      'page per program (bpf_jit_binary_alloc, ro then x); BPF trampolines W+X pages; kprobe slots on ro+x pages',
    modelled: true,
    create: (m) => createModuleAlloc(m),
  },
  bpf_prog_pack: {
    kernel: 'Linux 6.1',
    wxHoles: arm64KprobeHoles,
    sameAs: () => null,
    describe:
      'Linux 6.1: modules, kprobes, ftrace as 5.17; BPF programs in 64 B chunks of 2 MiB packs (4 KiB ' +
      'pages, ro then x once), text_poke_copy/_set (arm64: no packs before 6.9); trampolines a page each, ro then x',
    modelled: true,
    create: (m) => createBpfProgPack(m),
  },
  'jit_alloc-2023': {
    kernel: 'proposal (May 2023) on Linux 6.4',
    wxHoles: () => null,
    sameAs: () => null,
    describe:
      "Kent Overstreet's slab on Linux 6.4: all text (modules, BPF, trampolines, kprobes, ftrace) in " +
      'power-of-two classes 16 B..2 KiB on 4 KiB ROX pages, text_poke; module data per section as 6.4',
    modelled: true,
    create: (m) => createJitAlloc2023(m),
  },
  'execmem-6.10': {
    kernel: 'Linux 6.10',
    wxHoles: arm64KprobeHoles,
    sameAs: () => null,
    describe:
      'Linux 6.10: execmem_alloc per module section (4 KiB pages), text one set_memory_rox; BPF programs ' +
      '(and x86 trampolines) in bpf_prog_pack; kprobe slots on set_memory_rox pages; ftrace execmem + set_memory_rox',
    modelled: true,
    create: (m) => createExecmem610(m),
  },
  'execmem-rox': {
    kernel: 'Linux 6.17',
    wxHoles: arm64KprobeHoles,
    sameAs: sameAs610WithoutRoxCache,
    describe:
      'Linux 6.17: ROX cache (2 MiB blocks, page-granular first fit) for module text, kprobe slot pages ' +
      'and ftrace, RW windows by set_memory_nx/_rw + set_memory_rox; BPF in bpf_prog_pack on plain execmem as 6.10',
    modelled: true,
    create: (m) => createExecmemRox(m),
  },
  'execmem-rox-bpf': {
    kernel: 'Linux 6.17 + bpf-next (2026, unmerged)',
    wxHoles: arm64KprobeHoles,
    sameAs: sameAs610WithoutRoxCache,
    describe:
      'Linux 6.17 plus the 2026 bpf-next series: as execmem-rox, and BPF packs carved from the ROX cache ' +
      '(no per-pack fill or set_memory_rox); an empty pack goes back to the cache',
    modelled: true,
    create: (m) => createExecmemRoxBpf(m),
  },
  execmem: {
    kernel: 'execmem (ours)',
    wxHoles: () => null,
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
