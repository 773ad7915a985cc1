/**
 * Charts of the report, rendered server-side to SVG strings with Apache ECharts.
 *
 * Why server-side SVG: the page must open from disk with no script and no network (a report is
 * an artifact kept next to a run), print cleanly, and be testable by parsing the file: ECharts'
 * SSR mode (`init(null, null, { renderer: 'svg', ssr: true })` + `renderToSVGString()`) gives
 * exactly that with a real charting library's axes and layout. Animation is off so the SVG is
 * the final picture, and every chart gets a fixed size so pages are stable between runs.
 *
 * Which charts: the measurements DESIGN.md section 7 names, each against its limit where one
 * exists (overhead 1.0, large-page share 100%, shootdowns 0, direct-map growth 0, iTLB misses
 * against the compulsory lower bound).
 */
import * as echarts from 'echarts';
import type { ReportData, WorkloadRun } from './types.js';

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
  readonly values: readonly number[];
  readonly colour: string;
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
      series: spec.series.map((s, i) => ({
        type: 'bar',
        name: s.name,
        data: s.values.map((v) => (spec.log && v <= 0 ? null : spec.percent ? round(v * 100) : round(v))),
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

/** Bars: x = workloads, one series per policy, value picked from the metrics. */
function byWorkload(
  runs: readonly WorkloadRun[],
  pick: (m: WorkloadRun['policies'][number]['metrics']) => number,
): { categories: string[]; series: BarSeries[] } {
  const names = policyNames(runs);
  return {
    categories: runs.map((r) => r.workload),
    series: names.map((name, i) => ({
      name,
      colour: policyColour(name, i),
      values: runs.map((r) => {
        const p = r.policies.find((q) => q.name === name);
        return p ? pick(p.metrics) : 0;
      }),
    })),
  };
}

/** The ids of the charts `renderCharts` produces for this data, in page order. */
export function chartIds(data: ReportData): string[] {
  return [
    'overhead',
    'large-page-share',
    'shootdowns',
    'ipis',
    'direct-map-4k',
    'speed',
    ...data.runs.map((r) => `itlb-${r.workload}`),
  ];
}

export function renderCharts(data: ReportData): RenderedChart[] {
  const runs = data.runs;
  const charts: RenderedChart[] = [
    {
      id: 'overhead',
      title: 'Memory overhead',
      caption:
        'Mapped bytes per live byte after the run (log scale; no bar where nothing is live). ' +
        'Lower is better; 1.0 is the limit.',
      svg: renderBars({
        ...byWorkload(runs, (m) => m.overhead),
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
      svg: renderBars({ ...byWorkload(runs, (m) => m.largePageShare), yName: 'share', percent: true }),
    },
    {
      id: 'shootdowns',
      title: 'Global TLB shootdowns',
      caption: 'Flush requests that reach every CPU, over the whole run. Lower is better; 0 is the limit.',
      svg: renderBars({ ...byWorkload(runs, (m) => m.shootdowns), yName: 'shootdowns' }),
    },
    {
      id: 'ipis',
      title: 'Inter-processor interrupts',
      caption: 'IPIs sent for those shootdowns (CPUs - 1 each). Lower is better.',
      svg: renderBars({ ...byWorkload(runs, (m) => m.ipis), yName: 'IPIs' }),
    },
    {
      id: 'direct-map-4k',
      title: 'Direct-map 4 KiB growth',
      caption:
        'Growth of DirectMap4k (as /proc/meminfo reports it) over the run, in MiB: direct-map large pages ' +
        'split by permission changes. Lower is better; 0 is the limit.',
      svg: renderBars({ ...byWorkload(runs, (m) => m.directMap4kGrowthBytes / 2 ** 20), yName: 'MiB' }),
    },
    {
      id: 'speed',
      title: 'Allocator speed',
      caption: 'Operations per second relative to the slowest policy in the same run. Higher is better.',
      svg: renderBars({ ...byWorkload(runs, (m) => m.opsPerSecondRatio), yName: 'x slowest' }),
    },
  ];
  for (const run of runs) charts.push(itlbChart(run));
  return charts;
}

function itlbChart(run: WorkloadRun): RenderedChart {
  const names = run.policies.map((p) => p.name);
  return {
    id: `itlb-${run.workload}`,
    title: `iTLB misses: ${run.workload}`,
    caption:
      'Misses per million instruction fetches (modelled TLBs) next to the compulsory lower bound ' +
      '(distinct pages touched). Lower is better; the bound is the limit.',
    svg: renderBars({
      categories: names,
      yName: 'per million fetches',
      series: [
        {
          name: 'iTLB misses',
          colour: '#3b75af',
          values: run.policies.map((p) => p.metrics.itlbMissesPerMillion),
        },
        {
          name: 'lower bound',
          colour: '#b9c7d8',
          values: run.policies.map((p) => p.metrics.itlbLowerBoundPerMillion),
        },
      ],
    }),
  };
}
