/**
 * Property test of the frame contents table (src/machine/frame-contents.ts) against a Map, the
 * structure it replaced: random writes (set), look-ups and frees of aligned blocks of any order
 * (dropRange), including blocks that span several 512-frame chunks.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameContents } from '../src/machine/frame-contents.js';

const FRAMES = 4096; // 8 chunks

type Op =
  | { kind: 'set'; pfn: number }
  | { kind: 'drop'; pfn: number; order: number }
  | { kind: 'get'; pfn: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), pfn: fc.nat(FRAMES - 1) }),
  fc.record({ kind: fc.constant('drop' as const), pfn: fc.nat(FRAMES - 1), order: fc.nat(11) }),
  fc.record({ kind: fc.constant('get' as const), pfn: fc.nat(FRAMES - 1) }),
);

describe('frame contents', () => {
  it('behaves as a Map of pfn to bytes under writes, look-ups and block frees', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 200 }), fc.nat(8), (ops, spareMax) => {
        const table = new FrameContents(FRAMES);
        const model = new Map<number, Buffer>();
        for (const op of ops) {
          if (op.kind === 'set') {
            if (model.has(op.pfn)) {
              assert.throws(() => table.set(op.pfn, Buffer.alloc(1)), /already has contents/);
              continue;
            }
            const bytes = Buffer.alloc(1);
            table.set(op.pfn, bytes);
            model.set(op.pfn, bytes);
          } else if (op.kind === 'get') {
            assert.equal(table.get(op.pfn), model.get(op.pfn));
          } else {
            const count = Math.min(2 ** op.order, FRAMES);
            const start = op.pfn - (op.pfn % count);
            const spare: Buffer[] = [];
            const expected: Buffer[] = [];
            for (let p = start; p < start + count; p++) {
              const b = model.get(p);
              if (b === undefined) continue;
              model.delete(p);
              if (expected.length < spareMax) expected.push(b);
            }
            table.dropRange(start, count, spare, spareMax);
            assert.deepEqual(spare, expected);
            for (let i = 0; i < spare.length; i++) assert.equal(spare[i], expected[i]);
          }
          assert.equal(table.size, model.size);
        }
        for (let p = 0; p < FRAMES; p++) assert.equal(table.get(p), model.get(p));
      }),
      { numRuns: 200 },
    );
  });
});
