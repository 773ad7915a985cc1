/**
 * `execmem report` (= `npm start`): the main job. Runs every policy on every workload through the
 * compare harness (src/metrics/compare.ts, engineer P), including `debian-modules` (the section
 * sizes of every module of a Debian kernel package, measured from the real .ko files and shipped
 * as data/debian-modules.json by engineer E), and writes report/index.html + report/summary.md.
 * It says whether the package itself has been fetched (needed only for `execmem modules load`,
 * which loads the real bytes with their relocations) and how to fetch it.
 *
 * Why the work is delegated: the numbers must come from exactly the code `execmem compare` runs,
 * so a table on the report page can be reproduced with one compare command. This file only
 * chooses the workloads, shows progress, converts the harness's result into the renderer's
 * `ReportData` (checked there) and writes files. Nothing is computed or defaulted here that the
 * harness did not measure: a missing metric is an error, not a zero.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { ARCHES, type ArchName } from '../../arch/index.js';
import { SZ_2M, toVa } from '../../base/addr.js';
import {
  CompareError,
  type ComparePlan,
  type CompareResult,
  type OccupancyMap,
  planCompare,
} from '../../metrics/compare.js';
import type { ModuleLoadRow, ModuleLoads } from '../../metrics/consumers.js';
import { csvFileName, runCsv } from '../../metrics/csv.js';
import {
  type AreaMap,
  METRIC_KEYS,
  type PolicyMetrics,
  type PolicyRun,
  type ReportData,
  type WorkloadRun,
} from '../../metrics/report/types.js';
import {
  SPREAD_NOTE,
  type SpreadCompareResult,
  spreadBound,
  spreadCompare,
  spreadCsv,
} from '../../metrics/spread.js';
import { WORKLOADS } from '../../workloads/registry.js';
import type { Trace } from '../../workloads/trace.js';
import { datasetLocation, reportDatasetNote } from '../dataset-cache.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';
import { tableLegend } from '../legend.js';
import { addRunOptions, checkName, parseList } from '../options.js';
import { checkOutputDir } from '../paths.js';
import { prestartPool, runPlans } from '../pool.js';
import { parseJobs, parseSeeds } from '../seeds.js';
import { loadSubsystem } from '../subsystems.js';
import { flavourSuffix, requireRoot } from './dataset.js';
import { policyNames } from './shared.js';
import { loadTraceOption } from './trace.js';

interface ReportOptions {
  out: string;
  workloads?: string[];
  policies?: string[];
  arch: ArchName;
  seed: number;
  seeds?: number[];
  jobs?: number;
  scale: number;
  modules: boolean;
  trace: string[];
  csv?: boolean;
  loadModules?: boolean;
}

export const DEBIAN_WORKLOAD = 'debian-modules';

export function register(program: Command, io: CliIo): void {
  const cmd = program
    .command('report')
    .description('run every policy on every workload and write report/index.html and report/summary.md')
    .option('-o, --out <dir>', 'directory to write index.html and summary.md into', 'report')
    .option('-w, --workloads <list>', 'comma-separated workloads (default: all)', parseList)
    .option('-p, --policies <list>', 'comma-separated policies (default: all)', parseList);
  addRunOptions(cmd, {
    seed: 'seed of the workloads and of KASLR',
    scale: 'workload size factor (1 = default; tests use small values)',
  })
    .option('--no-modules', 'leave out the debian-modules workload')
    .option(
      '-t, --trace <file>',
      'add a trace file (execmem trace import) as a workload; repeatable; without --workloads only the traces run',
      (value: string, previous: string[]) => [...previous, value],
      [],
    )
    .option('--csv', 'also write each workload table as <workload>.csv next to index.html (RFC 4180)')
    .option(
      '--load-modules',
      "also load every module of the fetched package of the report's arch through each design (modules load --all; needs dataset fetch)",
    )
    .option(
      '--seeds <list>',
      'run every design on each of these seeds (1-5, 1,3,7): median (min-max)',
      parseSeeds,
    )
    .option(
      '-j, --jobs <n>',
      'threads for the (workload, design, seed) runs, this one included (default: one per CPU)',
      parseJobs,
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem report                         # everything, into ./report/',
        '  $ execmem report --scale 0.01 --out /tmp/execmem-report --no-modules   # a quick small run',
        '  $ execmem report --workloads mixed,bpf-churn --policies execmem,bpf_prog_pack',
        '  $ execmem report --trace rec.trace.json --csv   # a recorded machine (docs/TRACES.md)',
        '',
        'debian-modules uses the section sizes of a real Debian kernel package (shipped table);',
        '`execmem dataset fetch` downloads the package itself for `execmem modules load`.',
        '--json: {html, markdown, generatedAt, runs, notes, command}; runs[i].policies[j].metrics are',
        'the figures of the tables (with --seeds, each is {median, min, max, perSeed}).',
        '--out is checked before the run: it must be a writable directory.',
      ].join('\n'),
    )
    .action(async (opts: ReportOptions, cmd: Command) => {
      if (opts.seeds !== undefined && cmd.getOptionValueSource('seed') === 'cli')
        throw new UsageError('--seed and --seeds: choose one');
      await runReport(opts, io);
    });
}

async function runReport(opts: ReportOptions, io: CliIo): Promise<void> {
  // Before any work: a bad --out found after the run wastes it (and /proc/... never returns).
  const outDir = checkOutputDir('--out', opts.out);
  // --load-modules needs a fetched package of the report's arch: checked before any work.
  if (opts.loadModules) moduleLoadsArch(opts.arch);
  const registered = Object.keys(WORKLOADS);
  const known = registered.includes(DEBIAN_WORKLOAD) ? registered : [...registered, DEBIAN_WORKLOAD];
  const notes: string[] = [];
  // Trace files are read and checked first: a bad one is a usage error before any work.
  const traces = opts.trace.map(loadTraceOption);
  let workloads = opts.workloads ?? (traces.length > 0 ? [] : known);
  for (const w of workloads) checkName('workload', w, known);
  const labels = [...workloads, ...traces.map((t) => t.name)];
  const twice = labels.find((w, i) => labels.indexOf(w) !== i);
  if (twice !== undefined)
    throw new UsageError(`two workloads of this report are named '${twice}' (a trace's name field)`);
  if (!opts.modules) {
    workloads = workloads.filter((w) => w !== DEBIAN_WORKLOAD);
    notes.push('The debian-modules workload was left out (--no-modules).');
  }
  const knownPolicies = await policyNames();
  for (const p of opts.policies ?? []) checkName('policy', p, knownPolicies);
  if (workloads.includes(DEBIAN_WORKLOAD)) notes.push(...(await debianNotes()));
  const seeds = opts.seeds ?? [opts.seed];
  // The pool's threads load their modules while this thread generates the traces.
  const threads = prestartPool(opts.jobs);
  let plans: ComparePlan[];
  let results: CompareResult[];
  try {
    const sources: (string | Trace)[] = [];
    for (const source of [...workloads, ...traces])
      sources.push(typeof source === 'string' ? await workloadSource(source, registered, opts) : source);
    try {
      plans = sources.flatMap((workload) =>
        seeds.map((seed) =>
          planCompare({ workload, policies: opts.policies, arch: opts.arch, seed, scale: opts.scale }),
        ),
      );
    } catch (e) {
      if (e instanceof CompareError) throw new UsageError(e.message);
      throw e;
    }
    const planned = plans;
    // One tick per finished (workload, design, seed) run, on the worker pool (../pool.ts).
    const runCount = plans.reduce((n, p) => n + p.names.length, 0);
    const bar = io.progress('report', runCount, { steps: true });
    try {
      results = await runPlans(plans, {
        jobs: opts.jobs,
        threads,
        progress: (p) => {
          if (!p.finished) return;
          const plan = planned[p.job];
          const seed = seeds.length > 1 ? ` seed ${plan.seed}` : '';
          bar.tick(1, `${plan.trace.name}/${p.policy}${seed}`);
        },
      });
    } finally {
      bar.done();
    }
  } finally {
    threads?.close();
  }
  const runs: WorkloadRun[] = [];
  const csvTables: { workload: string; text: string }[] = [];
  const spreads: (SpreadCompareResult | null)[] = [];
  const sourceCount = plans.length / seeds.length; // the plans are the sources x the seeds
  for (let i = 0; i < sourceCount; i++) {
    const ofSource = results.slice(i * seeds.length, (i + 1) * seeds.length);
    if (opts.seeds === undefined) {
      runs.push(toWorkloadRun(ofSource[0]));
      spreads.push(null);
      csvTables.push({ workload: ofSource[0].workload, text: runCsv(ofSource[0]) });
    } else {
      const spread = spreadCompare(ofSource);
      runs.push(toSpreadWorkloadRun(spread));
      spreads.push(spread);
      csvTables.push({ workload: spread.workload, text: spreadCsv(spread) });
    }
  }
  const modelledNote = results[0]?.modelledNote ?? '';
  if (opts.seeds !== undefined) notes.push(SPREAD_NOTE);
  if (modelledNote !== '') notes.unshift(modelledNote);
  const data: ReportData = {
    generatedAt: new Date().toISOString(),
    runs,
    notes,
    command: reproduceCommand(opts),
    ...(await consumersFor(workloads, opts, plans)),
    ...(opts.loadModules ? { moduleLoads: await moduleLoads(opts, knownPolicies, io) } : {}),
  };
  // Loaded here, not at the top: ECharts takes about a second to import, which every other
  // `execmem` invocation (help, usage errors) should not pay.
  const { renderTerminalSummary, writeReport } = await import('../../metrics/report/index.js');
  const written = writeReport(data, outDir);
  const csv = opts.csv ? writeCsvTables(csvTables, dirname(written.htmlPath)) : [];
  if (io.json) {
    const files = { html: written.htmlPath, markdown: written.markdownPath, ...(opts.csv ? { csv } : {}) };
    io.outJson({ ...files, ...data, runs: jsonRuns(data.runs, spreads) });
    return;
  }
  io.out(renderTerminalSummary(data));
  io.out(tableLegend(opts.arch).join('\n'));
  for (const note of notes) io.out(`note: ${note}`);
  io.out(`\nreport: ${written.htmlPath}\nsummary: ${written.markdownPath}`);
  for (const path of csv) io.out(`csv: ${path}`);
}

/**
 * `report --csv`: one RFC 4180 file per workload table, next to index.html (src/metrics/csv.ts;
 * with --seeds, one record per design and figure: src/metrics/spread.ts spreadCsv).
 */
function writeCsvTables(tables: readonly { workload: string; text: string }[], dir: string): string[] {
  return tables.map((table) => {
    const path = join(dir, csvFileName(table.workload));
    try {
      writeFileSync(path, table.text);
    } catch (e) {
      throw new CliFailure(`cannot write ${path}: ${(e as Error).message}`);
    }
    return path;
  });
}

/**
 * The real-consumers section, when bpf-real or ftrace-real is among the report's workloads. The
 * bpf-real and bpf-churn traces of this seed and scale are taken from the runs' plans when they
 * are there (the same traces; consumers.ts generates any that is not).
 */
async function consumersFor(
  workloads: readonly string[],
  opts: ReportOptions,
  plans: readonly ComparePlan[],
): Promise<Partial<ReportData>> {
  if (!workloads.includes('bpf-real') && !workloads.includes('ftrace-real')) return {};
  const { consumerFigures } = await import('../../metrics/consumers.js');
  const traceOf = (name: string): Trace | undefined =>
    workloads.includes(name)
      ? plans.find((p) => p.trace.name === name && p.seed === opts.seed && p.scale === opts.scale)?.trace
      : undefined;
  return {
    consumers: consumerFigures(
      { seed: opts.seed, scale: opts.scale },
      { bpfReal: traceOf('bpf-real'), bpfChurn: traceOf('bpf-churn') },
    ),
  };
}

/**
 * The runs as --json prints them: with --seeds, each figure of a design is its spread
 * ({median, min, max, perSeed}, src/metrics/spread.ts) in place of the median alone, and the
 * design says which seed its kernel-time breakdown and area map come from (medianSeed).
 */
function jsonRuns(runs: readonly WorkloadRun[], spreads: readonly (SpreadCompareResult | null)[]): unknown[] {
  return runs.map((run, i) => {
    const spread = spreads[i];
    if (spread === null) return run;
    return {
      ...run,
      policies: run.policies.map(({ spread: _range, ...p }, j) => ({
        ...p,
        medianSeed: spread.policies[j].medianSeed,
        metrics: spread.policies[j].metrics,
      })),
    };
  });
}

/** The Debian architecture of a fetched package for --load-modules; a usage error before any work. */
function moduleLoadsArch(arch: ArchName): 'amd64' | 'arm64' {
  if (arch === 'generic') throw new UsageError('--load-modules needs --arch x86_64 or arm64 (real packages)');
  const deb = arch === 'arm64' ? 'arm64' : 'amd64';
  requireRoot(datasetLocation({ flavour: flavourSuffix(deb, undefined) }));
  return deb;
}

/** `--load-modules`: `execmem modules load --all` of the fetched package through each design. */
async function moduleLoads(opts: ReportOptions, known: readonly string[], io: CliIo): Promise<ModuleLoads> {
  const arch = moduleLoadsArch(opts.arch);
  const { runModulesLoad } = await import('./modules.js');
  const rows: ModuleLoadRow[] = [];
  let packageName = '';
  for (const policy of opts.policies ?? known) {
    const r = await runModulesLoad(
      [],
      { all: true, policy, arch, seed: opts.seed, init: true, fetchCalls: 0 },
      io,
    );
    packageName = r.dataset.packageName ?? r.kernelRelease;
    rows.push({
      policy,
      requested: r.requested,
      loaded: r.loaded,
      failed: r.failed.length,
      unresolvedSymbols: r.unresolvedSymbols,
      relocOverflows: r.relocOverflows,
      relocations: Object.values(r.relocsByType).reduce((a, b) => a + b, 0),
      pltEntries: r.pltEntries,
      wxViolations: r.wxViolations,
    });
  }
  return { packageName, arch, rows };
}

function reproduceCommand(opts: ReportOptions): string {
  const parts = ['execmem report'];
  if (opts.arch !== 'x86_64') parts.push(`--arch ${opts.arch}`);
  if (opts.seeds !== undefined) parts.push(`--seeds ${opts.seeds.join(',')}`);
  else if (opts.seed !== 1) parts.push(`--seed ${opts.seed}`);
  if (opts.scale !== 1) parts.push(`--scale ${opts.scale}`);
  if (opts.workloads) parts.push(`--workloads ${opts.workloads.join(',')}`);
  if (opts.policies) parts.push(`--policies ${opts.policies.join(',')}`);
  for (const file of opts.trace) parts.push(`--trace ${file}`);
  if (opts.loadModules) parts.push('--load-modules');
  return parts.length === 1 ? 'npm start' : parts.join(' ');
}

interface DebianWorkloadModule {
  debianModules(opts: { seed: number; scale: number }): Trace;
  DEFAULT_MODULE_TABLE: string;
}

interface DebianTableModule {
  readModuleTable(path: string): {
    packageName: string | null;
    kernelRelease: string;
    modules: readonly unknown[];
  };
}

/**
 * A workload name the harness resolves itself, or (for debian-modules while it is not in the
 * workload registry) the trace generated from the shipped module table.
 */
async function workloadSource(
  name: string,
  registered: readonly string[],
  opts: ReportOptions,
): Promise<string | Trace> {
  if (registered.includes(name)) return name;
  const mod = await loadSubsystem<DebianWorkloadModule>(
    'workloads/dataset/workload.js',
    'the debian-modules workload',
    ['debianModules'],
  );
  return mod.debianModules({ seed: opts.seed, scale: opts.scale });
}

/** What the page says about the Debian data: where the sizes come from, and the package's state. */
async function debianNotes(): Promise<string[]> {
  const notes: string[] = [];
  const workload = await loadSubsystem<DebianWorkloadModule>(
    'workloads/dataset/workload.js',
    'the debian-modules workload',
    ['debianModules', 'DEFAULT_MODULE_TABLE'],
  );
  const table = await loadSubsystem<DebianTableModule>('workloads/dataset/table.js', 'the module table', [
    'readModuleTable',
  ]);
  const t = table.readModuleTable(workload.DEFAULT_MODULE_TABLE);
  notes.push(
    `debian-modules: section sizes of the ${t.modules.length} modules of ${t.packageName ?? t.kernelRelease}, ` +
      'measured from the real .ko files (data/debian-modules.json), loaded in dependency order; the code ' +
      'bytes written are synthetic.',
  );
  // Which package is fetched, its measured sizes, and whether it is the table's kernel.
  notes.push(reportDatasetNote(t));
  return notes;
}

function toMetrics(raw: Record<string, unknown>, where: string): PolicyMetrics {
  const out = {} as PolicyMetrics;
  for (const key of METRIC_KEYS) {
    const value = raw[key];
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new CliFailure(`the compare harness gave no finite '${key}' for ${where}`);
    }
    out[key] = value;
  }
  return out;
}

/**
 * The harness gives occupied 2 MiB regions (canonical hex addresses); the picture also needs the
 * area they lie in: the arch's KASLR module area (the harness's machines run with KASLR on),
 * widened to any region outside it (e.g. arm64 BPF in vmalloc space).
 */
export function toArea(occupancy: OccupancyMap, arch: ArchName): AreaMap {
  const regions = occupancy.regions.map((r) => ({
    va: toVa(BigInt(r.va)),
    mappedBytes: r.mappedBytes,
    largeLeaf: r.largeLeaf,
    liveBytesByType: { ...r.liveBytesByType },
  }));
  const modules = ARCHES[arch].layout.modulesKaslr;
  let start = modules.start;
  let end = modules.end;
  for (const r of regions) {
    start = Math.min(start, r.va);
    end = Math.max(end, r.va + occupancy.regionBytes);
  }
  return { start, end, regionBytes: occupancy.regionBytes || SZ_2M, regions };
}

type DesignFields = Pick<
  PolicyRun,
  'name' | 'modelled' | 'kernel' | 'sameAs' | 'wxHoles' | 'description' | 'counters'
>;

/** What a design row says about the design itself, the same for one seed or several. */
function designFields(p: DesignFields): DesignFields {
  const { name, modelled, kernel, sameAs, wxHoles, description, counters } = p;
  return { name, modelled, kernel, sameAs, wxHoles, description, counters };
}

export function toWorkloadRun(result: CompareResult): WorkloadRun {
  const policies: PolicyRun[] = result.policies.map((p) => ({
    ...designFields(p),
    metrics: toMetrics(p.metrics as unknown as Record<string, unknown>, `${result.workload}/${p.name}`),
    kernelTime: p.kernelTime,
    area: toArea(p.occupancy, result.arch),
  }));
  return {
    workload: result.workload,
    description: result.description,
    arch: result.arch,
    tlb: result.machine.tlb,
    seed: result.seed,
    scale: result.scale,
    policies,
    kernelTimeSensitivity: result.kernelTime.sensitivity,
  };
}

/** A several-seed run as the renderer takes it: median figures, their spread, the median seed's map. */
export function toSpreadWorkloadRun(spread: SpreadCompareResult): WorkloadRun {
  const policies: PolicyRun[] = spread.policies.map((p) => {
    const where = `${spread.workload}/${p.name}`;
    const min = toMetrics(spreadBound(p.metrics, 'min') as unknown as Record<string, unknown>, where);
    const max = toMetrics(spreadBound(p.metrics, 'max') as unknown as Record<string, unknown>, where);
    return {
      ...designFields(p),
      metrics: toMetrics(spreadBound(p.metrics, 'median') as unknown as Record<string, unknown>, where),
      spread: { min, max },
      kernelTime: p.kernelTime,
      area: toArea(p.occupancy, spread.arch),
    };
  });
  return {
    workload: spread.workload,
    description: spread.description,
    arch: spread.arch,
    tlb: spread.machine.tlb,
    seed: spread.seeds[0],
    seeds: spread.seeds,
    scale: spread.scale,
    policies,
    kernelTimeSensitivity: spread.kernelTime.sensitivity,
  };
}
