/**
 * The data a report is rendered from: one comparison run per workload (every policy on an
 * identical fresh machine), plus the module-area occupancy of each policy after the run.
 *
 * Why a type of its own instead of rendering the compare harness's result directly: the renderer
 * must not depend on how the numbers were produced (sim compare harness, the Debian modules
 * replay, a saved JSON file), and it validates what it gets: a report that silently draws NaN
 * bars is worse than none. The metric names are exactly those issue 4 documents for
 * `execmem compare --json`, so a compare result maps onto this with no renaming.
 */

import { EXECMEM_TYPES, type ExecmemType } from '../../arch/types.js';
import { assert } from '../../base/assert.js';
import type { ConsumerFigures, ModuleLoads } from '../consumers.js';
import type { KernelTimeBreakdown, Sensitivity } from '../kernel-time.js';
import { KERNEL_EVENT_KEYS } from '../kernel-time-costs.js';

export type { KernelTimeBreakdown, Sensitivity } from '../kernel-time.js';

/**
 * The per-policy metrics issue 4 requires of `execmem compare` (same names, same units), plus
 * those the compare harness also reports and a reader needs: the growth of DirectMap4k over the
 * run (the figure Aaron Lu measured), arm64's broadcast invalidations, all flush events, alias
 * writes and the number of workload events that failed. The simulator's own throughput is not
 * here: it says nothing about Linux and stays in `execmem compare --json` (issue 11 item 12).
 * Modelled kernel time comes first: it is the one figure that says who wins overall (issue 12).
 */
export const METRIC_KEYS = [
  'modelledKernelTimeNs',
  'liveBytes',
  'mappedBytes',
  'overhead',
  'largePageShare',
  'directMap4kBytes',
  'directMap4kGrowthBytes',
  'directMapSplits',
  'shootdowns',
  'ipis',
  'broadcastFlushes',
  'localFlushes',
  'allFlushEvents',
  'permissionFlips',
  'pokes',
  'itlbMissesPerMillion',
  'itlbLowerBoundPerMillion',
  'wxViolations',
  'failures',
] as const;
export type MetricKey = (typeof METRIC_KEYS)[number];
export type PolicyMetrics = Record<MetricKey, number>;

/** One 2 MiB region of a policy's executable-memory area after the run. */
export interface AreaRegion {
  /** Region start (48-bit VA, aligned to `regionBytes`). */
  readonly va: number;
  /** Bytes of this region mapped by anyone (0..regionBytes). */
  readonly mappedBytes: number;
  /** Mapped with one 2 MiB leaf (true) or with smaller leaves (false). */
  readonly largeLeaf: boolean;
  /** Live (allocated to callers) bytes per type in this region. */
  readonly liveBytesByType: Partial<Record<ExecmemType, number>>;
}

/** The module area (or whichever range the run used) as tiles of `regionBytes`. */
export interface AreaMap {
  readonly start: number;
  readonly end: number;
  readonly regionBytes: number;
  /** Regions with something mapped; the renderer draws the others as empty tiles. */
  readonly regions: readonly AreaRegion[];
}

export interface PolicyRun {
  readonly name: string;
  /** A re-implementation of a Linux design (true) or ours (false). */
  readonly modelled: boolean;
  /** The kernel version the design models, e.g. 'Linux 6.10' (shown next to modelled designs). */
  readonly kernel: string;
  /** The design this one behaves exactly like on the run's arch, or null (PolicySpec.sameAs). */
  readonly sameAs: string | null;
  /** W+X pages the modelled kernel version itself leaves on this arch (PolicySpec.wxHoles), or null. */
  readonly wxHoles: string | null;
  /** One paragraph on the design: the text `execmem compare --json` carries (PolicySpec.describe). */
  readonly description: string;
  /** With several seeds: the median of each figure over the seeds (src/metrics/spread.ts). */
  readonly metrics: PolicyMetrics;
  /** With several seeds: each figure's min and max over the seeds; absent for one seed. */
  readonly spread?: { readonly min: PolicyMetrics; readonly max: PolicyMetrics };
  /**
   * The design's own counters after the run (`execmem compare --json` policies[].counters, e.g.
   * ours' frees and updates); the summary's reasons read them where present, never require them.
   */
  readonly counters: Readonly<Record<string, number>>;
  /** The events behind metrics.modelledKernelTimeNs and what each class adds. */
  readonly kernelTime: KernelTimeBreakdown;
  /** Null when the producer could not provide a map (the report says so). */
  readonly area: AreaMap | null;
}

export interface WorkloadRun {
  readonly workload: string;
  /** One paragraph on the workload: the text `execmem compare --json` carries (WorkloadSpec.describe). */
  readonly description: string;
  readonly arch: string;
  /** Name of the TLB geometry profile the machines were built with (e.g. 'skylake'). */
  readonly tlb: string;
  readonly seed: number;
  /** The seeds of a several-seed run (`--seeds`), whose figures are medians; absent for one seed. */
  readonly seeds?: readonly number[];
  /** The producer's size knob (1 = the default workload size). */
  readonly scale: number;
  readonly policies: readonly PolicyRun[];
  /** The ranking by modelled kernel time redone with each weight x0.5 and x2. */
  readonly kernelTimeSensitivity: Sensitivity;
}

export interface ReportData {
  /** ISO time the data was produced (shown, never used for computation). */
  readonly generatedAt: string;
  readonly runs: readonly WorkloadRun[];
  /** Plain-language notes shown at the top (e.g. "Debian modules not fetched: run ..."). */
  readonly notes: readonly string[];
  /** The command that regenerates this report. */
  readonly command: string;
  /** The real consumers' figures (bpf-real's sizes, ftrace-real's patches) when those ran. */
  readonly consumers?: ConsumerFigures;
  /** `report --load-modules`: every module of the fetched package through each design. */
  readonly moduleLoads?: ModuleLoads;
}

function checkNumber(value: unknown, what: string): void {
  assert(
    typeof value === 'number' && Number.isFinite(value),
    `${what} must be a finite number, got ${value}`,
  );
}

/**
 * Check a report's data before drawing it. Producers are our own code, so a violation is a bug
 * of the producer: an AssertionError naming the field.
 */
export function checkReportData(data: ReportData): void {
  assert(data.runs.length > 0, 'a report needs at least one workload run');
  const seen = new Set<string>();
  // One arch per report: its labels (src/metrics/report/vocabulary.ts) are the arch's words.
  const arch = data.runs[0].arch;
  for (const run of data.runs) {
    assert(run.arch === arch, `workload ${run.workload} ran on ${run.arch}, the report is ${arch}`);
    assert(!seen.has(run.workload), `workload ${run.workload} appears twice`);
    seen.add(run.workload);
    assert(run.policies.length > 0, `workload ${run.workload} has no policies`);
    assert(run.description.trim() !== '', `workload ${run.workload} has no description`);
    assert(run.kernelTimeSensitivity.summary !== '', `workload ${run.workload} has no sensitivity summary`);
    const names = new Set<string>();
    for (const p of run.policies) {
      assert(!names.has(p.name), `policy ${p.name} appears twice in ${run.workload}`);
      names.add(p.name);
      assert(p.sameAs !== p.name, `${run.workload}/${p.name} is the same as itself`);
      assert(p.description.trim() !== '', `${run.workload}/${p.name} has no description`);
      for (const key of METRIC_KEYS) checkNumber(p.metrics[key], `${run.workload}/${p.name}.${key}`);
      checkKernelTime(p.kernelTime, p.metrics.modelledKernelTimeNs, `${run.workload}/${p.name}`);
      if (p.area) checkArea(p.area, `${run.workload}/${p.name}`);
    }
  }
}

/** The breakdown adds up to the figure shown (the sum equals the breakdown). */
function checkKernelTime(k: KernelTimeBreakdown, shownNs: number, where: string): void {
  let sum = 0;
  for (const key of KERNEL_EVENT_KEYS) {
    const e = k.byEvent[key];
    assert(e !== undefined, `${where}: kernel time has no ${key}`);
    checkNumber(e.ns, `${where}.kernelTime.${key}`);
    sum += e.ns;
  }
  const tolerance = 1e-6 * Math.max(1, Math.abs(shownNs));
  assert(
    Math.abs(sum - k.totalNs) <= tolerance,
    `${where}: kernel time parts add to ${sum}, not ${k.totalNs}`,
  );
  assert(
    Math.abs(shownNs - k.totalNs) <= tolerance,
    `${where}: modelledKernelTimeNs ${shownNs} != ${k.totalNs}`,
  );
}

function checkArea(area: AreaMap, where: string): void {
  assert(area.regionBytes > 0 && area.end > area.start, `${where}: bad area bounds`);
  for (const r of area.regions) {
    assert(r.va % area.regionBytes === 0, `${where}: region ${r.va} not aligned`);
    assert(
      r.mappedBytes >= 0 && r.mappedBytes <= area.regionBytes,
      `${where}: region mapped bytes out of range`,
    );
    for (const [type, bytes] of Object.entries(r.liveBytesByType)) {
      assert((EXECMEM_TYPES as readonly string[]).includes(type), `${where}: unknown type ${type}`);
      checkNumber(bytes, `${where}: live bytes of ${type}`);
    }
  }
}
