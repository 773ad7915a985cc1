/**
 * Property tests on the fake backend: random sequences of alloc / update / free / seal / shrink /
 * batch (and hostile calls) across all types and the three arches, every DESIGN.md section 5
 * invariant asserted after every step by the shared model (helpers/execmem-model.ts), ending
 * with a drain that must leave nothing mapped.
 */
import { test } from 'node:test';
import fc from 'fast-check';
import { ARCHES } from '../src/arch/index.js';
import { Execmem, type PoolSharing } from '../src/execmem/execmem.js';
import { ExecmemModel, fakeProbe, opArb } from './helpers/execmem-model.js';
import { FakeBackend } from './helpers/fake-backend.js';

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
