/**
 * WxCounts (src/machine/wx-counts.ts), the per-frame W^X counts behind the audit: under any
 * sequence of leaf-shaped changes (4 KiB, 2 MiB and 1 GiB ranges, writable, executable or both,
 * added and later removed) it must hold exactly the counts and the violation count of two plain
 * per-frame arrays, whether a chunk is still uniform or has its own arrays.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { WxCounts } from '../src/machine/wx-counts.js';

/** The plain model: one count per frame each, violations recounted from scratch. */
class PlainCounts {
  readonly w: Uint16Array;
  readonly x: Uint16Array;
  constructor(frames: number) {
    this.w = new Uint16Array(frames);
    this.x = new Uint16Array(frames);
  }
  add(pfn: number, n: number, w: boolean, x: boolean, delta: 1 | -1): void {
    for (let f = pfn; f < pfn + n; f++) {
      if (w) this.w[f] += delta;
      if (x) this.x[f] += delta;
    }
  }
  violations(): number {
    let v = 0;
    for (let f = 0; f < this.w.length; f++) if (this.w[f] > 0 && this.x[f] > 0) v++;
    return v;
  }
}

/** 2 GiB of frames: two 1 GiB leaves, 128 chunks. */
const FRAMES = 2 * 262144;
const LEAF_FRAMES = [1, 512, 262144] as const;

const change = fc.record({
  level: fc.integer({ min: 0, max: 2 }),
  slot: fc.nat(),
  w: fc.boolean(),
  x: fc.boolean(),
});

test('WxCounts equals per-frame arrays under random leaf changes, added then removed', () => {
  fc.assert(
    fc.property(fc.array(change, { minLength: 1, maxLength: 40 }), (changes) => {
      const mine = new WxCounts(FRAMES);
      const plain = new PlainCounts(FRAMES);
      const applied: [number, number, boolean, boolean][] = [];
      const check = (): void => {
        assert.equal(mine.violations, plain.violations());
        // Every frame at a leaf edge and a sample inside, plus a full sweep now and then.
        for (const [pfn, n] of applied)
          for (const f of [pfn, pfn + n - 1, pfn + (n >> 1)]) {
            assert.equal(mine.writableOf(f), plain.w[f], `writable of ${f}`);
            assert.equal(mine.executableOf(f), plain.x[f], `executable of ${f}`);
          }
      };
      for (const c of changes) {
        const n = LEAF_FRAMES[c.level];
        const pfn = (c.slot % (FRAMES / n)) * n;
        mine.add(pfn, n, c.w, c.x, 1);
        plain.add(pfn, n, c.w, c.x, 1);
        applied.push([pfn, n, c.w, c.x]);
        check();
      }
      for (const [pfn, n, w, x] of applied.reverse()) {
        mine.add(pfn, n, w, x, -1);
        plain.add(pfn, n, w, x, -1);
        check();
      }
      for (let f = 0; f < FRAMES; f++) assert.ok(mine.writableOf(f) === 0 && mine.executableOf(f) === 0);
    }),
    { numRuns: 60 },
  );
});

test('WxCounts: a whole 1 GiB leaf on a uniform chunk counts every frame, and a piece of it splits the chunk', () => {
  const counts = new WxCounts(FRAMES);
  counts.add(0, 262144, true, false, 1); // the direct map's writable 1 GiB leaf
  counts.add(262144 + 4096 * 3, 512, true, true, 1); // a W+X 2 MiB leaf in the second GiB
  assert.equal(counts.violations, 512);
  counts.add(0, 262144, false, true, 1); // an executable alias of the whole first GiB
  assert.equal(counts.violations, 512 + 262144);
  counts.add(4096 + 7, 1, true, false, -1); // one frame of a uniform chunk loses its writable count
  assert.equal(counts.violations, 512 + 262144 - 1);
  assert.equal(counts.writableOf(4096 + 7), 0);
  assert.equal(counts.writableOf(4096 + 8), 1);
  assert.equal(counts.executableOf(4096 + 7), 1);
  assert.throws(() => counts.add(FRAMES - 1, 2, true, false, 1), /beyond memory/);
});
