/**
 * Property test of bpf_prog_pack's chunk bitmap (src/policies/bpf-prog-pack.ts, class Pack).
 *
 * Why: Pack.findZeroArea must return exactly what the kernel's
 * bitmap_find_next_zero_area(bitmap, COUNT, 0, nbits, 0) returns (first fit from bit 0), since
 * every BPF figure of the Linux rows depends on where a program lands. The fast paths (the used
 * prefix it skips, the free-count early exit, word-at-a-time scans) are checked here against a
 * bit-by-bit first fit over random sequences of takes and frees.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Pack } from '../src/policies/bpf-prog-pack.js';
import type { Area } from '../src/policies/live-set.js';

const CHUNKS = 32768;

/** The kernel's scan, one bit at a time, on a plain boolean array. */
function firstFit(bits: boolean[], nbits: number): number {
  let run = 0;
  for (let i = 0; i < CHUNKS; i++) {
    run = bits[i] ? 0 : run + 1;
    if (run === nbits) return i - nbits + 1;
  }
  return -1;
}

type Op = { kind: 'take'; nbits: number } | { kind: 'free'; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('take' as const),
      nbits: fc.oneof(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 9000 }),
        fc.integer({ min: 4000, max: 16000 }),
      ),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }) },
);

describe('bpf_prog_pack bitmap', () => {
  it('findZeroArea is the first fit from bit 0 after any sequence of takes and frees', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 120 }), (ops) => {
        const pack = new Pack({ va: 0, sizeBytes: 2 * 1024 * 1024 } as unknown as Area);
        const bits = new Array<boolean>(CHUNKS).fill(false);
        const held: { start: number; nbits: number }[] = [];
        for (const op of ops) {
          if (op.kind === 'take') {
            const want = firstFit(bits, op.nbits);
            const got = pack.findZeroArea(op.nbits);
            assert.equal(got, want, `take ${op.nbits}`);
            if (got < 0) continue;
            pack.setBits(got, op.nbits, true);
            for (let i = got; i < got + op.nbits; i++) bits[i] = true;
            held.push({ start: got, nbits: op.nbits });
          } else if (held.length > 0) {
            const [r] = held.splice(op.pick % held.length, 1);
            pack.setBits(r.start, r.nbits, false);
            for (let i = r.start; i < r.start + r.nbits; i++) bits[i] = false;
          }
          assert.equal(pack.usedChunks, bits.filter((b) => b).length);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('setBits refuses to take a used chunk or free a clear one, and changes nothing then', () => {
    const pack = new Pack({ va: 0, sizeBytes: 2 * 1024 * 1024 } as unknown as Area);
    pack.setBits(10, 5, true);
    assert.throws(() => pack.setBits(14, 3, true), /chunk 14 already true/);
    assert.throws(() => pack.setBits(20, 1, false), /chunk 20 already false/);
    assert.equal(pack.usedChunks, 5);
    assert.equal(pack.findZeroArea(10), 0);
    assert.equal(pack.findZeroArea(11), 15);
  });

  it('a run that was not there appears once chunks are freed', () => {
    const pack = new Pack({ va: 0, sizeBytes: 2 * 1024 * 1024 } as unknown as Area);
    pack.setBits(0, CHUNKS, true);
    for (let c = 100; c < 140; c += 2) pack.setBits(c, 1, false); // 20 free, none adjacent
    assert.equal(pack.findZeroArea(2), -1);
    assert.equal(pack.findZeroArea(1), 100);
    pack.setBits(101, 1, false);
    assert.equal(pack.findZeroArea(2), 100);
    assert.equal(pack.findZeroArea(4), -1);
  });
});
