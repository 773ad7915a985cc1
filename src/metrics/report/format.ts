/**
 * Number and text formatting shared by the HTML page, summary.md and the terminal table.
 *
 * Why one place: the same figure must read the same in all three outputs (a reader comparing
 * the terminal table with the page should never see 1.50x in one and 1.5 in the other), and
 * units are always spelled out (KiB/MiB, %, per million) as the project's style asks.
 */
import type { MetricKey, PolicyMetrics } from './types.js';

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

export function formatPercent(share: number): string {
  return `${(share * 100).toFixed(1)}%`;
}

/** A column of the summary tables: which metric, its heading, how to print it, which way is better. */
export interface Column {
  readonly key: MetricKey;
  readonly heading: string;
  readonly format: (m: PolicyMetrics) => string;
  /** 'low' when smaller is better, 'high' when larger is better, null when neither. */
  readonly better: 'low' | 'high' | null;
}

export const TABLE_COLUMNS: readonly Column[] = [
  { key: 'liveBytes', heading: 'live', format: (m) => formatBytes(m.liveBytes), better: null },
  { key: 'mappedBytes', heading: 'mapped', format: (m) => formatBytes(m.mappedBytes), better: 'low' },
  { key: 'overhead', heading: 'mapped/live', format: (m) => formatRatio(m.overhead), better: 'low' },
  {
    key: 'largePageShare',
    heading: 'exec on 2M',
    format: (m) => formatPercent(m.largePageShare),
    better: 'high',
  },
  {
    key: 'directMap4kGrowthBytes',
    heading: 'DirectMap4k +',
    format: (m) => formatBytes(m.directMap4kGrowthBytes),
    better: 'low',
  },
  {
    key: 'directMapSplits',
    heading: 'DM splits',
    format: (m) => formatCount(m.directMapSplits),
    better: 'low',
  },
  { key: 'shootdowns', heading: 'shootdowns', format: (m) => formatCount(m.shootdowns), better: 'low' },
  { key: 'ipis', heading: 'IPIs', format: (m) => formatCount(m.ipis), better: 'low' },
  // Local flushes are the cheap alternative to shootdowns: fewer is not better on its own.
  {
    key: 'localFlushes',
    heading: 'local flushes',
    format: (m) => formatCount(m.localFlushes),
    better: null,
  },
  {
    key: 'permissionFlips',
    heading: 'perm flips',
    format: (m) => formatCount(m.permissionFlips),
    better: 'low',
  },
  {
    key: 'itlbMissesPerMillion',
    heading: 'iTLB miss/M',
    format: (m) => `${m.itlbMissesPerMillion.toFixed(1)} (≥${m.itlbLowerBoundPerMillion.toFixed(1)})`,
    better: 'low',
  },
  {
    key: 'opsPerSecondRatio',
    heading: 'speed',
    format: (m) => formatRatio(m.opsPerSecondRatio),
    better: 'high',
  },
  // Must be 0 everywhere: a non-zero value is flagged, not ranked.
  { key: 'wxViolations', heading: 'W^X', format: (m) => formatCount(m.wxViolations), better: null },
  { key: 'failures', heading: 'failed ops', format: (m) => formatCount(m.failures), better: null },
];

/** The few columns the terminal table shows. */
export const TERMINAL_KEYS: readonly MetricKey[] = [
  'overhead',
  'largePageShare',
  'directMap4kGrowthBytes',
  'shootdowns',
  'itlbMissesPerMillion',
  'opsPerSecondRatio',
  'wxViolations',
  'failures',
];

/** Rows holding the best value of a column (all of them on a tie); empty when the column has no direction. */
export function bestRows(values: readonly number[], better: 'low' | 'high' | null): Set<number> {
  const best = bestIndex(values, better);
  const rows = new Set<number>();
  if (best < 0) return rows;
  values.forEach((v, i) => {
    if (v === values[best]) rows.add(i);
  });
  return rows;
}

/** Index of the best value in a column (ties: the first), or -1 when the column has no direction. */
export function bestIndex(values: readonly number[], better: 'low' | 'high' | null): number {
  if (better === null || values.length === 0) return -1;
  let best = 0;
  for (let i = 1; i < values.length; i++) {
    if (better === 'low' ? values[i] < values[best] : values[i] > values[best]) best = i;
  }
  return best;
}

/** Plain fixed-width text table (terminal). */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
