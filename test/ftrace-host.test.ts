/**
 * ftrace on real memory (issue 15, "on both backends"): the CPU runs the patched sites. Traced
 * functions still return their own answer and each call is counted once by its ops' trampoline;
 * untraced ones are not counted; detach restores the NOP byte for byte; W^X holds throughout
 * (the arena audit reads the real page protections).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { FtraceError } from '../src/consumers/ftrace/errors.js';
import { HOST_FUNCTION_BYTES, HostFtrace } from '../src/consumers/ftrace/host-run.js';
import { callTargetOf, X86_NOP5 } from '../src/consumers/ftrace/x86.js';
import { Execmem } from '../src/execmem/execmem.js';
import { type HostBackend, openHost } from '../src/host/backend.js';

const MiB = 1024 * 1024;

function liveObjects(em: Execmem): number {
  return Object.values(em.stats().types).reduce((n, t) => n + t.liveObjects, 0);
}
const skip = process.arch === 'x64' && process.platform === 'linux' ? false : 'x86-64 Linux only';

describe('ftrace on the host backend', { skip }, () => {
  let h: HostBackend;
  let em: Execmem;
  let ft: HostFtrace;
  before(() => {
    h = openHost({ textReserveBytes: 16 * MiB, dataReserveBytes: 4 * MiB });
    em = new Execmem(h);
    ft = new HostFtrace(em, h, 40);
  });
  after(() => {
    ft.close();
    em.shrink({ keepSpare: false });
    h.close();
  });

  test('untraced: every function answers x + its addend through the fentry NOP', () => {
    for (const f of ft.functions) {
      assert.deepEqual(ft.site(f), Uint8Array.from(X86_NOP5));
      assert.equal(f.call(1000), 1000 + f.addend);
    }
  });

  test('attach, run, detach over random site sets: answers kept, calls counted exactly, NOPs restored', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 60 }),
        (picked, calls) => {
          const sites = picked.map((i) => ft.functions[i]);
          const before = ft.counts.writes;
          const t = ft.attach('graph', sites);
          // Three writes per site (int3, tail, first byte), as text_poke_bp_batch makes them.
          assert.equal(ft.counts.writes - before, 3 * sites.length);
          for (const f of sites) assert.equal(callTargetOf(f.va, ft.site(f)), t.trampolineVa);
          em.audit();
          let expected = 0;
          for (const i of calls) {
            const f = ft.functions[i];
            assert.equal(f.call(i * 7), i * 7 + f.addend, `function ${i} answers through the trampoline`);
            if (picked.includes(i)) expected++;
          }
          assert.equal(ft.hits(t), expected);
          ft.detach(t);
          for (const f of ft.functions) assert.deepEqual(ft.site(f), Uint8Array.from(X86_NOP5));
          for (const i of calls) ft.functions[i].call(i);
          em.audit();
        },
      ),
      { numRuns: 25, seed: 15 },
    );
  });

  test('two ops on disjoint sites count separately; a shared site is refused with nothing changed', () => {
    const [a, b, c] = [ft.functions[3], ft.functions[4], ft.functions[5]];
    const ta = ft.attach('a', [a, b]);
    const tb = ft.attach('b', [c]);
    const text = em.readVa(ft.textVa, 40 * HOST_FUNCTION_BYTES);
    const live = liveObjects(em);
    assert.throws(
      () => ft.attach('c', [c, ft.functions[6]]),
      (e: unknown) => e instanceof FtraceError && e.code === 'EBUSY',
    );
    assert.deepEqual(em.readVa(ft.textVa, 40 * HOST_FUNCTION_BYTES), text);
    assert.equal(liveObjects(em), live);
    a.call(1);
    a.call(2);
    c.call(3);
    assert.deepEqual([ft.hits(ta), ft.hits(tb)], [2, 1]);
    ft.detach(ta);
    ft.detach(tb);
    assert.throws(
      () => ft.detach(ta),
      (e: unknown) => e instanceof FtraceError && e.code === 'EINVAL',
    );
  });

  test('a site that is not the fentry NOP is refused before anything is allocated', () => {
    const f = ft.functions[9];
    const live = liveObjects(em);
    em.updateVa(f.va, Uint8Array.of(0x90, 0x90, 0x90, 0x90, 0x90));
    try {
      assert.throws(
        () => ft.attach('x', [f]),
        (e: unknown) => e instanceof FtraceError && e.code === 'EBADSITE',
      );
      assert.equal(liveObjects(em), live);
    } finally {
      em.updateVa(f.va, Uint8Array.from(X86_NOP5));
    }
  });
});
