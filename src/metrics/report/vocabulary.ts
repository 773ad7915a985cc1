/**
 * Each architecture's words for the figures, in one table: `execmem compare`'s text table, the
 * HTML report, summary.md and the charts all take their labels from here.
 *
 * Why: a kernel developer reading an arm64 run must see arm64 terms (issue 11 item 11). The
 * figures are the same counters on every arch, but what they are called, and which of them an
 * arch can have at all, differs:
 * - x86 calls the kernel's map of all physical memory the direct map (/proc/meminfo DirectMap4k,
 *   arch_report_meminfo in arch/x86/mm/pat/set_memory.c); arm64 calls it the linear map (lm_alias,
 *   arch/arm64/mm/mmu.c) and, as of 6.18-rc1, prints no DirectMap lines at all (Yang Shi's
 *   October 2025 patch "arm64: mm: show direct mapping use in /proc/meminfo" proposes them).
 * - x86 flush_tlb_kernel_range (arch/x86/mm/tlb.c) reaches other CPUs by IPI (on_each_cpu):
 *   shootdowns and IPIs. arm64 flush_tlb_kernel_range (arch/arm64/include/asm/tlbflush.h) issues
 *   TLBI VAALE1IS, broadcast by hardware with no IPI: broadcast TLBIs.
 * - x86 writes read-only text through text_poke's temporary mm (arch/x86/kernel/alternative.c);
 *   arm64 through the FIX_TEXT_POKE0 fixmap slot (__aarch64_insn_write, aarch64_insn_copy in
 *   arch/arm64/kernel/patching.c).
 *
 * Which global-flush columns a run shows: the arch's own kinds, plus any other kind that is
 * non-zero in some row (a cost is never hidden because the arch "should not" have it).
 */
import type { ArchName } from '../../arch/types.js';
import { METRIC_KEYS, type MetricKey } from './types.js';

export interface ArchVocabulary {
  /** The kernel's map of all physical memory: 'direct map' (x86) or 'linear map' (arm64). */
  readonly physMap: string;
  /** Heading of the growth of that map's 4 KiB-mapped bytes, e.g. 'DirectMap4k +'. */
  readonly physMap4kGrowth: string;
  /** Heading of that map's large-leaf splits, e.g. 'DM splits'. */
  readonly physMapSplits: string;
  /** Chart id of the growth chart ('direct-map-4k' / 'linear-map-4k'). */
  readonly physMapChartId: string;
  /** How the growth figure relates to what the kernel itself reports (chart caption). */
  readonly physMapSource: string;
  /** The alias-write mechanism, e.g. 'text_poke' or 'fixmap'. */
  readonly patching: string;
  /** The flush that ends each alias-write step: 'local flush' (x86) or 'broadcast TLBI' (arm64). */
  readonly stepFlush: string;
  /** The global-flush kinds the arch's kernel TLB invalidation uses. */
  readonly globalFlushKeys: readonly GlobalFlushKey[];
}

/** The counters of flushes that reach every CPU (and the IPIs some of them send). */
export const GLOBAL_FLUSH_KEYS = ['shootdowns', 'ipis', 'broadcastFlushes'] as const;
export type GlobalFlushKey = (typeof GLOBAL_FLUSH_KEYS)[number];

/** Headings of the global-flush figures: the same on every arch (each names one mechanism). */
export const GLOBAL_FLUSH_LABELS: Readonly<Record<GlobalFlushKey, string>> = {
  shootdowns: 'shootdowns',
  ipis: 'IPIs',
  broadcastFlushes: 'broadcast TLBIs',
};

export const ALL_FLUSHES_LABEL = 'all flush events';

const X86: ArchVocabulary = {
  physMap: 'direct map',
  physMap4kGrowth: 'DirectMap4k +',
  physMapSplits: 'DM splits',
  physMapChartId: 'direct-map-4k',
  physMapSource: 'as /proc/meminfo reports DirectMap4k',
  patching: 'text_poke',
  stepFlush: 'local flush',
  globalFlushKeys: ['shootdowns', 'ipis'],
};

export const VOCABULARIES: Readonly<Record<ArchName, ArchVocabulary>> = {
  x86_64: X86,
  arm64: {
    physMap: 'linear map',
    physMap4kGrowth: 'linear map 4K +',
    physMapSplits: 'linear-map splits',
    physMapChartId: 'linear-map-4k',
    physMapSource:
      'counted from the page tables; arm64 /proc/meminfo has no such line in the kernels modelled',
    patching: 'fixmap',
    stepFlush: 'broadcast TLBI',
    globalFlushKeys: ['broadcastFlushes'],
  },
  // The generic arch has no alias-write primitive (PatchMechanism 'none') and flushes by IPI.
  generic: { ...X86, physMapSource: 'counted from the page tables', patching: 'alias' },
};

/** The vocabulary of an arch name as a run records it (unknown names read as x86, said nowhere else). */
export function vocabularyFor(arch: string): ArchVocabulary {
  return (VOCABULARIES as Record<string, ArchVocabulary | undefined>)[arch] ?? X86;
}

/** Heading of the alias-write count, e.g. 'text_poke writes' / 'fixmap writes'. */
export function patchWritesLabel(v: ArchVocabulary): string {
  return `${v.patching} writes`;
}

type FlushFigures = Readonly<Record<GlobalFlushKey, number>>;

/** The global-flush figures a run shows, in GLOBAL_FLUSH_KEYS order (see the file comment). */
export function globalFlushColumns(arch: string, rows: readonly FlushFigures[]): GlobalFlushKey[] {
  const own = vocabularyFor(arch).globalFlushKeys;
  return GLOBAL_FLUSH_KEYS.filter((k) => own.includes(k) || rows.some((m) => m[k] !== 0));
}

/** What the flush columns mean on this arch: one sentence under every table. */
export function flushLegend(arch: string): string {
  const global = vocabularyFor(arch).globalFlushKeys.includes('broadcastFlushes')
    ? 'Broadcast TLBIs are kernel TLB invalidations the hardware broadcasts to every CPU (TLBI ...IS, no IPI).'
    : 'Shootdowns are flush requests sent to every other CPU by IPI.';
  return `${global} ${capitalised(ALL_FLUSHES_LABEL)} = local flushes + shootdowns + broadcast TLBIs.`;
}

/** What the kernel-time column is, and how robust its ranking is: one line under every table. */
export function kernelTimeLegend(sensitivitySummary: string): string {
  return (
    'Kernel time (modelled) = every counted event x its published cost (docs/KERNEL-TIME.md); ' +
    `ranking under each weight x0.5 and x2: ${sensitivitySummary}.`
  );
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The one global-flush figure a headline or short table shows: the arch's first kind. */
export function primaryGlobalFlush(arch: string): GlobalFlushKey {
  return vocabularyFor(arch).globalFlushKeys[0];
}

/**
 * Why a design equals another on an arch, keyed by design and arch. The equality itself comes
 * from PolicySpec.sameAs (src/policies); this only words it. The ROX cache (EXECMEM_ROX_CACHE,
 * mm/execmem.c) is enabled only by x86's execmem_arch_setup in the kernels modelled.
 */
const SAME_AS_REASONS: Readonly<Record<string, Partial<Record<string, string>>>> = {
  'execmem-rox': { arm64: 'no ROX cache', generic: 'no ROX cache' },
};

/** "= execmem-6.10 on arm64 (no ROX cache)": the label of a design that is another on this arch. */
export function sameAsLabel(policy: string, sameAs: string, arch: string): string {
  const reason = SAME_AS_REASONS[policy]?.[arch];
  return `= ${sameAs} on ${arch}${reason ? ` (${reason})` : ''}`;
}

/** How a design that equals another on this arch is shown. */
export interface SameAsRow {
  /** One line "= other on arch (reason)" in place of the figures (the other design is a row too). */
  readonly collapsed: boolean;
  /** The note, e.g. "= execmem-6.10 on arm64 (no ROX cache)". */
  readonly label: string;
}

interface SameAsSource {
  readonly name: string;
  readonly sameAs: string | null;
  readonly metrics: Readonly<Record<MetricKey, number>>;
}

/**
 * Per row, how its sameAs is shown (null: it has none). A row is collapsed into its note only
 * when the design it equals is a row of the same run AND every reported figure is identical:
 * then a second copy of the figures would only be presented as a second result. Otherwise the row
 * keeps its figures, labelled: with the note when the other design is not in the run (a
 * measurement is never lost), and saying the figures differ when the machine disagrees with the
 * declared equality (a modelling defect to fix, never to hide).
 */
export function sameAsRows(arch: string, policies: readonly SameAsSource[]): (SameAsRow | null)[] {
  return policies.map((p) => {
    if (p.sameAs === null) return null;
    const label = sameAsLabel(p.name, p.sameAs, arch);
    const other = policies.find((q) => q.name === p.sameAs);
    if (other === undefined) return { collapsed: false, label };
    if (METRIC_KEYS.every((k) => p.metrics[k] === other.metrics[k])) return { collapsed: true, label };
    return { collapsed: false, label: `expected ${label}, but the figures differ` };
  });
}

/** The rows shown as their same-as note only: never ranked, charted or counted as contenders. */
export function collapsedRows(arch: string, policies: readonly SameAsSource[]): Set<number> {
  const out = new Set<number>();
  sameAsRows(arch, policies).forEach((r, i) => {
    if (r?.collapsed) out.add(i);
  });
  return out;
}

/** The kernel version shown next to a Linux design's name (null for ours: it models no kernel). */
export function kernelLabel(p: { readonly modelled: boolean; readonly kernel: string }): string | null {
  return p.modelled ? p.kernel : null;
}

/**
 * One line per design whose W^X figure is not 0 because the kernel version it models leaves
 * W+X pages itself (PolicySpec.wxHoles): the figure is Linux's, and the reader is told so.
 */
export function wxHoleNotes(
  workload: string,
  policies: readonly {
    name: string;
    kernel: string;
    sameAs: string | null;
    wxHoles: string | null;
    metrics: { wxViolations: number };
  }[],
): string[] {
  const names = new Set(policies.map((p) => p.name));
  return policies
    .filter((p) => p.wxHoles !== null && p.metrics.wxViolations > 0)
    .filter((p) => p.sameAs === null || !names.has(p.sameAs)) // its twin's note says it
    .map((p) => `${workload}: the W^X figure of ${p.name} (${p.kernel}) is Linux's own: ${p.wxHoles}.`);
}
