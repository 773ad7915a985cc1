/**
 * The `lead` bench module (issue 12 "Done when"): ours against the best OTHER design of the same
 * compare run, the worst seed decides, a ratio that does not exist is never made up (best 0: the
 * excess is reported with target <= 0), W^X is absolute, and one real run agrees with compare's
 * own figures. No timing is asserted (the module reports modelled counts only).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  FIGURES,
  type Figure,
  figureRow,
  LEAD_MACHINES,
  leadRows,
  OURS,
  type SeedVerdict,
  seedVerdict,
} from '../bench/lead.js';
import { type BenchResult, isFact, targetMet } from '../bench/types.js';
import { type CompareResult, type PolicyMetrics, runCompare } from '../src/metrics/compare.js';

const fig = (key: Figure['key']): Figure => {
  const f = FIGURES.find((x) => x.key === key);
  assert.ok(f, key);
  return f;
};

/** A compare result with only what seedVerdict reads: names, metrics and ours' bound counter. */
function run(
  seed: number,
  rows: Record<string, Partial<PolicyMetrics>>,
  counters: Record<string, number> = {},
): CompareResult {
  return {
    seed,
    policies: Object.entries(rows).map(([name, m]) => ({ name, metrics: m as PolicyMetrics, counters })),
  } as unknown as CompareResult;
}

test('seedVerdict: ours against the minimum of the other designs, ties listed, ours never its own yardstick', () => {
  const r = run(2, {
    a: { allFlushEvents: 30 },
    b: { allFlushEvents: 20 },
    c: { allFlushEvents: 20 },
    [OURS]: { allFlushEvents: 10 },
  });
  const v = seedVerdict(r, fig('flushes'));
  assert.deepEqual(v, { seed: 2, ours: 10, best: 20, bestPolicies: ['b', 'c'], ratio: 0.5, oursBound: null });
  // Ours worse than the best other: ratio above 1.
  const w = seedVerdict(
    run(1, { a: { itlbMissesPerMillion: 4 }, [OURS]: { itlbMissesPerMillion: 5 } }),
    fig('itlb'),
  );
  assert.equal(w.ratio, 1.25);
  assert.throws(
    () => seedVerdict(run(1, { a: { itlbMissesPerMillion: 4 } }), fig('itlb')),
    /no 'execmem' row/,
  );
  assert.throws(() => seedVerdict(run(1, { [OURS]: { itlbMissesPerMillion: 4 } }), fig('itlb')), /no other/);
});

test('seedVerdict: best 0 gives ratio 1 when ours is 0 too, and no ratio when ours is above', () => {
  const zero = seedVerdict(
    run(1, { a: { directMapSplits: 0 }, [OURS]: { directMapSplits: 0 } }),
    fig('splits'),
  );
  assert.equal(zero.ratio, 1);
  const none = seedVerdict(
    run(1, { a: { directMapSplits: 0 }, [OURS]: { directMapSplits: 3 } }),
    fig('splits'),
  );
  assert.equal(none.ratio, null);
});

const v = (
  seed: number,
  ours: number,
  best: number,
  ratio: number | null,
  oursBound: number | null = null,
): SeedVerdict => ({
  seed,
  ours,
  best,
  bestPolicies: ['x'],
  ratio,
  oursBound,
});

test("mapped/live: ours' bound (text on 2 MiB) over live is in the verdict and the note says when it is out of reach", () => {
  const r = run(
    1,
    { a: { overhead: 1.2, liveBytes: 1000 }, [OURS]: { overhead: 3, liveBytes: 1000 } },
    { mappedBoundBytes: 2500 },
  );
  const verdict = seedVerdict(r, fig('mappedLive'));
  assert.equal(verdict.oursBound, 2.5);
  assert.equal(seedVerdict(r, fig('flushes')).oursBound, null, 'only mapped/live has a bound');
  const far = figureRow('m w', fig('mappedLive'), [verdict]);
  assert.equal(targetMet(far), false);
  assert.match(far.note ?? '', /our bound 2\.500 \(2\.083x best\).*out of reach/);
  const near = figureRow('m w', fig('mappedLive'), [v(1, 1.3, 1.2, 1.3 / 1.2, 1.22)]);
  assert.equal(targetMet(near), false);
  assert.doesNotMatch(near.note ?? '', /out of reach/, 'a miss the bound allows is not called out of reach');
});

test('figureRow: the worst seed decides, with the target beside it and each seed in the note', () => {
  const row = figureRow('m w', fig('itlb'), [v(1, 9, 10, 0.9), v(2, 11, 10, 1.1), v(3, 10, 10, 1)]);
  assert.equal(row.value, 1.1);
  assert.equal(row.target?.bound, 1);
  assert.equal(targetMet(row), false);
  assert.match(row.note ?? '', /seed 1: 0\.900x.*seed 2: 1\.100x.*seed 3: 1\.000x/);
  const ok = figureRow('m w', fig('itlb'), [v(1, 9, 10, 0.9), v(2, 10, 10, 1)]);
  assert.equal(targetMet(ok), true);
  // mapped/live: within 5% of the best.
  assert.equal(targetMet(figureRow('m w', fig('mappedLive'), [v(1, 1.04, 1, 1.04)])), true);
  assert.equal(targetMet(figureRow('m w', fig('mappedLive'), [v(1, 1.06, 1, 1.06)])), false);
});

test('figureRow: no ratio on a seed -> the excess over the best, target <= 0; W^X is absolute', () => {
  const row = figureRow('m w', fig('splits'), [v(1, 2, 4, 0.5), v(2, 3, 0, null)]);
  assert.equal(row.value, 3);
  assert.match(row.unit, /above the best other/);
  assert.equal(targetMet(row), false);
  const wx = figureRow('m w', fig('wx'), [v(1, 0, 0, 1), v(2, 0, 5, 0)]);
  assert.equal(wx.value, 0);
  assert.equal(targetMet(wx), true, "the others' W^X does not matter, ours must be 0");
  assert.equal(targetMet(figureRow('m w', fig('wx'), [v(1, 1, 0, null)])), false);
});

test('leadRows: one real run gives the ratios compare itself gives, every figure, and a summary', () => {
  const machine = LEAD_MACHINES[0];
  const opts = {
    workload: 'trampolines',
    arch: machine.arch,
    seed: 1,
    scale: 0.05,
    machine: { tlb: machine.tlb },
  };
  const rows = leadRows({ scale: 0.05, seeds: [1], machines: [machine], workloads: ['trampolines'] });
  const results = rows.filter((r): r is BenchResult => !isFact(r));
  assert.equal(results.length, FIGURES.length);
  const cmp = runCompare(opts);
  const ours = cmp.policies.find((p) => p.name === OURS);
  assert.ok(ours);
  const others = cmp.policies.filter((p) => p.name !== OURS);
  const bestItlb = Math.min(...others.map((p) => p.metrics.itlbMissesPerMillion));
  const itlb = results.find((r) => r.name.endsWith('iTLB misses per million fetches'));
  assert.ok(itlb);
  assert.ok(bestItlb > 0, 'trampolines: every design takes iTLB misses');
  assert.equal(itlb.value, ours.metrics.itlbMissesPerMillion / bestItlb);
  const summary = rows.find((r) => isFact(r) && r.name === 'lead: summary');
  assert.ok(summary && isFact(summary));
  const met = results.filter((r) => targetMet(r) === true).length;
  assert.match(summary.fact, new RegExp(`^${met} of ${FIGURES.length} targets met`));
});
