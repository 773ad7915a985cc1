/**
 * Hostile inputs and injected faults: every bad call of DESIGN.md section 4 (and more) must
 * throw an ExecmemError with the expected code and leave everything unchanged: the allocator's
 * stats, its heaps (audit) and the backend's blocks, protections, contents and counters (digest).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARCHES, type ArchSpec, type ExecmemType } from '../src/arch/index.js';
import { SZ_2M } from '../src/base/addr.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem, RO_AFTER_INIT_BLOCK_BYTES } from '../src/execmem/execmem.js';
import { execmemErrorCode } from './helpers/execmem-error.js';
import { FakeBackend } from './helpers/fake-backend.js';

interface World {
  fb: FakeBackend;
  em: Execmem;
  text: number;
  data: number;
  rai: number;
  sealed: number;
  freed: number;
  large: number;
}

function world(arch: ArchSpec = ARCHES.x86_64): World {
  const fb = new FakeBackend(arch);
  const em = new Execmem(fb, { seed: 3 });
  const text = em.allocVa('bpf', 1000);
  const data = em.allocVa('module_data', 500);
  const rai = em.allocVa('module_ro_after_init', 100);
  const sealed = em.allocVa('module_ro_after_init', 100);
  em.sealVa(sealed);
  const freed = em.allocVa('bpf', 300);
  em.allocVa('bpf', 64); // keeps `freed` from merging into the block's tail
  em.freeVa(freed);
  const large = em.allocVa('module_text', 3 * SZ_2M);
  return { fb, em, text, data, rai, sealed, freed, large };
}

function snapshot(w: World, stateOnly: boolean): string {
  w.em.audit();
  // allocSearchSteps counts work, not state: a refused growth still searched the free lists.
  const stats = w.em.stats();
  const counters: Partial<typeof stats.counters> = { ...stats.counters };
  delete counters.allocSearchSteps;
  return `${JSON.stringify({ ...stats, counters })}|${w.fb.digest(stateOnly)}`;
}

function expectRefused(w: World, expected: string, fn: () => unknown, stateOnly = false): void {
  const before = snapshot(w, stateOnly);
  let got = 'no error';
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ExecmemError)) throw e;
    got = e.code;
    assert.ok(e.message.length > 10, 'the message says what was wrong');
  }
  assert.equal(got, expected);
  assert.equal(snapshot(w, stateOnly), before, 'state unchanged');
}

const cases: [string, string, (w: World) => unknown][] = [
  ['size 0', 'EINVAL', (w) => w.em.allocVa('bpf', 0)],
  ['negative size', 'EINVAL', (w) => w.em.allocVa('bpf', -5)],
  ['fractional size', 'EINVAL', (w) => w.em.allocVa('bpf', 10.5)],
  ['NaN size', 'EINVAL', (w) => w.em.allocVa('bpf', Number.NaN)],
  ['Infinity size', 'EINVAL', (w) => w.em.allocVa('bpf', Number.POSITIVE_INFINITY)],
  ['string size', 'EINVAL', (w) => w.em.allocVa('bpf', '64' as unknown as number)],
  ['size beyond 2^53', 'EINVAL', (w) => w.em.allocVa('bpf', 2 ** 60)],
  ['oversized (1 GiB)', 'E2BIG', (w) => w.em.allocVa('module_text', 2 ** 30)],
  ['unknown type', 'EINVAL', (w) => w.em.allocVa('module_init' as ExecmemType, 10)],
  ['type as number', 'EINVAL', (w) => w.em.allocVa(3 as unknown as ExecmemType, 10)],
  ['alignment 3', 'EINVAL', (w) => w.em.allocVa('bpf', 10, { alignBytes: 3 })],
  ['alignment 0', 'EINVAL', (w) => w.em.allocVa('bpf', 10, { alignBytes: 0 })],
  ['alignment 8192', 'EINVAL', (w) => w.em.allocVa('bpf', 10, { alignBytes: 8192 })],
  ['double free', 'EFREE', (w) => w.em.freeVa(w.freed)],
  ['free inside a live allocation', 'EINSIDE', (w) => w.em.freeVa(w.text + 64)],
  ['free at an unaligned address inside', 'EINSIDE', (w) => w.em.freeVa(w.text + 3)],
  ['free inside a large allocation', 'EINSIDE', (w) => w.em.freeVa(w.large + SZ_2M)],
  ['free of an address never mapped', 'ENOENT', (w) => w.em.freeVa(0x1000)],
  ['free of a negative address', 'EINVAL', (w) => w.em.freeVa(-64)],
  ['free of a fractional address', 'EINVAL', (w) => w.em.freeVa(w.text + 0.5)],
  ['free of a non-canonical bigint', 'EINVAL', (w) => w.em.free(0x0000900000000000n)],
  ['free of a number through the bigint API', 'EINVAL', (w) => w.em.free(w.text as unknown as bigint)],
  ['update crossing the end', 'ERANGE', (w) => w.em.updateVa(w.text + 1000, new Uint8Array(64))],
  ['update from inside across the end', 'ERANGE', (w) => w.em.updateVa(w.text + 10, new Uint8Array(1015))],
  ['update of free space', 'EFREE', (w) => w.em.updateVa(w.freed, new Uint8Array(4))],
  ['update of unmapped memory', 'ENOENT', (w) => w.em.updateVa(0x2000, new Uint8Array(4))],
  ['update with an empty buffer', 'EINVAL', (w) => w.em.updateVa(w.text, new Uint8Array(0))],
  ['update with a plain array', 'EINVAL', (w) => w.em.updateVa(w.text, [1, 2] as unknown as Uint8Array)],
  ['update of sealed ro_after_init', 'EPERM', (w) => w.em.updateVa(w.sealed, Uint8Array.of(1))],
  ['update of data crossing the end', 'ERANGE', (w) => w.em.updateVa(w.data, new Uint8Array(513))],
  ['seal of text', 'EPERM', (w) => w.em.sealVa(w.text)],
  ['seal of module_data', 'EPERM', (w) => w.em.sealVa(w.data)],
  ['seal twice', 'EPERM', (w) => w.em.sealVa(w.sealed)],
  ['seal inside', 'EINSIDE', (w) => w.em.sealVa(w.rai + 64)],
  ['seal of free space', 'EFREE', (w) => w.em.sealVa(w.freed)],
  ['sizeOf free space', 'EFREE', (w) => w.em.sizeOfVa(w.freed)],
  // read() is an inspection of mapped memory: an unmapped range is ERANGE (issue 13 item 18).
  ['read outside', 'ERANGE', (w) => w.em.readVa(0x3000, 4)],
  ['read of zero bytes', 'EINVAL', (w) => w.em.readVa(w.text, 0)],
  ['read across the block end', 'ERANGE', (w) => w.em.readVa(w.text, 3 * SZ_2M)],
];

test('hostile: shrink inside batch -> EBUSY, nothing changes', () => {
  const w = world();
  w.em.batch(() => expectRefused(w, 'EBUSY', () => w.em.shrink()));
});

for (const [name, expected, fn] of cases) {
  test(`hostile: ${name} -> ${expected}, nothing changes`, () => {
    const w = world();
    expectRefused(w, expected, () => fn(w));
  });
}

test('hostile: the same refusals hold on generic (no alias) and arm64', () => {
  for (const arch of [ARCHES.generic, ARCHES.arm64]) {
    const w = world(arch);
    expectRefused(w, 'EFREE', () => w.em.freeVa(w.freed));
    const end = w.text + w.em.sizeOfVa(w.text);
    expectRefused(w, 'ERANGE', () => w.em.updateVa(end - 1, Uint8Array.of(1, 2)));
    expectRefused(w, 'EPERM', () => w.em.sealVa(w.text));
  }
});

test('range exhausted: ENOSPC from the backend, nothing changes', () => {
  const small: ArchSpec = {
    ...ARCHES.generic,
    execmemRanges: () => ({
      module_text: {
        range: { start: 0xc90000000000, end: 0xc90000000000 + 4 * SZ_2M },
        fallback: null,
        prot: 'rw',
        alignBytes: 1,
        flags: { kasanShadow: false, roxCache: false },
      },
    }),
  };
  const fb = new FakeBackend(small);
  const em = new Execmem(fb);
  const w = { fb, em } as World;
  for (let i = 0; i < 4; i++) em.allocVa('bpf', SZ_2M);
  expectRefused(w, 'ENOSPC', () => em.allocVa('bpf', 64));
  expectRefused(w, 'ENOSPC', () => em.allocVa('module_text', 3 * SZ_2M));
});

test('fault injection: each mapBlock failure during growth leaves nothing behind', () => {
  for (const code of ['ENOMEM', 'ENOSPC'] as const) {
    for (const type of ['bpf', 'module_data', 'module_rodata', 'module_ro_after_init'] as ExecmemType[]) {
      const w = world();
      // Fill the pool's current block so that the next allocation must grow (ro_after_init's
      // blocks are RO_AFTER_INIT_BLOCK_BYTES, not 2 MiB).
      const blockBytes = type === 'module_ro_after_init' ? RO_AFTER_INIT_BLOCK_BYTES : SZ_2M;
      const big = blockBytes - 16384;
      w.em.allocVa(type, 64);
      w.em.allocVa(type, big);
      w.fb.failMapBlock(1, code);
      expectRefused(w, code, () => w.em.allocVa(type, big));
    }
  }
});

test('fault injection: a failed protect while preparing a new block unmaps it again', () => {
  for (const type of ['bpf', 'module_text', 'module_rodata'] as ExecmemType[]) {
    const w = world(ARCHES.arm64);
    w.fb.failProtect(1);
    expectRefused(w, 'ENOMEM', () => w.em.allocVa(type, 2 * SZ_2M + 1), true);
    w.fb.failProtect(1);
    expectRefused(w, 'ENOMEM', () => w.em.allocVa(type, SZ_2M - 100), true);
  }
});

test('fault injection: a failed protect during a generic update or free changes nothing', () => {
  // `large` is a block whose write window never opened, so opening it may fail (fake-backend.ts).
  const w = world(ARCHES.generic);
  w.fb.failProtect(1);
  expectRefused(w, 'ENOMEM', () => w.em.updateVa(w.large, Uint8Array.of(1, 2, 3)));
  const text = w.em.allocVa('module_text', 100);
  w.fb.failProtect(1);
  expectRefused(w, 'ENOMEM', () => w.em.freeVa(text));
  w.fb.failProtect(1);
  expectRefused(w, 'ENOMEM', () => w.em.batch(() => w.em.updateVa(text, Uint8Array.of(1))));
});

test('fault injection: a failed seal changes nothing', () => {
  const w = world();
  w.fb.failProtect(1);
  expectRefused(w, 'ENOMEM', () => w.em.sealVa(w.rai));
});

test('fault injection: a failed unmap in a free of a large object changes nothing; the retry frees it', () => {
  for (const arch of [ARCHES.x86_64, ARCHES.generic]) {
    const w = world(arch);
    w.em.sealVa(w.em.allocVa('module_ro_after_init', RO_AFTER_INIT_BLOCK_BYTES + 1));
    w.fb.failUnmapBlock(1);
    expectRefused(w, 'ENOMEM', () => w.em.freeVa(w.large));
    // Inside a batch, after an update opened the object's window (generic: no alias).
    w.em.batch(() => {
      w.em.updateVa(w.large, Uint8Array.of(0xc3));
      w.fb.failUnmapBlock(1);
      expectRefused(w, 'ENOMEM', () => w.em.freeVa(w.large));
    });
    w.em.freeVa(w.large);
    assert.equal(w.em.stats().pools.module_text.largeObjects, 0);
    assert.equal(
      execmemErrorCode(() => w.em.freeVa(w.large)),
      'EFREE',
    );
    w.em.audit();
  }
});

test('fault injection: shrink is best effort; a block whose unmap fails stays, consistent, for the next shrink', () => {
  const w = world();
  const vas = [w.em.allocVa('bpf', SZ_2M - 4096), w.em.allocVa('bpf', SZ_2M - 4096)];
  for (const va of vas) w.em.freeVa(va);
  const blocks = w.em.stats().pools['kprobes+ftrace+bpf'].blocks;
  w.fb.failUnmapBlock(1);
  const first = w.em.shrink({ keepSpare: false });
  w.em.audit();
  const after = w.em.stats().pools['kprobes+ftrace+bpf'];
  assert.equal(after.blocks, blocks - first / SZ_2M, 'what was not released is still there');
  assert.ok(after.blocks >= 1, 'the failed block stayed');
  assert.equal(w.em.stats().pools['kprobes+ftrace+bpf'].mappedBytes, after.blocks * SZ_2M);
  const second = w.em.shrink({ keepSpare: false });
  assert.ok(second > 0, 'the next shrink releases it');
  assert.equal(w.em.stats().pools['kprobes+ftrace+bpf'].emptyBlocks, 0);
});

test('fault injection: a growth whose undo cannot unmap keeps a stray that shrink releases', () => {
  const w = world(ARCHES.arm64);
  const mapped = w.fb.mappedBytes();
  w.fb.failProtect(1);
  w.fb.failUnmapBlock(1);
  assert.equal(
    execmemErrorCode(() => w.em.allocVa('module_text', 3 * SZ_2M)),
    'ENOMEM',
  );
  assert.equal(w.fb.mappedBytes(), mapped + 6 * 1024 * 1024, 'the stray is still mapped');
  assert.equal(w.fb.wxViolationCount(), 0, 'and never executable');
  w.em.audit();
  assert.ok(w.em.shrink() >= 6 * 1024 * 1024, 'shrink unmaps the stray');
  assert.equal(w.fb.mappedBytes(), mapped);
});
