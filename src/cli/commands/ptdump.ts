/**
 * `execmem ptdump`: the simulated kernel's page tables after a workload, in the style of Linux's
 * /sys/kernel/debug/page_tables/kernel (arch/x86/mm/dump_pagetables.c, mm/ptdump.c): one line
 * per run of equal leaves with range, size, leaf level and flags. The text itself comes from the
 * machine's ptdump() (engineer M1); this command chooses the workload, the allocator and the range.
 *
 * Why default to the module area: that is where the designs differ (2 MiB leaves vs 4 KiB runs,
 * ROX vs RW), and the whole kernel dump is long (--all prints it).
 */
import type { Command } from 'commander';
import type { ArchName } from '../../arch/types.js';
import { hexAddr } from '../../base/addr.js';
import type { CliIo } from '../io.js';
import { addRunOptions, checkName } from '../options.js';
import {
  checkWorkload,
  createPolicy,
  moduleArea,
  newMachine,
  policyNames,
  replayWorkload,
} from './shared.js';

interface PtdumpOptions {
  workload?: string;
  policy: string;
  arch: ArchName;
  seed: number;
  scale: number;
  all: boolean;
}

export function register(program: Command, io: CliIo): void {
  const cmd = program
    .command('ptdump')
    .description('print the kernel page tables (module area by default) after a workload, Linux ptdump style')
    .option('-w, --workload <name>', 'workload to run first (default: none, the freshly booted machine)')
    .option('-p, --policy <name>', 'allocator that serves the workload', 'execmem');
  addRunOptions(cmd, { seed: 'seed of the workload and of KASLR' })
    .option('--all', 'dump the whole kernel address space, not only the module area', false)
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem ptdump                                   # module area after boot',
        '  $ execmem ptdump --workload bpf-churn              # after BPF churn through execmem',
        '  $ execmem ptdump --workload bpf-aaronlu --policy module_alloc --all',
        '  $ execmem ptdump --workload mixed --arch arm64 --json',
      ].join('\n'),
    )
    .action(async (opts: PtdumpOptions) => {
      await runPtdump(opts, io);
    });
}

async function runPtdump(opts: PtdumpOptions, io: CliIo): Promise<void> {
  if (opts.workload !== undefined) {
    checkWorkload(opts.workload);
    checkName('policy', opts.policy, await policyNames());
  }
  const machine = await newMachine(opts.arch, opts.seed);
  let replayed = null;
  if (opts.workload !== undefined) {
    const allocator = await createPolicy(opts.policy, machine, opts.seed);
    replayed = replayWorkload(opts.workload, allocator, opts, io);
  }
  const range = opts.all ? undefined : moduleArea(machine);
  const text = machine.ptdump(range);
  if (io.json) {
    io.out(
      JSON.stringify(
        {
          arch: opts.arch,
          seed: opts.seed,
          workload: opts.workload ?? null,
          policy: opts.workload ? opts.policy : null,
          range: range ? { start: hexAddr(range.start), end: hexAddr(range.end) } : null,
          lines: text.split('\n').filter((l) => l !== ''),
          failures: replayed?.failureCount ?? 0,
        },
        null,
        2,
      ),
    );
    return;
  }
  const what = opts.workload ? `after workload ${opts.workload} through ${opts.policy}` : 'after boot';
  const where = range ? `module area ${hexAddr(range.start)}-${hexAddr(range.end)}` : 'whole kernel';
  io.out(`# simulated ${opts.arch} machine (seed ${opts.seed}), ${where}, ${what}`);
  if (replayed && replayed.failureCount > 0) io.out(`# ${replayed.failureCount} workload events failed`);
  io.out(text);
}
