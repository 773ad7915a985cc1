/**
 * Tests of the per-CPU TLB model (src/machine/tlb.ts) and its profiles, one thread per core.
 *
 * Why a reference model (test/tlb-ref.ts): the TLB keeps its state in typed arrays with LRU stamps
 * for speed; the reference keeps each set as a plain list in recency order, the textbook
 * definition of LRU. Random operation sequences must give identical hits, misses, returned
 * translations, eviction callbacks, flush counts, occupancy and lower-bound counts in both.
 * SMT sharing is tested in test/tlb-smt.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MachineError } from '../src/machine/errors.js';
import { CpuTlb, type TlbSide, type TlbStats } from '../src/machine/tlb.js';
import { TLB_PROFILES, type TlbProfile } from '../src/machine/tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from '../src/machine/types.js';
import { G1, K4, M2, type Op, opArb, RefTlb, same, TINY_AMD, TINY_SPLIT, tr, walk } from './tlb-ref.js';

function runBoth(profile: TlbProfile, ops: Op[]): void {
  const evicted: Translation[] = [];
  const tlb = new CpuTlb(profile, (t) => evicted.push(t));
  const ref = new RefTlb(profile);
  const capacity = [
    ...profile.l1i,
    ...profile.l1d,
    ...profile.l2i,
    ...profile.l2d,
    ...profile.l2shared,
  ].reduce((n, s) => n + s.entries, 0);
  const lookups = { i: 0, d: 0 };
  let region1Split = false;
  for (const o of ops) {
    if (o.op === 'split') {
      region1Split = !region1Split;
      continue;
    }
    if (o.op === 'access') {
      lookups[o.side]++;
      const got = tlb.lookup(o.side, o.va);
      const want = ref.lookup(o.side, o.va);
      assert.ok(
        same(got, want),
        `lookup ${o.side} ${o.va}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`,
      );
      if (got === undefined) {
        const t = walk(o.va, o.flags, region1Split);
        tlb.insert(o.side, t);
        ref.insert(o.side, t, o.va);
      }
    } else if (o.op === 'flush') {
      const before = tlb.overlapping(0, 4 * G1);
      const n = tlb.flushRange(o.va, o.size);
      assert.equal(n, ref.flushRange(o.va, o.size));
      // exactly the overlapping entries went; the others stayed
      assert.deepEqual(tlb.overlapping(o.va, o.size), []);
      const end = o.va + o.size;
      const kept = before.filter((t) => !(t.va < end && t.va + LEVEL_BYTES[t.level] > o.va));
      assert.equal(tlb.overlapping(0, 4 * G1).length, kept.length);
    } else {
      const n = tlb.flushAll();
      assert.equal(n, ref.flushRange(0, 4 * G1));
      assert.equal(tlb.entryCount(), 0);
    }
    assert.equal(tlb.entryCount(), ref.count());
    assert.ok(tlb.entryCount() <= capacity);
    tlb.checkShadow();
    assert.equal(tlb.iBoundMisses, ref.bound);
    assert.ok(tlb.stats.i.misses >= tlb.iBoundMisses);
    for (const a of tlb.arraysForReport()) assert.ok(a.entryCount <= a.spec.entries);
  }
  assert.deepEqual(tlb.stats, ref.stats);
  for (const side of ['i', 'd'] as const) {
    const s: TlbStats = tlb.stats[side];
    assert.equal(s.l1Hits + s.l2Hits + s.misses, lookups[side]);
  }
  assert.equal(evicted.length, ref.evicted.length);
  for (let i = 0; i < evicted.length; i++) assert.ok(same(evicted[i], ref.evicted[i]), `eviction ${i}`);
}

describe('CpuTlb against a list-based LRU reference model', () => {
  for (const profile of [TINY_SPLIT, TINY_AMD, TLB_PROFILES.skylake, TLB_PROFILES.zen4]) {
    it(`random access/flush sequences agree (${profile.name})`, () => {
      fc.assert(
        fc.property(fc.array(opArb, { minLength: 1, maxLength: 400, size: 'max' }), (ops) =>
          runBoth(profile, ops),
        ),
        { numRuns: profile.name.startsWith('tiny') ? 200 : 40 },
      );
    });
  }
});

// ---------------------------------------------------------------- targeted behaviour

function touchAll(tlb: CpuTlb, side: TlbSide, vas: number[], level: LeafLevel): void {
  for (const va of vas) if (!tlb.lookup(side, va)) tlb.insert(side, tr(va, level));
}

describe('CpuTlb geometry (skylake)', () => {
  it('holds exactly 8 2 MiB instruction translations in the L1; the 9th goes to the STLB', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const eight = Array.from({ length: 8 }, (_, i) => G1 + i * M2);
    touchAll(tlb, 'i', eight, 2);
    touchAll(tlb, 'i', eight, 2);
    assert.deepEqual(tlb.stats.i, { l1Hits: 8, l2Hits: 0, misses: 8 });
    const nine = [...eight, G1 + 8 * M2];
    const t2 = new CpuTlb(TLB_PROFILES.skylake);
    touchAll(t2, 'i', nine, 2);
    touchAll(t2, 'i', nine, 2); // cyclic over 9 with LRU over 8: every L1 probe misses
    assert.deepEqual(t2.stats.i, { l1Hits: 0, l2Hits: 9, misses: 9 });
  });

  it('holds 128 sequential 4 KiB instruction pages in the L1 (16 sets x 8 ways)', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const pages = Array.from({ length: 128 }, (_, i) => i * K4);
    touchAll(tlb, 'i', pages, 1);
    touchAll(tlb, 'i', pages, 1);
    assert.deepEqual(tlb.stats.i, { l1Hits: 128, l2Hits: 0, misses: 128 });
    touchAll(tlb, 'i', [128 * K4], 1); // evicts page 0 from its set
    assert.ok(tlb.lookup('i', 0));
    assert.equal(tlb.stats.i.l2Hits, 1);
  });

  it('9 pages mapping to one 8-way set conflict in the L1 although it is nearly empty', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const sameSet = Array.from({ length: 9 }, (_, i) => i * 16 * K4);
    touchAll(tlb, 'i', sameSet, 1);
    touchAll(tlb, 'i', sameSet, 1);
    assert.equal(tlb.stats.i.l1Hits, 0);
    assert.equal(tlb.stats.i.l2Hits, 9);
  });

  it('shares the STLB between the data and instruction sides', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    touchAll(tlb, 'd', [5 * K4], 1);
    assert.ok(tlb.lookup('i', 5 * K4 + 1));
    assert.deepEqual(tlb.stats.i, { l1Hits: 0, l2Hits: 1, misses: 0 });
  });

  it('holds a 1 GiB instruction translation smashed per 2 MiB window in the ITLB', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const g = tr(2 * G1, 3);
    assert.equal(tlb.lookup('i', 2 * G1 + 3 * M2), undefined);
    tlb.insert('i', g);
    assert.equal(tlb.lookup('i', 2 * G1 + 3 * M2 + 9), g); // L1 hit (window 3)
    assert.equal(tlb.lookup('i', 2 * G1), g); // other window: STLB 1G hit, refill
    assert.deepEqual(tlb.stats.i, { l1Hits: 1, l2Hits: 1, misses: 1 });
  });
});

describe('CpuTlb geometry (zen4)', () => {
  it('keeps the sides apart: a data walk does not serve instruction fetches', () => {
    const tlb = new CpuTlb(TLB_PROFILES.zen4);
    touchAll(tlb, 'd', [5 * K4], 1);
    assert.equal(tlb.lookup('i', 5 * K4), undefined);
    assert.equal(tlb.stats.i.misses, 1);
  });

  it('a 1 GiB page smashed into the L2 ITLB refills the L1 as the full 1 GiB entry', () => {
    const tlb = new CpuTlb(TLB_PROFILES.zen4);
    const g = tr(2 * G1, 3);
    tlb.lookup('i', 2 * G1 + 5 * M2);
    tlb.insert('i', g);
    // push it out of the 64-entry fully associative L1 with 64 other pages
    touchAll(
      tlb,
      'i',
      Array.from({ length: 64 }, (_, i) => i * K4),
      1,
    );
    assert.equal(tlb.lookup('i', 2 * G1), undefined, 'window 0 was never cached in L2');
    tlb.insert('i', g);
    touchAll(
      tlb,
      'i',
      Array.from({ length: 64 }, (_, i) => (100 + i) * K4),
      1,
    );
    const l2Before = tlb.stats.i.l2Hits;
    assert.equal(tlb.lookup('i', 2 * G1 + 5 * M2 + 1), g);
    assert.equal(tlb.stats.i.l2Hits, l2Before + 1);
    // now the L1 holds the 1 GiB entry natively: another window hits the L1
    const l1Before = tlb.stats.i.l1Hits;
    assert.equal(tlb.lookup('i', 2 * G1 + 400 * M2), g);
    assert.equal(tlb.stats.i.l1Hits, l1Before + 1);
  });
});

describe('CpuTlb semantics', () => {
  it('with stale entries of two sizes covering an address, the 4 KiB one wins, also after a hit', () => {
    for (const p of [TLB_PROFILES.zen4, TLB_PROFILES.skylake]) {
      const tlb = new CpuTlb(p);
      const big = tr(G1, 2);
      tlb.lookup('i', G1 + 5 * K4);
      tlb.insert('i', big);
      assert.equal(tlb.lookup('i', G1 + 5 * K4), big);
      const small = tr(G1 + 5 * K4, 1); // the 2 MiB leaf was split without a flush
      tlb.insert('i', small);
      assert.equal(tlb.lookup('i', G1 + 5 * K4 + 8), small, p.name);
      assert.equal(tlb.lookup('i', G1 + 6 * K4), big, p.name);
    }
  });

  it('returns the cached (stale) translation until a flush drops it', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const old = tr(0x10000, 1, 1);
    tlb.lookup('d', 0x10000);
    tlb.insert('d', old);
    // the page table may have changed to RO meanwhile; the TLB does not know
    assert.equal(tlb.lookup('d', 0x10008), old);
    assert.equal(tlb.flushRange(0x10000, K4), 2, 'one L1 and one STLB copy');
    assert.equal(tlb.lookup('d', 0x10008), undefined);
  });

  it('calls onEvict for capacity evictions of the last copy only, never for flushes', () => {
    const evicted: Translation[] = [];
    const tlb = new CpuTlb(TINY_SPLIT, (t) => evicted.push(t));
    // pages 0, 4, 8 all map to set 0 of i4k (2 sets x 2 ways) and of the STLB (4 sets x 2 ways)
    touchAll(tlb, 'i', [0, 4 * K4, 8 * K4], 1);
    assert.equal(evicted.length, 1, 'page 0 left both L1 and STLB');
    assert.equal(evicted[0].va, 0);
    tlb.flushAll();
    assert.equal(evicted.length, 1);
  });

  it('overlapping() reports entries of either side and any level, once per value', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    touchAll(tlb, 'i', [G1], 2);
    touchAll(tlb, 'd', [G1 + 4 * K4], 2); // same 2 MiB translation value, d side
    touchAll(tlb, 'd', [8 * K4], 1);
    const o = tlb.overlapping(G1 + M2 - 1, 2);
    assert.equal(o.length, 1);
    assert.equal(o[0].level, 2);
    assert.equal(tlb.overlapping(0, 2 * G1).length, 2);
    assert.deepEqual(tlb.overlapping(9 * K4, K4), []);
  });

  it('rejects bad input with MachineError EINVAL and changes nothing', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    touchAll(tlb, 'i', [0, K4], 1);
    const before = { count: tlb.entryCount(), stats: structuredClone(tlb.stats) };
    const bad: (() => unknown)[] = [
      () => tlb.flushRange(0, 0),
      () => tlb.flushRange(-K4, K4),
      () => tlb.flushRange(0.5, K4),
      () => tlb.overlapping(0, -1),
      () => tlb.insert('i', { va: 100, level: 1, pfn: 0, flags: 1 }),
      () => tlb.insert('i', { va: M2, level: 2, pfn: 3, flags: 1 }),
      () => tlb.insert('i', { va: 0, level: 4 as LeafLevel, pfn: 0, flags: 1 }),
      () => tlb.insert('i', tr(M2, 2), 0),
    ];
    for (const f of bad) {
      assert.throws(f, (e: unknown) => e instanceof MachineError && e.code === 'EINVAL');
    }
    assert.equal(tlb.entryCount(), before.count);
    assert.deepEqual(tlb.stats, before.stats);
  });

  it('profiles name their sources and have power-of-two set counts', () => {
    for (const p of Object.values(TLB_PROFILES)) {
      assert.ok(p.source.length > 10);
      assert.doesNotThrow(() => new CpuTlb(p));
    }
    assert.equal(TLB_PROFILES.skylake.l1i[0].entries, 128);
    assert.equal(TLB_PROFILES.zen4.l2d[0].entries, 3072);
  });
});

describe('CpuTlb geometry (neoverse-n1, Cortex-A76 TRM A5.2)', () => {
  it('has a 48-entry fully associative L1 iTLB and dTLB and a 1280-entry 5-way unified L2', () => {
    const tlb = new CpuTlb(TLB_PROFILES['neoverse-n1']);
    const shape = tlb.arraysForReport().map((a) => [a.spec.name, a.sets, a.ways]);
    assert.deepEqual(shape, [
      ['l1-itlb', 1, 48],
      ['l1-dtlb', 1, 48],
      ['l2-tlb', 256, 5],
    ]);
    assert.equal(TLB_PROFILES['neoverse-n1'].threadsPerCore, 1);
  });

  it('holds 48 instruction pages in the L1; 49 cycled miss it every time and hit the L2', () => {
    const tlb = new CpuTlb(TLB_PROFILES['neoverse-n1']);
    const pages = Array.from({ length: 48 }, (_, i) => i * 7 * K4);
    touchAll(tlb, 'i', pages, 1);
    touchAll(tlb, 'i', pages, 1);
    assert.deepEqual(tlb.stats.i, { l1Hits: 48, l2Hits: 0, misses: 48 });
    const t2 = new CpuTlb(TLB_PROFILES['neoverse-n1']);
    const more = [...pages, 48 * 7 * K4];
    touchAll(t2, 'i', more, 1);
    touchAll(t2, 'i', more, 1);
    assert.deepEqual(t2.stats.i, { l1Hits: 0, l2Hits: 49, misses: 49 });
  });

  it('the L2 serves both sides, and 1 GiB blocks are broken down for the L1 only', () => {
    const tlb = new CpuTlb(TLB_PROFILES['neoverse-n1']);
    touchAll(tlb, 'd', [5 * K4], 1);
    assert.ok(tlb.lookup('i', 5 * K4));
    assert.deepEqual(tlb.stats.i, { l1Hits: 0, l2Hits: 1, misses: 0 });
    const g = tr(2 * G1, 3);
    tlb.lookup('i', 2 * G1 + 3 * M2);
    tlb.insert('i', g);
    assert.equal(tlb.lookup('i', 2 * G1 + 3 * M2 + 5), g, 'L1: the 2 MiB window of the access');
    assert.equal(tlb.lookup('i', 2 * G1 + 9 * M2), g, 'L2: the whole 1 GiB block');
    assert.deepEqual(tlb.stats.i, { l1Hits: 1, l2Hits: 2, misses: 1 });
  });
});

describe('CpuTlb lower bound (infinite-TLB shadow)', () => {
  it('counts a leaf once per CPU until a flush: capacity misses are not bound misses', () => {
    const tlb = new CpuTlb(TINY_SPLIT);
    const pages = Array.from({ length: 40 }, (_, i) => i * K4);
    touchAll(tlb, 'i', pages, 1);
    touchAll(tlb, 'i', pages, 1);
    assert.equal(tlb.iBoundMisses, 40);
    assert.ok(tlb.stats.i.misses > 40, `${tlb.stats.i.misses} capacity misses on top`);
    tlb.checkShadow();
    tlb.flushAll();
    assert.equal(tlb.shadowSize(), 0);
    touchAll(tlb, 'i', pages, 1);
    assert.equal(tlb.iBoundMisses, 80);
  });

  it('a range flush drops exactly the overlapping leaves, of any size', () => {
    const tlb = new CpuTlb(TLB_PROFILES.skylake);
    const pages = Array.from({ length: 10 }, (_, i) => i * K4);
    touchAll(tlb, 'i', pages, 1);
    touchAll(tlb, 'i', [G1], 2);
    tlb.flushRange(3 * K4, 2 * K4);
    tlb.flushRange(G1 + M2 - K4, K4); // the last 4 KiB of the 2 MiB leaf
    touchAll(tlb, 'i', pages, 1);
    touchAll(tlb, 'i', [G1], 2);
    assert.equal(tlb.iBoundMisses, 11 + 2 + 1);
    tlb.flushRange(0, 2 ** 47); // a huge range over a small shadow: scanned, not probed
    assert.equal(tlb.shadowSize(), 0);
  });

  it('a data fill into a second level both sides use is in the shadow (skylake STLB), not elsewhere (zen4)', () => {
    for (const [name, bound] of [
      ['skylake', 0],
      ['zen4', 1],
    ] as const) {
      const tlb = new CpuTlb(TLB_PROFILES[name]);
      touchAll(tlb, 'd', [5 * K4], 1);
      touchAll(tlb, 'i', [5 * K4], 1);
      assert.equal(tlb.iBoundMisses, bound, name);
      assert.ok(tlb.stats.i.misses >= tlb.iBoundMisses);
      tlb.checkShadow();
    }
  });
});
