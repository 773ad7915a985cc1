/**
 * `execmem ftrace attach`: register an ftrace ops on real functions of real Debian modules, as
 * register_ftrace_function() does on x86, through one allocator design on a fresh simulated
 * machine, and report what it cost; `--detach` then unregisters it and checks the round trip.
 *
 * Why a command of its own: the ftrace consumer (src/consumers/ftrace) is the place where the
 * allocator's `ftrace` type meets live patching of module text, and its costs (one trampoline per
 * ops, three text_pokes per site, three sync_core IPI rounds per batch) are easiest to check on
 * one attach. The modules come from the dataset (`execmem dataset fetch`), loaded with their
 * depends= through the loader with ftrace_module_init's NOPs; everything else is the library.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { Ftrace, FtraceError, type FtraceOps, X86_NOP5 } from '../../consumers/ftrace/index.js';
import { ModuleLoadError, ModuleLoader } from '../../consumers/modules/loader.js';
import { createMachine } from '../../machine/machine.js';
import type { MachineCounters } from '../../machine/types.js';
import { POLICY_NAMES, policyByName } from '../../policies/index.js';
import {
  DatasetError,
  datasetKernelSymbols,
  dependencyOrder,
  readModuleFile,
} from '../../workloads/dataset/dataset.js';
import { datasetLocation } from '../dataset-cache.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';
import { checkName, parseList, parseSeed } from '../options.js';
import { openLocated, requireRoot } from './dataset.js';

interface AttachOpts {
  modules: string[];
  functions: string;
  policy: string;
  seed: number;
  regs?: boolean;
  detach?: boolean;
  dir?: string;
  cacheDir?: string;
}

/** Machine counters an attach or detach moves, as deltas. */
const COST_KEYS = [
  'pokes',
  'pokeSteps',
  'localFlushes',
  'shootdowns',
  'ipis',
  'syncCores',
  'syncCoreIpis',
  'cpaCalls',
  'vmallocs',
  'vfrees',
] as const satisfies readonly (keyof MachineCounters)[];
type Costs = Record<(typeof COST_KEYS)[number], number>;

export interface FtraceStepReport {
  readonly sites: number;
  readonly batches: number;
  readonly syncs: number;
  readonly writes: number;
  readonly machine: Costs;
}

export interface FtraceCliReport {
  readonly kernelRelease: string;
  readonly allocator: string;
  readonly cpus: number;
  readonly modulesLoaded: readonly string[];
  readonly sitesNoppedAtLoad: number;
  readonly ops: {
    readonly name: string;
    readonly template: 'ftrace_caller' | 'ftrace_regs_caller';
    readonly trampolineVa: string;
    readonly trampolineBytes: number;
    readonly functions: number;
  };
  readonly attach: FtraceStepReport;
  readonly detach:
    | (FtraceStepReport & { readonly sitesRestored: number; readonly trampolineFreed: boolean })
    | null;
  readonly wxViolations: number;
}

function costsSince(before: MachineCounters, after: MachineCounters): Costs {
  return Object.fromEntries(COST_KEYS.map((k) => [k, after[k] - before[k]])) as Costs;
}

function step<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof FtraceError || e instanceof DatasetError || e instanceof ModuleLoadError)
      throw new CliFailure(e.message);
    throw e;
  }
}

export async function runFtraceAttach(opts: AttachOpts, io: CliIo): Promise<FtraceCliReport> {
  const index = step(() => openLocated(requireRoot(datasetLocation(opts)), io));
  const known = new Set(index.modules.map((m) => m.name));
  const wanted = opts.modules.map((n) => n.replaceAll('-', '_'));
  const unknown = wanted.filter((n) => !known.has(n));
  if (unknown.length > 0)
    throw new UsageError(`unknown module(s): ${unknown.join(', ')} (not in ${index.root})`);
  checkName('policy', opts.policy, POLICY_NAMES);
  const machine = createMachine({ arch: 'x86_64', seed: opts.seed });
  const allocator = policyByName(opts.policy).create(machine, opts.seed);
  const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
  const kernel = step(() => datasetKernelSymbols(index)).withKaslrOffset(offset);
  const ftrace = step(() => new Ftrace({ allocator, machine, kernel }));
  const loader = new ModuleLoader({ allocator: ftrace.loaderAllocator, kernel });
  const order = step(() => dependencyOrder(index, wanted));
  const byName = new Map(index.modules.map((m) => [m.name, m]));
  const bar = io.progress('loading modules', order.length);
  for (const name of order) {
    step(() => {
      ftrace.loadModule(loader, readModuleFile(join(index.root, byName.get(name)!.path)), name);
      ftrace.initModule(loader, name);
    });
    bar.tick();
  }
  bar.done();
  const c0 = { ...machine.counters };
  const usage0 = allocator.usage().liveBytes;
  const a = step(() =>
    ftrace.attach({ modules: wanted, functions: opts.functions, saveRegs: opts.regs === true }),
  );
  const c1 = { ...machine.counters };
  const ops: FtraceOps = a.ops;
  let detach: FtraceCliReport['detach'] = null;
  if (opts.detach) {
    const d = step(() => ftrace.detach(ops));
    const nop = X86_NOP5 as Uint8Array;
    const restored = ops.records.filter((r) => ftrace.siteBytes(r).every((x, i) => x === nop[i])).length;
    detach = {
      sites: d.sites,
      batches: d.batches,
      syncs: d.syncs,
      writes: d.writes,
      machine: costsSince(c1, machine.counters),
      sitesRestored: restored,
      trampolineFreed: allocator.usage().liveBytes === usage0,
    };
  }
  return {
    kernelRelease: index.kernelRelease,
    allocator: allocator.name,
    cpus: machine.cpuCount,
    modulesLoaded: order,
    sitesNoppedAtLoad: ftrace.stats().sitesNoppedAtLoad,
    ops: {
      name: ops.name,
      template: ops.saveRegs ? 'ftrace_regs_caller' : 'ftrace_caller',
      trampolineVa: `0xffff${ops.imageVa.toString(16).padStart(12, '0')}`,
      trampolineBytes: ops.imageBytes,
      functions: ops.records.length,
    },
    attach: {
      sites: a.sites,
      batches: a.batches,
      syncs: a.syncs,
      writes: a.writes,
      machine: costsSince(c0, c1),
    },
    detach,
    wxViolations: machine.wxViolationCount(),
  };
}

function costLine(s: FtraceStepReport): string {
  const m = s.machine;
  return (
    `${s.sites} sites in ${s.batches} text_poke_bp batches: ${s.writes} writes, ${s.syncs} syncs; machine: ` +
    `${m.pokes} pokes (${m.pokeSteps} steps), ${m.localFlushes} local flushes, ${m.shootdowns} shootdowns, ` +
    `${m.syncCores} sync_core rounds (${m.syncCoreIpis} IPIs), ${m.cpaCalls} set_memory calls`
  );
}

function human(r: FtraceCliReport): string {
  const lines = [
    `kernel ${r.kernelRelease}, allocator ${r.allocator}, ${r.cpus} CPUs: ${r.modulesLoaded.length} modules loaded with depends=, ${r.sitesNoppedAtLoad} call sites made NOP5 at load`,
    `ops ${r.ops.name}: ${r.ops.template} trampoline of ${r.ops.trampolineBytes} B at ${r.ops.trampolineVa}, ${r.ops.functions} functions`,
    `attach: ${costLine(r.attach)}`,
  ];
  if (r.detach) {
    lines.push(`detach: ${costLine(r.detach)}`);
    lines.push(
      `round trip: ${r.detach.sitesRestored}/${r.detach.sites} sites back to the NOP, trampoline ${r.detach.trampolineFreed ? 'freed' : 'NOT freed'}`,
    );
  }
  lines.push(`W^X violations: ${r.wxViolations}`);
  return lines.join('\n');
}

export function register(program: Command, io: CliIo): void {
  const ft = program
    .command('ftrace')
    .description('attach ftrace ops to real module functions through an allocator (x86 live patching)');
  ft.command('attach')
    .description(
      'load modules (with depends=), then register an ftrace ops on the matching functions: one trampoline, every call site patched with text_poke_bp',
    )
    .requiredOption(
      '--modules <list>',
      'comma-separated modules whose functions the filter covers',
      parseList,
    )
    .requiredOption('--functions <glob>', "function glob, as set_ftrace_filter takes it ('*', '?', '[...]')")
    .option('-p, --policy <name>', 'allocator design (see execmem compare --help)', 'execmem')
    .option('-s, --seed <n>', 'machine seed (KASLR placement)', parseSeed, 1)
    .option('--regs', 'FTRACE_OPS_FL_SAVE_REGS: a ftrace_regs_caller trampoline')
    .option('--detach', 'then unregister the ops and check every site is the NOP again')
    .option('--dir <path>', 'dataset root (an extracted linux-image package; default: the fetched one)')
    .option('--cache-dir <path>', 'cache directory')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        "  $ execmem ftrace attach --modules nf_conntrack,nf_tables --functions 'nf_*' --detach",
        "  $ execmem ftrace attach --modules xfs --functions '*' --policy execmem-rox --json",
      ].join('\n'),
    )
    .action(async (opts: AttachOpts) => {
      const r = await runFtraceAttach(opts, io);
      io.out(io.json ? JSON.stringify(r) : human(r));
      if (r.detach && (r.detach.sitesRestored !== r.detach.sites || !r.detach.trampolineFreed))
        throw new CliFailure('the detach did not restore every site or free the trampoline');
    });
}
