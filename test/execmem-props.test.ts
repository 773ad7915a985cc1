/**
 * Property tests on the fake backend: random sequences of alloc / update / free / seal / shrink /
 * batch (and hostile calls) across all types and the three arches, every DESIGN.md section 5
 * invariant asserted after every step by the shared model (helpers/fake-backend.ts), ending
 * with a drain that must leave nothing mapped.
 */
import { test } from 'node:test';
import fc from 'fast-check';
import { ARCHES, EXECMEM_TYPES, type ExecmemType } from '../src/arch/index.js';
import { Execmem, type PoolSharing } from '../src/execmem/execmem.js';
import { ExecmemModel, FakeBackend, fakeProbe, type ModelOp } from './helpers/fake-backend.js';

const typeArb = fc.constantFrom<ExecmemType>(...EXECMEM_TYPES);
const sizeArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 600 }) },
  { weight: 3, arbitrary: fc.integer({ min: 600, max: 9000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 9000, max: 700_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 2 * 1024 * 1024 - 64, max: 2 * 1024 * 1024 + 70_000 }) },
);
const allocArb: fc.Arbitrary<ModelOp> = fc.record({
  kind: fc.constant('alloc' as const),
  type: typeArb,
  sizeBytes: sizeArb,
  alignBytes: fc.constantFrom(undefined, 1, 16, 64, 256, 4096),
  atomic: fc.boolean(),
});
const simpleArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { weight: 5, arbitrary: allocArb },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      pick: fc.nat(),
      offset: fc.nat(),
      sizeBytes: fc.integer({ min: 1, max: 5000 }),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('seal' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('shrink' as const), keepSpare: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bad' as const), which: fc.nat(), pick: fc.nat() }) },
);
export const opArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { weight: 9, arbitrary: simpleArb },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('batch' as const), ops: fc.array(simpleArb, { maxLength: 6 }) }),
  },
);

const configs: [keyof typeof ARCHES, PoolSharing][] = [
  ['x86_64', 'family'],
  ['arm64', 'family'],
  ['generic', 'family'],
  ['x86_64', 'type'],
  ['generic', 'kind'],
];
for (const [arch, sharing] of configs) {
  test(`properties: random op sequences keep every invariant (fake backend, ${arch}, sharing ${sharing})`, () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), fc.constantFrom<16 | 64>(16, 64), (ops, granule) => {
        const fb = new FakeBackend(ARCHES[arch]);
        const model = new ExecmemModel(new Execmem(fb, { granuleBytes: granule, sharing }), fakeProbe(fb));
        for (const op of ops) {
          model.apply(op);
          model.check();
        }
        model.drain();
      }),
      { numRuns: 25, seed: 0x5eed + arch.length },
    );
  });
}

test('properties: 4 KiB fallback blocks behave like huge ones', () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 30 }), (ops) => {
      const fb = new FakeBackend(ARCHES.x86_64);
      fb.hugeFallbackNext(1000);
      const model = new ExecmemModel(new Execmem(fb), fakeProbe(fb));
      for (const op of ops) {
        model.apply(op);
        model.check();
      }
      model.drain();
    }),
    { numRuns: 20, seed: 42 },
  );
});
