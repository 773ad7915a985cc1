/**
 * TLB geometry profiles: how many translations a CPU can cache, per page size and per level.
 *
 * Why this exists: the thread's central performance claim is about iTLB reach ("the iTLB cache
 * is really small", tglx, research/lkml-thread.md; Song Liu's bpf_prog_pack A/B test measured
 * iTLB-load-misses ~300/s with one 2 MiB page vs ~1600/s with 4 KiB pages). Whether packing code
 * onto 2 MiB pages pays depends on exactly these numbers: a Skylake core caches only 8 2 MiB
 * instruction translations but 128 4 KiB ones, so the model must keep the per-size arrays apart.
 *
 * Sources (numbers were checked against public copies with the search tool; where a number could
 * not be verified, the field `unverified` of the profile says so):
 * - skylake: Intel 64 and IA-32 Architectures Optimization Reference Manual, 248966-045
 *   (Feb 2022), Table 2-15 "TLB Parameters of the Skylake Microarchitecture", as quoted by
 *   J. McCalpin on community.intel.com ("TLB information provided by cpuid doesn't make sense to
 *   me", 2022): ITLB 4 KiB 128 entries 8-way; ITLB 2/4 MiB 8 entries per thread; DTLB 4 KiB
 *   64 entries 4-way, 2/4 MiB 32 entries 4-way, 1 GiB 4 entries 4-way; STLB 1536 entries 12-way
 *   shared by 4 KiB and 2 MiB, and 16 entries 4-way for 1 GiB. Skylake Xeon has the same TLBs as
 *   Skylake client (same post). The CPUID leaf 2 descriptor on SKX reports the STLB as 6-way;
 *   McCalpin notes CPUID TLB data can be wrong, and WikiChip also lists 12-way for the 4K+2M STLB
 *   (changed from 6-way in Broadwell), so 12-way is used.
 * - zen4: AMD's Zen family keeps a 64-entry fully associative L1 ITLB for all page sizes and a
 *   512-entry 8-way L2 ITLB for 4 KiB and 2 MiB, with 1 GiB pages "smashed" into 2 MiB entries
 *   (7-cpu.com Zen 2 page; AMD Software Optimization Guide for Family 17h/19h; the Zen 2 WikiChip
 *   text: smashed entries are installed as 1 GiB entries again when reloaded into the L1).
 *   The Zen 4 data-side numbers (L1 DTLB 72 entries fully associative, all sizes; L2 DTLB 3072
 *   entries) are from AMD's Software Optimization Guide for the Zen 4 microarchitecture
 *   (pub. 57647) as given in our brief; they could not be re-checked in the stored sources. The
 *   L2 DTLB associativity is modelled as 12-way, the last documented value (Zen 1/Zen 2 L2 DTLB
 *   "unified 12-way set-associative").
 * - neoverse-n1 (arm64): Arm Cortex-A76 Core Technical Reference Manual (100798_0300_00_en),
 *   section A5.2 "TLB organization": instruction L1 TLB 48 entries fully associative (4 KiB, 16 KiB,
 *   64 KiB, 2 MiB, 32 MiB granules), data L1 TLB 48 entries fully associative (4 KiB ... 2 MiB,
 *   512 MiB), L2 TLB 1280 entries 5-way, shared by instruction and data, holding every block size
 *   up to 1 GiB. The Neoverse N1 is derived from the Cortex-A76 (WikiChip: "almost identical");
 *   the N1 TRM itself was not found in the stored sources, so its TLB numbers are listed as
 *   unverified. With the 4 KiB granule the kernel uses, only 4 KiB, 2 MiB and 1 GiB leaves exist.
 *
 * SMT (threadsPerCore): simulated CPUs 2k and 2k+1 are the two hardware threads of core k; with an
 * odd CPU count the last thread has no sibling and gets every array whole. How each array is
 * split between the threads of a core (TlbArraySpec.smt):
 * - skylake: Table 2-15's "Partition" column says ITLB 4 KiB "dynamic", ITLB 2/4 MiB "8 per
 *   thread", and "fixed" for the DTLBs and the STLB. The TLBleed measurements (Gras et al., USENIX
 *   Security 2018, section 6) found the L1 DTLB and the STLB competitively shared between
 *   hyper-threads, and H. Brais' summary of the manual (Stack Overflow, "Does a hyper-threaded
 *   core share MMU and TLB?") reads "fixed" as exactly that, entries tagged with the logical
 *   processor. So: DTLBs and STLB 'shared' (one array per core, each entry tagged with its thread:
 *   a thread never hits the other's entries, both compete for the same slots); ITLB 2 MiB
 *   'replicated'; ITLB 4 KiB 'partitioned': a dynamic partition is split while both threads run,
 *   and both siblings run the workload all the time here, so each gets half (64 entries, 8-way:
 *   the CPUID leaf 2 descriptor 0xb5 on an HT Skylake-SP reports exactly "4K, 8-way, 64 entries",
 *   McCalpin's thread above).
 * - zen4: AMD describes the Zen family's TLBs as competitively shared between the SMT threads,
 *   tagged per thread (Family 17h Software Optimization Guide as summarised by Brais, same answer;
 *   AMD's Zen disclosure as reported by axe.rs). The Zen 4 guide's resource-sharing table could
 *   not be read in the stored sources, so 'shared' for every array is listed as unverified.
 * - neoverse-n1: no SMT (one thread per core).
 *
 * Simplifications (modelled, not real):
 * - A 2 MiB translation in the Skylake STLB occupies one slot of the shared 4K/2M array, indexed by
 *   its 2 MiB page number; real STLB indexing and replacement (pseudo-LRU) are undocumented, we use
 *   exact LRU per set with index = page number mod sets. Sibling entries compete in the same LRU.
 * - Skylake's ITLB has no 1 GiB array (Table 2-15 lists none); an instruction fetch from a 1 GiB
 *   page is held there as a "smashed" 2 MiB entry, like AMD does. Kernel text never lives on
 *   1 GiB leaves (the direct map is NX), so this path matters only for completeness. The
 *   Neoverse N1 L1 TLBs break 1 GiB blocks down the same way (TRM: "responsible for breaking
 *   these down in to smaller pages when required for the data or instruction L1 TLB").
 * - Zen's skewed-associative L2 DTLB (ways split by page size, hashed index) is modelled as a plain
 *   set-associative array where each size is indexed by its own page number.
 * - No page-walk caches (PDE caches) are modelled: every L2 miss is one counted page walk.
 */
import type { ArchName } from '../arch/types.js';
import type { LeafLevel } from './types.js';

/**
 * How the threads of one core use an array (see the header): 'replicated' = each thread has its
 * own array of `entries`; 'partitioned' = each thread has its own array of entries / threads;
 * 'shared' = one array per core, entries tagged with their thread.
 */
export type TlbSmtPolicy = 'replicated' | 'partitioned' | 'shared';

/** One set-associative array of a TLB level. A fully associative array has ways === entries. */
export interface TlbArraySpec {
  readonly name: string;
  readonly entries: number;
  readonly ways: number;
  /** Leaf levels held natively (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB). */
  readonly levels: readonly LeafLevel[];
  /** 1 GiB translations are held keyed by the 2 MiB window of the access ("smashed", AMD). */
  readonly smash1g?: boolean;
  /** Split between SMT siblings; default 'replicated'. Ignored for a thread without a sibling. */
  readonly smt?: TlbSmtPolicy;
}

export interface TlbProfile {
  readonly name: string;
  /** Where the numbers come from. */
  readonly source: string;
  /** Numbers that could not be verified against a stored public source. */
  readonly unverified: readonly string[];
  /** Hardware threads per core: simulated CPUs t*k .. t*k+t-1 are the threads of core k. */
  readonly threadsPerCore: 1 | 2;
  /** First-level instruction-side arrays (probed in parallel by hardware; in order here). */
  readonly l1i: readonly TlbArraySpec[];
  /** First-level data-side arrays. */
  readonly l1d: readonly TlbArraySpec[];
  /** Second-level arrays used by the instruction side only (AMD L2 ITLB). */
  readonly l2i: readonly TlbArraySpec[];
  /** Second-level arrays used by the data side only (AMD L2 DTLB). */
  readonly l2d: readonly TlbArraySpec[];
  /** Second-level arrays shared by both sides (Intel STLB, Arm L2 TLB). */
  readonly l2shared: readonly TlbArraySpec[];
}

const SKYLAKE: TlbProfile = {
  name: 'skylake',
  source:
    'Intel Optimization Reference Manual 248966-045, Table 2-15 (Skylake client = Skylake server TLBs), ' +
    'quoted by J. McCalpin, community.intel.com 2022; SMT sharing: TLBleed (USENIX Security 2018, sec. 6)',
  unverified: [
    'ITLB 2/4 MiB associativity not documented: modelled fully associative',
    'ITLB 4 KiB "dynamic" partition modelled as a fixed half per thread (both siblings always run)',
  ],
  threadsPerCore: 2,
  l1i: [
    { name: 'itlb-4k', entries: 128, ways: 8, levels: [1], smt: 'partitioned' },
    { name: 'itlb-2m', entries: 8, ways: 8, levels: [2], smash1g: true, smt: 'replicated' },
  ],
  l1d: [
    { name: 'dtlb-4k', entries: 64, ways: 4, levels: [1], smt: 'shared' },
    { name: 'dtlb-2m', entries: 32, ways: 4, levels: [2], smt: 'shared' },
    { name: 'dtlb-1g', entries: 4, ways: 4, levels: [3], smt: 'shared' },
  ],
  l2i: [],
  l2d: [],
  l2shared: [
    { name: 'stlb-4k2m', entries: 1536, ways: 12, levels: [1, 2], smt: 'shared' },
    { name: 'stlb-1g', entries: 16, ways: 4, levels: [3], smt: 'shared' },
  ],
};

const ZEN4: TlbProfile = {
  name: 'zen4',
  source:
    'AMD Software Optimization Guide (Family 17h 55723, Family 19h / Zen 4 57647); 7-cpu.com Zen 2; ' +
    'WikiChip Zen 2 (1 GiB smashing)',
  unverified: [
    'L1 DTLB 72 entries and L2 DTLB 3072 entries (from the brief, AMD SOG 57647, not re-checked)',
    'L2 DTLB associativity: modelled 12-way (last documented Zen value)',
    'SMT: every array competitively shared (documented for Family 17h; the Zen 4 table not re-checked)',
  ],
  threadsPerCore: 2,
  l1i: [{ name: 'l1-itlb', entries: 64, ways: 64, levels: [1, 2, 3], smt: 'shared' }],
  l1d: [{ name: 'l1-dtlb', entries: 72, ways: 72, levels: [1, 2, 3], smt: 'shared' }],
  l2i: [{ name: 'l2-itlb', entries: 512, ways: 8, levels: [1, 2], smash1g: true, smt: 'shared' }],
  l2d: [{ name: 'l2-dtlb', entries: 3072, ways: 12, levels: [1, 2], smash1g: true, smt: 'shared' }],
  l2shared: [],
};

const NEOVERSE_N1: TlbProfile = {
  name: 'neoverse-n1',
  source:
    'Arm Cortex-A76 Core TRM 100798_0300_00_en, A5.2 TLB organization (the Neoverse N1 is derived from ' +
    'the Cortex-A76); Intel Agilex 5 HPS TRM 814346 (Cortex-A76 MMU table)',
  unverified: ['Neoverse N1 TRM not found in the stored sources: Cortex-A76 TRM numbers used'],
  threadsPerCore: 1,
  l1i: [{ name: 'l1-itlb', entries: 48, ways: 48, levels: [1, 2], smash1g: true }],
  l1d: [{ name: 'l1-dtlb', entries: 48, ways: 48, levels: [1, 2], smash1g: true }],
  l2i: [],
  l2d: [],
  l2shared: [{ name: 'l2-tlb', entries: 1280, ways: 5, levels: [1, 2, 3] }],
};

export const TLB_PROFILES: Readonly<Record<'skylake' | 'zen4' | 'neoverse-n1', TlbProfile>> = {
  skylake: SKYLAKE,
  zen4: ZEN4,
  'neoverse-n1': NEOVERSE_N1,
};

export type TlbProfileName = keyof typeof TLB_PROFILES;

export const TLB_PROFILE_NAMES: readonly TlbProfileName[] = Object.keys(TLB_PROFILES) as TlbProfileName[];

/**
 * The TLB geometry a machine of this arch gets unless its config names one: x86_64 -> skylake
 * (the core the thread's measurements were taken on), arm64 -> neoverse-n1 (a server Arm core with
 * a published TRM). The generic arch is a neutral page-table model used to test arch-independent
 * logic; it gets skylake so its figures stay comparable with x86_64 runs.
 */
export function defaultTlbProfile(arch: ArchName): TlbProfileName {
  return arch === 'arm64' ? 'neoverse-n1' : 'skylake';
}

/** The profile of that name, or undefined (also for inherited keys such as 'toString'). */
export function tlbProfileByName(name: string): TlbProfile | undefined {
  return Object.hasOwn(TLB_PROFILES, name) ? TLB_PROFILES[name as TlbProfileName] : undefined;
}
