/**
 * `execmem modules load`: load real Linux kernel modules (.ko) through one allocator design on
 * the simulated machine, and report what happened.
 *
 * Why through a policy on a fresh simulated machine: the point is to compare designs on the
 * kernel's own biggest workload, so the allocator is picked by the same registry `compare`
 * uses, and the kernel image is placed where that machine's KASLR put it (kernel exports are
 * shifted by machine.kernelTextStart - link address), so rel32 reach is checked for real.
 * Logic: src/workloads/dataset/load.ts; this file parses options and prints.
 *
 * Every option is checked before the dataset is touched (a misspelt policy is a usage error,
 * exit 2, even when no dataset is fetched), and the report names the package and version it
 * loaded and says when that is not the kernel of the shipped table (data/debian-modules.json,
 * which the debian-modules workload and the report use). A --dir tree is only read: its index is
 * kept in the cache.
 */
import type { Command } from 'commander';
import { Rng } from '../../base/rng.js';
import { toSigned } from '../../consumers/modules/image.js';
import { MOD_MEM_TYPES } from '../../consumers/modules/layout.js';
import { type FetchReport, type FetchTarget, runFetchModel } from '../../metrics/fetch-model.js';
import { DatasetError, datasetKernelSymbols, dependencyOrder } from '../../workloads/dataset/dataset.js';
import { datasetArch } from '../../workloads/dataset/flavour.js';
import { loadDatasetModules, type ModulesLoadReport } from '../../workloads/dataset/load.js';
import { readModuleTable } from '../../workloads/dataset/table.js';
import { DEFAULT_MODULE_TABLE } from '../../workloads/dataset/workload.js';
import { datasetLocation, packageFacts, packageLabel, tableDifference } from '../dataset-cache.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';
import { checkName, parsePositiveInt, parseSeed } from '../options.js';
import { flavourSuffix, openLocated, requireRoot } from './dataset.js';
import { createPolicy, newMachine, policyNames } from './shared.js';

interface LoadOpts {
  fetchCalls: number;
  all?: boolean;
  dir?: string;
  cacheDir?: string;
  policy: string;
  arch?: string;
  flavour?: string;
  seed: number;
  init: boolean;
}

/** The load report plus what the allocator and the simulated machine counted. */
export interface ModulesCliReport extends ModulesLoadReport {
  readonly allocatorCounters: Readonly<Record<string, number>> | null;
  readonly machineCounters: Readonly<Record<string, number>>;
  readonly wxViolations: number;
  /** The instruction-fetch model run over the loaded modules' real functions (when asked). */
  readonly fetch: (FetchReport & { readonly functions: number }) | null;
  /** The package loaded: name, Debian version (from the kept .deb) and where it is. */
  readonly dataset: {
    readonly packageName: string | null;
    readonly version: string | null;
    readonly root: string;
    readonly indexDir: string;
  };
  /** The shipped table's kernel, and a note when it is not the one loaded here. */
  readonly shippedTable: { readonly packageName: string | null; readonly kernelRelease: string };
  readonly tableNote: string | null;
}

/** A corrupt or unreadable dataset file (named, with its field) fails the command: exit 1. */
function datasetStep<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DatasetError) throw new CliFailure(e.message);
    throw e;
  }
}

export async function runModulesLoad(names: string[], opts: LoadOpts, io: CliIo): Promise<ModulesCliReport> {
  if (!opts.all && names.length === 0) throw new UsageError('name modules to load, or pass --all');
  if (opts.all && names.length > 0) throw new UsageError('--all and module names exclude each other');
  checkName('policy', opts.policy, [...(await policyNames()), 'all']);
  if (opts.policy === 'all') throw new UsageError("--policy all is handled by 'modules load' itself");
  const loc = datasetLocation({ ...opts, flavour: flavourSuffix(opts.arch, opts.flavour) });
  const located = requireRoot(loc);
  const index = datasetStep(() => openLocated(located, io));
  const kernel = datasetStep(() => datasetKernelSymbols(index, located.indexDir));
  const facts = packageFacts(index, { cacheDir: loc.cacheDir, indexDir: located.indexDir });
  const table = datasetStep(() => readModuleTable(DEFAULT_MODULE_TABLE));
  const known = new Set(index.modules.map((m) => m.name));
  const unknown = names.filter((n) => !known.has(n.replaceAll('-', '_')));
  if (unknown.length > 0)
    throw new UsageError(`unknown module(s): ${unknown.join(', ')} (not in ${index.root})`);
  const arch = datasetStep(() => datasetArch(index));
  const machine = await newMachine(arch, opts.seed);
  const allocator = await createPolicy(opts.policy, machine, opts.seed);
  const textStart = (machine as { kernelTextStart?: number }).kernelTextStart;
  const image = machine.arch.layout.kernelImage;
  const offset = textStart === undefined ? 0 : textStart - image.textStart;
  // arm64: a module's per-CPU reservation is an address in the kernel image's per-CPU chunk
  // (no zero-based per-CPU section there); modelled as the end of the simulated image.
  const percpuBaseAddr =
    arch === 'arm64'
      ? toSigned((textStart ?? image.textStart) + image.textBytes + image.rodataBytes + image.dataBytes)
      : 0;
  const requested = opts.all ? undefined : names.map((n) => n.replaceAll('-', '_'));
  // Named modules load with their depends= first: the bar counts them all.
  const total = requested
    ? datasetStep(() => dependencyOrder(index, requested)).length
    : index.modules.length;
  const bar = io.progress('loading modules', total);
  const { report, loader } = datasetStep(() =>
    loadDatasetModules(index, kernel.withKaslrOffset(offset), allocator, {
      names: requested,
      init: opts.init,
      arch,
      percpuBaseAddr,
      onModule: () => bar.tick(),
    }),
  );
  bar.done();
  let fetch: ModulesCliReport['fetch'] = null;
  if (opts.fetchCalls > 0) {
    const fns = loader.list().flatMap((m) => m.functions);
    if (fns.length === 0) throw new CliFailure('no functions loaded to run the fetch model on');
    const r = runFetchModel(machine as unknown as FetchTarget, fns, {
      calls: opts.fetchCalls,
      exponent: 1,
      rng: new Rng(opts.seed),
    });
    fetch = { ...r, functions: fns.length };
  }
  const counters = (allocator as { policyCounters?: () => Readonly<Record<string, number>> }).policyCounters;
  return {
    ...report,
    allocatorCounters: typeof counters === 'function' ? counters.call(allocator) : null,
    machineCounters: { ...machine.counters },
    wxViolations: machine.wxViolationCount(),
    fetch,
    dataset: {
      packageName: facts.packageName,
      version: facts.version,
      root: facts.root,
      indexDir: facts.indexDir,
    },
    shippedTable: { packageName: table.packageName, kernelRelease: table.kernelRelease },
    tableNote: tableDifference(facts, table),
  };
}

function human(r: ModulesCliReport): string {
  const lines = [
    `package ${packageLabel({ ...r.dataset, kernelRelease: r.kernelRelease })} from ${r.dataset.root}`,
    `kernel ${r.kernelRelease}: ${r.kernelExports} exports from ${r.symbolsSource}, KASLR offset 0x${r.kaslrOffsetBytes.toString(16)}`,
    `allocator ${r.allocator}: ${r.loaded}/${r.requested} modules loaded, ${r.failed.length} failed, ${r.unresolvedSymbols} unresolved symbols, ${r.relocOverflows} relocation overflows`,
    `PLT entries emitted (${r.arch}): ${r.pltEntries}`,
    `relocations: ${Object.entries(r.relocsByType)
      .map(([t, n]) => `${t} ${n}`)
      .join(', ')}`,
    `bytes requested: ${MOD_MEM_TYPES.map((t) => `${t} ${r.requestedBytesByMemType[t]}`).join(', ')}`,
    `bytes live after init: ${MOD_MEM_TYPES.filter((t) => r.liveBytesByMemType[t] > 0)
      .map((t) => `${t} ${r.liveBytesByMemType[t]}`)
      .join(', ')}`,
    `allocator usage: live ${r.usage.liveBytes} B, mapped ${r.usage.mappedBytes} B; per-CPU ${r.percpu.usedBytes}/${r.percpu.reserveBytes} B`,
    `machine: ${r.wxViolations} W^X violations, ${r.machineCounters.shootdowns ?? 0} shootdowns, ${r.machineCounters.ipis ?? 0} IPIs, ${r.machineCounters.splitsDirectMap2M ?? 0}+${r.machineCounters.splitsDirectMap1G ?? 0} direct-map 2M+1G splits`,
    `load time ${r.loadMs.toFixed(0)} ms (${r.modulesPerSecond.toFixed(0)} modules/s, this process's wall clock)`,
  ];
  if (r.fetch) {
    const f = r.fetch;
    lines.push(
      `fetch model: ${f.calls} Zipf(1) calls over ${f.functions} real functions: ${f.missesPerMillion.toFixed(1)} iTLB misses per million fetches (infinite-TLB lower bound ${f.lowerBoundPerMillion.toFixed(1)}), ${f.faults} faulting fetches`,
    );
  }
  if (r.tableNote !== null) lines.push(`note: ${r.tableNote}`);
  for (const f of r.failed) lines.push(`  FAILED ${f.name} (${f.file}, ${f.source}): ${f.reason}`);
  return lines.join('\n');
}

export function register(program: Command, io: CliIo): void {
  const mods = program
    .command('modules')
    .description('load real Linux kernel modules (.ko) through an allocator');
  mods
    .command('load [names...]')
    .description(
      'load modules (with their depends=) through a policy on a fresh simulated machine; init each',
    )
    .option('--all', 'every module of the dataset, in dependency order')
    .option('--dir <path>', 'dataset root (an extracted linux-image package; default: the fetched one)')
    .option('--cache-dir <path>', 'cache directory (default $EXECMEM_CACHE_DIR or ~/.cache/execmem)')
    .option('--arch <arch>', 'which fetched package: amd64 (default) or arm64')
    .option('--flavour <name>', 'which fetched package: cloud (default), generic, rt')
    .option(
      '-p, --policy <name>',
      "allocator design (see execmem compare --help), or 'all': every design",
      'execmem',
    )
    .option('-s, --seed <n>', 'machine seed (KASLR placement)', parseSeed, 1)
    .option('--no-init', 'do not run init (keep init memory, leave ro_after_init writable)')
    .option(
      '--fetch-calls <n>',
      'then run the instruction-fetch model: n calls over the real functions (0 = off)',
      (v) => parsePositiveInt(v, 100_000_000),
      0,
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem modules load --all                                  # every module, through execmem',
        '  $ execmem modules load xfs btrfs --policy module_alloc --json | jq .loaded',
        '',
        "Needs the package: 'execmem dataset fetch' first (or --dir). --json: the load report, with",
        'allocatorCounters, machineCounters, wxViolations, fetch, dataset and tableNote.',
      ].join('\n'),
    )
    .action(async (names: string[], opts: LoadOpts) => {
      if (opts.policy !== 'all') {
        const r = await runModulesLoad(names, opts, io);
        if (io.json) io.outJson(r);
        else io.out(human(r));
        if (r.failed.length > 0) throw new CliFailure(`${r.failed.length} module(s) failed to load`);
        return;
      }
      // Every design on its own fresh machine, same seed: one report each, in registry order.
      const reports: ModulesCliReport[] = [];
      for (const policy of await policyNames()) {
        const r = await runModulesLoad(names, { ...opts, policy }, io);
        reports.push(r);
        if (!io.json) io.out(`== ${policy}\n${human(r)}`);
      }
      if (io.json) io.outJson(reports);
      else {
        io.out(
          '\nsummary: design, loaded/requested, failed, unresolved symbols, relocation overflows, PLT entries',
        );
        for (const r of reports)
          io.out(
            `  ${r.allocator}: ${r.loaded}/${r.requested}, ${r.failed.length}, ${r.unresolvedSymbols}, ${r.relocOverflows}, ${r.pltEntries}`,
          );
      }
      const bad = reports.filter((r) => r.failed.length > 0);
      if (bad.length > 0)
        throw new CliFailure(`modules failed to load under ${bad.map((r) => r.allocator).join(', ')}`);
    });
}
