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

/**
 * The pool behaviour of issue 12 item 2: families that start in 4 KiB-leaf blocks and move to
 * 2 MiB blocks at a threshold (and back below half of it), and the clean after a free (release
 * delay, at-once release of a block that is most of the mapping), with thresholds and delays
 * small enough that random sequences cross them in both directions.
 */
test('properties: small tiers, tier moves and the clean after a free keep every invariant', () => {
  const threshold = fc.constantFrom(0, 4096, 16 * 1024, 64 * 1024, 1024 * 1024);
  const options = fc.record({
    largeFromBytes: fc.record({
      text: threshold,
      rodata: threshold,
      ro_after_init: threshold,
      data: threshold,
    }),
    releaseDelayCalls: fc.constantFrom(0, 1, 3, 1024),
    spareMaxShare: fc.constantFrom(0, 2, 16),
  });
  fc.assert(
    fc.property(
      fc.array(opArb, { maxLength: 60 }),
      options,
      fc.constantFrom<keyof typeof ARCHES>('x86_64', 'arm64', 'generic'),
      (ops, opts, arch) => {
        const fb = new FakeBackend(ARCHES[arch]);
        const model = new ExecmemModel(new Execmem(fb, opts), fakeProbe(fb));
        for (const op of ops) {
          model.apply(op);
          model.check();
        }
        model.drain();
      },
    ),
    { numRuns: 60, seed: 0x12_2 },
  );
});
