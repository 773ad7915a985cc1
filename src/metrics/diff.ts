/**
 * The difference between two saved runs (`execmem compare --json` or `execmem report --json`
 * outputs): per workload, design and figure, the value in each run and the change.
 *
 * Why built this way: a developer who patches a policy runs compare before and after and wants
 * to see what moved, and nothing else. So runs are paired by workload, designs by name, figures
 * by their JSON key (the report's figures, METRIC_KEYS: the simulator's own speed is not a
 * figure); a figure's direction (lower is better, or none) is the one the tables rank by
 * (report/format.ts tableColumns). Runs that cannot be compared are refused rather than diffed
 * into nonsense: different arches for the same workload, or no workload in common. What differs
 * but still compares (seed, scale, machine) is said in a note above the figures, since then a
 * change is not only the design's.
 * A figure given as a spread ({ median, min, max }, from a multi-seed run) is compared by its
 * median.
 */
import { METRIC_KEYS, type MetricKey } from './report/types.js';

export class DiffError extends Error {
  override name = 'DiffError';
}

export interface DiffPolicy {
  readonly name: string;
  readonly kernel: string;
  readonly metrics: Readonly<Record<MetricKey, number>>;
}

export interface DiffRun {
  readonly workload: string;
  readonly arch: string;
  readonly seed: number | null;
  /** Every seed of the run: [seed] for one seed, the list of a several-seed run (medians). */
  readonly seeds: readonly number[] | null;
  readonly scale: number | null;
  /** compare --json's machine description (memory, CPUs, TLB, age), when the file has it. */
  readonly machine: Readonly<Record<string, unknown>> | null;
  readonly policies: readonly DiffPolicy[];
}

export interface SavedRuns {
  readonly kind: 'compare' | 'report';
  readonly runs: readonly DiffRun[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A figure: a number, or a spread whose median is compared. */
function figure(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (isRecord(v) && typeof v.median === 'number' && Number.isFinite(v.median)) return v.median;
  return null;
}

function readRun(raw: unknown, where: string): DiffRun {
  if (!isRecord(raw)) throw new DiffError(`${where} is not an object`);
  if (typeof raw.workload !== 'string' || typeof raw.arch !== 'string' || !Array.isArray(raw.policies)) {
    throw new DiffError(`${where} has no workload, arch and policies`);
  }
  const policies = raw.policies.map((p, i): DiffPolicy => {
    const at = `${where}.policies[${i}]`;
    if (!isRecord(p) || typeof p.name !== 'string' || !isRecord(p.metrics)) {
      throw new DiffError(`${at} has no name and metrics`);
    }
    const metrics = {} as Record<MetricKey, number>;
    for (const key of METRIC_KEYS) {
      const v = figure(p.metrics[key]);
      if (v === null) throw new DiffError(`${at} (${p.name}) has no number for ${key}`);
      metrics[key] = v;
    }
    return { name: p.name, kernel: typeof p.kernel === 'string' ? p.kernel : '', metrics };
  });
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  const seeds =
    Array.isArray(raw.seeds) && raw.seeds.every((x) => typeof x === 'number')
      ? (raw.seeds as number[])
      : typeof raw.seed === 'number'
        ? [raw.seed]
        : null;
  return {
    workload: raw.workload,
    arch: raw.arch,
    seed: seeds !== null && seeds.length > 1 ? null : num(raw.seed),
    seeds,
    scale: num(raw.scale),
    machine: isRecord(raw.machine) ? raw.machine : null,
    policies,
  };
}

/** Recognise and read a saved run; DiffError saying what the document is not. */
export function readSavedRuns(doc: unknown, label: string): SavedRuns {
  if (isRecord(doc) && Array.isArray(doc.runs)) {
    const runs = doc.runs.map((r, i) => readRun(r, `${label}: runs[${i}]`));
    if (runs.length === 0) throw new DiffError(`${label}: a report with no runs`);
    return { kind: 'report', runs };
  }
  if (isRecord(doc) && typeof doc.workload === 'string' && Array.isArray(doc.policies)) {
    return { kind: 'compare', runs: [readRun(doc, label)] };
  }
  throw new DiffError(
    `${label} is neither the output of 'execmem compare --json' nor of 'execmem report --json'`,
  );
}

export type Direction = 'low' | 'high' | null;

/**
 * Which way each figure is better, as the tables rank it (report/format.ts tableColumns), plus
 * the figures only the report's JSON carries: DirectMap4k and IPIs lower is better; the iTLB
 * lower bound, live bytes, local and all flushes, alias writes, W^X and failures are not ranked.
 */
export const DIRECTIONS: Readonly<Record<MetricKey, Direction>> = {
  modelledKernelTimeNs: 'low',
  liveBytes: null,
  mappedBytes: 'low',
  overhead: 'low',
  largePageShare: 'high',
  directMap4kBytes: 'low',
  directMap4kGrowthBytes: 'low',
  directMapSplits: 'low',
  shootdowns: 'low',
  ipis: 'low',
  broadcastFlushes: 'low',
  localFlushes: null,
  allFlushEvents: null,
  permissionFlips: 'low',
  pokes: null,
  itlbMissesPerMillion: 'low',
  itlbLowerBoundPerMillion: null,
  wxViolations: null,
  failures: null,
};

export type Verdict = 'better' | 'worse' | null;

export interface FigureDiff {
  readonly key: MetricKey;
  readonly a: number;
  readonly b: number;
  /** b - a. */
  readonly change: number;
  /** (b - a) / |a|; null when a is 0 and b is not (no ratio to a zero). 0 when both are equal. */
  readonly relative: number | null;
  readonly verdict: Verdict;
}

export interface DesignDiff {
  readonly name: string;
  readonly kernel: string;
  readonly figures: readonly FigureDiff[];
  /** How many of the figures differ. */
  readonly changed: number;
}

export interface WorkloadDiff {
  readonly workload: string;
  readonly arch: string;
  /** What differs between the two runs of this workload besides the designs. */
  readonly notes: readonly string[];
  readonly designs: readonly DesignDiff[];
  readonly onlyInA: readonly string[];
  readonly onlyInB: readonly string[];
}

export interface RunDiff {
  readonly a: string;
  readonly b: string;
  readonly workloads: readonly WorkloadDiff[];
  readonly workloadsOnlyInA: readonly string[];
  readonly workloadsOnlyInB: readonly string[];
}

export function diffFigure(key: MetricKey, a: number, b: number): FigureDiff {
  const change = b - a;
  const relative = a === b ? 0 : a === 0 ? null : change / Math.abs(a);
  const dir = DIRECTIONS[key];
  const verdict: Verdict =
    dir === null || change === 0 ? null : (dir === 'low') === change < 0 ? 'better' : 'worse';
  return { key, a, b, change, relative, verdict };
}

function machineNotes(a: DiffRun, b: DiffRun): string[] {
  const notes: string[] = [];
  const several = (r: DiffRun) => r.seeds !== null && r.seeds.length > 1;
  const seedText = (r: DiffRun) => (r.seeds === null ? 'unknown' : r.seeds.join(','));
  if (several(a) || several(b)) {
    for (const [label, r] of [
      ['A', a],
      ['B', b],
    ] as const)
      if (several(r)) notes.push(`${label} is the median over seeds ${seedText(r)}: its figures are medians`);
    if (seedText(a) !== seedText(b)) notes.push(`seeds differ: ${seedText(a)} in A, ${seedText(b)} in B`);
  } else if (a.seed !== b.seed)
    notes.push(`seed differs: ${a.seed} in A, ${b.seed} in B (another instance of the workload)`);
  if (a.scale !== b.scale)
    notes.push(`scale differs: ${a.scale} in A, ${b.scale} in B (another size of the workload)`);
  if (a.machine !== null && b.machine !== null) {
    for (const key of new Set([...Object.keys(a.machine), ...Object.keys(b.machine)])) {
      const va = JSON.stringify(a.machine[key]);
      const vb = JSON.stringify(b.machine[key]);
      if (va !== vb) notes.push(`machine ${key} differs: ${va} in A, ${vb} in B`);
    }
  }
  return notes;
}

/** Diff two saved runs. DiffError when they cannot be compared (say why). */
export function diffRuns(a: SavedRuns, b: SavedRuns, labels: { a: string; b: string }): RunDiff {
  const byName = (runs: readonly DiffRun[]) => new Map(runs.map((r) => [r.workload, r]));
  const ra = byName(a.runs);
  const rb = byName(b.runs);
  const common = [...ra.keys()].filter((w) => rb.has(w));
  if (common.length === 0) {
    throw new DiffError(
      `no workload in common: ${labels.a} ran ${[...ra.keys()].join(', ')}; ${labels.b} ran ${[...rb.keys()].join(', ')}`,
    );
  }
  const workloads = common.map((w): WorkloadDiff => {
    const x = ra.get(w) as DiffRun;
    const y = rb.get(w) as DiffRun;
    if (x.arch !== y.arch) {
      throw new DiffError(
        `${w} ran on ${x.arch} in ${labels.a} and on ${y.arch} in ${labels.b}: figures of different arches do not compare`,
      );
    }
    const pb = new Map(y.policies.map((p) => [p.name, p]));
    const designs = x.policies
      .filter((p) => pb.has(p.name))
      .map((p): DesignDiff => {
        const q = pb.get(p.name) as DiffPolicy;
        const figures = METRIC_KEYS.map((k) => diffFigure(k, p.metrics[k], q.metrics[k]));
        return {
          name: p.name,
          kernel: p.kernel,
          figures,
          changed: figures.filter((f) => f.change !== 0).length,
        };
      });
    const names = new Set(x.policies.map((p) => p.name));
    return {
      workload: w,
      arch: x.arch,
      notes: machineNotes(x, y),
      designs,
      onlyInA: x.policies.filter((p) => !pb.has(p.name)).map((p) => p.name),
      onlyInB: y.policies.filter((p) => !names.has(p.name)).map((p) => p.name),
    };
  });
  return {
    a: labels.a,
    b: labels.b,
    workloads,
    workloadsOnlyInA: [...ra.keys()].filter((w) => !rb.has(w)),
    workloadsOnlyInB: [...rb.keys()].filter((w) => !ra.has(w)),
  };
}
