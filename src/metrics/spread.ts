/**
 * Several seeds of one compare: every figure as its median, min and max over the seeds, with the
 * value of each seed (`execmem compare --seeds 1-5`, `execmem report --seeds 1-5`).
 *
 * Why: one seed is one instance of a workload (which programs load, in which order, where KASLR
 * puts the module area). A difference between designs that is smaller than the spread over seeds
 * says nothing, so the tables print `median (min-max)` and the charts draw min-max whiskers.
 *
 * The median is the low median (statistics' median_low): for an even number of seeds, the lower
 * of the two middle values. It is always a value one seed measured, so the modelled kernel time's
 * breakdown (which must add up to the figure shown) and the module-area map can be those of that
 * seed (`medianSeed`), and `execmem diff` compares medians that some run really produced.
 * Every figure's median is taken on its own: the median of mapped/live is not the ratio of the
 * medians of mapped and live.
 */
import { assert } from '../base/assert.js';
import type { CompareResult, OccupancyMap, PolicyMetrics, PolicyResult } from './compare.js';
import { toCsv } from './csv.js';
import { type KernelTimeBreakdown, type RunKernelTime, runKernelTime } from './kernel-time.js';
import { METRIC_KEYS } from './report/types.js';

/** One figure over several seeds. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** The figure of each seed, in the order of the run's `seeds`. */
  readonly perSeed: readonly number[];
}

export type SpreadMetrics = { readonly [K in keyof PolicyMetrics]: Spread };

export interface SpreadPolicyResult {
  readonly name: string;
  readonly modelled: boolean;
  readonly kernel: string;
  readonly sameAs: string | null;
  readonly wxHoles: string | null;
  readonly description: string;
  /** The median seed's own counters of the design (compare's policies[].counters). */
  readonly counters: Readonly<Record<string, number>>;
  /** The seed whose modelled kernel time is the median: its breakdown and area map are shown. */
  readonly medianSeed: number;
  /** The median seed's breakdown (adds up to metrics.modelledKernelTimeNs.median). */
  readonly kernelTime: KernelTimeBreakdown;
  readonly metrics: SpreadMetrics;
  /** The median seed's module-area occupancy. */
  readonly occupancy: OccupancyMap;
  readonly failureSamples: readonly {
    seed: number;
    eventIndex: number;
    op: string;
    code: string;
    reason: string;
  }[];
}

export interface SpreadCompareResult {
  readonly workload: string;
  readonly description: string;
  readonly arch: CompareResult['arch'];
  readonly seeds: readonly number[];
  readonly scale: number;
  /** The machine of the first seed (the seeds differ only in the seed). */
  readonly machine: CompareResult['machine'];
  readonly modelledNote: string;
  readonly simulatorSpeedNote: string;
  readonly spreadNote: string;
  /** Costs and ranking sensitivity over the median seeds' breakdowns. */
  readonly kernelTime: RunKernelTime;
  readonly policies: readonly SpreadPolicyResult[];
}

export const SPREAD_NOTE =
  'Each figure is the median over the seeds (the low median for an even count: a value one seed ' +
  'measured) with its min and max; perSeed lists the value of every seed in the order of seeds. The ' +
  "kernel-time breakdown and the area map are those of each design's median seed (medianSeed). " +
  'Charts draw the median as the bar and the min-max as a whisker.';

/** The low median of a non-empty list. */
export function lowMedian(values: readonly number[]): number {
  assert(values.length > 0, 'the median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

export function spreadOf(values: readonly number[]): Spread {
  assert(values.length > 0, 'the spread of no values');
  return {
    median: lowMedian(values),
    min: Math.min(...values),
    max: Math.max(...values),
    perSeed: [...values],
  };
}

/** Merge the compares of one workload on several seeds (same arch, scale and designs, in order). */
export function spreadCompare(results: readonly CompareResult[]): SpreadCompareResult {
  assert(results.length > 0, 'a spread of no runs');
  const first = results[0];
  for (const r of results) {
    assert(
      r.workload === first.workload && r.arch === first.arch && r.scale === first.scale,
      `a spread mixes ${first.workload}/${first.arch} and ${r.workload}/${r.arch}`,
    );
    assert(
      r.policies.map((p) => p.name).join() === first.policies.map((p) => p.name).join(),
      'a spread over runs of different designs',
    );
  }
  const seeds = results.map((r) => r.seed);
  const policies = first.policies.map((_, i) =>
    spreadPolicy(
      results.map((r) => r.policies[i]),
      seeds,
    ),
  );
  return {
    workload: first.workload,
    description: first.description,
    arch: first.arch,
    seeds,
    scale: first.scale,
    machine: first.machine,
    modelledNote: first.modelledNote,
    simulatorSpeedNote: first.simulatorSpeedNote,
    spreadNote: SPREAD_NOTE,
    kernelTime: runKernelTime(policies, first.arch),
    policies,
  };
}

function spreadPolicy(runs: readonly PolicyResult[], seeds: readonly number[]): SpreadPolicyResult {
  const p = runs[0];
  const keys = Object.keys(p.metrics) as (keyof PolicyMetrics)[];
  const metrics = {} as Record<keyof PolicyMetrics, Spread>;
  for (const key of keys) metrics[key] = spreadOf(runs.map((r) => r.metrics[key]));
  const median = metrics.modelledKernelTimeNs.median;
  const at = runs.findIndex((r) => r.metrics.modelledKernelTimeNs === median);
  assert(at >= 0, 'the median kernel time is no seed of the run');
  return {
    name: p.name,
    modelled: p.modelled,
    kernel: p.kernel,
    sameAs: p.sameAs,
    wxHoles: p.wxHoles,
    description: p.description,
    counters: runs[at].counters,
    medianSeed: seeds[at],
    kernelTime: runs[at].kernelTime,
    metrics,
    occupancy: runs[at].occupancy,
    failureSamples: runs
      .flatMap((r, i) => r.failureSamples.map((f) => ({ seed: seeds[i], ...f })))
      .slice(0, 10),
  };
}

/** One bound of every figure (median, min or max) as plain metrics. */
export function spreadBound(metrics: SpreadMetrics, bound: 'median' | 'min' | 'max'): PolicyMetrics {
  const out = {} as PolicyMetrics;
  for (const key of Object.keys(metrics) as (keyof PolicyMetrics)[]) out[key] = metrics[key][bound];
  return out;
}

/** The min and max of each figure, as tables and charts take them (report/types.ts PolicyRun.spread). */
export interface FigureRange<M> {
  readonly min: M;
  readonly max: M;
}

/**
 * A table cell: the figure as `format` prints it, then `(min-max)` when the seeds differ, each
 * bound printed by the same `format` (so units and separators match): `1,234 (1,100-1,300)`.
 */
export function spreadCell<M extends object>(
  format: (m: M) => string,
  metrics: M,
  range: FigureRange<M> | undefined,
  key: keyof M,
): string {
  const text = format(metrics);
  if (range === undefined || range.min[key] === range.max[key]) return text;
  // A bound prints its figure only, not the figure's own note in parentheses (iTLB's lower bound).
  const bound = (m: M) => format(m).replace(/ \(.*\)$/, '');
  return `${text} (${bound(range.min)}-${bound(range.max)})`;
}

/**
 * `compare --seeds ... --csv`: one record per design and figure (METRIC_KEYS): median, min, max,
 * then the value of each seed in a column named `seed N`. Raw numbers, as every CSV of execmem.
 */
export function spreadCsv(r: SpreadCompareResult): string {
  const header = [
    'workload',
    'arch',
    'scale',
    'policy',
    'kernel',
    'modelled',
    'sameAs',
    'figure',
    'median',
    'min',
    'max',
    ...r.seeds.map((s) => `seed ${s}`),
  ];
  const rows = r.policies.flatMap((p) =>
    METRIC_KEYS.map((key) => {
      const s = p.metrics[key];
      return [
        r.workload,
        r.arch,
        r.scale,
        p.name,
        p.kernel,
        p.modelled,
        p.sameAs,
        key,
        s.median,
        s.min,
        s.max,
        ...s.perSeed,
      ];
    }),
  );
  return toCsv(header, rows);
}
