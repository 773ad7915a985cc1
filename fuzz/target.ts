/**
 * What a fuzz target is: a named function that runs `iterations` generated cases from `seed` and
 * reports what it found. Targets live next to this file (one file each) and are listed in
 * targets.ts; `npm run fuzz` runs them long, `npm test` runs a small fixed-seed slice of each.
 *
 * Why a contract and not a framework: each target knows its own oracle (a typed error and an
 * unchanged state, a time and memory budget); the runner only needs seeds, counts and findings,
 * so a finding replays from (target, seed, case index) alone.
 */

export interface FuzzFinding {
  /** The generated case that failed, replayable with the same seed. */
  readonly caseIndex: number;
  /** What went wrong, with enough detail to reproduce. */
  readonly message: string;
}

export interface FuzzReport {
  readonly target: string;
  readonly seed: number;
  readonly cases: number;
  readonly findings: readonly FuzzFinding[];
}

export interface FuzzTarget {
  readonly name: string;
  readonly describe: string;
  /** Run `iterations` cases generated from `seed`; never throws for a finding, reports it. */
  run(seed: number, iterations: number): FuzzReport;
}
