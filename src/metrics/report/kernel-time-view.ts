/**
 * The report's kernel-time parts: the "who wins overall" table with the ranking's sensitivity,
 * the breakdown per event class, the cost table with its sources, and the "at a glance" verdicts,
 * each as HTML (index.html) and markdown (summary.md, docs/KERNEL-TIME.md).
 *
 * Why a module of its own: these parts come first on the page and are read on their own (a
 * summary pasted into a mail), and the cost table must read the same on the page, in the summary
 * and in docs/KERNEL-TIME.md, so all three render it from the one table in
 * src/metrics/kernel-time-costs.ts.
 */
import { COST_TABLE, type CostEntry, CYCLE_CLOCK_GHZ, costLabel, costOn } from '../kernel-time-costs.js';
import { bestRows, escapeHtml, formatCount, formatDuration } from './format.js';
import { OUR_POLICY, type Verdict, verdicts, verdictText } from './glance.js';
import type { ReportData, WorkloadRun } from './types.js';
import { collapsedRows, sameAsRows, vocabularyFor } from './vocabulary.js';

/** Design names in first-seen order across runs. */
function designNames(data: ReportData): string[] {
  const names: string[] = [];
  for (const r of data.runs) for (const p of r.policies) if (!names.includes(p.name)) names.push(p.name);
  return names;
}

function designLabel(name: string): string {
  return name === OUR_POLICY ? `${name} (ours)` : name;
}

/** Per run: the kernel time of each design, its cell text, and whether it is the run's best. */
function kernelTimeCells(run: WorkloadRun): Map<string, { text: string; best: boolean }> {
  const collapsed = collapsedRows(run.arch, run.policies);
  const same = sameAsRows(run.arch, run.policies);
  // Ties as printed: every design showing the best figure's text is marked (format.ts bestRows).
  const best = bestRows(
    run.policies.map((p) => p.metrics.modelledKernelTimeNs),
    'low',
    collapsed,
    run.policies.map((p) => formatDuration(p.metrics.modelledKernelTimeNs)),
  );
  const out = new Map<string, { text: string; best: boolean }>();
  run.policies.forEach((p, i) => {
    const s = same[i];
    const text = s?.collapsed ? s.label : formatDuration(p.metrics.modelledKernelTimeNs);
    out.set(p.name, { text, best: best.has(i) });
  });
  return out;
}

/** What the figure is, in the arch's words. */
export function kernelTimeIntro(arch: string): string {
  return (
    'Modelled kernel time = every event the simulated machine counted over the whole run (flushes, ' +
    `IPIs, iTLB misses, ${vocabularyFor(arch).patching} steps, ...) times its published cost, added up. It is ` +
    'the one figure that says who wins overall; the costs, their sources and the events left out are in the ' +
    'cost table below and in docs/KERNEL-TIME.md. Lower is better.'
  );
}

export function kernelTimeSectionHtml(data: ReportData): string {
  const names = designNames(data);
  const head =
    '<tr><th>workload</th>' +
    names
      .map((n) => `<th${n === OUR_POLICY ? ' class="ours"' : ''}>${escapeHtml(designLabel(n))}</th>`)
      .join('') +
    '</tr>';
  const rows = data.runs.map((run) => {
    const cells = kernelTimeCells(run);
    const tds = names.map((name) => {
      const cell = cells.get(name);
      if (cell === undefined) return '<td>-</td>';
      return `<td${cell.best ? ' class="best"' : ''}>${escapeHtml(cell.text)}</td>`;
    });
    return `<tr data-workload="${escapeHtml(run.workload)}"><td>${escapeHtml(run.workload)}</td>${tds.join('')}</tr>`;
  });
  const robustness = data.runs
    .map((r) => `<li><b>${escapeHtml(r.workload)}</b>: ${escapeHtml(r.kernelTimeSensitivity.summary)}</li>`)
    .join('');
  return [
    '<h2 id="kernel-time">Who wins overall: modelled kernel time</h2>',
    `<p class="meta">${escapeHtml(kernelTimeIntro(data.runs[0].arch))}</p>`,
    '<div class="table-wrap"><table class="kernel-time">',
    `<thead>${head}</thead><tbody>${rows.join('')}</tbody></table></div>`,
    '<h3>How robust the ranking is</h3>',
    '<p class="meta">Each weight of the sum halved and doubled, one at a time, and the designs ranked again.</p>',
    `<ul class="robustness">${robustness}</ul>`,
    ...data.runs.map(breakdownHtml),
  ].join('\n');
}

/** The event classes of a run that any design has, with the time each design spends on them. */
function breakdownHtml(run: WorkloadRun, i: number): string {
  const collapsed = collapsedRows(run.arch, run.policies);
  const shown = run.policies.filter((_, j) => !collapsed.has(j));
  const entries = COST_TABLE.filter((e) => shown.some((p) => p.kernelTime.byEvent[e.key].count > 0));
  const head = `<tr><th>event</th><th>ns each</th>${shown.map((p) => `<th>${escapeHtml(p.name)}</th>`).join('')}</tr>`;
  const rows = entries.map((e) => {
    const cost = costOn(e, run.arch);
    const tds = shown.map((p) => {
      const c = p.kernelTime.byEvent[e.key];
      const time = cost === null ? 'not in sum' : formatDuration(c.ns);
      return `<td>${escapeHtml(formatCount(c.count))}<span class="kernel">${escapeHtml(time)}</span></td>`;
    });
    const label = escapeHtml(costLabel(e, run.arch));
    return `<tr><td>${label}</td><td>${cost === null ? '-' : escapeHtml(cost.toFixed(1))}</td>${tds.join('')}</tr>`;
  });
  const total = shown
    .map((p) => `<td><b>${escapeHtml(formatDuration(p.kernelTime.totalNs))}</b></td>`)
    .join('');
  return (
    `<details${i === 0 ? ' open' : ''} class="breakdown" data-workload="${escapeHtml(run.workload)}">` +
    `<summary>${escapeHtml(run.workload)}: events and what they cost (count, then time)</summary>` +
    `<div class="table-wrap"><table class="breakdown"><thead>${head}</thead><tbody>${rows.join('')}` +
    `<tr><td><b>modelled kernel time</b></td><td></td>${total}</tr></tbody></table></div></details>`
  );
}

function sourceCellHtml(e: CostEntry): string {
  if (e.source === null) return `<td colspan="3">${escapeHtml(e.note ?? 'no published figure')}</td>`;
  const s = e.source;
  return (
    `<td><a href="${escapeHtml(s.url)}">${escapeHtml(s.title)}</a><span class="kernel">${escapeHtml(s.date)}</span></td>` +
    `<td>${escapeHtml(s.cpu)}</td><td class="quote">"${escapeHtml(s.quote)}"</td>`
  );
}

/** The cost table as the page shows it, with the costs on `arch`. */
export function costTableHtml(arch: string): string {
  const rows = COST_TABLE.map((e) => {
    const cost = costOn(e, arch);
    const ns = cost === null ? 'not in sum' : `${cost.toFixed(1)} ns`;
    const how = [e.derivation, e.source === null ? '' : (e.note ?? '')].filter((t) => t !== '');
    return (
      `<tr data-event="${escapeHtml(e.key)}"><td>${escapeHtml(costLabel(e, arch))}<span class="kernel">${escapeHtml(e.counter)}</span></td>` +
      `<td>${escapeHtml(ns)}</td>${sourceCellHtml(e)}<td class="how">${escapeHtml(how.join(' '))}</td></tr>`
    );
  });
  return [
    '<section class="cost-table">',
    '<h2 id="cost-table">The cost table</h2>',
    `<p class="meta">Each counted event, its cost on ${escapeHtml(arch)} and the published figure it comes from. ` +
      `Figures in cycles are converted at ${CYCLE_CLOCK_GHZ} GHz, an assumed clock. Events without a published ` +
      'figure are counted and left out of the sum. Source: src/metrics/kernel-time-costs.ts, docs/KERNEL-TIME.md.</p>',
    '<div class="table-wrap"><table class="costs"><thead><tr><th>event</th><th>cost</th><th>source</th>' +
      '<th>CPU</th><th>quote</th><th>how it maps</th></tr></thead>',
    `<tbody>${rows.join('')}</tbody></table></div>`,
    '</section>',
  ].join('\n');
}

function verdictCellHtml(v: Verdict): string {
  const cls = v.standing === 'trails' ? 'lose' : 'win';
  const vs =
    v.bestOther === null
      ? ''
      : `<div class="vs">best other: ${escapeHtml(v.bestOther.name)} ${escapeHtml(v.bestOther.value)}` +
        `${v.standing === 'ties' ? ' (tie)' : ` · ours ${escapeHtml(v.margin)}`}</div>`;
  const why = v.reason ? `<div class="why">why: ${escapeHtml(v.reason)}</div>` : '';
  return `<td class="verdict ${cls}"><div class="v">${escapeHtml(v.ours)}</div>${vs}${why}</td>`;
}

/** Every workload x every headline figure: ours against the best other design. */
export function glanceHtml(data: ReportData): string {
  const judged = data.runs.map((r) => ({ run: r, verdicts: verdicts(r) }));
  const figures = judged[0].verdicts.map((v) => v.figure);
  const head = `<tr><th>workload</th>${figures.map((f) => `<th>${escapeHtml(f.label)}</th>`).join('')}</tr>`;
  const rows = judged.map(
    ({ run, verdicts: vs }) =>
      `<tr><td>${escapeHtml(run.workload)}</td>${vs.map(verdictCellHtml).join('')}</tr>`,
  );
  return [
    '<h2 id="glance">At a glance: every workload</h2>',
    '<p class="meta">execmem (ours) against the best other design on each figure and workload; green where ours ' +
      'leads or ties, amber where it trails, with the reason. Computed from the tables below.</p>',
    `<div class="table-wrap"><table class="glance"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table></div>`,
  ].join('\n');
}

/** summary.md: the kernel time of every design on every workload, and the ranking's robustness. */
export function kernelTimeMarkdown(data: ReportData): string {
  const names = designNames(data);
  const lines = [
    '## Who wins overall: modelled kernel time',
    '',
    kernelTimeIntro(data.runs[0].arch),
    '',
    `| workload | ${names.map((n) => (n === OUR_POLICY ? `**${n}** (ours)` : n)).join(' | ')} |`,
    `| --- | ${names.map(() => '---:').join(' | ')} |`,
    ...data.runs.map((run) => {
      const cells = kernelTimeCells(run);
      const tds = names.map((name) => {
        const cell = cells.get(name);
        if (cell === undefined) return '-';
        return cell.best ? `**${cell.text}**` : cell.text;
      });
      return `| ${run.workload} | ${tds.join(' | ')} |`;
    }),
    '',
    'How robust the ranking is (each weight x0.5 and x2, one at a time):',
    '',
    ...data.runs.map((r) => `- ${r.workload}: ${r.kernelTimeSensitivity.summary}`),
    '',
  ];
  return lines.join('\n');
}

/** summary.md: the verdicts, one list per workload. */
export function glanceMarkdown(data: ReportData): string {
  const lines = ['## At a glance: every workload', ''];
  for (const run of data.runs) {
    lines.push(`- **${run.workload}**`);
    for (const v of verdicts(run)) lines.push(`  - ${v.figure.label}: ${verdictText(v)}`);
  }
  lines.push('');
  return lines.join('\n');
}

/** The cost table in markdown (summary.md and docs/KERNEL-TIME.md render exactly this). */
export function costTableMarkdown(arch: string): string {
  const cell = (t: string) => t.replaceAll('|', '\\|');
  const linkText = (t: string) => cell(t).replaceAll('[', '\\[').replaceAll(']', '\\]');
  const rows = COST_TABLE.map((e) => {
    const cost = costOn(e, arch);
    const ns = cost === null ? 'not in sum' : `${cost.toFixed(1)} ns`;
    const src =
      e.source === null
        ? cell(e.note ?? '')
        : `[${linkText(e.source.title)}](${e.source.url}), ${cell(e.source.date)}`;
    const cpu = e.source === null ? '' : cell(e.source.cpu);
    const quote = e.source === null ? '' : `"${cell(e.source.quote)}"`;
    const how = e.source === null || e.note === undefined ? e.derivation : `${e.derivation} ${e.note}`;
    return `| ${cell(costLabel(e, arch))} | ${ns} | ${src} | ${cpu} | ${quote} | ${cell(how)} |`;
  });
  return [
    `| event | cost on ${arch} | source | CPU | quote | how it maps |`,
    '| --- | ---: | --- | --- | --- | --- |',
    ...rows,
  ].join('\n');
}
