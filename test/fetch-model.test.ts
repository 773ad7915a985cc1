/**
 * Tests of the instruction-fetch model (src/metrics/fetch-model.ts) on the real simulated machine.
 *
 * Why on the machine: the model's figures are only as good as the path they measure, so the
 * functions live in vmalloc'd memory and every fetch goes through Machine.ifetch, the CPU's
 * CpuTlb and a counted page walk, exactly as in `execmem compare`. Small cases are checked
 * against hand counts; random placements against the invariants every run must satisfy.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Rng } from '../src/base/rng.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { TlbProfileName } from '../src/machine/tlb-profiles.js';
import {
  type FetchFunction,
  FetchModelError,
  guideTable,
  pick,
  runFetchModel,
} from '../src/metrics/fetch-model.js';

const K4 = 4096;
const M2 = 2 * 1024 * 1024;
const GIB = 2 ** 30;

function machine(tlb: TlbProfileName = 'skylake', cpus = 1): Machine {
  return createMachine({ arch: 'x86_64', memoryBytes: GIB, cpus, tlb, seed: 1 });
}

/** A vmalloc'd area: 4 KiB leaves unless huge (then 2 MiB leaves, asserted). */
function area(m: Machine, sizeBytes: number, opts: { huge?: boolean; prot?: 'rox' | 'rw' } = {}): number {
  const a = m.vmalloc({
    sizeBytes,
    range: m.arch.layout.vmalloc,
    prot: opts.prot ?? 'rox',
    allowHuge: opts.huge ?? false,
    alignBytes: opts.huge ? M2 : K4,
  });
  assert.equal(a.leafBytes, opts.huge ? M2 : K4);
  return a.va;
}

function blocks(f: FetchFunction): number {
  return Math.floor((f.va + f.sizeBytes - 1) / 16) - Math.floor(f.va / 16) + 1;
}

describe('fetch model: exact counts', () => {
  it('one 64-byte function: 4 fetches per call, one compulsory miss', () => {
    const m = machine();
    const va = area(m, K4);
    const walks0 = m.counters.pageWalks;
    const r = runFetchModel(m, [{ va, sizeBytes: 64 }], { calls: 10, exponent: 1, rng: new Rng(1) });
    assert.equal(r.fetches, 40);
    assert.equal(r.itlbMisses, 1);
    assert.equal(r.pageWalks, 1);
    assert.equal(m.counters.pageWalks - walks0, 1);
    assert.equal(r.l1Misses, 1);
    assert.equal(r.distinctPages4k, 1);
    assert.deepEqual(r.distinctLeaves, { k4: 1, m2: 0, g1: 0, total: 1 });
    assert.equal(r.boundMisses, 1);
    assert.equal(r.missesPerMillion, 1e6 / 40);
    assert.equal(r.lowerBoundPerMillion, 1e6 / 40);
    assert.equal(r.localFlushesAdded, 0, 'steady state: the model adds no flush');
    assert.equal(r.faults, 0);
  });

  it('a function crossing a page boundary fetches from both pages', () => {
    const m = machine();
    const va = area(m, 2 * K4);
    const r = runFetchModel(m, [{ va: va + K4 - 8, sizeBytes: 24 }], {
      calls: 3,
      exponent: 0,
      rng: new Rng(2),
    });
    assert.equal(r.fetches, 6); // blocks [K4-16, K4) and [K4, K4+16)
    assert.equal(r.itlbMisses, 2);
    assert.equal(r.distinctPages4k, 2);
  });

  it('counts faults from NX (data) memory and unmapped guard pages, and goes on', () => {
    const m = machine();
    const data = area(m, K4, { prot: 'rw' });
    const text = area(m, K4);
    const r = runFetchModel(
      m,
      [
        { va: data, sizeBytes: 32 },
        { va: text + K4, sizeBytes: 16 }, // the guard page after the text area
      ],
      { calls: 50, exponent: 0, rng: new Rng(3) },
    );
    assert.equal(r.faults, r.fetches);
    assert.ok(r.distinctLeaves.total <= 1, 'the guard page has no leaf');
  });

  it('steady state by default: a second run over the same code takes no miss and no bound miss', () => {
    const m = machine();
    const va = area(m, K4);
    runFetchModel(m, [{ va, sizeBytes: 64 }], { calls: 1, exponent: 1, rng: new Rng(1) });
    const flushes0 = m.counters.localFlushes;
    const r = runFetchModel(m, [{ va, sizeBytes: 64 }], { calls: 5, exponent: 1, rng: new Rng(1) });
    assert.equal(r.itlbMisses, 0);
    assert.equal(r.boundMisses, 0);
    assert.equal(r.lowerBoundPerMillion, 0);
    assert.deepEqual(r.distinctLeaves, { k4: 1, m2: 0, g1: 0, total: 1 }, 'the footprint is still there');
    assert.equal(r.localFlushesAdded, 0);
    assert.equal(m.counters.localFlushes, flushes0);
  });

  it('coldStart (explicit) flushes the used CPUs first: the misses and the bound come back', () => {
    const m = machine('skylake', 2);
    const va = area(m, K4);
    runFetchModel(m, [{ va, sizeBytes: 64 }], { calls: 4, exponent: 1, rng: new Rng(1), cpus: [0, 1] });
    const flushes0 = m.counters.localFlushes;
    const r = runFetchModel(m, [{ va, sizeBytes: 64 }], {
      calls: 40,
      exponent: 1,
      rng: new Rng(3),
      cpus: [0, 1],
      coldStart: true,
    });
    assert.equal(r.localFlushesAdded, 2);
    assert.equal(m.counters.localFlushes, flushes0 + 2);
    assert.equal(r.itlbMisses, 2, 'one walk per CPU');
    assert.equal(r.boundMisses, 2);
  });
});

describe('fetch model: placement matters the way the thread says', () => {
  it('2000 small functions one per 4 KiB vmalloc miss far more than the same packed in one 2 MiB page', () => {
    const n = 2000;
    const spread = machine();
    const spreadFns: FetchFunction[] = [];
    for (let i = 0; i < n; i++) spreadFns.push({ va: area(spread, K4), sizeBytes: 256 });
    const packed = machine();
    const base = area(packed, M2, { huge: true });
    const packedFns = Array.from({ length: n }, (_, i) => ({ va: base + i * 256, sizeBytes: 256 }));
    const opts = { calls: 20_000, exponent: 0.5 };
    const a = runFetchModel(spread, spreadFns, { ...opts, rng: new Rng(7) });
    const b = runFetchModel(packed, packedFns, { ...opts, rng: new Rng(7) });
    assert.equal(a.fetches, b.fetches, 'same calls, same sizes');
    assert.equal(b.itlbMisses, 1);
    assert.deepEqual(b.distinctLeaves, { k4: 0, m2: 1, g1: 0, total: 1 });
    // 2000 pages exceed the 1536-entry STLB: capacity misses on top of the compulsory ones
    assert.ok(a.itlbMisses > a.distinctLeaves.total, `${a.itlbMisses} > ${a.distinctLeaves.total}`);
    assert.ok(a.missesPerMillion > 100 * b.missesPerMillion);
  });

  it('higher Zipf exponents concentrate calls on fewer functions', () => {
    const m = machine();
    const base = area(m, M2, { huge: true });
    const fns = Array.from({ length: 1000 }, (_, i) => ({ va: base + i * 512, sizeBytes: 64 }));
    const flat = runFetchModel(m, fns, { calls: 3000, exponent: 0, rng: new Rng(5) });
    const steep = runFetchModel(m, fns, { calls: 3000, exponent: 2, rng: new Rng(5) });
    assert.ok(flat.functionsTouched > 900, `${flat.functionsTouched}`);
    assert.ok(steep.functionsTouched < 300, `${steep.functionsTouched}`);
  });

  it('is deterministic for a seed (zen4, two CPUs)', () => {
    const make = () => {
      const m = machine('zen4', 2);
      const base = area(m, 300 * K4);
      const fns = Array.from({ length: 300 }, (_, i) => ({ va: base + i * K4 + 100, sizeBytes: 700 }));
      return runFetchModel(m, fns, { calls: 5000, exponent: 1, rng: new Rng(11), cpus: [0, 1] });
    };
    const a = make();
    assert.deepEqual(a, make());
    assert.equal(a.localFlushesAdded, 0);
    assert.ok(a.boundMisses >= 300 && a.boundMisses <= 2 * 600, `${a.boundMisses}`);
  });
});

describe('fetch model: invariants over random placements', () => {
  it('misses >= per-CPU lower bound, l1 misses >= misses, walks = misses, fetches = whole calls (warm)', () => {
    for (const tlb of ['skylake', 'zen4', 'neoverse-n1'] as const) {
      const m = machine(tlb, 3);
      const small = area(m, 3004 * K4);
      const huge = area(m, 8 * M2, { huge: true }); // 4096 pages: room for page 3000 + 5000 B
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              page: fc.integer({ min: 0, max: 3000 }),
              off: fc.integer({ min: 0, max: 4095 }),
              size: fc.integer({ min: 1, max: 5000 }),
            }),
            { minLength: 1, maxLength: 60 },
          ),
          fc.boolean(),
          fc.integer({ min: 1, max: 150 }),
          (specs, useHuge, calls) => {
            const base = useHuge ? huge : small;
            const fns = specs.map((s) => ({ va: base + s.page * K4 + s.off, sizeBytes: s.size }));
            const r = runFetchModel(m, fns, { calls, exponent: 1, rng: new Rng(calls), cpus: [0, 1, 2] });
            assert.equal(r.faults, 0);
            assert.ok(r.itlbMisses >= r.boundMisses, `${r.itlbMisses} >= ${r.boundMisses}`);
            // each CPU needs a leaf at most once while nothing is flushed (warm, no flush here)
            assert.ok(r.boundMisses <= 3 * r.distinctLeaves.total);
            for (const t of m.tlbs) t.checkShadow();
            assert.ok(r.l1Misses >= r.itlbMisses);
            assert.equal(r.pageWalks, r.itlbMisses);
            assert.ok(r.distinctLeaves.total <= r.distinctPages4k);
            if (useHuge) assert.equal(r.distinctLeaves.k4, 0);
            else assert.equal(r.distinctLeaves.total, r.distinctPages4k);
            const perCall = fns.map(blocks);
            assert.ok(r.fetches >= calls * Math.min(...perCall) && r.fetches <= calls * Math.max(...perCall));
          },
        ),
        { numRuns: 40 },
      );
    }
  });
});

describe('fetch model: bad input', () => {
  it('throws FetchModelError and touches neither TLBs nor counters', () => {
    const m = machine('skylake', 2);
    const va = area(m, K4);
    m.ifetch(0, va);
    const snap = () =>
      JSON.stringify({ c: m.counters, s: m.tlbs.map((t) => t.stats), n: m.tlbs.map((t) => t.entryCount()) });
    const before = snap();
    const good = { calls: 10, exponent: 1, rng: new Rng(1) };
    const f = [{ va, sizeBytes: 64 }];
    const bad: (() => unknown)[] = [
      () => runFetchModel(m, [], good),
      () => runFetchModel(m, [{ va, sizeBytes: 0 }], good),
      () => runFetchModel(m, [{ va: -1, sizeBytes: 10 }], good),
      () => runFetchModel(m, [{ va: 2 ** 48 - 4, sizeBytes: 10 }], good),
      () => runFetchModel(m, f, { ...good, calls: 0 }),
      () => runFetchModel(m, f, { ...good, calls: 1.5 }),
      () => runFetchModel(m, f, { ...good, exponent: -1 }),
      () => runFetchModel(m, f, { ...good, exponent: Number.NaN }),
      () => runFetchModel(m, f, { ...good, cpus: [2] }),
      () => runFetchModel(m, f, { ...good, cpus: [] }),
    ];
    for (const b of bad)
      assert.throws(b, (e: unknown) => e instanceof FetchModelError && e.code === 'EINVAL');
    assert.equal(snap(), before);
  });
});

describe('fetch model: picking a function by its cumulative weight', () => {
  /** The plain binary search the guide table stands in for. */
  const firstAbove = (cumulative: Float64Array, u: number): number => {
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };

  it('gives exactly the binary search answer for any weights and draw, bucket edges included', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.double({ min: 0, max: 1e6, noNaN: true }), fc.constant(0)), {
          minLength: 1,
          maxLength: 300,
        }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 50 }),
        (weights, draws) => {
          const cumulative = new Float64Array(weights.length);
          let sum = 0;
          for (let i = 0; i < weights.length; i++) cumulative[i] = sum += weights[i];
          for (let i = 0; i < weights.length; i++)
            cumulative[i] = sum > 0 ? cumulative[i] / sum : (i + 1) / weights.length;
          cumulative[weights.length - 1] = 1;
          const guide = guideTable(cumulative);
          const n = cumulative.length;
          // Every bucket edge, just below and above it, every cumulative value, and the draws.
          const us = [...draws, 0];
          for (let k = 0; k <= n; k++)
            us.push(k / n, Math.max(0, k / n - 1e-12), Math.min(0.999999, k / n + 1e-12));
          for (const c of cumulative) if (c < 1) us.push(c, Math.max(0, c - 1e-15));
          for (const u of us) assert.equal(pick(cumulative, guide, u), firstAbove(cumulative, u), `u=${u}`);
        },
      ),
      { numRuns: 200 },
    );
  });
});
