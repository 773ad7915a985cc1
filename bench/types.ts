/**
 * The shape every benchmark module returns, and what its targets mean.
 *
 * Why ratios: timings on a shared CI machine vary run to run, so every speed figure is reported
 * next to a baseline measured in the same process run (DESIGN.md section 7: "Timings are always
 * ratios measured in the same process run"). `value` is the absolute figure for the reader;
 * `ratio` is what comparisons should use, and it always points the same way: the speed of this
 * measurement relative to its baseline (the baseline's time per operation divided by this one's),
 * so above 1 is faster than the baseline and below 1 slower, whatever the unit of `value`.
 *
 * A target is stated as data (`target`), not in prose, so the runner prints "met" or "NOT met"
 * next to the figure and `--json` carries the verdict. What is not a measurement (which host
 * mode the probe chose, a module skipped for lack of data) is a `BenchFact`, printed as a note
 * and never as a row with a made-up value.
 */
export interface BenchTarget {
  /** Which figure the bound applies to. */
  readonly of: 'value' | 'ratio';
  readonly op: '>=' | '<=';
  readonly bound: number;
  /** Where the target comes from (an issue, a kernel figure). */
  readonly source: string;
}

export interface BenchResult {
  readonly name: string;
  readonly value: number;
  /** Unit of `value`, e.g. "ops/s", "fetches/s". */
  readonly unit: string;
  /** What `ratio` compares against (another result's name or a described loop). */
  readonly baseline?: string;
  /** Speed relative to `baseline`: above 1 = faster than it (see the header). */
  readonly ratio?: number;
  readonly note?: string;
  readonly target?: BenchTarget;
}

/** Something a module reports that is not a measurement. */
export interface BenchFact {
  readonly name: string;
  readonly fact: string;
}

export type BenchRow = BenchResult | BenchFact;

/** A benchmark module: runs its measurements once, in this process. */
export type BenchModule = () => Promise<BenchRow[]>;

export function isFact(row: BenchRow): row is BenchFact {
  return 'fact' in row;
}

/** Whether a result meets its target; null when it has none (or lacks the figure it bounds). */
export function targetMet(r: BenchResult): boolean | null {
  const t = r.target;
  if (t === undefined) return null;
  const x = t.of === 'value' ? r.value : r.ratio;
  if (x === undefined || !Number.isFinite(x)) return null;
  return t.op === '>=' ? x >= t.bound : x <= t.bound;
}
