/**
 * `execmem stats`: the allocator's statistics after a workload, /proc-like text or --json.
 *
 * Why it runs our allocator directly (Execmem on a SimBackend) and not a policy adapter: the
 * statistics are execmem's own (per type live/mapped/large-mapped/free/fragmentation and its
 * counters, src/execmem/stats.ts formatStats by engineer A); the Linux designs have no such
 * interface. The workload drives it through the same replay engine as everything else, using the
 * policy registry's 'execmem' adapter when it exposes its Execmem instance.
 */
import type { Command } from 'commander';
import type { ArchName } from '../../arch/types.js';
import { type ExecmemStats, formatStats } from '../../execmem/stats.js';
import { statsCsv } from '../../metrics/csv.js';
import type { ExecAllocator } from '../../policies/types.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';
import { addRunOptions } from '../options.js';
import { checkWorkload, createPolicy, newMachine, replayWorkload } from './shared.js';

interface StatsOptions {
  workload: string;
  arch: ArchName;
  seed: number;
  scale: number;
  csv?: boolean;
}

interface ExecmemLike {
  stats(): ExecmemStats;
}

export function register(program: Command, io: CliIo): void {
  const cmd = program
    .command('stats')
    .description('print execmem allocator statistics after a workload (/proc-like, or --json)')
    .option('-w, --workload <name>', 'workload to run', 'mixed')
    .option('--csv', 'print every figure as CSV (table,name,figure,value; RFC 4180) on stdout');
  addRunOptions(cmd, { seed: 'seed of the workload and of KASLR' })
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem stats                        # per-pool table after the mixed workload',
        "  $ execmem stats --workload bpf-churn --json | jq .stats.types.bpf   # the bpf type's figures",
        '  $ execmem stats --arch arm64 --scale 0.1',
        '',
        '--json: {workload, arch, seed, failures, stats}; stats is Execmem.stats() (types, pools, counters).',
      ].join('\n'),
    )
    .action(async (opts: StatsOptions) => {
      await runStats(opts, io);
    });
}

async function runStats(opts: StatsOptions, io: CliIo): Promise<void> {
  checkWorkload(opts.workload);
  if (opts.csv && io.json) throw new UsageError('--csv and --json: choose one output');
  const machine = await newMachine(opts.arch, opts.seed);
  const allocator = (await createPolicy('execmem', machine, opts.seed)) as ExecAllocator & {
    execmem?: ExecmemLike;
  };
  if (!allocator.execmem || typeof allocator.execmem.stats !== 'function') {
    throw new CliFailure("the 'execmem' policy adapter does not expose its Execmem instance (.execmem) yet");
  }
  const result = replayWorkload(opts.workload, allocator, opts, io);
  const stats = allocator.execmem.stats();
  if (io.json) {
    io.outJson({
      workload: opts.workload,
      arch: opts.arch,
      seed: opts.seed,
      failures: result.failureCount,
      stats,
    });
    return;
  }
  if (opts.csv) {
    io.out(statsCsv(stats));
    return;
  }
  io.out(`# execmem on a simulated ${opts.arch} machine (seed ${opts.seed}) after workload ${opts.workload}`);
  if (result.failureCount > 0) io.out(`# ${result.failureCount} workload events failed`);
  io.out(formatStats(stats));
}
