/**
 * The benchmark runner behind `npm run bench`: runs every registered bench module in this one
 * process (so ratios compare measurements taken under the same conditions) and prints what each
 * measured, its speed relative to its baseline, and whether each target is met.
 *
 * Why this layout rather than a wide table: names and notes are long (a note says how a figure
 * was obtained, which is the point of a benchmark here); a table of them was 300 columns wide.
 * Each result is one line (value, unit, ratio, target verdict) with its baseline and note
 * wrapped under it, every line at most LINE_COLUMNS wide, and a summary of the targets closes
 * the output. Facts that are not measurements are printed as notes, never as rows.
 *
 * Usage: node dist/bench/run.js [--json] [MODULE...]   (see --help). Engineers add a module by
 * appending one entry to BENCHES. No timing is asserted anywhere (the tests do not run this).
 */
import { benchExecmem } from './execmem.js';
import { benchHost } from './host.js';
import { benchLead } from './lead.js';
import { benchMachine } from './machine.js';
import { benchMemory } from './memory.js';
import { benchModules } from './modules.js';
import { benchTool } from './tool.js';
import {
  type BenchModule,
  type BenchResult,
  type BenchRow,
  type BenchTarget,
  isFact,
  targetMet,
} from './types.js';

/** Registered bench modules, run in this order. */
export const BENCHES: readonly { readonly name: string; readonly run: BenchModule }[] = [
  { name: 'machine', run: benchMachine },
  { name: 'execmem', run: benchExecmem },
  { name: 'host', run: benchHost },
  { name: 'modules', run: benchModules },
  { name: 'lead', run: benchLead },
  { name: 'memory', run: benchMemory },
  { name: 'tool', run: benchTool },
];

export const LINE_COLUMNS = 120;

export const HELP = `Usage: npm run bench -- [--json] [MODULE...]
       node dist/bench/run.js [--json] [MODULE...]   (after npm run build)

Runs the benchmark modules (default: all) in one process and prints each result as
  NAME: VALUE UNIT, RATIO x BASELINE's speed, target OP BOUND: met | NOT met
with how it was measured wrapped under it, then how many targets are met.
RATIO is always the speed relative to the baseline (above 1 = faster than it).

Modules: ${BENCHES.map((b) => b.name).join(', ')}

--json   one JSON document on stdout instead (progress lines stay on stderr):
         [{ "module": string,
            "results": [{ "name", "value", "unit", "baseline"?, "ratio"?, "note"?,
                          "target"?: { "of": "value"|"ratio", "op": ">="|"<=", "bound", "source",
                                       "met": boolean|null } }],
            "facts": [{ "name", "fact" }] }]
--help   this text

Module lead (issue 12's targets, ours against the best other design) runs at scale 0.25 and
seeds 1-3 unless EXECMEM_BENCH_LEAD_SCALE / EXECMEM_BENCH_LEAD_SEEDS (comma-separated) say otherwise.

Exit codes: 0 ok (targets not met are reported, not failures), 1 a benchmark failed, 2 bad usage.`;

function fmtNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 1e9) return `${(v / 1e9).toFixed(2)} G`;
  if (abs >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (abs >= 1e3) return `${(v / 1e3).toFixed(2)} k`;
  return abs >= 10 ? v.toFixed(1) : v.toFixed(3);
}

/** Words of `text` on lines of at most `width` columns, each starting with `indent`. */
export function wrap(text: string, width: number, indent: string, first = indent): string[] {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    const sep = line === first || line === indent ? '' : ' ';
    if (line.length + sep.length + word.length > width && line.trim() !== '') {
      lines.push(line);
      line = indent;
    }
    if (line.length + word.length > width) {
      // A word longer than a line: cut it.
      let rest = word;
      while (line.length + rest.length > width) {
        const room = width - line.length;
        lines.push(line + rest.slice(0, room));
        rest = rest.slice(room);
        line = indent;
      }
      line += rest;
    } else line += (line === first || line === indent ? '' : ' ') + word;
  }
  if (line.trim() !== '') lines.push(line);
  return lines;
}

function targetText(t: BenchTarget, met: boolean | null): string {
  const verdict = met === null ? 'not measured' : met ? 'met' : 'NOT met';
  const bound = Math.abs(t.bound) >= 1000 ? fmtNumber(t.bound).replace(' ', '') : String(t.bound);
  return `target ${t.of === 'ratio' ? 'ratio ' : ''}${t.op} ${bound}: ${verdict}`;
}

export function formatReport(out: readonly { module: string; rows: readonly BenchRow[] }[]): string {
  const lines: string[] = [];
  const verdicts: { name: string; met: boolean | null }[] = [];
  for (const { module, rows } of out) {
    lines.push(`== ${module} ==`);
    for (const row of rows) {
      if (isFact(row)) {
        lines.push(...wrap(`${row.name}: ${row.fact}`, LINE_COLUMNS, '    ', '  note: '));
        continue;
      }
      const parts = [`${fmtNumber(row.value)} ${row.unit}`];
      if (row.ratio !== undefined) parts.push(`${row.ratio.toFixed(3)}x the baseline's speed`);
      const met = targetMet(row);
      if (row.target) {
        parts.push(targetText(row.target, met));
        verdicts.push({ name: `${module}: ${row.name}`, met });
      }
      lines.push(...wrap(`${row.name}: ${parts.join(', ')}`, LINE_COLUMNS, '      ', '  '));
      if (row.baseline) lines.push(...wrap(`baseline: ${row.baseline}`, LINE_COLUMNS, '      ', '      '));
      const about = [row.note, row.target ? `target from ${row.target.source}` : undefined].filter(Boolean);
      if (about.length > 0) lines.push(...wrap(about.join('; '), LINE_COLUMNS, '      ', '      '));
    }
  }
  const notMet = verdicts.filter((v) => v.met === false);
  const summary =
    `targets: ${verdicts.filter((v) => v.met === true).length} met, ${notMet.length} not met` +
    (notMet.length > 0 ? ` (${notMet.map((v) => v.name).join('; ')})` : '');
  lines.push('', ...wrap(summary, LINE_COLUMNS, '  ', ''));
  return lines.join('\n');
}

/** The --json document (see HELP). */
export function toJsonDoc(out: readonly { module: string; rows: readonly BenchRow[] }[]) {
  return out.map(({ module, rows }) => ({
    module,
    results: rows
      .filter((r): r is BenchResult => !isFact(r))
      .map((r) => (r.target ? { ...r, target: { ...r.target, met: targetMet(r) } } : r)),
    facts: rows.filter(isFact),
  }));
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const flags = argv.filter((a) => a.startsWith('-'));
  const badFlag = flags.find((f) => f !== '--json');
  if (badFlag !== undefined) {
    process.stderr.write(`unknown option '${badFlag}' (see --help)\n`);
    return 2;
  }
  const json = flags.includes('--json');
  const only = argv.filter((a) => !a.startsWith('-'));
  const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown bench module(s): ${unknown.join(', ')}; known: ${BENCHES.map((b) => b.name).join(', ')}\n`,
    );
    return 2;
  }
  const selected = only.length === 0 ? BENCHES : BENCHES.filter((b) => only.includes(b.name));
  const out: { module: string; rows: BenchRow[] }[] = [];
  for (const b of selected) {
    process.stderr.write(`bench ${b.name} ...\n`);
    out.push({ module: b.name, rows: await b.run() });
  }
  if (json) process.stdout.write(`${JSON.stringify(toJsonDoc(out), null, 2)}\n`);
  else process.stdout.write(`${formatReport(out)}\n`);
  return 0;
}

if (process.argv[1]?.endsWith('/bench/run.js')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
