/**
 * Charts of the report, rendered server-side to SVG strings with Apache ECharts.
 *
 * Why server-side SVG: the page must open from disk with no script and no network (a report is
 * an artifact kept next to a run), print cleanly, and be testable by parsing the file: ECharts'
 * SSR mode (`init(null, null, { renderer: 'svg', ssr: true })` + `renderToSVGString()`) gives
 * exactly that with a real charting library's axes and layout. Animation is off so the SVG is
 * the final picture, and every chart gets a fixed size so pages are stable between runs.
 *
 * Which charts: modelled kernel time first (who wins overall, issue 12), then the measurements
 * DESIGN.md section 7 names, each against its limit where one
 * exists (overhead 1.0, large-page share 100%, global flushes 0, direct-map growth 0, iTLB misses
 * against the infinite-TLB lower bound), titled in the run's arch's words (vocabulary.ts): the
 * global-flush charts are the kinds the table shows (x86 shootdowns and IPIs, arm64 broadcast
 * TLBIs), and "linear map" replaces "direct map" on arm64. A design that is another on this arch
 * (PolicySpec.sameAs) draws no bars of its own. The simulator's own speed is not charted: it
 * times TypeScript, not a kernel (issue 11 item 12).
 */
import * as echarts from 'echarts';
import type { MetricKey, PolicyMetrics, ReportData, WorkloadRun } from './types.js';
import { collapsedRows, type GlobalFlushKey, globalFlushColumns, vocabularyFor } from './vocabulary.js';

export const CHART_WIDTH_PX = 560;
export const CHART_HEIGHT_PX = 320;

/** Stable colours per policy (ours stands out in green); unknown names cycle through extras. */
const POLICY_COLOURS: Readonly<Record<string, string>> = {
  module_alloc: '#8d8d8d',
  'execmem-6.10': '#a0785a',
  'execmem-rox': '#3b75af',
  bpf_prog_pack: '#ef8636',
  'jit_alloc-2023': '#8e6bb8',
  execmem: '#2e9e44',
};
const EXTRA_COLOURS = ['#c44e52', '#55a1b1', '#b5a22c', '#d377b0'];

export function policyColour(name: string, index: number): string {
  return POLICY_COLOURS[name] ?? EXTRA_COLOURS[index % EXTRA_COLOURS.length];
}

export interface RenderedChart {
  /** Stable id (used by the page and by tests). */
  readonly id: string;
  readonly title: string;
  /** One sentence: what is shown and which way is better. */
  readonly caption: string;
  readonly svg: string;
}

interface BarSeries {
  readonly name: string;
  /** null: no bar (no such policy in that run, or it is shown as another design). */
  readonly values: readonly (number | null)[];
  readonly colour: string;
  /** Per category, the min and max over seeds (several-seed runs) drawn as a whisker, or null. */
  readonly ranges?: readonly (readonly [number, number] | null)[];
}

interface BarSpec {
  readonly categories: readonly string[];
  readonly series: readonly BarSeries[];
  readonly yName: string;
  readonly percent?: boolean;
  /** Logarithmic value axis (for ratios spanning 1x..1000x); values <= 0 are not drawn. */
  readonly log?: boolean;
  /** Horizontal reference line (a limit), e.g. 1.0 for overhead. */
  readonly limitY?: { value: number; label: string };
}

function renderBars(spec: BarSpec): string {
  const chart = echarts.init(null, null, {
    renderer: 'svg',
    ssr: true,
    width: CHART_WIDTH_PX,
    height: CHART_HEIGHT_PX,
  });
  try {
    chart.setOption({
      animation: false,
      textStyle: { fontFamily: 'system-ui, -apple-system, Segoe UI, Roboto, sans-serif', color: '#1f2937' },
      grid: { left: 72, right: 16, top: 56, bottom: spec.categories.length > 4 ? 56 : 40 },
      legend: {
        top: 4,
        left: 'center',
        itemWidth: 12,
        itemHeight: 10,
        itemGap: 14,
        textStyle: { fontSize: 10.5 },
      },
      xAxis: {
        type: 'category',
        data: [...spec.categories],
        // Many or long category names (policies) are turned so they never overlap.
        axisLabel: {
          fontSize: 11,
          interval: 0,
          color: '#374151',
          rotate: spec.categories.length > 4 ? 20 : 0,
        },
        axisTick: { alignWithLabel: true },
      },
      yAxis: {
        type: spec.log ? 'log' : 'value',
        logBase: 10,
        name: spec.yName,
        nameLocation: 'middle',
        nameGap: 52,
        nameTextStyle: { fontSize: 11, color: '#4b5563' },
        max: spec.percent ? 100 : undefined,
        axisLabel: { fontSize: 11, color: '#4b5563', formatter: spec.percent ? '{value}%' : undefined },
        splitLine: { lineStyle: { color: '#e5e7eb' } },
      },
      series: [
        ...spec.series.map((s, i) => ({
          type: 'bar',
          name: s.name,
          data: s.values.map((v) =>
            v === null || (spec.log && v <= 0) ? null : spec.percent ? round(v * 100) : round(v),
          ),
          itemStyle: { color: s.colour },
          barMaxWidth: 28,
          markLine:
            i === 0 && spec.limitY
              ? {
                  silent: true,
                  symbol: 'none',
                  lineStyle: { color: '#111827', type: 'dashed', width: 1 },
                  label: { formatter: spec.limitY.label, position: 'insideEndTop', fontSize: 10 },
                  data: [{ yAxis: spec.limitY.value }],
                }
              : undefined,
        })),
        ...whiskerSeries(spec),
      ],
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

/** Bars: x = workloads, one series per policy with figures of its own, value picked from the metrics. */
function byWorkload(
  runs: readonly WorkloadRun[],
  pick: (m: PolicyMetrics) => number,
): { categories: string[]; series: BarSeries[] } {
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
      ranges: runs.map((run, r) => spreadRange(run, name, drawn[r].has(name), pick)),
    })),
  };
}

interface FlushChart {
  readonly id: string;
  readonly title: string;
  readonly caption: string;
  readonly yName: string;
}

const FLUSH_CHARTS: Readonly<Record<GlobalFlushKey, FlushChart>> = {
  shootdowns: {
    id: 'shootdowns',
    title: 'Global TLB shootdowns',
    caption:
      'Flush requests sent to every other CPU by IPI (on_each_cpu), over the whole run. ' +
      'Lower is better; 0 is the limit.',
    yName: 'shootdowns',
  },
  ipis: {
    id: 'ipis',
    title: 'Inter-processor interrupts',
    caption: 'IPIs sent for those shootdowns (CPUs - 1 each). Lower is better.',
    yName: 'IPIs',
  },
  broadcastFlushes: {
    id: 'broadcast-tlbis',
    title: 'Broadcast TLB invalidations',
    caption:
      'Kernel TLB invalidations broadcast by hardware to every CPU without IPIs (arm64 ' +
      'flush_tlb_kernel_range: TLBI ...IS), over the whole run. Lower is better; 0 is the limit.',
    yName: 'broadcast TLBIs',
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

/** The ids of the charts `renderCharts` produces for this data, in page order. */
export function chartIds(data: ReportData): string[] {
  return [
    'kernel-time',
    'overhead',
    'large-page-share',
    ...flushKeys(data).map((k) => FLUSH_CHARTS[k].id),
    'flush-events',
    vocabularyFor(data.runs[0].arch).physMapChartId,
    ...data.runs.map((r) => `itlb-${r.workload}`),
  ];
}

export function renderCharts(data: ReportData): RenderedChart[] {
  const runs = data.runs;
  const v = vocabularyFor(runs[0].arch);
  const bars = (key: MetricKey, scale = 1) => byWorkload(runs, (m) => m[key] / scale);
  const charts: RenderedChart[] = [
    {
      id: 'kernel-time',
      title: 'Modelled kernel time',
      caption:
        'Every counted event times its published cost, in ms, over the whole run (log scale; the cost table ' +
        'is on this page and in docs/KERNEL-TIME.md). Lower is better.',
      svg: renderBars({ ...bars('modelledKernelTimeNs', 1e6), yName: 'ms (modelled)', log: true }),
    },
    {
      id: 'overhead',
      title: 'Memory overhead',
      caption:
        'Mapped bytes per live byte after the run (log scale; no bar where nothing is live). ' +
        'Lower is better; 1.0 is the limit.',
      svg: renderBars({
        ...bars('overhead'),
        yName: 'mapped / live',
        log: true,
        limitY: { value: 1, label: 'limit 1.0' },
      }),
    },
    {
      id: 'large-page-share',
      title: 'Executable bytes on 2 MiB pages',
      caption:
        'Share of mapped executable bytes covered by 2 MiB leaves (from the page tables). Higher is better.',
      svg: renderBars({ ...bars('largePageShare'), yName: 'share', percent: true }),
    },
    ...flushKeys(data).map((key) => {
      const c = FLUSH_CHARTS[key];
      return {
        id: c.id,
        title: c.title,
        caption: c.caption,
        svg: renderBars({ ...bars(key), yName: c.yName }),
      };
    }),
    {
      id: 'flush-events',
      title: 'All TLB flush events',
      caption:
        'Local flushes + shootdowns + broadcast invalidations, each counted once whatever its reach. ' +
        'A design that flushes globally has no local flushes, so local flushes alone mislead; ' +
        'read this next to the global-flush charts (a global flush costs more than a local one).',
      svg: renderBars({ ...bars('allFlushEvents'), yName: 'flush events' }),
    },
    {
      id: v.physMapChartId,
      title: `${capitalise(v.physMap)} 4 KiB growth`,
      caption:
        `Growth of the ${v.physMap}'s 4 KiB-mapped memory over the run, in MiB (${v.physMapSource}): ` +
        `${v.physMap} large pages split by permission changes. Lower is better; 0 is the limit.`,
      svg: renderBars({ ...bars('directMap4kGrowthBytes', 2 ** 20), yName: 'MiB' }),
    },
  ];
  for (const run of runs) charts.push(itlbChart(run));
  return charts;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function itlbChart(run: WorkloadRun): RenderedChart {
  const drawn = [...drawnMetrics(run)];
  return {
    id: `itlb-${run.workload}`,
    title: `iTLB misses: ${run.workload}`,
    caption:
      `Misses per million instruction fetches (modelled ${run.tlb} TLBs) next to the lower bound ` +
      '(the misses of an infinite TLB with the same flushes, per CPU). Lower is better; the bound is the limit.',
    svg: renderBars({
      categories: drawn.map(([name]) => name),
      yName: 'per million fetches',
      series: [
        {
          name: 'iTLB misses',
          colour: '#3b75af',
          values: drawn.map(([, m]) => m.itlbMissesPerMillion),
          ranges: drawn.map(([name]) => spreadRange(run, name, true, (m) => m.itlbMissesPerMillion)),
        },
        {
          name: 'lower bound',
          colour: '#b9c7d8',
          values: drawn.map(([, m]) => m.itlbLowerBoundPerMillion),
        },
      ],
    }),
  };
}

/** A policy's min and max of a figure over the seeds of a several-seed run, or null. */
function spreadRange(
  run: WorkloadRun,
  name: string,
  drawn: boolean,
  pick: (m: PolicyMetrics) => number,
): readonly [number, number] | null {
  const spread = run.policies.find((p) => p.name === name)?.spread;
  return drawn && spread ? [pick(spread.min), pick(spread.max)] : null;
}

/**
 * Error bars: for every bar series that carries ranges (a several-seed run, src/metrics/spread.ts),
 * a custom series drawing a min-max whisker (a vertical line with short caps) over each bar. The
 * x position repeats ECharts' bar layout (barGrid): bars share 80% of the category band
 * (barCategoryGap 20%), 30% of a bar's width apart (barGap), each at most barMaxWidth (28 px).
 * On a log axis a whisker that reaches 0 or below is not drawn (no place for it on the axis).
 */
function whiskerSeries(spec: BarSpec): object[] {
  const count = spec.series.length;
  const scale = (v: number) => (spec.percent ? round(v * 100) : round(v));
  return spec.series.flatMap((s, index) => {
    const data: [number, number, number][] = [];
    (s.ranges ?? []).forEach((r, category) => {
      if (r === null || s.values[category] === null || r[0] === r[1]) return;
      if (spec.log && r[0] <= 0) return;
      data.push([category, scale(r[0]), scale(r[1])]);
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
          const band = api.size([1, 0])[0];
          const width = Math.min(28, (band * 0.8) / (count + (count - 1) * 0.3));
          const x =
            api.coord([api.value(0), 0])[0] -
            (count * width + (count - 1) * 0.3 * width) / 2 +
            index * width * 1.3 +
            width / 2;
          const low = api.coord([api.value(0), api.value(1)])[1];
          const high = api.coord([api.value(0), api.value(2)])[1];
          const cap = Math.max(3, width / 4);
          const style = { stroke: '#111827', lineWidth: 1.2 };
          return {
            type: 'group',
            children: [
              { type: 'line', shape: { x1: x, y1: low, x2: x, y2: high }, style },
              { type: 'line', shape: { x1: x - cap, y1: low, x2: x + cap, y2: low }, style },
              { type: 'line', shape: { x1: x - cap, y1: high, x2: x + cap, y2: high }, style },
            ],
          };
        },
      },
    ];
  });
}
