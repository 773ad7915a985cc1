/**
 * `npm run fuzz [-- TARGET...] [--seed N] [--iterations N] [--json]`: run fuzz targets long.
 *
 * Why a separate command: `npm test` runs a small fixed-seed slice of every target so the suite
 * finds regressions; this runs many more cases (default 2000 per target) from a given or random
 * seed, prints progress per target, and exits 1 when anything was found, naming the seed and
 * case so the finding replays exactly.
 */

import type { FuzzReport } from './target.js';
import { FUZZ_TARGETS } from './targets.js';

interface Args {
  names: string[];
  seed: number;
  iterations: number;
  json: boolean;
}

function usage(message: string): never {
  process.stderr.write(
    `error: ${message}\nusage: npm run fuzz -- [TARGET...] [--seed N] [--iterations N] [--json]\n` +
      `targets: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}\n`,
  );
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { names: [], seed: Math.floor(Math.random() * 2 ** 32), iterations: 2000, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (what: string, max: number): number => {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 0 || v > max) usage(`${what} must be an integer in [0, ${max}]`);
      return v;
    };
    if (a === '--seed') args.seed = num('--seed', 2 ** 32 - 1);
    else if (a === '--iterations') args.iterations = num('--iterations', 10_000_000);
    else if (a === '--json') args.json = true;
    else if (a === '--help' || a === '-h') usage('help');
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (!FUZZ_TARGETS.some((t) => t.name === a)) usage(`unknown target '${a}'`);
    else args.names.push(a);
  }
  return args;
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const targets =
    args.names.length === 0 ? FUZZ_TARGETS : FUZZ_TARGETS.filter((t) => args.names.includes(t.name));
  if (targets.length === 0) usage('no fuzz targets are registered');
  const reports: FuzzReport[] = [];
  for (const t of targets) {
    if (!args.json)
      process.stderr.write(`fuzz ${t.name}: ${args.iterations} cases from seed ${args.seed}...\n`);
    const r = t.run(args.seed, args.iterations);
    reports.push(r);
    if (!args.json) {
      process.stdout.write(`${t.name}: ${r.cases} cases, ${r.findings.length} findings\n`);
      for (const f of r.findings.slice(0, 20)) {
        process.stdout.write(`  seed ${r.seed} case ${f.caseIndex}: ${f.message}\n`);
      }
    }
  }
  if (args.json) process.stdout.write(`${JSON.stringify({ reports }, null, 2)}\n`);
  process.exit(reports.some((r) => r.findings.length > 0) ? 1 : 0);
}

main();
