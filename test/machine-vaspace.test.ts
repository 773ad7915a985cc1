/**
 * The VA bookkeeping of vmalloc (VaSpace over RangeTree) against a naive model: a sorted list of
 * merged gaps searched linearly. First fit must return exactly the address the linear scan finds
 * (the tree only skips gaps that cannot fit), and the gaps must stay identical and merged.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { RangeTree } from '../src/machine/rangetree.js';
import { VaSpace } from '../src/machine/vmalloc.js';

const PAGE = 4096;
const BASE = 0x100000000;
const SPAN_PAGES = 512;

/** The model: merged gaps in address order, linear first fit. */
class GapList {
  gaps: [number, number][] = [];
  constructor(start: number, end: number) {
    this.gaps.push([start, end]);
  }
  find(lo: number, hi: number, size: number, align: number): number {
    for (const [s, e] of this.gaps) {
      if (e <= lo) continue;
      if (s >= hi) break;
      const va = Math.ceil(Math.max(s, lo) / align) * align;
      if (va + size <= Math.min(e, hi)) return va;
    }
    return -1;
  }
  take(va: number, size: number): void {
    const i = this.gaps.findIndex(([s, e]) => s <= va && va + size <= e);
    assert.ok(i >= 0);
    const [s, e] = this.gaps[i];
    const pieces: [number, number][] = [];
    if (s < va) pieces.push([s, va]);
    if (va + size < e) pieces.push([va + size, e]);
    this.gaps.splice(i, 1, ...pieces);
  }
  release(va: number, size: number): void {
    this.gaps.push([va, va + size]);
    this.gaps.sort((a, b) => a[0] - b[0]);
    const merged: [number, number][] = [];
    for (const g of this.gaps) {
      const last = merged[merged.length - 1];
      if (last !== undefined && last[1] === g[0]) last[1] = g[1];
      else merged.push([g[0], g[1]]);
    }
    this.gaps = merged;
  }
}

function gapsOf(space: VaSpace, model: GapList): void {
  assert.equal(space.gapCount(), model.gaps.length);
  assert.equal(
    space.freeBytes(),
    model.gaps.reduce((n, [s, e]) => n + e - s, 0),
  );
}

const opArb = fc.oneof(
  fc.record({
    k: fc.constant('alloc' as const),
    // Few small sizes at page alignment make exact fits (a gap left by an equal-sized area) common.
    pages: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 64 })),
    alignLog: fc.oneof(fc.constant(12), fc.integer({ min: 12, max: 18 })),
    lo: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: SPAN_PAGES - 1 })),
    len: fc.oneof(fc.constant(SPAN_PAGES), fc.integer({ min: 1, max: SPAN_PAGES })),
  }),
  fc.record({ k: fc.constant('free' as const), pick: fc.nat() }),
);

test('VaSpace first fit, take and release match a linear gap list', () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 150 }), (ops) => {
      const end = BASE + SPAN_PAGES * PAGE;
      const space = new VaSpace([{ start: BASE, end }]);
      const model = new GapList(BASE, end);
      const live: [number, number][] = [];
      for (const op of ops) {
        if (op.k === 'alloc') {
          const lo = BASE + op.lo * PAGE;
          const range = { start: lo, end: Math.min(end, lo + op.len * PAGE) };
          const size = op.pages * PAGE;
          const va = space.find(range, size, 2 ** op.alignLog);
          assert.equal(va, model.find(range.start, range.end, size, 2 ** op.alignLog));
          if (va >= 0) {
            space.take(va, size);
            model.take(va, size);
            live.push([va, size]);
          }
        } else if (live.length > 0) {
          const [va, size] = live.splice(op.pick % live.length, 1)[0];
          space.release(va, size);
          model.release(va, size);
        }
        gapsOf(space, model);
        space.check();
      }
    }),
    { numRuns: 60 },
  );
});

test('RangeTree floor, ceil, find and remove agree with a sorted array; stays balanced', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 400 })), { minLength: 1, maxLength: 300 }),
      (ops) => {
        const tree = new RangeTree<number>();
        const starts: number[] = [];
        for (const [add, k] of ops) {
          const start = k * 10;
          const has = starts.includes(start);
          if (add && !has) {
            tree.insert(start, start + 1 + (k % 9), k);
            starts.push(start);
            starts.sort((a, b) => a - b);
          } else if (!add && has) {
            assert.equal(tree.remove(start), k);
            starts.splice(starts.indexOf(start), 1);
          }
          const probe = k * 10 - 5;
          const below = starts.filter((s) => s <= probe).pop() ?? null;
          const above = starts.find((s) => s >= probe) ?? null;
          assert.equal(tree.floor(probe)?.start ?? null, below);
          assert.equal(tree.ceil(probe)?.start ?? null, above);
          assert.equal(tree.find(start)?.value ?? null, starts.includes(start) ? k : null);
          assert.equal(tree.size, starts.length);
        }
        tree.check();
        const seen: number[] = [];
        tree.forEach((s) => {
          seen.push(s);
        });
        assert.deepEqual(seen, starts);
      },
    ),
    { numRuns: 60 },
  );
});

test('VaSpace refuses overlapping takes and releases (assertions), leaving the gaps intact', () => {
  const space = new VaSpace([{ start: BASE, end: BASE + 16 * PAGE }]);
  space.take(BASE + 4 * PAGE, 4 * PAGE);
  assert.throws(() => space.take(BASE + 6 * PAGE, 4 * PAGE));
  assert.throws(() => space.release(BASE + 2 * PAGE, 4 * PAGE));
  assert.throws(() => space.release(BASE + 10 * PAGE, PAGE));
  assert.equal(space.gapCount(), 2);
  assert.equal(space.freeBytes(), 12 * PAGE);
  space.release(BASE + 4 * PAGE, 4 * PAGE);
  assert.equal(space.gapCount(), 1);
  space.check();
});
