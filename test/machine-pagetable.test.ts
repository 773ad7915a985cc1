import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { DirectMapTracker } from '../src/machine/directmap.js';
import { MachineError } from '../src/machine/errors.js';
import { type LeafBulkListener, PageTable } from '../src/machine/pagetable.js';
import { PhysMem } from '../src/machine/phys.js';
import type { LeafLevel, Translation } from '../src/machine/types.js';
import { LEVEL_BYTES, newCounters, PTE_GLOBAL, PTE_NX, PTE_PRESENT, PTE_RW } from '../src/machine/types.js';

const GIB = 2 ** 30;
const BASE = 0xffff80000000; // 1 GiB aligned, two PUD slots used
const FLAGS = [
  PTE_PRESENT,
  PTE_PRESENT | PTE_RW | PTE_NX,
  PTE_PRESENT | PTE_NX | PTE_GLOBAL,
  PTE_PRESENT | PTE_GLOBAL,
];

function errCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof MachineError, `expected MachineError, got ${e}`);
    return e.code;
  }
  assert.fail('expected a MachineError');
}

/** The naive reference: a list of leaves. */
class Model {
  leaves = new Map<number, Translation>();
  covering(va: number): Translation | null {
    for (const t of this.leaves.values()) if (va >= t.va && va < t.va + LEVEL_BYTES[t.level]) return t;
    return null;
  }
  overlaps(va: number, size: number): boolean {
    for (const t of this.leaves.values())
      if (t.va < va + size && va < t.va + LEVEL_BYTES[t.level]) return true;
    return false;
  }
  sorted(): Translation[] {
    return [...this.leaves.values()].sort((a, b) => a.va - b.va).map((t) => ({ ...t }));
  }
}

type Op =
  | { k: 'map'; level: LeafLevel; slot: number; f: number }
  | { k: 'fill'; slot: number; f: number }
  | { k: 'unmap'; pick: number }
  | { k: 'flags'; pick: number; f: number }
  | { k: 'split'; pick: number }
  | { k: 'collapse'; slot: number; level: 2 | 3 }
  | { k: 'collapseOver'; pick: number; level: 2 | 3 }
  | { k: 'mapInside'; pick: number; page: number }
  | { k: 'splitBig'; pick: number }
  | { k: 'check' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant('map' as const),
    level: fc.constantFrom<LeafLevel>(1, 1, 2, 3),
    slot: fc.nat(1023),
    f: fc.nat(3),
  }),
  fc.record({ k: fc.constant('fill' as const), slot: fc.nat(1023), f: fc.nat(3) }),
  fc.record({ k: fc.constant('unmap' as const), pick: fc.nat() }),
  fc.record({ k: fc.constant('flags' as const), pick: fc.nat(), f: fc.nat(3) }),
  fc.record({ k: fc.constant('split' as const), pick: fc.nat() }),
  fc.record({
    k: fc.constant('collapse' as const),
    slot: fc.nat(1023),
    level: fc.constantFrom<2 | 3>(2, 2, 3),
  }),
  // Aimed at existing leaves (split pieces above all): collapse the range a leaf lies in, and map
  // a 4 KiB leaf inside a leaf (always EBUSY).
  fc.record({
    k: fc.constant('collapseOver' as const),
    pick: fc.nat(),
    level: fc.constantFrom<2 | 3>(2, 2, 3),
  }),
  fc.record({ k: fc.constant('mapInside' as const), pick: fc.nat(), page: fc.nat() }),
  // A split of a 2 MiB or 1 GiB leaf (a plain pick is mostly a 4 KiB leaf once any exist).
  fc.record({ k: fc.constant('splitBig' as const), pick: fc.nat() }),
);

/** Address of slot `slot` for a leaf of `level` inside the 2 GiB window. */
function slotVa(level: LeafLevel, slot: number): number {
  const n = (2 * GIB) / LEVEL_BYTES[level];
  return BASE + (slot % n) * LEVEL_BYTES[level];
}

function expectCollapse(m: Model, va: number, level: 2 | 3): boolean {
  const sub = (level - 1) as LeafLevel;
  const first = m.leaves.get(va);
  if (first === undefined || first.level !== sub || first.pfn % (LEVEL_BYTES[level] / 4096) !== 0)
    return false;
  for (let i = 1; i < 512; i++) {
    const t = m.leaves.get(va + i * LEVEL_BYTES[sub]);
    if (t === undefined || t.level !== sub || t.flags !== first.flags) return false;
    if (t.pfn !== first.pfn + (i * LEVEL_BYTES[sub]) / 4096) return false;
  }
  return true;
}

/**
 * The model test, in two set-ups: with a plain listener (every split makes its 512 leaves at once
 * and is heard leaf by leaf), and with bulk listeners only, where a split table's leaves are made
 * when first read (PageTable's Table.lazy). In the second the full comparison, which reads every
 * leaf, runs only at `check` steps, so operations also meet tables whose pieces are still implicit.
 */
function matchesModel(plain: boolean): void {
  const ops = fc.array(plain ? opArb : fc.oneof(opArb, fc.constant<Op>({ k: 'check' })), {
    minLength: 1,
    maxLength: 60,
  });
  fc.assert(
    fc.property(ops, (ops) => {
      const phys = new PhysMem(GIB);
      const counters = newCounters();
      const pt = new PageTable(phys, counters, 'test');
      const model = new Model();
      const heard = new Model(); // rebuilt only from listener events
      if (plain) {
        pt.addListener({
          onLeafChange(c) {
            if (c.old !== null) {
              assert.deepEqual(
                heard.leaves.get(c.old.va),
                c.old,
                'listener removed a leaf it never heard of',
              );
              heard.leaves.delete(c.old.va);
            }
            if (c.next !== null) heard.leaves.set(c.next.va, c.next);
          },
        });
      }
      // A bulk listener (split / collapse as one event) keeps bytes per leaf size; it must see
      // the table as the contract says at each call and end up where the per-change view is.
      const sizes = new DirectMapTracker(0, 2 ** 48);
      pt.addListener(sizes);
      const contract: LeafBulkListener = {
        onLeafChange() {},
        onSplit(old: Translation) {
          assert.equal(pt.walk(old.va), null, 'pieces not yet in place');
        },
        onCollapse(big: Translation) {
          assert.equal(pt.walk(big.va + LEVEL_BYTES[big.level] - 1), big, 'big leaf in place');
        },
      };
      pt.addListener(contract);
      for (const op of ops) {
        const list = model.sorted();
        const pick = (n: number) => list[n % list.length];
        if (op.k === 'check') {
          // below
        } else if (op.k === 'map') {
          const va = slotVa(op.level, op.slot);
          const size = LEVEL_BYTES[op.level];
          const leafFrames = size / 4096;
          const pfn = ((op.slot * 7919) % Math.min(64, phys.totalFrames / leafFrames)) * leafFrames;
          if (model.overlaps(va, size)) {
            assert.equal(
              errCode(() => pt.mapLeaf(va, op.level, pfn, FLAGS[op.f])),
              'EBUSY',
            );
          } else {
            pt.mapLeaf(va, op.level, pfn, FLAGS[op.f]);
            model.leaves.set(va, { va, level: op.level, pfn, flags: FLAGS[op.f] });
          }
        } else if (op.k === 'fill') {
          const va = slotVa(2, op.slot);
          if (!model.overlaps(va, LEVEL_BYTES[2])) {
            for (let i = 0; i < 512; i++) {
              const t = { va: va + i * 4096, level: 1 as const, pfn: 512 + i, flags: FLAGS[op.f] };
              pt.mapLeaf(t.va, 1, t.pfn, t.flags);
              model.leaves.set(t.va, t);
            }
          }
        } else if (list.length === 0) {
          // nothing to pick
        } else if (op.k === 'mapInside') {
          const t = pick(op.pick);
          const va = t.va + (op.page % (LEVEL_BYTES[t.level] / 4096)) * 4096;
          assert.equal(
            errCode(() => pt.mapLeaf(va, 1, 0, FLAGS[0])),
            'EBUSY',
          );
        } else if (op.k === 'unmap') {
          const t = pick(op.pick);
          assert.deepEqual({ ...pt.unmapLeaf(t.va, t.level) }, t);
          model.leaves.delete(t.va);
        } else if (op.k === 'flags') {
          const t = pick(op.pick);
          pt.setLeafFlags(t.va, t.level, FLAGS[op.f]);
          model.leaves.set(t.va, { ...t, flags: FLAGS[op.f] });
        } else if (op.k === 'split' || op.k === 'splitBig') {
          const big = list.filter((l) => l.level > 1);
          if (op.k === 'splitBig' && big.length === 0) continue;
          const t = op.k === 'split' ? pick(op.pick) : big[op.pick % big.length];
          if (t.level === 1) {
            assert.throws(() => pt.split(t.va, 1 as 2), MachineError);
          } else {
            pt.split(t.va, t.level as 2 | 3);
            model.leaves.delete(t.va);
            const sub = (t.level - 1) as LeafLevel;
            for (let i = 0; i < 512; i++) {
              const v = t.va + i * LEVEL_BYTES[sub];
              model.leaves.set(v, {
                va: v,
                level: sub,
                pfn: t.pfn + (i * LEVEL_BYTES[sub]) / 4096,
                flags: t.flags,
              });
            }
          }
        } else {
          // collapse at a slot, or over the range a picked leaf lies in
          const va =
            op.k === 'collapse'
              ? slotVa(op.level, op.slot)
              : pick(op.pick).va - (pick(op.pick).va % LEVEL_BYTES[op.level]);
          const want = expectCollapse(model, va, op.level);
          assert.equal(pt.tryCollapse(va, op.level), want);
          if (want) {
            const first = model.leaves.get(va) as Translation;
            for (let i = 0; i < 512; i++)
              model.leaves.delete(va + i * LEVEL_BYTES[(op.level - 1) as LeafLevel]);
            model.leaves.set(va, { va, level: op.level, pfn: first.pfn, flags: first.flags });
          }
        }
        // Sizes and frame accounting agree after every step; leaves, walks and the listener view
        // after every step with a plain listener, else at check steps.
        const bytes = [0, 0, 0, 0];
        for (const t of model.leaves.values()) bytes[t.level] += LEVEL_BYTES[t.level];
        assert.deepEqual(sizes.stats, { bytes4k: bytes[1], bytes2m: bytes[2], bytes1g: bytes[3] });
        if (plain || op.k === 'check') {
          const leaves: Translation[] = [];
          pt.forEachLeaf(0, 2 ** 48, (t) => leaves.push({ ...t }));
          assert.deepEqual(leaves, model.sorted());
          if (plain) assert.deepEqual(heard.sorted(), model.sorted());
          for (const t of model.leaves.values()) {
            const probe = t.va + LEVEL_BYTES[t.level] - 1;
            assert.deepEqual({ ...(pt.walk(probe) as Translation) }, t);
          }
        }
        assert.equal(pt.walk(BASE - 1), null);
        assert.equal(pt.walk(BASE + 2 * GIB), null);
        const frames = pt.tableFrames();
        assert.equal(new Set(frames).size, frames.length, 'a table frame used twice');
        assert.equal(frames.length, pt.tableFrameCount());
        assert.equal(phys.freeFrameCount() + pt.tableFrameCount(), phys.totalFrames, 'table frames leaked');
        assert.equal(counters.ptFramesAllocated - counters.ptFramesFreed, pt.tableFrameCount());
      }
      // Tear down: every table but the root is freed.
      for (const t of model.sorted()) pt.unmapLeaf(t.va, t.level);
      assert.equal(pt.tableFrameCount(), 1);
      phys.check();
    }),
    { numRuns: 80 },
  );
}

test('page table matches a naive leaf-list model under random map/unmap/flags/split/collapse', () => {
  matchesModel(true);
});

test('the same with bulk listeners only: split tables make their leaves when first read', () => {
  matchesModel(false);
});

test('split then collapse restores identical leaves, at both levels', () => {
  const phys = new PhysMem(2 * GIB);
  const pt = new PageTable(phys, newCounters(), 'test');
  const flags = PTE_PRESENT | PTE_RW | PTE_NX | PTE_GLOBAL;
  pt.mapLeaf(BASE, 3, 262144, flags);
  const before = pt.walk(BASE + 12345);
  const tables = pt.tableFrameCount();
  pt.split(BASE, 3);
  pt.split(BASE + 5 * LEVEL_BYTES[2], 2);
  assert.equal(pt.tableFrameCount(), tables + 2);
  assert.equal(pt.walk(BASE + 5 * LEVEL_BYTES[2] + 8192)?.level, 1);
  assert.equal(pt.walk(BASE + 5 * LEVEL_BYTES[2] + 8192)?.pfn, 262144 + 5 * 512 + 2);
  assert.equal(pt.tryCollapse(BASE, 3), false, 'a PMD table holding a PTE table is not uniform');
  assert.equal(pt.tryCollapse(BASE + 5 * LEVEL_BYTES[2] + 4096, 2), true);
  assert.equal(pt.tryCollapse(BASE, 3), true);
  assert.deepEqual(pt.walk(BASE + 12345), before);
  assert.equal(pt.tableFrameCount(), tables);
  // A changed entry blocks the collapse.
  pt.split(BASE, 3);
  pt.setLeafFlags(BASE + LEVEL_BYTES[2], 2, PTE_PRESENT | PTE_NX);
  assert.equal(pt.tryCollapse(BASE, 3), false);
});

test('a split with bulk listeners only: its pieces read, block, change, unmap and collapse as made ones', () => {
  const phys = new PhysMem(2 * GIB);
  const pt = new PageTable(phys, newCounters(), 'test');
  pt.addListener(new DirectMapTracker(0, 2 ** 48)); // bulk: the split leaves its pieces implicit
  const flags = PTE_PRESENT | PTE_NX | PTE_GLOBAL;
  const M2 = LEVEL_BYTES[2];
  const pmd = BASE + 3 * M2;
  pt.mapLeaf(pmd, 2, 1024, flags);
  pt.split(pmd, 2);
  // Untouched: collapses back to the same value.
  assert.equal(pt.tryCollapse(pmd, 2), true);
  assert.deepEqual({ ...(pt.walk(pmd + 77) as Translation) }, { va: pmd, level: 2, pfn: 1024, flags });
  pt.split(pmd, 2);
  // Every piece is in place: found by a walk, and nothing maps over it.
  assert.deepEqual(
    { ...(pt.walk(pmd + 7 * 4096 + 5) as Translation) },
    { va: pmd + 7 * 4096, level: 1, pfn: 1031, flags },
  );
  assert.equal(
    errCode(() => pt.mapLeaf(pmd + 9 * 4096, 1, 0, flags)),
    'EBUSY',
  );
  // A changed piece (one made, one still implicit next to it) blocks the collapse until changed back.
  pt.setLeafFlags(pmd + 5 * 4096, 1, flags | PTE_RW);
  assert.equal(pt.tryCollapse(pmd, 2), false);
  pt.setFlagsRun(
    pmd + 4 * 4096,
    pmd + 7 * 4096,
    () => flags,
    () => {},
  );
  assert.equal(pt.tryCollapse(pmd, 2), true);
  // The same with the first piece changed: the implicit ones no longer match it.
  pt.split(pmd, 2);
  pt.setLeafFlags(pmd, 1, flags | PTE_RW);
  assert.equal(pt.tryCollapse(pmd, 2), false);
  pt.setLeafFlags(pmd, 1, flags);
  assert.equal(pt.tryCollapse(pmd, 2), true);
  // Unmapping one piece leaves the other 511 in place, with their own frames.
  pt.split(pmd, 2);
  assert.deepEqual(
    { ...pt.unmapLeaf(pmd + 3 * 4096, 1) },
    { va: pmd + 3 * 4096, level: 1, pfn: 1027, flags },
  );
  assert.equal(pt.walk(pmd + 3 * 4096), null);
  assert.equal(pt.walk(pmd + 4 * 4096)?.pfn, 1028);
  assert.equal(pt.tryCollapse(pmd, 2), false);
  const leaves: Translation[] = [];
  pt.forEachLeaf(pmd, pmd + M2, (t) => leaves.push(t));
  assert.equal(leaves.length, 511);
  assert.ok(
    leaves.every(
      (t, k) =>
        t.pfn === 1024 + (t.va - pmd) / 4096 && t.flags === flags && (k < 3 || t.va !== pmd + 3 * 4096),
    ),
  );
  // A 1 GiB split: a 2 MiB piece splits again, and a piece of a piece is walked.
  pt.mapLeaf(BASE + GIB, 3, 262144, flags);
  pt.split(BASE + GIB, 3);
  pt.split(BASE + GIB + 6 * M2, 2);
  assert.equal(pt.walk(BASE + GIB + 6 * M2 + 2 * 4096)?.pfn, 262144 + 6 * 512 + 2);
  assert.equal(pt.walk(BASE + GIB + 7 * M2)?.pfn, 262144 + 7 * 512);
  assert.equal(pt.tryCollapse(BASE + GIB + 6 * M2, 2), true);
  assert.equal(pt.tryCollapse(BASE + GIB, 3), true);
  assert.equal(pt.walk(BASE + GIB + 5)?.level, 3);
});

test('mapLeaf that cannot get a table frame throws ENOMEM and leaves nothing behind', () => {
  const phys = new PhysMem(GIB);
  const pt = new PageTable(phys, newCounters(), 'test');
  const free = phys.freeFrameCount();
  for (let nth = 1; nth <= 3; nth++) {
    phys.injectFailure(0, nth);
    assert.equal(
      errCode(() => pt.mapLeaf(BASE + 4096, 1, 7, PTE_PRESENT)),
      'ENOMEM',
    );
    assert.equal(phys.freeFrameCount(), free);
    assert.equal(pt.tableFrameCount(), 1);
    assert.equal(pt.walk(BASE + 4096), null);
  }
  phys.clearInjectedFailures();
  pt.mapLeaf(BASE + 4096, 1, 7, PTE_PRESENT);
  assert.equal(pt.tableFrameCount(), 4);
  phys.check();
});

test('page table bad inputs are typed errors and change nothing', () => {
  const phys = new PhysMem(GIB);
  const pt = new PageTable(phys, newCounters(), 'test');
  pt.mapLeaf(BASE, 2, 512, PTE_PRESENT);
  const dump = () => {
    const l: Translation[] = [];
    pt.forEachLeaf(0, 2 ** 48, (t) => l.push(t));
    return JSON.stringify(l);
  };
  const before = dump();
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + 1, 1, 0, PTE_PRESENT)),
    'EINVAL',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + 4096, 1, 0, PTE_PRESENT)),
    'EBUSY',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + LEVEL_BYTES[2], 2, 3, PTE_PRESENT)),
    'EINVAL',
    'misaligned pfn',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + LEVEL_BYTES[2], 2, 2 ** 30, PTE_PRESENT)),
    'EINVAL',
    'pfn beyond memory',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + LEVEL_BYTES[2], 2, 0, PTE_RW)),
    'EINVAL',
    'not present',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE + LEVEL_BYTES[2], 2, 0, 64 | PTE_PRESENT)),
    'EINVAL',
    'unknown bit',
  );
  assert.equal(
    errCode(() => pt.unmapLeaf(BASE, 1)),
    'ENOENT',
  );
  assert.equal(
    errCode(() => pt.unmapLeaf(BASE + LEVEL_BYTES[2], 2)),
    'ENOENT',
  );
  assert.equal(
    errCode(() => pt.setLeafFlags(BASE, 2, 0)),
    'EINVAL',
  );
  assert.equal(
    errCode(() => pt.split(BASE + 4096, 2)),
    'EINVAL',
  );
  assert.equal(
    errCode(() => pt.mapLeaf(BASE, 3, 0, PTE_PRESENT)),
    'EBUSY',
  );
  assert.equal(
    errCode(() => pt.split(BASE, 1 as 2)),
    'EINVAL',
  );
  assert.equal(dump(), before);
  assert.equal(pt.tableFrameCount(), 3, 'root, PUD and PMD tables only');
});
