/**
 * `execmem report` (= `npm start`): the main job. Runs every policy on every workload through the
 * compare harness (src/metrics/compare.ts, engineer P), adds the Debian modules workload when the
 * dataset has been fetched, and writes report/index.html + report/summary.md.
 *
 * Why the work is delegated: the numbers must come from exactly the code `execmem compare` runs,
 * so a table on the report page can be reproduced with one compare command. This file only
 * chooses the workloads, shows progress, converts the harness's result into the renderer's
 * `ReportData` (checked there) and writes files. Nothing is computed or defaulted here that the
 * harness did not measure: a missing metric is an error, not a zero.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ARCHES, type ArchName } from '../../arch/index.js';
import { SZ_2M, toVa } from '../../base/addr.js';
import type { CompareOptions, CompareResult, OccupancyMap } from '../../metrics/compare.js';
import {
  type AreaMap,
  METRIC_KEYS,
  type PolicyMetrics,
  type PolicyRun,
  type ReportData,
  type WorkloadRun,
} from '../../metrics/report/types.js';
import { WORKLOADS } from '../../workloads/registry.js';
import { CliFailure, type CliIo } from '../io.js';
import { checkName, parseArch, parseList, parseScale, parseSeed } from '../options.js';
import { loadSubsystem } from '../subsystems.js';
import { policyNames } from './shared.js';

/** src/metrics/compare.ts, loaded at run time (see ../subsystems.ts). */
interface CompareModule {
  runCompare(options: CompareOptions): CompareResult;
}

interface ReportOptions {
  out: string;
  workloads?: string[];
  policies?: string[];
  arch: ArchName;
  seed: number;
  scale: number;
  modules: boolean;
}

export const DEBIAN_WORKLOAD = 'debian-modules';

export function register(program: Command, io: CliIo): void {
  program
    .command('report')
    .description('run every policy on every workload and write report/index.html and report/summary.md')
    .option('-o, --out <dir>', 'directory to write index.html and summary.md into', 'report')
    .option('-w, --workloads <list>', 'comma-separated workloads (default: all)', parseList)
    .option('-p, --policies <list>', 'comma-separated policies (default: all)', parseList)
    .option('-a, --arch <arch>', 'x86_64, arm64 or generic', parseArch, 'x86_64')
    .option('-s, --seed <n>', 'seed of the workloads and of KASLR', parseSeed, 1)
    .option('--scale <x>', 'workload size factor (1 = default; tests use small values)', parseScale, 1)
    .option('--no-modules', 'leave out the Debian modules workload even if the dataset is fetched')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem report                         # everything, into ./report/',
        '  $ execmem report --scale 0.1 --out /tmp/r # a quick small run',
        '  $ execmem report --workloads mixed,bpf-churn --policies execmem,bpf_prog_pack',
        '',
        'The Debian modules workload is included when the dataset has been fetched',
        '(execmem dataset fetch); the report says so when it is not.',
      ].join('\n'),
    )
    .action(async (opts: ReportOptions) => {
      await runReport(opts, io);
    });
}

async function runReport(opts: ReportOptions, io: CliIo): Promise<void> {
  const known = Object.keys(WORKLOADS);
  const notes: string[] = [];
  let workloads = opts.workloads ?? known;
  for (const w of workloads) if (w !== DEBIAN_WORKLOAD) checkName('workload', w, known);
  const compare = await loadSubsystem<CompareModule>(
    'metrics/compare.js',
    'the compare harness (runCompare)',
    ['runCompare'],
  );
  if (opts.workloads === undefined && opts.modules) {
    const debian = await debianWorkloadStatus();
    if (debian.available) workloads = [...workloads, DEBIAN_WORKLOAD];
    else notes.push(debian.note);
  } else if (!opts.modules) {
    notes.push('The Debian modules workload was left out (--no-modules).');
  }
  const runs: WorkloadRun[] = [];
  let modelledNote = '';
  // One tick per (workload, policy) run; the harness reports which policy it is on.
  const policyCount = (opts.policies ?? (await policyNames())).length;
  const bar = io.progress('report', workloads.length * policyCount);
  try {
    for (const workload of workloads) {
      let ticked = 0;
      const result = compare.runCompare({
        workload,
        policies: opts.policies,
        arch: opts.arch,
        seed: opts.seed,
        scale: opts.scale,
        progress: (p) => {
          const finished = p.policyIndex + (p.eventsDone >= p.eventsTotal ? 1 : 0);
          if (finished > ticked) {
            bar.tick(finished - ticked);
            ticked = finished;
          }
        },
      });
      if (result.policies.length > ticked) bar.tick(result.policies.length - ticked);
      modelledNote = result.modelledNote;
      runs.push(toWorkloadRun(result));
    }
  } finally {
    bar.done();
  }
  if (modelledNote !== '') notes.unshift(modelledNote);
  const data: ReportData = {
    generatedAt: new Date().toISOString(),
    runs,
    notes,
    command: reproduceCommand(opts),
  };
  // Loaded here, not at the top: ECharts takes about a second to import, which every other
  // `execmem` invocation (help, usage errors) should not pay.
  const { renderTerminalSummary, writeReport } = await import('../../metrics/report/index.js');
  const written = writeReport(data, resolve(opts.out));
  if (io.json) {
    io.out(JSON.stringify({ html: written.htmlPath, markdown: written.markdownPath, ...data }, null, 2));
    return;
  }
  io.out(renderTerminalSummary(data));
  for (const note of notes) io.out(`note: ${note}`);
  io.out(`\nreport: ${written.htmlPath}\nsummary: ${written.markdownPath}`);
}

function reproduceCommand(opts: ReportOptions): string {
  const parts = ['execmem report'];
  if (opts.arch !== 'x86_64') parts.push(`--arch ${opts.arch}`);
  if (opts.seed !== 1) parts.push(`--seed ${opts.seed}`);
  if (opts.scale !== 1) parts.push(`--scale ${opts.scale}`);
  if (opts.workloads) parts.push(`--workloads ${opts.workloads.join(',')}`);
  if (opts.policies) parts.push(`--policies ${opts.policies.join(',')}`);
  return parts.length === 1 ? 'npm start' : parts.join(' ');
}

/** Is the Debian modules workload usable? (Needs engineer E's dataset index and a fetched package.) */
async function debianWorkloadStatus(): Promise<{ available: boolean; note: string }> {
  const fetchHint =
    'Fetch it with `execmem dataset fetch` (downloads the Debian linux-image cloud package, ~50 MB).';
  try {
    await loadSubsystem('workloads/dataset/index.js', 'the Debian dataset', []);
  } catch (error) {
    return {
      available: false,
      note: `Debian modules not included: ${(error as Error).message}. ${fetchHint}`,
    };
  }
  return {
    available: false,
    note: `Debian modules not included: dataset detection is not wired yet. ${fetchHint}`,
  };
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

export function toWorkloadRun(result: CompareResult): WorkloadRun {
  const policies: PolicyRun[] = result.policies.map((p) => ({
    name: p.name,
    metrics: toMetrics(p.metrics as unknown as Record<string, unknown>, `${result.workload}/${p.name}`),
    area: toArea(p.occupancy, result.arch),
  }));
  return { workload: result.workload, arch: result.arch, seed: result.seed, scale: result.scale, policies };
}
