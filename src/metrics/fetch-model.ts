/**
 * The instruction-fetch model: turns code placement into iTLB misses and page walks.
 *
 * Why: the thread's open question is whether large pages for text pay through fewer iTLB misses
 * (tglx: "the iTLB cache is really small"; Song Liu's bpf_prog_pack A/B test: BPF-caused
 * iTLB-load-misses ~300/s with one 2 MiB page vs ~1600/s with 4 KiB pages, research/lkml-thread.md
 * [S-PP]). No cover letter gave a number for module text (research/lkml-thread.md: "I found no
 * iTLB or throughput numbers in any execmem or ROX cover letter"). So we execute the same calls
 * through each design's placement on the same simulated CPUs and count what the TLB model does.
 *
 * How: functions are ranked by a Zipf-like hotness (weight of rank r = 1 / r^exponent, hottest =
 * rank 1, ranks assigned by a seeded shuffle, so hotness does not follow address order). Each call
 * picks a function by that weight and "executes" it straight through: one machine.ifetch per
 * 16-byte fetch block it overlaps (blocks are 16-byte aligned, so a page crossing always starts a
 * new block and thus a new TLB lookup). The machine's iTLB statistics and page-walk counter are
 * read before and after, so the figures are deltas of this run only.
 *
 * Steady state: TLB contents carry over from one run to the next (and from everything else the
 * machine did meanwhile), so a run measures capacity pressure, not "CPUs x distinct mappings".
 * The only invalidations are those the workload causes (set_memory_* shootdowns, text_poke's
 * local flush, vfree purges, ...), exactly as on a running kernel. `coldStart` (default off, for
 * tests) flushes the used CPUs first through machine.flushLocal, which the machine counts; the
 * report says how many flushes it added.
 *
 * Next to each figure stands the lower bound: the misses an infinite-capacity TLB would take on
 * the same CPUs with the same flushes, i.e. per CPU, the first instruction-side access to a leaf
 * since that CPU last invalidated it. The machine's TLB layer counts it (CpuTlb.iBoundMisses, a
 * shadow per CPU, src/machine/tlb-shadow.ts); the run reports its delta. It is per CPU because
 * each CPU caches its own translations (flush_tlb_kernel_range, arch/x86/mm/tlb.c, reaches every
 * CPU for that reason): two CPUs running one page take two compulsory misses. `distinctLeaves`
 * stays as the footprint of the touched code (leaves by size), which is not a bound.
 *
 * Modelled, not real: no branches or loops inside a function (straight-line execution), no
 * instruction cache, no prefetching, no branch predictor, no page-walk caches, no out-of-order
 * overlap of walks; one fetch block per 16 bytes regardless of instruction boundaries. It counts
 * translations, not cycles.
 */
import type { Rng } from '../base/rng.js';
import { MachineFault } from '../machine/errors.js';
import type { CpuTlb } from '../machine/tlb.js';
import type { MachineCounters, Translation } from '../machine/types.js';

/** Bytes covered by one fetch (and one TLB lookup); Skylake and Zen 4 fetch 16 B (x86 legacy decode) or more per cycle. */
export const FETCH_BLOCK_BYTES = 16;
const PAGE_BYTES = 4096;
/** Upper limits that keep one run bounded. */
export const FETCH_CALLS_MAX = 100_000_000;
export const FETCH_FUNCTIONS_MAX = 10_000_000;
export const FETCH_FUNCTION_BYTES_MAX = 64 * 1024 * 1024;

/** What the model needs from a machine (Machine in src/machine/machine.ts satisfies it). */
export interface FetchTarget {
  ifetch(cpu: number, va: number): number;
  /** ifetch without reading the byte (same TLB effects); used instead of ifetch when present. */
  itouch?(cpu: number, va: number): void;
  readonly tlbs: readonly CpuTlb[];
  readonly counters: MachineCounters;
  readonly kernelPt: { walk(va: number): Translation | null };
  flushLocal(cpu: number): void;
}

export interface FetchFunction {
  readonly va: number;
  readonly sizeBytes: number;
  readonly name?: string;
}

export interface FetchOptions {
  readonly calls: number;
  /** Zipf exponent s >= 0 (0 = uniform; ~1 is typical of code hotness). */
  readonly exponent: number;
  readonly rng: Rng;
  /** CPUs the calls run on, picked at random per call (default [0]). */
  readonly cpus?: readonly number[];
  /** Flush the used CPUs' TLBs first (machine.flushLocal). Default false: steady state (see header). */
  readonly coldStart?: boolean;
}

export interface FetchReport {
  readonly calls: number;
  /** ifetch calls (one per 16-byte block per call). */
  readonly fetches: number;
  /** Instruction-side misses of both TLB levels, i.e. page walks caused by fetches. */
  readonly itlbMisses: number;
  /** Instruction-side first-level misses (second-level hits + misses). */
  readonly l1Misses: number;
  /** Machine page-walk counter delta over the run (fetch walks plus any other walks meanwhile). */
  readonly pageWalks: number;
  /** Distinct 4 KiB pages touched: the footprint if everything were on 4 KiB pages (not a bound). */
  readonly distinctPages4k: number;
  /** Distinct leaves touched, by their actual size: the footprint of the touched code (not a bound). */
  readonly distinctLeaves: {
    readonly k4: number;
    readonly m2: number;
    readonly g1: number;
    readonly total: number;
  };
  /**
   * Lower bound: misses an infinite-capacity TLB would take in this run on the same CPUs with the
   * same flushes (per CPU, first instruction access to a leaf since that CPU last invalidated it).
   * Always <= itlbMisses.
   */
  readonly boundMisses: number;
  readonly missesPerMillion: number;
  /** boundMisses per million fetches. */
  readonly lowerBoundPerMillion: number;
  readonly l1MissesPerMillion: number;
  /** Fetches that faulted (not present, NX, trap pattern); execution went on with the next block. */
  readonly faults: number;
  /** Local flushes this run added to the machine's counters (coldStart only, else 0). */
  readonly localFlushesAdded: number;
  readonly functionsTouched: number;
}

export class FetchModelError extends Error {
  override name = 'FetchModelError';
  readonly code = 'EINVAL';
  constructor(message: string) {
    super(`EINVAL: ${message}`);
  }
}

function check(cond: boolean, message: string): void {
  if (!cond) throw new FetchModelError(message);
}

/**
 * Checks the input; returns the functions as (va, sizeBytes) pairs in one array, which is what a
 * call reads: a random function per call, so one cache line instead of an object and its boxed
 * address.
 */
function checkInput(
  target: FetchTarget,
  fns: readonly FetchFunction[],
  opts: FetchOptions,
  cpus: readonly number[],
): Float64Array {
  check(
    fns.length > 0 && fns.length <= FETCH_FUNCTIONS_MAX,
    `function count ${fns.length} not in [1, ${FETCH_FUNCTIONS_MAX}]`,
  );
  const spans = new Float64Array(2 * fns.length);
  // Messages are built only for a bad function: this loop runs at every exec hint of a compare.
  for (let i = 0; i < fns.length; i++) {
    const f = fns[i];
    const vaOk = Number.isInteger(f.va) && f.va >= 0 && f.va < 2 ** 48;
    if (!vaOk) check(false, `function ${f.name ?? ''} va ${f.va} is not a 48-bit address`);
    const sizeOk =
      Number.isInteger(f.sizeBytes) && f.sizeBytes > 0 && f.sizeBytes <= FETCH_FUNCTION_BYTES_MAX;
    if (!sizeOk)
      check(false, `function ${f.name ?? f.va} size ${f.sizeBytes} not in [1, ${FETCH_FUNCTION_BYTES_MAX}]`);
    if (f.va + f.sizeBytes > 2 ** 48) check(false, `function ${f.name ?? f.va} runs past the address space`);
    spans[2 * i] = f.va;
    spans[2 * i + 1] = f.sizeBytes;
  }
  check(
    Number.isInteger(opts.calls) && opts.calls > 0 && opts.calls <= FETCH_CALLS_MAX,
    `calls ${opts.calls} not in [1, ${FETCH_CALLS_MAX}]`,
  );
  check(
    Number.isFinite(opts.exponent) && opts.exponent >= 0 && opts.exponent <= 10,
    `exponent ${opts.exponent} not in [0, 10]`,
  );
  check(cpus.length > 0, 'no CPU to run on');
  for (const c of cpus)
    if (!(Number.isInteger(c) && c >= 0 && c < target.tlbs.length)) check(false, `no CPU ${c}`);
  return spans;
}

/**
 * 1 / rank^exponent for ranks 1..count (index = rank), kept between runs: a compare calls the
 * model at every exec hint with the same exponent, and the power is the costly part. The values
 * are the very doubles the expression gives, so caching changes no figure.
 */
let weightCache: { exponent: number; weights: Float64Array } | null = null;

function rankWeights(count: number, exponent: number): Float64Array {
  const cached = weightCache;
  if (cached !== null && cached.exponent === exponent && cached.weights.length > count) return cached.weights;
  const weights = new Float64Array(Math.max(count + 1, 2 * (cached?.weights.length ?? 0)));
  for (let r = 1; r < weights.length; r++) weights[r] = 1 / r ** exponent;
  weightCache = { exponent, weights };
  return weights;
}

/** Cumulative Zipf weights over functions, with ranks shuffled by rng. */
function zipfCumulative(count: number, exponent: number, rng: Rng): Float64Array {
  const rankOf = new Uint32Array(count);
  for (let i = 0; i < count; i++) rankOf[i] = i + 1;
  for (let i = count - 1; i > 0; i--) {
    const j = rng.int(0, i);
    const tmp = rankOf[i];
    rankOf[i] = rankOf[j];
    rankOf[j] = tmp;
  }
  const weight = rankWeights(count, exponent);
  const cumulative = new Float64Array(count);
  let sum = 0;
  for (let i = 0; i < count; i++) {
    sum += weight[rankOf[i]];
    cumulative[i] = sum;
  }
  for (let i = 0; i < count; i++) cumulative[i] /= sum;
  cumulative[count - 1] = 1;
  return cumulative;
}

/**
 * Where the search for u starts and ends (Chen and Asau's guide table): guide[k] is the first index
 * whose cumulative weight exceeds k / buckets, so the answer for u in bucket floor(u * buckets)
 * lies in [guide[k], guide[k + 1]]; with as many buckets as functions that is a step or two instead
 * of a full binary search per call. `pick` checks the bracket and falls back to the whole array
 * if rounding ever put u outside it, so the answer is always exactly the binary search's.
 */
export function guideTable(cumulative: Float64Array): Uint32Array {
  const buckets = cumulative.length;
  const guide = new Uint32Array(buckets + 1);
  let i = 0;
  for (let k = 0; k <= buckets; k++) {
    const threshold = k / buckets;
    while (i < buckets - 1 && cumulative[i] <= threshold) i++;
    guide[k] = i;
  }
  return guide;
}

/** Index of the first cumulative weight > u (a binary search inside the guide's bracket). */
export function pick(cumulative: Float64Array, guide: Uint32Array, u: number): number {
  const last = cumulative.length - 1;
  const k = Math.floor(u * cumulative.length);
  let lo = k >= 0 && k < guide.length ? guide[k] : 0;
  let hi = k + 1 < guide.length ? guide[k + 1] : last;
  if (cumulative[hi] <= u || (lo > 0 && cumulative[lo - 1] > u)) {
    lo = 0;
    hi = last;
  }
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cumulative[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

interface Tally {
  fetches: number;
  faults: number;
}

/**
 * Executes one call straight through: one ifetch per 16-byte block it overlaps, taken page by
 * page. Within a 4 KiB page, once a block's fetch has succeeded, every later block of that page in
 * the same call is a lookup of the entry just used on the same CPU with nothing in between: an L1
 * iTLB hit that changes no LRU order and cannot fault (the machine's own fetch micro-cache counts
 * exactly that, src/machine/cpu.ts Cpus.ifetch). Those blocks are counted in one addition instead
 * of one call each, which gives the same counters; after a fault every block is fetched one by
 * one as before (each may walk and fault again). test/fetch-model.test.ts checks the two agree.
 */
function execute(target: FetchTarget, cpu: number, startVa: number, sizeBytes: number, tally: Tally): void {
  const end = startVa + sizeBytes;
  let va = startVa;
  while (va < end) {
    const segmentEnd = Math.min(end, (Math.floor(va / PAGE_BYTES) + 1) * PAGE_BYTES);
    const blocks = Math.floor((segmentEnd - 1) / FETCH_BLOCK_BYTES) - Math.floor(va / FETCH_BLOCK_BYTES) + 1;
    if (fetchOne(target, cpu, va, tally)) {
      if (blocks > 1) {
        tally.fetches += blocks - 1;
        target.tlbs[cpu].stats.i.l1Hits += blocks - 1;
      }
    } else {
      for (
        let b = (Math.floor(va / FETCH_BLOCK_BYTES) + 1) * FETCH_BLOCK_BYTES;
        b < segmentEnd;
        b += FETCH_BLOCK_BYTES
      )
        fetchOne(target, cpu, b, tally);
    }
    va = segmentEnd;
  }
}

/** One fetch block; false when it faulted (counted). */
function fetchOne(target: FetchTarget, cpu: number, va: number, tally: Tally): boolean {
  tally.fetches++;
  try {
    if (target.itouch !== undefined) target.itouch(cpu, va);
    else target.ifetch(cpu, va);
    return true;
  } catch (e) {
    if (!(e instanceof MachineFault)) throw e;
    tally.faults++;
    return false;
  }
}

/** Distinct 4 KiB pages and distinct leaves (by actual size) of the touched functions. */
function footprint(target: FetchTarget, fns: readonly FetchFunction[], touched: Uint8Array) {
  const pages = new Set<number>();
  const leaves = new Set<string>();
  const byLevel = [0, 0, 0, 0];
  for (let i = 0; i < fns.length; i++) {
    if (touched[i] === 0) continue;
    const f = fns[i];
    const last = Math.floor((f.va + f.sizeBytes - 1) / 4096);
    for (let p = Math.floor(f.va / 4096); p <= last; p++) {
      pages.add(p);
      const t = target.kernelPt.walk(p * 4096);
      if (t === null) continue; // unmapped: faults, no leaf to count
      const key = `${t.level}:${t.va}`;
      if (!leaves.has(key)) {
        leaves.add(key);
        byLevel[t.level]++;
      }
    }
  }
  return { pages: pages.size, k4: byLevel[1], m2: byLevel[2], g1: byLevel[3], total: leaves.size };
}

/**
 * Runs `opts.calls` calls over `fns` and reports iTLB behaviour. Bad input throws
 * FetchModelError and changes nothing (validation happens before any fetch or flush).
 */
export function runFetchModel(
  target: FetchTarget,
  fns: readonly FetchFunction[],
  opts: FetchOptions,
): FetchReport {
  const { report, touched } = runCalls(target, fns, opts);
  const fp = footprint(target, fns, touched);
  return {
    ...report,
    distinctPages4k: fp.pages,
    distinctLeaves: { k4: fp.k4, m2: fp.m2, g1: fp.g1, total: fp.total },
  };
}

/** A run's figures without the footprint of the touched code. */
export type FetchCounts = Omit<FetchReport, 'distinctPages4k' | 'distinctLeaves'>;

/**
 * runFetchModel without the footprint (distinctPages4k, distinctLeaves), which walks the page
 * table for every page of every touched function: the compare harness reports neither, and the
 * walks cost it several percent of a run. Every other figure is the same.
 */
export function runFetchCounts(
  target: FetchTarget,
  fns: readonly FetchFunction[],
  opts: FetchOptions,
): FetchCounts {
  return runCalls(target, fns, opts).report;
}

function runCalls(
  target: FetchTarget,
  fns: readonly FetchFunction[],
  opts: FetchOptions,
): { report: FetchCounts; touched: Uint8Array } {
  const cpus = opts.cpus ?? [0];
  const spans = checkInput(target, fns, opts, cpus);
  const rng = opts.rng;
  const cumulative = zipfCumulative(fns.length, opts.exponent, rng);
  const guide = guideTable(cumulative);
  const usedCpus = [...new Set(cpus)];
  const flushesBefore = target.counters.localFlushes;
  if (opts.coldStart ?? false) for (const c of usedCpus) target.flushLocal(c);
  const localFlushesAdded = target.counters.localFlushes - flushesBefore;

  const before = usedCpus.map((c) => ({ ...target.tlbs[c].stats.i }));
  const boundBefore = usedCpus.map((c) => target.tlbs[c].iBoundMisses);
  const walksBefore = target.counters.pageWalks;
  const touched = new Uint8Array(fns.length);
  const tally: Tally = { fetches: 0, faults: 0 };
  for (let call = 0; call < opts.calls; call++) {
    const cpu = cpus.length === 1 ? cpus[0] : cpus[Math.floor(rng.next() * cpus.length)];
    const index = pick(cumulative, guide, rng.next());
    touched[index] = 1;
    execute(target, cpu, spans[2 * index], spans[2 * index + 1], tally);
  }
  const fetches = tally.fetches;

  let itlbMisses = 0;
  let l1Misses = 0;
  let boundMisses = 0;
  usedCpus.forEach((c, i) => {
    const s = target.tlbs[c].stats.i;
    itlbMisses += s.misses - before[i].misses;
    boundMisses += target.tlbs[c].iBoundMisses - boundBefore[i];
    l1Misses += s.misses - before[i].misses + (s.l2Hits - before[i].l2Hits);
  });
  const perMillion = (n: number) => (n * 1e6) / fetches;
  let functionsTouched = 0;
  for (const t of touched) functionsTouched += t;
  const report: FetchCounts = {
    calls: opts.calls,
    fetches,
    itlbMisses,
    l1Misses,
    pageWalks: target.counters.pageWalks - walksBefore,
    boundMisses,
    missesPerMillion: perMillion(itlbMisses),
    lowerBoundPerMillion: perMillion(boundMisses),
    l1MissesPerMillion: perMillion(l1Misses),
    faults: tally.faults,
    localFlushesAdded,
    functionsTouched,
  };
  return { report, touched };
}
