/**
 * The shape every benchmark module returns.
 *
 * Why ratios: timings on a shared CI machine vary run to run, so every speed figure is reported
 * next to a baseline measured in the same process run (DESIGN.md section 7: "Timings are always
 * ratios measured in the same process run"). `value` is the absolute figure for the reader;
 * `ratio` (value / baseline's value, or as the note says) is what comparisons should use.
 */
export interface BenchResult {
  readonly name: string;
  readonly value: number;
  /** Unit of `value`, e.g. "ops/s", "fetches/s". */
  readonly unit: string;
  /** What `ratio` compares against (another result's name or a described loop). */
  readonly baseline?: string;
  readonly ratio?: number;
  readonly note?: string;
}

/** A benchmark module: runs its measurements once, in this process. */
export type BenchModule = () => Promise<BenchResult[]>;
