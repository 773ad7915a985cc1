/**
 * NumberSet (src/machine/num-set.ts), the open-addressing set of the TLB shadow and the W^X
 * filter: it must hold exactly what a Set<number> holds under the same adds, deletes and clears,
 * including long probe runs (keys that differ only above bit 32, dense pages of one region) and
 * many growths.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../src/base/rng.js';
import { NumberSet } from '../src/machine/num-set.js';

function sameContents(mine: NumberSet, ref: Set<number>, probe: readonly number[]): void {
  assert.equal(mine.size, ref.size);
  const seen: number[] = [];
  mine.forEach((k) => {
    seen.push(k);
  });
  assert.deepEqual(
    seen.sort((a, b) => a - b),
    [...ref].sort((a, b) => a - b),
  );
  for (const k of probe) assert.equal(mine.has(k), ref.has(k), `has(${k})`);
}

test('NumberSet agrees with Set under random adds, deletes and clears of leaf-like keys', () => {
  const rng = new Rng(7);
  const mine = new NumberSet();
  const ref = new Set<number>();
  // Leaf keys as the TLB layer makes them: 4 KiB-aligned VAs high in the 48-bit space, plus 1..3.
  const base = 2 ** 47 + 2 ** 40; // a high 48-bit VA
  const pool: number[] = [];
  for (let i = 0; i < 3000; i++) pool.push(base + rng.int(0, 1 << 20) * 4096 + rng.int(1, 3));
  for (let i = 0; i < 200; i++) pool.push(i * 2 ** 32 + 1); // equal low halves: one home chain
  for (let step = 0; step < 60_000; step++) {
    const k = pool[rng.int(0, pool.length - 1)];
    const r = rng.next();
    if (r < 0.55) assert.equal(mine.add(k), !ref.has(k) && ref.add(k) !== undefined);
    else if (r < 0.9999) assert.equal(mine.delete(k), ref.delete(k));
    else {
      mine.clear();
      ref.clear();
    }
    if (step % 5000 === 0) sameContents(mine, ref, pool.slice(0, 500));
  }
  sameContents(mine, ref, pool);
});

test('NumberSet: clear empties in place, growth keeps every key, bad keys are refused', () => {
  const s = new NumberSet();
  for (let i = 0; i < 10_000; i++) assert.equal(s.add(i * 4096 + 1), true);
  assert.equal(s.size, 10_000);
  assert.equal(s.add(4096 + 1), false);
  for (let i = 0; i < 10_000; i += 2) assert.equal(s.delete(i * 4096 + 1), true);
  for (let i = 0; i < 10_000; i++) assert.equal(s.has(i * 4096 + 1), i % 2 === 1);
  s.clear();
  assert.equal(s.size, 0);
  assert.equal(s.has(4096 + 1), false);
  assert.equal(s.delete(4096 + 1), false);
  assert.equal(s.add(4096 + 1), true);
  assert.throws(() => s.add(-1));
  assert.throws(() => s.add(0.5));
  assert.throws(() => s.add(2 ** 53));
});
