/**
 * The summary the report opens with (issue 13 item 5): for each workload and headline figure,
 * who leads and by how much over the next design, and where ours does not lead, why; then one
 * paragraph on every design (with the kernel version it models) and every workload.
 *
 * Why generated: a summary written by hand goes stale with the next change to a policy. Every
 * sentence here is made from the run's figures by glance.ts (leaders are every design printing
 * the best value, the same rule the tables bold by) and reasons.ts (rules over measured figures),
 * and the descriptions are the very text `execmem compare --json` carries (PolicySpec.describe,
 * WorkloadSpec.describe), so the page, summary.md and the JSON never disagree.
 */
import { escapeHtml } from './format.js';
import { OUR_POLICY, type Verdict, verdicts } from './glance.js';
import type { PolicyRun, ReportData, WorkloadRun } from './types.js';
import { kernelLabel } from './vocabulary.js';

function names(list: readonly string[]): string {
  if (list.length <= 1) return list.join('');
  return `${list.slice(0, -1).join(', ')} and ${list[list.length - 1]}`;
}

/** A figure's label as an attribute value (the metric key would carry x86 words on arm64). */
export function slug(label: string): string {
  return label
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

/** Who leads on one figure, and by how much over the next design. */
export function leadText(v: Verdict): string {
  if (v.leaders.length === 0) return 'no design has a figure';
  if (v.runnerUp === null) return `every design prints ${v.leaderValue}`;
  const who = v.leaders.length === 1 ? `${v.leaders[0]} leads` : `${names(v.leaders)} tie for the lead`;
  // A margin against a 0 is both values ("0 B against 2.0 MiB"): name the next design instead.
  if (v.runnerUp.margin.includes(' against '))
    return `${who} with ${v.leaderValue}; next is ${v.runnerUp.name} with ${v.runnerUp.value}`;
  return `${who} with ${v.leaderValue}, ${v.runnerUp.margin} than ${v.runnerUp.name} (${v.runnerUp.value})`;
}

/** Where ours stands when it does not lead alone; '' when it does (the lead text names it). */
export function oursText(v: Verdict): string {
  if (v.ours === '' || v.runnerUp === null) return '';
  if (v.leaders.includes(OUR_POLICY)) return v.leaders.length > 1 ? 'ours shares the lead' : '';
  return `ours ${v.ours}, ${v.margin}; why: ${v.reason ?? ''}`;
}

/** One line per figure of a run: the lead, then ours where it does not lead alone. */
export function summaryLines(run: WorkloadRun): { verdict: Verdict; text: string }[] {
  return verdicts(run).map((v) => {
    const ours = oursText(v);
    return { verdict: v, text: `${v.figure.label}: ${leadText(v)}${ours === '' ? '' : `. ${ours}`}` };
  });
}

/** Every design once, in first-seen order, with its kernel version and description. */
export function designs(data: ReportData): PolicyRun[] {
  const seen = new Map<string, PolicyRun>();
  for (const r of data.runs) for (const p of r.policies) if (!seen.has(p.name)) seen.set(p.name, p);
  return [...seen.values()];
}

function designKernel(p: PolicyRun): string {
  return kernelLabel(p) ?? 'ours';
}

const INTRO =
  'Made from this run’s figures: for each workload and figure, the design that leads (every design ' +
  'printing the best value, as the tables mark it) and how far ahead of the next it is; where execmem ' +
  '(ours) does not lead, its figure and the reasons whose rules hold on the run’s own numbers ' +
  '(src/metrics/report/reasons.ts).';

export function summaryHtml(data: ReportData): string {
  const blocks = data.runs.map((run) => {
    const items = summaryLines(run).map(({ verdict: v, text }) => {
      const cls = v.standing === 'trails' ? ' class="trails"' : '';
      return `<li${cls} data-figure="${escapeHtml(slug(v.figure.label))}" data-leaders="${escapeHtml(v.leaders.join(','))}">${escapeHtml(text)}</li>`;
    });
    return (
      `<section class="summary-run" data-workload="${escapeHtml(run.workload)}">` +
      `<h3>${escapeHtml(run.workload)}</h3><p class="desc">${escapeHtml(run.description)}</p>` +
      `<ul>${items.join('')}</ul></section>`
    );
  });
  const designList = designs(data)
    .map(
      (p) =>
        `<dt data-policy="${escapeHtml(p.name)}">${escapeHtml(p.name === OUR_POLICY ? `${p.name} (ours)` : p.name)} ` +
        `<span class="kernel-inline">${escapeHtml(designKernel(p))}</span></dt><dd>${escapeHtml(p.description)}</dd>`,
    )
    .join('');
  const workloadList = data.runs
    .map(
      (r) =>
        `<dt data-workload="${escapeHtml(r.workload)}">${escapeHtml(r.workload)}</dt><dd>${escapeHtml(r.description)}</dd>`,
    )
    .join('');
  return [
    '<h2 id="summary">Summary</h2>',
    `<p class="meta">${escapeHtml(INTRO)}</p>`,
    `<div class="summary">${blocks.join('')}</div>`,
    '<h2 id="designs">The designs and the workloads</h2>',
    `<dl class="descriptions designs">${designList}</dl>`,
    `<dl class="descriptions workloads">${workloadList}</dl>`,
  ].join('\n');
}

export function summaryMarkdown(data: ReportData): string {
  const out = ['## Summary', '', INTRO, ''];
  for (const run of data.runs) {
    out.push(`### ${run.workload}`, '', run.description, '');
    for (const { text } of summaryLines(run)) out.push(`- ${text}`);
    out.push('');
  }
  out.push('## The designs and the workloads', '');
  for (const p of designs(data)) out.push(`- **${p.name}** (${designKernel(p)}): ${p.description}`);
  out.push('');
  for (const r of data.runs) out.push(`- **${r.workload}**: ${r.description}`);
  out.push('');
  return out.join('\n');
}
