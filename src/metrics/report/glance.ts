/**
 * "At a glance": for every workload and every headline figure, who leads and by how much, and
 * where ours is not best, why (issue 12 item 5, "show the trade-offs honestly").
 *
 * Why it is built this way: a design that wins on one axis and loses on another must be shown as
 * such, on every workload, not on a chosen one. So the verdicts are computed from the data
 * (never written by hand), every figure is judged the same way against every other design, ties
 * are what the reader sees (the same printed value), and the reasons ours trails come from rules
 * over the run's own figures (reasons.ts). A figure no rule explains says so instead of inventing
 * a reason. The summary that opens the report (summary.ts) is made from these verdicts.
 */
import { formatBytes, formatCount, formatDuration, formatPercent, formatRatio } from './format.js';
import { whyOursTrails } from './reasons.js';
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

export { NO_REASON } from './reasons.js';

export interface Verdict {
  readonly figure: GlanceFigure;
  /** Ours' value (formatted), or '' when ours is not in the run. */
  readonly ours: string;
  /** The best design other than ours, and its value (formatted). */
  readonly bestOther: { readonly name: string; readonly value: string } | null;
  /** 'leads', 'ties' or 'trails' (ours against the best other design, as printed). */
  readonly standing: 'leads' | 'ties' | 'trails';
  /** "18% lower", "3.2x higher", "140 vs 0": how far apart ours and the best other are. */
  readonly margin: string;
  /** Where ours trails: the reasons whose rules hold on the run's figures (reasons.ts), or NO_REASON. */
  readonly reason: string | null;
  /** Every design printing the best value (all of them on a tie), in table order. */
  readonly leaders: readonly string[];
  /** The leaders' value (formatted). */
  readonly leaderValue: string;
  /** The best design that does not lead, its value, and how far the leaders are ahead; null if all tie. */
  readonly runnerUp: { readonly name: string; readonly value: string; readonly margin: string } | null;
}

/** The contenders of a run: every design with figures of its own (not "= another design"). */
export function contenders(run: WorkloadRun): PolicyRun[] {
  const collapsed = collapsedRows(run.arch, run.policies);
  return run.policies.filter((_, i) => !collapsed.has(i));
}

/** How far `a` is from `b`: "18% lower", "3.2x higher", or both values when one is 0. */
export function margin(a: number, b: number, format: (n: number) => string): string {
  if (a === b) return 'equal';
  const word = a < b ? 'lower' : 'higher';
  if (b <= 0 || a <= 0) return `${format(a)} against ${format(b)}`;
  const big = Math.max(a, b);
  const small = Math.min(a, b);
  const ratio = big / small;
  if (ratio >= 2) return `${ratio.toFixed(1)}x ${word}`;
  const percent = ((big - small) / small) * 100;
  return `${percent.toFixed(percent < 0.1 ? 2 : 1)}% ${word}`;
}

/** The best of `designs` on a figure (the first on a tie), or null when there are none. */
function bestOf(designs: readonly PolicyRun[], figure: GlanceFigure): PolicyRun | null {
  let best: PolicyRun | null = null;
  for (const p of designs) {
    const v = p.metrics[figure.key];
    if (
      best === null ||
      (figure.better === 'low' ? v < best.metrics[figure.key] : v > best.metrics[figure.key])
    )
      best = p;
  }
  return best;
}

/** Ours against the best other design, and who leads, on every figure of one run. */
export function verdicts(run: WorkloadRun): Verdict[] {
  const all = contenders(run);
  const ours = all.find((p) => p.name === OUR_POLICY);
  const others = all.filter((p) => p.name !== OUR_POLICY);
  return glanceFigures(run.arch).map((figure) => {
    const text = (p: PolicyRun) => figure.format(p.metrics);
    const fmt = (n: number) => figure.format({ ...all[0].metrics, [figure.key]: n });
    // Ties are what the reader sees: the same printed value (format.ts bestRows does the same).
    const top = bestOf(all, figure);
    const leaders = top === null ? [] : all.filter((p) => text(p) === text(top));
    const rest = all.filter((p) => !leaders.includes(p));
    const second = bestOf(rest, figure);
    const runnerUp =
      top === null || second === null
        ? null
        : {
            name: second.name,
            value: text(second),
            margin: margin(top.metrics[figure.key], second.metrics[figure.key], fmt),
          };
    const base = {
      figure,
      leaders: leaders.map((p) => p.name),
      leaderValue: top === null ? '' : text(top),
      runnerUp,
    };
    const best = bestOf(others, figure);
    if (ours === undefined || best === null) {
      return {
        ...base,
        ours: ours ? text(ours) : '',
        bestOther: best ? { name: best.name, value: text(best) } : null,
        standing: 'leads' as const,
        margin: '',
        reason: null,
      };
    }
    const mine = ours.metrics[figure.key];
    const theirs = best.metrics[figure.key];
    const standing = text(ours) === text(best) ? 'ties' : leaders.includes(ours) ? 'leads' : 'trails';
    return {
      ...base,
      ours: text(ours),
      bestOther: { name: best.name, value: text(best) },
      standing,
      margin: margin(mine, theirs, fmt),
      reason:
        standing === 'trails' && top !== null
          ? whyOursTrails({ run, ours, leader: top, key: figure.key })
          : null,
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
