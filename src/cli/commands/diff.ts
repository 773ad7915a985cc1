/**
 * `execmem diff A.json B.json`: what changed between two saved runs (`compare --json` or
 * `report --json` outputs), per workload, design and figure: A, B, the change and the relative
 * change, marked better or worse where the figure has a direction. `--json` prints the whole
 * RunDiff (src/metrics/diff.ts), `--csv` one record per figure.
 *
 * Why only changed figures by default: the question is "what did my patch do"; twenty unchanged
 * figures per design would hide the three that moved (`--all` shows everything). Runs that do
 * not compare (another arch, no workload in common) are a usage error naming the difference;
 * differences that still compare (seed, scale, machine) are printed above the figures.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { toCsv } from '../../metrics/csv.js';
import {
  DiffError,
  type DiffRun,
  diffRuns,
  type FigureDiff,
  type RunDiff,
  readSavedRuns,
  type SavedRuns,
} from '../../metrics/diff.js';
import {
  formatBytes,
  formatCount,
  formatDuration,
  formatPercent,
  formatRatio,
  type TextRow,
  tableColumns,
  textTable,
} from '../../metrics/report/format.js';
import type { MetricKey } from '../../metrics/report/types.js';
import { GLOBAL_FLUSH_LABELS } from '../../metrics/report/vocabulary.js';
import { type CliIo, UsageError } from '../io.js';

interface DiffCliOptions {
  all?: boolean;
  csv?: boolean;
}

export function register(program: Command, io: CliIo): void {
  program
    .command('diff')
    .description('compare two saved runs (compare --json or report --json): the change per design and figure')
    .argument('<a>', 'the run before (a JSON file)')
    .argument('<b>', 'the run after')
    .option('--all', 'show every figure, not only those that changed')
    .option('--csv', 'print one CSV record per workload, design and figure (RFC 4180) on stdout')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem compare --workload mixed --json > before.json',
        '  $ execmem compare --workload mixed --json > after.json     # after changing a policy',
        '  $ execmem diff before.json after.json',
        '  $ execmem diff before.json after.json --json | jq .workloads[0].designs[0].figures[0]',
        '',
        'Change = B - A; relative = (B - A) / |A|. better/worse follows the direction the tables rank by.',
      ].join('\n'),
    )
    .action((a: string, b: string, opts: DiffCliOptions) => {
      if (opts.csv && io.json) throw new UsageError('--csv and --json: choose one output');
      const runs = { a: readRuns(a, 'A'), b: readRuns(b, 'B') };
      let d: RunDiff;
      try {
        d = diffRuns(runs.a, runs.b, { a, b });
      } catch (e) {
        if (e instanceof DiffError) throw new UsageError(`cannot diff: ${e.message}`);
        throw e;
      }
      if (io.json) io.out(JSON.stringify(d, null, 2));
      else if (opts.csv) io.out(diffCsv(d));
      else io.out(formatDiff(d, runs, opts.all === true));
    });
}

function readRuns(path: string, label: string): SavedRuns {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(
      `cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path} is not JSON (${(e as Error).message})`);
  }
  try {
    return readSavedRuns(doc, path);
  } catch (e) {
    if (e instanceof DiffError) throw new UsageError(`${label}: ${e.message}`);
    throw e;
  }
}

/** A figure in its unit, as the tables print it (report/format.ts). */
export function formatFigure(key: MetricKey, x: number): string {
  switch (key) {
    case 'liveBytes':
    case 'mappedBytes':
    case 'directMap4kBytes':
    case 'directMap4kGrowthBytes':
      return formatBytes(x);
    case 'modelledKernelTimeNs':
      return formatDuration(x);
    case 'overhead':
      return formatRatio(x);
    case 'largePageShare':
      return formatPercent(x);
    case 'itlbMissesPerMillion':
    case 'itlbLowerBoundPerMillion':
      return x.toFixed(1);
    default:
      return formatCount(x);
  }
}

function formatChange(f: FigureDiff): string {
  const sign = f.change > 0 ? '+' : '';
  if (f.key === 'largePageShare') return `${sign}${(f.change * 100).toFixed(1)} pp`;
  return `${sign}${formatFigure(f.key, f.change)}`;
}

function formatRelative(f: FigureDiff): string {
  if (f.relative === null) return 'from 0';
  if (f.relative === 0) return '';
  return `${f.relative > 0 ? '+' : ''}${(f.relative * 100).toFixed(1)}%`;
}

/** Figure names as the run's tables head them (in the arch's words), else the JSON key. */
function headings(run: DiffRun): Map<MetricKey, string> {
  const names = new Map<MetricKey, string>();
  for (const [k, label] of Object.entries(GLOBAL_FLUSH_LABELS)) names.set(k as MetricKey, label);
  for (const c of tableColumns(run)) names.set(c.key, c.heading);
  // Figures only the JSON carries, named after their table twins.
  const growth = names.get('directMap4kGrowthBytes');
  if (growth !== undefined) names.set('directMap4kBytes', growth.replace(/ \+$/, ''));
  const itlb = names.get('itlbMissesPerMillion');
  if (itlb !== undefined) names.set('itlbLowerBoundPerMillion', `${itlb} bound`);
  return names;
}

export function formatDiff(d: RunDiff, runs: { a: SavedRuns; b: SavedRuns }, all: boolean): string {
  const out = [`execmem diff: A = ${d.a} (${runs.a.kind} --json), B = ${d.b} (${runs.b.kind} --json)`];
  for (const w of d.workloads) {
    const run = runs.a.runs.find((r) => r.workload === w.workload) as DiffRun;
    const names = headings(run);
    out.push('', `${w.workload} on ${w.arch}`);
    for (const n of w.notes) out.push(`note: ${n}`);
    const rows: TextRow[] = [];
    for (const design of w.designs) {
      const shown = design.figures.filter((f) => all || f.change !== 0);
      if (shown.length === 0) {
        rows.push({ cells: [design.name, ''], span: 'no figure changed' });
        continue;
      }
      shown.forEach((f, i) => {
        rows.push([
          i === 0 ? design.name : '',
          names.get(f.key) ?? f.key,
          formatFigure(f.key, f.a),
          formatFigure(f.key, f.b),
          f.change === 0 ? '=' : formatChange(f),
          formatRelative(f),
          f.verdict ?? '',
        ]);
      });
      const unchanged = design.figures.length - design.changed;
      if (!all && unchanged > 0) rows.push({ cells: ['', ''], span: `(${unchanged} figures unchanged)` });
    }
    out.push(textTable(['policy', 'figure', 'A', 'B', 'change', 'relative', ''], rows, 2));
    if (w.onlyInA.length > 0) out.push(`designs only in A: ${w.onlyInA.join(', ')}`);
    if (w.onlyInB.length > 0) out.push(`designs only in B: ${w.onlyInB.join(', ')}`);
  }
  if (d.workloadsOnlyInA.length > 0) out.push('', `workloads only in A: ${d.workloadsOnlyInA.join(', ')}`);
  if (d.workloadsOnlyInB.length > 0) out.push(`workloads only in B: ${d.workloadsOnlyInB.join(', ')}`);
  out.push(
    '',
    'change = B - A (pp: percentage points); relative = (B - A) / |A| ("from 0" when A is 0).',
    'better/worse: by the direction the tables rank the figure by (lower kernel time, mapped bytes, flushes,',
    'iTLB misses; more exec on 2M); live, local and all flushes, patch writes, W^X and failed ops get none.',
  );
  if (!all) out.push('Only the figures that changed are shown; --all shows every figure.');
  return out.join('\n');
}

/** `diff --csv`: every figure of every common design, raw numbers (relative empty when A is 0). */
export function diffCsv(d: RunDiff): string {
  const rows = d.workloads.flatMap((w) =>
    w.designs.flatMap((design) =>
      design.figures.map((f) => [
        w.workload,
        w.arch,
        design.name,
        f.key,
        f.a,
        f.b,
        f.change,
        f.relative,
        f.verdict,
      ]),
    ),
  );
  return toCsv(['workload', 'arch', 'policy', 'figure', 'a', 'b', 'change', 'relative', 'verdict'], rows);
}
