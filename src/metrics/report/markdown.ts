/**
 * report/summary.md and the terminal table.
 *
 * Why markdown next to the HTML: the summary is what goes into the README ("the latest report
 * table", issue 7), into a mailing-list reply or a commit message; it must read well as plain
 * text and diff cleanly between runs, so it has no timestamps inside the tables. Headings are in
 * the run's arch's words (vocabulary.ts), a design that is another on this arch is one line
 * saying so, and each Linux design carries the kernel version it models. Who wins overall
 * (modelled kernel time and how robust its ranking is) and every workload at a glance come first,
 * the cost table behind the kernel time last.
 */
import { consumersMarkdown, moduleLoadsMarkdown } from './consumers-view.js';
import {
  bestRowsOf,
  COLUMN_GROUPS,
  figureText,
  seedLabel,
  TEXT_ROW_HEADER,
  tableColumns,
  terminalColumns,
  textRow,
  textTable,
} from './format.js';
import { costTableMarkdown, glanceMarkdown, kernelTimeMarkdown } from './kernel-time-view.js';
import { modelledVsReal } from './provenance.js';
import { summaryMarkdown } from './summary.js';
import type { PolicyRun, ReportData, WorkloadRun } from './types.js';
import {
  collapsedRows,
  flushLegend,
  kernelLabel,
  kernelTimeLegend,
  type SameAsRow,
  sameAsRows,
  wxHoleNotes,
} from './vocabulary.js';

/** "execmem-6.10 (Linux 6.10)", "**execmem** (ours)", with the same-as note when figures are kept. */
function policyLabel(p: PolicyRun, same: SameAsRow | null): string {
  const kernel = kernelLabel(p);
  const label = kernel === null ? `**${p.name}** (ours)` : `${p.name} (${kernel})`;
  return same && !same.collapsed ? `${label} [${same.label}]` : label;
}

/** A workload's results as one markdown table per column group (format.ts COLUMN_GROUPS). */
function markdownTables(run: WorkloadRun): string {
  const all = tableColumns(run);
  const same = sameAsRows(run.arch, run.policies);
  const collapsed = collapsedRows(run.arch, run.policies);
  return COLUMN_GROUPS.map((group) => {
    const columns = all.filter((c) => c.group === group.id);
    const header = ['policy', ...columns.map((c) => c.heading)];
    const best = columns.map((c) => bestRowsOf(c, run.policies, collapsed));
    const rows = run.policies.map((p, row) => {
      const s = same[row];
      // A collapsed row: its note in the first figure cell, the others blank (markdown cannot span).
      const cells = s?.collapsed
        ? [s.label, ...columns.slice(1).map(() => '')]
        : columns.map((c, col) => (best[col].has(row) ? `**${figureText(c, p)}**` : figureText(c, p)));
      return [policyLabel(p, s), ...cells];
    });
    const align = ['---', ...columns.map(() => '---:')];
    const table = [header, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
    return `${capitalised(group.title)}:\n\n${table}`;
  }).join('\n\n');
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function renderMarkdown(data: ReportData): string {
  const out: string[] = ['# execmem report', ''];
  const first = data.runs[0];
  out.push(
    `Every policy ran every workload on an identical fresh simulated ${first.arch} machine ` +
      `(${first.tlb} TLB geometry, ${seedLabel(first)}, scale ${first.scale}). Bold marks the best value in a column. ` +
      'iTLB misses are per million instruction fetches, with the lower bound in parentheses (the misses of an infinite TLB with the same flushes, per CPU). ' +
      flushLegend(first.arch),
    '',
  );
  out.push(summaryMarkdown(data));
  for (const note of data.notes) out.push(`> ${note}`, '');
  out.push(kernelTimeMarkdown(data), glanceMarkdown(data));
  for (const run of data.runs) {
    out.push(`## ${run.workload}`, '', run.description, '', markdownTables(run), '');
    out.push(kernelTimeLegend(run.kernelTimeSensitivity.summary), '');
    for (const note of wxHoleNotes(run.workload, run.policies)) out.push(`> ${note}`, '');
  }
  if (data.consumers) out.push(consumersMarkdown(data, data.consumers));
  if (data.moduleLoads) out.push(moduleLoadsMarkdown(data.moduleLoads));
  out.push('## The cost table', '');
  out.push(
    'Every counted event, its cost and the published figure behind it (docs/KERNEL-TIME.md, ' +
      'src/metrics/kernel-time-costs.ts). Events marked "not in sum" have no published figure: counted, left out.',
    '',
    costTableMarkdown(first.arch),
    '',
  );
  out.push('## What is modelled and what is real', '');
  for (const line of modelledVsReal(first.arch, first.tlb)) out.push(`- ${line}`);
  out.push('', `Regenerate with \`${data.command}\`.`, '');
  return out.join('\n');
}

/** The short table printed on the terminal after `execmem report`. */
export function renderTerminalSummary(data: ReportData): string {
  const blocks: string[] = [];
  for (const run of data.runs) {
    const columns = terminalColumns(run);
    const same = sameAsRows(run.arch, run.policies);
    const rows = run.policies.map((p, row) => textRow(p, columns, same[row]));
    blocks.push(
      `${run.workload} (${run.arch}, ${seedLabel(run)}, ${run.tlb} TLBs)\n` +
        textTable([...TEXT_ROW_HEADER, ...columns.map((c) => c.heading)], rows, TEXT_ROW_HEADER.length) +
        `\nkernel time ranking: ${run.kernelTimeSensitivity.summary}`,
    );
  }
  return blocks.join('\n\n');
}
