/**
 * The allocator's contract at its edges (issue 16): each reproduction from the issue as a test.
 * - Re-entrancy: an argument whose getter calls back into the allocator is refused (EBUSY) and
 *   changes nothing; bytes come from the real backing store, never from an overridable `length`.
 * - Validation: every public method's address argument, the constructor's backend and options,
 *   and createMachine's config give a typed EINVAL that says what was expected.
 * - Contract gaps: a refused call changes no figure of stats() the contract covers (every figure
 *   but the two attempt counters, atomicRefusals and allocSearchSteps); a double free of a large
 *   allocation is EFREE; update past the requested size is ERANGE.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARCHES } from '../src/arch/index.js';
import { SZ_2M } from '../src/base/addr.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem } from '../src/execmem/execmem.js';
import { SimBackend } from '../src/execmem/sim-backend.js';
import { MachineError } from '../src/machine/errors.js';
import { createMachine, type MachineConfig } from '../src/machine/machine.js';
import { execmemErrorCode } from './helpers/execmem-error.js';
import { FakeBackend } from './helpers/fake-backend.js';

const MIB = 2 ** 20;

function fake(arch: keyof typeof ARCHES = 'x86_64') {
  const fb = new FakeBackend(ARCHES[arch]);
  const em = new Execmem(fb, { seed: 5 });
  return { fb, em };
}

function sim(arch: keyof typeof ARCHES = 'x86_64') {
  const m = createMachine({ arch, memoryBytes: 2 ** 30, cpus: 2, seed: 1 });
  const em = new Execmem(new SimBackend(m));
  return { m, em };
}

/** Everything the "failed calls change nothing" contract covers, on the fake backend. */
function state(em: Execmem, fb: FakeBackend): string {
  em.audit();
  const s = em.stats();
  const counters: Partial<typeof s.counters> = { ...s.counters };
  delete counters.atomicRefusals;
  delete counters.allocSearchSteps;
  return `${JSON.stringify({ ...s, counters })}|${fb.digest()}`;
}

/** The ExecmemError a call throws (checked: typed, with a message), state unchanged. */
function refused(em: Execmem, fb: FakeBackend, fn: () => unknown): ExecmemError {
  const before = state(em, fb);
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ExecmemError, `expected an ExecmemError, got ${String(err)}`);
  assert.ok(err.message.length > 12, 'the message says what was wrong');
  assert.equal(state(em, fb), before, 'a refused call changes nothing');
  return err;
}

// ------------------------------------------------------------------ re-entrancy (item 5)

test('re-entrancy: a Uint8Array subclass whose length getter frees the target -> EBUSY, nothing changes', () => {
  for (const arch of ['x86_64', 'generic'] as const) {
    const { fb, em } = fake(arch);
    const p = em.allocVa('bpf', 64);
    class Evil extends Uint8Array {
      override get length(): number {
        em.freeVa(p);
        return super.length;
      }
    }
    const err = refused(em, fb, () => em.updateVa(p, new Evil(16)));
    assert.equal(err.code, 'EBUSY', `${arch}: ${err.message}`);
    assert.equal(em.sizeOfVa(p), 64, 'p is still live');
    em.freeVa(p);
  }
});

test('re-entrancy: a getter on the alloc context that calls back in -> EBUSY, nothing changes', () => {
  const { fb, em } = fake();
  const p = em.allocVa('bpf', 64);
  const ctx = {
    get alignBytes(): number {
      em.freeVa(p);
      return 64;
    },
  };
  assert.equal(refused(em, fb, () => em.allocVa('bpf', 100, ctx)).code, 'EBUSY');
  const opts = {
    get keepSpare(): boolean {
      em.allocVa('bpf', 10);
      return true;
    },
  };
  assert.equal(refused(em, fb, () => em.shrink(opts)).code, 'EBUSY');
  assert.equal(em.sizeOfVa(p), 64);
});

test('re-entrancy: batch() from inside a call -> EBUSY; forEachRun callbacks cannot free', () => {
  const { fb, em } = fake();
  const p = em.allocVa('bpf', 64);
  class Sneaky extends Uint8Array {
    override get length(): number {
      em.batch(() => em.freeVa(p));
      return super.length;
    }
  }
  assert.equal(refused(em, fb, () => em.updateVa(p, new Sneaky(4))).code, 'EBUSY');
  let code = 'no error';
  em.forEachRun((_pool, _prot, va, _size, used) => {
    if (used && va === p) code = execmemErrorCode(() => em.freeVa(p));
  });
  assert.equal(code, 'EBUSY');
  assert.equal(em.sizeOfVa(p), 64);
});

test('bytes: a Proxy, a lying length, other typed arrays, a detached buffer -> EINVAL, nothing changes', () => {
  for (const arch of ['x86_64', 'generic'] as const) {
    const { fb, em } = fake(arch);
    const mine = em.allocVa('bpf', 64);
    const other = em.allocVa('bpf', 64);
    em.updateVa(other, new Uint8Array(64).fill(0x11));
    const evil = new Uint8Array(256).fill(0x90);
    Object.defineProperty(evil, 'length', { value: 1 });
    const detached = new Uint8Array(8);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    const bad: unknown[] = [
      evil,
      new Proxy(new Uint8Array(4), {}),
      new Uint16Array(2),
      new DataView(new ArrayBuffer(4)),
      detached,
      { length: 4, 0: 1 },
      'abcd',
    ];
    for (const b of bad) {
      const err = refused(em, fb, () => em.updateVa(mine, b as Uint8Array));
      assert.equal(err.code, 'EINVAL', `${arch}: ${err.message}`);
    }
    assert.ok(
      em.readVa(other, 64).every((x) => x === 0x11),
      'the neighbour is untouched',
    );
  }
});

test('bytes: a Buffer, a subarray, a view on a SharedArrayBuffer write exactly their own bytes', () => {
  const { em } = fake();
  const p = em.allocVa('module_data', 64);
  em.updateVa(p, Buffer.from([1, 2, 3]));
  const big = Uint8Array.from({ length: 32 }, (_, i) => i);
  em.updateVa(p + 3, big.subarray(10, 14));
  const shared = new Uint8Array(new SharedArrayBuffer(4)).fill(9);
  em.updateVa(p + 7, shared);
  assert.deepEqual([...em.readVa(p, 12)], [1, 2, 3, 10, 11, 12, 13, 9, 9, 9, 9, 0]);
});

test('sim backend: write and poke take the real length, never an overridden one', () => {
  for (const arch of ['x86_64', 'generic'] as const) {
    const { m, em } = sim(arch);
    const p = em.allocVa('module_data', 4096);
    const backend = em.backend as SimBackend;
    const evil = new Uint8Array(256).fill(0x90);
    Object.defineProperty(evil, 'length', { value: 1 });
    backend.write(p, evil);
    assert.ok(
      m.load(0, p, 256).every((x) => x === 0x90),
      `${arch}: all 256 bytes written`,
    );
  }
});

// ------------------------------------------------------------------ validation (item 7)

test('validation: every address argument that is not a non-negative integer -> EINVAL saying so', () => {
  const { fb, em } = fake();
  const p = em.allocVa('module_ro_after_init', 100);
  const bad: unknown[] = [Number.NaN, 1.5, 'abc', -1, undefined, null, {}, 2n, 2 ** 60, Infinity];
  const calls: [string, (a: number) => unknown][] = [
    ['isSealed', (a) => em.isSealedVa(a)],
    ['sizeOf', (a) => em.sizeOfVa(a)],
    ['typeOf', (a) => em.typeOfVa(a)],
    ['freeVa', (a) => em.freeVa(a)],
    ['sealVa', (a) => em.sealVa(a)],
    ['updateVa', (a) => em.updateVa(a, Uint8Array.of(1))],
    ['readVa', (a) => em.readVa(a, 4)],
    ['toBig', (a) => em.toBig(a)],
  ];
  for (const [name, call] of calls) {
    for (const a of bad) {
      const err = refused(em, fb, () => call(a as number));
      assert.equal(err.code, 'EINVAL', `${name}(${String(a)})`);
      assert.match(err.message, /address/, `${name}: says an address was expected`);
    }
  }
  for (const a of [Object(0x1000n) as unknown, '0x1000', 12, -1n, 1n << 64n]) {
    for (const call of [
      () => em.free(a as bigint),
      () => em.seal(a as bigint),
      () => em.read(a as bigint, 4),
      () => em.sizeOf(a as bigint),
      () => em.typeOf(a as bigint),
      () => em.isSealed(a as bigint),
    ]) {
      const err = refused(em, fb, call);
      assert.equal(err.code, 'EINVAL');
      // Issue 13 item 17: the message says which form was expected.
      if (typeof a !== 'bigint') assert.match(err.message, /must be a bigint \(what alloc returns\)/);
    }
  }
  assert.equal(em.isSealedVa(p), false);
  // Every method that takes an address takes what alloc returns (issue 13 item 17).
  const q = em.alloc('module_ro_after_init', 64);
  assert.equal(em.sizeOf(q), 64);
  assert.equal(em.typeOf(q), 'module_ro_after_init');
  assert.equal(em.isSealed(q), false);
  em.seal(q);
  assert.equal(em.isSealed(q), true);
  assert.equal(em.read(q, 4).length, 4);
});

test('validation: sizes, contexts, options and callbacks of the wrong type -> EINVAL', () => {
  const { fb, em } = fake();
  const p = em.allocVa('bpf', 64);
  const hostile = {
    toString() {
      throw new Error('user code ran');
    },
  };
  const calls: (() => unknown)[] = [
    () => em.allocVa(hostile as never, 64),
    () => em.allocVa('bpf', hostile as never),
    () => em.allocVa('bpf', 64n as never),
    () => em.allocVa('bpf', 64, 5 as never),
    () => em.allocVa('bpf', 64, { atomic: 'yes' } as never),
    () => em.allocVa('bpf', 64, { alignBytes: hostile } as never),
    () => em.readVa(p, hostile as never),
    () => em.shrink({ keepSpare: 1 } as never),
    () => em.shrink('all' as never),
    () => em.batch(42 as never),
  ];
  for (const call of calls) assert.equal(refused(em, fb, call).code, 'EINVAL');
});

test('validation: new Execmem with something that is not a backend, or bad options -> EINVAL', () => {
  const fb = new FakeBackend(ARCHES.x86_64);
  const bad: [unknown, unknown][] = [
    [{}, undefined],
    [null, undefined],
    [42, undefined],
    [{ ...fb, kind: 'sim' }, undefined], // an own-property copy has no methods
    [fb, { seed: Number.NaN }],
    [fb, { seed: -1 }],
    [fb, { seed: 1.5 }],
    [fb, { seed: 'x' }],
    [fb, { kaslr: 'no' }],
    [fb, { granuleBytes: 32 }],
    [fb, { sharing: 'toString' }],
    [fb, 'options'],
  ];
  for (const [backend, options] of bad) {
    assert.throws(
      () => new Execmem(backend as never, options as never),
      (e: unknown) => e instanceof ExecmemError && e.code === 'EINVAL' && e.message.length > 20,
      `${JSON.stringify(options) ?? typeof backend}`,
    );
  }
});

test('validation: createMachine with inherited names or bad seeds -> MachineError EINVAL naming the field', () => {
  const bad: [MachineConfig, string][] = [
    [{ arch: '__proto__' as never }, 'arch'],
    [{ arch: 'toString' as never }, 'arch'],
    [{ tlb: 'toString' as never }, 'tlb'],
    [{ tlb: '__proto__' as never }, 'tlb'],
    [{ seed: Number.NaN }, 'seed'],
    [{ seed: 'x' as never }, 'seed'],
    [{ seed: -1 }, 'seed'],
    [{ seed: 1.5 }, 'seed'],
    [{ kaslr: 'yes' as never }, 'kaslr'],
    [{ cpus: '2' as never }, 'cpus'],
    [{ memoryBytes: 'lots' as never }, 'memoryBytes'],
  ];
  for (const [config, field] of bad) {
    assert.throws(
      () => createMachine({ memoryBytes: 2 ** 30, ...config }),
      (e: unknown) => e instanceof MachineError && e.code === 'EINVAL' && e.message.includes(field),
      `${field}: ${JSON.stringify(config)}`,
    );
  }
  for (const config of ['config', 42, [1]]) {
    assert.throws(
      () => createMachine(config as never),
      (e: unknown) => e instanceof MachineError && e.code === 'EINVAL' && e.message.includes('config'),
    );
  }
});

// ------------------------------------------------------------------ contract gaps (item 8)

test('contract: an atomic refusal and a refused or throwing batch change nothing but the attempt counters', () => {
  const { fb, em } = fake();
  em.allocVa('bpf', 64);
  const before = em.stats().counters;
  assert.equal(refused(em, fb, () => em.allocVa('bpf', 3 * SZ_2M, { atomic: true })).code, 'EAGAIN');
  assert.equal(em.stats().counters.atomicRefusals, before.atomicRefusals + 1, 'an attempt counter counts it');
  em.batch(() => {
    assert.equal(refused(em, fb, () => em.shrink()).code, 'EBUSY');
  });
  const batches = em.stats().counters.batches;
  const s0 = state(em, fb);
  assert.throws(
    () =>
      em.batch(() => {
        throw new Error('callback failed');
      }),
    /callback failed/,
  );
  assert.equal(state(em, fb), s0, 'a batch whose callback threw and did nothing changes nothing');
  assert.equal(em.stats().counters.batches, batches);
});

test('contract: a double free of a large allocation is EFREE, as documented', () => {
  for (const make of [fake, sim]) {
    const { em } = make();
    for (const [type, size] of [
      ['module_text', 3 * SZ_2M],
      ['module_ro_after_init', 4 * MIB],
      ['bpf', 100],
    ] as const) {
      const p = em.alloc(type, size);
      em.free(p);
      assert.equal(
        execmemErrorCode(() => em.free(p)),
        'EFREE',
        `${type} ${size}`,
      );
      assert.equal(
        execmemErrorCode(() => em.update(p, Uint8Array.of(1))),
        'EFREE',
      );
      assert.equal(
        execmemErrorCode(() => em.seal(p)),
        'EFREE',
      );
    }
  }
});

test('contract: update past the REQUESTED size is ERANGE (not only past the rounded size)', () => {
  const { fb, em } = fake();
  const bpf = em.allocVa('bpf', 1000);
  const rai = em.allocVa('module_ro_after_init', 1);
  const big = em.allocVa('module_text', 3 * SZ_2M + 5);
  assert.equal(em.sizeOfVa(bpf), 1000, 'sizeOf is the requested size');
  assert.equal(em.sizeOfVa(rai), 1);
  em.updateVa(bpf + 999, Uint8Array.of(1));
  em.updateVa(rai, Uint8Array.of(1));
  em.updateVa(big + 3 * SZ_2M + 4, Uint8Array.of(1));
  for (const [va, n] of [
    [bpf + 1000, 1],
    [bpf, 1001],
    [bpf + 990, 24],
    [rai, 2],
    [rai + 1, 1],
    [rai + 4095, 1],
    [big + 3 * SZ_2M + 5, 1],
    [big, 3 * SZ_2M + 6],
  ] as const) {
    assert.equal(
      refused(em, fb, () => em.updateVa(va, new Uint8Array(n))).code,
      'ERANGE',
      `${n} at +${va - bpf}`,
    );
  }
});
