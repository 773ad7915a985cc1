/**
 * Tests of the per-CPU TLB model (src/machine/tlb.ts) and its profiles.
 *
 * Why a reference model: the TLB keeps its state in typed arrays with LRU stamps for speed; the
 * reference below keeps each set as a plain list in recency order, the textbook definition of
 * LRU. Random operation sequences must give identical hits, misses, returned translations,
 * eviction callbacks, flush counts and occupancy in both.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MachineError } from '../src/machine/errors.js';
import { CpuTlb, type TlbSide, type TlbStats } from '../src/machine/tlb.js';
import { TLB_PROFILES, type TlbArraySpec, type TlbProfile } from '../src/machine/tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from '../src/machine/types.js';

const K4 = 4096;
const M2 = 2 * 1024 * 1024;
const G1 = 1024 * 1024 * 1024;

function tr(va: number, level: LeafLevel, flags = 1): Translation {
  return { va, level, pfn: va / K4, flags };
}

function same(a: Translation | undefined, b: Translation | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.va === b.va && a.level === b.level && a.pfn === b.pfn && a.flags === b.flags;
}

// ---------------------------------------------------------------- reference model

interface RefSlot {
  key: string;
  t: Translation;
}

class RefArray {
  readonly sets: RefSlot[][];
  constructor(readonly spec: TlbArraySpec) {
    this.sets = Array.from({ length: spec.entries / spec.ways }, () => []);
  }
  keyLevel(level: LeafLevel): LeafLevel | 0 {
    if (this.spec.levels.includes(level)) return level;
    if (level === 3 && this.spec.smash1g) return 2;
    return 0;
  }
  private where(va: number, keyLevel: LeafLevel): { set: RefSlot[]; key: string } {
    const page = Math.floor(va / LEVEL_BYTES[keyLevel]);
    return { set: this.sets[page % this.sets.length], key: `${keyLevel}:${page}` };
  }
  find(va: number): Translation | undefined {
    for (const level of [...this.spec.levels].sort()) {
      const { set, key } = this.where(va, level);
      const i = set.findIndex((s) => s.key === key);
      if (i >= 0) {
        const [slot] = set.splice(i, 1);
        set.push(slot);
        return slot.t;
      }
    }
    return undefined;
  }
  put(t: Translation, accessVa: number): Translation | undefined {
    const kl = this.keyLevel(t.level);
    assert.notEqual(kl, 0);
    const { set, key } = this.where(kl === t.level ? t.va : accessVa, kl as LeafLevel);
    const i = set.findIndex((s) => s.key === key);
    if (i >= 0) {
      const [old] = set.splice(i, 1);
      set.push({ key, t });
      return same(old.t, t) ? undefined : old.t;
    }
    set.push({ key, t });
    if (set.length > this.spec.ways) return set.shift()!.t;
    return undefined;
  }
  all(): Translation[] {
    return this.sets.flatMap((s) => s.map((x) => x.t));
  }
  drop(start: number, end: number): number {
    let n = 0;
    for (const set of this.sets) {
      for (let i = set.length - 1; i >= 0; i--) {
        const t = set[i].t;
        if (t.va < end && t.va + LEVEL_BYTES[t.level] > start) {
          set.splice(i, 1);
          n++;
        }
      }
    }
    return n;
  }
}

class RefTlb {
  stats = { i: { l1Hits: 0, l2Hits: 0, misses: 0 }, d: { l1Hits: 0, l2Hits: 0, misses: 0 } };
  evicted: Translation[] = [];
  l1: Record<TlbSide, RefArray[]>;
  l2: Record<TlbSide, RefArray[]>;
  arrays: RefArray[];
  constructor(p: TlbProfile) {
    const shared = p.l2shared.map((s) => new RefArray(s));
    this.l1 = { i: p.l1i.map((s) => new RefArray(s)), d: p.l1d.map((s) => new RefArray(s)) };
    this.l2 = {
      i: [...p.l2i.map((s) => new RefArray(s)), ...shared],
      d: [...p.l2d.map((s) => new RefArray(s)), ...shared],
    };
    this.arrays = [...this.l1.i, ...this.l1.d, ...new Set([...this.l2.i, ...this.l2.d])];
  }
  private fill(arrays: RefArray[], t: Translation, va: number): void {
    const a = arrays.find((x) => x.keyLevel(t.level) !== 0);
    if (!a) return;
    const gone = a.put(t, va);
    if (gone && !this.arrays.some((x) => x.all().some((y) => same(y, gone)))) this.evicted.push(gone);
  }
  lookup(side: TlbSide, va: number): Translation | undefined {
    for (const a of this.l1[side]) {
      const t = a.find(va);
      if (t) {
        this.stats[side].l1Hits++;
        return t;
      }
    }
    for (const a of this.l2[side]) {
      const t = a.find(va);
      if (t) {
        this.stats[side].l2Hits++;
        this.fill(this.l1[side], t, va);
        return t;
      }
    }
    this.stats[side].misses++;
    return undefined;
  }
  insert(side: TlbSide, t: Translation, va: number): void {
    this.fill(this.l1[side], t, va);
    this.fill(this.l2[side], t, va);
  }
  flushRange(va: number, size: number): number {
    return this.arrays.reduce((n, a) => n + a.drop(va, va + size), 0);
  }
  count(): number {
    return this.arrays.reduce((n, a) => n + a.all().length, 0);
  }
}

// ---------------------------------------------------------------- profiles and address space

/** Tiny geometry so that random sequences hit conflicts and evictions quickly. */
const TINY_SPLIT: TlbProfile = {
  name: 'tiny-split',
  source: 'test',
  unverified: [],
  threadsPerCore: 1,
  l1i: [
    { name: 'i4k', entries: 4, ways: 2, levels: [1] },
    { name: 'i2m', entries: 2, ways: 2, levels: [2], smash1g: true },
  ],
  l1d: [
    { name: 'd4k', entries: 4, ways: 2, levels: [1] },
    { name: 'd2m', entries: 2, ways: 1, levels: [2] },
    { name: 'd1g', entries: 1, ways: 1, levels: [3] },
  ],
  l2i: [],
  l2d: [],
  l2shared: [
    { name: 's', entries: 8, ways: 2, levels: [1, 2] },
    { name: 's1g', entries: 2, ways: 2, levels: [3] },
  ],
};
const TINY_AMD: TlbProfile = {
  name: 'tiny-amd',
  source: 'test',
  unverified: [],
  threadsPerCore: 1,
  l1i: [{ name: 'i', entries: 3, ways: 3, levels: [1, 2, 3] }],
  l1d: [{ name: 'd', entries: 3, ways: 3, levels: [1, 2, 3] }],
  l2i: [{ name: 'l2i', entries: 4, ways: 2, levels: [1, 2], smash1g: true }],
  l2d: [{ name: 'l2d', entries: 8, ways: 4, levels: [1, 2], smash1g: true }],
  l2shared: [],
};

/**
 * The "page table": 1 GiB region 0 holds 4 KiB pages, region 1 holds 2 MiB pages (or 4 KiB
 * pages after a 'split' op, without a flush, so stale entries of both sizes overlap), region 2
 * is one 1 GiB page.
 */
function walk(va: number, flags: number, region1Split: boolean): Translation {
  if (va < G1 || (va < 2 * G1 && region1Split)) return tr(Math.floor(va / K4) * K4, 1, flags);
  if (va < 2 * G1) return tr(Math.floor(va / M2) * M2, 2, flags);
  return tr(2 * G1, 3, flags);
}

const vaArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }).map((p) => p * K4 + 7),
  fc.integer({ min: 0, max: 12 }).map((p) => G1 + p * M2 + 100),
  fc.integer({ min: 0, max: 6 }).map((w) => 2 * G1 + w * M2 + 3),
);
type Op =
  | { op: 'access'; side: TlbSide; va: number; flags: number }
  | { op: 'flush'; va: number; size: number }
  | { op: 'flushAll' }
  | { op: 'split' };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      op: fc.constant('access' as const),
      side: fc.constantFrom<TlbSide>('i', 'd'),
      va: vaArb,
      flags: fc.constantFrom(1, 3),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('flush' as const),
      va: vaArb.map((v) => Math.floor(v / K4) * K4),
      size: fc.constantFrom(K4, 3 * K4, M2, G1),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'flushAll' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'split' as const }) },
);

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
