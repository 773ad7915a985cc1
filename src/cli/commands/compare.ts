/**
 * `execmem compare`: one workload through every design on identical fresh simulated machines,
 * printed as a table (or with --json the CompareResult object of src/metrics/compare.ts), with the
 * same columns, units and legend as the report's terminal summary (../legend.ts).
 *
 * Why it is thin: everything measured lives in runCompare so that the report (engineer C) and
 * this command print the very same numbers. This module only parses flags, shows progress on
 * stderr, and formats. The table says which rows are re-implementations of Linux designs and
 * which kernel each models, in the run's arch's words (the report's columns and vocabulary).
 * Modelled kernel time (src/metrics/kernel-time.ts) is the first column and the first line under
 * the table says how robust its ranking is to the weights.
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { ArchName } from '../../arch/types.js';
import { CompareError, type ComparePlan, type CompareResult, planCompare } from '../../metrics/compare.js';
import { runCsv } from '../../metrics/csv.js';
import { TEXT_ROW_HEADER, tableColumns, textRow, textTable } from '../../metrics/report/format.js';
import { kernelTimeLegend, sameAsRows, wxHoleNotes } from '../../metrics/report/vocabulary.js';
import { type SpreadCompareResult, spreadBound, spreadCompare, spreadCsv } from '../../metrics/spread.js';
import { POLICY_NAMES } from '../../policies/index.js';
import { WORKLOADS } from '../../workloads/registry.js';
import type { Trace } from '../../workloads/trace.js';
import { type CliIo, UsageError } from '../io.js';
import { tableLegend } from '../legend.js';
import { addRunOptions, checkName, parseList } from '../options.js';
import { type PoolThreads, prestartPool, runPlans } from '../pool.js';
import { parseJobs, parseSeeds } from '../seeds.js';
import { loadTraceOption } from './trace.js';

interface CompareCliOptions {
  workload?: string;
  trace?: string;
  csv?: boolean;
  policies?: string[];
  arch: ArchName;
  seed: number;
  seeds?: number[];
  jobs?: number;
  scale: number;
  age?: number;
}

function parseAge(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n >= 0 && n <= 1))
    throw new InvalidArgumentError('the age must be a fraction in [0, 1]');
  return n;
}

export function register(program: Command, io: CliIo): void {
  const cmd = program
    .command('compare')
    .description('run the Linux designs and execmem on one workload, each on an identical fresh machine')
    .option('-w, --workload <name>', `workload (${Object.keys(WORKLOADS).join(', ')})`)
    .option(
      '-t, --trace <file>',
      'replay this trace file instead (execmem trace import; --scale does not apply)',
    )
    .option('--csv', 'print the table as CSV (RFC 4180, raw figures, JSON key names) on stdout')
    .option('-p, --policies <list>', `comma-separated subset of: ${POLICY_NAMES.join(', ')}`, parseList);
  addRunOptions(cmd, { seed: 'seed of the workload and of the machines' })
    .option(
      '--age <fraction>',
      "fragment free memory first (share of 2 MiB blocks broken); default: the workload's machine state (0 but for bpf-aaronlu)",
      parseAge,
    )
    .option(
      '--seeds <list>',
      'run every design on each of these seeds (1-5, 1,3,7): median (min-max)',
      parseSeeds,
    )
    .option(
      '-j, --jobs <n>',
      'threads for the (design, seed) runs, this one included (default: one per CPU; 1 = serial)',
      parseJobs,
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem compare --workload mixed',
        '  $ execmem compare --workload bpf-aaronlu --policies module_alloc,bpf_prog_pack,execmem --age 0.2',
        "  $ execmem compare --workload bpf-churn --arch arm64 --json | jq '.policies[0].metrics'",
        '  $ execmem compare --trace rec.trace.json --csv > rec.csv   # a recorded machine (docs/TRACES.md)',
        '  $ execmem compare --workload trampolines --seeds 1-3   # median (min-max) over three seeds',
        '',
        'Everything runs on the simulated kernel machine; the Linux designs are re-implementations.',
      ].join('\n'),
    )
    .action(async (opts: CompareCliOptions, cmd: Command) => {
      await runCompareCommand(opts, cmd, io);
    });
}

async function runCompareCommand(opts: CompareCliOptions, cmd: Command, io: CliIo): Promise<void> {
  if ((opts.workload === undefined) === (opts.trace === undefined))
    throw new UsageError('give --workload NAME or --trace FILE (one of them)');
  if (opts.csv && io.json) throw new UsageError('--csv and --json: choose one output');
  if (opts.seeds !== undefined && cmd.getOptionValueSource('seed') === 'cli')
    throw new UsageError('--seed and --seeds: choose one');
  if (opts.workload !== undefined) checkName('workload', opts.workload, Object.keys(WORKLOADS));
  const workload = opts.trace !== undefined ? loadTraceOption(opts.trace) : (opts.workload as string);
  for (const p of opts.policies ?? []) checkName('policy', p, POLICY_NAMES);
  const seeds = opts.seeds ?? [opts.seed];
  // The pool's threads load their modules while this thread generates the traces.
  const threads = prestartPool(opts.jobs);
  let results: CompareResult[];
  try {
    results = await runWithProgress(planAll(opts, workload, seeds), opts.jobs, io, threads);
  } finally {
    threads?.close();
  }
  if (opts.seeds === undefined) {
    const result = results[0];
    if (io.json) io.outJson(result);
    else if (opts.csv) io.out(runCsv(result));
    else io.out(formatCompare(result));
    return;
  }
  const spread = spreadCompare(results);
  if (io.json) io.outJson(spread);
  else if (opts.csv) io.out(spreadCsv(spread));
  else io.out(formatSpreadCompare(spread));
}

/** One plan per seed; a bad option is a usage error before any run. */
function planAll(opts: CompareCliOptions, workload: string | Trace, seeds: readonly number[]): ComparePlan[] {
  try {
    return seeds.map((seed) =>
      planCompare({
        workload,
        policies: opts.policies,
        arch: opts.arch,
        seed,
        scale: opts.scale,
        ageFraction: opts.age,
      }),
    );
  } catch (e) {
    if (e instanceof CompareError) throw new UsageError(e.message);
    throw e;
  }
}

/**
 * Run the plans on the pool with one progress task of steps: a tick per finished (design, seed)
 * run, so a log gets a line per run and an interrupted run says which finished.
 */
async function runWithProgress(
  plans: readonly ComparePlan[],
  jobs: number | undefined,
  io: CliIo,
  threads: PoolThreads | null,
) {
  const runCount = plans.reduce((n, p) => n + p.names.length, 0);
  const name = plans[0].trace.name;
  const label =
    plans.length === 1
      ? `${name}: ${runCount} designs`
      : `${name}: ${plans[0].names.length} designs x ${plans.length} seeds`;
  const bar = io.progress(label, runCount, { steps: true });
  try {
    return await runPlans(plans, {
      jobs,
      threads,
      progress(p) {
        if (!p.finished) return;
        bar.tick(1, plans.length === 1 ? p.policy : `${p.policy} seed ${plans[p.job].seed}`);
      },
    });
  } finally {
    bar.done();
  }
}

/**
 * The terminal table: one row per policy with the kernel version each Linux design models,
 * columns and headings in the run's arch's words, the same
 * ones the report uses (src/metrics/report/format.ts, vocabulary.ts). A design that is another
 * on this arch prints "= other on arch" instead of a second copy of its figures. The simulator's
 * own speed is not printed: it is in --json only (simulatorOpsPerSecond), see simulatorSpeedNote.
 */
export function formatCompare(r: CompareResult): string {
  const columns = tableColumns(r);
  const same = sameAsRows(r.arch, r.policies);
  const rows = r.policies.map((p, i) => textRow(p, columns, same[i]));
  const gib = (r.machine.memoryBytes / 1024 ** 3).toFixed(0);
  return [
    `workload ${r.workload}, arch ${r.arch}, seed ${r.seed}, scale ${r.scale}; machine ${gib} GiB, ${r.machine.cpus} CPUs, ` +
      `${r.machine.tlb} TLBs, aged ${r.machine.ageFraction}`,
    ...(r.machine.state === null ? [] : [`machine state chosen by the workload: ${r.machine.state}`]),
    textTable([...TEXT_ROW_HEADER, ...columns.map((c) => c.heading)], rows, TEXT_ROW_HEADER.length),
    '',
    kernelTimeLegend(r.kernelTime.sensitivity.summary),
    ...wxHoleNotes(r.workload, r.policies),
    ...tableLegend(r.arch),
    r.modelledNote,
  ].join('\n');
}

/**
 * The terminal table of a several-seed compare: each figure as `median (min-max)` over the seeds
 * (src/metrics/spread.ts), same columns and legend as the one-seed table.
 */
export function formatSpreadCompare(r: SpreadCompareResult): string {
  const rows = r.policies.map((p) => ({
    ...p,
    metrics: spreadBound(p.metrics, 'median'),
    spread: { min: spreadBound(p.metrics, 'min'), max: spreadBound(p.metrics, 'max') },
  }));
  const columns = tableColumns({ arch: r.arch, policies: rows });
  const same = sameAsRows(r.arch, rows);
  const table = rows.map((p, i) => textRow(p, columns, same[i]));
  const gib = (r.machine.memoryBytes / 1024 ** 3).toFixed(0);
  return [
    `workload ${r.workload}, arch ${r.arch}, seeds ${r.seeds.join(',')}, scale ${r.scale}; machine ${gib} GiB, ` +
      `${r.machine.cpus} CPUs, ${r.machine.tlb} TLBs, aged ${r.machine.ageFraction}`,
    ...(r.machine.state === null ? [] : [`machine state chosen by the workload: ${r.machine.state}`]),
    textTable([...TEXT_ROW_HEADER, ...columns.map((c) => c.heading)], table, TEXT_ROW_HEADER.length),
    '',
    `Each figure: median over ${r.seeds.length} seeds (min-max where the seeds differ); the low median for an even count.`,
    kernelTimeLegend(r.kernelTime.sensitivity.summary),
    // A hole any seed showed is noted (the max over the seeds).
    ...wxHoleNotes(
      r.workload,
      r.policies.map((p) => ({ ...p, metrics: spreadBound(p.metrics, 'max') })),
    ),
    ...tableLegend(r.arch),
    r.modelledNote,
  ].join('\n');
}
