/**
 * Charts of the report, rendered server-side to SVG strings with Apache ECharts.
 *
 * Why server-side SVG: the page must open from disk with no script and no network (a report is
 * an artifact kept next to a run), print cleanly, and be testable by parsing the file: ECharts'
 * SSR mode (`init(null, null, { renderer: 'svg', ssr: true })` + `renderToSVGString()`) gives
 * exactly that with a real charting library's axes and layout. Animation is off so the SVG is
 * the final picture.
 *
 * Why horizontal bars on our own log axis (issue 13 item 6): the headline counts span orders of
 * magnitude (1 shootdown against 135,757; 0 direct-map splits against 765), so a linear axis
 * hides the small ones and ECharts' own log axis cannot draw 0 and starts bars at 1 (values below
 * 1 hang downwards). Every value is placed by `logAxis` instead: position 0 is the axis base,
 * labelled "0", and each gridline after it one decade, so a 0, a 1 and a 135,757 are all visible
 * and distinct. Every bar carries its value as a label to its right, in its own lane: one bar per
 * lane means no label is ever drawn over a bar. A design with no figure of its own in a run
 * (not in the run, or shown as "= another design") gets the label "n/a" instead, never a 0.
 * Each design has one colour in every chart (ours green).
 *
 * Which charts: modelled kernel time first (who wins overall, issue 12), then the measurements
 * DESIGN.md section 7 names, each against its limit where one exists (overhead 1.0, large-page
 * share 100%, global flushes 0, direct-map growth 0, iTLB misses against the infinite-TLB lower
 * bound, in the labels), titled in the run's arch's words (vocabulary.ts). The simulator's own
 * speed is not charted: it times TypeScript, not a kernel (issue 11 item 12).
 *
 * Multi-seed spread: a series may carry a min-max range per category (`BarSeries.range`); bar
 * series are built by `barSeriesOptions` and extra series (such as whiskers) are appended to it
 * in `seriesOptions`, placed with the same `AxisTransform` as the bars.
 */
import * as echarts from 'echarts';
import { formatBytes, formatCount, formatDuration, formatPercent, formatRatio } from './format.js';
import type { PolicyMetrics, ReportData, WorkloadRun } from './types.js';
import { collapsedRows, type GlobalFlushKey, globalFlushColumns, vocabularyFor } from './vocabulary.js';

export const CHART_WIDTH_PX = 560;
/** Height of one bar's lane, and the space between categories (px). */
export const LANE_PX = 12;
const CATEGORY_GAP_PX = 10;
const TOP_PX = 58;
const BOTTOM_PX = 40;
/** Room for the category names (workloads) left of the bars. */
const GRID_LEFT_PX = 122;

/** Stable colours per policy (ours stands out in green); unknown names cycle through extras. */
export const POLICY_COLOURS: Readonly<Record<string, string>> = {
  module_alloc: '#8d8d8d',
  bpf_prog_pack: '#ef8636',
  'jit_alloc-2023': '#8e6bb8',
  'execmem-6.10': '#a0785a',
  'execmem-rox': '#3b75af',
  'execmem-rox-bpf': '#55a1b1',
  execmem: '#2e9e44',
};
const EXTRA_COLOURS = ['#c44e52', '#b5a22c', '#d377b0', '#4b5563'];

/** The colour of a design in every chart: its own, else one of the extras by its first-seen index. */
export function policyColour(name: string, index: number): string {
  return POLICY_COLOURS[name] ?? EXTRA_COLOURS[index % EXTRA_COLOURS.length];
}

/** The label of a bar whose design has no figure of its own in that category. */
export const MISSING_LABEL = 'n/a';

export interface RenderedChart {
  /** Stable id (used by the page and by tests). */
  readonly id: string;
  readonly title: string;
  /** One sentence: what is shown and which way is better. */
  readonly caption: string;
  readonly svg: string;
}

export interface BarSeries {
  readonly name: string;
  /** null: no figure (no such policy in that run, or it is shown as another design): "n/a". */
  readonly values: readonly (number | null)[];
  readonly colour: string;
  /** Min and max over seeds per category, where a run has several (drawn as whiskers). */
  readonly range?: readonly ({ readonly min: number; readonly max: number } | null)[];
}

interface BarSpec {
  readonly categories: readonly string[];
  readonly series: readonly BarSeries[];
  readonly axisName: string;
  /** 'log': decades from a base labelled 0 (see the file comment); 'percent': 0..100% linear. */
  readonly scale: 'log' | 'percent';
  /** The value label of a bar. */
  readonly label: (value: number, series: number, category: number) => string;
  /** A vertical reference line (a limit), e.g. 1.0 for overhead. */
  readonly limit?: { readonly value: number; readonly label: string };
}

/** Where a value lies on a chart's value axis, and the axis' gridlines. */
export interface AxisTransform {
  /** Axis position of a value (0 = base). */
  position(value: number): number;
  /** Axis maximum (a whole number of gridlines). */
  readonly max: number;
  /** Text of the gridline at position k. */
  tick(k: number): string;
}

/** Compact tick text for a power of ten: 0.01, 1, 10, 1k, 10k, 1M, 1G. */
function decadeText(exponent: number): string {
  if (exponent < 0) return (10 ** exponent).toFixed(-exponent);
  if (exponent >= 9) return `${10 ** (exponent - 9)}G`;
  if (exponent >= 6) return `${10 ** (exponent - 6)}M`;
  if (exponent >= 3) return `${10 ** (exponent - 3)}k`;
  return `${10 ** exponent}`;
}

/**
 * The log axis: a value v > 0 lies at 1 + log10(v) - lo, lo the decade of the smallest positive
 * value, so the smallest positive bar is at least one gridline long; 0 lies at the base (0).
 * Negative values (a shrinking figure) are drawn at the base too, and their label says the value.
 */
export function logAxis(values: readonly number[]): AxisTransform {
  const positive = values.filter((v) => v > 0);
  const lo = positive.length === 0 ? 0 : Math.floor(Math.log10(Math.min(...positive)) + 1e-9);
  const position = (v: number) => (v > 0 ? Math.max(0, 1 + Math.log10(v) - lo) : 0);
  const top = positive.length === 0 ? 1 : position(Math.max(...positive));
  return {
    position,
    max: Math.max(1, Math.ceil(top - 1e-9)),
    tick: (k) => (k === 0 ? '0' : decadeText(lo + k - 1)),
  };
}

const PERCENT_AXIS: AxisTransform = {
  position: (v) => Math.max(0, Math.min(100, v * 100)),
  max: 100,
  tick: (k) => `${k}%`,
};

/** Chart height for a number of categories and series: one lane per bar. */
export function chartHeightPx(categories: number, series: number): number {
  return TOP_PX + BOTTOM_PX + categories * (series * LANE_PX + CATEGORY_GAP_PX);
}

/** The bars: one series per design, every value labelled at its bar's end ("n/a" where missing). */
function barSeriesOptions(spec: BarSpec, axis: AxisTransform): object[] {
  return spec.series.map((s, i) => ({
    type: 'bar',
    name: s.name,
    barGap: '0%',
    barCategoryGap: `${((100 * CATEGORY_GAP_PX) / (spec.series.length * LANE_PX + CATEGORY_GAP_PX)).toFixed(1)}%`,
    itemStyle: { color: s.colour },
    data: s.values.map((v, c) =>
      v === null
        ? {
            value: 0,
            label: { formatter: MISSING_LABEL, color: '#9ca3af', fontStyle: 'italic' },
          }
        : { value: round(axis.position(v)), label: { formatter: spec.label(v, i, c) } },
    ),
    label: { show: true, position: 'right', distance: 3, fontSize: 9.5, color: '#1f2937' },
    markLine:
      i === 0 && spec.limit
        ? {
            silent: true,
            symbol: 'none',
            lineStyle: { color: '#111827', type: 'dashed', width: 1 },
            label: { formatter: spec.limit.label, position: 'start', fontSize: 10 },
            data: [{ xAxis: round(axis.position(spec.limit.value)) }],
          }
        : undefined,
  }));
}

/** Every series of a chart: the bars, then what is drawn over them (multi-seed whiskers go here). */
function seriesOptions(spec: BarSpec, axis: AxisTransform): object[] {
  return [...barSeriesOptions(spec, axis), ...whiskerSeries(spec, axis)];
}

/**
 * Min-max whiskers of a several-seed run (src/metrics/spread.ts): a horizontal line with short
 * caps across each bar whose series carries a range, in the bar's own lane. The lane repeats the
 * bars' layout (barSeriesOptions: barGap 0, the category gap of CATEGORY_GAP_PX per band).
 */
function whiskerSeries(spec: BarSpec, axis: AxisTransform): object[] {
  const count = spec.series.length;
  const gapShare = CATEGORY_GAP_PX / (count * LANE_PX + CATEGORY_GAP_PX);
  return spec.series.flatMap((s, index) => {
    const data: [number, number, number][] = [];
    (s.range ?? []).forEach((r, category) => {
      if (r === null || s.values[category] === null || r.min === r.max) return;
      data.push([round(axis.position(r.min)), round(axis.position(r.max)), category]);
    });
    if (data.length === 0) return [];
    return [
      {
        type: 'custom',
        name: s.name,
        silent: true,
        z: 10,
        data,
        renderItem(
          _params: unknown,
          api: {
            value(dim: number): number;
            coord(point: [number, number]): [number, number];
            size(value: [number, number]): [number, number];
          },
        ) {
          const band = api.size([0, 1])[1];
          const used = band * (1 - gapShare);
          const lane = used / count;
          const centre = api.coord([0, api.value(2)])[1];
          const y = centre - used / 2 + index * lane + lane / 2;
          const low = api.coord([api.value(0), api.value(2)])[0];
          const high = api.coord([api.value(1), api.value(2)])[0];
          const cap = Math.max(2, lane / 3);
          const style = { stroke: '#111827', lineWidth: 1.2 };
          return {
            type: 'group',
            children: [
              { type: 'line', shape: { x1: low, y1: y, x2: high, y2: y }, style },
              { type: 'line', shape: { x1: low, y1: y - cap, x2: low, y2: y + cap }, style },
              { type: 'line', shape: { x1: high, y1: y - cap, x2: high, y2: y + cap }, style },
            ],
          };
        },
      },
    ];
  });
}

/** A policy's min and max of a figure over the seeds of a several-seed run, or null. */
function spreadRange(
  run: WorkloadRun,
  name: string,
  pick: (m: PolicyMetrics) => number,
): { readonly min: number; readonly max: number } | null {
  const spread = run.policies.find((p) => p.name === name)?.spread;
  return spread ? { min: pick(spread.min), max: pick(spread.max) } : null;
}

/** Width to keep right of the axis for the longest value label (about 5.6 px a character at 9.5 px). */
function labelRoomPx(spec: BarSpec): number {
  let chars = MISSING_LABEL.length;
  spec.series.forEach((s, i) => {
    s.values.forEach((v, c) => {
      if (v !== null) chars = Math.max(chars, spec.label(v, i, c).length);
    });
  });
  return 12 + Math.ceil(chars * 5.6);
}

function renderBars(spec: BarSpec): string {
  const values = spec.series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const axis = spec.scale === 'percent' ? PERCENT_AXIS : logAxis(values);
  const chart = echarts.init(null, null, {
    renderer: 'svg',
    ssr: true,
    width: CHART_WIDTH_PX,
    height: chartHeightPx(spec.categories.length, spec.series.length),
  });
  try {
    chart.setOption({
      animation: false,
      textStyle: { fontFamily: 'system-ui, -apple-system, Segoe UI, Roboto, sans-serif', color: '#1f2937' },
      // Room on the right for the longest value label at the axis end.
      grid: { left: GRID_LEFT_PX, right: labelRoomPx(spec), top: TOP_PX, bottom: BOTTOM_PX },
      legend: {
        top: 4,
        left: 'center',
        itemWidth: 12,
        itemHeight: 10,
        itemGap: 14,
        textStyle: { fontSize: 10.5 },
      },
      yAxis: {
        type: 'category',
        inverse: true,
        data: [...spec.categories],
        axisLabel: { fontSize: 11, interval: 0, color: '#374151' },
        axisTick: { show: false },
      },
      xAxis: {
        type: 'value',
        min: 0,
        max: axis.max,
        interval: spec.scale === 'percent' ? 20 : 1,
        name: spec.axisName,
        nameLocation: 'middle',
        nameGap: 24,
        nameTextStyle: { fontSize: 11, color: '#4b5563' },
        axisLabel: { fontSize: 10.5, color: '#4b5563', formatter: (k: number) => axis.tick(k) },
        splitLine: { lineStyle: { color: '#e5e7eb' } },
      },
      series: seriesOptions(spec, axis),
    });
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** Policies in first-seen order across runs (every run normally has the same list). */
export function policyNames(runs: readonly WorkloadRun[]): string[] {
  const names: string[] = [];
  for (const run of runs) for (const p of run.policies) if (!names.includes(p.name)) names.push(p.name);
  return names;
}

/** Per run, the metrics of each policy that has figures of its own (not "= another design"). */
function drawnMetrics(run: WorkloadRun): Map<string, PolicyMetrics> {
  const collapsed = collapsedRows(run.arch, run.policies);
  const out = new Map<string, PolicyMetrics>();
  run.policies.forEach((p, i) => {
    if (!collapsed.has(i)) out.set(p.name, p.metrics);
  });
  return out;
}

/**
 * Categories = workloads, one series per policy with figures of its own, values picked from
 * the metrics, and each bar's label made from the same metrics (so "233.1 (≥232.9)" can say more
 * than the bar's length).
 */
function byWorkload(
  runs: readonly WorkloadRun[],
  pick: (m: PolicyMetrics) => number,
  text: (m: PolicyMetrics) => string,
): { categories: string[]; series: BarSeries[]; label: BarSpec['label'] } {
  const drawn = runs.map(drawnMetrics);
  const names = policyNames(runs).filter((name) => drawn.some((d) => d.has(name)));
  return {
    categories: runs.map((r) => r.workload),
    series: names.map((name, i) => ({
      name,
      colour: policyColour(name, i),
      values: drawn.map((d) => {
        const m = d.get(name);
        return m ? pick(m) : null;
      }),
      range: runs.map((run, r) => (drawn[r].has(name) ? spreadRange(run, name, pick) : null)),
    })),
    label: (_v, s, c) => {
      const m = drawn[c].get(names[s]);
      return m ? text(m) : MISSING_LABEL;
    },
  };
}

interface FlushChart {
  readonly id: string;
  readonly title: string;
  readonly caption: string;
  readonly axisName: string;
}

const FLUSH_CHARTS: Readonly<Record<GlobalFlushKey, FlushChart>> = {
  shootdowns: {
    id: 'shootdowns',
    title: 'Global TLB shootdowns',
    caption:
      'Flush requests sent to every other CPU by IPI (on_each_cpu), over the whole run. ' +
      'Lower is better; 0 is the limit.',
    axisName: 'shootdowns',
  },
  ipis: {
    id: 'ipis',
    title: 'Inter-processor interrupts',
    caption: 'IPIs sent for those shootdowns (CPUs - 1 each). Lower is better.',
    axisName: 'IPIs',
  },
  broadcastFlushes: {
    id: 'broadcast-tlbis',
    title: 'Broadcast TLB invalidations',
    caption:
      'Kernel TLB invalidations broadcast by hardware to every CPU without IPIs (arm64 ' +
      'flush_tlb_kernel_range: TLBI ...IS), over the whole run. Lower is better; 0 is the limit.',
    axisName: 'broadcast TLBIs',
  },
};

/** The global-flush kinds charted: those the tables show (the arch's own, and any non-zero). */
function flushKeys(data: ReportData): GlobalFlushKey[] {
  const arch = data.runs[0].arch;
  return globalFlushColumns(
    arch,
    data.runs.flatMap((r) => r.policies.map((p) => p.metrics)),
  );
}

/** What every log chart's caption ends with. */
const LOG_NOTE =
  'Log scale: each gridline after the base is ten times the last; 0 sits at the base, "n/a" marks a design without a figure of its own.';

function splitsChartId(arch: string): string {
  return vocabularyFor(arch).physMapChartId.replace(/-4k$/, '-splits');
}

/** The ids of the charts `renderCharts` produces for this data, in page order. */
export function chartIds(data: ReportData): string[] {
  const v = vocabularyFor(data.runs[0].arch);
  return [
    'kernel-time',
    'overhead',
    'large-page-share',
    ...flushKeys(data).map((k) => FLUSH_CHARTS[k].id),
    'flush-events',
    v.physMapChartId,
    splitsChartId(data.runs[0].arch),
    'itlb',
  ];
}

export function renderCharts(data: ReportData): RenderedChart[] {
  const runs = data.runs;
  const v = vocabularyFor(runs[0].arch);
  const count = (key: keyof PolicyMetrics) =>
    byWorkload(
      runs,
      (m) => m[key],
      (m) => formatCount(m[key]),
    );
  const charts: RenderedChart[] = [
    {
      id: 'kernel-time',
      title: 'Modelled kernel time',
      caption:
        'Every counted event times its published cost, over the whole run (the cost table is on this page ' +
        `and in docs/KERNEL-TIME.md). Lower is better. ${LOG_NOTE}`,
      svg: renderBars({
        ...byWorkload(
          runs,
          (m) => m.modelledKernelTimeNs / 1e6,
          (m) => formatDuration(m.modelledKernelTimeNs),
        ),
        axisName: 'ms (modelled)',
        scale: 'log',
      }),
    },
    {
      id: 'overhead',
      title: 'Memory overhead',
      caption: `Mapped bytes per live byte after the run. Lower is better; 1.0 is the limit. ${LOG_NOTE}`,
      svg: renderBars({
        ...byWorkload(
          runs,
          (m) => m.overhead,
          (m) => formatRatio(m.overhead),
        ),
        axisName: 'mapped / live',
        scale: 'log',
        limit: { value: 1, label: '1.0' },
      }),
    },
    {
      id: 'large-page-share',
      title: 'Executable bytes on 2 MiB pages',
      caption:
        'Share of mapped executable bytes covered by 2 MiB leaves (from the page tables). Higher is better; ' +
        '100% is the limit. Linear scale.',
      svg: renderBars({
        ...byWorkload(
          runs,
          (m) => m.largePageShare,
          (m) => formatPercent(m.largePageShare),
        ),
        axisName: 'share',
        scale: 'percent',
      }),
    },
    ...flushKeys(data).map((key) => {
      const c = FLUSH_CHARTS[key];
      return {
        id: c.id,
        title: c.title,
        caption: `${c.caption} ${LOG_NOTE}`,
        svg: renderBars({ ...count(key), axisName: c.axisName, scale: 'log' }),
      };
    }),
    {
      id: 'flush-events',
      title: 'All TLB flush events',
      caption:
        'Local flushes + shootdowns + broadcast invalidations, each counted once whatever its reach. ' +
        'A design that flushes globally has no local flushes, so local flushes alone mislead; ' +
        `read this next to the global-flush charts (a global flush costs more than a local one). ${LOG_NOTE}`,
      svg: renderBars({ ...count('allFlushEvents'), axisName: 'flush events', scale: 'log' }),
    },
    {
      id: v.physMapChartId,
      title: `${capitalise(v.physMap)} 4 KiB growth`,
      caption:
        `Growth of the ${v.physMap}'s 4 KiB-mapped memory over the run (${v.physMapSource}): ` +
        `${v.physMap} large pages split by permission changes. Lower is better; 0 is the limit. ${LOG_NOTE}`,
      svg: renderBars({
        ...byWorkload(
          runs,
          (m) => m.directMap4kGrowthBytes / 1024,
          (m) => formatBytes(m.directMap4kGrowthBytes),
        ),
        axisName: 'KiB',
        scale: 'log',
      }),
    },
    {
      id: splitsChartId(runs[0].arch),
      title: `${capitalise(v.physMap)} large-page splits`,
      caption: `1 GiB and 2 MiB ${v.physMap} leaves split into smaller ones. Lower is better; 0 is the limit. ${LOG_NOTE}`,
      svg: renderBars({ ...count('directMapSplits'), axisName: 'splits', scale: 'log' }),
    },
    {
      id: 'itlb',
      title: 'iTLB misses',
      caption:
        `Misses per million instruction fetches (modelled ${runs[0].tlb} TLBs); the label gives the lower bound ` +
        'in parentheses (the misses of an infinite TLB with the same flushes, per CPU). Lower is better; the ' +
        `bound is the limit. ${LOG_NOTE}`,
      svg: renderBars({
        ...byWorkload(
          runs,
          (m) => m.itlbMissesPerMillion,
          (m) => `${perMillion(m.itlbMissesPerMillion)} (≥${perMillion(m.itlbLowerBoundPerMillion)})`,
        ),
        axisName: 'per million fetches',
        scale: 'log',
      }),
    },
  ];
  return charts;
}

/** A per-million figure with one decimal and thousands separators. */
function perMillion(x: number): string {
  return x.toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
