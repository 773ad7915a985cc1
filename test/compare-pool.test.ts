/**
 * The compare pool (src/cli/pool.ts) and several-seed runs (src/metrics/spread.ts): the pool's
 * results are the serial run's, figure for figure (timing fields aside); a spread's median, min
 * and max are those of the seeds' own runs; --seeds ranges parse or are usage errors; the CSV
 * reads back to the JSON; `execmem diff` takes a several-seed run by its medians.
 * Nothing here is timed: the speed targets live in bench/tool.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { toSpreadWorkloadRun, toWorkloadRun } from '../src/cli/commands/report.js';
import { decodePlan, encodePlan, runCompareJobs } from '../src/cli/pool.js';
import { parseSeeds } from '../src/cli/seeds.js';
import { planCompare, runCompare } from '../src/metrics/compare.js';
import { parseCsv } from '../src/metrics/csv.js';
import { diffRuns, readSavedRuns } from '../src/metrics/diff.js';
import { renderCharts } from '../src/metrics/report/charts.js';
import { METRIC_KEYS, type WorkloadRun } from '../src/metrics/report/types.js';
import { lowMedian, spreadCell, spreadCompare, spreadCsv } from '../src/metrics/spread.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { assertUsageError, execmem } from './cli-helpers.js';

const TIMING = new Set(['simulatorOpsPerSecond', 'simulatorOpsPerSecondRatio']);
const figures = (x: unknown) => JSON.parse(JSON.stringify(x, (k, v) => (TIMING.has(k) ? undefined : v)));

const SMALL = { workload: 'trampolines', scale: 0.05 } as const;

describe('compare pool', () => {
  it('parallel and serial runs give identical JSON (timing fields aside)', async () => {
    const jobs = [
      { ...SMALL, seed: 1 },
      { ...SMALL, seed: 2, policies: ['execmem', 'module_alloc'] },
    ];
    const serial = await runCompareJobs(jobs, { jobs: 1 });
    const parallel = await runCompareJobs(jobs, { jobs: 2 });
    assert.equal(parallel.length, 2);
    assert.deepEqual(figures(parallel), figures(serial));
    // And both are what runCompare, the one-thread API, gives.
    assert.deepEqual(figures(serial[0]), figures(runCompare({ ...SMALL, seed: 1 })));
    assert.deepEqual(
      parallel[1].policies.map((p) => p.name),
      ['execmem', 'module_alloc'],
    );
  });

  it('a plan crosses to a worker unchanged: every workload on both arches, and a given trace', () => {
    const plans = Object.keys(WORKLOADS).flatMap((workload) =>
      (['x86_64', 'arm64'] as const).map((arch) => planCompare({ workload, arch, scale: 0.02, seed: 3 })),
    );
    const given = planCompare({ workload: plans[0].trace, ageFraction: 0.1, fetch: false });
    for (const plan of [...plans, given]) assert.deepStrictEqual(decodePlan(encodePlan(plan)), plan);
    // The check can fail: a value JSON cannot carry does not come back.
    assert.throws(() =>
      assert.deepStrictEqual(decodePlan(encodePlan({ ...given, scale: Number.NaN })), {
        ...given,
        scale: Number.NaN,
      }),
    );
  });

  it('a run that throws fails the whole pool run with its error, on this thread or a worker', async () => {
    // 3 is not a whole number of GiB: every design's machine refuses it, wherever it runs.
    const bad = { ...SMALL, machine: { memoryBytes: 3 } };
    for (const jobs of [1, 2, 3])
      await assert.rejects(
        runCompareJobs([bad, { ...SMALL, seed: 2 }], { jobs }),
        /memoryBytes must be a positive multiple of 1 GiB/,
      );
    // One bad run among good ones: whichever thread claims it, the run fails with its error.
    const big = { workload: 'trampolines', scale: 0.2, seed: 1 } as const;
    await assert.rejects(
      runCompareJobs([big, { ...bad, policies: ['execmem'] }], { jobs: 2 }),
      /memoryBytes must be a positive multiple of 1 GiB/,
    );
  });

  it('reports progress for every run and a finish for each', async () => {
    const finished: string[] = [];
    await runCompareJobs([{ ...SMALL, policies: ['execmem', 'bpf_prog_pack'] }], {
      jobs: 2,
      progress: (p) => {
        if (p.finished) finished.push(p.policy);
      },
    });
    assert.deepEqual(finished.sort(), ['bpf_prog_pack', 'execmem']);
  });
});

describe('spread over seeds', () => {
  it('the low median is a measured value', () => {
    assert.equal(lowMedian([3, 1, 2]), 2);
    assert.equal(lowMedian([4, 1, 3, 2]), 2);
    assert.equal(lowMedian([7]), 7);
  });

  it('median, min, max and perSeed are the seeds own figures', async () => {
    const seeds = [1, 2, 3];
    const runs = await runCompareJobs(
      seeds.map((seed) => ({ ...SMALL, seed, policies: ['execmem', 'jit_alloc-2023'] })),
      { jobs: 2 },
    );
    const s = spreadCompare(runs);
    assert.deepEqual(s.seeds, seeds);
    s.policies.forEach((p, i) => {
      for (const key of METRIC_KEYS) {
        const values = runs.map((r) => r.policies[i].metrics[key]);
        assert.deepEqual(p.metrics[key].perSeed, values, `${p.name}.${key}`);
        assert.equal(p.metrics[key].min, Math.min(...values));
        assert.equal(p.metrics[key].max, Math.max(...values));
        assert.equal(p.metrics[key].median, [...values].sort((a, b) => a - b)[1]);
      }
      // The breakdown shown is the median seed's, and adds up to the median.
      const at = seeds.indexOf(p.medianSeed);
      assert.ok(at >= 0);
      assert.equal(p.kernelTime.totalNs, p.metrics.modelledKernelTimeNs.median);
      assert.equal(runs[at].policies[i].metrics.modelledKernelTimeNs, p.metrics.modelledKernelTimeNs.median);
    });
    // The CSV reads back to the JSON figures.
    const [header, ...records] = parseCsv(spreadCsv(s));
    assert.deepEqual(header.slice(-3), ['seed 1', 'seed 2', 'seed 3']);
    assert.equal(records.length, s.policies.length * METRIC_KEYS.length);
    for (const r of records) {
      const p = s.policies.find((x) => x.name === r[header.indexOf('policy')]);
      assert.ok(p);
      const f = p.metrics[r[header.indexOf('figure')] as (typeof METRIC_KEYS)[number]];
      assert.equal(Number(r[header.indexOf('median')]), f.median);
      assert.equal(Number(r[header.indexOf('min')]), f.min);
      assert.deepEqual(r.slice(-3).map(Number), f.perSeed);
    }
    // diff reads the several-seed document by its medians.
    const a = readSavedRuns(JSON.parse(JSON.stringify(s)), 'A');
    const b = readSavedRuns(JSON.parse(JSON.stringify(runs[0])), 'B');
    assert.equal(a.runs[0].policies[0].metrics.shootdowns, s.policies[0].metrics.shootdowns.median);
    const d = diffRuns(a, b, { a: 'A', b: 'B' });
    assert.equal(d.workloads[0].designs.length, 2);
    assert.ok(d.workloads[0].notes.some((n) => /A is the median over seeds 1,2,3/.test(n)));
    // Charts: the several-seed run draws whiskers (paths) that the one-seed run does not.
    const paths = (run: WorkloadRun) => {
      const data = { generatedAt: '', notes: [], command: '', runs: [run] };
      return renderCharts(data).reduce((n, c) => n + c.svg.split('<path').length - 1, 0);
    };
    const varies = s.policies.some((p) => METRIC_KEYS.some((k) => p.metrics[k].min !== p.metrics[k].max));
    assert.ok(varies, 'the seeds give different figures');
    assert.ok(paths(toSpreadWorkloadRun(s)) > paths(toWorkloadRun(runs[0])));
  });

  it('a cell prints median (min-max) with the column format, and the median alone when the seeds agree', () => {
    const fmt = (m: { n: number }) => m.n.toLocaleString('en-US');
    assert.equal(
      spreadCell(fmt, { n: 1234 }, { min: { n: 1100 }, max: { n: 1300 } }, 'n'),
      '1,234 (1,100-1,300)',
    );
    assert.equal(spreadCell(fmt, { n: 5 }, { min: { n: 5 }, max: { n: 5 } }, 'n'), '5');
    assert.equal(spreadCell(fmt, { n: 5 }, undefined, 'n'), '5');
  });

  it('--seeds takes ranges and lists and refuses bad ones', () => {
    assert.deepEqual(parseSeeds('1-5'), [1, 2, 3, 4, 5]);
    assert.deepEqual(parseSeeds('1,3,7'), [1, 3, 7]);
    assert.deepEqual(parseSeeds('1-2,9'), [1, 2, 9]);
    for (const bad of ['5-1', 'x', '1,,2', '1,1', '1-2000', '-3', '1.5'])
      assert.throws(() => parseSeeds(bad), InvalidArgumentError, bad);
  });
});

describe('compare --seeds (CLI)', () => {
  it('bad ranges are usage errors', () => {
    assertUsageError(execmem(['compare', '--workload', 'trampolines', '--seeds', '5-1']), /backwards/);
    assertUsageError(execmem(['compare', '--workload', 'trampolines', '--seeds', 'x']), /not a seed/);
    assertUsageError(
      execmem(['compare', '--workload', 'trampolines', '--seeds', '1-2', '--seed', '3']),
      /--seed and --seeds/,
    );
    assertUsageError(execmem(['report', '--seeds', '9-2', '--out', '/tmp']), /backwards/);
  });

  it('--json carries median, min, max and perSeed for every figure', () => {
    const r = execmem(
      ['--quiet', 'compare', '--workload', 'trampolines', '--scale', '0.02', '--seeds', '1,3', '--json'],
      120_000,
    );
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(doc.seeds, [1, 3]);
    for (const p of doc.policies) {
      for (const key of METRIC_KEYS) {
        const f = p.metrics[key];
        assert.equal(f.perSeed.length, 2, `${p.name}.${key}`);
        assert.ok(f.min <= f.median && f.median <= f.max);
      }
    }
  });
});
