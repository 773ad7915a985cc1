/**
 * "At a glance": for every workload and every headline figure, who leads and by how much, and
 * where ours is not best, why (issue 12 item 5, "show the trade-offs honestly").
 *
 * Why it is built this way: a design that wins on one axis and loses on another must be shown as
 * such, on every workload, not on a chosen one. So the verdicts are computed from the data
 * (never written by hand), every figure is judged the same way against every other design, and
 * the reasons ours trails are kept in one small table keyed by figure (TRADEOFF_REASONS), next to
 * a fact taken from the run itself (for kernel time: the event class where ours spends most more
 * than the leader). A figure with no recorded reason says so instead of inventing one.
 */
import { COST_TABLE, costLabel, type KernelEventKey } from '../kernel-time-costs.js';
import { formatBytes, formatCount, formatDuration, formatPercent, formatRatio } from './format.js';
import type { MetricKey, PolicyMetrics, PolicyRun, WorkloadRun } from './types.js';
import {
  ALL_FLUSHES_LABEL,
  collapsedRows,
  GLOBAL_FLUSH_LABELS,
  primaryGlobalFlush,
  vocabularyFor,
} from './vocabulary.js';

/** The design this project builds (the others are Linux designs). */
export const OUR_POLICY = 'execmem';

export interface GlanceFigure {
  readonly key: MetricKey;
  readonly label: string;
  readonly better: 'low' | 'high';
  readonly format: (m: PolicyMetrics) => string;
}

/** The figures judged, kernel time first, in the arch's words. */
export function glanceFigures(arch: string): GlanceFigure[] {
  const v = vocabularyFor(arch);
  const flush = primaryGlobalFlush(arch);
  return [
    {
      key: 'modelledKernelTimeNs',
      label: 'kernel time (modelled)',
      better: 'low',
      format: (m) => formatDuration(m.modelledKernelTimeNs),
    },
    { key: 'overhead', label: 'mapped / live', better: 'low', format: (m) => formatRatio(m.overhead) },
    {
      key: 'largePageShare',
      label: 'exec bytes on 2 MiB',
      better: 'high',
      format: (m) => formatPercent(m.largePageShare),
    },
    { key: flush, label: GLOBAL_FLUSH_LABELS[flush], better: 'low', format: (m) => formatCount(m[flush]) },
    {
      key: 'allFlushEvents',
      label: ALL_FLUSHES_LABEL,
      better: 'low',
      format: (m) => formatCount(m.allFlushEvents),
    },
    {
      key: 'directMap4kGrowthBytes',
      label: `${v.physMap} 4 KiB growth`,
      better: 'low',
      format: (m) => formatBytes(m.directMap4kGrowthBytes),
    },
    {
      key: 'itlbMissesPerMillion',
      label: 'iTLB misses / M',
      better: 'low',
      format: (m) => m.itlbMissesPerMillion.toFixed(1),
    },
  ];
}

/**
 * Why ours trails on a figure, keyed by figure: the design's known costs (issue 12 items 1 and
 * 2). Only what the design does is said here; the run's own numbers are added by `verdicts`.
 * {patch} and {stepFlush} are replaced by the arch's words (vocabulary.ts).
 */
export const TRADEOFF_REASONS: Readonly<Partial<Record<MetricKey, string>>> = {
  overhead:
    'each of our pools maps at least one 2 MiB block, plus a spare, which a small live set does not fill',
  allFlushEvents: 'one {patch} session per update: every step of the write ends in its own {stepFlush}',
};

/** A reason in the arch's words. */
function reasonFor(key: MetricKey, arch: string): string | undefined {
  const v = vocabularyFor(arch);
  return TRADEOFF_REASONS[key]?.replaceAll('{patch}', v.patching).replaceAll('{stepFlush}', v.stepFlush);
}

export const NO_REASON = 'no reason recorded for this figure yet; see the per-workload table';

export interface Verdict {
  readonly figure: GlanceFigure;
  /** Our value, formatted ('' when ours is not in the run). */
  readonly ours: string;
  /** The best design other than ours, and its value (formatted). */
  readonly bestOther: { readonly name: string; readonly value: string } | null;
  /** 'leads', 'ties' or 'trails' (ours against the best other design). */
  readonly standing: 'leads' | 'ties' | 'trails';
  /** "18% lower", "3.2x higher", "140 vs 0": how far apart ours and the best other are. */
  readonly margin: string;
  /** Where ours trails: the reason (TRADEOFF_REASONS or NO_REASON) and a fact from the run. */
  readonly reason: string | null;
}

/** The contenders of a run: every design with figures of its own (not "= another design"). */
function contenders(run: WorkloadRun): PolicyRun[] {
  const collapsed = collapsedRows(run.arch, run.policies);
  return run.policies.filter((_, i) => !collapsed.has(i));
}

/** How far ours is from the other: "18% lower", "3.2x higher", or both values when one is 0. */
function margin(ours: number, other: number, format: (n: number) => string): string {
  if (ours === other) return 'equal';
  const word = ours < other ? 'lower' : 'higher';
  if (other <= 0 || ours <= 0) return `${format(ours)} against ${format(other)}`;
  const big = Math.max(ours, other);
  const small = Math.min(ours, other);
  const ratio = big / small;
  return ratio >= 2
    ? `${ratio.toFixed(1)}x ${word}`
    : `${(((big - small) / small) * 100).toFixed(1)}% ${word}`;
}

/** The event class where ours spends most more than `leader` (kernel time), as a sentence. */
function kernelTimeFact(ours: PolicyRun, leader: PolicyRun, arch: string): string {
  let worst: KernelEventKey | null = null;
  let excess = 0;
  for (const e of COST_TABLE) {
    const d = ours.kernelTime.byEvent[e.key].ns - leader.kernelTime.byEvent[e.key].ns;
    if (d > excess) {
      excess = d;
      worst = e.key;
    }
  }
  if (worst === null) return '';
  const entry = COST_TABLE.find((e) => e.key === worst);
  const a = ours.kernelTime.byEvent[worst].count;
  const b = leader.kernelTime.byEvent[worst].count;
  return (
    `ours spends ${formatDuration(excess)} more on ${entry ? costLabel(entry, arch) : worst} ` +
    `(${formatCount(a)} events against ${formatCount(b)})`
  );
}

/** Ours against the best other design on every figure of one run. */
export function verdicts(run: WorkloadRun): Verdict[] {
  const all = contenders(run);
  const ours = all.find((p) => p.name === OUR_POLICY);
  const others = all.filter((p) => p.name !== OUR_POLICY);
  return glanceFigures(run.arch).map((figure) => {
    const value = (p: PolicyRun) => p.metrics[figure.key];
    const better = (a: number, b: number) => (figure.better === 'low' ? a < b : a > b);
    let best: PolicyRun | null = null;
    for (const p of others) if (best === null || better(value(p), value(best))) best = p;
    if (ours === undefined || best === null) {
      return {
        figure,
        ours: ours ? figure.format(ours.metrics) : '',
        bestOther: best ? { name: best.name, value: figure.format(best.metrics) } : null,
        standing: 'leads' as const,
        margin: '',
        reason: null,
      };
    }
    const mine = value(ours);
    const theirs = value(best);
    const standing = mine === theirs ? 'ties' : better(mine, theirs) ? 'leads' : 'trails';
    const fmt = (n: number) => figure.format({ ...ours.metrics, [figure.key]: n });
    let reason: string | null = null;
    if (standing === 'trails') {
      const fact = figure.key === 'modelledKernelTimeNs' ? kernelTimeFact(ours, best, run.arch) : '';
      reason = [reasonFor(figure.key, run.arch) ?? (fact === '' ? NO_REASON : ''), fact]
        .filter((t) => t !== '')
        .join('; ');
    }
    return {
      figure,
      ours: figure.format(ours.metrics),
      bestOther: { name: best.name, value: figure.format(best.metrics) },
      standing,
      margin: margin(mine, theirs, fmt),
      reason,
    };
  });
}

/** One line of a verdict, e.g. "ours 1.49x, jit_alloc-2023 1.18x: 26% higher (reason)". */
export function verdictText(v: Verdict): string {
  if (v.bestOther === null) return `ours ${v.ours}`;
  const head = `ours ${v.ours}, best other ${v.bestOther.name} ${v.bestOther.value}`;
  if (v.standing === 'ties') return `${head}: ours ties`;
  const verb = v.standing === 'leads' ? 'ours leads' : 'ours trails';
  return `${head}: ${verb} (${v.margin})${v.reason ? `; why: ${v.reason}` : ''}`;
}
