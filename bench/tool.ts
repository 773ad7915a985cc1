/**
 * The speed of the `execmem` tool itself (issue 13 item 4): `compare` of each workload and the
 * full report (`npm start` without its build), run as a user runs them (the built CLI in a child
 * process), with the targets beside them: a compare in at most 5 s, the full report in at most
 * 30 s, on this machine.
 *
 * Each compare runs twice: serial (`--jobs 1`, every design one after the other in one thread) and
 * parallel (the default: one thread per CPU, the command's own and workers, src/cli/pool.ts). The
 * ratio is the serial time over the parallel one (above 1 = the pool is faster). The two `--json`
 * outputs must be the same document once the timing fields are removed (simulatorOpsPerSecond and
 * its ratio time the simulator, not the model): the bench counts the workloads where they are and
 * sets that count a target of every workload, so a pool that changed a figure shows as NOT met.
 *
 * Wall-clock seconds on a shared machine vary with its load: the load average at the start and
 * the end is printed as a note, and the ratios compare runs made back to back in this one bench.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WORKLOADS } from '../src/workloads/registry.js';
import type { BenchModule, BenchRow } from './types.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SOURCE = 'issue 13 item 4';
export const COMPARE_TARGET_S = 5;
export const REPORT_TARGET_S = 30;

/** JSON keys that time the simulator (vary run to run); everything else is a figure. */
const TIMING_KEYS: ReadonlySet<string> = new Set(['simulatorOpsPerSecond', 'simulatorOpsPerSecondRatio']);

/** A compare --json document without its timing fields, as a canonical string. */
export function figuresOf(json: string): string {
  return JSON.stringify(JSON.parse(json), (key, value) => (TIMING_KEYS.has(key) ? undefined : value));
}

interface Timed {
  readonly seconds: number;
  /** User + system CPU seconds of the process (all its threads), from GNU time; null without it. */
  readonly cpuSeconds: number | null;
  readonly stdout: string;
}

/** GNU time, which reports a child's CPU time (Node has no rusage of a child). */
const GNU_TIME = '/usr/bin/time';

/** Run the CLI to its end; rejects when it exits non-zero. */
function runCli(args: readonly string[]): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const timeFile = existsSync(GNU_TIME)
      ? join(mkdtempSync(join(tmpdir(), 'execmem-bench-time-')), 'cpu')
      : null;
    const command = [process.execPath, CLI, '--quiet', ...args];
    const argv = timeFile === null ? command : [GNU_TIME, '-f', '%U %S', '-o', timeFile, ...command];
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      let cpuSeconds: number | null = null;
      if (timeFile !== null) {
        const parts = readFileSync(timeFile, 'utf8').trim().split(/\s+/).slice(-2).map(Number);
        if (parts.length === 2 && parts.every(Number.isFinite)) cpuSeconds = parts[0] + parts[1];
        rmSync(dirname(timeFile), { recursive: true, force: true });
      }
      if (code !== 0) reject(new Error(`execmem ${args.join(' ')} exited ${code}: ${err.trim()}`));
      else resolve({ seconds, cpuSeconds, stdout: Buffer.concat(out).toString('utf8') });
    });
  });
}

function cpu(t: Timed): string {
  return t.cpuSeconds === null ? 'CPU time not measured (no GNU time)' : `${t.cpuSeconds.toFixed(1)} s CPU`;
}

function load(): string {
  return loadavg()
    .map((x) => x.toFixed(2))
    .join(', ');
}

export const benchTool: BenchModule = async () => {
  const rows: BenchRow[] = [];
  const jobs = availableParallelism();
  rows.push({
    name: 'machine',
    fact: `${jobs} CPUs (os.availableParallelism: the pool's default thread count); load average at the start ${load()}`,
  });
  const workloads = Object.keys(WORKLOADS);
  let serialTotal = 0;
  let identical = 0;
  const different: string[] = [];
  for (const w of workloads) {
    process.stderr.write(`  compare ${w} (serial, then parallel) ...\n`);
    const serial = await runCli(['compare', '--workload', w, '--json', '--jobs', '1']);
    const parallel = await runCli(['compare', '--workload', w, '--json']);
    serialTotal += serial.seconds;
    process.stderr.write(
      `    serial ${serial.seconds.toFixed(1)} s (${cpu(serial)}), parallel ${parallel.seconds.toFixed(1)} s ` +
        `(${cpu(parallel)}), load ${load()}\n`,
    );
    if (figuresOf(serial.stdout) === figuresOf(parallel.stdout)) identical++;
    else different.push(w);
    rows.push({
      name: `compare --workload ${w}`,
      value: parallel.seconds,
      unit: 's',
      baseline: `the same compare with --jobs 1 (serial), this run: ${serial.seconds.toFixed(1)} s`,
      ratio: serial.seconds / parallel.seconds,
      note: `wall time of the CLI process, ${jobs} threads; CPU ${cpu(parallel)} (serial: ${cpu(serial)})`,
      target: { of: 'value', op: '<=', bound: COMPARE_TARGET_S, source: SOURCE },
    });
  }
  rows.push({
    name: 'figures identical, serial vs parallel',
    value: identical,
    unit: `of ${workloads.length} workloads`,
    note:
      'compare --json of each workload with --jobs 1 and with the pool, minus simulatorOpsPerSecond(Ratio)' +
      (different.length > 0 ? `; DIFFERENT: ${different.join(', ')}` : ''),
    target: { of: 'value', op: '>=', bound: workloads.length, source: `${SOURCE} (no figure changes)` },
  });
  process.stderr.write('  report (every workload, every design) ...\n');
  const dir = mkdtempSync(join(tmpdir(), 'execmem-bench-report-'));
  try {
    const report = await runCli(['report', '--out', dir]);
    process.stderr.write(`    report ${report.seconds.toFixed(1)} s (${cpu(report)}), load ${load()}\n`);
    rows.push({
      name: 'full report (npm start without the build)',
      value: report.seconds,
      unit: 's',
      baseline: `the serial compares of every workload above, added up: ${serialTotal.toFixed(1)} s`,
      ratio: serialTotal / report.seconds,
      note: `execmem report --out <tmp>: every workload and design on ${jobs} threads, then the page; CPU ${cpu(report)}`,
      target: { of: 'value', op: '<=', bound: REPORT_TARGET_S, source: SOURCE },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  rows.push({
    name: 'load',
    fact: `load average at the end ${load()} (2-core machines shared with other work run slower)`,
  });
  return rows;
};
