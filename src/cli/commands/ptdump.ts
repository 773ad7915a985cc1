/**
 * `execmem ptdump`: the simulated kernel's page tables after a workload, in the format of Linux's
 * /sys/kernel/debug/page_tables/kernel (arch/x86/mm/dump_pagetables.c on x86-64,
 * arch/arm64/mm/ptdump.c on arm64): one line per run of equal leaves with range, size, flags
 * (with Linux's large-page column: PSE on x86, BLK on arm64) and level, between the arch's
 * section markers. The text itself comes from the machine's ptdump() (src/machine/ptdump.ts);
 * this command chooses the workload, the allocator and the range.
 *
 * Why default to the module area: that is where the designs differ (2 MiB leaves vs 4 KiB runs,
 * ROX vs RW), and the whole kernel dump is long (--all prints it). Without a workload nothing is
 * mapped there yet; the dump then shows the area's markers and says so, rather than printing an
 * empty page. Every option (the policy too) is checked before the machine is built.
 */
import type { Command } from 'commander';
import type { ArchName, VaRange } from '../../arch/types.js';
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
    .option('-p, --policy <name>', 'allocator that serves the workload (with --workload)', 'execmem');
  addRunOptions(cmd, { seed: 'seed of the workload and of KASLR' })
    .option('--all', 'dump the whole kernel address space, not only the module area', false)
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem ptdump                          # after boot: the module area is empty, its markers',
        '  $ execmem ptdump --workload bpf-churn     # 2 MiB leaves (PSE) of BPF code through execmem',
        '  $ execmem ptdump --workload bpf-churn --policy module_alloc --all   # 4K pages, whole kernel',
        '  $ execmem ptdump --workload mixed --arch arm64 --json   # arm64 format (BLK), as JSON',
        '',
        'Lines as Linux prints /sys/kernel/debug/page_tables/kernel; unmapped holes are left out.',
        '--json: {arch, seed, workload, policy, range, mapped, lines, failures}.',
      ].join('\n'),
    )
    .action(async (opts: PtdumpOptions) => {
      await runPtdump(opts, io);
    });
}

/** How the arch's ptdump names the module area (its address_markers[]). */
function areaNames(arch: ArchName): string {
  return arch === 'arm64' ? '"Modules start" to "Modules end"' : '"Modules" to "End Modules"';
}

async function runPtdump(opts: PtdumpOptions, io: CliIo): Promise<void> {
  // Every option first, the policy too (it is the default one's name when no workload runs).
  if (opts.workload !== undefined) checkWorkload(opts.workload);
  checkName('policy', opts.policy, await policyNames());
  const machine = await newMachine(opts.arch, opts.seed);
  let replayed = null;
  if (opts.workload !== undefined) {
    const allocator = await createPolicy(opts.policy, machine, opts.seed);
    replayed = replayWorkload(opts.workload, allocator, opts, io);
  }
  const range: VaRange | undefined = opts.all ? undefined : moduleArea(machine);
  const text = machine.ptdump(range);
  const lines = text.split('\n').filter((l) => l !== '');
  const mapped = lines.some((l) => l.startsWith('0x'));
  if (io.json) {
    io.outJson({
      arch: opts.arch,
      seed: opts.seed,
      workload: opts.workload ?? null,
      policy: opts.workload ? opts.policy : null,
      range: range ? { start: hexAddr(range.start), end: hexAddr(range.end) } : null,
      mapped,
      lines,
      failures: replayed?.failureCount ?? 0,
    });
    return;
  }
  const what = opts.workload ? `after workload ${opts.workload} through ${opts.policy}` : 'after boot';
  const where = range
    ? `module area ${hexAddr(range.start)}-${hexAddr(range.end)} (${areaNames(opts.arch)})`
    : 'whole kernel';
  io.out(`# simulated ${opts.arch} machine (seed ${opts.seed}), ${where}, ${what}`);
  if (replayed && replayed.failureCount > 0) io.out(`# ${replayed.failureCount} workload events failed`);
  if (!mapped) {
    io.out(
      opts.workload === undefined
        ? '# nothing is mapped in the module area yet: no workload ran (try --workload bpf-churn)'
        : '# nothing is mapped in this range',
    );
  }
  io.out(text);
}
