/**
 * Modelled kernel time: one figure for who wins overall (issue 12 item 4), and how far the
 * ranking it gives can be trusted.
 *
 * Why one figure: the designs trade costs against each other (a global shootdown against many
 * local flushes, memory against iTLB misses), so no single counter says which design costs the
 * kernel least. Modelled kernel time weighs every event the machine counts by its published cost
 * (kernel-time-costs.ts) and adds them up: sum over events of count x ns. It is a model, not a
 * measurement: the counts come from the simulated machine and the weights from other people's
 * CPUs, so the result is only as firm as the ranking is insensitive to the weights. That is why
 * the sensitivity analysis ships with it: every weight in the sum is halved and doubled, one at a
 * time, the designs are ranked again, and every pair whose order changes is reported.
 *
 * What is summed: the events of the whole run (allocator work, the flushes it causes, and the
 * iTLB misses of every fetch-model run), each counted once (a split's flush is a flush, not part
 * of the split). Events without a published cost are listed with their counts and left out.
 */
import type { MachineCounters } from '../machine/types.js';
import {
  COST_TABLE,
  costOn,
  KERNEL_EVENT_KEYS,
  type KernelEventKey,
  type KernelEvents,
} from './kernel-time-costs.js';

export {
  COST_TABLE,
  type CostEntry,
  type CostSource,
  CYCLE_CLOCK_GHZ,
  costEntry,
  costLabel,
  costOn,
  cyclesToNs,
  KERNEL_EVENT_KEYS,
  type KernelEventKey,
  type KernelEvents,
} from './kernel-time-costs.js';

export const KERNEL_TIME_NOTE =
  'modelledKernelTimeNs = sum over the counted events of count x cost (ns). The costs are published ' +
  'measurements or estimates derived from them (docs/KERNEL-TIME.md, src/metrics/kernel-time-costs.ts); ' +
  "events without a published cost are counted but left out. The counts are the simulated machine's; " +
  'the result is a model, and the sensitivity entry says whether the ranking survives every weight halved ' +
  'and doubled.';

/** One event class of a design's sum. */
export interface EventCost {
  readonly count: number;
  /** ns per event on this arch (after any weight factor), or null: left out of the sum. */
  readonly costNs: number | null;
  /** count x costNs (0 when left out). */
  readonly ns: number;
}

export interface KernelTimeBreakdown {
  readonly totalNs: number;
  readonly byEvent: Readonly<Record<KernelEventKey, EventCost>>;
}

/** Multipliers of individual weights (sensitivity); missing keys are 1. */
export type WeightFactors = Partial<Record<KernelEventKey, number>>;

/** The events of one run from the machine's counters before and after, and the fetch model's totals. */
export function eventsFromRun(
  before: Readonly<MachineCounters>,
  after: Readonly<MachineCounters>,
  fetch: { readonly stlbHits: number; readonly misses: number; readonly walks: number },
): KernelEvents {
  const d = (k: keyof MachineCounters) => after[k] - before[k];
  return {
    ipiShootdowns: d('shootdowns'),
    ipiTargets: d('ipis'),
    broadcastTlbis: d('broadcastFlushes'),
    localFlushes: d('localFlushes'),
    fullTlbFlushes: d('fullTlbFlushes'),
    itlbStlbHits: fetch.stlbHits,
    itlbWalks: fetch.misses,
    // Walks the fetch runs did not cause: data-side accesses (writes, text_poke copies).
    otherPageWalks: Math.max(0, d('pageWalks') - fetch.walks),
    pokeSteps: d('pokeSteps'),
    largePageSplits:
      d('splitsDirectMap2M') + d('splitsDirectMap1G') + d('splitsVmalloc2M') + d('splitsVmalloc1G'),
    largePageCollapses:
      d('collapsesDirectMap2M') +
      d('collapsesDirectMap1G') +
      d('collapsesVmalloc2M') +
      d('collapsesVmalloc1G'),
    cpaCalls: d('cpaCalls'),
    vmallocs: d('vmallocs'),
    vfrees: d('vfrees'),
    icacheFlushes: d('icacheFlushes'),
  };
}

/** Sum of count x cost over the events on `arch`, with its breakdown. */
export function kernelTime(
  events: KernelEvents,
  arch: string,
  factors: WeightFactors = {},
): KernelTimeBreakdown {
  const byEvent = {} as Record<KernelEventKey, EventCost>;
  let totalNs = 0;
  for (const entry of COST_TABLE) {
    const count = events[entry.key];
    if (!(Number.isFinite(count) && count >= 0)) throw new RangeError(`bad count of ${entry.key}: ${count}`);
    const base = costOn(entry, arch);
    const costNs = base === null ? null : base * (factors[entry.key] ?? 1);
    const ns = costNs === null ? 0 : count * costNs;
    byEvent[entry.key] = { count, costNs, ns };
    totalNs += ns;
  }
  return { totalNs, byEvent };
}

/** The weights that enter the sum on `arch` (those the sensitivity analysis varies). */
export function weightsOn(arch: string): KernelEventKey[] {
  return COST_TABLE.filter((e) => costOn(e, arch) !== null).map((e) => e.key);
}

export const SENSITIVITY_FACTORS = [0.5, 2] as const;

/** Two designs whose order a changed weight reverses (or makes or breaks a tie). */
export interface OrderChange {
  /** Ahead (lower kernel time) with the published weights. */
  readonly ahead: string;
  readonly behind: string;
}

export interface SensitivityCase {
  readonly weight: KernelEventKey;
  readonly factor: number;
  /** The designs with the lowest kernel time under this case (several on a tie). */
  readonly winners: readonly string[];
  /** Designs from lowest to highest kernel time ('a = b' groups on a tie). */
  readonly order: readonly string[];
  readonly winnerChanged: boolean;
  /** Every pair whose order differs from the published weights' order. */
  readonly changes: readonly OrderChange[];
}

export interface Sensitivity {
  readonly weights: readonly KernelEventKey[];
  readonly factors: readonly number[];
  readonly winners: readonly string[];
  readonly order: readonly string[];
  /** The winner is the same under every case. */
  readonly winnerRobust: boolean;
  /** No pair changes order under any case. */
  readonly orderRobust: boolean;
  readonly cases: readonly SensitivityCase[];
  /** One sentence: "robust to every weight x0.5/x2", or which weight flips which pair. */
  readonly summary: string;
}

interface Ranked {
  readonly name: string;
  readonly events: KernelEvents;
}

/** -1: a before b, 1: b before a, 0: a tie (equal within rounding). */
function relation(a: number, b: number): number {
  const tolerance = 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
  if (Math.abs(a - b) <= tolerance) return 0;
  return a < b ? -1 : 1;
}

/** Names from lowest to highest total, ties grouped as 'a = b'; and the winners. */
function rank(names: readonly string[], totals: readonly number[]): { order: string[]; winners: string[] } {
  const idx = names.map((_, i) => i).sort((i, j) => relation(totals[i], totals[j]) || i - j);
  const order: string[] = [];
  let group: number[] = [];
  const flush = () => {
    if (group.length > 0) order.push(group.map((i) => names[i]).join(' = '));
    group = [];
  };
  for (const i of idx) {
    if (group.length > 0 && relation(totals[group[0]], totals[i]) !== 0) flush();
    group.push(i);
  }
  flush();
  const best = idx.length > 0 ? totals[idx[0]] : 0;
  return { order, winners: idx.filter((i) => relation(totals[i], best) === 0).map((i) => names[i]) };
}

/**
 * Ranks the designs with the published weights, then with each weight in the sum halved and
 * doubled (one at a time), and reports every order change against the published ranking.
 */
export function sensitivity(designs: readonly Ranked[], arch: string): Sensitivity {
  const names = designs.map((d) => d.name);
  const totalsWith = (factors: WeightFactors) =>
    designs.map((d) => kernelTime(d.events, arch, factors).totalNs);
  const base = totalsWith({});
  const published = rank(names, base);
  const weights = weightsOn(arch);
  const cases: SensitivityCase[] = [];
  for (const weight of weights) {
    for (const factor of SENSITIVITY_FACTORS) {
      const totals = totalsWith({ [weight]: factor });
      const r = rank(names, totals);
      const changes: OrderChange[] = [];
      for (let i = 0; i < names.length; i++) {
        for (let j = i + 1; j < names.length; j++) {
          const was = relation(base[i], base[j]);
          if (relation(totals[i], totals[j]) === was) continue;
          const iAhead = was < 0 || (was === 0 && relation(totals[i], totals[j]) > 0);
          changes.push(
            iAhead ? { ahead: names[i], behind: names[j] } : { ahead: names[j], behind: names[i] },
          );
        }
      }
      const winnerChanged = !sameSet(r.winners, published.winners);
      cases.push({ weight, factor, winners: r.winners, order: r.order, winnerChanged, changes });
    }
  }
  const winnerRobust = cases.every((c) => !c.winnerChanged);
  const orderRobust = cases.every((c) => c.changes.length === 0);
  return {
    weights,
    factors: [...SENSITIVITY_FACTORS],
    winners: published.winners,
    order: published.order,
    winnerRobust,
    orderRobust,
    cases,
    summary: summarise(published.winners, winnerRobust, orderRobust, cases),
  };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function weightLabel(key: KernelEventKey, factor: number): string {
  const entry = COST_TABLE.find((e) => e.key === key);
  return `${entry?.label ?? key} x${factor}`;
}

function summarise(
  winners: readonly string[],
  winnerRobust: boolean,
  orderRobust: boolean,
  cases: readonly SensitivityCase[],
): string {
  const winner = winners.join(' = ');
  if (orderRobust)
    return `robust: the winner (${winner}) and the full order hold with every weight x0.5 and x2`;
  const flips = cases
    .filter((c) => c.changes.length > 0)
    .map(
      (c) =>
        `${weightLabel(c.weight, c.factor)} puts ${c.changes.map((p) => `${p.behind} ahead of ${p.ahead}`).join(', ')}`,
    );
  if (winnerRobust)
    return `the winner (${winner}) holds with every weight x0.5 and x2; the order changes: ${flips.join('; ')}`;
  const lost = cases
    .filter((c) => c.winnerChanged)
    .map((c) => `${weightLabel(c.weight, c.factor)} (winner ${c.winners.join(' = ')})`);
  return `the winner (${winner}) changes with ${lost.join(', ')}; order changes: ${flips.join('; ')}`;
}

/** What a compare run says about kernel time beside the per-design figures (`--json`). */
export interface RunKernelTime {
  readonly note: string;
  /** ns per event on this run's arch (null: no published cost, left out of the sum). */
  readonly costsNs: Readonly<Record<KernelEventKey, number | null>>;
  /** The ranking of the designs by modelled kernel time, redone with each weight x0.5 and x2. */
  readonly sensitivity: Sensitivity;
}

/** The costs on `arch` and the sensitivity of the ranking over every design of a run. */
export function runKernelTime(
  designs: readonly { readonly name: string; readonly kernelTime: KernelTimeBreakdown }[],
  arch: string,
): RunKernelTime {
  const costsNs = {} as Record<KernelEventKey, number | null>;
  for (const e of COST_TABLE) costsNs[e.key] = costOn(e, arch);
  const ranked = designs.map((d) => ({ name: d.name, events: eventsOf(d.kernelTime) }));
  return { note: KERNEL_TIME_NOTE, costsNs, sensitivity: sensitivity(ranked, arch) };
}

/** The counts behind a breakdown. */
export function eventsOf(b: KernelTimeBreakdown): KernelEvents {
  const out = {} as KernelEvents;
  for (const k of KERNEL_EVENT_KEYS) out[k] = b.byEvent[k].count;
  return out;
}

/** Sum of a breakdown's parts (a check that the total is the sum of the classes). */
export function sumOfParts(b: KernelTimeBreakdown): number {
  return KERNEL_EVENT_KEYS.reduce((s, k) => s + b.byEvent[k].ns, 0);
}
