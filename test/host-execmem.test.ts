/**
 * Execmem on real memory through the host backend, end to end: random alloc / update / call /
 * free sequences (fast-check) whose generated functions must return the right values, freed text
 * must read back as the trap pattern, and after freeing everything and shrinking no block may be
 * left. W^X is checked against /proc/self/maps after every run.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { ExecmemType } from '../src/arch/types.js';
import { Execmem } from '../src/execmem/execmem.js';
import { genLinear, genSized, type HostBackend, HostError, openHost, readMaps } from '../src/host/index.js';

const MiB = 1024 * 1024;
const TEXT_TYPES: ExecmemType[] = ['bpf', 'kprobes', 'ftrace', 'module_text'];

type Cmd =
  | { op: 'alloc'; type: ExecmemType; sizeBytes: number; seed: number }
  | { op: 'linear'; mul: number; add: number }
  | { op: 'free'; pick: number }
  | { op: 'call'; pick: number }
  | { op: 'batch'; count: number; seed: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('alloc' as const),
      type: fc.constantFrom(...TEXT_TYPES),
      sizeBytes: fc.oneof(fc.integer({ min: 6, max: 600 }), fc.integer({ min: 601, max: 9000 })),
      seed: fc.integer({ min: 0, max: 1 << 20 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('linear' as const),
      mul: fc.integer({ min: -1000, max: 1000 }),
      add: fc.integer({ min: -(2 ** 20), max: 2 ** 20 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('call' as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('batch' as const),
      count: fc.integer({ min: 1, max: 12 }),
      seed: fc.integer({ min: 0, max: 1 << 20 }),
    }),
  },
);

interface Live {
  readonly va: number;
  readonly sizeBytes: number;
  readonly call: () => number;
  readonly expected: number;
}

function reservations(h: HostBackend): { start: number; end: number }[] {
  return h.report().families.flatMap((f) => {
    const out = [
      { start: Number.parseInt(f.viewBase, 16), end: Number.parseInt(f.viewBase, 16) + f.capacityBytes },
    ];
    if (f.aliasBase !== null) {
      const a = Number.parseInt(f.aliasBase, 16);
      out.push({ start: a, end: a + f.capacityBytes });
    }
    return out;
  });
}

function assertNoWx(h: HostBackend): void {
  const ranges = reservations(h);
  for (const m of readMaps()) {
    if (!ranges.some((r) => m.start < r.end && m.end > r.start)) continue;
    assert.ok(
      !(m.perms[1] === 'w' && m.perms[2] === 'x'),
      `W+X mapping in our reservation: ${JSON.stringify(m)}`,
    );
  }
}

/**
 * Allocate, write a generated function of exactly the allocation's size, and record it. The
 * callable is made on first call: inside an mprotect-mode batch the block is still RW+NX and
 * the backend refuses to make a callable for it.
 */
function jit(em: Execmem, h: HostBackend, type: ExecmemType, sizeBytes: number, seed: number): Live {
  const va = em.allocVa(type, sizeBytes);
  const g = genSized(sizeBytes, seed);
  em.updateVa(va, g.code);
  let f: (() => number) | null = null;
  const call = (): number => {
    f ??= h.fn(va, 'int (void)');
    return f();
  };
  return { va, sizeBytes, call, expected: g.expected };
}

for (const mode of ['dualmap', 'mprotect'] as const) {
  describe(`Execmem over the host backend (${mode})`, () => {
    let h: HostBackend;
    before(() => {
      h = openHost({ mode, textReserveBytes: 256 * MiB, dataReserveBytes: 16 * MiB });
    });
    after(() => h.close());

    test('property: random alloc/update/call/free sequences run the right code; freed text traps', () => {
      fc.assert(
        fc.property(fc.array(cmdArb, { minLength: 1, maxLength: 30 }), (cmds) => {
          const em = new Execmem(h);
          const live: Live[] = [];
          const run = (c: Cmd): void => {
            switch (c.op) {
              case 'alloc':
                live.push(jit(em, h, c.type, c.sizeBytes, c.seed));
                return;
              case 'linear': {
                const va = em.allocVa('bpf', 14);
                em.updateVa(va, genLinear(c.mul, c.add));
                const f = h.fn(va, 'int (int, int)');
                const a = (c.mul & 0xff) - 100;
                const b = c.add >> 3;
                const want = (Math.imul(a, c.mul) + b + c.add) | 0;
                assert.equal(f(a, b), want);
                live.push({ va, sizeBytes: 14, call: () => f(a, b), expected: want });
                return;
              }
              case 'call': {
                if (live.length === 0) return;
                const l = live[c.pick % live.length];
                assert.equal(l.call(), l.expected, `function at 0x${l.va.toString(16)}`);
                return;
              }
              case 'free': {
                if (live.length === 0) return;
                const [l] = live.splice(c.pick % live.length, 1);
                const usable = em.sizeOfVa(l.va);
                em.freeVa(l.va);
                assert.ok(
                  h.read(l.va, usable).every((x) => x === 0xcc),
                  'freed space reads back as the trap pattern',
                );
                assert.throws(() => em.sizeOfVa(l.va), { code: 'EFREE' });
                return;
              }
              case 'batch':
                em.batch(() => {
                  for (let i = 0; i < c.count; i++)
                    live.push(jit(em, h, 'bpf', 32 + ((c.seed + i * 97) % 700), c.seed + i));
                });
                return;
            }
          };
          try {
            for (const c of cmds) run(c);
            // Every function still alive returns its value: no update clobbered a neighbour.
            for (const l of live) assert.equal(l.call(), l.expected);
            assertNoWx(h);
            em.audit();
          } finally {
            for (const l of live) em.freeVa(l.va);
            em.shrink({ keepSpare: false });
          }
          assert.equal(h.report().families[0].mappedBytes, 0, 'no text block left after free-all + shrink');
        }),
        { numRuns: 25 },
      );
    });

    test('batch: in mprotect mode each touched block flips once per direction', () => {
      const em = new Execmem(h);
      const before = em.stats().counters.permissionFlips;
      const vas: number[] = [];
      em.batch(() => {
        for (let i = 0; i < 50; i++) vas.push(jit(em, h, 'bpf', 200, i).va);
      });
      const flips = em.stats().counters.permissionFlips - before;
      const blocks = new Set(vas.map((va) => Math.floor(va / (2 * MiB)))).size;
      if (mode === 'mprotect') {
        // A new block is mapped RW, filled and protected ROX once (1 flip), then opened and
        // closed once for the whole batch (2 flips).
        assert.ok(flips <= blocks * 3, `${flips} flips for ${blocks} block(s)`);
        assert.equal(em.stats().counters.pokes, 0);
      } else {
        assert.equal(em.stats().counters.pokes, 50, 'dualmap writes through the alias');
      }
      for (const va of vas) em.freeVa(va);
      em.shrink({ keepSpare: false });
    });

    test('calling JIT code inside a batch is refused in mprotect mode (page is RW+NX), allowed in dualmap', () => {
      const em = new Execmem(h);
      const l = jit(em, h, 'bpf', 64, 5);
      em.batch(() => {
        em.updateVa(l.va, genSized(64, 6).code);
        if (mode === 'mprotect') {
          assert.throws(
            () => l.call(),
            (e: unknown) => e instanceof HostError && e.code === 'EFAULT',
          );
        } else {
          assert.equal(l.call(), genSized(64, 6).expected);
        }
      });
      assert.equal(l.call(), genSized(64, 6).expected);
      em.freeVa(l.va);
      em.shrink({ keepSpare: false });
    });

    test('data types: data is RW, rodata RO via the helper, ro_after_init sealed RO (alias too)', () => {
      const em = new Execmem(h);
      const d = em.allocVa('module_data', 100);
      const r = em.allocVa('module_rodata', 100);
      const s = em.allocVa('module_ro_after_init', 100);
      em.updateVa(d, Uint8Array.of(1, 2, 3));
      em.updateVa(r, Uint8Array.of(4, 5, 6));
      em.updateVa(s, Uint8Array.of(7, 8, 9));
      em.sealVa(s);
      assert.deepEqual([...h.read(d, 3)], [1, 2, 3]);
      assert.deepEqual([...h.read(r, 3)], [4, 5, 6]);
      assert.deepEqual([...h.read(s, 3)], [7, 8, 9]);
      assert.equal(h.protAt(d), 'rw');
      assert.equal(h.protAt(r), 'ro');
      assert.equal(h.protAt(s), 'ro');
      const perms = (va: number) =>
        readMaps()
          .find((m) => m.start <= va && va < m.end)
          ?.perms.slice(0, 3);
      assert.equal(perms(s), 'r--');
      assert.equal(perms(r), 'r--');
      if (mode === 'dualmap') {
        const f = h.report().families[1];
        const alias = (va: number) =>
          va - Number.parseInt(f.viewBase, 16) + Number.parseInt(f.aliasBase!, 16);
        assert.equal(perms(alias(s)), 'r--', 'sealed ro_after_init: no writable alias left');
        assert.equal(perms(alias(r)), 'rw-', 'rodata keeps its alias for helper updates');
      }
      assert.throws(() => em.updateVa(s, Uint8Array.of(0)), { code: 'EPERM' });
      for (const va of [d, r, s]) em.freeVa(va);
      em.shrink({ keepSpare: false });
      assert.equal(h.report().families[1].mappedBytes, 0);
      assertNoWx(h);
    });
  });
}
