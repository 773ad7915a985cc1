/**
 * The cost table behind "modelled kernel time" (issue 12 item 4): for every event the simulated
 * machine counts, a cost in nanoseconds with the published measurement it comes from, quoted,
 * with the CPU it was measured on and how our counter maps onto it.
 *
 * Why one table in the code: the figure that says who wins overall is only as good as its
 * weights, so each weight must be checkable in one place, by anyone, against its source. The
 * report page and docs/KERNEL-TIME.md render this table; a test fails if a cost that enters the
 * sum has no source, or if the doc and the table disagree.
 *
 * Rules the table follows:
 * - A cost is a published figure, or an estimate derived from published figures with the
 *   derivation spelled out (`derivation`). Where no figure was found for an event, `costNs` is
 *   null: the event is listed, its count is reported, and it is left out of the sum (`note` says
 *   why and what of it is counted elsewhere). Nothing here is a guess dressed as a measurement.
 * - Figures given in cycles are converted at CYCLE_CLOCK_GHZ, an assumed clock (the sources name
 *   the CPU but not its frequency); the sensitivity analysis halves and doubles every weight, which
 *   covers a clock anywhere from 1.5 to 6 GHz.
 * - Each event is counted once: a set_memory_* call, a split or a text_poke step is costed
 *   without the flushes it causes, because those flushes are counted (and costed) as flushes.
 * - The figures are for the initiating CPU. The time the interrupted CPUs spend in the IPI
 *   handler is not in any published figure found here and is not in the sum, so the shootdown
 *   cost is a lower bound (this understates the designs that shoot down most).
 */
import type { ArchName } from '../arch/types.js';

/** Assumed core clock for converting cycle figures into nanoseconds (see the file comment). */
export const CYCLE_CLOCK_GHZ = 3;

/** Nanoseconds of `cycles` at CYCLE_CLOCK_GHZ. */
export function cyclesToNs(cycles: number): number {
  return cycles / CYCLE_CLOCK_GHZ;
}

/** The event classes the sum is broken down into (one per counted event). */
export const KERNEL_EVENT_KEYS = [
  'ipiShootdowns',
  'ipiTargets',
  'broadcastTlbis',
  'localFlushes',
  'fullTlbFlushes',
  'itlbStlbHits',
  'itlbWalks',
  'otherPageWalks',
  'pokeSteps',
  'largePageSplits',
  'largePageCollapses',
  'cpaCalls',
  'vmallocs',
  'vfrees',
  'icacheFlushes',
] as const;
export type KernelEventKey = (typeof KERNEL_EVENT_KEYS)[number];

/** Counts of each event over one run. */
export type KernelEvents = Record<KernelEventKey, number>;

export interface CostSource {
  /** Author(s) and title, as published. */
  readonly title: string;
  readonly url: string;
  /** When it was published (as given by the archive). */
  readonly date: string;
  /** The CPU the figure was measured on (or modelled for), as the source names it. */
  readonly cpu: string;
  /** The figure, quoted exactly. */
  readonly quote: string;
}

export interface CostEntry {
  readonly key: KernelEventKey;
  /** Short label (tables, chart legend). */
  readonly label: string;
  /** The label in an arch's own words where the mechanism differs (e.g. arm64's fixmap poke). */
  readonly labelOn?: Readonly<Partial<Record<ArchName, string>>>;
  /** What our machine counts for this event (machine counter or fetch-model figure). */
  readonly counter: string;
  /** Nanoseconds per event, or null: no published figure found, left out of the sum. */
  readonly costNs: number | null;
  /** The arches the cost applies to ('all' or a list); on others the event is left out. */
  readonly arches: 'all' | readonly ArchName[];
  /** How costNs follows from the quoted figure, and how our event maps onto the measured one. */
  readonly derivation: string;
  /** Null only when costNs is null. */
  readonly source: CostSource | null;
  /** Why an event is left out (costNs null, or on the arches it does not apply to). */
  readonly note?: string;
}

const AMIT_2019: CostSource = {
  title: 'Nadav Amit, "[RFC PATCH 0/6] x86/mm: Flush remote and local TLBs concurrently", LKML',
  url: 'https://lkml.iu.edu/hypermail/linux/kernel/1905.3/01183.html',
  date: '2019-05-25',
  cpu: 'Intel Haswell, bare metal ("my Haswell machine (bare-metal)")',
  quote:
    'running a TLB flush microbenchmark (MADV_DONTNEED/touch for a single page on one thread), takes the ' +
    'following time (ns): n_threads before after / 1 661 663 / 2 1436 1225 (-14%) / 4 1571 1421 (-10%)',
};

const INTEL_VTUNE_WALK: CostSource = {
  title: 'Intel VTune Tuning Assistant, "ITLB Page Walk Misses"',
  url:
    'http://www.nacad.ufrj.br/online/intel/vtune/users_guide/mergedProjects/analyzer_ec/mergedProjects/' +
    'reference_olh/pentium4_hh/advice4_hh/itlb_page_walk_misses.htm',
  date: 'VTune users guide (Pentium 4 tuning topics)',
  cpu: 'Intel Pentium 4 (the topic is in the Pentium 4 advice set; a vendor cost model, not one measurement)',
  quote: 'PageWalkMissITLB = ((ITLB Page Walks (TI)*30)/Clockticks)*100',
};

/** The cost table. Order: flushes, translation, writes, page-table changes, allocator calls. */
export const COST_TABLE: readonly CostEntry[] = [
  {
    key: 'ipiShootdowns',
    label: 'IPI shootdown (per request)',
    counter:
      'MachineCounters.shootdowns: one flush_tlb_kernel_range/flush_tlb_all that reaches every CPU by IPI',
    costNs: 707.5,
    arches: 'all',
    derivation:
      'Initiator time of a shootdown = (2 threads - 1 thread) - one target = (1436 - 661) - 67.5 = 707.5 ns: ' +
      'the 1-thread run flushes locally only, the 2-thread run adds a shootdown to one CPU, and the ' +
      '4-thread run shows what each further target adds (see IPI per target). A shootdown to k CPUs costs ' +
      '707.5 + 67.5 k ns, so with 3 targets (4 CPUs) 910 ns = 1571 - 661. The benchmark flushes a user page ' +
      '(flush_tlb_mm_range); our shootdowns are flush_tlb_kernel_range/flush_tlb_all, the same on_each_cpu IPI ' +
      'path (arch/x86/mm/tlb.c). One request is costed the same whatever the pages it covers. The interrupted ' +
      "CPUs' handler time is not in the figure (lower bound).",
    source: AMIT_2019,
  },
  {
    key: 'ipiTargets',
    label: 'IPI per target CPU',
    counter: 'MachineCounters.ipis: cpus - 1 per shootdown',
    costNs: 67.5,
    arches: 'all',
    derivation:
      'Each further target adds (4 threads - 2 threads) / 2 more targets = (1571 - 1436) / 2 = 67.5 ns on the ' +
      'initiator (the IPIs go out together and are waited for together).',
    source: AMIT_2019,
  },
  {
    key: 'broadcastTlbis',
    label: 'arm64 broadcast TLBI + DSB',
    counter:
      'MachineCounters.broadcastFlushes: arm64 flush_tlb_kernel_range / flush_tlb_all (TLBI ...IS, DSB ISH)',
    costNs: 350,
    arches: 'all',
    derivation:
      '3.2 us - 2.85 us = 350 ns: the mprotect flush (__flush_tlb_range: TLBI VALE1IS + DSB ISH for one page) ' +
      'that the patch elides. Our event is one arm64 flush_tlb_kernel_range or flush_tlb_all ' +
      '(arch/arm64/include/asm/tlbflush.h); the per-page TLBIs of a longer range are not added (lower bound).',
    source: {
      title:
        'Dev Jain, "[PATCH v2] arm64/mm: Elide TLB flush in certain pte protection transitions", linux-arm-kernel',
      url: 'https://lists.infradead.org/pipermail/linux-arm-kernel/2025-September/1064680.html',
      date: '2025-09-19',
      cpu: 'an arm64 machine the patch does not name (author at Arm Ltd.)',
      quote:
        'measuring the average time taken for the none->rw transition, I get a reduction from 3.2 microseconds ' +
        'to 2.85 microseconds, giving a 12.3% improvement.',
    },
  },
  {
    key: 'localFlushes',
    label: 'local TLB flush',
    counter:
      'MachineCounters.localFlushes: a flush on one CPU (x86 text_poke: flush_tlb_mm_range on poking_mm)',
    costNs: cyclesToNs(350),
    arches: 'all',
    derivation:
      `350 cycles at ${CYCLE_CLOCK_GHZ} GHz (assumed clock) = ${cyclesToNs(350).toFixed(1)} ns, one page. ` +
      'A text_poke step flushes one or two pages of poking_mm (arch/x86/kernel/alternative.c); it is costed as ' +
      'one page (lower bound).',
    source: {
      title: 'Dave Hansen, "x86 TLB flushing: INVPCID vs. deferred CR3 write", LKML',
      url: 'https://lkml.iu.edu/hypermail/linux/kernel/1712.0/03977.html',
      date: '2017-12-05',
      cpu: 'Intel Skylake ("a 4-core (no hyperthreading) Skylake desktop system")',
      quote:
        'We are effectively balancing the incremental TLB-flush-time cost of ~350 cycles per-page with the ' +
        'potential tens-of-thousands of cycles which it costs to *fully* reload the TLB.',
    },
  },
  {
    key: 'fullTlbFlushes',
    label: 'full TLB flush (extra over a range flush)',
    counter:
      'MachineCounters.fullTlbFlushes: of the shootdowns and broadcast TLBIs, those that invalidate every ' +
      "CPU's whole TLB (flush_tlb_all, or a range over tlb_single_page_flush_ceiling)",
    costNs: null,
    arches: 'all',
    derivation: 'Not a separate cost.',
    source: null,
    note:
      'The flush request itself is already costed as a shootdown or broadcast TLBI. What a full flush costs ' +
      'beyond that is refilling the TLBs it emptied ("collateral damage", Documentation/arch/x86/tlb.rst): ' +
      'the instruction-side refills are the iTLB misses the fetch model counts after it, and are costed ' +
      'there; data-side refills are not modelled.',
  },
  {
    key: 'itlbStlbHits',
    label: 'iTLB miss, STLB hit',
    counter: 'fetch model: first-level iTLB misses that hit the second-level TLB (TlbStats.i.l2Hits)',
    costNs: cyclesToNs(14),
    arches: 'all',
    derivation:
      `14 cycles at ${CYCLE_CLOCK_GHZ} GHz (assumed clock) = ${cyclesToNs(14).toFixed(2)} ns per miss that hits the STLB. ` +
      'On arm64 (Neoverse N1 geometry) the same weight is used: no arm64 figure was found.',
    source: {
      title:
        "Intel Top-down Microarchitecture Analysis (TMA) metrics, tma_itlb_misses, in Linux perf's x86 metric " +
        'files (tools/perf/pmu-events/arch/x86, Haswell/Broadwell generation)',
      url: 'https://github.com/torvalds/linux/tree/master/tools/perf/pmu-events/arch/x86',
      date: 'metric files before 2023',
      cpu:
        'Intel Haswell/Broadwell-generation cores (a vendor cost model, not one measurement); the Skylake/Kaby ' +
        'Lake TMA tables use the same 14: ( 14 * ITLB_MISSES.STLB_HIT + ITLB_MISSES.WALK_ACTIVE )',
      quote: '(14 * ITLB_MISSES.STLB_HIT + ITLB_MISSES.WALK_DURATION) / CPU_CLK_UNHALTED.THREAD',
    },
  },
  {
    key: 'itlbWalks',
    label: 'iTLB miss, page walk',
    counter: 'fetch model: instruction fetches that miss both TLB levels (each one page walk)',
    costNs: cyclesToNs(30),
    arches: 'all',
    derivation:
      `30 cycles at ${CYCLE_CLOCK_GHZ} GHz (assumed clock) = ${cyclesToNs(30).toFixed(0)} ns per walk whose page-table ` +
      'entries are in the data caches (our machine models no caches). Of the same order as a measured walk on ' +
      'Haswell (RMMA via PC Watch, 2013: an 18.2-cycle instruction-side STLB lookup plus about 20 cycles ' +
      'for an STLB miss served from cache). Every modelled iTLB miss counts one walk; misses are counted per ' +
      'fetch run, so the sum is over the whole run. Its share of the total depends on how many calls the ' +
      "workload's exec hints model.",
    source: INTEL_VTUNE_WALK,
  },
  {
    key: 'otherPageWalks',
    label: 'data-side page walk',
    counter: 'MachineCounters.pageWalks outside the fetch model: writes through the TLB, text_poke copies',
    costNs: cyclesToNs(30),
    arches: 'all',
    derivation:
      `The same 30 cycles per walk (${cyclesToNs(30).toFixed(0)} ns). Data-side STLB hits are not counted by the machine ` +
      'and are not in the sum.',
    source: INTEL_VTUNE_WALK,
  },
  {
    key: 'pokeSteps',
    label: 'text_poke step (temporary mm)',
    labelOn: { arm64: 'fixmap poke step' },
    counter:
      'MachineCounters.pokeSteps: one __text_poke step of at most two pages (x86); for our write sessions ' +
      '(machine/write-session.ts) one switch into the session mm and back per write, whatever its pages',
    costNs: 139,
    arches: ['x86_64'],
    derivation:
      'Estimate: a text_poke step switches CR3 to poking_mm and back (use_temporary_mm / unuse_temporary_mm, ' +
      'arch/x86/kernel/alternative.c), as a system call under page-table isolation switches CR3 twice. The ' +
      'published cost of those two switches with PCID is 478 - 339 = 139 ns per getppid() (PTI on vs off). The ' +
      "step's PTE set/clear and copy of at most 8 KiB are not added; its local flush is counted as a local flush.",
    source: {
      title:
        'Konstantin Belousov, "Use PCID to avoid complete TLB shootdown ... with PTI enabled", FreeBSD review D13985',
      url: 'https://reviews.freebsd.org/D13985',
      date: 'undated in the stored copy (the page-table isolation work of early 2018)',
      cpu: 'Intel Haswell with INVPCID ("a haswell machine, which has INVPCID instruction")',
      quote:
        'PCID pti ... getppid 0 1.013932533 2119160 0.000000478 ... PCID !pti ... getppid 0 1.012187691 2985156 ' +
        '0.000000339',
    },
    note:
      'On arm64 a poke step maps the FIX_TEXT_POKE0 fixmap slot (__aarch64_insn_write), with no mm switch; ' +
      'no published figure was found for it, and its TLB invalidation is counted as a broadcast TLBI.',
  },
  {
    key: 'largePageSplits',
    label: 'large-page split',
    counter: 'MachineCounters.splits*: a 2 MiB or 1 GiB leaf split (direct map or vmalloc)',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note:
      'No published per-split figure was found (a split allocates a page-table page and fills 512 entries, ' +
      'split_large_page in arch/x86/mm/pat/set_memory.c). Its flush_tlb_all is counted as a shootdown and the ' +
      'refills as walks; the split itself is left out, which understates the designs that split.',
  },
  {
    key: 'largePageCollapses',
    label: 'large-page collapse',
    counter: 'MachineCounters.collapses*: 512 entries folded back into a 2 MiB or 1 GiB leaf',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note:
      'No published per-collapse figure was found (collapse_large_pages, set_memory.c since 6.15); its flush is ' +
      'counted as a flush, the collapse itself is left out.',
  },
  {
    key: 'cpaCalls',
    label: 'set_memory_* call',
    counter: 'MachineCounters.cpaCalls (reported as permission flips)',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note:
      'No published per-call figure was found for change_page_attr_set_clr without its flush and splits; ' +
      'those are counted apart, the page-table walk and PTE updates are left out.',
  },
  {
    key: 'vmallocs',
    label: 'vmalloc',
    counter: 'MachineCounters.vmallocs',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note: 'No published per-call vmalloc figure was found in the sources searched; left out of the sum.',
  },
  {
    key: 'vfrees',
    label: 'vfree',
    counter: 'MachineCounters.vfrees',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note:
      'No published per-call vfree figure was found; its lazy-purge flush, when the machine does one, is counted ' +
      'as a flush.',
  },
  {
    key: 'icacheFlushes',
    label: 'arm64 I-cache maintenance',
    counter: 'MachineCounters.icacheFlushes: caches_clean_inval_pou after an arm64 patch write',
    costNs: null,
    arches: 'all',
    derivation: 'No published figure.',
    source: null,
    note:
      'No per-operation figure was found (the arm64 BPF pack series reports only that per-instruction ' +
      'invalidation took "> 2 minutes" for a whole test run); left out of the sum.',
  },
];

/** The entry of an event class. */
export function costEntry(key: KernelEventKey): CostEntry {
  const e = COST_TABLE.find((c) => c.key === key);
  if (e === undefined) throw new Error(`no cost entry for ${key}`);
  return e;
}

/** The entry's label in `arch`'s words. */
export function costLabel(entry: CostEntry, arch: string): string {
  return (entry.labelOn as Partial<Record<string, string>> | undefined)?.[arch] ?? entry.label;
}

/** The cost of one event on `arch` in ns, or null when it is left out of the sum there. */
export function costOn(entry: CostEntry, arch: string): number | null {
  if (entry.costNs === null) return null;
  if (entry.arches !== 'all' && !(entry.arches as readonly string[]).includes(arch)) return null;
  return entry.costNs;
}
