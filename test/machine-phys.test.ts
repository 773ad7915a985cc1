import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Rng } from '../src/base/rng.js';
import { MachineError } from '../src/machine/errors.js';
import { PhysMem } from '../src/machine/phys.js';

const GIB = 2 ** 30;

function code(e: unknown): string {
  assert.ok(e instanceof MachineError, `expected MachineError, got ${e}`);
  return e.code;
}

function errCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return code(e);
  }
  assert.fail('expected a MachineError');
}

test('buddy: a fresh 1 GiB machine is one order-18 block; order-0 allocation splits it all the way down', () => {
  const p = new PhysMem(GIB);
  assert.equal(p.totalFrames, 262144);
  assert.deepEqual(p.buddyInfo()[18], 1);
  const pfn = p.allocPages(0);
  assert.equal(pfn, 0);
  // One free block of every order 0..17 remains (the upper halves).
  assert.deepEqual(p.buddyInfo(), [...Array(18).fill(1), 0]);
  assert.equal(p.freeFrameCount(), 262143);
  p.freePages(pfn, 0);
  assert.deepEqual(p.buddyInfo(), [...Array(18).fill(0), 1], 'freeing merges every buddy back');
  p.check();
});

test('buddy: blocks are naturally aligned and never overlap; freeing all restores the start state', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 10 }), fc.boolean()), { maxLength: 120 }),
      (ops) => {
        const p = new PhysMem(GIB);
        const live: [number, number][] = [];
        for (const [order, freeOne] of ops) {
          if (freeOne && live.length > 0) {
            const [pfn, o] = live.splice(live.length >> 1, 1)[0];
            p.freePages(pfn, o);
          } else {
            const pfn = p.allocPages(order);
            assert.equal(pfn % 2 ** order, 0, 'natural alignment');
            for (const [q, o] of live) assert.ok(pfn + 2 ** order <= q || q + 2 ** o <= pfn, 'overlap');
            live.push([pfn, order]);
          }
        }
        const used = live.reduce((n, [, o]) => n + 2 ** o, 0);
        assert.equal(p.freeFrameCount(), p.totalFrames - used);
        p.check();
        for (const [pfn, o] of live) p.freePages(pfn, o);
        assert.deepEqual(p.buddyInfo(), [...Array(18).fill(0), 1]);
        p.check();
      },
    ),
    { numRuns: 60 },
  );
});

test('buddy: bad frees and orders are EINVAL and change nothing', () => {
  const p = new PhysMem(GIB);
  const a = p.allocPages(3);
  const before = p.buddyInfo();
  assert.equal(
    errCode(() => p.freePages(a, 2)),
    'EINVAL',
  );
  assert.throws(() => p.freePages(a + 1, 3), MachineError);
  assert.throws(() => p.freePages(-1, 0), MachineError);
  assert.throws(() => p.allocPages(19), MachineError);
  assert.throws(() => p.allocPages(1.5), MachineError);
  assert.deepEqual(p.buddyInfo(), before);
  p.freePages(a, 3);
  assert.throws(() => p.freePages(a, 3), MachineError, 'double free');
  assert.throws(() => new PhysMem(GIB + 4096), MachineError);
  assert.throws(() => new PhysMem(0), MachineError);
  p.check();
});

test('buddy: exhausting memory gives ENOMEM without damage', () => {
  const p = new PhysMem(GIB);
  const got = [p.allocPages(17), p.allocPages(17)];
  assert.equal(
    errCode(() => p.allocPages(0)),
    'ENOMEM',
  );
  p.check();
  for (const g of got) p.freePages(g, 17);
  assert.equal(p.freeFrameCount(), p.totalFrames);
});

test('contents are sparse, read zero until written, and are dropped on free', () => {
  const p = new PhysMem(GIB);
  const pfn = p.allocPages(1);
  assert.equal(p.frameBytes(pfn), undefined);
  assert.equal(p.readByte(pfn * 4096 + 5), 0);
  p.write(pfn * 4096 + 4094, Uint8Array.of(1, 2, 3, 4)); // crosses into the next frame
  assert.deepEqual(p.read(pfn * 4096 + 4094, 4), Uint8Array.of(1, 2, 3, 4));
  assert.equal(p.writtenFrameCount(), 2);
  p.fill(pfn * 4096 + 1, 6, Uint8Array.of(0xd4, 0x20));
  assert.deepEqual(p.read(pfn * 4096, 8), Uint8Array.of(0, 0xd4, 0x20, 0xd4, 0x20, 0xd4, 0x20, 0));
  p.freePages(pfn, 1);
  assert.equal(p.writtenFrameCount(), 0);
  assert.throws(() => p.write(p.totalFrames * 4096 - 1, Uint8Array.of(1, 2)), MachineError);
});

test('a frame written again after a free reads zero outside the new write (reused arrays are cleared)', () => {
  fc.assert(
    fc.property(fc.nat(4095), fc.integer({ min: 1, max: 4096 }), fc.boolean(), (off, len, useFill) => {
      const n = Math.min(len, 4096 - off);
      const p = new PhysMem(GIB);
      const old = p.allocPages(2);
      for (let f = 0; f < 4; f++) p.write((old + f) * 4096, new Uint8Array(4096).fill(0xee));
      p.freePages(old, 2);
      const pfn = p.allocPages(0);
      if (useFill) p.fill(pfn * 4096 + off, n, Uint8Array.of(0x11, 0x22));
      else p.write(pfn * 4096 + off, new Uint8Array(n).fill(0x11));
      const bytes = p.read(pfn * 4096, 4096);
      for (let i = 0; i < 4096; i++) {
        const inside = i >= off && i < off + n;
        if (!inside) assert.equal(bytes[i], 0, `byte ${i} outside [${off}, ${off + n})`);
        else assert.equal(bytes[i], useFill ? ((i - off) % 2 === 0 ? 0x11 : 0x22) : 0x11);
      }
    }),
    { numRuns: 60 },
  );
});

test('fill and equals agree with a byte-by-byte reading, across frames and unwritten ones', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 5 }),
      fc.integer({ min: 0, max: 3 * 4096 }),
      fc.integer({ min: 1, max: 6000 }),
      fc.nat(10),
      fc.boolean(),
      fc.nat(),
      (pattern, off, n, phase, touch, flip) => {
        const p = new PhysMem(GIB);
        const base = p.allocPages(3) * 4096;
        if (touch) p.write(base + 5 * 4096 + 7, Uint8Array.of(9)); // a written frame past the range
        const size = Math.min(n, 4 * 4096 - off);
        const want = new Uint8Array(size);
        for (let i = 0; i < size; i++) want[i] = pattern[(phase + i) % pattern.length];
        assert.equal(
          p.equals(base + off, want),
          want.every((b) => b === 0),
        );
        const rotated = Uint8Array.from(pattern, (_, i) => pattern[(phase + i) % pattern.length]);
        p.fill(base + off, size, rotated);
        assert.deepEqual(p.read(base + off, size), want);
        assert.ok(p.equals(base + off, want));
        want[size - 1] ^= 1;
        assert.ok(!p.equals(base + off, want));
        want[size - 1] ^= 1;
        want[flip % size] ^= 0x40; // anywhere: head, aligned words or tail of the comparison
        assert.ok(!p.equals(base + off, want));
      },
    ),
    { numRuns: 100 },
  );
});

test('injectFailure fails exactly the nth allocation of that order and leaves no trace', () => {
  const p = new PhysMem(GIB);
  p.injectFailure(0, 3);
  const a = p.allocPages(0);
  const b9 = p.allocPages(9); // other orders are not affected
  const b = p.allocPages(0);
  const before = p.buddyInfo();
  assert.equal(
    errCode(() => p.allocPages(0)),
    'ENOMEM',
  );
  assert.deepEqual(p.buddyInfo(), before);
  const c = p.allocPages(0); // one-shot
  for (const x of [a, b, c]) p.freePages(x, 0);
  p.freePages(b9, 9);
  p.check();
  assert.equal(p.freeFrameCount(), p.totalFrames);
  assert.throws(() => p.injectFailure(0, 0), MachineError);
});

test('age(fraction) removes exactly that share of 2 MiB blocks and unage restores them', () => {
  const p = new PhysMem(2 * GIB);
  const blocks2M = p.totalFrames / 512;
  p.age(0.25, new Rng(7));
  assert.equal(p.agedFrameCount(), Math.round(0.25 * blocks2M));
  p.check();
  // Exactly the remaining 75% of 2 MiB blocks can still be allocated at order 9.
  const got: number[] = [];
  for (;;) {
    try {
      got.push(p.allocPages(9));
    } catch (e) {
      assert.equal(code(e), 'ENOMEM');
      break;
    }
  }
  assert.equal(got.length, blocks2M - p.agedFrameCount());
  // Order-0 pages are still plentiful.
  const small = p.allocPages(0);
  p.freePages(small, 0);
  for (const g of got) p.freePages(g, 9);
  p.unage();
  assert.equal(p.freeFrameCount(), p.totalFrames);
  assert.deepEqual(p.buddyInfo()[18], 2);
  assert.throws(() => p.age(1.5, new Rng(1)), MachineError);
});
