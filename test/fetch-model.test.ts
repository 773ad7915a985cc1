/**
 * Tests of the instruction-fetch model (src/metrics/fetch-model.ts).
 *
 * Why a stand-in machine: the model needs only ifetch, the TLBs, the counters, a page-table walk
 * and a local flush. The stand-in below is written in the same way the machine's fetch path
 * works (TLB lookup, on a miss a counted walk and an insert, NX and not-present faults) over
 * a plain map of leaves, so the model's arithmetic can be checked exactly against hand counts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Rng } from '../src/base/rng.js';
import { MachineFault } from '../src/machine/errors.js';
import { CpuTlb } from '../src/machine/tlb.js';
import { TLB_PROFILES } from '../src/machine/tlb-profiles.js';
import {
  LEVEL_BYTES,
  type LeafLevel,
  newCounters,
  PTE_GLOBAL,
  PTE_NX,
  PTE_PRESENT,
  type Translation,
} from '../src/machine/types.js';
import {
  type FetchFunction,
  FetchModelError,
  type FetchTarget,
  runFetchModel,
} from '../src/metrics/fetch-model.js';

const K4 = 4096;
const M2 = 2 * 1024 * 1024;
const BASE = 0xffffa0000000; // 48-bit form of a module-area-like address
const ROX = PTE_PRESENT | PTE_GLOBAL;

class StandInMachine implements FetchTarget {
  readonly counters = newCounters();
  readonly tlbs: CpuTlb[];
  private readonly leaves = new Map<string, Translation>();
  readonly kernelPt = { walk: (va: number) => this.walkLeaf(va) };

  constructor(cpus: number, profile: 'skylake' | 'zen4' = 'skylake') {
    this.tlbs = Array.from({ length: cpus }, () => new CpuTlb(TLB_PROFILES[profile]));
  }

  map(va: number, level: LeafLevel, flags = ROX): void {
    this.leaves.set(`${level}:${va}`, { va, level, pfn: (va % 2 ** 36) / K4, flags });
  }

  private walkLeaf(va: number): Translation | null {
    for (const level of [1, 2, 3] as const) {
      const base = Math.floor(va / LEVEL_BYTES[level]) * LEVEL_BYTES[level];
      const t = this.leaves.get(`${level}:${base}`);
      if (t) return t;
    }
    return null;
  }

  ifetch(cpu: number, va: number): number {
    const tlb = this.tlbs[cpu];
    let t = tlb.lookup('i', va);
    if (t === undefined) {
      this.counters.pageWalks++;
      const w = this.walkLeaf(va);
      if (w === null) throw new MachineFault('not-present', cpu, va, 'not present');
      tlb.insert('i', w);
      t = w;
    }
    if (t.flags & PTE_NX) throw new MachineFault('nx', cpu, va, 'nx');
    return 0x90;
  }

  flushLocal(cpu: number): void {
    this.counters.localFlushes++;
    this.tlbs[cpu].flushAll();
  }
}

function blocks(f: FetchFunction): number {
  return Math.floor((f.va + f.sizeBytes - 1) / 16) - Math.floor(f.va / 16) + 1;
}

describe('fetch model: exact counts', () => {
  it('one 64-byte function: 4 fetches per call, one compulsory miss', () => {
    const m = new StandInMachine(1);
    m.map(BASE, 1);
    const r = runFetchModel(m, [{ va: BASE, sizeBytes: 64 }], { calls: 10, exponent: 1, rng: new Rng(1) });
    assert.equal(r.fetches, 40);
    assert.equal(r.itlbMisses, 1);
    assert.equal(r.pageWalks, 1);
    assert.equal(r.l1Misses, 1);
    assert.equal(r.distinctPages4k, 1);
    assert.deepEqual(r.distinctLeaves, { k4: 1, m2: 0, g1: 0, total: 1 });
    assert.equal(r.missesPerMillion, 1e6 / 40);
    assert.equal(r.lowerBoundPerMillion, 1e6 / 40);
    assert.equal(r.localFlushesAdded, 1);
    assert.equal(r.faults, 0);
  });

  it('a function crossing a page boundary fetches from both pages', () => {
    const m = new StandInMachine(1);
    m.map(BASE, 1);
    m.map(BASE + K4, 1);
    const f = { va: BASE + K4 - 8, sizeBytes: 24 };
    const r = runFetchModel(m, [f], { calls: 3, exponent: 0, rng: new Rng(2) });
    assert.equal(r.fetches, 6); // blocks [K4-16, K4) and [K4, K4+16)
    assert.equal(r.itlbMisses, 2);
    assert.equal(r.distinctPages4k, 2);
  });

  it('counts faults from unmapped and NX code and goes on', () => {
    const m = new StandInMachine(1);
    m.map(BASE, 1, PTE_PRESENT | PTE_NX);
    const r = runFetchModel(
      m,
      [
        { va: BASE, sizeBytes: 32 },
        { va: BASE + 10 * K4, sizeBytes: 16 },
      ],
      { calls: 50, exponent: 0, rng: new Rng(3) },
    );
    assert.equal(r.faults, r.fetches);
    assert.ok(r.distinctLeaves.total <= 1, 'the unmapped page has no leaf');
  });
});

describe('fetch model: placement matters the way the thread says', () => {
  it('2000 small functions one per 4 KiB page miss far more than the same packed in one 2 MiB page', () => {
    const n = 2000;
    const spread = new StandInMachine(1);
    const spreadFns: FetchFunction[] = [];
    for (let i = 0; i < n; i++) {
      spread.map(BASE + i * K4, 1);
      spreadFns.push({ va: BASE + i * K4, sizeBytes: 256 });
    }
    const packed = new StandInMachine(1);
    packed.map(BASE, 2);
    const packedFns = Array.from({ length: n }, (_, i) => ({ va: BASE + i * 256, sizeBytes: 256 }));
    const opts = { calls: 20_000, exponent: 0.5 };
    const a = runFetchModel(spread, spreadFns, { ...opts, rng: new Rng(7) });
    const b = runFetchModel(packed, packedFns, { ...opts, rng: new Rng(7) });
    assert.equal(a.fetches, b.fetches, 'same calls, same sizes');
    assert.equal(b.itlbMisses, 1);
    assert.equal(b.distinctLeaves.m2, 1);
    // 2000 pages exceed the 1536-entry STLB: capacity misses on top of the compulsory ones
    assert.ok(a.itlbMisses > a.distinctLeaves.total, `${a.itlbMisses} > ${a.distinctLeaves.total}`);
    assert.ok(a.missesPerMillion > 100 * b.missesPerMillion);
  });

  it('higher Zipf exponents concentrate calls on fewer functions', () => {
    const m = new StandInMachine(1);
    m.map(BASE, 2);
    const fns = Array.from({ length: 1000 }, (_, i) => ({ va: BASE + i * 512, sizeBytes: 64 }));
    const flat = runFetchModel(m, fns, { calls: 3000, exponent: 0, rng: new Rng(5) });
    const steep = runFetchModel(m, fns, { calls: 3000, exponent: 2, rng: new Rng(5) });
    assert.ok(flat.functionsTouched > 900, `${flat.functionsTouched}`);
    assert.ok(steep.functionsTouched < 300, `${steep.functionsTouched}`);
  });

  it('is deterministic for a seed', () => {
    const make = () => {
      const m = new StandInMachine(2, 'zen4');
      const fns: FetchFunction[] = [];
      for (let i = 0; i < 300; i++) {
        m.map(BASE + i * K4, 1);
        fns.push({ va: BASE + i * K4 + 100, sizeBytes: 700 });
      }
      return runFetchModel(m, fns, { calls: 5000, exponent: 1, rng: new Rng(11), cpus: [0, 1] });
    };
    assert.deepEqual(make(), make());
  });
});

describe('fetch model: invariants over random placements', () => {
  it('misses >= compulsory lower bound, l1 misses >= misses, fetches = sum of blocks', () => {
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
        fc.constantFrom<'skylake' | 'zen4'>('skylake', 'zen4'),
        (specs, huge, calls, profile) => {
          const m = new StandInMachine(1, profile);
          if (huge) for (let p = 0; p < 4; p++) m.map(BASE + p * M2, 2);
          else for (let p = 0; p < 3004; p++) m.map(BASE + p * K4, 1);
          const fns = specs.map((s) => ({ va: BASE + s.page * K4 + s.off, sizeBytes: s.size }));
          const r = runFetchModel(m, fns, { calls, exponent: 1, rng: new Rng(calls) });
          assert.ok(r.itlbMisses >= r.distinctLeaves.total);
          assert.ok(r.l1Misses >= r.itlbMisses);
          assert.equal(r.pageWalks, r.itlbMisses);
          assert.ok(r.distinctLeaves.total <= r.distinctPages4k);
          if (huge) assert.equal(r.distinctLeaves.k4, 0);
          // fetches is a sum of whole calls' block counts
          const perCall = new Set(fns.map(blocks));
          assert.ok(r.fetches >= calls * Math.min(...perCall) && r.fetches <= calls * Math.max(...perCall));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('fetch model: bad input', () => {
  it('throws FetchModelError and touches neither TLBs nor counters', () => {
    const m = new StandInMachine(2);
    m.map(BASE, 1);
    m.ifetch(0, BASE);
    const before = JSON.stringify({
      c: m.counters,
      s: m.tlbs.map((t) => t.stats),
      n: m.tlbs.map((t) => t.entryCount()),
    });
    const good = { calls: 10, exponent: 1, rng: new Rng(1) };
    const f = [{ va: BASE, sizeBytes: 64 }];
    const bad: (() => unknown)[] = [
      () => runFetchModel(m, [], good),
      () => runFetchModel(m, [{ va: BASE, sizeBytes: 0 }], good),
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
    assert.equal(
      JSON.stringify({ c: m.counters, s: m.tlbs.map((t) => t.stats), n: m.tlbs.map((t) => t.entryCount()) }),
      before,
    );
  });
});
