/**
 * Number and text formatting shared by the HTML page, summary.md and the terminal table, and the
 * columns of the summary tables (headed in each arch's words, see vocabulary.ts).
 *
 * Why one place: the same figure must read the same in all three outputs (a reader comparing
 * the terminal table with the page should never see 1.50x in one and 1.5 in the other), and
 * units are always spelled out (KiB/MiB, %, per million) as the project's style asks.
 */
import { spreadCell } from '../spread.js';
import type { MetricKey, PolicyMetrics } from './types.js';
import {
  ALL_FLUSHES_LABEL,
  GLOBAL_FLUSH_LABELS,
  globalFlushColumns,
  kernelLabel,
  patchWritesLabel,
  type SameAsRow,
  vocabularyFor,
} from './vocabulary.js';

export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

export function formatBytes(bytes: number): string {
  const abs = Math.abs(bytes);
  if (abs >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  if (abs >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  if (abs >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function formatCount(n: number): string {
  return Number.isInteger(n) ? n.toLocaleString('en-US') : n.toFixed(2);
}

export function formatRatio(x: number): string {
  return `${x.toFixed(x >= 100 ? 0 : 2)}x`;
}

/** A duration in the largest unit that keeps it >= 1: ns, µs, ms or s. */
export function formatDuration(ns: number): string {
  const abs = Math.abs(ns);
  if (abs >= 1e9) return `${(ns / 1e9).toFixed(2)} s`;
  if (abs >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (abs >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${Math.round(ns)} ns`;
}

/** Heading of the modelled kernel time, the same in every table. */
export const KERNEL_TIME_HEADING = 'kernel time (modelled)';

export function formatPercent(share: number): string {
  return `${(share * 100).toFixed(1)}%`;
}

/**
 * The two halves a workload's table is shown in on the page and in summary.md, so each fits a
 * 1280 px window (issue 13 item 7): what the run cost and occupied, then the TLB and write work.
 */
export type ColumnGroup = 'memory' | 'tlb';
export const COLUMN_GROUPS: readonly { readonly id: ColumnGroup; readonly title: string }[] = [
  { id: 'memory', title: 'time, memory and mappings' },
  { id: 'tlb', title: 'TLB flushes, writes and iTLB' },
];

/** A column of the summary tables: which metric, its heading, how to print it, which way is better. */
export interface Column {
  readonly key: MetricKey;
  readonly heading: string;
  readonly format: (m: PolicyMetrics) => string;
  /** 'low' when smaller is better, 'high' when larger is better, null when neither. */
  readonly better: 'low' | 'high' | null;
  readonly group: ColumnGroup;
  /**
   * The ranked figure as the reader sees it (default: `format`): rows showing the same text as
   * the best are all marked best, so a tie on the page is always marked as one.
   */
  readonly rankText?: (m: PolicyMetrics) => string;
}

/** What the column choice looks at: the arch (its words) and the rows (non-zero flush kinds). */
export interface ColumnSource {
  readonly arch: string;
  readonly policies: readonly { readonly metrics: PolicyMetrics }[];
}

/**
 * The summary table's columns for one run, headed in the run's arch's words (vocabulary.ts).
 * Modelled kernel time comes first: it is the figure that says who wins overall (issue 12).
 * The simulator's own speed is not a column: it says nothing about Linux (issue 11 item 12).
 */
export function tableColumns(run: ColumnSource): Column[] {
  const v = vocabularyFor(run.arch);
  const flushes = globalFlushColumns(
    run.arch,
    run.policies.map((p) => p.metrics),
  );
  return [
    {
      key: 'modelledKernelTimeNs',
      heading: KERNEL_TIME_HEADING,
      format: (m) => formatDuration(m.modelledKernelTimeNs),
      better: 'low',
      group: 'memory',
    },
    {
      key: 'liveBytes',
      heading: 'live',
      format: (m) => formatBytes(m.liveBytes),
      better: null,
      group: 'memory',
    },
    {
      key: 'mappedBytes',
      heading: 'mapped',
      format: (m) => formatBytes(m.mappedBytes),
      better: 'low',
      group: 'memory',
    },
    {
      key: 'overhead',
      heading: 'mapped/live',
      format: (m) => formatRatio(m.overhead),
      better: 'low',
      group: 'memory',
    },
    {
      key: 'largePageShare',
      heading: 'exec on 2M',
      format: (m) => formatPercent(m.largePageShare),
      better: 'high',
      group: 'memory',
    },
    {
      key: 'directMap4kGrowthBytes',
      heading: v.physMap4kGrowth,
      format: (m) => formatBytes(m.directMap4kGrowthBytes),
      better: 'low',
      group: 'memory',
    },
    {
      key: 'directMapSplits',
      heading: v.physMapSplits,
      format: (m) => formatCount(m.directMapSplits),
      better: 'low',
      group: 'memory',
    },
    ...flushes.map(
      (key): Column => ({
        key,
        heading: GLOBAL_FLUSH_LABELS[key],
        format: (m) => formatCount(m[key]),
        better: 'low',
        group: 'tlb',
      }),
    ),
    // Local flushes are the cheap alternative to global ones: fewer is not better on its own,
    // nor is a smaller total of flushes of different reach.
    {
      key: 'localFlushes',
      heading: 'local flushes',
      format: (m) => formatCount(m.localFlushes),
      better: null,
      group: 'tlb',
    },
    {
      key: 'allFlushEvents',
      heading: ALL_FLUSHES_LABEL,
      format: (m) => formatCount(m.allFlushEvents),
      better: null,
      group: 'tlb',
    },
    {
      key: 'permissionFlips',
      heading: 'perm flips',
      format: (m) => formatCount(m.permissionFlips),
      better: 'low',
      group: 'tlb',
    },
    // Alias writes are how some designs avoid permission flips: counted, not ranked.
    {
      key: 'pokes',
      heading: patchWritesLabel(v),
      format: (m) => formatCount(m.pokes),
      better: null,
      group: 'tlb',
    },
    {
      key: 'itlbMissesPerMillion',
      heading: 'iTLB miss/M',
      format: (m) => `${m.itlbMissesPerMillion.toFixed(1)} (≥${m.itlbLowerBoundPerMillion.toFixed(1)})`,
      better: 'low',
      group: 'tlb',
      rankText: (m) => m.itlbMissesPerMillion.toFixed(1),
    },
    // Must be 0 everywhere: a non-zero value is flagged, not ranked.
    {
      key: 'wxViolations',
      heading: 'W^X',
      format: (m) => formatCount(m.wxViolations),
      better: null,
      group: 'memory',
    },
    {
      key: 'failures',
      heading: 'failed ops',
      format: (m) => formatCount(m.failures),
      better: null,
      group: 'memory',
    },
  ];
}

/** The few columns the terminal summary shows (global flushes without their IPIs). */
export function terminalColumns(run: ColumnSource): Column[] {
  const keep: readonly MetricKey[] = [
    'modelledKernelTimeNs',
    'overhead',
    'largePageShare',
    'directMap4kGrowthBytes',
    'shootdowns',
    'broadcastFlushes',
    'allFlushEvents',
    'itlbMissesPerMillion',
    'wxViolations',
    'failures',
  ];
  return tableColumns(run).filter((c) => keep.includes(c.key));
}

/**
 * Rows holding the best value of a column (all of them on a tie); empty when the column has no
 * direction. Rows in `skip` (designs shown as "= another design") are never ranked. With `texts`
 * (the figures as printed), a tie is what the reader sees: every row printing the same text as
 * the best row is marked, so two cells that read alike are never one bold and one plain.
 */
export function bestRows(
  values: readonly number[],
  better: 'low' | 'high' | null,
  skip: ReadonlySet<number> = new Set(),
  texts?: readonly string[],
): Set<number> {
  const best = bestIndex(values, better, skip);
  const rows = new Set<number>();
  if (best < 0) return rows;
  values.forEach((v, i) => {
    if (skip.has(i)) return;
    if (texts ? texts[i] === texts[best] : v === values[best]) rows.add(i);
  });
  return rows;
}

/** The best rows of a column of a table of designs, ties as printed (bestRows with texts). */
export function bestRowsOf(
  column: Column,
  policies: readonly { readonly metrics: PolicyMetrics }[],
  skip: ReadonlySet<number> = new Set(),
): Set<number> {
  const text = column.rankText ?? column.format;
  return bestRows(
    policies.map((p) => p.metrics[column.key]),
    column.better,
    skip,
    policies.map((p) => text(p.metrics)),
  );
}

/** Index of the best value in a column (ties: the first), or -1 when there is none to rank. */
export function bestIndex(
  values: readonly number[],
  better: 'low' | 'high' | null,
  skip: ReadonlySet<number> = new Set(),
): number {
  if (better === null) return -1;
  let best = -1;
  for (let i = 0; i < values.length; i++) {
    if (skip.has(i)) continue;
    if (best < 0 || (better === 'low' ? values[i] < values[best] : values[i] > values[best])) best = i;
  }
  return best;
}

/** A row of a text table: its cells, or leading cells then one text over the remaining columns. */
export type TextRow = readonly string[] | { readonly cells: readonly string[]; readonly span: string };

/**
 * Plain fixed-width text table (terminal): the first `textColumns` columns (names) left-aligned,
 * the figures right-aligned. A spanning row's text (e.g. "= execmem-6.10 on arm64") follows its
 * leading cells without widening the columns it covers.
 */
export function textTable(header: readonly string[], rows: readonly TextRow[], textColumns = 1): string {
  const cellsOf = (r: TextRow): readonly string[] => ('span' in r ? r.cells : r);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => cellsOf(r)[i]?.length ?? 0)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i < textColumns ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const render = (r: TextRow) => ('span' in r ? `${line(r.cells)}  ${r.span}` : line(cellsOf(r)));
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(render)].join('\n');
}

/**
 * A figure's cell: the column's format, then `(min-max)` when the row carries a spread over
 * several seeds that differ (src/metrics/spread.ts).
 */
export function figureText(
  c: Column,
  p: { readonly metrics: PolicyMetrics; readonly spread?: { min: PolicyMetrics; max: PolicyMetrics } },
): string {
  return spreadCell(c.format, p.metrics, p.spread, c.key);
}

/** "seed 1", or for a several-seed run "seeds 1,2,3 (median, min-max)". */
export function seedLabel(run: { readonly seed: number; readonly seeds?: readonly number[] }): string {
  return run.seeds === undefined ? `seed ${run.seed}` : `seeds ${run.seeds.join(',')} (median, min-max)`;
}

/** Leading text columns of a terminal table of designs: policy and kernel. */
export const TEXT_ROW_HEADER: readonly string[] = ['policy', 'kernel'];

/**
 * One row of a terminal table (policy, kernel, figures), or the same-as note spanning the figures
 * (vocabulary.ts sameAsRows). Shared by `execmem compare` and `execmem report`'s summary so both
 * print a design alike.
 */
export function textRow(
  p: {
    name: string;
    modelled: boolean;
    kernel: string;
    metrics: PolicyMetrics;
    spread?: { min: PolicyMetrics; max: PolicyMetrics };
  },
  columns: readonly Column[],
  same: SameAsRow | null,
  name = p.name,
): TextRow {
  const kernel = kernelLabel(p) ?? 'ours';
  if (same?.collapsed) return { cells: [name, kernel], span: same.label };
  return [same ? `${name} [${same.label}]` : name, kernel, ...columns.map((c) => figureText(c, p))];
}
