/**
 * report/summary.md and the terminal table.
 *
 * Why markdown next to the HTML: the summary is what goes into the README ("the latest report
 * table", issue 7), into a mailing-list reply or a commit message; it must read well as plain
 * text and diff cleanly between runs, so it has no timestamps inside the tables.
 */
import { bestRows, TABLE_COLUMNS, TERMINAL_KEYS, textTable } from './format.js';
import { MODELLED_VS_REAL } from './provenance.js';
import type { ReportData, WorkloadRun } from './types.js';

function markdownTable(run: WorkloadRun): string {
  const header = ['policy', ...TABLE_COLUMNS.map((c) => c.heading)];
  const best = TABLE_COLUMNS.map((c) =>
    bestRows(
      run.policies.map((p) => p.metrics[c.key]),
      c.better,
    ),
  );
  const rows = run.policies.map((p, row) => [
    p.name === 'execmem' ? '**execmem** (ours)' : p.name,
    ...TABLE_COLUMNS.map((c, col) =>
      best[col].has(row) ? `**${c.format(p.metrics)}**` : c.format(p.metrics),
    ),
  ]);
  const align = ['---', ...TABLE_COLUMNS.map(() => '---:')];
  return [header, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

export function renderMarkdown(data: ReportData): string {
  const out: string[] = ['# execmem report', ''];
  const first = data.runs[0];
  out.push(
    `Every policy ran every workload on an identical fresh simulated ${first.arch} machine ` +
      `(seed ${first.seed}, scale ${first.scale}). Bold marks the best value in a column. ` +
      'iTLB misses are per million instruction fetches, with the compulsory lower bound in parentheses.',
    '',
  );
  for (const note of data.notes) out.push(`> ${note}`, '');
  for (const run of data.runs) {
    out.push(`## ${run.workload}`, '', markdownTable(run), '');
  }
  out.push('## What is modelled and what is real', '');
  for (const line of MODELLED_VS_REAL) out.push(`- ${line}`);
  out.push('', `Regenerate with \`${data.command}\`.`, '');
  return out.join('\n');
}

/** The short table printed on the terminal after `execmem report`. */
export function renderTerminalSummary(data: ReportData): string {
  const columns = TABLE_COLUMNS.filter((c) => TERMINAL_KEYS.includes(c.key));
  const blocks: string[] = [];
  for (const run of data.runs) {
    const rows = run.policies.map((p) => [p.name, ...columns.map((c) => c.format(p.metrics))]);
    blocks.push(
      `${run.workload} (${run.arch}, seed ${run.seed})\n${textTable(['policy', ...columns.map((c) => c.heading)], rows)}`,
    );
  }
  return blocks.join('\n\n');
}
