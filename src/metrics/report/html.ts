/**
 * report/index.html: one self-contained page (inline CSS, inline SVG, no script, no network).
 *
 * Why self-contained: a report is an artifact to keep, mail or attach to CI; it must open from
 * disk years later exactly as it was. Layout follows what a reader wants first: who wins overall
 * (modelled kernel time, with how robust its ranking is), then every workload at a glance (ours
 * against the best other design on each figure, with the reason where ours trails), then one table
 * per workload, the charts, the module-area pictures, the cost table behind the kernel time, and
 * what is modelled and what is real.
 */
import { hexAddr } from '../../base/addr.js';
import { areaLegendHtml, renderAreaMap } from './area-map.js';
import { type RenderedChart, renderCharts } from './charts.js';
import { consumersHtml, moduleLoadsHtml } from './consumers-view.js';
import {
  bestRowsOf,
  COLUMN_GROUPS,
  escapeHtml,
  figureText,
  formatBytes,
  seedLabel,
  tableColumns,
} from './format.js';
import { OUR_POLICY } from './glance.js';
import { costTableHtml, glanceHtml, kernelTimeSectionHtml } from './kernel-time-view.js';
import { modelledVsReal } from './provenance.js';
import { summaryHtml } from './summary.js';
import type { PolicyRun, ReportData, WorkloadRun } from './types.js';
import { checkReportData } from './types.js';
import {
  collapsedRows,
  flushLegend,
  kernelLabel,
  kernelTimeLegend,
  type SameAsRow,
  sameAsRows,
  wxHoleNotes,
} from './vocabulary.js';

export { OUR_POLICY } from './glance.js';

const CSS = `
:root { --fg:#111827; --muted:#4b5563; --line:#e5e7eb; --bg:#ffffff; --panel:#f8fafc; --ours:#2e9e44; --accent:#1d4ed8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
main { max-width: 1220px; margin: 0 auto; padding: 28px 28px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 20px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
.meta { color: var(--muted); font-size: 13px; }
.meta code { font-size: 12px; }
code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; background: #f1f5f9; padding: 1px 4px; border-radius: 4px; }
.note { background: #fffbeb; border: 1px solid #fcd34d; border-radius: 8px; padding: 10px 14px; margin: 14px 0; font-size: 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; margin-top: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 650; margin-top: 2px; }
.card .v.win { color: var(--ours); }
.card .v.lose { color: #b45309; }
.card .vs { color: var(--muted); font-size: 13px; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 10px; margin: 8px 0; }
caption { caption-side: top; text-align: left; padding: 6px 8px; font-size: 12px; font-weight: 600; color: var(--muted); background: var(--panel); border-bottom: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 8px; text-align: right; white-space: nowrap; border-bottom: 1px solid var(--line); }
th { white-space: normal; vertical-align: bottom; font-size: 12px; line-height: 1.25; }
th { background: var(--panel); font-weight: 600; color: #374151; position: sticky; top: 0; }
th:first-child, td:first-child { text-align: left; }
tr:last-child td { border-bottom: none; }
tr.ours td { background: #f0fdf4; }
tr.ours td:first-child { font-weight: 650; color: var(--ours); }
td.best { font-weight: 700; color: var(--accent); }
td.bad { color: #b91c1c; font-weight: 700; }
td.same { text-align: left; color: var(--muted); font-style: italic; }
.kernel { display: block; color: var(--muted); font-size: 11px; font-weight: 400; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px 12px; }
figure h3 { margin: 2px 0 4px; font-size: 15px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
figure svg { display: block; max-width: 100%; height: auto; }
details { margin: 10px 0; border: 1px solid var(--line); border-radius: 10px; padding: 8px 14px; background: #fff; }
summary { cursor: pointer; font-weight: 600; }
.areas { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 18px; margin-top: 10px; }
.area h4 { margin: 6px 0 4px; font-size: 14px; }
.area .sub { color: var(--muted); font-size: 12px; margin-bottom: 6px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 12.5px; color: #374151; margin: 8px 0; }
.legend-item { display: inline-flex; align-items: center; gap: 6px; }
.legend-note { color: var(--muted); }
.swatch { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
.swatch-frame { border: 2px solid #111827; background: #fff; }
.swatch-mapped { background: #e5e7eb; border: 1px solid #9ca3af; }
.swatch-empty { background: #f9fafb; border: 1px solid #e5e7eb; }
ul.provenance li { margin: 4px 0; }
table.glance td.verdict { text-align: left; white-space: normal; vertical-align: top; min-width: 130px; }
table.glance .v { font-size: 15px; font-weight: 650; }
table.glance td.win .v { color: var(--ours); }
table.glance td.lose .v { color: #b45309; }
table.glance .vs, table.glance .why { color: var(--muted); font-size: 11.5px; }
table.glance .why { color: #92400e; }
table.costs td { white-space: normal; text-align: left; vertical-align: top; }
table.costs td.quote { font-style: italic; max-width: 320px; }
table.costs td.how { max-width: 360px; color: var(--muted); }
ul.robustness li { margin: 4px 0; font-size: 13.5px; }
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 4px 24px; }
.summary-run h3 { margin: 14px 0 2px; }
.summary-run .desc { color: var(--muted); font-size: 12.5px; margin: 0 0 4px; }
.summary-run ul { margin: 0; padding-left: 18px; font-size: 13px; }
.summary-run li { margin: 2px 0; }
.summary-run li.trails { color: #92400e; }
dl.descriptions { display: grid; grid-template-columns: minmax(160px, max-content) 1fr; gap: 4px 16px; font-size: 13px; }
dl.descriptions dt { font-weight: 600; }
dl.descriptions dd { margin: 0; color: #374151; }
.kernel-inline { color: var(--muted); font-weight: 400; font-size: 12px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12.5px; }
@media print { .charts, .areas { grid-template-columns: 1fr; } details { page-break-inside: avoid; } }
`;

export interface RenderedReport {
  readonly html: string;
  readonly charts: readonly RenderedChart[];
  /** Number of module-area pictures on the page. */
  readonly areaPictureCount: number;
}

export function renderHtml(data: ReportData): RenderedReport {
  checkReportData(data);
  const charts = renderCharts(data);
  const areas = areasHtml(data);
  const first = data.runs[0];
  const body = [
    '<main>',
    '<header>',
    '<h1>execmem report</h1>',
    `<div class="meta">Simulated ${escapeHtml(first.arch)} kernel machine (${escapeHtml(first.tlb)} TLB geometry) · ${seedLabel(first)} · scale ${first.scale} · ` +
      `${data.runs.length} workloads · generated ${escapeHtml(data.generatedAt)} · regenerate with <code>${escapeHtml(data.command)}</code></div>`,
    '</header>',
    summaryHtml(data),
    ...data.notes.map((n) => `<div class="note">${escapeHtml(n)}</div>`),
    kernelTimeSectionHtml(data),
    glanceHtml(data),
    '<h2>Results by workload</h2>',
    '<p class="meta">Every policy ran the workload on an identical fresh machine. Blue bold: best in column. ' +
      'iTLB misses per million fetches, lower bound in parentheses (an infinite TLB with the same flushes, per CPU). W^X must be 0 (but where a modelled kernel version leaves W+X pages itself, noted under the table). ' +
      `${escapeHtml(flushLegend(first.arch))}</p>`,
    ...data.runs.map(
      (run) =>
        tableHtml(run) +
        `<p class="meta">${escapeHtml(kernelTimeLegend(run.kernelTimeSensitivity.summary))}</p>` +
        wxHoleNotes(run.workload, run.policies)
          .map((n) => `<div class="note">${escapeHtml(n)}</div>`)
          .join(''),
    ),
    '<h2>Charts</h2>',
    `<div class="charts">${charts.map(figureHtml).join('\n')}</div>`,
    '<h2>Module area, block by block</h2>',
    '<p class="meta">Each tile is one 2 MiB block of the area after the run, in address order; each picture shows the span its design used (a block of margin each side), tiles scaled to fit. Hover a tile for its figures.</p>',
    areaLegendHtml(),
    areas.html,
    data.consumers ? consumersHtml(data, data.consumers) : '',
    data.moduleLoads ? moduleLoadsHtml(data.moduleLoads) : '',
    costTableHtml(first.arch),
    '<h2>What is modelled and what is real</h2>',
    `<ul class="provenance">${modelledVsReal(first.arch, first.tlb)
      .map((l) => `<li>${escapeHtml(l)}</li>`)
      .join('')}</ul>`,
    '<footer>execmem · this page is self-contained (no scripts, no network). Charts: Apache ECharts, rendered to SVG at generation time.</footer>',
    '</main>',
  ].join('\n');
  const html = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>execmem report</title>',
    `<style>${CSS}</style>`,
    '</head>',
    `<body>${body}</body>`,
    '</html>',
    '',
  ].join('\n');
  return { html, charts, areaPictureCount: areas.count };
}

function figureHtml(chart: RenderedChart): string {
  return (
    `<figure class="chart" data-chart="${escapeHtml(chart.id)}">` +
    `<h3>${escapeHtml(chart.title)}</h3>${chart.svg}<figcaption>${escapeHtml(chart.caption)}</figcaption></figure>`
  );
}

/** The policy cell: name, "(ours)" or the kernel version modelled, and the same-as note when figures are kept. */
function policyCellHtml(p: PolicyRun, same: SameAsRow | null): string {
  const name = p.name === OUR_POLICY ? `${p.name} (ours)` : p.name;
  const kernel = kernelLabel(p);
  const note = same && !same.collapsed ? ` [${same.label}]` : '';
  const sub = kernel === null ? '' : `<span class="kernel">${escapeHtml(kernel)}</span>`;
  return `<td>${escapeHtml(name + note)}${sub}</td>`;
}

/**
 * A workload's results: one table per column group (format.ts COLUMN_GROUPS), each with the
 * policy column, so every column is visible in a 1280 px window without scrolling.
 */
function tableHtml(run: WorkloadRun): string {
  const all = tableColumns(run);
  const same = sameAsRows(run.arch, run.policies);
  const collapsed = collapsedRows(run.arch, run.policies);
  const tables = COLUMN_GROUPS.map((group) => {
    const columns = all.filter((c) => c.group === group.id);
    const best = columns.map((c) => bestRowsOf(c, run.policies, collapsed));
    const head = `<tr><th>policy</th>${columns.map((c) => `<th>${escapeHtml(c.heading)}</th>`).join('')}</tr>`;
    const rows = run.policies.map((p, row) => {
      const tr = `<tr${p.name === OUR_POLICY ? ' class="ours"' : ''}>`;
      const s = same[row];
      const first = policyCellHtml(p, s);
      if (s?.collapsed) {
        return `${tr}${first}<td class="same" colspan="${columns.length}">${escapeHtml(s.label)}</td></tr>`;
      }
      const cells = columns.map((c, col) => {
        const bad = (c.key === 'wxViolations' || c.key === 'failures') && p.metrics[c.key] > 0;
        const cls = bad ? 'bad' : best[col].has(row) ? 'best' : '';
        return `<td${cls ? ` class="${cls}"` : ''}>${escapeHtml(figureText(c, p))}</td>`;
      });
      return `${tr}${first}${cells.join('')}</tr>`;
    });
    return (
      `<div class="table-wrap"><table class="results" data-workload="${escapeHtml(run.workload)}" data-group="${group.id}">` +
      `<caption>${escapeHtml(group.title)}</caption><thead>${head}</thead>` +
      `<tbody>${rows.join('')}</tbody></table></div>`
    );
  });
  return (
    `<h3 id="w-${escapeHtml(run.workload)}">${escapeHtml(run.workload)} <span class="meta">(${escapeHtml(run.arch)}, seed ${run.seed}, ${escapeHtml(run.tlb)} TLBs)</span></h3>` +
    `<p class="meta">${escapeHtml(run.description)}</p>` +
    tables.join('')
  );
}

function areasHtml(data: ReportData): { html: string; count: number } {
  let count = 0;
  const blocks = data.runs.map((run, i) => {
    const same = sameAsRows(run.arch, run.policies);
    const pictures = run.policies.map((p, row) => {
      const note = same[row];
      if (!p.area) {
        return `<div class="area"><h4>${escapeHtml(p.name)}</h4><div class="sub">no area map from this run</div></div>`;
      }
      const pic = renderAreaMap(p.area, `${run.workload}-${p.name}`);
      count++;
      const sub =
        (note ? `${note.label} · ` : '') +
        `${pic.mappedTiles} of ${pic.tileCount} blocks mapped · ${formatBytes(p.metrics.liveBytes)} live · ` +
        `from ${hexAddr(pic.firstVa)}` +
        (pic.note ? ` · ${pic.note}` : '');
      return `<div class="area" data-policy="${escapeHtml(p.name)}"><h4>${escapeHtml(p.name)}</h4><div class="sub">${escapeHtml(sub)}</div>${pic.svg}</div>`;
    });
    return (
      `<details${i === 0 ? ' open' : ''} data-workload="${escapeHtml(run.workload)}"><summary>${escapeHtml(run.workload)}</summary>` +
      `<div class="areas">${pictures.join('')}</div></details>`
    );
  });
  return { html: blocks.join('\n'), count };
}
