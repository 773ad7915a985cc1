/**
 * The report's "real consumers" section: real BPF image sizes beside the published mix, and what
 * attaching ftrace to real call sites patched and cost in each design.
 *
 * Why here and not in the workload tables: the histogram and the patch counts are properties of
 * the workloads (the same for every design), while the per-design cost of the ftrace run comes
 * from the ftrace-real run's own figures; showing them together tells a reader whether the
 * synthetic mix was a fair stand-in and what a tracer costs in each design.
 */
import type { ConsumerFigures, ModuleLoads } from '../consumers.js';
import { escapeHtml, formatBytes, formatCount, formatDuration, formatPercent } from './format.js';
import type { ReportData, WorkloadRun } from './types.js';

function bucketLabel(buckets: readonly number[], i: number): string {
  const lo = i === 0 ? 0 : buckets[i - 1];
  return i === buckets.length - 1 && lo > 0 ? `${formatBytes(lo + 1)}+` : `≤ ${formatBytes(buckets[i])}`;
}

interface Row {
  readonly cells: readonly string[];
}

function histogramRows(c: ConsumerFigures): Row[] {
  const { bucketsBytes, real, published } = c.bpf;
  return bucketsBytes.map((_, i) => ({
    cells: [
      bucketLabel(bucketsBytes, i),
      formatCount(real.loads[i]),
      formatPercent(real.loads[i] / real.totalLoads),
      formatCount(published.loads[i]),
      formatPercent(published.loads[i] / published.totalLoads),
    ],
  }));
}

const HISTOGRAM_HEADER = ['JIT image', 'bpf-real loads', 'share', 'bpf-churn (published mix)', 'share'];

function ftraceLine(c: ConsumerFigures): string {
  const f = c.ftrace;
  return (
    `ftrace-real (${f.packageName}, seed ${c.seed}, scale ${c.scale}): ${formatCount(f.modulesLoaded)} modules loaded ` +
    `with ${formatCount(f.packageSites)} \`__mcount_loc\` call sites; a function_graph tracer on ${f.subsystem} ` +
    `covers ${formatCount(f.graphSites)} of them. Per run, trampolines: ${f.ftraceTrampolines} ftrace ` +
    `(${formatBytes(f.ftraceTrampolineBytes)} each) and ${f.bpfTrampolines} BPF; ` +
    `${formatCount(f.sitePatches)} site patches (${formatCount(f.pokes)} text_pokes) in ${formatCount(f.batches)} ` +
    `text_poke_bp batches (${formatCount(f.syncs)} sync_core rounds, the same in every design and not in the figures below).`
  );
}

const FTRACE_HEADER = [
  'design',
  'modelled kernel time',
  'alias writes',
  'all flush events',
  'IPI shootdowns',
  'W^X',
];

function ftraceRows(run: WorkloadRun): Row[] {
  return run.policies.map((p) => ({
    cells: [
      p.modelled ? p.name : `${p.name} (ours)`,
      formatDuration(p.metrics.modelledKernelTimeNs),
      formatCount(p.metrics.pokes),
      formatCount(p.metrics.allFlushEvents),
      formatCount(p.metrics.shootdowns),
      formatCount(p.metrics.wxViolations),
    ],
  }));
}

function mdTable(header: readonly string[], rows: readonly Row[]): string {
  const align = header.map((_, i) => (i === 0 ? '---' : '---:'));
  return [header, align, ...rows.map((r) => r.cells)].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function htmlTable(header: readonly string[], rows: readonly Row[]): string {
  const head = `<tr>${header.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`;
  const body = rows
    .map((r) => `<tr>${r.cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`)
    .join('');
  return `<div class="table-wrap"><table>${head}${body}</table></div>`;
}

function bpfIntro(c: ConsumerFigures): string {
  const { real, published } = c.bpf;
  return (
    `BPF image sizes the allocator is asked for, seed ${c.seed}, scale ${c.scale}: bpf-real's programs ` +
    `(systemd seccomp filters, tcpdump filters, libxdp programs, JIT'd by our x86 JIT of Linux 6.1) against ` +
    `bpf-churn's draw from the published mix. Median image ${formatBytes(real.medianImageBytes)} (real, ` +
    `${formatCount(real.totalLoads)} loads) against ${formatBytes(published.medianImageBytes)} (published mix, ` +
    `${formatCount(published.totalLoads)} loads).`
  );
}

function ftraceRun(data: ReportData): WorkloadRun | undefined {
  return data.runs.find((r) => r.workload === 'ftrace-real');
}

export function consumersMarkdown(data: ReportData, c: ConsumerFigures): string {
  const out = ['## Real consumers', '', bpfIntro(c), '', mdTable(HISTOGRAM_HEADER, histogramRows(c)), ''];
  out.push(ftraceLine(c), '');
  const run = ftraceRun(data);
  if (run) out.push(mdTable(FTRACE_HEADER, ftraceRows(run)), '');
  return out.join('\n');
}

export function consumersHtml(data: ReportData, c: ConsumerFigures): string {
  const parts = [
    '<h2 id="consumers">Real consumers</h2>',
    `<p>${escapeHtml(bpfIntro(c))}</p>`,
    htmlTable(HISTOGRAM_HEADER, histogramRows(c)),
    `<p>${escapeHtml(ftraceLine(c))}</p>`,
  ];
  const run = ftraceRun(data);
  if (run) parts.push(htmlTable(FTRACE_HEADER, ftraceRows(run)));
  return parts.join('\n');
}

const LOADS_HEADER = [
  'design',
  'modules loaded',
  'failed',
  'unresolved',
  'overflows',
  'relocations',
  'PLT entries',
  'W^X',
];

function loadRows(m: ModuleLoads): Row[] {
  return m.rows.map((r) => ({
    cells: [
      r.policy,
      `${formatCount(r.loaded)} / ${formatCount(r.requested)}`,
      formatCount(r.failed),
      formatCount(r.unresolvedSymbols),
      formatCount(r.relocOverflows),
      formatCount(r.relocations),
      formatCount(r.pltEntries),
      formatCount(r.wxViolations),
    ],
  }));
}

function loadsIntro(m: ModuleLoads): string {
  return (
    `Every module of ${m.packageName} (${m.arch}) loaded through each design with every relocation applied ` +
    '(execmem modules load --all): PLT entries are the arm64 module PLTs the placement forced ' +
    '(branches beyond the 128 MiB reach, arch/arm64/kernel/module-plts.c); x86-64 has none.'
  );
}

export function moduleLoadsMarkdown(m: ModuleLoads): string {
  return ['## Real module loading', '', loadsIntro(m), '', mdTable(LOADS_HEADER, loadRows(m)), ''].join('\n');
}

export function moduleLoadsHtml(m: ModuleLoads): string {
  return [
    '<h2 id="module-loading">Real module loading</h2>',
    `<p>${escapeHtml(loadsIntro(m))}</p>`,
    htmlTable(LOADS_HEADER, loadRows(m)),
  ].join('\n');
}
