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
import { type Command, InvalidArgumentError } from 'commander';
import type { ArchName } from '../../arch/types.js';
import { CompareError, type CompareResult, runCompare } from '../../metrics/compare.js';
import { runCsv } from '../../metrics/csv.js';
import { TEXT_ROW_HEADER, tableColumns, textRow, textTable } from '../../metrics/report/format.js';
import { kernelTimeLegend, sameAsRows, wxHoleNotes } from '../../metrics/report/vocabulary.js';
import { POLICY_NAMES } from '../../policies/index.js';
import { WORKLOADS } from '../../workloads/registry.js';
import { type CliIo, UsageError } from '../io.js';
import { tableLegend } from '../legend.js';
import { addRunOptions, checkName, parseList } from '../options.js';
import { loadTraceOption } from './trace.js';

interface CompareCliOptions {
  workload?: string;
  trace?: string;
  csv?: boolean;
  policies?: string[];
  arch: ArchName;
  seed: number;
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
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem compare --workload mixed',
        '  $ execmem compare --workload bpf-aaronlu --policies module_alloc,bpf_prog_pack,execmem --age 0.2',
        "  $ execmem compare --workload bpf-churn --arch arm64 --json | jq '.policies[0].metrics'",
        '  $ execmem compare --trace rec.trace.json --csv > rec.csv   # a recorded machine (docs/TRACES.md)',
        '',
        'Everything runs on the simulated kernel machine; the Linux designs are re-implementations.',
      ].join('\n'),
    )
    .action((opts: CompareCliOptions) => {
      runCompareCommand(opts, io);
    });
}

function runCompareCommand(opts: CompareCliOptions, io: CliIo): void {
  if ((opts.workload === undefined) === (opts.trace === undefined))
    throw new UsageError('give --workload NAME or --trace FILE (one of them)');
  if (opts.csv && io.json) throw new UsageError('--csv and --json: choose one output');
  if (opts.workload !== undefined) checkName('workload', opts.workload, Object.keys(WORKLOADS));
  const workload = opts.trace !== undefined ? loadTraceOption(opts.trace) : (opts.workload as string);
  for (const p of opts.policies ?? []) checkName('policy', p, POLICY_NAMES);
  let bar: ReturnType<CliIo['progress']> | null = null;
  let current = -1;
  let last = 0;
  let result: CompareResult;
  try {
    result = runCompare({
      workload,
      policies: opts.policies,
      arch: opts.arch,
      seed: opts.seed,
      scale: opts.scale,
      ageFraction: opts.age,
      progress(p) {
        if (p.policyIndex !== current) {
          bar?.done();
          bar = io.progress(`${p.policy} (${p.policyIndex + 1}/${p.policyCount})`, p.eventsTotal);
          current = p.policyIndex;
          last = 0;
        }
        bar?.tick(p.eventsDone - last);
        last = p.eventsDone;
      },
    });
  } catch (e) {
    if (e instanceof CompareError) throw new UsageError(e.message);
    throw e;
  } finally {
    (bar as ReturnType<CliIo['progress']> | null)?.done();
  }
  if (io.json) io.outJson(result);
  else if (opts.csv) io.out(runCsv(result));
  else io.out(formatCompare(result));
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
