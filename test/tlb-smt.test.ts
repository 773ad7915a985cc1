/**
 * Tests of SMT in the TLB model: the two hardware threads of a core (createCpuTlbs in
 * src/machine/tlb.ts) sharing, partitioning or replicating arrays as the profile says.
 *
 * Why: on Skylake the STLB is competitively shared by the two hyper-threads (tlb-profiles.ts),
 * so one thread's code can push the other's translations out, while a translation filled by one
 * thread never serves the other and a flush on one thread leaves the other's entries. The
 * list-based reference (test/tlb-ref.ts) models the core with one shared list per set and tags in
 * the keys; random sequences over both threads must agree with the real arrays in every count,
 * eviction callback and lower-bound figure.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createMachine } from '../src/machine/machine.js';
import { type CpuTlb, createCpuTlbs, type TlbSide } from '../src/machine/tlb.js';
import { TLB_PROFILES, type TlbProfile } from '../src/machine/tlb-profiles.js';
import { LEVEL_BYTES, type LeafLevel, type Translation } from '../src/machine/types.js';
import { G1, K4, type Op, opArb, RefCore, RefTlb, same, TINY_SPLIT, tr, walk } from './tlb-ref.js';

/** TINY_SPLIT with Skylake's SMT policies: L1 i 4K partitioned, i 2M replicated, the rest shared. */
const TINY_SMT: TlbProfile = {
  ...TINY_SPLIT,
  name: 'tiny-smt',
  threadsPerCore: 2,
  l1i: [
    { ...TINY_SPLIT.l1i[0], smt: 'partitioned' },
    { ...TINY_SPLIT.l1i[1], smt: 'replicated' },
  ],
  l1d: TINY_SPLIT.l1d.map((s) => ({ ...s, smt: 'shared' as const })),
  l2shared: TINY_SPLIT.l2shared.map((s) => ({ ...s, smt: 'shared' as const })),
};
/** Everything shared, L1 included (as zen4). */
const TINY_ALL_SHARED: TlbProfile = {
  ...TINY_SMT,
  name: 'tiny-all-shared',
  l1i: TINY_SPLIT.l1i.map((s) => ({ ...s, smt: 'shared' as const })),
};

type SmtOp = Op & { cpu: 0 | 1 };
const smtOpArb: fc.Arbitrary<SmtOp> = fc
  .tuple(opArb, fc.constantFrom<0 | 1>(0, 1))
  .map(([o, cpu]) => ({ ...o, cpu }));

function runCore(profile: TlbProfile, ops: SmtOp[]): void {
  const evicted: Translation[][] = [[], []];
  const siblingCalls = [0, 0];
  const tlbs = createCpuTlbs(profile, 2, (cpu) => ({
    onEvict: (t) => evicted[cpu].push(t),
    onSiblingL1i: () => siblingCalls[cpu]++,
  }));
  const core = new RefCore(2);
  const refs = [new RefTlb(profile, core, 0), new RefTlb(profile, core, 1)];
  let region1Split = false;
  for (const o of ops) {
    const tlb = tlbs[o.cpu];
    const ref = refs[o.cpu];
    if (o.op === 'split') {
      region1Split = !region1Split;
      continue;
    }
    if (o.op === 'access') {
      const got = tlb.lookup(o.side, o.va);
      assert.ok(same(got, ref.lookup(o.side, o.va)), `cpu${o.cpu} lookup ${o.side} ${o.va}`);
      if (got === undefined) {
        const t = walk(o.va, o.flags, region1Split);
        tlb.insert(o.side, t);
        ref.insert(o.side, t, o.va);
      }
    } else if (o.op === 'flush') {
      assert.equal(tlb.flushRange(o.va, o.size), ref.flushRange(o.va, o.size));
    } else {
      assert.equal(tlb.flushAll(), ref.flushAll());
    }
    for (const cpu of [0, 1]) {
      assert.equal(tlbs[cpu].entryCount(), refs[cpu].count(), `cpu${cpu} entries`);
      assert.equal(tlbs[cpu].iBoundMisses, refs[cpu].bound, `cpu${cpu} bound`);
      assert.ok(tlbs[cpu].stats.i.misses >= tlbs[cpu].iBoundMisses);
      tlbs[cpu].checkShadow();
    }
  }
  for (const cpu of [0, 1]) {
    assert.deepEqual(tlbs[cpu].stats, refs[cpu].stats);
    assert.equal(evicted[cpu].length, refs[cpu].evicted.length, `cpu${cpu} evictions`);
    for (let i = 0; i < evicted[cpu].length; i++) assert.ok(same(evicted[cpu][i], refs[cpu].evicted[i]));
  }
  const l1iShared = profile.l1i.some((s) => s.smt === 'shared');
  if (!l1iShared) assert.deepEqual(siblingCalls, [0, 0], 'private L1 iTLBs never notify the sibling');
}

describe('SMT core against the list-based reference', () => {
  for (const profile of [TINY_SMT, TINY_ALL_SHARED, TLB_PROFILES.skylake, TLB_PROFILES.zen4]) {
    it(`two threads agree with the reference (${profile.name})`, () => {
      fc.assert(
        fc.property(fc.array(smtOpArb, { minLength: 1, maxLength: 300, size: 'max' }), (ops) =>
          runCore(profile, ops),
        ),
        { numRuns: profile.name.startsWith('tiny') ? 200 : 30 },
      );
    });
  }
});

function touch(tlb: CpuTlb, side: TlbSide, va: number, level: LeafLevel = 1): boolean {
  if (tlb.lookup(side, va)) return true;
  tlb.insert(side, tr(va - (va % LEVEL_BYTES[level]), level));
  return false;
}

describe('SMT core: targeted behaviour (skylake)', () => {
  it('CPUs 2k and 2k+1 share one STLB; another core does not; an odd last CPU has no sibling', () => {
    const tlbs = createCpuTlbs(TLB_PROFILES.skylake, 5);
    const stlb = (cpu: number) => tlbs[cpu].arraysForReport().find((a) => a.spec.name === 'stlb-4k2m');
    assert.equal(stlb(0), stlb(1));
    assert.equal(stlb(2), stlb(3));
    assert.notEqual(stlb(1), stlb(2));
    const itlb = (cpu: number) => tlbs[cpu].arraysForReport()[0];
    assert.equal(itlb(0).spec.entries, 64, 'ITLB 4K halved for a thread with a sibling');
    assert.equal(itlb(0).ways, 8);
    assert.notEqual(itlb(0), itlb(1));
    assert.equal(itlb(4).spec.entries, 128, 'the lone fifth CPU has the whole ITLB');
    assert.equal(tlbs[4].arraysForReport()[1].spec.entries, 8, 'ITLB 2M: 8 per thread');
    assert.equal(tlbs[0].arraysForReport()[1].spec.entries, 8);
  });

  it('a translation filled by one thread never serves the sibling', () => {
    const [a, b] = createCpuTlbs(TLB_PROFILES.skylake, 2);
    touch(a, 'i', 5 * K4);
    assert.equal(b.lookup('i', 5 * K4), undefined);
    assert.equal(b.lookup('d', 5 * K4), undefined);
    assert.equal(b.overlapping(0, G1).length, 0);
    assert.equal(a.overlapping(0, G1).length, 1);
  });

  it('siblings compete for STLB slots: 12 pages of one set per thread push each other out', () => {
    const [a, b] = createCpuTlbs(TLB_PROFILES.skylake, 2);
    // stride 128 pages: one STLB set (128 sets) and one ITLB set (8 sets per thread)
    const pagesA = Array.from({ length: 12 }, (_, i) => i * 128 * K4);
    const pagesB = Array.from({ length: 12 }, (_, i) => (12 + i) * 128 * K4);
    for (const va of pagesA) touch(a, 'i', va);
    const missesA = a.stats.i.misses;
    for (const va of pagesA) touch(a, 'i', va);
    assert.equal(a.stats.i.misses, missesA, 'the 12-way STLB set holds all 12');
    for (const va of pagesB) touch(b, 'i', va);
    for (const va of pagesA) touch(a, 'i', va);
    assert.equal(a.stats.i.misses, missesA + 12, "B's fills evicted every one of A's entries");
    assert.equal(a.iBoundMisses, 12, 'capacity, not compulsory: the bound does not move');
  });

  it('a flush on one thread drops only its own entries in the shared arrays', () => {
    const [a, b] = createCpuTlbs(TLB_PROFILES.skylake, 2);
    touch(a, 'i', 5 * K4);
    touch(b, 'i', 5 * K4);
    touch(a, 'd', 9 * K4);
    touch(b, 'd', 9 * K4);
    const before = b.entryCount();
    assert.equal(a.flushAll(), before);
    assert.equal(a.entryCount(), 0);
    assert.equal(b.entryCount(), before);
    assert.ok(b.lookup('i', 5 * K4));
    b.flushRange(5 * K4, K4);
    assert.equal(b.lookup('i', 5 * K4), undefined);
    assert.ok(b.lookup('d', 9 * K4));
  });

  it('the sibling fill that evicts an entry calls the owner onEvict, not the filler', () => {
    const evicted: Translation[][] = [[], []];
    const [a, b] = createCpuTlbs(TINY_SMT, 2, (cpu) => ({ onEvict: (t) => evicted[cpu].push(t) }));
    // TINY_SMT: i4k is 2 sets x 2 ways, halved per thread to 1 set x 2 ways; STLB 4 sets x 2 ways
    touch(a, 'i', 0);
    touch(a, 'i', 4 * K4); // same STLB set as page 0; A's partition of i4k holds both
    touch(b, 'i', 8 * K4); // STLB set 0 now full of A's; B's fill evicts A's LRU (page 0) there
    assert.equal(evicted[1].length, 0);
    assert.equal(evicted[0].length, 0, "page 0 is still in A's own L1 partition");
    touch(a, 'i', 12 * K4); // A's partition (2 ways) evicts page 0: last copy gone
    assert.deepEqual(
      evicted[0].map((t) => t.va),
      [0],
    );
  });
});

describe('SMT core: the machine fetch micro-cache with a shared L1 iTLB (zen4)', () => {
  it("the sibling's fetches drop the cached L1 hit, so a hot page keeps its LRU place", () => {
    const m = createMachine({ arch: 'x86_64', memoryBytes: G1, cpus: 2, tlb: 'zen4', seed: 1 });
    const area = m.vmalloc({ sizeBytes: 65 * K4, range: m.arch.layout.vmalloc, prot: 'rox' });
    const hot = area.va;
    m.ifetch(0, hot);
    for (let i = 1; i <= 64; i++) {
      m.ifetch(1, area.va + i * K4); // fills the shared 64-entry L1 iTLB
      m.ifetch(0, hot + 16); // a real lookup again: refreshes the hot entry
    }
    const s = m.tlbs[0].stats.i;
    assert.deepEqual(s, { l1Hits: 64, l2Hits: 0, misses: 1 });
    const l1 = s.l1Hits;
    assert.ok(m.tlbs[0].lookup('i', hot), 'still cached');
    assert.equal(s.l1Hits, l1 + 1, 'in the L1: it was used after every sibling fill');
  });
});
