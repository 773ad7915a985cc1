/**
 * The benchmark runner behind `npm run bench`: runs every registered bench module in this one
 * process (so ratios compare measurements taken under the same conditions), prints a table or,
 * with --json, a JSON array of { module, results }.
 *
 * Why one runner with a list: engineers add a module by appending one entry to BENCHES; nothing
 * else needs to know about it. No timing is asserted anywhere: targets are stated as ratios in
 * each result's note and judged by a reader (or CI script) from the output.
 */
import { benchExecmem } from './execmem.js';
import { benchHost } from './host.js';
import { benchMachine } from './machine.js';
import { benchModules } from './modules.js';
import type { BenchModule, BenchResult } from './types.js';

/** Registered bench modules, run in this order. */
export const BENCHES: readonly { readonly name: string; readonly run: BenchModule }[] = [
  { name: 'machine', run: benchMachine },
  { name: 'execmem', run: benchExecmem },
  { name: 'host', run: benchHost },
  { name: 'modules', run: benchModules },
];

function fmtNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (abs >= 1e3) return `${(v / 1e3).toFixed(2)} k`;
  return abs >= 10 ? v.toFixed(1) : v.toFixed(3);
}

export function formatTable(rows: readonly { module: string; result: BenchResult }[]): string {
  const header = ['module', 'benchmark', 'value', 'unit', 'ratio', 'baseline', 'note'];
  const lines = rows.map(({ module, result: r }) => [
    module,
    r.name,
    fmtNumber(r.value),
    r.unit,
    r.ratio === undefined ? '' : r.ratio.toFixed(3),
    r.baseline ?? '',
    r.note ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => (i === 2 || i === 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [fmt(header), fmt(widths.map((w) => '-'.repeat(w))), ...lines.map(fmt)].join('\n');
}

async function main(argv: readonly string[]): Promise<number> {
  const json = argv.includes('--json');
  const only = argv.filter((a) => !a.startsWith('--'));
  const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `unknown bench module(s): ${unknown.join(', ')}; known: ${BENCHES.map((b) => b.name).join(', ')}\n`,
    );
    return 2;
  }
  const selected = only.length === 0 ? BENCHES : BENCHES.filter((b) => only.includes(b.name));
  const out: { module: string; results: BenchResult[] }[] = [];
  for (const b of selected) {
    if (!json) process.stderr.write(`bench ${b.name} ...\n`);
    out.push({ module: b.name, results: await b.run() });
  }
  if (json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else
    process.stdout.write(
      `${formatTable(out.flatMap((m) => m.results.map((result) => ({ module: m.module, result }))))}\n`,
    );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
